"""What every `pkggov` command that calls the gateway shares: the connection and output options
(where the gateway is, call metadata, TLS files, ``--as``, the deadline, ``--json``), the bearer
token options (``--token-file``, ``--token-env``, ``$PKGGOV_CLI_TOKEN_FILE``), the client they
open, and how a failed call is reported.
"""

from __future__ import annotations

import argparse
import math
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc

from pkggov_client._cli_base import (
    ArgumentParser,
    UsageError,
    connection_hint,
    emit_json,
    error_to_dict,
    text_arg,
)
from pkggov_client._client import DEFAULT_TIMEOUT, PkggovClient, check_metadata
from pkggov_client._errors import PkggovError
from pkggov_client._text import printable
from pkggov_client._token import AUTHORIZATION_KEY, TokenError, check_token, is_loopback_target

__all__ = [
    "TOKEN_FILE_ENV",
    "add_principal_header",
    "add_token",
    "channel_credentials",
    "connect",
    "connection_parser",
    "principal_arg",
    "principal_key",
    "report_error",
]

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PKGGOV_CLI_TARGET"
LEGACY_TARGET_ENV = "PKGGOV_TARGET"
"""The older name of TARGET_ENV, still read (the gateway ignores it too)."""
DEV_PRINCIPAL_KEY = "x-pkggov-principal"
DEV_PRINCIPAL_KEY_ENV = "PKGGOV_CLI_PRINCIPAL_KEY"
TOKEN_FILE_ENV = "PKGGOV_CLI_TOKEN_FILE"  # noqa: S105 - a variable's name, not a secret.
"""The token file used when neither --token-file nor --token-env (nor --as, nor --header
authorization=...) is given."""
MAX_TIMEOUT = 86400.0
"""The longest --timeout taken: a day (the gateway caps a call's deadline far lower, at
server.max_deadline_seconds, 300 by default); gRPC fails a call at once with
DEADLINE_EXCEEDED when the deadline overflows."""


def _header_arg(text: str) -> tuple[str, str]:
    """Read `KEY=VALUE` as one call-metadata pair; the key is lower-cased."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected KEY=VALUE")
    try:
        (pair,) = check_metadata([(key.strip().lower(), value)])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return pair


def principal_arg(key: str) -> Callable[[str], tuple[str, str]]:
    """Return an argparse type that reads a principal name as the pair (`key`, NAME)."""

    def parse(text: str) -> tuple[str, str]:
        if not text:
            raise argparse.ArgumentTypeError("invalid principal '': expected a name")
        try:
            (pair,) = check_metadata([(key, text)])
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{err} (key from ${DEV_PRINCIPAL_KEY_ENV})") from None
        return pair

    return parse


def _seconds_arg(text: str) -> float:
    """Read a deadline: a finite number of seconds, more than 0 and at most MAX_TIMEOUT."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT:  # NaN too
        raise argparse.ArgumentTypeError(
            f"invalid timeout '{printable(text)}': expected seconds, more than 0 and at most "
            f"{MAX_TIMEOUT:g} (a day)"
        )
    return seconds


class _EncryptedKeyError(Exception):
    """Raised (to `ssl`, which passes it on) when --key needs a passphrase."""


def _no_passphrase() -> bytes:
    """Refuse to ask for a passphrase: gRPC takes no encrypted key (and must not prompt)."""
    raise _EncryptedKeyError


