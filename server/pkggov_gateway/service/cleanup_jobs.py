"""The cleanup job runner every replica runs: applies plans, package by package.

A pass leases due jobs one after the other (a replica at a time has a job; its lease is renewed
before each call, and one that dies loses it when the lease ends) and runs each job's packages
from where the job stands. Each package's planned deletions go, in calls
of at most 100 versions, through the governed delete (`DeletePackageVersions.execute`): policy,
quotas, recovery windows, approvals, rate limits, the package's lock and the write-ahead
audit, as the plan's requester (with the identity they planned with), under the method
`CLEANUP_JOB_METHOD` with the job's ids in the recorded request. What the plan said:

* allowed (to delete or archive): deleted with allow_partial, so a version policy now denies
  is reported, not fatal;
* needing approval: sent on their own, so the call records a deletion request (its id is in the
  job's results) that approvers vote on and the requester executes;
* denied: not sent.

Under the lock, before anything is decided, each call checks the plan against the state it
reads (`PlanMatch`): a version whose revision or status changed, that is gone, or that the
rule would now keep (ranked again on the current versions; max_deletions was settled by the
plan) is not sent: PLAN_CHANGED.

Nothing twice: each call's request_id is derived from the job, the package and the chunk
(`step_request_id`). A job resumed after a crash repeats the calls of the package it was in;
the gateway answers those already made from the audit record (AIP-155) instead of deleting
again, and a call whose intent was written but whose outcome was not waits (REQUEST_IN_PROGRESS,
retried later) until reconciliation has settled it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from pkggov_gateway.domain.audit import AuditEventRecord, EntryKind
from pkggov_gateway.domain.cleanup import (
    CLEANUP_JOB_METHOD,
    PLAN_ALLOWED,
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    JobState,
    PackagePlan,
    PackageResult,
    PlannedEntry,
    VersionResult,
    principal_from_json,
    step_request_id,
)
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    ApprovalRequiredError,
    AuditUnavailableError,
    CleanupError,
    PkggovError,
    PolicyDeniedError,
    UpstreamNotFoundError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageState,
    PlanOutcome,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.records import (
    OutcomeFacts,
    RecordedFailure,
    RecordedStatus,
    request_json,
    response_json,
)
from pkggov_gateway.domain.retention import PackageVersions, RetentionRule, evaluate
from pkggov_gateway.domain.validation import CODEARTIFACT_MAX_VERSIONS_PER_CALL, RawDeleteRequest
from pkggov_gateway.ports import AuditStore, CleanupStore, CodeArtifactPort, Metrics, NullMetrics
from pkggov_gateway.service.audit import Auditor
from pkggov_gateway.service.cleanup_plans import CleanupDesk
from pkggov_gateway.service.delete_versions import DeletePackageVersions

__all__ = ["CleanupRunner", "JobSettings", "PlanMatch"]

log = structlog.get_logger("pkggov.cleanup")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class JobSettings:
    """How the runner leases, bounds and retries (cleanup.* settings)."""

    lease_seconds: float = 600.0
    call_deadline_seconds: float = 60.0
    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 20
    """Failed tries of one package before the job fails (each retried with backoff)."""
    record_grace_seconds: float = 60.0
    """How long a job may wait for its ApplyCleanup call's outcome to be recorded."""
    plan_retention_seconds: float = 30 * 86_400.0
    """How long after it expired a plan is kept (a finished job's report reads it), then
    pruned (unless an unfinished job applies it)."""


class _Retry(Exception):  # noqa: N818 - control flow: the package is tried again later
    """A package could not be finished now (the store, CodeArtifact, the lock): retry it."""


