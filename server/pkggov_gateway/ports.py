"""Ports: the interfaces the core needs from the outside world, implemented by adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from pkggov_gateway.domain.approvals import (
    DeletionRequestPage,
    DeletionRequestQuery,
    DeletionRequestRecord,
    WebhookEvent,
)
from pkggov_gateway.domain.audit import (
    AppendGuard,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    NewEntry,
    QuotaCheck,
    StoredEntry,
)
from pkggov_gateway.domain.cleanup import (
    CleanupJob,
    CleanupPlan,
    JobState,
    PackagePlan,
    PackageResult,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageFormat,
    PackageRef,
    PackageState,
    VersionStatus,
)
from pkggov_gateway.domain.policy import PolicyRequest, VersionDecision
from pkggov_gateway.domain.recovery import PendingPurge, PurgePage, PurgeQuery, PurgeStats

__all__ = [
    "AuditStore",
    "Authenticator",
    "CleanupStore",
    "CodeArtifactPort",
    "Metrics",
    "NullMetrics",
    "PackageLocks",
    "PolicyEngine",
    "PolicyView",
    "PurgeStore",
    "RequestStore",
    "WebhookOutbox",
]


class CodeArtifactPort(Protocol):
    """CodeArtifact as the core sees it: one DeletePackageVersions call of at most 100 versions."""

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Delete `versions` of `package` within `deadline`.

        Returns the per-version maps as CodeArtifact reported them. Raises an
        `UpstreamError` subclass (see `domain.errors`) when the call as a whole fails, or
        `DeadlineTooShortError` when too little time is left to send it.
        """
        ...

    def update_package_versions_status(
        self,
        package: PackageRef,
        versions: Sequence[str],
        target_status: VersionStatus,
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """UpdatePackageVersionsStatus: move `versions` (at most 100) to `target_status`
        (Archived, Published or Unlisted), each guarded by its revision in `revisions` (when
        given) and by `expected_status`. Per-version results and errors as for a delete; the
        successful versions carry their new revision and status."""
        ...

    def dispose_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """DisposePackageVersions: delete the assets of `versions` (at most 100) and keep their
        records as Disposed; guards, results and errors as for a status update."""
        ...

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
        by_published: bool = False,
    ) -> PackageState:
        """Read every version's status and the default display version of `package`, plus the
        publication time of the existing versions in `published_time_for`. With
        `by_published`, `statuses` lists the versions in CodeArtifact's publication order
        (ListPackageVersions sortBy=PUBLISHED_TIME, newest first).

        Raises the same errors as `delete_package_versions` (e.g. UpstreamNotFoundError when
        the package does not exist).
        """
        ...

    def published_time(
        self, package: PackageRef, version: str, deadline: Deadline
    ) -> datetime | None:
        """When `version` of `package` was published (DescribePackageVersion); None when
        CodeArtifact does not say. UpstreamNotFoundError when it does not exist."""
        ...

    def list_packages(
        self,
        domain: str,
        repository: str,
        deadline: Deadline,
        *,
        domain_owner: str | None = None,
        format: PackageFormat | None = None,
        namespace: str | None = None,
        prefix: str | None = None,
    ) -> list[PackageRef]:
        """Every package of a repository (ListPackages, all pages), filtered as CodeArtifact
        filters: by format, by namespace prefix and by name prefix."""
        ...


class PackageLocks(Protocol):
    """One package at a time: calls that decide on a package as a whole and then change it
    take turns, across threads and (with a shared database) across replicas.

    Adapters (adapters.package_locks): an in-process lock table, and PostgreSQL advisory locks
    for a fleet. Keys come from `domain.package_key`, so every spelling of one package shares
    one lock.
    """

    def hold(self, package: PackageRef, deadline: Deadline) -> AbstractContextManager[None]:
        """Hold `package`'s lock for the block; wait for it at most until `deadline`.

        Raises `PackageBusyError` when another holder keeps it past `deadline`, and
        `AuditUnavailableError` when the lock's database cannot be reached (fail closed).
        The lock is released when the block ends, however it ends.
        """
        ...


class Authenticator(Protocol):
    """Establishes who is calling, from what the transport knows about the call."""

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        """Return the caller's principal or raise `UnauthenticatedError`.

        `metadata` is the call's metadata (keys lower-case), `peer` grpc's peer string
        (e.g. ``ipv4:127.0.0.1:5555``), `auth_context` grpc's auth context (for mTLS it holds
        ``x509_pem_cert`` and ``transport_security_type``).
        """
        ...


