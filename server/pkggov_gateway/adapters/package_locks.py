"""The PackageLocks port: an in-process lock table, file locks for the workers of one host, and
PostgreSQL advisory locks for a fleet.

`LocalPackageLocks` serializes the threads of one process: one `threading.Lock` per package
key, created on first use and dropped as soon as no thread holds or waits for it (so the table
holds only the packages in use). It is the whole story for a single replica of one process
(SQLite audit, server.workers = 1).

`FilePackageLocks` serializes the worker processes of one replica on a SQLite audit store
(server.workers > 1): POSIX record locks (``fcntl``) on one byte of a lock file next to the
database, the byte at the package's slot (its key's hash modulo `SLOTS`; two packages sharing
a slot merely take turns). POSIX record locks belong to the process, not the thread: a second
thread of the holder would "get" the byte at once, and the first one's unlock would release
it for both. So a call first takes the in-process lock of the slot (not only of the package:
two packages of one slot must not share the byte either), then the byte, polling with a
non-blocking lock until it is free or the caller's deadline passes. The kernel releases a dead
process's record locks, so a crashed worker never leaves a package locked.

`PostgresPackageLocks` serializes a fleet sharing one PostgreSQL database. A call first takes
the in-process lock (so a process queues its own calls locally and uses at most one database
connection per package), then, on a pooled connection of its own, begins a transaction and
takes ``pg_advisory_xact_lock(key)`` with ``lock_timeout`` set to the time it may wait. The
transaction stays open while the caller works and is rolled back when the block ends, which
releases the lock. Because the lock belongs to the transaction, every way the holder can end
releases it: an exception (the rollback runs in ``finally``), the gateway process dying (its
connection closes), the connection breaking (the server ends the session: server-side TCP
keepalives are set short), or a holder that hangs (``idle_in_transaction_session_timeout``,
set to the caller's deadline plus a grace, ends the session).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import AuditUnavailableError, PackageBusyError
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.package_key import package_key, package_key_id

__all__ = [
    "SLOTS",
    "FilePackageLocks",
    "LocalPackageLocks",
    "PostgresPackageLocks",
    "describe_package",
    "lock_file_of",
    "open_package_locks",
    "slot_of",
]

log = structlog.get_logger("pkggov.package_locks")


def describe_package(package: PackageRef) -> str:
    """`package` as messages name it: domain/repository/format/[namespace/]name."""
    namespace = f"{package.namespace}/" if package.namespace else ""
    return (
        f"{package.domain}/{package.repository}/{package.format.value}/{namespace}{package.package}"
    )


@dataclass(slots=True)
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    """Threads holding or waiting for `lock`; the slot leaves the table at zero."""


class LocalPackageLocks:
    """One lock per package for the threads of this process (see the module docstring); with
    `key`, one lock per key: packages of one key take turns (FilePackageLocks: of one slot)."""

    def __init__(self, key: Callable[[PackageRef], Hashable] = package_key) -> None:
        self._key = key
        self._guard = threading.Lock()
        self._slots: dict[Hashable, _Slot] = {}

    def __len__(self) -> int:
        """The keys currently held or waited for."""
        with self._guard:
            return len(self._slots)

    @contextlib.contextmanager
    def hold(self, package: PackageRef, deadline: Deadline) -> Iterator[None]:
        """Hold the lock of `package`'s key for the block; PackageBusyError when it is not
        free before `deadline` (with no time left, one try without waiting)."""
        key = self._key(package)
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            slot.users += 1
        try:
            started = time.monotonic()
            if not slot.lock.acquire(timeout=deadline.remaining()):
                raise PackageBusyError(describe_package(package), time.monotonic() - started)
            try:
                yield
            finally:
                slot.lock.release()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[key]

    def close(self) -> None:
        """Nothing to release: the locks live and die with the process."""


SLOTS = 1 << 40
"""Byte offsets of the lock file that packages are hashed to: far more than packages in use,
so two packages share a byte (and take turns) about never."""

_POLL_FIRST_SECONDS = 0.0005
_POLL_MOST_SECONDS = 0.01
"""A waiter tries the byte again after 0.5 ms, doubling to at most every 10 ms (one thread per
slot and process polls: the others wait on the in-process lock)."""


def slot_of(package: PackageRef) -> int:
    """The byte of the lock file that stands for `package` (equal for every spelling)."""
    return package_key_id(package) % SLOTS


def lock_file_of(database: Path) -> Path:
    """The package lock file of a SQLite audit store: next to it, as its ``-wal`` is."""
    return database.with_name(f"{database.name}-package-locks")


class FilePackageLocks:
    """Package locks for the worker processes of one host sharing a SQLite audit store: the
    in-process lock of the package's slot, then a POSIX record lock on the slot's byte of
    `path` (see the module docstring).

    The file is opened once and kept open until `close` (closing any descriptor of a file
    releases every record lock the process holds on it); it is created (mode 0600) if missing.
    Raises OSError when it cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fd_guard = threading.Lock()
        """Held around each use of the descriptor and its closing (each use is one
        non-blocking call): never a lock call on a descriptor number closed and reused."""
        self._local = LocalPackageLocks(key=slot_of)

    def __len__(self) -> int:
        """The slots currently held or waited for in this process."""
        return len(self._local)

    @contextlib.contextmanager
    def hold(self, package: PackageRef, deadline: Deadline) -> Iterator[None]:
        """Hold `package`'s lock for the block, among this process's threads and the other
        processes locking `path`.

        PackageBusyError when another holder keeps it past `deadline` (with no time left,
        one try without waiting); AuditUnavailableError when the lock file itself fails (fail
        closed: nothing proceeds unlocked).
        """
        started = time.monotonic()
        slot = slot_of(package)
        with self._local.hold(package, deadline):
            self._lock(slot, deadline, package, started)
            try:
                yield
            finally:
                self._unlock(slot)

    def close(self) -> None:
        """Close the lock file (the process's record locks on it go with it)."""
        with self._fd_guard:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)

    def _lock(self, slot: int, deadline: Deadline, package: PackageRef, started: float) -> None:
        pause = _POLL_FIRST_SECONDS
        while True:
            try:
                with self._fd_guard:
                    if self._fd < 0:
                        raise AuditUnavailableError("the package locks are closed (stopping)")
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot, os.SEEK_SET)
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise AuditUnavailableError(
                        f"the package lock file {self.path} failed: {err}"
                    ) from err
            else:
                return
            left = deadline.remaining()
            if left <= 0:
                raise PackageBusyError(describe_package(package), time.monotonic() - started)
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MOST_SECONDS)

    def _unlock(self, slot: int) -> None:
        try:
            with self._fd_guard:
                if self._fd < 0:  # closed while held (a call outlived the drain): released
                    return
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot, os.SEEK_SET)
        except OSError as err:  # never seen; the lock goes with the process at the latest
            log.warning("package_lock.release_failed", error=str(err), path=str(self.path))


