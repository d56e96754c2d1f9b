"""The AuditStore port on SQL: SQLite (one replica) and PostgreSQL (a fleet), one schema.

Both stores share the schema, the queries and the writer; a `Dialect` holds the differences
(connections, placeholders, the chain lock, durability settings).

Writing: one writer thread per store does *group commit*. Callers queue entries and wait;
the writer takes every queued entry (up to `max_batch`), and in one transaction that holds the
chain lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction advisory lock, so replicas
sharing a database take turns) reads the chain's tail, runs each entry's guard (request id
claim, quota), chains and inserts the entries, and commits (SQLite: WAL with
``synchronous=FULL``; PostgreSQL: ``synchronous_commit = on``). Each caller then gets its own
result: concurrent calls share one fsync, and each waits for the commit holding its entry.

An entry appended with ``durable=True`` (an outcome) that fails to commit stays queued and is
retried until it commits; meanwhile the store reports itself unhealthy. Any other failed
entry fails its caller with AuditUnavailableError, so nothing proceeds unrecorded.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from pkggov_gateway.domain.audit import (
    COLUMNS,
    GENESIS,
    AppendGuard,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    NewEntry,
    QuotaCheck,
    RequestIdClaimed,
    StoredEntry,
    canonical,
    chain_hash,
    column_values,
    format_time,
    parse_time,
    replay_verdict,
)
from pkggov_gateway.domain.errors import AuditUnavailableError, QuotaExceededError

__all__ = [
    "PostgresDialect",
    "SqlAuditStore",
    "SqliteDialect",
    "open_audit_store",
    "sqlite_path",
]

log = structlog.get_logger("pkggov.audit.store")


_SELECT_ENTRY = "SELECT seq, prev_hash, hash, body FROM audit_entries"
_LISTED = (
    "(e.kind = 'outcome' OR (e.kind = 'intent' AND NOT EXISTS ("
    "SELECT 1 FROM audit_entries o WHERE o.event_id = e.event_id AND o.kind = 'outcome')))"
)


def _migrations(big: str) -> list[tuple[int, list[str]]]:
    """Versioned schema migrations; `big` is the 64-bit integer type's name."""
    return [
        (
            1,
            [
                f"""CREATE TABLE audit_entries (
                    seq {big} PRIMARY KEY,
                    event_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    recorded_at TEXT NOT NULL,
                    request_id TEXT,
                    principal TEXT,
                    domain TEXT,
                    repository TEXT,
                    format TEXT,
                    namespace TEXT,
                    package TEXT,
                    versions TEXT,
                    decision TEXT,
                    status_code TEXT,
                    versions_planned INTEGER,
                    versions_deleted INTEGER,
                    body TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                )""",
                "CREATE UNIQUE INDEX audit_entries_event_kind ON audit_entries (event_id, kind)",
                "CREATE INDEX audit_entries_request_id ON audit_entries (request_id, principal)",
                "CREATE INDEX audit_entries_principal_time"
                " ON audit_entries (principal, kind, recorded_at)",
                "CREATE INDEX audit_entries_kind_time ON audit_entries (kind, recorded_at)",
                """CREATE TABLE audit_heartbeat (
                    replica TEXT PRIMARY KEY,
                    beat_at TEXT NOT NULL
                )""",
            ],
        ),
        (
            2,
            [
                # Keys shared by the replicas of one deployment (the page-token key), made
                # once by whichever replica migrates first.
                """CREATE TABLE pkggov_secrets (
                    name TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                )""",
            ],
        ),
    ]