class PlanMatch:
    """A cleanup call's check of its plan on the state read under the package's lock (a
    `PlanCheck` of the delete use case); one per package, its publication times shared."""

    def __init__(
        self,
        rule: RetentionRule,
        package: PackagePlan,
        upstream: CodeArtifactPort,
        deadline: Deadline,
        clock: Callable[[], datetime],
    ) -> None:
        # max_deletions was settled by the plan; the deletions of this job's own earlier calls
        # must not let a later call delete more.
        self._rule = replace(rule, max_deletions=None)
        self._package = package
        self._planned = {e.version: e for e in package.deletions()}
        self._seen = {e.version: (e.status, e.revision) for e in package.entries}
        self._times: dict[str, datetime | None] = {
            e.version: e.published_at for e in package.entries if e.published_at is not None
        }
        self._upstream = upstream
        self._deadline = deadline
        self._clock = clock

    def _as_planned(self, state: PackageState) -> bool:
        """Whether `state` is the plan's, but for planned deletions that are gone (this job's
        earlier calls, or anyone's). Then the rule decides as it did: the deletions were all
        ranked below every version a count keeps, so their absence moves no other version into
        a count, and no age changes; re-evaluating (a whole package, at each call of 100
        versions) would only find what the plan says."""
        seen = self._seen
        if len(state.statuses) > len(seen):
            return False  # a version was published since
        for version, status in state.statuses.items():
            planned = seen.get(version)
            if planned is None or planned[0] is not status:
                return False
            revision = state.revisions.get(version)
            if revision is not None and planned[1] and revision != planned[1]:
                return False
        gone = seen.keys() - state.statuses.keys()
        return gone <= self._planned.keys() and state.latest == self._package.latest

    def _published_at(self, version: str) -> datetime | None:
        if version not in self._times:
            try:
                self._times[version] = self._upstream.published_time(
                    self._package.package, version, self._deadline
                )
            except UpstreamNotFoundError:
                self._times[version] = None
        return self._times[version]

    def __call__(self, state: PackageState) -> Mapping[str, str]:
        """The planned deletions that no longer match, each with why."""
        if self._as_planned(state):
            return {}
        listed = [v for v in self._package.published_order if v in state.statuses]
        known = set(listed)
        newer = [v for v in state.statuses if v not in known]  # published since: the newest
        decisions = evaluate(
            self._rule,
            PackageVersions(
                self._package.package.format, state.statuses, newer + listed, state.latest
            ),
            self._clock(),
            self._published_at,
        )
        now_decided = {d.version: d for d in decisions}
        changed: dict[str, str] = {}
        for version, entry in self._planned.items():
            status = state.statuses.get(version)
            revision = state.revisions.get(version)
            if status is None:
                changed[version] = "it no longer exists"
            elif revision is not None and entry.revision and revision != entry.revision:
                changed[version] = f"its revision changed from {entry.revision} to {revision}"
            elif status is not entry.status:
                changed[version] = f"its status changed from {entry.status} to {status}"
            elif not now_decided[version].delete:
                decided = now_decided[version]
                changed[version] = f"the rule now keeps it ({decided.clause}: {decided.reason})"
        return changed


