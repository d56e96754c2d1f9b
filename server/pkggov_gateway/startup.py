"""Start-up failures: one line naming the setting at fault, whatever the adapter raised.

build_gateway and Gateway.start raise StartupError, and only it, for anything a setting names
that cannot be used: a listen address, a file, the audit store. Foreign exceptions are
translated where the setting is known, by `naming` and the one table `_CAUSES`::

    with naming("metrics.listen", listen, doing="cannot listen"):
        MetricsServer(metrics.registry, listen)
    # StartupError: metrics.listen 127.0.0.1:9464: cannot listen: address already in use

An exception the table does not know passes through: `pkggov-gateway` reports it as
unexpected (one line; the traceback is logged at debug level).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError

from pkggov_gateway.adapters.cedar_source import PolicyLoadError
from pkggov_gateway.config import Settings, mask_store, masked_store
from pkggov_gateway.domain.errors import AuditUnavailableError

__all__ = [
    "KNOWN",
    "StartupError",
    "cause_of",
    "check_listen",
    "file_problem",
    "listen_failure",
    "naming",
    "one_line",
    "os_reason",
    "sqlite_problem",
    "store_error",
]


class StartupError(Exception):
    """Raised by build_gateway and Gateway.start when a setting, or what it names (a file, a
    listen address, the audit store), cannot be used.

    `str()` is one line, ``setting value: cause`` (``setting: cause`` without a value); a
    cause that already starts with a setting's name under `setting` (the TLS adapter names
    ``identity.server_key`` itself) is the whole message.
    """

    def __init__(self, setting: str, cause: str, *, value: str = "") -> None:
        cause = one_line(cause)
        named = re.match(rf"{re.escape(setting)}(\.\w+)?\b", cause)
        self.setting = named.group() if named else setting
        self.value = value
        self.cause = cause
        where = f"{setting} {value}" if value else setting
        super().__init__(cause if named else f"{where}: {cause}")


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of blanks made single spaces."""
    return " ".join(text.split())


def unexpected_at_start(error: BaseException) -> str:
    """The one line a start-up failure that is not a StartupError prints (a bug, most
    likely; its traceback is logged at debug level)."""
    return (
        f"unexpected error at start-up: {type(error).__name__}: {one_line(str(error))} "
        "(logging.level = debug logs the traceback)"
    )


def os_reason(error: OSError) -> str:
    """What the system said (``address already in use``), or the message if it said nothing."""
    if error.errno is not None and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error)


def _audit_cause(error: AuditUnavailableError) -> str:
    # The driver's own message, not AuditUnavailableError's text (written for a refused call).
    return str(error.__cause__) if error.__cause__ is not None else error.detail


_DEVELOPMENT_INSTALLS = {"pkggov_emulator": "make venv installs pkggov-emulator from ./emulator"}
"""Modules the gateway imports only for development, and how each is installed."""


def _missing_module(error: ImportError) -> str:
    module = error.name or str(error)
    how = _DEVELOPMENT_INSTALLS.get(module.partition(".")[0])
    return f"{module} is not installed (a development dependency{f'; {how}' if how else ''})"


_CAUSES: tuple[tuple[type[BaseException], Callable[[Any], str]], ...] = (
    (AuditUnavailableError, _audit_cause),
    (PolicyLoadError, str),  # path:line: message
    (OSError, os_reason),  # includes socket.gaierror
    (BotoCoreError, str),  # e.g. ProfileNotFound
    (ValueError, str),  # the adapters' "bad content" errors, UnicodeDecodeError, SeedError
    (ImportError, _missing_module),
)
"""What each known exception type says, first match wins (subclasses before their bases)."""

KNOWN: tuple[type[BaseException], ...] = tuple(kind for kind, _ in _CAUSES)
"""The exception types `naming` translates."""


def cause_of(error: BaseException) -> str:
    """The cause `error` (one of KNOWN) stands for, in the table's words."""
    for kind, render in _CAUSES:
        if isinstance(error, kind):
            return render(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def naming(setting: str, value: str = "", *, doing: str = "") -> Iterator[None]:
    """Re-raise a KNOWN exception of the block as StartupError(setting, value, doing: cause)."""
    try:
        yield
    except StartupError:
        raise
    except KNOWN as error:
        cause = cause_of(error)
        raise StartupError(setting, f"{doing}: {cause}" if doing else cause, value=value) from error


def listen_failure(listen: str) -> str | None:
    """Why ``HOST:PORT`` cannot be listened on now (``address already in use``, ...), found by
    binding it as the servers do (SO_REUSEADDR); None when it can be.

    grpcio's bind failure says only "Failed to bind"; this recovers the system's reason.
    """
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        found = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as error:
        return f"cannot resolve {host}: {os_reason(error) if isinstance(error, OSError) else error}"
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
                sock.listen()
        except OSError as error:
            return os_reason(error)
    return None


def check_listen(setting: str, listen: str) -> None:
    """Raise StartupError naming `setting` when ``HOST:PORT`` cannot be listened on now (port
    0, a free one chosen at bind time, always can)."""
    port = listen.rpartition(":")[2]
    if port.isdigit() and int(port) == 0:
        return
    reason = listen_failure(listen)
    if reason is not None:
        raise StartupError(setting, f"cannot listen: {reason}", value=listen)


def file_problem(path: Path, *, create: bool = False) -> str | None:
    """Why `path` cannot be used as a file the gateway writes (`create`: may be made, with
    others next to it, in its directory); None when it can, as far as can be told."""
    parent = path.parent
    if path.is_dir():
        return f"{path} is a directory"
    if not parent.exists():
        return f"directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not readable and writable"
    if (create or not path.exists()) and not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    return None


def sqlite_problem(path: Path) -> str | None:
    """Why a SQLite audit store cannot be opened at `path`; None when it looks usable.

    The directory must be writable even when the file exists: WAL mode creates the
    ``-wal`` and ``-shm`` files next to it.
    """
    return file_problem(path, create=True)


def store_error(settings: Settings, cause: str) -> StartupError:
    """A StartupError about audit.store, shown masked, with any password in `cause` (a driver
    may quote the URL) masked."""
    store = settings.audit.store
    return StartupError("audit.store", mask_store(cause, store), value=masked_store(store))