class PolicyView(Protocol):
    """One policy set in force: groups of principals and per-version decisions."""

    def groups_of(self, principal_id: str) -> tuple[str, ...]:
        """The groups the entities file puts `principal_id` in (empty when none)."""
        ...

    def groups_for(self, principal: Principal) -> tuple[str, ...]:
        """The groups of a caller: the entities file's for its id, and those its token's
        claims put it in (groups the entities file defines), each once."""
        ...

    def uses_published_time(self) -> bool:
        """True when some policy reads a version's published time (it costs a lookup)."""
        ...

    def decide(self, request: PolicyRequest) -> list[VersionDecision]:
        """Decide every version of `request` in one batch, in the request's order."""
        ...

    def authorize_read(self, principal: Principal, now: datetime) -> VersionDecision:
        """Decide whether `principal` may read the audit record."""
        ...

    def authorize_plan(
        self, principal: Principal, domain: str, repository: str, now: datetime
    ) -> VersionDecision:
        """Decide whether `principal` may plan a cleanup of `domain`/`repository` (Cedar action
        PlanCleanup on the repository)."""
        ...

    def person_of(self, principal_id: str) -> str:
        """Whom `principal_id` belongs to: the entities file's `person` of it, else the id
        itself. Two identity forms of one person (a certificate, a development name) share
        it, so that a requester cannot approve their own request under another form."""
        ...

    def authorize_approval(
        self, principal: Principal, request: DeletionRequestRecord, now: datetime, reason: str
    ) -> VersionDecision:
        """Decide whether `principal` may vote on `request` (Cedar action
        ApproveDeletionRequest, the request as the resource)."""
        ...


class PolicyEngine(Protocol):
    """The organisation's policy, which a reload may replace at any moment."""

    def current(self) -> PolicyView:
        """The set in force now, pinned: a request uses one view throughout, so a reload in
        the middle of it cannot mix two sets."""
        ...


class AuditStore(Protocol):
    """The audit record (adapters.sql: SQLite or PostgreSQL).

    `append` commits an entry (AuditUnavailableError when it cannot; a `durable` one is
    retried until it is), checking its guard atomically (RequestIdClaimed,
    QuotaExceededError).
    """

    replica: str
    page_token_key: bytes
    """A secret shared by the replicas of one deployment, for signing page tokens."""

    def append(
        self, entry: NewEntry, *, guard: AppendGuard | None = None, durable: bool = False
    ) -> StoredEntry: ...

    def event(self, event_id: str) -> AuditEventRecord | None: ...

    def event_by_request_id(self, principal: str, request_id: str) -> AuditEventRecord | None: ...

    def list_events(self, query: AuditQuery) -> AuditPage: ...

    def open_intents(self) -> list[AuditEventRecord]: ...

    def quota_usage(self, quota: QuotaCheck) -> tuple[int, float]: ...

    def healthy(self) -> bool: ...


