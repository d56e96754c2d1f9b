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

And it is the RequestStore and WebhookOutbox (deletion requests, `domain.approvals`), as
`adapters.sql.requests` keeps them: an entry's `ApprovalEffects` are applied with it
(creations, votes, transitions, notifications; an existing request id, a person's second vote
or a queued notification's id leaves the earlier one), under the same rules; its
`RequestGuard` is checked with the others (request id, deletion request, quota). A request's
plan is kept as its canonical JSON and parsed back when read (`stored_plan`), as in SQL;
`tamper_plan` changes it behind the gateway's back, as an attacker with the database would.

And it is the CleanupStore (cleanup plans and jobs, `domain.cleanup`), as
`adapters.sql.cleanup` keeps them: a plan's header and packages as their canonical JSON,
parsed back when read (CleanupPlanTamperedError for one that is not a plan;
`tamper_cleanup_plan` changes a package behind the gateway's back), a job's lease owned by
this store's `replica`, times compared as `format_time` text and read back in UTC.
`another_replica` gives a store on the same memory under another replica name, as a second
gateway on the same database would be (tests/integration/test_cleanup_store.py runs its suite
on this store, SQLite and PostgreSQL).

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pkggov_gateway.domain.approvals import (
    ApprovalEffects,
    DeletionPlan,
    DeletionRequestPage,
    DeletionRequestQuery,
    DeletionRequestRecord,
    RequestGuard,
    RequestState,
    Vote,
    WebhookEvent,
)
from pkggov_gateway.domain.audit import (
    CLOSING_KINDS,
    COLUMNS,
    EXACT_FILTERS,
    GENESIS,
    AppendGuard,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    EntryKind,
    EventClosed,
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
from pkggov_gateway.domain.cleanup import (
    FINISHED,
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    JobState,
    PackagePlan,
    PackageResult,
)
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    CleanupPlanTamperedError,
    DeletionRequestNotFoundError,
    InvalidRequestError,
    PkggovError,
    PlanTamperedError,
    QuotaExceededError,
    plan_limit,
)
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.package_key import package_identity
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
    """The package's `package_identity`."""
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


_FINAL = frozenset(
    {RequestState.EXECUTED, RequestState.REJECTED, RequestState.CANCELLED, RequestState.EXPIRED}
)
"""States a request never leaves (a transition into one records when, why and by which
event)."""


@dataclass(slots=True)
class _Request:
    """One row of the deletion-request table, with its votes (see `adapters.sql.requests`)."""

    record: DeletionRequestRecord
    """As created, times as the store keeps them (state, votes and closure kept below)."""
    plan: str
    """The plan body's canonical JSON, as stored (`tamper_plan` changes it)."""
    state: str
    closed_reason: str | None = None
    closed_event_id: str | None = None
    closed_at: str | None = None

    @property
    def created_at(self) -> str:
        return format_time(self.record.created_at)

    @property
    def expires_at(self) -> str:
        return format_time(self.record.expires_at)


@dataclass(slots=True)
class _Webhook:
    """One row of the webhook outbox."""

    event: WebhookEvent
    """As queued, its payload as stored (canonical JSON, parsed)."""
    next_attempt_at: str
    seq: int = 0
    """The chain position of the entry that queued it: delivery order."""
    attempts: int = 0
    last_error: str = ""
    delivered_at: str | None = None
    lease_owner: str | None = None
    lease_until: str | None = None


@dataclass(slots=True)
class _CleanupPlan:
    """One row of the cleanup-plan table, with its package rows (see `adapters.sql.cleanup`)."""

    header: str
    """The header's canonical JSON, as stored."""
    plan_hash: str
    packages: list[str]
    """Each package's canonical JSON at its seq (`tamper_cleanup_plan` changes one)."""


@dataclass(slots=True)
class _Job:
    """One row of the cleanup-job table."""

    job: CleanupJob
    """As the SQL store reads it back (times in UTC, requester and counts as JSON gives
    them), with its progress as it changes."""
    lease_owner: str | None = None
    lease_until: str | None = None

    @property
    def order(self) -> tuple[str, str]:
        """The claim order: created_at (as text), then job id."""
        return format_time(self.job.created_at), self.job.job_id


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
        self._requests: dict[str, _Request] = {}
        """Every deletion request ever created, by request id (closed ones stay)."""
        self._votes: dict[str, list[Vote]] = {}
        """The votes on each request id, in the order cast (without a foreign key, as SQL)."""
        self._webhooks: dict[str, _Webhook] = {}
        """Every notification ever queued, by event id (delivered ones stay)."""
        self._plans: dict[str, _CleanupPlan] = {}
        """Every cleanup plan saved, by plan id."""
        self._jobs: dict[str, _Job] = {}
        """Every cleanup job created, by job id (finished ones stay)."""
        self._results: dict[str, dict[int, str]] = {}
        """Each job's package results (canonical JSON), by job id and seq."""

    def another_replica(self, replica: str) -> InMemoryAuditStore:
        """A store on this one's memory (its entries, purges, requests, notifications,
        cleanup plans and jobs, behind the same lock) under the name `replica`: another
        gateway on the same database. Its scripted failures are its own, as a replica's
        writer is."""
        other = InMemoryAuditStore(
            replica=replica, page_token_key=self.page_token_key, clock=self._clock
        )
        other._lock = self._lock
        other._rows, other._events = self._rows, self._events
        other._purges, other._requests, other._votes = self._purges, self._requests, self._votes
        other._webhooks = self._webhooks
        other._plans, other._jobs, other._results = self._plans, self._jobs, self._results
        return other

    # --- port: writing ---------------------------------------------------------------------

    def append(
        self, entry: NewEntry, *, guard: AppendGuard | None = None, durable: bool = False
    ) -> StoredEntry:
        """Append `entry` (see `SqlAuditStore.append`); a `durable` entry that fails waits in
        `pending` and is committed later."""
        text, columns = canonical(entry.body), column_values(entry.body)
        _check_effects(entry.effects)
        _check_approvals(entry.approvals)
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
        """The pending purges of `versions` of `package` (by `package_identity`), by version."""
        key, wanted = package_identity(package), set(versions)
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

    # --- port: RequestStore -----------------------------------------------------------------

    def deletion_request(self, request_id: str) -> DeletionRequestRecord | None:
        """The request with its votes (in the order cast), or None when there is none; its
        plan parsed from the stored body (`stored_plan`). PlanTamperedError when that is not
        a plan."""
        with self._lock:
            row = self._requests.get(request_id)
            return None if row is None else self._read(row)

    def deletion_requests(self, query: DeletionRequestQuery) -> DeletionRequestPage:
        """One page of requests matching `query`, newest first (then by request id, both
        descending); `next_after` is the last one's (created_at text, request id) when more
        follow."""
        limit = max(query.limit, 0)
        with self._lock:
            rows = sorted(
                (row for row in self._requests.values() if _request_listed(row, query)),
                key=lambda row: (row.created_at, row.record.request_id),
                reverse=True,
            )
            page = [self._read(row) for row in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit and page else None
        return DeletionRequestPage(
            page, None if last is None else (last.created_at, last.record.request_id)
        )

    def expired_requests(self, now: datetime, limit: int) -> list[DeletionRequestRecord]:
        """Pending requests whose expiry is not after `now`, oldest expiry first."""
        at = format_time(now)
        with self._lock:
            rows = sorted(
                (
                    row
                    for row in self._requests.values()
                    if row.state == RequestState.PENDING.value and row.expires_at <= at
                ),
                key=lambda row: (row.expires_at, row.record.request_id),
            )
            return [self._read(row) for row in rows[: max(limit, 0)]]

    def tamper_plan(self, request_id: str, plan: Mapping[str, Any] | str) -> None:
        """Replace a request's stored plan (a body, or any text) behind the gateway's back:
        for tests of tamper detection. KeyError when there is no such request."""
        with self._lock:
            row = self._requests[request_id]
            row.plan = plan if isinstance(plan, str) else _json(plan)

    # --- port: CleanupStore -----------------------------------------------------------------

    def save_plan(
        self,
        plan: CleanupPlan,
        packages: Sequence[PackagePlan],
        *,
        max_open: int | None = None,
    ) -> None:
        """Store `plan` (its header JSON, with plan_hash) and its packages in order (seq 0,
        1, ...). ValueError (nothing stored) when a plan with its id is stored already;
        CleanupPlanLimitError when its requester has `max_open` unexpired plans."""
        header, rows = _json(plan.header_json()), [_json(p.to_json()) for p in packages]
        with self._lock:
            if plan.plan_id in self._plans:
                raise ValueError(f"cleanup plan {plan.plan_id} is stored already")
            if max_open is not None:
                headers = [json.loads(row.header) for row in self._plans.values()]
                open_ = sum(
                    1
                    for h in headers
                    if h["requester"]["id"] == plan.requester_id
                    and datetime.fromisoformat(h["expires_at"]) > plan.created_at
                )
                if open_ >= max_open:
                    raise plan_limit(plan.requester_id, max_open)
            self._plans[plan.plan_id] = _CleanupPlan(header, plan.plan_hash, rows)

    def cleanup_plan(self, plan_id: str) -> CleanupPlan | None:
        """The plan's header as stored, or None when there is none; CleanupPlanTamperedError
        when it does not read back as a plan (see `adapters.sql.cleanup.plan_of`)."""
        with self._lock:
            row = self._plans.get(plan_id)
            if row is None:
                return None
            header, digest = row.header, row.plan_hash
        try:
            return CleanupPlan.from_header(json.loads(header), digest)
        except (KeyError, TypeError, ValueError, AttributeError, InvalidRequestError) as err:
            raise CleanupPlanTamperedError(
                f"cleanup plan {plan_id} as stored is not a plan header "
                f"({type(err).__name__}: {err}): it was changed outside the gateway",
                plan_id=plan_id,
            ) from err

    def open_plans(self, requester: str, now: datetime) -> int:
        """How many of `requester`'s plans have not expired at `now`."""
        with self._lock:
            headers = [json.loads(row.header) for row in self._plans.values()]
        return sum(
            1
            for h in headers
            if h["requester"]["id"] == requester and datetime.fromisoformat(h["expires_at"]) > now
        )

    def prune_plans(self, expired_before: datetime, limit: int) -> int:
        """Delete up to `limit` plans that expired before `expired_before` and that no
        unfinished job applies; how many."""
        with self._lock:
            busy = {
                row.job.plan_id
                for row in self._jobs.values()
                if row.job.state in (JobState.QUEUED, JobState.RUNNING)
            }
            expired = sorted(
                (datetime.fromisoformat(json.loads(row.header)["expires_at"]), plan_id)
                for plan_id, row in self._plans.items()
                if plan_id not in busy
            )
            pruned = [plan_id for at, plan_id in expired if at < expired_before][:limit]
            for plan_id in pruned:
                del self._plans[plan_id]
        return len(pruned)

    def plan_packages(self, plan_id: str, after: int, limit: int) -> list[tuple[int, PackagePlan]]:
        """Up to `limit` of the plan's packages whose seq is above `after` (-1: from the
        first), in order, each with its seq; CleanupPlanTamperedError for one that does not
        read back as a package's plan."""
        with self._lock:
            row = self._plans.get(plan_id)
            stored = [] if row is None else list(enumerate(row.packages))
        rows = [(seq, text) for seq, text in stored if seq > after][: max(limit, 0)]
        found: list[tuple[int, PackagePlan]] = []
        for seq, text in rows:
            try:
                found.append((seq, PackagePlan.from_json(json.loads(text))))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise CleanupPlanTamperedError(
                    f"package {seq} of cleanup plan {plan_id} as stored is not a package's "
                    f"plan ({type(err).__name__}: {err}): it was changed outside the gateway",
                    plan_id=plan_id,
                ) from err
        return found

    def tamper_cleanup_plan(
        self, plan_id: str, seq: int, package_json: Mapping[str, Any] | str
    ) -> None:
        """Replace the stored JSON of a plan's package `seq` (a mapping, or any text) behind
        the gateway's back: for tests of tamper detection. KeyError or IndexError when there
        is no such plan or package."""
        with self._lock:
            row = self._plans[plan_id]
            if not 0 <= seq < len(row.packages):
                raise IndexError(f"cleanup plan {plan_id} has no package {seq}")
            row.packages[seq] = (
                package_json if isinstance(package_json, str) else _json(package_json)
            )

    def create_job(self, job: CleanupJob) -> None:
        """Store a new job in state queued (whatever `job.state` says), unleased. ValueError
        (nothing stored) when a job with its id is stored already."""
        stored = replace(
            job,
            requester=json.loads(_json(dict(job.requester))),
            state=JobState.QUEUED,
            created_at=_stored_time(job.created_at),
            updated_at=_stored_time(job.updated_at),
            counts=_add_counts({}, job.counts),
        )
        with self._lock:
            if job.job_id in self._jobs:
                raise ValueError(f"cleanup job {job.job_id} is stored already")
            self._jobs[job.job_id] = _Job(stored)

    def cleanup_job(self, job_id: str) -> CleanupJob | None:
        """The job, or None when there is none."""
        with self._lock:
            row = self._jobs.get(job_id)
            return None if row is None else row.job

    def plan_jobs(self, plan_id: str) -> list[CleanupJob]:
        """The jobs that apply `plan_id`, oldest first."""
        with self._lock:
            rows = sorted(
                (row for row in self._jobs.values() if row.job.plan_id == plan_id),
                key=lambda row: row.order,
            )
            return [row.job for row in rows]

    def claim_job(self, now: datetime, lease_until: datetime) -> CleanupJob | None:
        """Lease the oldest (created_at, then job id) queued or running job not leased past
        `now` to this replica until `lease_until` and mark it running; None when there is
        none."""
        at, until = format_time(now), format_time(lease_until)
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._jobs.values()
                    if row.job.state in {JobState.QUEUED, JobState.RUNNING}
                    and (row.lease_until is None or row.lease_until <= at)
                ),
                key=lambda row: row.order,
            )
            if not due:
                return None
            row = due[0]
            row.lease_owner, row.lease_until = self.replica, until
            row.job = replace(row.job, state=JobState.RUNNING, updated_at=parse_time(at))
            return row.job

    def record_step(
        self,
        job_id: str,
        result: PackageResult,
        *,
        counts: Mapping[str, int],
        now: datetime,
        lease_until: datetime,
    ) -> CleanupJob | None:
        """A package of a job leased to this replica is done: store its result, add `counts`
        to the job's, move its next seq past the package (never back), count it done, clear
        its attempts and error and extend the lease. The job as updated, or None (nothing
        stored) when it is not leased to this replica. ValueError, before anything is
        stored, for a count that is not of a CleanupResult value."""
        _add_counts({}, counts)
        text = _json(result.to_json())
        with self._lock:
            row = self._leased(job_id)
            if row is None:
                return None
            job = row.job
            row.job = replace(
                job,
                counts=_add_counts(job.counts, counts),
                next_seq=max(job.next_seq, result.seq + 1),
                packages_done=job.packages_done + 1,
                attempts=0,
                last_error="",
                updated_at=_stored_time(now),
            )
            row.lease_until = format_time(lease_until)
            self._results.setdefault(job_id, {})[result.seq] = text
            return row.job

    def finish_job(self, job_id: str, state: JobState, now: datetime, error: str = "") -> None:
        """End a job leased to this replica in `state` (succeeded, cancelled, failed) and end
        its lease; `error` becomes its last error when given. Nothing when the job is not
        leased to this replica; ValueError for a state that does not end a job."""
        ended = JobState(state)
        if ended not in FINISHED:
            raise ValueError(f"a job does not end in state {ended.value!r}")
        with self._lock:
            row = self._leased(job_id)
            if row is None:
                return
            row.job = replace(
                row.job,
                state=ended,
                updated_at=_stored_time(now),
                last_error=error or row.job.last_error,
            )
            row.lease_owner = row.lease_until = None

    def renew_job(self, job_id: str, lease_until: datetime) -> bool:
        """Extend the lease of a job leased to this replica; False when it no longer is."""
        with self._lock:
            row = self._leased(job_id)
            if row is None:
                return False
            row.lease_until = format_time(lease_until)
            return True

    def retry_job(self, job_id: str, *, retry_at: datetime, error: str, now: datetime) -> None:
        """A step of a job leased to this replica failed: count the attempt, record `error`
        and end the lease so that no replica claims the job before `retry_at`. Nothing when
        the job is not leased to this replica."""
        with self._lock:
            row = self._leased(job_id)
            if row is None:
                return
            row.job = replace(
                row.job,
                attempts=row.job.attempts + 1,
                last_error=error,
                updated_at=_stored_time(now),
            )
            row.lease_owner, row.lease_until = None, format_time(retry_at)

    def cancel_job(self, job_id: str, reason: str, now: datetime) -> CleanupJob | None:
        """Ask a job to stop: a queued one, or one no replica holds (no lease owner, or its
        lease expired at `now`), is cancelled at once; one leased past `now` is marked for
        its runner (both: cancel requested, `reason` recorded). The job as it is now (None
        when there is none; unchanged when it had finished)."""
        at = format_time(now)
        with self._lock:
            row = self._jobs.get(job_id)
            if row is None:
                return None
            job = row.job
            if job.state in FINISHED:
                return job
            held = (
                job.state is JobState.RUNNING
                and row.lease_owner is not None
                and row.lease_until is not None
                and row.lease_until > at
            )
            job = replace(
                job, cancel_requested=True, cancel_reason=reason, updated_at=parse_time(at)
            )
            if not held:
                job = replace(job, state=JobState.CANCELLED)
                row.lease_owner = row.lease_until = None
            row.job = job
            return job

    def job_results(self, job_id: str, after: int, limit: int) -> list[PackageResult]:
        """Up to `limit` of the job's package results whose seq is above `after`, in order."""
        with self._lock:
            stored = sorted(self._results.get(job_id, {}).items())
        rows = [text for seq, text in stored if seq > after][: max(limit, 0)]
        return [PackageResult.from_json(json.loads(text)) for text in rows]

    # --- port: WebhookOutbox ----------------------------------------------------------------

    def claim_webhooks(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookEvent, int]]:
        """Lease up to `limit` undelivered notifications due at `now` and not leased past it
        to this replica until `lease_until`, oldest first, each with its attempts so far."""
        at, until = format_time(now), format_time(lease_until)
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._webhooks.values()
                    if row.delivered_at is None
                    and row.next_attempt_at <= at
                    and (row.lease_until is None or row.lease_until <= at)
                ),
                key=lambda row: (format_time(row.event.created_at), row.seq, row.event.event_id),
            )[: max(limit, 0)]
            for row in due:
                row.lease_owner, row.lease_until = self.replica, until
            return [(row.event, row.attempts) for row in due]

    def webhook_delivered(self, event_id: str) -> None:
        """Mark a notification delivered now (counting the attempt, ending its lease)."""
        with self._lock:
            row = self._webhooks.get(event_id)
            if row is None or row.delivered_at is not None:
                return
            row.delivered_at = format_time(self._clock())
            row.attempts += 1
            row.lease_owner = row.lease_until = None

    def webhook_failed(self, event_id: str, *, retry_at: datetime, error: str) -> None:
        """Count a failed delivery, record `error`, end the lease and retry at `retry_at`;
        nothing when the notification is not leased to this replica or was delivered."""
        with self._lock:
            row = self._webhooks.get(event_id)
            if row is None or row.delivered_at is not None or row.lease_owner != self.replica:
                return
            row.attempts += 1
            row.last_error, row.next_attempt_at = error, format_time(retry_at)
            row.lease_owner = row.lease_until = None

    def webhook_record(
        self, event_id: str
    ) -> tuple[str | None, int, str, str, str | None, str | None] | None:
        """Where a notification stands, as `SqlAuditStore.webhook_record` (delivered_at,
        attempts, last_error, next_attempt_at, lease_owner, lease_until; None: no such
        notification). Not part of the port."""
        with self._lock:
            row = self._webhooks.get(event_id)
            if row is None:
                return None
            return (
                row.delivered_at,
                row.attempts,
                row.last_error,
                row.next_attempt_at,
                row.lease_owner,
                row.lease_until,
            )

    # --- internals (called with the lock held) ---------------------------------------------

    def _leased(self, job_id: str) -> _Job | None:
        """The job's row while it is running and leased to this replica."""
        row = self._jobs.get(job_id)
        if row is None or row.job.state is not JobState.RUNNING:
            return None
        return row if row.lease_owner == self.replica else None

    def _apply_approvals(
        self, effects: ApprovalEffects, event_id: str, time: str, seq: int
    ) -> None:
        """An appended entry's approval effects, as `adapters.sql.requests.apply_effects`
        applies them (votes are kept in the order cast)."""
        for record in effects.create:
            if record.request_id in self._requests:  # ON CONFLICT DO NOTHING
                continue
            state = RequestState(record.state)
            row = _Request(
                replace(
                    record,
                    created_at=_stored_time(record.created_at),
                    expires_at=_stored_time(record.expires_at),
                    required_by=tuple(record.required_by),
                    votes=(),
                    stored_plan=None,
                ),
                _json(record.plan.body()),
                state.value,
                closed_reason=record.closed_reason or None,
                closed_event_id=record.closed_event_id or None,
                closed_at=time if state in _FINAL else None,
            )
            self._requests[record.request_id] = row
            for vote in record.votes:
                self._vote(record.request_id, vote)
        for new in effects.votes:
            self._vote(new.request_id, new.vote)
        for transition in effects.transitions:
            moved = self._requests.get(transition.request_id)
            if moved is None or moved.state not in {str(s) for s in transition.from_states}:
                continue
            to = RequestState(transition.to_state)
            final = to in _FINAL
            moved.state = to.value
            moved.closed_reason = transition.reason if final else None
            moved.closed_event_id = event_id if final else None
            moved.closed_at = time if final else None
        for event in effects.notify:
            if event.event_id in self._webhooks:  # ON CONFLICT DO NOTHING
                continue
            at = _stored_time(event.created_at)
            stored = replace(event, payload=json.loads(_json(event.payload)), created_at=at)
            self._webhooks[event.event_id] = _Webhook(stored, format_time(at), seq=seq)

    def _read(self, row: _Request) -> DeletionRequestRecord:
        """A request as read back (see `adapters.sql.requests.record_of`): its plan parsed
        from the stored text, PlanTamperedError when that is not a plan."""
        request_id = row.record.request_id
        try:
            stored: Mapping[str, Any] = json.loads(row.plan)
            plan = DeletionPlan.from_body(stored)
            state = RequestState(row.state)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PlanTamperedError(
                f"deletion request {request_id} as stored is not a deletion request "
                f"({type(err).__name__}: {err}): it was changed outside the gateway",
                request_id,
            ) from err
        return replace(
            row.record,
            state=state,
            plan=plan,
            votes=tuple(self._votes.get(request_id, ())),
            closed_reason=row.closed_reason or "",
            closed_event_id=row.closed_event_id or "",
            stored_plan=stored,
        )

    def _vote(self, request_id: str, vote: Vote) -> None:
        """Insert a vote unless the person voted on the request (ON CONFLICT DO NOTHING)."""
        votes = self._votes.setdefault(request_id, [])
        if any(cast.person == vote.person for cast in votes):
            return
        votes.append(replace(vote, groups=tuple(vote.groups), at=_stored_time(vote.at)))

    def _request_refusal(self, guard: RequestGuard) -> PkggovError | None:
        """Why `guard` refuses its entry, as `adapters.sql.requests.refusal` decides."""
        row = self._requests.get(guard.request_id)
        if row is None:
            return DeletionRequestNotFoundError(guard.request_id)
        voter = guard.voter
        votes = self._votes.get(guard.request_id, ())
        voted = voter is not None and any(v.person == voter for v in votes)
        return guard.refusal(row.state, parse_time(row.expires_at), voted=voted)

    def _apply(self, effects: PurgeEffects, event_id: str, time: str) -> None:
        """An appended entry's effects, as `adapters.sql.purges.apply_effects` applies them."""
        for closure in effects.close:
            key = package_identity(closure.package)
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
            key = package_identity(purge.package)
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
            if guard is not None and guard.closes_open_event:
                return EventClosed(entry.event_id)
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
        if entry.approvals:
            self._apply_approvals(entry.approvals, entry.event_id, entry.time, seq + 1)
        return StoredEntry(seq + 1, prev, digest, entry.body)

    def _check(
        self, entry: NewEntry, guard: AppendGuard | None, columns: tuple[Any, ...]
    ) -> BaseException | None:
        if guard is None:
            return None
        if guard.closes_open_event and any(
            row.column("kind") in CLOSING_KINDS for row in self._events.get(entry.event_id, ())
        ):
            return EventClosed(entry.event_id)
        if guard.request_id is not None:
            principal = columns[_AT["principal"]] or ""
            event = self._by_request_id(principal, guard.request_id)
            if event is not None and replay_verdict(event) != "rerun":
                return RequestIdClaimed(event)
        if guard.deletion_request is not None:
            refused = self._request_refusal(guard.deletion_request)
            if refused is not None:
                return refused
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


