"""What every `pkggov` command shares: a parser that names mistyped options, the client's
version, output that a closed pipe cannot turn into a failure, and the proto3 JSON form of
responses and errors (with a plain-words cause for a connection that failed).
"""

from __future__ import annotations

import argparse
import base64
import difflib
import functools
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from pkggov_client._errors import PkggovError
from pkggov_client._text import printable

__all__ = [
    "ArgumentParser",
    "UsageError",
    "client_version",
    "connection_hint",
    "emit",
    "emit_json",
    "error_to_dict",
    "finish_stdout",
    "integral_numbers",
    "message_to_dict",
    "page_size_arg",
    "text_arg",
    "time_arg",
]


class UsageError(Exception):
    """Raised for a bad combination of options, or input, that argparse cannot check."""


def text_arg(text: str) -> str:
    """An argparse type for text sent to the gateway: refuse an argument that is not UTF-8
    (Python keeps its bytes as surrogates, which protobuf cannot encode), so that argparse
    names the argument and exits 2."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not UTF-8 text: '{printable(text)}'") from None
    return text


MAX_PAGE_SIZE = 500
"""The gateway's largest page of a listing (ListPendingPurges, ListDeletionRequests)."""


def page_size_arg(text: str) -> int:
    """An argparse type for a page size: a whole number from 1 to MAX_PAGE_SIZE."""
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"invalid page size '{printable(text)}': expected a whole number from 1 to "
            f"{MAX_PAGE_SIZE}"
        )
    return size


def time_arg(text: str) -> datetime:
    """An argparse type for an ISO 8601 time ("2027-01-05T10:00:00Z"); one without an offset
    is local time. The result is timezone-aware."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.astimezone()


_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")


@functools.cache
def client_version() -> str:
    """The installed client's distribution and version, e.g. "pkggov-client 0.1.0"."""
    for distribution in ("pkggov-client", "pkggov"):
        try:
            return f"{distribution} {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return "pkggov-client (version unknown: not installed as a distribution)"


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that takes no abbreviated options, names a mistyped one with the
    closest known option ("unknown option --dryrun; did you mean --dry-run?", exit 2) and,
    when it has help, has ``--version`` too. Subcommand parsers are of the same class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        if self.add_help:
            self.add_argument(
                "--version",
                action="version",
                version=client_version(),
                help="print the client's version and exit",
            )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Refuse an unknown option by name before argparse sees the arguments."""
        arguments = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown_options(arguments)
        return super().parse_known_args(arguments, namespace)

    def _refuse_unknown_options(self, arguments: Sequence[str]) -> None:
        """Exit 2 naming the first argument that looks like an option this parser lacks.

        A parser with subcommands checks only what comes before the command (whose own parser
        checks the rest); one that takes the remaining arguments whole checks nothing.
        """
        if any(action.nargs == argparse.REMAINDER for action in self._actions):
            return
        has_commands = any(
            isinstance(action, argparse._SubParsersAction) for action in self._actions
        )
        known = self._option_string_actions
        for argument in arguments:
            if argument == "--":
                return
            is_option = (
                argument.startswith("-")
                and argument != "-"
                and " " not in argument  # argparse takes such an argument as a value
                and not _NEGATIVE_NUMBER.fullmatch(argument)
            )
            if not is_option:
                if has_commands:
                    return
                continue
            name = argument.split("=", 1)[0] if argument.startswith("--") else argument
            if name in known or (not argument.startswith("--") and argument[:2] in known):
                continue
            options = sorted(option for option in known if option.startswith("--"))
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f" (see {self.prog} --help)"
            self.error(f"unknown option {name}{hint}")


class _Discard(io.TextIOBase):
    """A text stream that drops what is written to it."""

    def write(self, text: str) -> int:
        return len(text)


def _discard_stdout() -> None:
    """The reader of stdout has gone: send this process's further output to /dev/null (the
    Python documentation's recipe for EPIPE), so neither a later write nor the flush at exit
    fails."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's capture): replace it
        sys.stdout = _Discard()


def emit(text: str) -> None:
    """Print `text` on stdout; if its reader has gone (``… | head -1``), drop it and the rest."""
    try:
        print(text)
    except BrokenPipeError:
        _discard_stdout()


def emit_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout, as `emit` does."""
    emit(json.dumps(value, indent=2))


def finish_stdout() -> None:
    """Flush stdout before exit; a reader that has gone changes nothing (see `emit`)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()


_SAFE_INTEGER = 2**53
"""Beyond this a float no longer holds every integer (google.protobuf.Value's numbers)."""