def _check_tls_files(cacert: Path, cert: Path | None, key: Path | None) -> None:
    """Raise UsageError unless --cacert holds a PEM certificate and --cert and --key (when
    given) are a PEM certificate and its unencrypted private key: gRPC itself only logs
    "Failed to create security handshaker" for any of these, and fails the call."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for option, path in (("--cacert", cacert), ("--cert", cert)):
        if path is None:
            continue
        try:
            context.load_verify_locations(cafile=path)
        except ssl.SSLError:
            raise UsageError(
                f"{option} {printable(str(path))} holds no certificate (PEM)"
            ) from None
    if cert is None or key is None:
        return
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKeyError:
        raise UsageError(
            f"--key {printable(str(key))} is encrypted: gRPC needs an unencrypted key"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise UsageError(
                f"--key {printable(str(key))} is not the key of --cert {printable(str(cert))}"
            ) from None
        raise UsageError(f"--key {printable(str(key))} holds no private key (PEM)") from None


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from --cacert/--cert/--key, or None for plaintext; UsageError
    for a file that cannot be read or does not hold what its option needs."""
    if args.cacert is None:
        if args.cert is not None or args.key is not None:
            raise UsageError("--cert and --key need --cacert (TLS)")
        return None
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    try:
        root_certificates = args.cacert.read_bytes()
        private_key = args.key.read_bytes() if args.key else None
        certificate_chain = args.cert.read_bytes() if args.cert else None
        _check_tls_files(args.cacert, args.cert, args.key)
    except OSError as error:
        name = printable(str(error.filename))
        raise UsageError(f"cannot read {name}: {error.strerror}") from error
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )


def principal_key(environ: Mapping[str, str]) -> str:
    """The metadata key that --as NAME sets."""
    return (environ.get(DEV_PRINCIPAL_KEY_ENV) or DEV_PRINCIPAL_KEY).strip().lower()


def connection_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Options every subcommand shares: where the gateway is, call metadata, output form."""
    parent = ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output")
    default_target = environ.get(TARGET_ENV) or environ.get(LEGACY_TARGET_ENV) or DEFAULT_TARGET
    group.add_argument(
        "--target",
        type=text_arg,
        default=default_target,
        metavar="HOST:PORT",
        help=(
            f"gateway address (default: ${TARGET_ENV}, ${LEGACY_TARGET_ENV} or {DEFAULT_TARGET}; "
            f"now {default_target})"
        ),
    )
    group.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header_arg,
        default=[],
        metavar="KEY=VALUE",
        help="call metadata to send; repeat for several",
    )
    group.add_argument(
        "--cacert",
        type=Path,
        metavar="FILE",
        help="use TLS, trusting the gateway certificate's CA in FILE (PEM); without it the "
        "connection is plaintext",
    )
    group.add_argument(
        "--cert", type=Path, metavar="FILE", help="client certificate (PEM) for mTLS"
    )
    group.add_argument("--key", type=Path, metavar="FILE", help="client private key (PEM) for mTLS")
    group.add_argument(
        "--as",
        dest="as_principal",
        type=principal_arg(principal_key(environ)),
        metavar="NAME",
        help=(
            "development mode only: call as NAME by sending the header "
            f"{principal_key(environ)}=NAME (key from ${DEV_PRINCIPAL_KEY_ENV}, default "
            f"{DEV_PRINCIPAL_KEY}); a gateway not in development mode does not trust it"
        ),
    )
    group.add_argument(
        "--timeout",
        type=_seconds_arg,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of the call (default: {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help=(
            "print JSON on stdout: the response in the proto3 JSON mapping (lowerCamelCase "
            'names, as grpcurl prints it), or {"error": google.rpc.Status} when the call fails'
        ),
    )
    _add_token_options(parent, environ)
    return parent


def _add_token_options(parent: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """--token-file and --token-env, with the rules of precedence in the group's description."""
    from_environment = environ.get(TOKEN_FILE_ENV) or None
    now = f"now {printable(from_environment)}" if from_environment else "now unset"
    group = parent.add_argument_group(
        "workload identity (bearer token)",
        description=(
            "Call as the workload a signed token names (a JWT: a CI job's OIDC token, a "
            "Kubernetes service-account token), sent as 'authorization: Bearer TOKEN'. It is "
            "sent over TLS (--cacert) only, or in plaintext to a loopback --target "
            "(development). The token comes from --token-file or --token-env (not both); "
            f"without either, from the file ${TOKEN_FILE_ENV} names ({now}) unless --as or "
            "--header authorization=... is given. A token given by --token-file or "
            "--token-env refuses --as and --header authorization=...; a client certificate "
            "(--cert, --key) may go with it. A file or variable that cannot be read or holds "
            "no token is a usage error (exit 2); the token is never printed."
        ),
    )
    group.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=(
            "send the token held in FILE (surrounding whitespace is ignored); FILE is read "
            "again whenever it changes, as when Kubernetes rotates a projected token"
        ),
    )
    group.add_argument(
        "--token-env",
        type=text_arg,
        metavar="NAME",
        help="send the token held in the environment variable NAME (give its name, not its value)",
    )


