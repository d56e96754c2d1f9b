"""The governed DeletePackageVersions use case: validate, check, decide per version, delete.

Steps, in order, for an authenticated principal:

1. Validate the request's fields (InvalidRequestError; nothing is read or sent).
2. Guardrail: the number of versions against the most generous limit of the principal's groups
   (VersionLimitError).
3. Read the package's current state from CodeArtifact (statuses, default display version,
   publication times when a policy uses them). Requested versions that do not exist are
   NOT_FOUND, and with expected_status those in another status are STATUS_MISMATCH; neither is
   evaluated nor sent.
4. Decide every remaining version with the policy engine in one batch.
5. Denied versions fail the whole call (PolicyDeniedError) unless allow_partial is set, in
   which case they are reported as NOT_ALLOWED. A dry run (validate_only) stops here and returns
   the plan; it fails exactly when the real call would.
6. Delete the allowed versions. Each upstream call carries, as expectedStatus, the status the
   versions were decided on, so a version whose status changed since it was decided is not
   deleted (MISMATCHED_STATUS) rather than deleted under a stale decision. When an attempt's
   answer was lost and the retry reports NOT_FOUND for a version that existed when it was
   decided, the lost attempt deleted it: it is reported deleted (see _LostAnswers).

One package at a time. Policies decide on facts about the package as a whole (its latest
version, its version count, what would remain after the request), which another call's delete
would change between this call's reading and its delete; expectedStatus guards only each
version's own status. So a real call runs steps 3 to 6 holding the package's lock
(PackageLocks: in-process, or a PostgreSQL advisory lock for a fleet), from reading the state
until its last chunk has returned: the facts it decided on stay true until it is done. It waits
for the lock no longer than leaves time for the read and one delete (twice
min_upstream_seconds before the deadline), else it fails with PackageBusyError having read,
recorded and sent nothing. A dry run takes no lock: it changes nothing, and what it reports is
a snapshot the real call will decide again, under the lock.

Chunk rule (also in the README). Allowed versions are grouped by decided status and split, in
request order, into calls of at most 100 that run with bounded parallelism. Then:

* If every call returns a result, the maps are merged: the call is OK.
* If no call returns a result (every attempted call raised), the call fails with the error of
  the first call, in request order, whose outcome is unknown (a timeout or a dropped
  connection: it may have deleted versions, and the caller must be told), else with the error
  of the first failed call, exactly as a single call would.
* If some calls return results and others raise, the call is OK so that no deletion is hidden:
  the merged maps hold every returned version, and every version of a call that raised, or that
  was not started, is in failed_versions with code SKIPPED and a message saying which case
  applies: "not deleted" (the call failed and CodeArtifact applied nothing), "outcome unknown"
  (it timed out or its connection dropped: it may have been applied), or "not attempted" (an
  earlier call failed, or the gateway began to shut down, so it started no new call).
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    DeadlineTooShortError,
    DeniedVersion,
    GatewayDrainingError,
    PkggovError,
    PolicyDeniedError,
    UpstreamError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    DeleteRequest,
    FailedVersion,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts
from pkggov_gateway.domain.validation import (
    CODEARTIFACT_MAX_VERSIONS_PER_CALL,
    RawDeleteRequest,
    validate_delete_request,
)
from pkggov_gateway.ports import (
    CodeArtifactPort,
    Metrics,
    NullMetrics,
    PackageLocks,
    PolicyEngine,
    PolicyView,
)

__all__ = ["CallJournal", "DeleteLimits", "DeletePackageVersions"]


class CallJournal(Protocol):
    """Where the use case reports to the call's record (service.governed_call.GovernedCall)."""

    def planned(self, plan: Mapping[str, PlannedVersion]) -> None:
        """Record the per-version decisions."""
        ...

    def check_quota(self, groups: Sequence[str], versions: int) -> None:
        """Dry run: raise QuotaExceededError when the real call would exceed the quota."""
        ...

    def before_forwarding(
        self, groups: Sequence[str], versions: Sequence[str], deadline: Deadline
    ) -> None:
        """Durably record the intent to delete `versions` before `deadline`; raise to stop
        (fail closed)."""
        ...

    def delivered(self, outcome: DeleteOutcome) -> None:
        """What CodeArtifact answered (request ids, versions inferred deleted)."""
        ...


