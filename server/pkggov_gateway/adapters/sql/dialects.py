"""What differs between SQLite and PostgreSQL: connections, placeholders, the chain lock.

A `Dialect` is all the store knows of its database: how to open a connection (autocommit,
transactions begun explicitly), how to write a placeholder, how to begin a transaction that
holds the chain's lock (one writer at a time, across replicas on PostgreSQL), the schema's
migrations with this database's type names, and a pool of reader connections.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from pkggov_gateway.adapters.sql.migrations import Migration, migrations

__all__ = ["Dialect", "PostgresDialect", "SqliteDialect", "sqlite_path"]


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL."""

    name: str
    description: str

    def connect(self) -> Any:
        """A new connection in autocommit mode (transactions are begun explicitly)."""
        ...

    def sql(self, text: str) -> str:
        """`text` with ``?`` placeholders rewritten for this database."""
        ...

    def begin_locked(self, conn: Any) -> None:
        """Begin a transaction holding the chain's lock (one writer at a time)."""
        ...

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """A block in which statements on `conn` are sent without waiting for each one's
        answer (PostgreSQL's pipeline mode; nothing for SQLite): a fetch, or the block's end,
        waits for everything sent before it, in one round trip."""
        ...

    def migrations(self) -> list[Migration]:
        """The schema migrations, in order."""
        ...

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        """A pooled connection for queries (autocommit)."""
        ...

    def close(self) -> None:
        """Close the pooled connections."""
        ...


class _Connection(sqlite3.Connection):
    """A connection that can carry `polls_when_busy` (see SqliteDialect.begin_locked)."""

    polls_when_busy = False


class SqliteDialect:
    """One SQLite file: WAL, synchronous=FULL, one writer at a time (BEGIN IMMEDIATE)."""

    name = "sqlite"

    def __init__(self, path: Path, busy_timeout_seconds: float = 5.0, readers: int = 4) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self.description = f"sqlite:{path}"
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue(maxsize=readers)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # LIKE compares as PostgreSQL's does: a version filter for 1.0.0-rc1 is not 1.0.0-RC1
        conn.execute("PRAGMA case_sensitive_like=ON")
        return conn

    def sql(self, text: str) -> str:
        return text

    def begin_locked(self, conn: Any) -> None:
        """``BEGIN IMMEDIATE``, retried every 0.1 to 1 ms while another process (a worker of
        the same replica, `server.workers`) holds the write lock, up to the busy timeout.
        SQLite's own busy handler sleeps 1, 2, 5, 10, then up to 100 ms between tries: a
        commit that waits for another process's 1 ms commit would sleep several."""
        if not getattr(conn, "polls_when_busy", False):
            conn.execute("PRAGMA busy_timeout = 0")  # this connection: BEGIN fails at once
            conn.polls_when_busy = True
        deadline = time.monotonic() + self.busy_timeout_seconds
        delay = 0.0001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                busy = ((err.sqlite_errorcode or 0) & 0xFF) == sqlite3.SQLITE_BUSY  # extended too
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.001)
            else:
                return

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """Nothing to batch: SQLite runs in this process."""
        return contextlib.nullcontext()

    def migrations(self) -> list[Migration]:
        return migrations("INTEGER")

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self.connect()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


_ADVISORY_KEY = 0x706B67676F76  # "pkggov": the chain lock's advisory lock key


class PostgresDialect:
    """A PostgreSQL database shared by replicas: synchronous commit, an advisory chain lock."""

    name = "postgresql"

    def __init__(
        self, conninfo: str, connect_timeout_seconds: float = 5.0, readers: int = 4
    ) -> None:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - only fleets need it loaded

        self.conninfo = conninfo
        self.connect_timeout_seconds = connect_timeout_seconds
        parts = urlsplit(conninfo)
        host = parts.hostname or "localhost"
        self.description = f"postgresql://{host}:{parts.port or 5432}{parts.path}"
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=readers,
            kwargs={
                "autocommit": True,
                "connect_timeout": self._connect_timeout(),
                "prepare_threshold": None,
            },
            timeout=connect_timeout_seconds,
            open=False,
            name="pkggov-audit-readers",
            check=ConnectionPool.check_connection,  # drop connections an outage broke
        )
        self._pool.open(wait=False)

    def _connect_timeout(self) -> int:
        return max(1, round(self.connect_timeout_seconds))

    def connect(self) -> Any:
        import psycopg  # noqa: PLC0415 - only PostgreSQL deployments need it loaded

        # No server-side prepared statements: PostgreSQL would keep the generic plan it made
        # while the table was nearly empty (seen: the request_id lookup scanning the
        # principal's index, 3 ms at 10k entries instead of 0.004 ms) until the next
        # ANALYZE; unprepared queries are planned with their values each time. It also lets
        # the gateway run behind a transaction-pooling PgBouncer.
        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=self._connect_timeout(),
            prepare_threshold=None,
        )

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def begin_locked(self, conn: Any) -> None:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL synchronous_commit TO on")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """libpq's pipeline mode: statements are sent without waiting for each answer; a
        fetch, or the block's end, waits for what was sent (one round trip)."""
        return cast("contextlib.AbstractContextManager[Any]", conn.pipeline())

    def migrations(self) -> list[Migration]:
        return migrations("BIGINT")

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        return self._pool.connection()

    def close(self) -> None:
        self._pool.close()


def sqlite_path(url: str) -> Path | None:
    """The SQLite file `url` names (see open_audit_store); None for a PostgreSQL URL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:") if url.startswith("sqlite:") else url
    return Path(path[2:] if path.startswith("//") else path)