def integral_numbers(value: Any) -> Any:
    """`value` with every float that holds an integer turned into that int (3.0 becomes 3).

    google.protobuf.Struct keeps every number as a double, so an integer recorded by the
    gateway comes back as 3.0; this shows it as it was recorded.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < _SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_numbers(item) for item in value]
    return value


def message_to_dict(message: Message) -> dict[str, Any]:
    """`message` in the proto3 JSON mapping: lowerCamelCase field names (as grpcurl prints
    them), enum value names, every field even when empty, integers as integers."""
    result: dict[str, Any] = integral_numbers(
        json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    )
    return result


def _detail_to_dict(detail: Any) -> dict[str, Any]:
    """One google.rpc.Status detail in proto3 JSON; a type this client does not know keeps
    its type URL and its bytes in base64, as the JSON mapping of Any would."""
    try:
        return message_to_dict(detail)
    except (TypeError, KeyError):  # json_format cannot find the packed type
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode("ascii")}


def error_to_dict(err: PkggovError, *, hint: str | None = None) -> dict[str, Any]:
    """The JSON form of an error: ``{"error": {...}}`` where the object is the call's
    google.rpc.Status in proto3 JSON (``code`` as a number, ``message``, ``details`` with
    their ``@type``: ErrorInfo with its reason and metadata, BadRequest, PolicyDenial, ...),
    plus ``status``, the code's name, ``reason``, the ErrorInfo reason or null, and ``hint``,
    the cause of a failed connection in words, when known."""
    details = [] if err.status is None else [_detail_to_dict(d) for d in err.status.details]
    error: dict[str, Any] = {
        "code": err.code.value[0],
        "status": err.code.name,
        "message": err.message,
        "reason": err.reason,
        "details": details,
    }
    if hint is not None:
        error["hint"] = hint
    return {"error": error}


_ALERT = re.compile(r"alert ([a-z ]+?)(?=[:;,.]|$)", re.IGNORECASE)
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED:\s*([^:]+)", re.IGNORECASE)
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "bad certificate",
        "unsupported certificate",
        "certificate revoked",
        "certificate expired",
        "certificate unknown",
        "unknown ca",
        "access denied",
        "decrypt error",
    }
)


def connection_hint(err: PkggovError, *, tls: bool, client_certificate: bool) -> str | None:
    """Say which side ended a connection that failed, and why, when gRPC's UNAVAILABLE
    message tells; None when it does not (or the error is not a failed connection).

    `tls` and `client_certificate` say how the CLI connected (--cacert, --cert). A gateway that
    refuses our client certificate usually just closes the connection after the handshake
    (the client sees "Socket closed"), so that case is named as the likely cause.
    """
    if err.code is not grpc.StatusCode.UNAVAILABLE or err.reason is not None:
        return None
    text = err.message
    lowered = text.lower()
    alert = _ALERT.search(lowered)
    if alert is not None and alert.group(1).strip() == "certificate required":
        return (
            "the gateway refused the connection: it requires a client certificate (--cert, --key)"
        )
    if alert is not None and alert.group(1).strip() in _CLIENT_CERTIFICATE_ALERTS:
        return f"the gateway refused our client certificate ({alert.group(1).strip()})"
    verify = _VERIFY_FAILED.search(text)
    if verify is not None:
        return (
            f"we do not trust the gateway's certificate ({verify.group(1).strip()}): --cacert "
            "must hold the CA that issued it"
        )
    if "hostname verification" in lowered or "not in peer certificate" in lowered:
        return (
            "the gateway's certificate does not name the host in --target: connect by a name "
            "or address the certificate lists"
        )
    if "wrong_version_number" in lowered or "packet_length_too_long" in lowered:
        return "the gateway did not answer in TLS: it probably serves plaintext (drop --cacert)"
    if "socket closed" in lowered or "connection reset" in lowered:
        if tls and client_certificate:
            return (
                "the gateway closed the connection after the TLS handshake: it most likely "
                "refused our client certificate (expired, not yet valid, or not issued by a CA "
                "it trusts)"
            )
        if tls:
            return (
                "the gateway closed the connection after the TLS handshake: it most likely "
                "requires a client certificate (--cert, --key)"
            )
        return (
            "the gateway closed the connection before answering: if it serves TLS, pass "
            "--cacert (and --cert, --key for mTLS)"
        )
    if "connection refused" in lowered:
        return "nothing accepts connections at --target: is the gateway running there?"
    if "dns resolution failed" in lowered:
        return "the host name in --target does not resolve"
    return None