def _json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces, ASCII), as the SQL store's JSON columns hold."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _add_counts(counts: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """`counts` with `more` added, key by key (as `adapters.sql.cleanup.add_counts`):
    ValueError for a key of `more` that is not a CleanupResult value."""
    total = {str(key): int(value) for key, value in counts.items()}
    for key, value in more.items():
        name = CleanupResult(key).value
        total[name] = total.get(name, 0) + int(value)
    return total


def _stored_time(moment: datetime) -> datetime:
    """`moment` as the SQL store reads it back (UTC, to the microsecond)."""
    return parse_time(format_time(moment))


def _check_approvals(effects: ApprovalEffects) -> None:
    """ValueError (or TypeError) for approval effects the SQL store refuses before queueing
    (`adapters.sql.requests.check_effects`)."""
    for record in effects.create:
        RequestState(record.state)
        if record.plan.digest() != record.plan_hash:
            raise ValueError(
                f"deletion request {record.request_id}: plan_hash is not the plan's digest"
            )
        _json(list(record.required_by))
        for vote in record.votes:
            _json(list(vote.groups))
    for new in effects.votes:
        _json(list(new.vote.groups))
    for transition in effects.transitions:
        RequestState(transition.to_state)
        for state in transition.from_states:
            RequestState(state)
    for event in effects.notify:
        _json(event.payload)


def _request_listed(row: _Request, query: DeletionRequestQuery) -> bool:
    """Whether a request is on the listing `query` asks for, as the SQL WHERE clause decides."""
    record, package = row.record, row.record.plan.package
    if query.state is not None and row.state != str(query.state):
        return False
    for wanted, value in (
        (query.requester, record.requester),
        (query.domain, package.domain),
        (query.repository, package.repository),
        (query.package, package.package),
    ):
        if wanted is not None and value != wanted:
            return False
    return query.after is None or (row.created_at, record.request_id) < query.after