class PurgeStore(Protocol):
    """Pending purges (domain.recovery), kept in the audit store's database.

    They are scheduled and closed only by the `PurgeEffects` of an appended audit entry;
    these methods read them and lease them to a worker.
    """

    def pending_for(self, package: PackageRef, versions: Sequence[str]) -> dict[str, PendingPurge]:
        """The pending purges of `versions` of `package` (by `package_identity`: the package
        exactly as CodeArtifact names it), by version."""
        ...

    def pending_purges(self, query: PurgeQuery) -> PurgePage:
        """One page of pending purges, soonest due first (then by purge id)."""
        ...

    def claim_due_purges(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[PendingPurge]:
        """Lease up to `limit` pending purges that are due at `now` (their next attempt, or
        else their due time, is not after it) and not leased to anyone until after `now`, to
        this replica until `lease_until`; soonest due first. Across replicas a purge is leased
        to one at a time (PostgreSQL: FOR UPDATE SKIP LOCKED)."""
        ...

    def release_purge(self, purge_id: str, *, retry_at: datetime, error: str) -> None:
        """A purge leased to this replica failed: count the attempt, record `error`, end the
        lease, and make it due again at `retry_at` (a no-op if it is no longer pending, or no
        longer leased to this replica: its lease expired and another took it)."""
        ...

    def purge_stats(self, now: datetime) -> PurgeStats:
        """How many purges are pending and due at `now`, and the oldest due time."""
        ...


class RequestStore(Protocol):
    """Deletion requests and their votes (domain.approvals), kept in the audit store's
    database. They change only by the `ApprovalEffects` of an appended audit entry, guarded by
    its `RequestGuard`; these methods read them."""

    def deletion_request(self, request_id: str) -> DeletionRequestRecord | None:
        """The request with its votes (in the order cast), or None when there is none."""
        ...

    def deletion_requests(self, query: DeletionRequestQuery) -> DeletionRequestPage:
        """One page of requests, newest first (then by request id)."""
        ...

    def expired_requests(self, now: datetime, limit: int) -> list[DeletionRequestRecord]:
        """Pending requests whose expiry is not after `now`, oldest expiry first."""
        ...


class CleanupStore(Protocol):
    """Cleanup plans and jobs (domain.cleanup), kept in the audit store's database.

    A plan is written once (`save_plan`) and never changed; a job's row changes as its runner
    goes (each step one statement, outside the chain's lock): the deletions themselves are
    audited calls whose request_ids make a repeated step harmless.
    """

    def save_plan(
        self,
        plan: CleanupPlan,
        packages: Sequence[PackagePlan],
        *,
        max_open: int | None = None,
    ) -> None:
        """Store `plan` (its header, with plan_hash) and its packages in order (seq 0, 1, ...),
        in one transaction; CleanupPlanLimitError (nothing stored) when its requester has
        `max_open` plans unexpired at its creation, counted atomically with the insert."""
        ...

    def cleanup_plan(self, plan_id: str) -> CleanupPlan | None:
        """The plan's header, or None when there is none."""
        ...

    def open_plans(self, requester: str, now: datetime) -> int:
        """How many of `requester`'s plans have not expired at `now`."""
        ...

    def prune_plans(self, expired_before: datetime, limit: int) -> int:
        """Delete up to `limit` plans (with their packages) that expired before
        `expired_before` and that no queued or running job applies; how many."""
        ...

    def plan_packages(self, plan_id: str, after: int, limit: int) -> list[tuple[int, PackagePlan]]:
        """Up to `limit` of the plan's packages whose seq is above `after` (-1: from the
        first), in order, each with its seq."""
        ...

    def create_job(self, job: CleanupJob) -> None:
        """Store a new job (state queued)."""
        ...

    def cleanup_job(self, job_id: str) -> CleanupJob | None:
        """The job, or None when there is none."""
        ...

    def plan_jobs(self, plan_id: str) -> list[CleanupJob]:
        """The jobs that apply `plan_id`, oldest first."""
        ...

    def claim_job(self, now: datetime, lease_until: datetime) -> CleanupJob | None:
        """Lease to this replica until `lease_until` the oldest queued or running job that is
        not leased to anyone until after `now`, and mark it running; None when there is none.
        Across replicas a job is leased to one at a time (PostgreSQL: FOR UPDATE SKIP
        LOCKED)."""
        ...

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
        (per CleanupResult value) to the job's, move its next seq past the package, count it
        done, clear its attempts and error, and extend the lease, in one transaction. Returns
        the job as updated, or None when it is no longer leased to this replica (nothing is
        written)."""
        ...

    def finish_job(self, job_id: str, state: JobState, now: datetime, error: str = "") -> None:
        """End a job leased to this replica in `state` (succeeded, cancelled, failed) and end
        its lease; `error` becomes its last error when given."""
        ...

    def renew_job(self, job_id: str, lease_until: datetime) -> bool:
        """Extend the lease of a job leased to this replica to `lease_until`; False (nothing
        written) when it is no longer leased to this replica."""
        ...

    def retry_job(self, job_id: str, *, retry_at: datetime, error: str, now: datetime) -> None:
        """A step of a job leased to this replica failed: count the attempt, record `error`,
        and end the lease so that no replica takes the job before `retry_at`."""
        ...

    def cancel_job(self, job_id: str, reason: str, now: datetime) -> CleanupJob | None:
        """Ask a job to stop: a queued one (or one whose lease has expired) is cancelled at
        once; a running one is marked for its runner to stop after the current package. The
        job as it is now (None when there is none; unchanged when it had finished)."""
        ...

    def job_results(self, job_id: str, after: int, limit: int) -> list[PackageResult]:
        """Up to `limit` of the job's package results whose seq is above `after`, in order."""
        ...


class WebhookOutbox(Protocol):
    """Notifications waiting to be delivered (queued by `ApprovalEffects.notify`)."""

    def claim_webhooks(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookEvent, int]]:
        """Lease up to `limit` undelivered notifications due at `now` to this replica until
        `lease_until`, oldest first, each with the attempts made so far."""
        ...

    def webhook_delivered(self, event_id: str) -> None:
        """Mark a leased notification delivered."""
        ...

    def webhook_failed(self, event_id: str, *, retry_at: datetime, error: str) -> None:
        """Count a failed delivery, record `error`, end the lease, retry at `retry_at`."""
        ...


