"""An in-memory AuditStore that answers as the SQL store does, and fails when told to.

It keeps the same rows as `adapters.sql` (the indexed columns of `domain.audit`, the
canonical body, the hash chain) and runs the same rules on them, in the same order:

- an entry whose (event_id, kind) is stored already is that entry again when its body is the
  same, else AuditUnavailableError; neither is checked against its guard;
- a guard's request_id is claimed while the principal's latest event with that id is open or
  was answered with a final status (`replay_verdict` is not ``rerun``): RequestIdClaimed;
- a guard's quota counts the principal's intents in the window: the versions deleted by the
  event's latest later entry, else the versions the intent planned (QuotaExceededError);
- an event is listed at its outcome, or at its intent while it has no outcome.

It is also the PurgeStore (pending purges, `domain.recovery`), as `adapters.sql.purges` keeps
them: an appended entry's `PurgeEffects` are applied with it (closes, then schedules), and
not when its guard refuses it or it was stored already; times are compared as `format_time`
text, as the SQL store compares them.

tests/integration/test_audit_store_contract.py runs one suite on this store and on SQLite and
PostgreSQL. Unlike the SQL store it commits in the caller's thread: no writer, no heartbeat.

Failures are scripted: `fail_next` makes appends raise AuditUnavailableError. A failed
``durable`` append waits in `pending`, as the SQL store's backlog does, and is committed before
the next append that goes through, or by `heal`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pkggov_gateway.domain.audit import (
    COLUMNS,
    EXACT_FILTERS,
    GENESIS,
    AppendGuard,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    EntryKind,
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
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.package_key import package_key
from pkggov_gateway.domain.recovery import (
    PendingPurge,
    PurgeEffects,
    PurgePage,
    PurgeQuery,
    PurgeState,
    PurgeStats,
)

__all__ = ["InMemoryAuditStore"]

_AT = {name: index for index, name in enumerate(COLUMNS)}


@dataclass(frozen=True, slots=True)
class _Row:
    """One stored entry with its indexed columns and canonical body (the SQL row)."""

    entry: StoredEntry
    columns: tuple[Any, ...]
    text: str

    def column(self, name: str) -> Any:
        return self.columns[_AT[name]]


@dataclass(slots=True)
class _Failure:
    """What `fail_next` armed: appends of `kinds` (None: all) fail `times` times (None:
    until healed), once `after` of them went through."""

    kinds: frozenset[str] | None
    times: int | None
    after: int

    def covers(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def blocks(self, kind: str) -> bool:
        """Whether an entry of `kind` cannot commit now (without counting an attempt)."""
        return self.after == 0 and self.covers(kind)


@dataclass(slots=True)
class _Purge:
    """One row of the pending-purge table (see `adapters.sql.purges`)."""

    purge: PendingPurge
    """As scheduled, with its attempts, last error and next attempt as they change."""
    key: str
    """The package's `package_key`."""
    state: PurgeState = PurgeState.PENDING
    lease_owner: str | None = None
    lease_until: str | None = None
    closed_at: str | None = None
    closed_reason: str | None = None
    closed_event_id: str | None = None

    @property
    def next_due(self) -> str:
        """When it is next due (its retry time, else its due time), as text."""
        return format_time(self.purge.next_attempt_at or self.purge.due_at)


@dataclass(frozen=True, slots=True)
class _Pending:
    entry: NewEntry
    guard: AppendGuard | None
    text: str
    columns: tuple[Any, ...]


