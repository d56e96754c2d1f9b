"""The group-commit writer: appends to the audit chain, one transaction at a time.

Callers queue entries. The first caller to find no commit under way becomes the *leader*: it
takes every queued entry (up to `max_batch`) and commits them itself, on its own thread, in one
transaction that holds the chain lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction
advisory lock, so replicas sharing a database take turns). The others wait for that commit or,
if theirs is not in it, for the leader to hand the lead to the first of them (leader/follower
group commit, as databases do it): a lone call commits with no hand-off between threads at all,
and concurrent calls still share one fsync. In the transaction the leader reads the chain's
tail, runs each entry's guard (request id claim, deletion request, quota), chains and inserts
the entries, applies each inserted entry's `PurgeEffects` to the pending purges
(`purges.apply_effects`) and its `ApprovalEffects` to the deletion requests
(`requests.apply_effects`) (an entry refused by its guard, or stored already, applies none),
and commits (SQLite: WAL with ``synchronous=FULL``; PostgreSQL: ``synchronous_commit = on``).
Each caller then gets its own result.

An entry written with ``durable=True`` (an outcome) that fails to commit stays queued and is
retried until it commits, by the next leader or by the writer's background thread; meanwhile
the writer reports itself unhealthy. Any other failed entry fails its caller with
AuditUnavailableError, so nothing proceeds unrecorded. When idle, the background thread
updates its replica's heartbeat row, proving that the database still takes writes.

Each group commit reports how long it waited for the chain lock and how long it held it
(`Metrics.audit_group_commit`): what says whether the lock, shared by a fleet, is its limit.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
from collections import deque
from collections.abc import Callable
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
    CLOSING_KINDS,
    COLUMNS,
    GENESIS,
    AppendGuard,
    EventClosed,
    NewEntry,
    RequestIdClaimed,
    StoredEntry,
    canonical,
    chain_hash,
    format_time,
    replay_verdict,
)
from pkggov_gateway.domain.errors import AuditUnavailableError, QuotaExceededError
from pkggov_gateway.ports import Metrics, NullMetrics

__all__ = ["GroupCommitWriter"]

_NAMES = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
_PRINCIPAL = COLUMNS.index("principal")

log = structlog.get_logger("pkggov.audit.store")


@dataclass(slots=True)
class _Item:
    entry: NewEntry
    guard: AppendGuard | None
    durable: bool
    columns: tuple[Any, ...]
    """The body's indexed column values."""
    text: str = ""
    """The body's canonical form."""
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when the item is settled, or when its caller is to lead the next commit."""
    leads: bool = False
    result: StoredEntry | BaseException | None = None
    told: bool = False
    """Its caller has its result (a durable entry retried after a failure stays untold)."""

    def settle(self, result: StoredEntry | BaseException) -> None:
        if not self.told:
            self.result = result
            self.told = True
            self.wake.set()


class GroupCommitWriter:
    """The writer of one store (see the module docstring): callers commit, a background thread
    retries and heartbeats from construction until `stop`."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        replica: str,
        max_batch: int,
        retry_seconds: float,
        heartbeat_seconds: float,
        on_commit: Callable[[StoredEntry], None] | None,
        metrics: Metrics | None = None,
    ) -> None:
        self._dialect = dialect
        self._replica = replica
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._on_commit = on_commit
        self._metrics = metrics or NullMetrics()
        self._mutex = threading.Lock()
        """Guards `_pending`, `_backlog` and `_leading`."""
        self._pending: deque[_Item] = deque()
        self._backlog: list[_Item] = []
        """Durable entries whose commit failed, retried first."""
        self._leading = False
        self._commit_lock = threading.Lock()
        """Held by whoever uses the connection: a leader, or the background thread."""
        self._stopping = threading.Event()
        self._nudge = threading.Event()
        """Wakes the background thread: a backlog to retry, or stop."""
        self._last_write = time.monotonic()
        self._healthy = threading.Event()
        self._conn: Any = None
        self.last_error: str | None = None
        """Why the last write failed, while the writer is unhealthy."""
        self._healthy.set()
        self._thread = threading.Thread(
            target=self._background, name="pkggov-audit-writer", daemon=True
        )
        self._thread.start()

    def write(
        self, entry: NewEntry, guard: AppendGuard | None, durable: bool, columns: tuple[Any, ...]
    ) -> StoredEntry:
        """Commit `entry` (its `columns` computed by the caller) and return it once committed
        (see SqlAuditStore.append)."""
        item = _Item(entry, guard, durable, columns, text=canonical(entry.body))
        with self._mutex:
            self._pending.append(item)
            if not self._leading:
                self._leading = item.leads = True
        while not item.told:
            if item.leads:
                self._lead(item)
            else:
                item.wake.wait()
                item.wake.clear()
        result = item.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None  # noqa: S101 - told means settled
        return result

    def healthy(self) -> bool:
        """False while the last write failed or a durable entry awaits its commit."""
        return self._healthy.is_set()

    def stop(self, timeout: float) -> None:
        """Stop after committing what is queued (durable entries: tried a few times)."""
        self._stopping.set()
        self._nudge.set()
        self._thread.join(timeout)

    # --- leading a commit ------------------------------------------------------------------

    def _take(self) -> list[_Item]:
        """The next batch: the backlog, then queued entries (called holding `_mutex`)."""
        batch = self._backlog
        self._backlog = []
        while self._pending and len(batch) < self._max_batch:
            batch.append(self._pending.popleft())
        return batch

    def _lead(self, own: _Item) -> None:
        """Commit one batch (with `own` in it), then hand the lead to the first entry still
        queued, or give it up."""
        with self._mutex:
            batch = self._take()
        if batch:
            with self._commit_lock:
                # An empty context: the entries are other calls', not this one's log context.
                contextvars.Context().run(self._commit, batch)
        with self._mutex:
            if not own.told and own in self._pending:
                return  # not taken (the batch was full): it leads again
            # Committed, or taken by the background thread's last commit at stop (whose
            # settling its caller then waits for): either way the lead passes on.
            own.leads = False
            self._pass_lead()

    def _pass_lead(self) -> None:
        """Hand the lead to the first queued entry, or give it up (holding `_mutex`)."""
        if self._pending:
            nxt = self._pending[0]
            nxt.leads = True
            nxt.wake.set()
        else:
            self._leading = False

    # --- the background thread: retries and heartbeats --------------------------------------

    def _background(self) -> None:
        """Retry the backlog while there is one, heartbeat when idle; at stop, commit what is
        left (durable entries: a few tries)."""
        while not self._stopping.is_set():
            retrying = bool(self._backlog) or not self._healthy.is_set()
            if not retrying:
                self._nudge.wait(self._heartbeat_seconds / 4)
            self._nudge.clear()
            if self._stopping.is_set():
                break
            if retrying:
                self._stopping.wait(self._retry_seconds)
            self._idle_work()
        tries_left = 3
        while True:
            with self._mutex:
                batch = self._take()
            if batch:
                with self._commit_lock:
                    self._commit(batch)
            with self._mutex:
                left = list(self._backlog)
            if not left or tries_left == 0:
                break
            tries_left -= 1
            time.sleep(self._retry_seconds)
        for item in left:  # its intent stays open: reconciled at start-up
            log.error("audit.outcome_not_recorded_at_shutdown", event_id=item.entry.event_id)
        with self._commit_lock:
            self._close_connection()

    def _idle_work(self) -> None:
        """Retry the backlog when no leader is committing; heartbeat after a quiet period."""
        with self._mutex:
            if self._leading:
                return  # a leader commits the backlog with its batch
            batch = self._take()
            if batch:
                self._leading = True
        if batch:
            with self._commit_lock:
                self._commit(batch)
            with self._mutex:
                self._pass_lead()
            return
        if not self._heartbeat_due():
            return
        with self._commit_lock:
            if self._heartbeat_due():  # still, now that no commit is under way
                self._heartbeat()  # idle: prove that the store still takes writes

    def _heartbeat_due(self) -> bool:
        """Whether the store is unhealthy, or no commit came for a heartbeat's interval."""
        return (
            not self._healthy.is_set()
            or time.monotonic() - self._last_write >= self._heartbeat_seconds
        )

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
            self._last_write = time.monotonic()
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
        """Commit `batch` in one chain-locked transaction and settle its entries (called
        holding `_commit_lock`).

        On PostgreSQL the statements go in pipeline mode, so that the lock is held for two
        round trips (taking it with the chain's tail; the inserts with the COMMIT), not one
        per statement: each wait for an answer gives up the GIL, and with many threads serving
        calls getting it back can take a switch interval or more."""
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        try:
            conn = self._connection()
            asked = time.perf_counter()
            try:
                with self._dialect.pipeline(conn):
                    self._dialect.begin_locked(conn)
                    results, locked = self._write(conn, batch)
                    conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            self._metrics.audit_group_commit(
                len(batch), locked - asked, time.perf_counter() - locked
            )
        except Exception as err:  # noqa: BLE001 - every failure fails (or defers) the batch
            self._failed(err)
            failure = AuditUnavailableError(f"{self._dialect.description}: {err}")
            with self._mutex:
                self._backlog = [item for item in batch if item.durable] + self._backlog
            self._nudge.set()
            for item in batch:  # a durable entry's caller goes on; the entry is retried
                item.settle(failure)
            return
        self._last_write = time.monotonic()
        for item, result in results:
            if isinstance(result, StoredEntry) and self._on_commit is not None:
                try:
                    self._on_commit(result)
                except Exception:  # the copy must never fail the record
                    log.exception("audit.copy_failed", event_id=result.event_id)
            item.settle(result)  # a durable entry retried after its caller was told: no-op
        self._succeeded()

    def _write(
        self, conn: Any, batch: list[_Item]
    ) -> tuple[list[tuple[_Item, StoredEntry | BaseException]], float]:
        """Chain and insert `batch` in the open transaction: the results, and when the lock
        was held (the chain's tail read)."""
        keys = {(item.entry.event_id, item.entry.kind.value) for item in batch}
        ids = list(dict.fromkeys(event_id for event_id, _ in keys))
        tail_query = conn.execute(
            "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1", ()
        )
        kinds_query = conn.execute(
            self._dialect.sql(
                "SELECT event_id, kind FROM audit_entries "  # noqa: S608 - placeholders only
                f"WHERE event_id IN ({', '.join('?' for _ in ids)})"
            ),
            ids,
        )
        claims = {claim for item in batch if (claim := _claim(item)) is not None}
        claims_query = self._held_claims_query(conn, claims)
        tail = tail_query.fetchall()  # the lock, the tail, the kinds, the claims: one round trip
        locked = time.perf_counter()
        seq, prev = (int(tail[0][0]), str(tail[0][1])) if tail else (0, GENESIS)
        stored_keys = [(str(event_id), str(kind)) for event_id, kind in kinds_query.fetchall()]
        # Request id claims no stored entry holds: a guard with only such a claim to check
        # needs no statement (nearly every call's; a retry's is checked in full).
        fresh = claims - _held(claims_query)
        existing = self._existing(conn, [key for key in stored_keys if key in keys])
        results: list[tuple[_Item, StoredEntry | BaseException]] = []
        rows: list[tuple[Any, ...]] = []
        for item in batch:
            key = (item.entry.event_id, item.entry.kind.value)
            found = existing.get(key)
            if found is not None:  # committed before (a retry after an unclear commit), and
                # its effects with it: they are not applied again (a closure would otherwise
                # close a purge scheduled since)
                results.append((item, _same_or_conflict(found, item)))
                continue
            guard, claim = item.guard, _claim(item)
            unheld = claim in fresh and guard is not None and not _checks_besides_claim(guard)
            if claim is not None:
                fresh.discard(claim)  # a later entry of the batch claiming it again is checked
            if not unheld and _checks(guard):
                self._insert(conn, rows)  # the guard must see the entries before it
                refusal = self._check(conn, item)
                if refusal is not None:
                    results.append((item, refusal))
                    continue
            seq += 1
            digest = chain_hash(prev, item.text)
            rows.append((seq, *item.columns, item.text, prev, digest))
            effects = item.entry.effects
            approvals = item.entry.approvals
            if effects or approvals:  # most entries have none: no statement more
                self._insert(conn, rows)
            if effects:
                apply_effects(self._dialect, conn, effects, item.entry.event_id, item.entry.time)
            if approvals:
                requests.apply_effects(
                    self._dialect, conn, approvals, item.entry.event_id, item.entry.time, seq=seq
                )
            stored = StoredEntry(seq, prev, digest, item.entry.body)
            existing[key] = stored
            results.append((item, stored))
            prev = digest
        self._insert(conn, rows)
        return results, locked

    def _insert(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert `rows` (then empty it) in one statement: each statement of a group commit
        gives up the GIL and, with many threads serving calls, may wait up to a switch
        interval to get it back, all the while holding the chain lock."""
        if not rows:
            return
        marks = "(" + ", ".join("?" for _ in range(len(COLUMNS) + 4)) + ")"
        values = ", ".join(marks for _ in rows)
        conn.execute(
            self._dialect.sql(f"INSERT INTO audit_entries ({_NAMES}) VALUES {values}"),  # noqa: S608 - placeholders only
            [value for row in rows for value in row],
        )
        rows.clear()

    def _held_claims_query(self, conn: Any, claims: set[tuple[str, str]]) -> Any:
        """The query (not yet read) of which of `claims` (principal, request_id) stored entries
        hold, or None when there are none to ask about."""
        if not claims:
            return None
        request_ids = sorted({request_id for _, request_id in claims})
        return conn.execute(
            self._dialect.sql(
                "SELECT DISTINCT principal, request_id FROM audit_entries "  # noqa: S608 - placeholders only
                f"WHERE request_id IN ({', '.join('?' for _ in request_ids)})"
            ),
            request_ids,
        )

    def _existing(
        self, conn: Any, found: list[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredEntry]:
        """The entries of the batch found stored already (a retry after an unclear commit),
        by (event_id, kind). Only their bodies are read: an outcome's event always holds its
        intent, whose body (a 1,000-version plan: 100 kB) is not read for nothing."""
        if not found:
            return {}
        rows = fetch(
            self._dialect,
            conn,
            "SELECT event_id, kind, seq, prev_hash, hash, body FROM audit_entries "  # noqa: S608 - placeholders only
            f"WHERE event_id IN ({', '.join('?' for _ in found)})",
            [event_id for event_id, _ in found],
        )
        wanted = set(found)
        return {
            key: stored_entry(row)
            for event_id, kind, *row in rows
            if (key := (str(event_id), str(kind))) in wanted
        }

    def _check(self, conn: Any, item: _Item) -> BaseException | None:
        """Why the guard of `item` refuses it (inside the chain-locked transaction), or None."""
        guard = item.guard
        if guard is None:
            return None
        if guard.closes_open_event:
            closing = fetch(
                self._dialect,
                conn,
                "SELECT 1 FROM audit_entries WHERE event_id = ? AND kind IN (?, ?)",
                [item.entry.event_id, *CLOSING_KINDS],
            )
            if closing:
                return EventClosed(item.entry.event_id)
        claim = _claim(item)
        if claim is not None:
            event = event_by_request_id(self._dialect, conn, *claim)
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


def _checks(guard: AppendGuard | None) -> bool:
    """Whether `guard` has anything to check (most entries' guards have nothing)."""
    return guard is not None and (guard.request_id is not None or _checks_besides_claim(guard))


def _checks_besides_claim(guard: AppendGuard) -> bool:
    """Whether `guard` checks anything but a request id claim."""
    return guard.deletion_request is not None or guard.quota is not None or guard.closes_open_event


def _claim(item: _Item) -> tuple[str, str] | None:
    """The (principal, request_id) the guard of `item` claims."""
    if item.guard is None or item.guard.request_id is None:
        return None
    return (item.columns[_PRINCIPAL] or "", item.guard.request_id)


def _held(query: Any) -> set[tuple[str, str]]:
    """The (principal, request_id) pairs `_held_claims_query` found (a NULL principal claims
    nothing: `_check`'s query compares it with the claim's)."""
    if query is None:
        return set()
    return {(str(p), str(r)) for p, r in query.fetchall() if p is not None}


def _same_or_conflict(found: StoredEntry, item: _Item) -> StoredEntry | BaseException:
    """What appending `item` gives when an entry of its event and kind is stored: that entry
    (a retry after an unclear commit), EventClosed (a closing entry another replica wrote
    first), or a conflict."""
    if found.body == json.loads(item.text):
        return found
    if item.guard is not None and item.guard.closes_open_event:
        return EventClosed(item.entry.event_id)
    return AuditUnavailableError(
        f"entry {(item.entry.event_id, item.entry.kind.value)} already recorded differently"
    )