class Metrics(Protocol):
    """What the gateway counts and times (adapters.metrics exports it to Prometheus)."""

    def rpc_started(self, method: str) -> None:
        """A call of `method` began (in flight until rpc_finished)."""
        ...

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """A call ended with gRPC status `code` after `seconds`."""
        ...

    def decisions(self, outcomes: Mapping[str, int]) -> None:
        """Per-version decisions of one call, counted by outcome (e.g. allowed, denied)."""
        ...

    def upstream_call(self, operation: str, outcome: str, seconds: float) -> None:
        """One attempt of a CodeArtifact operation: "ok" or the error's kind."""
        ...

    def rate_limit_wait(self, kind: str, seconds: float, *, refused: bool) -> None:
        """Time an attempt waited for its turn under the `kind` (write, read) rate limit."""
        ...

    def audit_commit(self, kind: str, seconds: float, *, ok: bool) -> None:
        """A synchronous audit commit of an entry of `kind` (intent, outcome)."""
        ...

    def audit_group_commit(self, entries: int, wait_seconds: float, hold_seconds: float) -> None:
        """One group commit of `entries`: the time until it held the chain lock (with the
        chain's tail read), and the time from then to the commit's answer (an upper bound of
        the lock's hold: the lock is released when the commit is done, before its answer is
        read)."""
        ...

    def audit_healthy(self, healthy: bool) -> None:
        """Whether the audit store currently commits."""
        ...

    def policy_reload(self, *, ok: bool) -> None:
        """A policy reload was applied (ok) or refused."""
        ...

    def purges_done(self, purged: int, cancelled: int, failed: int) -> None:
        """A purge worker pass purged, cancelled and failed (to retry later) these many."""
        ...

    def purges_pending(self, stats: PurgeStats, now: datetime) -> None:
        """The pending purges as of `now` (pending, due, the oldest due one's overdue age)."""
        ...

    def cleanup_versions(self, results: Mapping[str, int]) -> None:
        """A cleanup job's package was applied: its planned deletions, counted by result."""
        ...

    def cleanup_job_ended(self, state: str) -> None:
        """A cleanup job ended in `state` (succeeded, cancelled, failed)."""
        ...

    def webhook_attempt(self, kind: str, outcome: str, seconds: float) -> None:
        """One delivery attempt of a `kind` notification: delivered, or why not."""
        ...

    def stream_limited(self, reason: str) -> None:
        """A streaming call was refused (budget, peer) or ended (idle, max_age) by its limits,
        or a unary call waiting for its message was ended (message_peer, message_budget,
        message_late)."""
        ...

    def token_checked(self, issuer: str, result: str) -> None:
        """A bearer token was verified ("ok") or refused (result: why), by the configured
        issuer's name ("-" when no configured issuer was identified)."""
        ...

    def jwks_fetched(self, issuer: str, *, ok: bool, keys: int, usable_seconds: float) -> None:
        """One fetch of an issuer's keys succeeded (ok) or failed; either way `keys` keys are
        usable for `usable_seconds` more (0 and 0 when none are)."""
        ...


class NullMetrics:
    """Metrics that go nowhere: the default when none are configured (and in unit tests)."""

    def rpc_started(self, method: str) -> None:
        """Ignore."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """Ignore."""

    def decisions(self, outcomes: Mapping[str, int]) -> None:
        """Ignore."""

    def upstream_call(self, operation: str, outcome: str, seconds: float) -> None:
        """Ignore."""

    def rate_limit_wait(self, kind: str, seconds: float, *, refused: bool) -> None:
        """Ignore."""

    def audit_commit(self, kind: str, seconds: float, *, ok: bool) -> None:
        """Ignore."""

    def audit_group_commit(self, entries: int, wait_seconds: float, hold_seconds: float) -> None:
        """Ignore."""

    def audit_healthy(self, healthy: bool) -> None:
        """Ignore."""

    def policy_reload(self, *, ok: bool) -> None:
        """Ignore."""

    def purges_done(self, purged: int, cancelled: int, failed: int) -> None:
        """Ignore."""

    def purges_pending(self, stats: PurgeStats, now: datetime) -> None:
        """Ignore."""

    def cleanup_versions(self, results: Mapping[str, int]) -> None:
        """Ignore."""

    def cleanup_job_ended(self, state: str) -> None:
        """Ignore."""

    def webhook_attempt(self, kind: str, outcome: str, seconds: float) -> None:
        """Ignore."""

    def stream_limited(self, reason: str) -> None:
        """Ignore."""

    def token_checked(self, issuer: str, result: str) -> None:
        """Ignore."""

    def jwks_fetched(self, issuer: str, *, ok: bool, keys: int, usable_seconds: float) -> None:
        """Ignore."""
