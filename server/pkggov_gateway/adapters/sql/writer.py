"""The group-commit writer: the one thread that appends to the audit chain.

Callers queue entries and wait; the writer takes every queued entry (up to `max_batch`), and
in one transaction that holds the chain lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction advisory lock, so replicas sharing a database take turns) reads the chain's tail,
runs each entry's guard (request id claim, deletion request, quota), chains and inserts the
entries, applies each inserted entry's `PurgeEffects` to the pending purges
(`purges.apply_effects`) and its `ApprovalEffects` to the deletion requests
(`requests.apply_effects`) (an entry refused by its guard, or stored already, applies none),
and commits (SQLite: WAL with ``synchronous=FULL``; PostgreSQL: ``synchronous_commit = on``).
Each caller then gets its own result: concurrent calls share one fsync, and each waits for the
commit holding its entry.

An entry written with ``durable=True`` (an outcome) that fails to commit stays queued and is
retried until it commits; meanwhile the writer reports itself unhealthy. Any other failed
entry fails its caller with AuditUnavailableError, so nothing proceeds unrecorded. When idle,
the writer updates its replica's heartbeat row, proving that the database still takes writes.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from pkggov_gateway.adapters.sql import requests
from pkggov_gateway.adapters.sql.dialects import Dialect
from pkggov_gateway.adapters.sql.purges import apply_effects
from pkggov_gateway.adapters.sql.queries import (
    event_by_request_id,
    fetch,
    quota_usage,
    stored_entry,
)
from pkggov_gateway.domain.audit import (
    COLUMNS,
    GENESIS,
    AppendGuard,
    NewEntry,
    RequestIdClaimed,
    StoredEntry,
    canonical,
    chain_hash,
    column_values,
    format_time,
    replay_verdict,
)
from pkggov_gateway.domain.errors import AuditUnavailableError, QuotaExceededError

__all__ = ["GroupCommitWriter"]

log = structlog.get_logger("pkggov.audit.store")


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


class GroupCommitWriter:
    """The writer thread of one store (see the module docstring); it runs from construction
    until `stop`."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        replica: str,
        max_batch: int,
        retry_seconds: float,
        heartbeat_seconds: float,
        on_commit: Callable[[StoredEntry], None] | None,
    ) -> None:
        self._dialect = dialect
        self._replica = replica
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._backlog: list[_Item] = []
        self._healthy = threading.Event()
        self._conn: Any = None
        self.last_error: str | None = None
        """Why the last write failed, while the writer is unhealthy."""
        self._healthy.set()
        self._thread = threading.Thread(target=self._run, name="pkggov-audit-writer", daemon=True)
        self._thread.start()

    def write(self, entry: NewEntry, guard: AppendGuard | None, durable: bool) -> StoredEntry:
        """Queue `entry` and return it once committed (see SqlAuditStore.append)."""
        item = _Item(
            entry, guard, durable, text=canonical(entry.body), columns=column_values(entry.body)
        )
        self._queue.put(item)
        return item.future.result()

    def healthy(self) -> bool:
        """False while the last write failed or a durable entry awaits its commit."""
        return self._healthy.is_set()

    def stop(self, timeout: float) -> None:
        """Stop after committing what is queued (durable entries: tried a few times)."""
        self._queue.put(None)
        self._thread.join(timeout)

    # --- the loop --------------------------------------------------------------------------

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
                self._close_connection()
                return

    # --- the connection and health ---------------------------------------------------------

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._dialect.connect()
        return self._conn

    def _heartbeat(self) -> None:
        try:
            conn = self._connection()
            self._dialect.begin_locked(conn)
            try:
                conn.execute(
                    self._dialect.sql(
                        "INSERT INTO audit_heartbeat (replica, beat_at) VALUES (?, ?) "
                        "ON CONFLICT (replica) DO UPDATE SET beat_at = excluded.beat_at"
                    ),
                    (self._replica, format_time(datetime.now(UTC))),
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
        self._close_connection()
        message = f"{self._dialect.description}: {type(err).__name__}: {err}"
        if self._healthy.is_set() or message != self.last_error:
            log.error("audit.store_unavailable", error=message, backlog=len(self._backlog))
        self.last_error = message
        self._healthy.clear()

    def _succeeded(self) -> None:
        if not self._backlog:
            if not self._healthy.is_set():
                log.info("audit.store_available", store=self._dialect.description)
            self._healthy.set()
            self.last_error = None

    # --- one group commit ------------------------------------------------------------------

    def _commit(self, batch: list[_Item]) -> None:
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        try:
            conn = self._connection()
            self._dialect.begin_locked(conn)
            try:
                results = self._write(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
        except Exception as err:  # noqa: BLE001 - every failure fails (or defers) the batch
            self._failed(err)
            failure = AuditUnavailableError(f"{self._dialect.description}: {err}")
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
        tail = fetch(
            self._dialect, conn, "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1", ()
        )
        seq, prev = (int(tail[0][0]), str(tail[0][1])) if tail else (0, GENESIS)
        existing = self._existing(conn, batch)
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
        marks = ", ".join("?" for _ in range(len(COLUMNS) + 4))
        insert = self._dialect.sql(f"INSERT INTO audit_entries ({names}) VALUES ({marks})")  # noqa: S608
        for item in batch:
            key = (item.entry.event_id, item.entry.kind.value)
            found = existing.get(key)
            if found is not None:  # committed before (a retry after an unclear commit), and
                # its effects with it: they are not applied again (a closure would otherwise
                # close a purge scheduled since)
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
            effects = item.entry.effects
            if effects:  # most entries have none: no statement more
                apply_effects(self._dialect, conn, effects, item.entry.event_id, item.entry.time)
            approvals = item.entry.approvals
            if approvals:  # nor for these
                requests.apply_effects(
                    self._dialect, conn, approvals, item.entry.event_id, item.entry.time, seq=seq
                )
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
        rows = fetch(
            self._dialect,
            conn,
            f"SELECT event_id, kind, seq, prev_hash, hash, body FROM audit_entries "  # noqa: S608 - placeholders only
            f"WHERE event_id IN ({marks})",
            ids,
        )
        return {
            (str(event_id), str(kind)): stored_entry(row)
            for event_id, kind, *row in rows
            if (event_id, kind) in keys
        }

    def _check(self, conn: Any, item: _Item) -> BaseException | None:
        """Why the guard of `item` refuses it (inside the chain-locked transaction), or None."""
        guard = item.guard
        if guard is None:
            return None
        principal = item.columns[COLUMNS.index("principal")] or ""
        if guard.request_id is not None:
            event = event_by_request_id(self._dialect, conn, principal, guard.request_id)
            if event is not None and replay_verdict(event) != "rerun":
                return RequestIdClaimed(event)
        if guard.deletion_request is not None:
            refused = requests.refusal(self._dialect, conn, guard.deletion_request)
            if refused is not None:
                return refused
        quota = guard.quota
        if quota is not None:
            used, retry = quota_usage(self._dialect, conn, quota)
            asked = len(item.entry.body.get("forward") or ())
            if used + asked > quota.limit:
                return QuotaExceededError(quota.subject, quota.limit, used, asked, retry)
        return None