class CleanupRunner:
    """Runs cleanup jobs (see the module docstring)."""

    def __init__(
        self,
        auditor: Auditor,
        store: CleanupStore,
        desk: CleanupDesk,
        *,
        delete: DeletePackageVersions,
        upstream: CodeArtifactPort,
        settings: JobSettings,
        status_of: Callable[[BaseException], RecordedStatus],
        drain: DrainSignal | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or NullMetrics()
        self._auditor = auditor
        self._store = store
        self._desk = desk
        self._delete = delete
        self._upstream = upstream
        self._settings = settings
        self._status_of = status_of
        self._drain = drain
        self._clock = clock

    def run_once(self, most: int = 100) -> bool:
        """Prune plans long expired; then lease jobs one after the other, each run as far as
        it goes, while there are due ones (at most `most`, and not while draining): whether
        there was one."""
        now = self._clock()
        retention = timedelta(seconds=self._settings.plan_retention_seconds)
        pruned = self._store.prune_plans(now - retention, 100)
        if pruned:
            log.info("cleanup.plans_pruned", plans=pruned)
        ran = 0
        while ran < most and not (self._drain is not None and self._drain.draining):
            if not self._run_next():
                break
            ran += 1
        return ran > 0

    def _run_next(self) -> bool:
        """Lease the next due job and run it; whether there was one."""
        job = self._store.claim_job(self._clock(), self._lease_end())
        if job is None:
            return False
        log.info("cleanup.job_leased", job_id=job.job_id, next_seq=job.next_seq)
        try:
            self._run(job)
        except _Retry as retry:
            self._retry(job, str(retry))
        except Exception as error:
            log.exception("cleanup.job_error", job_id=job.job_id)
            self._retry(job, f"internal error: {error!r}")
        return True

    def _finish(self, job_id: str, state: JobState, now: datetime, error: str = "") -> None:
        self._store.finish_job(job_id, state, now, error)
        self._metrics.cleanup_job_ended(state.value)

    def _lease_end(self) -> datetime:
        return self._clock() + timedelta(seconds=self._settings.lease_seconds)

    def _retry(self, job: CleanupJob, error: str) -> None:
        attempts = job.attempts + 1
        now = self._clock()
        if attempts >= self._settings.max_attempts:
            log.error("cleanup.job_failed", job_id=job.job_id, error=error, attempts=attempts)
            self._record_unfinished(job)
            self._finish(job.job_id, JobState.FAILED, now, f"{error} ({attempts} tries)")
            return
        delay = min(
            self._settings.retry_seconds * 2 ** (attempts - 1), self._settings.retry_max_seconds
        )
        log.warning("cleanup.job_retry", job_id=job.job_id, error=error, in_seconds=delay)
        self._store.retry_job(
            job.job_id, retry_at=now + timedelta(seconds=delay), error=error, now=now
        )

    def _run(self, job: CleanupJob) -> None:
        plan = self._store.cleanup_plan(job.plan_id)
        now = self._clock()
        if plan is None or plan.plan_hash != job.plan_hash:
            self._finish(job.job_id, JobState.FAILED, now, "its plan is gone or changed")
            return
        if plan.requester_id != job.requester_id:
            self._finish(
                job.job_id, JobState.FAILED, now, "its requester is not its plan's requester"
            )
            return
        if not _job_recorded(self._auditor.store, job):
            if now - job.created_at > timedelta(seconds=self._settings.record_grace_seconds):
                self._finish(
                    job.job_id,
                    JobState.FAILED,
                    now,
                    "its ApplyCleanup call was never recorded in the audit, so it does not run",
                )
                return
            raise _Retry("waiting for its ApplyCleanup call to be recorded")
        try:
            packages = self._desk.verified_packages(plan)
        except CleanupError as error:
            self._finish(job.job_id, JobState.FAILED, now, error.message)
            return
        principal = principal_from_json(job.requester)
        current: CleanupJob | None = job
        for seq in range(job.next_seq, len(packages)):
            current = self._store.cleanup_job(job.job_id)
            if current is None:
                return
            if current.cancel_requested:
                self._finish(job.job_id, JobState.CANCELLED, self._clock())
                log.info("cleanup.job_cancelled", job_id=job.job_id, at_seq=seq)
                return
            if self._drain is not None and self._drain.draining:
                raise _Retry("the replica is shutting down")
            result = self._apply_package(current, plan, seq, packages[seq], principal)
            counts = Counter(v.result.value for v in result.versions)
            self._metrics.cleanup_versions(counts)
            current = self._store.record_step(
                job.job_id, result, counts=counts, now=self._clock(), lease_until=self._lease_end()
            )
            if current is None:  # the lease was lost: another replica has the job now
                log.warning("cleanup.lease_lost", job_id=job.job_id, at_seq=seq)
                return
        self._finish(job.job_id, JobState.SUCCEEDED, self._clock())
        log.info("cleanup.job_done", job_id=job.job_id, counts=dict((current or job).counts))

    def _apply_package(
        self,
        job: CleanupJob,
        plan: CleanupPlan,
        seq: int,
        package: PackagePlan,
        principal: Principal,
    ) -> PackageResult:
        deletions = package.deletions()
        results: dict[str, VersionResult] = {}
        for entry in deletions:
            if entry.policy not in PLAN_ALLOWED and entry.policy is not PlanOutcome.NEEDS_APPROVAL:
                results[entry.version] = VersionResult(
                    entry.version,
                    CleanupResult.DENIED,
                    "denied when planned"
                    + (f" ({', '.join(entry.policy_ids)})" if entry.policy_ids else ""),
                )
        events: list[str] = []
        request_ids: list[str] = []
        deadline = Deadline.after(self._settings.call_deadline_seconds, self._drain)
        match = PlanMatch(plan.rule, package, self._upstream, deadline, self._clock)
        for step, chunk in _steps(job, plan, seq, package):
            # The lease covers the call: a package of many calls keeps its job (a replica that
            # lost it stops here; the one that has it repeats no deletion, by request_id).
            if not self._store.renew_job(job.job_id, self._lease_end()):
                raise _Retry(f"{step.where}: the job's lease was lost")
            event_id, found, request_id = self._call(step, chunk, principal, match)
            events.append(event_id)
            results.update(found)
            if request_id:
                request_ids.append(request_id)
        return PackageResult(
            seq,
            package.package,
            tuple(results[e.version] for e in deletions if e.version in results),
            tuple(events),
            ", ".join(dict.fromkeys(request_ids)),
        )

    def _record_unfinished(self, job: CleanupJob) -> None:
        """A job fails at the package it is in: record that package's results as its calls'
        audit events say (what a call answered, or what reconciliation found it did; a version
        neither says anything of is FAILED), so that nothing deleted is reported undone."""
        current = self._store.cleanup_job(job.job_id)
        plan = self._store.cleanup_plan(job.plan_id)
        if current is None or plan is None:
            return
        try:
            packages = self._desk.verified_packages(plan)
        except CleanupError:
            return
        seq = current.next_seq
        if seq >= len(packages):
            return
        package = packages[seq]
        requester = principal_from_json(job.requester).id
        found: dict[str, VersionResult] = {}
        events: list[str] = []
        for step, _ in _steps(job, plan, seq, package):
            event = self._auditor.store.event_by_request_id(requester, step.request_id)
            if event is None:
                continue
            events.append(event.event_id)
            response = OutcomeFacts.of(event).response if event.entry(EntryKind.OUTCOME) else None
            found.update(_parse_results((response or {}).get("cleanup_results") or []))
            for version, how in _reconciled(event).items():
                if how in _EARLIER and version not in found:
                    found[version] = VersionResult(
                        version, _EARLIER[how], f"{how} (settled by reconciliation)"
                    )
        result = PackageResult(
            seq,
            package.package,
            tuple(
                found.get(e.version)
                or VersionResult(
                    e.version,
                    CleanupResult.FAILED,
                    "not done: the job failed at this package (see its audit events)",
                )
                for e in package.deletions()
            ),
            tuple(events),
        )
        counts = Counter(v.result.value for v in result.versions)
        self._metrics.cleanup_versions(counts)
        self._store.record_step(
            job.job_id, result, counts=counts, now=self._clock(), lease_until=self._lease_end()
        )

    def _call(
        self,
        step: _Step,
        chunk: Sequence[PlannedEntry],
        principal: Principal,
        match: PlanMatch,
    ) -> tuple[str, dict[str, VersionResult], str]:
        """One governed delete of `chunk`: (its audit event, each version's result, the
        deletion request it recorded, if any)."""
        versions = [e.version for e in chunk]
        call = self._auditor.begin(CLEANUP_JOB_METHOD, str(uuid.uuid4()), principal.peer)
        call.identified(principal)
        call.received(step.request(versions))
        try:
            recorded = call.replayed()
        except RecordedFailure as failure:  # answered before: the same answer
            call.failed(failure, failure.status)
            return call.event_id, _from_status(versions, failure.status), _request_of(failure)
        except PkggovError as error:  # in progress (settled by reconciliation), store down
            raise _Retry(f"{step.where}: {error.message}") from error
        if recorded is not None:
            call.succeeded(None)
            replayed = recorded.get("cleanup_results") or []
            return call.event_id, _parse_results(replayed), str(recorded.get("request") or "")
        # A call of this step that a crash cut short, settled by reconciliation since: what it
        # did to each version (its request_id is rerun; the versions it deleted are gone).
        earlier = _reconciled(call.previous)
        raw = RawDeleteRequest(
            domain=step.package.package.domain,
            repository=step.package.package.repository,
            format=step.package.package.format,
            package=step.package.package.package,
            versions=versions,
            namespace=step.package.package.namespace or "",
            domain_owner=step.package.package.domain_owner or "",
            justification=step.plan.justification,
            allow_partial=step.part == "delete",
            purge_now=step.plan.purge_now,
        )
        try:
            outcome = self._delete.execute(
                raw,
                principal,
                Deadline.after(self._settings.call_deadline_seconds, self._drain),
                call,
                plan_check=match,
            )
        except (ApprovalRequiredError, PolicyDeniedError, VersionLimitError) as error:
            status = self._status_of(error)
            found = _from_status(versions, status)
            # The call refused as a whole, but what it decided per version stands: a version
            # that changed since planned, or that policy denied, is not awaiting approval.
            for version, planned in call.plan.items():
                result = _FAILED_AS.get(planned.outcome)
                if result is not None and version in found:
                    found[version] = VersionResult(version, result, planned.message)
            request_id = error.request_id if isinstance(error, ApprovalRequiredError) else ""
            call.failed(error, status)
            return call.event_id, found, request_id or ""
        except Exception as error:
            status = self._status_of(error)
            # After an intent the store retries the outcome; without one nothing was sent.
            with contextlib.suppress(AuditUnavailableError):
                call.failed(error, status)
            raise _Retry(f"{step.where}: {status.message}") from error
        found = _from_outcome(outcome)
        found.update(_by_earlier(earlier, found))
        call.succeeded(
            {
                **response_json(outcome),
                "cleanup_results": [r.to_json() for r in found.values()],
            }
        )
        return call.event_id, found, ""


def _steps(
    job: CleanupJob, plan: CleanupPlan, seq: int, package: PackagePlan
) -> list[tuple[_Step, list[PlannedEntry]]]:
    """A package's calls, in order: its allowed deletions, then those needing approval, each
    in chunks of at most 100, each with its step's request_id."""
    deletions = package.deletions()
    parts = (
        ("delete", [e for e in deletions if e.policy in PLAN_ALLOWED]),
        ("approval", [e for e in deletions if e.policy is PlanOutcome.NEEDS_APPROVAL]),
    )
    size = CODEARTIFACT_MAX_VERSIONS_PER_CALL
    return [
        (
            _Step(job, plan, package, part, step_request_id(job.job_id, seq, part, index)),
            entries[index : index + size],
        )
        for part, entries in parts
        for index in range(0, len(entries), size)
    ]


@dataclass(frozen=True, slots=True)
class _Step:
    """One call of a job: which job, plan, package and part, and its request_id."""

    job: CleanupJob
    plan: CleanupPlan
    package: PackagePlan
    part: str
    request_id: str

    @property
    def where(self) -> str:
        return f"{self.package.package.package} ({self.part})"

    def request(self, versions: Sequence[str]) -> dict[str, Any]:
        """What the call's audit event records as its request."""
        return request_json(
            self.package.package,
            versions,
            justification=self.plan.justification,
            allow_partial=self.part == "delete",
            purge_now=self.plan.purge_now,
            request_id=self.request_id,
            cleanup_job_id=self.job.job_id,
            cleanup_plan_id=self.plan.plan_id,
        )


def _reconciled(event: AuditEventRecord | None) -> Mapping[str, str]:
    """What the reconciliation of an earlier call found it did to each version ("deleted",
    "archived", "still_present", "unknown"); nothing when there was none."""
    entry = event.entry(EntryKind.RECONCILIATION) if event is not None else None
    versions = entry.body.get("versions") if entry is not None else None
    return (
        {str(v): str(how) for v, how in versions.items()} if isinstance(versions, Mapping) else {}
    )


_EARLIER = {"deleted": CleanupResult.DELETED, "archived": CleanupResult.ARCHIVED}


def _by_earlier(
    earlier: Mapping[str, str], found: Mapping[str, VersionResult]
) -> dict[str, VersionResult]:
    """The versions an earlier, reconciled call of the step deleted (or archived), which this
    call therefore found gone (or changed): theirs is the earlier call's result."""
    settled: dict[str, VersionResult] = {}
    for version, how in earlier.items():
        result = _EARLIER.get(how)
        current = found.get(version)
        if (
            result is not None
            and current is not None
            and current.result is CleanupResult.PLAN_CHANGED
        ):
            settled[version] = VersionResult(
                version,
                result,
                f"{how} by an earlier attempt of this call, whose answer a crash lost "
                "(settled by reconciliation)",
            )
    return settled


def _job_recorded(audit: AuditStore, job: CleanupJob) -> bool:
    """Whether the ApplyCleanup call that created `job` recorded it as it is: its id, plan,
    plan hash, and the principal who applied it (a job row changed in the database, to run
    another's plan or as another, is not run)."""
    event = audit.event(job.event_id)
    if event is None:
        return False
    expected = {"id": job.job_id, "plan_id": job.plan_id, "plan_hash": job.plan_hash}
    for entry in event.entries:
        recorded = entry.body.get("cleanup_job")
        if (
            isinstance(recorded, Mapping)
            and {k: recorded.get(k) for k in expected} == expected
            and _principal_id(entry.body) == job.requester_id
        ):
            return True
    return False


def _principal_id(body: Mapping[str, Any]) -> str | None:
    """The id of the principal an entry names."""
    principal = body.get("principal")
    return str(principal.get("id")) if isinstance(principal, Mapping) else None


_FAILED_AS = {
    PlanOutcome.PLAN_CHANGED: CleanupResult.PLAN_CHANGED,
    PlanOutcome.DENIED: CleanupResult.DENIED,
    PlanOutcome.NOT_FOUND: CleanupResult.PLAN_CHANGED,
    PlanOutcome.STATUS_MISMATCH: CleanupResult.PLAN_CHANGED,
}


def _from_outcome(outcome: DeleteOutcome) -> dict[str, VersionResult]:
    found: dict[str, VersionResult] = {}
    for version, ok in outcome.successful.items():
        archived = ok.status is VersionStatus.ARCHIVED
        found[version] = VersionResult(
            version,
            CleanupResult.ARCHIVED if archived else CleanupResult.DELETED,
            "archived under the recovery window" if archived else "deleted",
            ok.purge_at,
        )
    for version, failure in outcome.failed.items():
        planned = outcome.plan.get(version)
        result = _FAILED_AS.get(planned.outcome) if planned is not None else None
        if result is None and failure.code in (
            VersionErrorCode.MISMATCHED_STATUS,
            VersionErrorCode.MISMATCHED_REVISION,
            VersionErrorCode.NOT_FOUND,
        ):
            result = CleanupResult.PLAN_CHANGED
        found[version] = VersionResult(version, result or CleanupResult.FAILED, failure.message)
    return found


def _from_status(versions: Sequence[str], status: RecordedStatus) -> dict[str, VersionResult]:
    """Each version's result when the whole call ended in `status` (a final refusal)."""
    result = {
        "APPROVAL_REQUIRED": CleanupResult.AWAITING_APPROVAL,
        "POLICY_DENIED": CleanupResult.DENIED,
        "PLAN_CHANGED": CleanupResult.PLAN_CHANGED,
    }.get(status.reason, CleanupResult.FAILED)
    return {v: VersionResult(v, result, status.message) for v in versions}


def _request_of(failure: RecordedFailure) -> str:
    """The deletion request a recorded APPROVAL_REQUIRED named (in its message)."""
    if failure.status.reason != "APPROVAL_REQUIRED":
        return ""
    found = _UUID.search(failure.status.message)
    return found.group() if found else ""


def _parse_results(raw: Any) -> dict[str, VersionResult]:
    return {
        r.version: r
        for r in (VersionResult.from_json(item) for item in raw if isinstance(item, Mapping))
    }