PAGE_TOKEN_KEY = "page_token_key"  # noqa: S105 - the name of a row, not a secret
"""The pkggov_secrets row holding the deployment's page-token signing key (hex)."""


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

    def migrations(self) -> list[tuple[int, list[str]]]:
        """The schema migrations, in order."""
        ...

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        """A pooled connection for queries (autocommit)."""
        ...

    def close(self) -> None:
        """Close the pooled connections."""
        ...


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
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def sql(self, text: str) -> str:
        return text

    def begin_locked(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def migrations(self) -> list[tuple[int, list[str]]]:
        return _migrations("INTEGER")

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

    def migrations(self) -> list[tuple[int, list[str]]]:
        return _migrations("BIGINT")

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        return self._pool.connection()

    def close(self) -> None:
        self._pool.close()


@dataclass(slots=True)
class _Item:
    entry: NewEntry
    guard: AppendGuard | None
    durable: bool
    future: Future[StoredEntry] = field(default_factory=Future)
    text: str = ""
    """The body's canonical form."""
    columns: tuple[Any, ...] = ()
    """The body's indexed column values."""


class SqlAuditStore:
    """The audit store on one SQL database (see the module docstring)."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        replica: str = "gateway",
        max_batch: int = 256,
        retry_seconds: float = 0.5,
        heartbeat_seconds: float = 2.0,
        on_commit: Callable[[StoredEntry], None] | None = None,
    ) -> None:
        self.dialect = dialect
        self._on_commit = on_commit
        self.replica = replica
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._backlog: list[_Item] = []
        self._healthy = threading.Event()
        self._closed = False
        self._writer_conn: Any = None
        self.last_error: str | None = None
        self.page_token_key = b""  # set by _migrate
        try:
            self._migrate()
        except Exception as err:
            raise AuditUnavailableError(f"{dialect.description}: {err}") from err
        self._healthy.set()
        self._thread = threading.Thread(target=self._run, name="pkggov-audit-writer", daemon=True)
        self._thread.start()

    # --- port: writing ---------------------------------------------------------------------

    def append(
        self, entry: NewEntry, *, guard: AppendGuard | None = None, durable: bool = False
    ) -> StoredEntry:
        """Append `entry` and return it once committed.

        Raises AuditUnavailableError when it could not be committed (a `durable` entry is
        still retried in the background until it is), DuplicateRequest when the guard's
        request_id is already claimed, QuotaExceededError when the guard's quota refuses.
        """
        if self._closed:
            raise AuditUnavailableError("the audit store is closed")
        item = _Item(
            entry, guard, durable, text=canonical(entry.body), columns=column_values(entry.body)
        )
        self._queue.put(item)
        return item.future.result()

    def healthy(self) -> bool:
        """False while the last write failed or a durable entry awaits its commit."""
        return self._healthy.is_set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after it has committed what is queued (durable entries: tried)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self.dialect.close()

    # --- port: reading ---------------------------------------------------------------------

    def event(self, event_id: str) -> AuditEventRecord | None:
        """The event named `event_id`, or None."""
        with self._reader() as conn:
            rows = self._fetch(
                conn, f"{_SELECT_ENTRY} WHERE event_id = ? ORDER BY seq", (event_id,)
            )
        entries = tuple(_entry(row) for row in rows)
        return AuditEventRecord(event_id, entries) if entries else None

    def event_by_request_id(self, principal: str, request_id: str) -> AuditEventRecord | None:
        """The latest event in which `principal` claimed AIP-155 `request_id`, or None."""
        with self._reader() as conn:
            return self._event_by_request_id(conn, principal, request_id)

    def quota_usage(self, quota: QuotaCheck) -> tuple[int, float]:
        """Versions `quota.principal` deleted (or is deleting) in the window, and the seconds
        until the oldest of them leaves it."""
        with self._reader() as conn:
            return self._usage(conn, quota)

    def list_events(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, one page."""
        where = [_LISTED]
        params: list[Any] = []
        for name in (
            "principal",
            "domain",
            "repository",
            "format",
            "namespace",
            "package",
            "decision",
            "status_code",
        ):
            value = getattr(query, name)
            if value is not None:
                where.append(f"e.{name} = ?")
                params.append(value)
        if query.version is not None:
            where.append("e.versions LIKE ?")
            escaped = query.version.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%\n{escaped}\n%")
            where[-1] += " ESCAPE '\\'"
        if query.since is not None:
            where.append("e.recorded_at >= ?")
            params.append(format_time(query.since))
        if query.until is not None:
            where.append("e.recorded_at < ?")
            params.append(format_time(query.until))
        if query.before_seq is not None:
            where.append("e.seq < ?")
            params.append(query.before_seq)
        sql = (
            f"SELECT e.event_id, e.seq FROM audit_entries e WHERE {' AND '.join(where)} "  # noqa: S608 - fixed column names, values bound
            "ORDER BY e.seq DESC LIMIT ?"
        )
        params.append(query.limit + 1)
        with self._reader() as conn:
            heads = self._fetch(conn, sql, params)
            page, more = heads[: query.limit], len(heads) > query.limit
            ids = [row[0] for row in page]
            entries: dict[str, list[StoredEntry]] = {event_id: [] for event_id in ids}
            if ids:
                marks = ", ".join("?" for _ in ids)
                rows = self._fetch(
                    conn, f"{_SELECT_ENTRY} WHERE event_id IN ({marks}) ORDER BY seq", ids
                )
                for row in rows:
                    stored = _entry(row)
                    entries[stored.event_id].append(stored)
        events = tuple(AuditEventRecord(i, tuple(entries[i])) for i in ids)
        positions = tuple(int(row[1]) for row in page)
        return AuditPage(events, positions[-1] if more and page else None, positions)

    def open_intents(self) -> list[AuditEventRecord]:
        """Events with an intent but neither outcome nor reconciliation (oldest first)."""
        sql = (
            "SELECT i.seq, i.prev_hash, i.hash, i.body FROM audit_entries i "
            "WHERE i.kind = 'intent' AND NOT EXISTS (SELECT 1 FROM audit_entries o "
            "WHERE o.event_id = i.event_id AND o.kind <> 'intent') ORDER BY i.seq"
        )
        with self._reader() as conn:
            rows = self._fetch(conn, sql, ())
        return [AuditEventRecord(e.event_id, (e,)) for e in map(_entry, rows)]

    def iter_rows(self, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """Every stored row in chain order: seq, the indexed columns, body, prev_hash, hash."""
        names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
        after = -(2**63)  # every row, even one given a negative seq
        with self._reader() as conn:
            while True:
                rows = self._fetch(
                    conn,
                    f"SELECT {names} FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                    (after, batch),
                )
                if not rows:
                    return
                yield from rows
                after = rows[-1][0]

    # --- internals: connections and queries ------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        """A pooled connection; any database failure is AuditUnavailableError."""
        try:
            with self.dialect.reader() as conn:
                yield conn
        except AuditUnavailableError:
            raise
        except Exception as err:
            raise AuditUnavailableError(f"{self.dialect.description}: {err}") from err

    def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = conn.execute(self.dialect.sql(sql), tuple(params))
        return [tuple(row) for row in cursor.fetchall()]

    def _event_by_request_id(
        self, conn: Any, principal: str, request_id: str
    ) -> AuditEventRecord | None:
        rows = self._fetch(
            conn,
            "SELECT event_id FROM audit_entries WHERE request_id = ? AND principal = ? "
            "ORDER BY seq DESC LIMIT 1",
            (request_id, principal),
        )
        if not rows:
            return None
        event_id = str(rows[0][0])
        entries = self._fetch(conn, f"{_SELECT_ENTRY} WHERE event_id = ? ORDER BY seq", (event_id,))
        return AuditEventRecord(event_id, tuple(_entry(row) for row in entries))

    def _migrate(self) -> None:
        conn = self.dialect.connect()
        try:
            self.dialect.begin_locked(conn)
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS pkggov_schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                rows = self._fetch(conn, "SELECT version FROM pkggov_schema_migrations", ())
                applied = {int(row[0]) for row in rows}
                known = self.dialect.migrations()
                newest = max(version for version, _ in known)
                if applied and max(applied) > newest:
                    raise RuntimeError(
                        f"the audit schema is at version {max(applied)}, newer than this "
                        f"gateway knows ({newest}): upgrade the gateway"
                    )
                for version, statements in known:
                    if version in applied:
                        continue
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        self.dialect.sql(
                            "INSERT INTO pkggov_schema_migrations (version, applied_at) "
                            "VALUES (?, ?)"
                        ),
                        (version, format_time(datetime.now(UTC))),
                    )
                    log.info("audit.migrated", store=self.dialect.description, version=version)
                self.page_token_key = self._secret(conn, PAGE_TOKEN_KEY)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _secret(self, conn: Any, name: str) -> bytes:
        """The deployment's secret `name`, made (32 random bytes) if this store has none."""
        conn.execute(
            self.dialect.sql(
                "INSERT INTO pkggov_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
            ),
            (name, secrets.token_hex(32)),
        )
        rows = self._fetch(conn, "SELECT value FROM pkggov_secrets WHERE name = ?", (name,))
        return bytes.fromhex(str(rows[0][0]))

    # --- internals: the writer -------------------------------------------------------------

    def _run(self) -> None:
        """The writer loop: commit what is queued, retry the backlog, heartbeat when idle."""
        last_write = time.monotonic()
        stopping = False
        tries_left_at_stop = 3
        while True:
            batch: list[_Item] = list(self._backlog)
            if not stopping:
                retrying = bool(batch) or not self._healthy.is_set()
                timeout = self._retry_seconds if retrying else self._heartbeat_seconds
                try:
                    first: _Item | bool | None = self._queue.get(timeout=timeout)
                except queue.Empty:
                    first = False
                if first is None:
                    stopping = True
                elif isinstance(first, _Item):
                    batch.append(first)
                while not stopping and len(batch) < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                    else:
                        batch.append(more)
            if batch:
                self._commit(batch)
                last_write = time.monotonic()
            elif not stopping and (
                not self._healthy.is_set()
                or time.monotonic() - last_write >= self._heartbeat_seconds
            ):
                self._heartbeat()  # idle: prove that the store still takes writes
                last_write = time.monotonic()
            if stopping:
                if self._backlog and tries_left_at_stop > 0:
                    tries_left_at_stop -= 1
                    time.sleep(self._retry_seconds)
                    continue
                for item in self._backlog:  # its intent stays open: reconciled at start-up
                    log.error(
                        "audit.outcome_not_recorded_at_shutdown", event_id=item.entry.event_id
                    )
                self._close_writer()
                return

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                self._writer_conn.close()
            self._writer_conn = None

    def _writer(self) -> Any:
        if self._writer_conn is None:
            self._writer_conn = self.dialect.connect()
        return self._writer_conn

    def _heartbeat(self) -> None:
        try:
            conn = self._writer()
            self.dialect.begin_locked(conn)
            try:
                conn.execute(
                    self.dialect.sql(
                        "INSERT INTO audit_heartbeat (replica, beat_at) VALUES (?, ?) "
                        "ON CONFLICT (replica) DO UPDATE SET beat_at = excluded.beat_at"
                    ),
                    (self.replica, format_time(datetime.now(UTC))),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
        except Exception as err:  # noqa: BLE001 - any failure means the store is unusable
            self._failed(err)
        else:
            self._succeeded()

    def _failed(self, err: BaseException) -> None:
        self._close_writer()
        message = f"{self.dialect.description}: {type(err).__name__}: {err}"
        if self._healthy.is_set() or message != self.last_error:
            log.error("audit.store_unavailable", error=message, backlog=len(self._backlog))
        self.last_error = message
        self._healthy.clear()

    def _succeeded(self) -> None:
        if not self._backlog:
            if not self._healthy.is_set():
                log.info("audit.store_available", store=self.dialect.description)
            self._healthy.set()
            self.last_error = None

    def _commit(self, batch: list[_Item]) -> None:
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        try:
            conn = self._writer()
            self.dialect.begin_locked(conn)
            try:
                results = self._write(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
        except Exception as err:  # noqa: BLE001 - every failure fails (or defers) the batch
            self._failed(err)
            failure = AuditUnavailableError(f"{self.dialect.description}: {err}")
            self._backlog = [item for item in batch if item.durable]
            for item in batch:  # a durable entry's caller goes on; the entry is retried
                if not item.future.done():
                    item.future.set_exception(failure)
            return
        self._backlog = []
        for item, result in results:
            if isinstance(result, StoredEntry) and self._on_commit is not None:
                try:
                    self._on_commit(result)
                except Exception:  # the copy must never fail the record
                    log.exception("audit.copy_failed", event_id=result.event_id)
            if item.future.done():
                continue  # a durable entry retried after its caller was told
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        self._succeeded()

    def _write(
        self, conn: Any, batch: list[_Item]
    ) -> list[tuple[_Item, StoredEntry | BaseException]]:
        tail = self._fetch(
            conn, "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1", ()
        )
        seq, prev = (int(tail[0][0]), str(tail[0][1])) if tail else (0, GENESIS)
        existing = self._existing(conn, batch)
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
        marks = ", ".join("?" for _ in range(len(COLUMNS) + 4))
        insert = self.dialect.sql(f"INSERT INTO audit_entries ({names}) VALUES ({marks})")  # noqa: S608
        for item in batch:
            key = (item.entry.event_id, item.entry.kind.value)
            found = existing.get(key)
            if found is not None:  # committed before (a retry after an unclear commit)
                if found.body == json.loads(item.text):
                    results.append((item, found))
                else:
                    results.append(
                        (item, AuditUnavailableError(f"entry {key} already recorded differently"))
                    )
                continue
            refusal = self._check(conn, item)
            if refusal is not None:
                results.append((item, refusal))
                continue
            seq += 1
            digest = chain_hash(prev, item.text)
            conn.execute(insert, (seq, *item.columns, item.text, prev, digest))
            stored = StoredEntry(seq, prev, digest, item.entry.body)
            existing[key] = stored
            results.append((item, stored))
            prev = digest
        return results

    def _existing(self, conn: Any, batch: list[_Item]) -> dict[tuple[str, str], StoredEntry]:
        """The batch's entries that are already stored (a retry after an unclear commit).

        Only those bodies are read: an outcome's event always holds its intent, which is not
        parsed for nothing on every commit."""
        keys = {(item.entry.event_id, item.entry.kind.value) for item in batch}
        ids = list(dict.fromkeys(event_id for event_id, _ in keys))
        marks = ", ".join("?" for _ in ids)
        rows = self._fetch(
            conn,
            f"SELECT event_id, kind, seq, prev_hash, hash, body FROM audit_entries "  # noqa: S608 - placeholders only
            f"WHERE event_id IN ({marks})",
            ids,
        )
        return {
            (str(event_id), str(kind)): _entry(row)
            for event_id, kind, *row in rows
            if (event_id, kind) in keys
        }

    def _check(self, conn: Any, item: _Item) -> BaseException | None:
        guard = item.guard
        if guard is None:
            return None
        principal = item.columns[COLUMNS.index("principal")] or ""
        if guard.request_id is not None:
            event = self._event_by_request_id(conn, principal, guard.request_id)
            if event is not None and replay_verdict(event) != "rerun":
                return RequestIdClaimed(event)
        quota = guard.quota
        if quota is not None:
            used, retry = self._usage(conn, quota)
            asked = len(item.entry.body.get("forward") or ())
            if used + asked > quota.limit:
                return QuotaExceededError(quota.subject, quota.limit, used, asked, retry)
        return None

    def _usage(self, conn: Any, quota: QuotaCheck) -> tuple[int, float]:
        now = datetime.now(UTC)
        since = now - timedelta(seconds=quota.window_seconds)
        rows = self._fetch(
            conn,
            "SELECT i.versions_planned, i.recorded_at, (SELECT o.versions_deleted FROM "
            "audit_entries o WHERE o.event_id = i.event_id AND o.kind <> 'intent' "
            "ORDER BY o.seq DESC LIMIT 1) FROM audit_entries i WHERE i.kind = 'intent' "
            "AND i.principal = ? AND i.recorded_at >= ? ORDER BY i.recorded_at",
            (quota.principal, format_time(since)),
        )
        used = 0
        retry = 1.0
        for planned, at, done in rows:
            count = int(done if done is not None else planned or 0)
            if count and used == 0:  # the oldest counted deletion leaves the window first
                left = parse_time(str(at)) + timedelta(seconds=quota.window_seconds)
                retry = max(1.0, (left - now).total_seconds())
            used += count
        return used, retry


def _entry(row: Sequence[Any]) -> StoredEntry:
    seq, prev_hash, digest, body = row
    return StoredEntry(int(seq), str(prev_hash), str(digest), json.loads(body))


def open_audit_store(url: str, *, replica: str = "gateway", **options: Any) -> SqlAuditStore:
    """Open the store named by `url`: ``sqlite:relative/file.db``, ``sqlite:///abs/file.db``
    (or a plain path), or
    ``postgresql://user@host:port/database`` (libpq URL). Raises AuditUnavailableError."""
    dialect: Dialect
    path = sqlite_path(url)
    dialect = PostgresDialect(url) if path is None else SqliteDialect(path)
    try:
        return SqlAuditStore(dialect, replica=replica, **options)
    except BaseException:
        dialect.close()  # the PostgreSQL pool would keep trying to connect
        raise


def sqlite_path(url: str) -> Path | None:
    """The SQLite file `url` names (see open_audit_store); None for a PostgreSQL URL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:") if url.startswith("sqlite:") else url
    return Path(path[2:] if path.startswith("//") else path)