def add_token(
    parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str]
) -> None:
    """Set ``args.token`` (from --token-env) and ``args.token_file`` (from --token-file, or
    $PKGGOV_CLI_TOKEN_FILE), and exit 2 through `parser` for options that conflict, a variable
    that holds no token, or a token that would travel in plaintext to another host.

    Call it after `add_principal_header`. The file is not read here (it may be a pipe that can
    be read only once): `connect` reads it, and raises UsageError when it cannot.
    """
    if not hasattr(args, "headers"):  # a command without the connection options
        return
    token_file: Path | None = getattr(args, "token_file", None)
    token_env: str | None = getattr(args, "token_env", None)
    principal = getattr(args, "as_principal", None)
    authorization = any(key == AUTHORIZATION_KEY for key, _ in args.headers)
    if token_file is not None and token_env is not None:
        parser.error("--token-file and --token-env both give the token; use one")
    given = "--token-file" if token_file is not None else "--token-env"
    if token_env is not None or token_file is not None:
        if principal is not None:
            parser.error(f"--as (a development principal) and {given} (a token); use one")
        if authorization:
            parser.error(f"{given} and --header {AUTHORIZATION_KEY}=... both send a token; use one")
    elif principal is None and not authorization and environ.get(TOKEN_FILE_ENV):
        token_file = Path(environ[TOKEN_FILE_ENV])
        given = f"${TOKEN_FILE_ENV}"
    token: str | None = None
    if token_env is not None:
        value = environ.get(token_env)
        if value is None:
            parser.error(f"--token-env {printable(token_env)}: the variable is not set")
        try:
            token = check_token(value, f"--token-env {printable(token_env)}: the variable")
        except TokenError as error:
            parser.error(str(error))
    sends_token = token is not None or token_file is not None or authorization
    if sends_token and args.cacert is None and not is_loopback_target(args.target):
        what = given if token is not None or token_file is not None else "--header"
        parser.error(
            f"refusing to send a bearer token ({what}) in plaintext to "
            f"{printable(args.target)}: use TLS (--cacert); plaintext is only for a loopback "
            "--target (development)"
        )
    args.token, args.token_file = token, token_file


def connect(args: argparse.Namespace) -> PkggovClient:
    """A client for the connection options of `args` (UsageError for bad TLS options, or a
    token file that cannot be read or holds no token)."""
    credentials = channel_credentials(args)
    try:
        return PkggovClient(
            args.target,
            credentials=credentials,
            metadata=args.headers,
            timeout=args.timeout,
            token=getattr(args, "token", None),
            token_file=getattr(args, "token_file", None),
        )
    except TokenError as error:
        raise UsageError(str(error)) from error


def report_error(
    err: PkggovError, args: argparse.Namespace, *, request_id: str | None = None
) -> None:
    """Print a failed call: as JSON on stdout with --json, else on stderr; a connection that
    failed gets its cause in words when gRPC tells it (which side refused TLS, and why). The
    text form is `printable`: nothing the gateway sent reaches the terminal as a control."""
    hint = connection_hint(
        err, tls=args.cacert is not None, client_certificate=args.cert is not None
    )
    if args.json:
        output = error_to_dict(err, hint=hint)
        if request_id is not None:
            output["requestId"] = request_id
        emit_json(output)
        return
    print(f"error: {printable(hint)}" if hint else f"error: {err}", file=sys.stderr)
    if hint:
        print(f"  {err.headline}", file=sys.stderr)


def add_principal_header(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Append --as's pair to the call metadata; refuse it next to a --header of its key."""
    principal: tuple[str, str] | None = getattr(args, "as_principal", None)
    if principal is None:
        return
    key = principal[0]
    if any(header_key == key for header_key, _ in args.headers):
        parser.error(f"--as and --header {key}=... both set the principal; use one")
    args.headers = [*args.headers, principal]