_KEEPALIVE_SETTINGS = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
"""Server side of each lock connection: a holder whose host vanishes is noticed (and its lock
released) within about 25 s, not after the operating system's two hours."""


class PostgresPackageLocks:
    """Advisory locks on a PostgreSQL database shared by the fleet (see the module docstring).

    `max_connections` bounds the pool: one connection per package a call of this process
    holds, so the number of threads that run calls (server.max_workers) is enough.
    `hold_grace_seconds` is how long past its deadline a holder may keep the lock before the
    server ends its session.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        max_connections: int,
        connect_timeout_seconds: float = 5.0,
        hold_grace_seconds: float = 30.0,
        local: LocalPackageLocks | None = None,
    ) -> None:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - only fleets need it loaded

        self._local = local or LocalPackageLocks()
        self._connect_timeout = connect_timeout_seconds
        self._hold_grace = hold_grace_seconds
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, max_connections),
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(connect_timeout_seconds)),
                "prepare_threshold": None,
                "application_name": "pkggov-package-locks",
                # Client side: a dead server is noticed while the lock is held, and a request
                # the server never acknowledges fails instead of waiting for TCP's timeout.
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": round(connect_timeout_seconds * 1000),
            },
            configure=_configure,
            check=ConnectionPool.check_connection,  # drop connections an outage broke
            timeout=connect_timeout_seconds,
            open=False,
            name="pkggov-package-locks",
        )
        self._pool.open(wait=False)

    @contextlib.contextmanager
    def hold(self, package: PackageRef, deadline: Deadline) -> Iterator[None]:
        """Hold `package`'s lock for the block, in this process and in the fleet.

        PackageBusyError when another holder keeps it past `deadline`; AuditUnavailableError
        when the database cannot be reached in time (fail closed: nothing proceeds unlocked).
        """
        started = time.monotonic()
        with self._local.hold(package, deadline):
            conn = self._connection(deadline)
            try:
                self._lock(conn, package, deadline, started)
                yield
            finally:
                self._release(conn)

    def close(self) -> None:
        """Close the pool (every lock is released with its connection)."""
        self._pool.close()

    def _connection(self, deadline: Deadline) -> Any:
        from psycopg_pool import PoolTimeout  # noqa: PLC0415 - see __init__

        # At least a moment: a caller whose wait budget is spent still gets its one try.
        wait = min(self._connect_timeout, max(deadline.remaining(), 0.05))
        try:
            return self._pool.getconn(timeout=wait)
        except PoolTimeout as err:
            raise AuditUnavailableError(
                f"the package lock's database gave no connection within {wait:.3f}s"
            ) from err

    def _lock(self, conn: Any, package: PackageRef, deadline: Deadline, started: float) -> None:
        import psycopg  # noqa: PLC0415 - see __init__

        key = package_key_id(package)
        wait_ms = int(deadline.remaining() * 1000)
        hold_ms = wait_ms + round(self._hold_grace * 1000)
        try:
            if wait_ms < 1:  # lock_timeout 0 would mean "wait forever": try once instead
                conn.execute("BEGIN")
                row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
                if row is None or not row[0]:
                    raise PackageBusyError(describe_package(package), time.monotonic() - started)
                return
            # Integers formatted by us: one round trip for the transaction and its limits.
            conn.execute(
                f"BEGIN; SET LOCAL lock_timeout = {wait_ms};"
                f" SET LOCAL idle_in_transaction_session_timeout = {hold_ms}"
            )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        except psycopg.errors.LockNotAvailable as err:
            raise PackageBusyError(describe_package(package), time.monotonic() - started) from err
        except psycopg.Error as err:
            raise AuditUnavailableError(f"the package lock's database failed: {err}") from err

    def _release(self, conn: Any) -> None:
        """Roll back (releasing the lock) and return the connection; a broken connection is
        discarded by the pool, and the server released its lock when the session ended."""
        try:
            conn.execute("ROLLBACK")
        except Exception as err:  # noqa: BLE001 - the lock is gone with the session anyway
            log.warning("package_lock.release_failed", error=str(err))
        finally:
            self._pool.putconn(conn)


def _configure(conn: Any) -> None:
    conn.execute(_KEEPALIVE_SETTINGS)


def open_package_locks(
    audit_store: str, *, max_connections: int, processes: int = 1
) -> LocalPackageLocks | FilePackageLocks | PostgresPackageLocks:
    """The locks that fit the audit store's reach: PostgreSQL advisory locks on its database
    when it is ``postgresql://`` (a fleet may share it); for SQLite (one replica) file locks
    next to the database when the replica runs several `processes` (server.workers), else
    in-process locks. Raises OSError when the lock file cannot be opened."""
    if audit_store.startswith(("postgresql://", "postgres://")):
        return PostgresPackageLocks(audit_store, max_connections=max_connections)
    from pkggov_gateway.adapters.sql.dialects import (  # noqa: PLC0415 - loads sqlite3, which
        sqlite_path,  # the fakes (pkggov_gateway.testing, which use this module) must not
    )

    database = sqlite_path(audit_store)
    if processes > 1 and database is not None:
        return FilePackageLocks(lock_file_of(database))
    return LocalPackageLocks()
