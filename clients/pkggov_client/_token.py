"""Bearer tokens for the gateway's workload identity (OIDC / JWT), and where one may be sent.

A token is either given as text or read from a file. A file is read again whenever it changes,
so a token that is rotated under a running client is picked up at its next call: a Kubernetes
projected service-account token (the kubelet writes a new directory and swaps a ``..data``
symlink to it, so the path resolves to a new inode), or a CI job's token rewritten in place.
Changes are seen by `os.stat` of the path before each call (its device, inode, size, mtime and
ctime), which costs one system call; the file is only opened when that stamp differs.

A token is sent as ``authorization: Bearer TOKEN`` call metadata, and only over TLS, or in
plaintext to this host (`is_loopback_target`): a bearer token is a password for its lifetime.
No message here ever holds a token: errors name the file, the variable or the argument only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import threading
from pathlib import Path
from typing import Protocol

from pkggov_client._text import printable

__all__ = [
    "AUTHORIZATION_KEY",
    "MAX_TOKEN_BYTES",
    "FileToken",
    "StaticToken",
    "TokenError",
    "TokenSource",
    "check_token",
    "is_loopback_target",
]

AUTHORIZATION_KEY = "authorization"
"""The call-metadata key a bearer token travels in (lower case, as gRPC metadata keys are)."""

MAX_TOKEN_BYTES = 64 * 1024
"""The largest token file read; more is refused as not a token (a JWT is a few KiB)."""

_TOKEN = re.compile(r"[\x21-\x7e]+")
"""One token: printable ASCII without spaces (a JWT's three base64url parts and two dots)."""

_Stamp = tuple[int, int, int, int, int]


class TokenError(Exception):
    """Raised when a bearer token cannot be read (a missing, unreadable, empty or malformed
    token file or value) or may not be sent (in plaintext to a host other than this one).
    The message names the file, variable or argument, never the token."""


def check_token(text: str, source: str) -> str:
    """`text` without surrounding whitespace, or TokenError (naming `source`, such as
    "token file /x") when it is empty or is not one token: printable ASCII without spaces."""
    token = text.strip()
    if not token:
        raise TokenError(f"{source} is empty: expected a token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(f"{source} is too long for a token (more than {MAX_TOKEN_BYTES} bytes)")
    if not _TOKEN.fullmatch(token):
        raise TokenError(
            f"{source} does not hold one token: expected printable ASCII without spaces "
            "(the token alone, without a 'Bearer ' prefix)"
        )
    return token


class TokenSource(Protocol):
    """Where a client gets the bearer token of its next call."""

    def token(self) -> str:
        """The current token; TokenError when there is none to send."""
        ...


class StaticToken:
    """A token given as text: checked once, sent as it is."""

    def __init__(self, token: str, source: str = "token") -> None:
        self._token = check_token(token, source)

    def token(self) -> str:
        """The token."""
        return self._token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


def _stamp(status: os.stat_result) -> _Stamp:
    """What changes when a file is replaced (device, inode) or rewritten (size, times)."""
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


class FileToken:
    """A token read from the file at `path`, and read again whenever the file changes.

    Each `token` call stats the path (following symlinks, so a swapped Kubernetes ``..data``
    link shows as a new inode) and re-reads the file when its stamp differs from the one read
    last. A file that cannot be read, or holds no token, raises TokenError at that call; the
    next call tries again. A file that is not a regular file (a pipe, such as ``<(command)``)
    is read once only: it cannot be read again. Safe to share between threads.

    A file rewritten in place to the same size within one tick of the file system's clock keeps
    its stamp, and is not seen; replace files by renaming instead (as the kubelet does).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._name = f"token file {printable(str(self.path))}"
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._token = ""
        self._read_once = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def token(self) -> str:
        """The file's token, read again if the file changed since it was last read."""
        if self._read_once:
            return self._token
        try:
            current = _stamp(os.stat(self.path))
        except OSError as error:
            raise TokenError(f"cannot read {self._name}: {error.strerror}") from error
        with self._lock:
            if current != self._stamp:
                self._read()
            return self._token

    def _read(self) -> None:
        """Read the file (the caller holds the lock); the stamp kept is that of the file
        opened, so a change between the stat and the open is seen at the next call."""
        try:
            with self.path.open("rb") as file:
                status = os.fstat(file.fileno())
                data = file.read(MAX_TOKEN_BYTES + 1)
        except OSError as error:
            raise TokenError(f"cannot read {self._name}: {error.strerror}") from error
        if len(data) > MAX_TOKEN_BYTES:
            raise TokenError(
                f"{self._name} is too large for a token (more than {MAX_TOKEN_BYTES} bytes)"
            )
        # A byte that is not ASCII becomes U+FFFD, which check_token refuses.
        self._token = check_token(data.decode("ascii", "replace"), self._name)
        self._stamp = _stamp(status)
        self._read_once = not stat.S_ISREG(status.st_mode)


def _host(address: str) -> str:
    """The host of "host:port", "[v6]:port", "host" or a bare IPv6 address."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address  # no port, or a bare IPv6 address


def _is_loopback_host(host: str) -> bool:
    """Whether `host` names this host: "localhost" or a loopback address (127.0.0.0/8, ::1,
    ::ffff:127.0.0.0/104)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # an IPv6 zone is not the host
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_target(target: str) -> bool:
    """Whether gRPC can only reach this host through `target`: a Unix socket ("unix:",
    "unix-abstract:"), "localhost" or a loopback address, bare ("127.0.0.1:50051",
    "[::1]:50051") or in a "dns:", "ipv4:" or "ipv6:" target (every address of a list).
    Anything else, or anything not understood, is not loopback."""
    scheme, _, rest = target.partition(":")
    scheme = scheme.lower()
    if scheme in ("unix", "unix-abstract"):
        return True
    if scheme in ("ipv4", "ipv6"):
        addresses = rest.split(",")
        return all(_is_loopback_host(_host(address)) for address in addresses)
    if scheme == "dns":
        if rest.startswith("//"):  # dns://[authority]/host:port
            rest = rest[2:].partition("/")[2]
        return _is_loopback_host(_host(rest))
    return _is_loopback_host(_host(target))