@dataclass(frozen=True, slots=True)
class DeleteLimits:
    """The limits the use case enforces."""

    max_versions: int = 1000
    chunk_size: int = CODEARTIFACT_MAX_VERSIONS_PER_CALL
    chunk_parallelism: int = 4
    min_upstream_seconds: float = 0.2
    group_max_versions: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Chunk:
    versions: tuple[str, ...]
    expected_status: VersionStatus | None


@dataclass(slots=True)
class _ChunkResult:
    chunk: _Chunk
    outcome: DeleteOutcome | None = None
    error: Exception | None = None


class DeletePackageVersions:
    """Validates, checks and decides a request, then deletes through the CodeArtifact port."""

    def __init__(
        self,
        upstream: CodeArtifactPort,
        executor: Executor,
        limits: DeleteLimits,
        policy: PolicyEngine,
        *,
        locks: PackageLocks,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        self._upstream = upstream
        self._locks = locks
        self._executor = executor
        self._limits = limits
        self._policy = policy
        self._clock = clock
        self._metrics = metrics or NullMetrics()

    def validate(self, raw: RawDeleteRequest) -> DeleteRequest:
        """Check the request's fields; raise InvalidRequestError naming every bad field."""
        return validate_delete_request(raw, max_versions=self._limits.max_versions)

    def execute(
        self,
        raw: RawDeleteRequest,
        principal: Principal,
        deadline: Deadline,
        journal: CallJournal | None = None,
    ) -> DeleteOutcome:
        """Run the steps of the module docstring for `principal` within `deadline`.

        With a `journal`, the plan is recorded, and the intent is committed to it before
        anything is sent upstream (no intent, no deletion).
        """
        request = self.validate(raw)
        policy = self._policy.current()  # one policy set for the whole request
        self._check_version_limit(request, principal, policy)
        self._check_time(deadline)
        if request.validate_only:  # changes nothing, so needs no turn (see the docstring)
            return self._decide_and_delete(request, principal, policy, deadline, journal)
        # Wait for the package no longer than leaves time to read its state and delete.
        wait = Deadline(deadline.expires_at - 2 * self._limits.min_upstream_seconds)
        with self._locks.hold(request.package, wait):
            self._check_time(deadline)
            return self._decide_and_delete(request, principal, policy, deadline, journal)

    def _decide_and_delete(
        self,
        request: DeleteRequest,
        principal: Principal,
        policy: PolicyView,
        deadline: Deadline,
        journal: CallJournal | None,
    ) -> DeleteOutcome:
        """Steps 3 to 6: read the state, decide, record the intent, delete."""
        published_for = request.versions if policy.uses_published_time() else ()
        state = self._upstream.package_state(
            request.package, deadline, published_time_for=published_for
        )
        plan = self._decide(request, principal, state, policy)
        self._metrics.decisions(Counter(_DECISION_LABELS[p.outcome] for p in plan.values()))
        if journal is not None:
            journal.planned(plan)
        denied = [
            DeniedVersion(version, p.policy_ids, p.message)
            for version, p in plan.items()
            if p.outcome is PlanOutcome.DENIED
        ]
        if denied and not request.allow_partial:
            raise PolicyDeniedError(denied, len(request.versions))
        forward = [v for v, p in plan.items() if p.outcome is PlanOutcome.WOULD_DELETE]
        if journal is not None and forward:
            groups = policy.groups_of(principal.id)
            if request.validate_only:
                journal.check_quota(groups, len(forward))
            else:
                journal.before_forwarding(groups, forward, deadline)
        if request.validate_only:
            return DeleteOutcome(plan=plan)
        outcome = self._delete(request, plan, deadline, state.revisions)
        if journal is not None:
            journal.delivered(outcome)
        return outcome

    # --- steps ------------------------------------------------------------------------------

    def _check_version_limit(
        self, request: DeleteRequest, principal: Principal, policy: PolicyView
    ) -> None:
        groups = policy.groups_of(principal.id)
        limits = [
            self._limits.group_max_versions[g]
            for g in groups
            if g in self._limits.group_max_versions
        ]
        limit = max(limits) if limits else self._limits.max_versions
        if len(request.versions) > limit:
            raise VersionLimitError(len(request.versions), limit, groups)

    def _check_time(self, deadline: Deadline) -> None:
        if deadline.is_draining():
            raise GatewayDrainingError
        remaining = deadline.remaining()
        if remaining < self._limits.min_upstream_seconds:
            raise DeadlineTooShortError(remaining, self._limits.min_upstream_seconds)

    def _decide(
        self,
        request: DeleteRequest,
        principal: Principal,
        state: PackageState,
        policy: PolicyView,
    ) -> dict[str, PlannedVersion]:
        plan: dict[str, PlannedVersion] = {}
        facts: list[VersionFacts] = []
        for version in request.versions:
            status = state.statuses.get(version)
            latest = version == state.latest
            if status is None:
                plan[version] = PlannedVersion(
                    PlanOutcome.NOT_FOUND, "the version does not exist in the repository"
                )
            elif request.expected_status is not None and status is not request.expected_status:
                plan[version] = PlannedVersion(
                    PlanOutcome.STATUS_MISMATCH,
                    f"the version is {status}, not {request.expected_status}",
                    status=status,
                    is_latest=latest,
                )
            else:
                plan[version] = PlannedVersion(PlanOutcome.WOULD_DELETE, "", status=status)
                facts.append(VersionFacts(version, status, latest, state.published_at.get(version)))
        if not facts:
            return plan
        existing = sum(1 for v in request.versions if v in state.statuses)
        decisions = policy.decide(
            PolicyRequest(
                principal=principal,
                package=canonical_package(request.package),
                versions=tuple(facts),
                version_count=len(state.statuses),
                remaining_after_request=len(state.statuses) - existing,
                context=PolicyContext(
                    justification=request.justification,
                    dry_run=request.validate_only,
                    request_size=len(request.versions),
                    now=self._clock(),
                    peer=principal.peer,
                ),
            )
        )
        for fact, decision in zip(facts, decisions, strict=True):
            ids = ", ".join(decision.policy_ids)
            if decision.allowed:
                outcome, message = PlanOutcome.WOULD_DELETE, f"allowed by {ids}"
            elif decision.errors:
                outcome = PlanOutcome.DENIED
                message = f"denied: policy evaluation failed ({'; '.join(decision.errors)})"
            else:
                outcome = PlanOutcome.DENIED
                message = f"denied by {ids}" if ids else "denied: no policy permits it"
            plan[fact.version] = PlannedVersion(
                outcome, message, decision.policy_ids, fact.status, fact.is_latest
            )
        return plan

    def _delete(
        self,
        request: DeleteRequest,
        plan: Mapping[str, PlannedVersion],
        deadline: Deadline,
        revisions: Mapping[str, str],
    ) -> DeleteOutcome:
        refused = {
            v: _refusal(p) for v, p in plan.items() if p.outcome is not PlanOutcome.WOULD_DELETE
        }
        chunks = self._chunks(plan)
        if not chunks:
            return DeleteOutcome(failed=refused, plan=plan)
        settle = _LostAnswers(plan, revisions)
        if len(chunks) == 1:
            outcome = settle(self._call(request, chunks[0], deadline))
        else:
            results = self._run_chunks(request, chunks, deadline, settle)
            outcome = _merge(results, draining=deadline.is_draining())
        return DeleteOutcome(
            outcome.successful,
            {**refused, **outcome.failed},
            outcome.aws_request_ids,
            plan,
            inferred=outcome.inferred,
        )

    def _chunks(self, plan: Mapping[str, PlannedVersion]) -> list[_Chunk]:
        by_status: dict[VersionStatus | None, list[str]] = {}
        for version, planned in plan.items():
            if planned.outcome is PlanOutcome.WOULD_DELETE:
                by_status.setdefault(planned.status, []).append(version)
        size = self._limits.chunk_size
        return [
            _Chunk(tuple(versions[i : i + size]), status)
            for status, versions in by_status.items()
            for i in range(0, len(versions), size)
        ]

    def _call(self, request: DeleteRequest, chunk: _Chunk, deadline: Deadline) -> DeleteOutcome:
        self._check_time(deadline)
        return self._upstream.delete_package_versions(
            request.package, chunk.versions, chunk.expected_status, deadline
        )

    def _run_chunks(
        self,
        request: DeleteRequest,
        chunks: Sequence[_Chunk],
        deadline: Deadline,
        settle: Callable[[DeleteOutcome], DeleteOutcome],
    ) -> list[_ChunkResult]:
        results = [_ChunkResult(chunk) for chunk in chunks]
        pending = deque(results)
        lock = threading.Lock()
        failed = threading.Event()

        def lane() -> None:
            while not failed.is_set():
                with lock:
                    if not pending:
                        return
                    result = pending.popleft()
                try:
                    result.outcome = settle(self._call(request, result.chunk, deadline))
                except Exception as exc:  # noqa: BLE001 - any failure must not hide other chunks
                    result.error = exc
                    failed.set()

        lanes = min(self._limits.chunk_parallelism, len(chunks))
        futures: list[Future[None]] = [
            self._executor.submit(contextvars.copy_context().run, lane) for _ in range(lanes)
        ]
        for future in futures:
            future.result()
        return results


_DECISION_LABELS = {
    PlanOutcome.WOULD_DELETE: "allowed",
    PlanOutcome.DENIED: "denied",
    PlanOutcome.NOT_FOUND: "not_found",
    PlanOutcome.STATUS_MISMATCH: "status_mismatch",
}
"""Each per-version decision's label in metrics."""


def _refusal(planned: PlannedVersion) -> FailedVersion:
    """How a version that is not sent upstream is reported in failed_versions."""
    codes = {
        PlanOutcome.NOT_FOUND: VersionErrorCode.NOT_FOUND,
        PlanOutcome.STATUS_MISMATCH: VersionErrorCode.MISMATCHED_STATUS,
        PlanOutcome.DENIED: VersionErrorCode.NOT_ALLOWED,
    }
    return FailedVersion(codes[planned.outcome], planned.message)


@dataclass(frozen=True, slots=True)
class _LostAnswers:
    """Settles one upstream call's outcome after an attempt whose answer was lost.

    CodeArtifact's answer to the retry says NOT_FOUND for the versions the lost attempt
    deleted; passing that on would tell the caller (and the audit) that nothing was deleted,
    when the gateway's own call deleted them. So a version reported NOT_FOUND by such a call,
    which existed when the call was decided, is reported deleted, with the revision it had
    before the call and status Deleted, and listed in `inferred` with the reason.
    """

    plan: Mapping[str, PlannedVersion]
    revisions: Mapping[str, str]

    def __call__(self, outcome: DeleteOutcome) -> DeleteOutcome:
        if not outcome.after_lost_response:
            return outcome
        successful = dict(outcome.successful)
        failed = dict(outcome.failed)
        inferred: dict[str, str] = {}
        for version, failure in outcome.failed.items():
            planned = self.plan.get(version)
            if failure.code is not VersionErrorCode.NOT_FOUND or planned is None:
                continue
            if planned.status is None:  # it did not exist when the call was decided
                continue
            del failed[version]
            revision = self.revisions.get(version, "")
            successful[version] = SuccessfulVersion(revision, VersionStatus.DELETED)
            inferred[version] = (
                f"deleted by an earlier attempt whose answer was lost: it was {planned.status} "
                "when the call was decided, and the retry found it NOT_FOUND"
            )
        return DeleteOutcome(
            successful,
            failed,
            outcome.aws_request_ids,
            after_lost_response=True,
            inferred=inferred,
        )


def _merge(results: list[_ChunkResult], *, draining: bool) -> DeleteOutcome:
    returned = [r for r in results if r.outcome is not None]
    if not returned:
        errors = [r.error for r in results if r.error is not None]
        unknown = [e for e in errors if isinstance(e, UpstreamError) and e.outcome_unknown]
        raise (unknown or errors)[0]
    successful: dict[str, SuccessfulVersion] = {}
    failed: dict[str, FailedVersion] = {}
    request_ids: list[str] = []
    inferred: dict[str, str] = {}
    for index, result in enumerate(results, start=1):
        if result.outcome is not None:
            successful.update(result.outcome.successful)
            failed.update(result.outcome.failed)
            request_ids.extend(result.outcome.aws_request_ids)
            inferred.update(result.outcome.inferred)
            continue
        message = _skipped_message(index, len(results), result.error, draining=draining)
        for version in result.chunk.versions:
            failed[version] = FailedVersion(VersionErrorCode.SKIPPED, message)
    return DeleteOutcome(successful, failed, tuple(request_ids), inferred=inferred)


def _skipped_message(index: int, total: int, error: Exception | None, *, draining: bool) -> str:
    where = f"chunk {index} of {total}"
    if isinstance(error, GatewayDrainingError) or (error is None and draining):
        return f"not attempted: the gateway is shutting down, so {where} was not sent"
    if error is None:
        return f"not attempted: an earlier chunk failed, so {where} was not sent"
    detail = error.message if isinstance(error, PkggovError) else "internal gateway error"
    if isinstance(error, UpstreamError) and error.outcome_unknown:
        return (
            f"outcome unknown: {where} may have been applied ({detail}); "
            "check the version before retrying"
        )
    if isinstance(error, UpstreamError | DeadlineTooShortError):
        return f"not deleted: {where} failed ({detail})"
    return f"outcome unknown: {where} failed ({detail})"
