"""SqlAuditStore: the AuditStore, PurgeStore, RequestStore, CleanupStore and WebhookOutbox
ports on one SQL database, and `open_audit_store`.

The store migrates its database when it opens (`migrations`), appends through its
group-commit writer (`writer`, which also applies each entry's purge and approval effects and
checks its deletion-request guard) and answers the ports' reads on the dialect's pooled
reader connections; the purge worker's and the notifier's leases (claim, release) are one
statement each on such a connection too (`purges`, `requests`), outside the chain's lock.
Cleanup plans and jobs (`cleanup`) are written on such a connection as well, never under the
chain's lock: a job's claim, finish and retry are one statement each, a plan's save, a job's
step and its cancellation one short transaction each. Any database failure of a read, a
lease or a cleanup write is AuditUnavailableError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pkggov_gateway.adapters.sql import cleanup, purges, requests
from pkggov_gateway.adapters.sql.dialects import (
    Dialect,
    PostgresDialect,
    SqliteDialect,
    sqlite_path,
)
from pkggov_gateway.adapters.sql.migrations import migrate
from pkggov_gateway.adapters.sql.queries import (
    SELECT_ENTRY,
    event_by_request_id,
    fetch,
    quota_usage,
    stored_entry,
)
from pkggov_gateway.adapters.sql.writer import GroupCommitWriter
from pkggov_gateway.domain.approvals import (
    DeletionRequestPage,
    DeletionRequestQuery,
    DeletionRequestRecord,
    WebhookEvent,
)
from pkggov_gateway.domain.audit import (
    COLUMNS,
    EXACT_FILTERS,
    AppendGuard,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    NewEntry,
    QuotaCheck,
    StoredEntry,
    column_values,
    format_time,
)
from pkggov_gateway.domain.cleanup import (
    FINISHED,
    CleanupJob,
    CleanupPlan,
    JobState,
    PackagePlan,
    PackageResult,
)
from pkggov_gateway.domain.errors import AuditUnavailableError, plan_limit
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.recovery import (
    PendingPurge,
    PurgePage,
    PurgeQuery,
    PurgeStats,
)
from pkggov_gateway.ports import Metrics

__all__ = ["SqlAuditStore", "open_audit_store"]


_LISTED = (
    "(e.kind = 'outcome' OR (e.kind = 'intent' AND NOT EXISTS ("
    "SELECT 1 FROM audit_entries o WHERE o.event_id = e.event_id AND o.kind = 'outcome')))"
)


class SqlAuditStore:
    """The audit store on one SQL database (see the package docstring)."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        replica: str = "gateway",
        max_batch: int = 256,
        retry_seconds: float = 0.5,
        heartbeat_seconds: float = 2.0,
        on_commit: Callable[[StoredEntry], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.dialect = dialect
        self.replica = replica
        self._closed = False
        self.page_token_key = b""
        try:
            self.page_token_key = migrate(dialect)
        except Exception as err:
            raise AuditUnavailableError(f"{dialect.description}: {err}") from err
        self._writer = GroupCommitWriter(
            dialect,
            replica=replica,
            max_batch=max_batch,
            retry_seconds=retry_seconds,
            heartbeat_seconds=heartbeat_seconds,
            on_commit=on_commit,
            metrics=metrics,
        )

    # --- port: writing ---------------------------------------------------------------------

    def append(
        self, entry: NewEntry, *, guard: AppendGuard | None = None, durable: bool = False
    ) -> StoredEntry:
        """Append `entry` and return it once committed.

        Raises AuditUnavailableError when it could not be committed (a `durable` entry is
        still retried in the background until it is), RequestIdClaimed when the guard's
        request_id is already claimed, a DeletionRequestNotFoundError or DeletionRequestError
        when the guard's deletion request refuses (see `requests.refusal`),
        QuotaExceededError when the guard's quota refuses; KeyError, TypeError or ValueError,
        before anything is queued, for a body without a known kind, an event_id or a time, a
        closure that leaves a purge pending, or approval effects the writer could not store
        (they would jam the writer's batch). The entry's `effects` and `approvals` commit
        with it (see `purges`, `requests`).
        """
        if self._closed:
            raise AuditUnavailableError("the audit store is closed")
        columns = column_values(entry.body)  # raises for a body the writer could not store
        _ = entry.kind
        purges.check_effects(entry.effects)
        requests.check_effects(entry.approvals)
        return self._writer.write(entry, guard, durable, columns)

    def healthy(self) -> bool:
        """False while the last write failed or a durable entry awaits its commit."""
        return self._writer.healthy()

    @property
    def last_error(self) -> str | None:
        """Why the last write failed, while the store is unhealthy."""
        return self._writer.last_error

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after it has committed what is queued (durable entries: tried)."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop(timeout)
        with contextlib.suppress(Exception):
            self.dialect.close()

    # --- port: reading ---------------------------------------------------------------------

    def event(self, event_id: str) -> AuditEventRecord | None:
        """The event named `event_id`, or None."""
        with self._reader() as conn:
            rows = fetch(
                self.dialect, conn, f"{SELECT_ENTRY} WHERE event_id = ? ORDER BY seq", (event_id,)
            )
        entries = tuple(stored_entry(row) for row in rows)
        return AuditEventRecord(event_id, entries) if entries else None

    def event_by_request_id(self, principal: str, request_id: str) -> AuditEventRecord | None:
        """The latest event in which `principal` claimed AIP-155 `request_id`, or None."""
        with self._reader() as conn:
            return event_by_request_id(self.dialect, conn, principal, request_id)

    def quota_usage(self, quota: QuotaCheck) -> tuple[int, float]:
        """Versions `quota.principal` deleted (or is deleting) in the window, and the seconds
        until the oldest of them leaves it."""
        with self._reader() as conn:
            return quota_usage(self.dialect, conn, quota)

    def list_events(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, one page."""
        where = [_LISTED]
        params: list[Any] = []
        for name in EXACT_FILTERS:
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
            heads = fetch(self.dialect, conn, sql, params)
            page, more = heads[: query.limit], len(heads) > query.limit
            ids = [row[0] for row in page]
            entries: dict[str, list[StoredEntry]] = {event_id: [] for event_id in ids}
            if ids:
                marks = ", ".join("?" for _ in ids)
                rows = fetch(
                    self.dialect,
                    conn,
                    f"{SELECT_ENTRY} WHERE event_id IN ({marks}) ORDER BY seq",
                    ids,
                )
                for row in rows:
                    stored = stored_entry(row)
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
            rows = fetch(self.dialect, conn, sql, ())
        return [AuditEventRecord(e.event_id, (e,)) for e in map(stored_entry, rows)]

    def iter_rows(self, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """Every stored row in chain order: seq, the indexed columns, body, prev_hash, hash."""
        names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
        after = -(2**63)  # every row, even one given a negative seq
        with self._reader() as conn:
            while True:
                rows = fetch(
                    self.dialect,
                    conn,
                    f"SELECT {names} FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                    (after, batch),
                )
                if not rows:
                    return
                yield from rows
                after = rows[-1][0]

    # --- port: PurgeStore -------------------------------------------------------------------

    def pending_for(self, package: PackageRef, versions: Sequence[str]) -> dict[str, PendingPurge]:
        """The pending purges of `versions` of `package` (by `package_identity`), by version."""
        if not versions:
            return {}
        with self._reader() as conn:
            return purges.pending_for(self.dialect, conn, package, versions)

    def pending_purges(self, query: PurgeQuery) -> PurgePage:
        """One page of pending purges matching `query`, soonest due first (then purge id)."""
        with self._reader() as conn:
            return purges.page(self.dialect, conn, query)

    def claim_due_purges(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[PendingPurge]:
        """Lease up to `limit` pending purges due at `now` and not leased past it to this
        replica until `lease_until`, soonest next due first (one statement on a pooled
        connection, outside the chain's lock; PostgreSQL: FOR UPDATE SKIP LOCKED)."""
        with self._reader() as conn:
            return purges.claim_due(
                self.dialect, conn, self.replica, now=now, lease_until=lease_until, limit=limit
            )

    def release_purge(self, purge_id: str, *, retry_at: datetime, error: str) -> None:
        """Count a failed attempt, record `error`, end the lease and make the purge due again
        at `retry_at`; nothing when it is no longer pending."""
        with self._reader() as conn:
            purges.release(self.dialect, conn, purge_id, retry_at, error, replica=self.replica)

    def purge_stats(self, now: datetime) -> PurgeStats:
        """Pending purges, those whose due time is not after `now`, and the oldest due time."""
        with self._reader() as conn:
            return purges.stats(self.dialect, conn, now)

    def purge_state(self, purge_id: str) -> purges.PurgeRecord | None:
        """A purge's state, and when, why and by which event it was closed (None: no such
        purge). Not part of the port (it lists pending purges only): for tests and
        operators."""
        with self._reader() as conn:
            return purges.state_of(self.dialect, conn, purge_id)

    # --- port: RequestStore -----------------------------------------------------------------

    def deletion_request(self, request_id: str) -> DeletionRequestRecord | None:
        """The request with its votes (in the order cast), or None when there is none; its
        plan is parsed from the stored body, which `stored_plan` holds as read. Raises
        PlanTamperedError when the row does not read back as a request."""
        with self._reader() as conn:
            found = requests.read_request(self.dialect, conn, request_id)
        return None if found is None else requests.record_of(found)

    def deletion_requests(self, query: DeletionRequestQuery) -> DeletionRequestPage:
        """One page of requests matching `query`, newest first (then by request id, both
        descending); `next_after` is the last one's (created_at text, request id) when more
        follow."""
        with self._reader() as conn:
            found, after = requests.page(self.dialect, conn, query)
        return DeletionRequestPage([requests.record_of(row) for row in found], after)

    def expired_requests(self, now: datetime, limit: int) -> list[DeletionRequestRecord]:
        """Pending requests whose expiry is not after `now`, oldest expiry first."""
        with self._reader() as conn:
            found = requests.expired(self.dialect, conn, now, limit)
        return [requests.record_of(row) for row in found]

    # --- port: CleanupStore -----------------------------------------------------------------

    def save_plan(
        self,
        plan: CleanupPlan,
        packages: Sequence[PackagePlan],
        *,
        max_open: int | None = None,
    ) -> None:
        """Store `plan` (its header JSON, with plan_hash) and its packages in order (seq 0,
        1, ...), in one transaction. Raises ValueError (nothing written) when a plan with its
        id is stored already: a plan is written once; CleanupPlanLimitError when its requester
        has `max_open` unexpired plans (checked atomically with the insert)."""
        header, rows = cleanup.plan_rows(plan, packages)
        with self._reader() as conn:
            saved = cleanup.save_plan(self.dialect, conn, plan, header, rows, max_open=max_open)
        if saved == "exists":
            raise ValueError(f"cleanup plan {plan.plan_id} is stored already")
        if saved == "limit":
            raise plan_limit(plan.requester_id, max_open or 0)

    def cleanup_plan(self, plan_id: str) -> CleanupPlan | None:
        """The plan's header as stored, or None when there is none; CleanupPlanTamperedError
        when the row does not read back as a plan (it was changed outside the gateway). The stored
        plan_hash is not checked here: see `cleanup`."""
        with self._reader() as conn:
            found = cleanup.read_plan(self.dialect, conn, plan_id)
        return None if found is None else cleanup.plan_of(found)

    def open_plans(self, requester: str, now: datetime) -> int:
        """How many of `requester`'s plans have not expired at `now`."""
        with self._reader() as conn:
            return cleanup.open_plans(self.dialect, conn, requester, now)

    def prune_plans(self, expired_before: datetime, limit: int) -> int:
        """Delete up to `limit` plans that expired before `expired_before` and that no
        unfinished job applies (with their packages); how many."""
        with self._reader() as conn:
            return cleanup.prune_plans(self.dialect, conn, expired_before, limit)

    def plan_packages(self, plan_id: str, after: int, limit: int) -> list[tuple[int, PackagePlan]]:
        """Up to `limit` of the plan's packages whose seq is above `after` (-1: from the
        first), in order, each with its seq; CleanupPlanTamperedError for a row that does not
        read back as a package's plan."""
        with self._reader() as conn:
            rows = cleanup.packages(self.dialect, conn, plan_id, after, limit)
        return [(seq, cleanup.package_of(plan_id, seq, text)) for seq, text in rows]

    def create_job(self, job: CleanupJob) -> None:
        """Store a new job in state queued (whatever `job.state` says), unleased. Raises
        ValueError (nothing written) when a job with its id is stored already."""
        requester = cleanup.json_text(dict(job.requester))
        cleanup.add_counts({}, job.counts)
        with self._reader() as conn:
            created = cleanup.create_job(self.dialect, conn, job, requester)
        if not created:
            raise ValueError(f"cleanup job {job.job_id} is stored already")

    def cleanup_job(self, job_id: str) -> CleanupJob | None:
        """The job, or None when there is none."""
        with self._reader() as conn:
            row = cleanup.read_job(self.dialect, conn, job_id)
        return None if row is None else cleanup.job_of(row)

    def plan_jobs(self, plan_id: str) -> list[CleanupJob]:
        """The jobs that apply `plan_id`, oldest first."""
        with self._reader() as conn:
            rows = cleanup.plan_jobs(self.dialect, conn, plan_id)
        return [cleanup.job_of(row) for row in rows]

    def claim_job(self, now: datetime, lease_until: datetime) -> CleanupJob | None:
        """Lease the oldest (created_at, then job id) queued or running job not leased past
        `now` to this replica until `lease_until` and mark it running; None when there is
        none (one statement on a pooled connection, outside the chain's lock; PostgreSQL:
        FOR UPDATE SKIP LOCKED)."""
        with self._reader() as conn:
            row = cleanup.claim(self.dialect, conn, self.replica, now=now, lease_until=lease_until)
        return None if row is None else cleanup.job_of(row)

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
        to the job's, move its next seq past the package, count it done, clear its attempts
        and error and extend the lease, in one transaction. The job as updated, or None
        (nothing written) when it is not leased to this replica. ValueError, before anything
        is written, for a count that is not of a CleanupResult value."""
        cleanup.add_counts({}, counts)  # the caller's errors, not the database's
        text = cleanup.json_text(result.to_json())
        with self._reader() as conn:
            row = cleanup.record_step(
                self.dialect,
                conn,
                self.replica,
                job_id,
                seq=result.seq,
                result=text,
                counts=counts,
                now=now,
                lease_until=lease_until,
            )
        return None if row is None else cleanup.job_of(row)

    def finish_job(self, job_id: str, state: JobState, now: datetime, error: str = "") -> None:
        """End a job leased to this replica in `state` (succeeded, cancelled, failed) and end
        its lease; `error` becomes its last error when given. Nothing when the job is not
        leased to this replica; ValueError for a state that does not end a job."""
        if JobState(state) not in FINISHED:
            raise ValueError(f"a job does not end in state {JobState(state).value!r}")
        with self._reader() as conn:
            cleanup.finish(
                self.dialect, conn, self.replica, job_id, state=state, now=now, error=error
            )

    def renew_job(self, job_id: str, lease_until: datetime) -> bool:
        """Extend the lease of a job leased to this replica; False when it no longer is."""
        with self._reader() as conn:
            return cleanup.renew(self.dialect, conn, self.replica, job_id, lease_until)

    def retry_job(self, job_id: str, *, retry_at: datetime, error: str, now: datetime) -> None:
        """A step of a job leased to this replica failed: count the attempt, record `error`
        and end the lease so that no replica claims the job before `retry_at`. Nothing when
        the job is not leased to this replica."""
        with self._reader() as conn:
            cleanup.retry(
                self.dialect, conn, self.replica, job_id, retry_at=retry_at, error=error, now=now
            )

    def cancel_job(self, job_id: str, reason: str, now: datetime) -> CleanupJob | None:
        """Ask a job to stop (see `cleanup.cancel`): a queued one, or one no replica holds
        (no lease owner, or its lease expired at `now`), is cancelled at once; one leased past
        `now` is marked for its runner. The job as it is now (None when there is none;
        unchanged when it had finished)."""
        with self._reader() as conn:
            row = cleanup.cancel(self.dialect, conn, job_id, reason, now)
        return None if row is None else cleanup.job_of(row)

    def job_results(self, job_id: str, after: int, limit: int) -> list[PackageResult]:
        """Up to `limit` of the job's package results whose seq is above `after`, in order."""
        with self._reader() as conn:
            rows = cleanup.results(self.dialect, conn, job_id, after, limit)
        return [cleanup.result_of(text) for text in rows]

    # --- port: WebhookOutbox ----------------------------------------------------------------

    def claim_webhooks(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookEvent, int]]:
        """Lease up to `limit` undelivered notifications due at `now` and not leased past it
        to this replica until `lease_until`, oldest first, each with the attempts made so far
        (one statement on a pooled connection, outside the chain's lock; PostgreSQL: FOR
        UPDATE SKIP LOCKED)."""
        with self._reader() as conn:
            return requests.claim_webhooks(
                self.dialect, conn, self.replica, now=now, lease_until=lease_until, limit=limit
            )

    def webhook_delivered(self, event_id: str) -> None:
        """Mark a notification delivered now (counting the attempt, ending its lease)."""
        with self._reader() as conn:
            requests.delivered(self.dialect, conn, event_id, datetime.now(UTC))

    def webhook_failed(self, event_id: str, *, retry_at: datetime, error: str) -> None:
        """Count a failed delivery, record `error`, end the lease and retry at `retry_at`;
        nothing when the notification is not leased to this replica (its lease expired and
        another took it) or was delivered."""
        with self._reader() as conn:
            requests.failed(self.dialect, conn, event_id, retry_at, error, replica=self.replica)

    def webhook_record(self, event_id: str) -> requests.WebhookRecord | None:
        """Where a notification stands (None: none has `event_id`). Not part of the port:
        for tests and operators."""
        with self._reader() as conn:
            return requests.webhook_record(self.dialect, conn, event_id)

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