class InMemoryAuditStore:
    """The AuditStore port in memory (see the module docstring)."""

    def __init__(
        self,
        *,
        replica: str = "gateway",
        page_token_key: bytes | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock` is the "now" of quota windows (the SQL store uses the wall clock)."""
        self.replica = replica
        self.page_token_key = page_token_key or secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.RLock()
        self._rows: list[_Row] = []
        self._events: dict[str, list[_Row]] = {}
        self._failure: _Failure | None = None
        self._pending: list[_Pending] = []
        self._purges: dict[str, _Purge] = {}
        """Every purge ever scheduled, by purge id (closed ones stay, as in SQL)."""

    # --- port: writing ---------------------------------------------------------------------

    def append(
        self, entry: NewEntry, *, guard: AppendGuard | None = None, durable: bool = False
    ) -> StoredEntry:
        """Append `entry` (see `SqlAuditStore.append`); a `durable` entry that fails waits in
        `pending` and is committed later."""
        text, columns = canonical(entry.body), column_values(entry.body)
        _check_effects(entry.effects)
        with self._lock:
            if self._fails(entry.kind.value):
                if durable:
                    self._pending.append(_Pending(entry, guard, text, columns))
                raise AuditUnavailableError("memory: failing as told (fail_next)")
            self._commit_pending()
            result = self._write(entry, guard, text, columns)
        if isinstance(result, BaseException):
            raise result
        return result

    def healthy(self) -> bool:
        """False while a failure is in force or a durable entry waits for its commit."""
        with self._lock:
            failing = self._failure is not None and self._failure.after == 0
            return not failing and not self._pending

    # --- scripted failures -----------------------------------------------------------------

    def fail_next(
        self,
        times: int | None = 1,
        *,
        kinds: Iterable[EntryKind | str] | None = None,
        after: int = 0,
    ) -> None:
        """Make the next `times` appends (None: every one until `heal`) of entries of `kinds`
        (None: any) raise AuditUnavailableError, once `after` such appends went through.
        Replaces the failure armed before."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: until healed)")
        names = None if kinds is None else frozenset(EntryKind(k).value for k in kinds)
        with self._lock:
            self._failure = _Failure(names, times, after)

    def heal(self) -> None:
        """Stop failing and commit the durable entries that wait (as the SQL writer's retry
        does once the database is back)."""
        with self._lock:
            self._failure = None
            self._commit_pending()

    @property
    def pending(self) -> tuple[NewEntry, ...]:
        """Durable entries that failed and wait for their commit, oldest first."""
        with self._lock:
            return tuple(p.entry for p in self._pending)

    # --- port: reading ---------------------------------------------------------------------

    def entries(self) -> tuple[StoredEntry, ...]:
        """Every stored entry in chain order (bodies as read back: parsed canonical JSON)."""
        with self._lock:
            return tuple(row.entry for row in self._rows)

    def event(self, event_id: str) -> AuditEventRecord | None:
        """The event named `event_id`, or None."""
        with self._lock:
            return self._record(event_id)

    def event_by_request_id(self, principal: str, request_id: str) -> AuditEventRecord | None:
        """The latest event in which `principal` claimed AIP-155 `request_id`, or None."""
        with self._lock:
            return self._by_request_id(principal, request_id)

    def quota_usage(self, quota: QuotaCheck) -> tuple[int, float]:
        """Versions `quota.principal` deleted (or is deleting) in the window, and the seconds
        until the oldest of them leaves it."""
        with self._lock:
            return self._usage(quota)

    def list_events(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, one page (positions: the listing rows' seq)."""
        with self._lock:
            heads: list[_Row] = []
            for row in reversed(self._rows):
                if self._listed(row) and _matches(row, query):
                    heads.append(row)
                    if len(heads) > query.limit:
                        break
            page, more = heads[: query.limit], len(heads) > query.limit
            events = tuple(self._record_of(row.entry.event_id) for row in page)
        positions = tuple(row.entry.seq for row in page)
        return AuditPage(events, positions[-1] if more and page else None, positions)

    def open_intents(self) -> list[AuditEventRecord]:
        """Events with an intent but neither outcome nor reconciliation (oldest first)."""
        with self._lock:
            return [
                AuditEventRecord(row.entry.event_id, (row.entry,))
                for row in self._rows
                if row.entry.kind is EntryKind.INTENT
                and all(r.entry.kind is EntryKind.INTENT for r in self._events[row.entry.event_id])
            ]

    def iter_rows(self, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """Every row in chain order, as `SqlAuditStore.iter_rows` yields them (for verify)."""
        del batch  # one snapshot: the rows are in memory
        with self._lock:
            rows = list(self._rows)
        for row in rows:
            yield (row.entry.seq, *row.columns, row.text, row.entry.prev_hash, row.entry.hash)

    # --- port: PurgeStore -------------------------------------------------------------------

    def pending_for(self, package: PackageRef, versions: Sequence[str]) -> dict[str, PendingPurge]:
        """The pending purges of `versions` of `package` (by `package_key`), by version."""
        key, wanted = package_key(package), set(versions)
        with self._lock:
            return {
                row.purge.version: row.purge
                for row in self._purges.values()
                if row.state is PurgeState.PENDING
                and row.key == key
                and row.purge.version in wanted
            }

    def pending_purges(self, query: PurgeQuery) -> PurgePage:
        """One page of pending purges matching `query`, soonest due first (then purge id)."""
        with self._lock:
            rows = sorted(
                (row.purge for row in self._purges.values() if _listed(row, query)),
                key=lambda purge: (format_time(purge.due_at), purge.purge_id),
            )
        limit = max(query.limit, 0)
        purges = rows[:limit]
        last = purges[-1] if len(rows) > limit and purges else None
        return PurgePage(
            purges, None if last is None else (format_time(last.due_at), last.purge_id)
        )

    def claim_due_purges(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[PendingPurge]:
        """Lease up to `limit` pending purges due at `now` and not leased past it to this
        replica until `lease_until`, soonest next due first."""
        at, until = format_time(now), format_time(lease_until)
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._purges.values()
                    if row.state is PurgeState.PENDING
                    and row.next_due <= at
                    and (row.lease_until is None or row.lease_until <= at)
                ),
                key=lambda row: (row.next_due, row.purge.purge_id),
            )[: max(limit, 0)]
            for row in due:
                row.lease_owner, row.lease_until = self.replica, until
            return [row.purge for row in due]

    def release_purge(self, purge_id: str, *, retry_at: datetime, error: str) -> None:
        """Count a failed attempt, record `error`, end the lease and make the purge due again
        at `retry_at`; nothing when it is no longer pending."""
        with self._lock:
            row = self._purges.get(purge_id)
            if row is None or row.state is not PurgeState.PENDING:
                return
            if row.lease_owner != self.replica:  # the lease expired and another took it
                return
            row.purge = replace(
                row.purge,
                attempts=row.purge.attempts + 1,
                last_error=error,
                next_attempt_at=retry_at,
            )
            row.lease_owner = row.lease_until = None

    def purge_stats(self, now: datetime) -> PurgeStats:
        """Pending purges, those whose due time (`due_at`, whatever their retry time) is not
        after `now`, and the oldest such due time."""
        at = format_time(now)
        with self._lock:
            pending = [row for row in self._purges.values() if row.state is PurgeState.PENDING]
        due = sorted(format_time(row.purge.due_at) for row in pending)
        due = [text for text in due if text <= at]
        return PurgeStats(len(pending), len(due), parse_time(due[0]) if due else None)

    def purge_state(
        self, purge_id: str
    ) -> tuple[PurgeState, str | None, str | None, str | None] | None:
        """A purge's state, and when, why and by which event it was closed (None: no such
        purge), as `SqlAuditStore.purge_state`. Not part of the port (it lists pending
        purges only)."""
        with self._lock:
            row = self._purges.get(purge_id)
            if row is None:
                return None
            return (row.state, row.closed_at, row.closed_reason, row.closed_event_id)

    # --- internals (called with the lock held) ---------------------------------------------

    def _apply(self, effects: PurgeEffects, event_id: str, time: str) -> None:
        """An appended entry's effects, as `adapters.sql.purges.apply_effects` applies them."""
        for closure in effects.close:
            key = package_key(closure.package)
            for row in self._purges.values():
                if (
                    row.state is PurgeState.PENDING
                    and row.key == key
                    and row.purge.version == closure.version
                ):
                    row.state = PurgeState(closure.state)
                    row.closed_at, row.closed_reason = time, closure.reason
                    row.closed_event_id = event_id
        for purge in effects.schedule:
            key = package_key(purge.package)
            taken = purge.purge_id in self._purges or any(
                row.state is PurgeState.PENDING
                and row.key == key
                and row.purge.version == purge.version
                for row in self._purges.values()
            )
            if not taken:  # ON CONFLICT DO NOTHING: the earlier one stays
                self._purges[purge.purge_id] = _Purge(purge, key)

    def _fails(self, kind: str) -> bool:
        """Whether this append fails, counting it against the armed failure."""
        failure = self._failure
        if failure is None or not failure.covers(kind):
            return False
        if failure.after > 0:
            failure.after -= 1
            return False
        if failure.times is not None:
            failure.times -= 1
            if failure.times == 0:
                self._failure = None
        return True

    def _commit_pending(self) -> None:
        """Commit the waiting durable entries the failure lets through, oldest first."""
        waiting, self._pending = self._pending, []
        for item in waiting:
            if self._failure is not None and self._failure.blocks(item.entry.kind.value):
                self._pending.append(item)
            else:  # its caller was told already: a refusal now is dropped, as in SQL
                self._write(item.entry, item.guard, item.text, item.columns)

    def _write(
        self, entry: NewEntry, guard: AppendGuard | None, text: str, columns: tuple[Any, ...]
    ) -> StoredEntry | BaseException:
        key = (entry.event_id, entry.kind.value)
        found = next((r for r in self._events.get(key[0], ()) if r.column("kind") == key[1]), None)
        if found is not None:  # committed before (a retry after an unclear commit)
            if found.entry.body == json.loads(text):
                return found.entry
            return AuditUnavailableError(f"entry {key} already recorded differently")
        refusal = self._check(entry, guard, columns)
        if refusal is not None:
            return refusal
        seq, prev = (
            (self._rows[-1].entry.seq, self._rows[-1].entry.hash) if self._rows else (0, GENESIS)
        )
        digest = chain_hash(prev, text)
        row = _Row(StoredEntry(seq + 1, prev, digest, json.loads(text)), columns, text)
        self._rows.append(row)
        self._events.setdefault(key[0], []).append(row)
        if entry.effects:
            self._apply(entry.effects, entry.event_id, entry.time)
        return StoredEntry(seq + 1, prev, digest, entry.body)

    def _check(
        self, entry: NewEntry, guard: AppendGuard | None, columns: tuple[Any, ...]
    ) -> BaseException | None:
        if guard is None:
            return None
        if guard.request_id is not None:
            principal = columns[_AT["principal"]] or ""
            event = self._by_request_id(principal, guard.request_id)
            if event is not None and replay_verdict(event) != "rerun":
                return RequestIdClaimed(event)
        quota = guard.quota
        if quota is not None:
            used, retry = self._usage(quota)
            asked = len(entry.body.get("forward") or ())
            if used + asked > quota.limit:
                return QuotaExceededError(quota.subject, quota.limit, used, asked, retry)
        return None

    def _usage(self, quota: QuotaCheck) -> tuple[int, float]:
        now = self._clock()
        since = format_time(now - timedelta(seconds=quota.window_seconds))
        intents = sorted(
            (
                row
                for row in self._rows
                if row.entry.kind is EntryKind.INTENT
                and row.column("principal") == quota.principal
                and row.column("recorded_at") >= since
            ),
            key=lambda row: str(row.column("recorded_at")),
        )
        used, retry = 0, 1.0
        for intent in intents:
            later = [r for r in self._events[intent.entry.event_id] if r.column("kind") != "intent"]
            done = later[-1].column("versions_deleted") if later else None
            count = int(done if done is not None else intent.column("versions_planned") or 0)
            if count and used == 0:  # the oldest counted deletion leaves the window first
                left = parse_time(intent.column("recorded_at")) + timedelta(
                    seconds=quota.window_seconds
                )
                retry = max(1.0, (left - now).total_seconds())
            used += count
        return used, retry

    def _by_request_id(self, principal: str, request_id: str) -> AuditEventRecord | None:
        for row in reversed(self._rows):
            if row.column("request_id") == request_id and row.column("principal") == principal:
                return self._record_of(row.entry.event_id)
        return None

    def _listed(self, row: _Row) -> bool:
        """The row lists its event: an outcome, or an intent of an event without outcome."""
        kind = row.entry.kind
        if kind is EntryKind.OUTCOME:
            return True
        return kind is EntryKind.INTENT and all(
            r.entry.kind is not EntryKind.OUTCOME for r in self._events[row.entry.event_id]
        )

    def _record(self, event_id: str) -> AuditEventRecord | None:
        return self._record_of(event_id) if event_id in self._events else None

    def _record_of(self, event_id: str) -> AuditEventRecord:
        return AuditEventRecord(event_id, tuple(r.entry for r in self._events[event_id]))


def _matches(row: _Row, query: AuditQuery) -> bool:
    """Whether a listing row passes `query`'s filters, as the SQL WHERE clause decides."""
    for name in EXACT_FILTERS:
        wanted = getattr(query, name)
        if wanted is not None and row.column(name) != wanted:
            return False
    if query.version is not None:
        versions = row.column("versions")
        if versions is None or f"\n{query.version}\n" not in versions:
            return False
    at = str(row.column("recorded_at"))
    if query.since is not None and at < format_time(query.since):
        return False
    if query.until is not None and at >= format_time(query.until):
        return False
    return query.before_seq is None or row.entry.seq < query.before_seq


def _check_effects(effects: PurgeEffects) -> None:
    """ValueError for a closure that would leave its purge pending (as the SQL store)."""
    for closure in effects.close:
        if PurgeState(closure.state) is PurgeState.PENDING:
            raise ValueError(f"a closure of {closure.version!r} cannot leave it pending")


def _listed(row: _Purge, query: PurgeQuery) -> bool:
    """Whether a purge is on the listing `query` asks for, as the SQL WHERE clause decides."""
    purge = row.purge
    if row.state is not PurgeState.PENDING:
        return False
    for wanted, value in (
        (query.domain, purge.package.domain),
        (query.repository, purge.package.repository),
        (query.package, purge.package.package),
        (query.requester, purge.requester),
    ):
        if wanted is not None and value != wanted:
            return False
    due = format_time(purge.due_at)
    if query.due_before is not None and due >= format_time(query.due_before):
        return False
    return query.after is None or (due, purge.purge_id) > query.after
