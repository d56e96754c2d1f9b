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
import functools
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pkggov_gateway.domain.approvals import ApprovalEffects, DeletionRequestRecord, RequestGuard
from pkggov_gateway.domain.audit import StoredEntry
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    ApprovalRequiredError,
    DeadlineTooShortError,
    DeniedVersion,
    GatewayDrainingError,
    PkggovError,
    PlanChangedError,
    PolicyDeniedError,
    UpstreamError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    FORWARDED,
    DeleteOutcome,
    DeleteRequest,
    FailedVersion,
    PackageRef,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.policy import (
    PolicyContext,
    PolicyRequest,
    VersionDecision,
    VersionFacts,
)
from pkggov_gateway.domain.recovery import (
    PendingPurge,
    PurgeClosure,
    PurgeEffects,
    PurgeState,
    RecoveryWindows,
)
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
    PurgeStore,
)

__all__ = [
    "NOT_FOUND_PLAN",
    "CallJournal",
    "Chunk",
    "ChunkResult",
    "DeleteLimits",
    "DeletePackageVersions",
    "GovernedChange",
    "PlanCheck",
    "archive_versions",
    "decided",
    "denied_in",
    "merge_chunks",
    "refusal_code",
]


class CallJournal(Protocol):
    """Where the use case reports to the call's record (service.governed_call.GovernedCall)."""

    def planned(self, plan: Mapping[str, PlannedVersion]) -> None:
        """Record the per-version decisions."""
        ...

    def check_quota(self, groups: Sequence[str], versions: int) -> None:
        """Dry run: raise QuotaExceededError when the real call would exceed the quota."""
        ...

    @property
    def event_id(self) -> str:
        """The call's audit event id (an archive's pending purges name it)."""
        ...

    def before_forwarding(
        self,
        groups: Sequence[str],
        versions: Sequence[str],
        deadline: Deadline,
        *,
        counts_quota: bool = True,
    ) -> None:
        """Durably record the intent to send `versions` upstream before `deadline` (counted
        against the deletion quota unless not `counts_quota`); raise to stop (fail closed)."""
        ...

    def will_apply(self, effects: PurgeEffects) -> None:
        """Changes to pending purges that commit with the call's outcome."""
        ...

    def hold_until_recorded(self, held: AbstractContextManager[None]) -> None:
        """Enter `held` (the package's lock) and leave it once the outcome is recorded."""
        ...

    def delivered(self, outcome: DeleteOutcome) -> None:
        """What CodeArtifact answered (request ids, versions inferred deleted)."""
        ...

    @property
    def intent(self) -> StoredEntry | None:
        """The intent, once committed (None: nothing was sent)."""
        ...

    def will_approve(self, effects: ApprovalEffects, **recorded: Any) -> None:
        """Changes to deletion requests that commit with the outcome, which records
        `recorded` too."""
        ...

    def on_intent(self, effects: ApprovalEffects, guard: RequestGuard) -> None:
        """Changes to a deletion request that the intent commits, checked by `guard`."""
        ...

    def received(self, request: Mapping[str, Any]) -> None:
        """What the call asks, as recorded (the proto's JSON with its field names)."""
        ...

    def commit(self, effects: ApprovalEffects, guard: RequestGuard, **recorded: Any) -> None:
        """Commit an intent making `effects` now, checked by `guard` atomically with it."""
        ...


class ApprovedRun(Protocol):
    """An approved deletion request being executed (service.approvals)."""

    def load(self) -> DeletionRequestRecord:
        """The request as it is now, checked again: still pending, not expired, untampered."""
        ...

    def claim(self, record: DeletionRequestRecord, journal: CallJournal) -> None:
        """Make the intent move the request from pending to executing, refused atomically
        if it is no longer pending (a rejection or cancellation won the race)."""
        ...

    def executed(
        self,
        record: DeletionRequestRecord,
        outcome: DeleteOutcome,
        journal: CallJournal,
        by: Principal,
    ) -> None:
        """The plan ran (executed by `by`): the outcome closes the request."""
        ...


class PlanCheck(Protocol):
    """What a cleanup job checks under the package's lock before its deletion is decided."""

    def __call__(self, state: PackageState) -> Mapping[str, str]:
        """The requested versions that no longer match the plan (changed since it was made,
        or kept by its rule now), each with why: they are not sent (PLAN_CHANGED)."""
        ...


class RequestOpener(Protocol):
    """Where a deletion that needs approval becomes a deletion request (service.approvals)."""

    def open_request(
        self,
        principal: Principal,
        request: DeleteRequest,
        state: PackageState,
        plan: Mapping[str, PlannedVersion],
        journal: CallJournal | None,
    ) -> ApprovalRequiredError:
        """Record the request with the call's outcome (not for a dry run); return the error
        the call fails with."""
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
class Chunk:
    versions: tuple[str, ...]
    expected_status: VersionStatus | None
    archive: bool = False
    """Archive (UpdatePackageVersionsStatus, pinned to the decided revisions), not delete."""


@dataclass(slots=True)
class ChunkResult:
    chunk: Chunk
    outcome: DeleteOutcome | None = None
    error: Exception | None = None


class GovernedChange:
    """What every governed change of a package's versions shares (a delete, a restore):
    validation, the version limit, the time check and the package's turn; `_run` does the
    rest (steps 3 to 6 of the module docstring) holding the package's lock."""

    def __init__(
        self,
        upstream: CodeArtifactPort,
        limits: DeleteLimits,
        policy: PolicyEngine,
        *,
        locks: PackageLocks,
        purges: PurgeStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        self._upstream = upstream
        self._locks = locks
        self._purges = purges
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
        *,
        approved: ApprovedRun | None = None,
        plan_check: PlanCheck | None = None,
    ) -> DeleteOutcome:
        """Run the steps of the module docstring for `principal` within `deadline`
        (`approved`: executing an approved deletion request's plan; `plan_check`: a cleanup
        job's check of its plan, on the state read under the lock).

        With a `journal`, the plan is recorded, and the intent is committed to it before
        anything is sent upstream (no intent, no deletion).
        """
        request = self.validate(raw)
        policy = self._policy.current()  # one policy set for the whole request
        self._check_version_limit(request, principal, policy)
        self._check_time(deadline)
        if request.validate_only:  # changes nothing, so needs no turn (see the docstring)
            return self._run(
                request, principal, policy, deadline, journal, approved=approved, check=plan_check
            )
        # Wait for the package no longer than leaves time to read its state and delete.
        wait = Deadline(deadline.expires_at - 2 * self._limits.min_upstream_seconds)
        held = self._locks.hold(request.package, wait)
        if journal is None:
            with held:
                self._check_time(deadline)
                return self._run(
                    request,
                    principal,
                    policy,
                    deadline,
                    journal,
                    approved=approved,
                    check=plan_check,
                )
        # Held until the outcome is recorded: it changes pending purges, which the purge
        # worker (and the next call) must see as this call left them.
        journal.hold_until_recorded(held)
        self._check_time(deadline)
        return self._run(
            request, principal, policy, deadline, journal, approved=approved, check=plan_check
        )

    def _run(
        self,
        request: DeleteRequest,
        principal: Principal,
        policy: PolicyView,
        deadline: Deadline,
        journal: CallJournal | None,
        *,
        approved: ApprovedRun | None = None,
        check: PlanCheck | None = None,
    ) -> DeleteOutcome:
        raise NotImplementedError

    def _check_version_limit(
        self, request: DeleteRequest, principal: Principal, policy: PolicyView
    ) -> None:
        groups = policy.groups_for(principal)
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


class DeletePackageVersions(GovernedChange):
    """Validates, checks and decides a request, then deletes (or archives, under a recovery
    window) through the CodeArtifact port."""

    def __init__(
        self,
        upstream: CodeArtifactPort,
        executor: Executor,
        limits: DeleteLimits,
        policy: PolicyEngine,
        *,
        locks: PackageLocks,
        windows: RecoveryWindows | None = None,
        purges: PurgeStore | None = None,
        approvals: RequestOpener | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            upstream, limits, policy, locks=locks, purges=purges, clock=clock, metrics=metrics
        )
        self._executor = executor
        self._windows = windows or RecoveryWindows()
        self._approvals = approvals

    def _run(
        self,
        request: DeleteRequest,
        principal: Principal,
        policy: PolicyView,
        deadline: Deadline,
        journal: CallJournal | None,
        *,
        approved: ApprovedRun | None = None,
        check: PlanCheck | None = None,
    ) -> DeleteOutcome:
        """Steps 3 to 6: read the state, decide, record the intent, delete (or archive)."""
        record = approved.load() if approved is not None else None
        published_for = request.versions if policy.uses_published_time() else ()
        state = self._upstream.package_state(
            request.package, deadline, published_time_for=published_for
        )
        if record is not None:
            changes = record.plan.changes(state)
            if changes:
                raise PlanChangedError(record.request_id, changes)
        recovery = _Recovery(
            self._windows.window_for(request.package), self._pending(request, state)
        )
        pending = recovery.pending
        changed = check(state) if check is not None else {}
        plan = self._decide(
            request, principal, state, policy, recovery, record=record, changed=changed
        )
        self._metrics.decisions(Counter(DECISION_LABELS[p.outcome] for p in plan.values()))
        if journal is not None:
            journal.planned(plan)
        denied = denied_in(plan)
        if denied and not request.allow_partial:
            raise PolicyDeniedError(denied, len(request.versions))
        waiting = [p for p in plan.values() if p.outcome is PlanOutcome.NEEDS_APPROVAL]
        # A partial dry run shows the whole plan, as it does for denied versions; otherwise
        # a dry run fails as the real call would.
        if waiting and not (request.validate_only and request.allow_partial):
            ids = tuple(dict.fromkeys(i for p in waiting for i in p.policy_ids))
            if record is not None:  # executed before its approvals satisfy the policy
                raise ApprovalRequiredError(record.request_id, ids, record.plan_hash, len(waiting))
            if self._approvals is None:
                raise PolicyDeniedError(denied_in(plan, PlanOutcome.NEEDS_APPROVAL), len(plan))
            raise self._approvals.open_request(principal, request, state, plan, journal)
        forward = [v for v, p in plan.items() if p.outcome in FORWARDED]
        if journal is not None and forward and record is not None and approved is not None:
            approved.claim(record, journal)
        if journal is not None and forward:
            groups = policy.groups_for(principal)
            if request.validate_only:
                journal.check_quota(groups, len(forward))
            else:
                journal.before_forwarding(groups, forward, deadline)
        if request.validate_only:
            return DeleteOutcome(plan=plan)
        outcome = self._delete(request, plan, deadline, state.revisions)
        if journal is not None:
            journal.delivered(outcome)
            if record is not None and approved is not None:
                approved.executed(record, outcome, journal, principal)
            if recovery.window is None and not pending:
                return outcome  # nothing archived, no pending purge closed
            effects = _effects(
                _Archived(request.package, principal, journal.event_id, self._clock()),
                plan,
                outcome,
                pending,
            )
            if effects:
                journal.will_apply(effects)
        return outcome

    def plan_on(
        self,
        request: DeleteRequest,
        principal: Principal,
        state: PackageState,
        policy: PolicyView,
    ) -> dict[str, PlannedVersion]:
        """Decide `request` on `state`, read by the caller, exactly as its dry run decides it
        (a cleanup plan's policy outcomes): the same steps, without reading CodeArtifact."""
        recovery = _Recovery(
            self._windows.window_for(request.package), self._pending(request, state)
        )
        return self._decide(request, principal, state, policy, recovery)

    def _pending(self, request: DeleteRequest, state: PackageState) -> dict[str, PendingPurge]:
        """The requested versions' pending purges: only an Archived version can have one."""
        archived = [v for v in request.versions if state.statuses.get(v) is VersionStatus.ARCHIVED]
        if not archived or self._purges is None:
            return {}
        return self._purges.pending_for(request.package, archived)

    # --- steps ------------------------------------------------------------------------------

    def _decide(
        self,
        request: DeleteRequest,
        principal: Principal,
        state: PackageState,
        policy: PolicyView,
        recovery: _Recovery,
        *,
        record: DeletionRequestRecord | None = None,
        changed: Mapping[str, str] | None = None,
    ) -> dict[str, PlannedVersion]:
        plan: dict[str, PlannedVersion] = {}
        facts: list[VersionFacts] = []
        changed = changed or {}
        statuses = state.statuses
        published_at = state.published_at
        for version in request.versions:
            status = statuses.get(version)
            latest = version == state.latest
            if version in changed:
                plan[version] = PlannedVersion(
                    PlanOutcome.PLAN_CHANGED,
                    f"not deleted, the plan no longer holds: {changed[version]}",
                    status=status,
                    is_latest=latest,
                )
            elif status is None:
                plan[version] = NOT_FOUND_PLAN
            elif request.expected_status is not None and status is not request.expected_status:
                plan[version] = PlannedVersion(
                    PlanOutcome.STATUS_MISMATCH,
                    f"the version is {status}, not {request.expected_status}",
                    status=status,
                    is_latest=latest,
                )
            else:
                plan[version] = _UNDECIDED  # keeps the request's order; decided below
                facts.append(VersionFacts(version, status, latest, published_at.get(version)))
        if not facts:
            return plan
        existing = sum(1 for v in request.versions if v in statuses)
        now = self._clock()
        decisions = policy.decide(
            PolicyRequest(
                principal=principal,
                package=canonical_package(request.package),
                versions=tuple(facts),
                version_count=len(statuses),
                remaining_after_request=len(statuses) - existing,
                context=PolicyContext(
                    justification=request.justification,
                    dry_run=request.validate_only,
                    request_size=len(request.versions),
                    now=now,
                    peer=principal.peer,
                    purge_now=request.purge_now,
                    recovery_window=recovery.window is not None,
                    **_votes(record, policy),
                ),
            )
        )
        archive = recovery.window is not None and not request.purge_now
        # Versions decided alike, in the same status (archived: purged at the same time),
        # share their PlannedVersion (an immutable value): a large request costs a look-up per
        # version, not a message and an object.
        alike: dict[tuple[Any, ...], PlannedVersion] = {}
        for fact, decision in zip(facts, decisions, strict=True):
            status = fact.status
            key = (
                decision.allowed,
                decision.needs_approval,
                decision.policy_ids,
                decision.errors,
                status,
                fact.is_latest,
            )
            planned = alike.get(key)
            if planned is None:
                outcome, message = decided(decision, PlanOutcome.WOULD_DELETE)
                planned = PlannedVersion(
                    outcome, message, decision.policy_ids, status, fact.is_latest
                )
                alike[key] = planned
            # A Disposed version cannot change status (nor be restored): it is deleted at once.
            if archive and planned.outcome is PlanOutcome.WOULD_DELETE and status is not DISPOSED:
                purge_at = recovery.purge_at(fact.version, now)
                archived_key = (*key, purge_at)
                to_archive = alike.get(archived_key)
                if to_archive is None:
                    to_archive = alike[archived_key] = replace(
                        planned, outcome=PlanOutcome.WOULD_ARCHIVE, purge_at=purge_at
                    )
                planned = to_archive
            plan[fact.version] = planned
        return plan

    def _delete(
        self,
        request: DeleteRequest,
        plan: Mapping[str, PlannedVersion],
        deadline: Deadline,
        revisions: Mapping[str, str],
    ) -> DeleteOutcome:
        refused = {v: _refusal(p) for v, p in plan.items() if p.outcome not in FORWARDED}
        chunks = self._chunks(plan)
        if not chunks:
            return DeleteOutcome(failed=refused, plan=plan)
        settle = _LostAnswers(plan, revisions)
        call = functools.partial(self._call, request.package, revisions=revisions)
        if len(chunks) == 1:
            outcome = settle(call(chunks[0], deadline))
        else:
            results = self._run_chunks(call, chunks, deadline, settle)
            outcome = merge_chunks(results, draining=deadline.is_draining())
        archived = {
            v: replace(ok, purge_at=plan[v].purge_at)
            for v, ok in outcome.successful.items()
            if ok.status is VersionStatus.ARCHIVED and plan[v].purge_at is not None
        }
        return DeleteOutcome(
            {**outcome.successful, **archived},
            {**refused, **outcome.failed},
            outcome.aws_request_ids,
            plan,
            inferred=outcome.inferred,
        )

    def _chunks(self, plan: Mapping[str, PlannedVersion]) -> list[Chunk]:
        groups: dict[tuple[bool, VersionStatus | None], list[str]] = {}
        for version, planned in plan.items():
            if planned.outcome in (PlanOutcome.WOULD_DELETE, PlanOutcome.WOULD_ARCHIVE):
                archive = planned.outcome is PlanOutcome.WOULD_ARCHIVE
                groups.setdefault((archive, planned.status), []).append(version)
        size = self._limits.chunk_size
        return [
            Chunk(tuple(versions[i : i + size]), status, archive)
            for (archive, status), versions in groups.items()
            for i in range(0, len(versions), size)
        ]

    def _call(
        self,
        package: PackageRef,
        chunk: Chunk,
        deadline: Deadline,
        *,
        revisions: Mapping[str, str],
    ) -> DeleteOutcome:
        self._check_time(deadline)
        if not chunk.archive:
            return self._upstream.delete_package_versions(
                package, chunk.versions, chunk.expected_status, deadline
            )
        return archive_versions(
            self._upstream,
            package,
            chunk.versions,
            deadline,
            revisions={v: revisions[v] for v in chunk.versions if v in revisions},
            target=VersionStatus.ARCHIVED,
            expected_status=chunk.expected_status,
        )

    def _run_chunks(
        self,
        call: Callable[[Chunk, Deadline], DeleteOutcome],
        chunks: Sequence[Chunk],
        deadline: Deadline,
        settle: Callable[[DeleteOutcome], DeleteOutcome],
    ) -> list[ChunkResult]:
        results = [ChunkResult(chunk) for chunk in chunks]
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
                    result.outcome = settle(call(result.chunk, deadline))
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


DECISION_LABELS = {
    PlanOutcome.WOULD_DELETE: "allowed",
    PlanOutcome.WOULD_ARCHIVE: "allowed",
    PlanOutcome.WOULD_RESTORE: "allowed",
    PlanOutcome.DENIED: "denied",
    PlanOutcome.NOT_FOUND: "not_found",
    PlanOutcome.STATUS_MISMATCH: "status_mismatch",
    PlanOutcome.NOT_PENDING_PURGE: "not_pending_purge",
    PlanOutcome.REVISION_MISMATCH: "revision_mismatch",
    PlanOutcome.NEEDS_APPROVAL: "needs_approval",
    PlanOutcome.PLAN_CHANGED: "plan_changed",
}
"""Each per-version decision's label in metrics."""

DISPOSED = VersionStatus.DISPOSED
NOT_FOUND_PLAN = PlannedVersion(
    PlanOutcome.NOT_FOUND, "the version does not exist in the repository"
)
"""The plan entry of a version the package does not hold (one, shared by every such version)."""
_UNDECIDED = PlannedVersion(PlanOutcome.WOULD_DELETE, "")
"""The place of a version the policy is deciding, until it has."""


def decided(decision: VersionDecision, allowed: PlanOutcome) -> tuple[PlanOutcome, str]:
    """A policy decision as a plan outcome (`allowed`, NEEDS_APPROVAL or DENIED) and its
    message."""
    ids = ", ".join(decision.policy_ids)
    if decision.allowed:
        return allowed, f"allowed by {ids}"
    if decision.needs_approval:
        return PlanOutcome.NEEDS_APPROVAL, f"allowed once approved ({ids})"
    if decision.errors:
        return (
            PlanOutcome.DENIED,
            f"denied: policy evaluation failed ({'; '.join(decision.errors)})",
        )
    return PlanOutcome.DENIED, f"denied by {ids}" if ids else "denied: no policy permits it"


def denied_in(
    plan: Mapping[str, PlannedVersion], outcome: PlanOutcome = PlanOutcome.DENIED
) -> list[DeniedVersion]:
    """The versions policy denied (or gave `outcome`), as PolicyDeniedError lists them."""
    return [
        DeniedVersion(version, p.policy_ids, p.message)
        for version, p in plan.items()
        if p.outcome is outcome
    ]


def _votes(record: DeletionRequestRecord | None, policy: PolicyView) -> dict[str, Any]:
    """The policy context of an approved request's votes (none for an ordinary call): the
    approvers' groups as the policy in force puts them, not as they were when they voted (an
    approver removed from a group since no longer counts for it)."""
    if record is None:
        return {}
    counted = record.approvers()
    groups = tuple(dict.fromkeys(g for vote in counted for g in policy.groups_of(vote.approver)))
    return {"approvals": len(counted), "approver_groups": groups}


def _refusal(planned: PlannedVersion) -> FailedVersion:
    """How a version that is not sent upstream is reported in failed_versions."""
    return FailedVersion(refusal_code(planned), planned.message)


def refusal_code(planned: PlannedVersion) -> VersionErrorCode:
    """The per-version error code of a version refused before anything was sent."""
    if planned.outcome is PlanOutcome.NOT_PENDING_PURGE:
        if planned.status is None:
            return VersionErrorCode.NOT_FOUND
        if planned.status is not VersionStatus.ARCHIVED:
            return VersionErrorCode.MISMATCHED_STATUS
        return VersionErrorCode.NOT_ALLOWED
    codes = {
        PlanOutcome.NOT_FOUND: VersionErrorCode.NOT_FOUND,
        PlanOutcome.STATUS_MISMATCH: VersionErrorCode.MISMATCHED_STATUS,
        PlanOutcome.DENIED: VersionErrorCode.NOT_ALLOWED,
        PlanOutcome.REVISION_MISMATCH: VersionErrorCode.MISMATCHED_REVISION,
        PlanOutcome.PLAN_CHANGED: VersionErrorCode.MISMATCHED_REVISION,
    }
    return codes[planned.outcome]


def archive_versions(
    upstream: CodeArtifactPort,
    package: PackageRef,
    versions: Sequence[str],
    deadline: Deadline,
    *,
    revisions: Mapping[str, str],
    target: VersionStatus,
    expected_status: VersionStatus | None,
) -> DeleteOutcome:
    """Move `versions` to `target`, each pinned to its revision in `revisions`.

    After an attempt whose answer was lost, the retry finds the versions that attempt moved
    with a new revision (MISMATCHED_REVISION) or, with an expected status, in another status
    (MISMATCHED_STATUS): a version then found in `target` was moved by the gateway's own call,
    and is reported moved, with its current revision (listed in `inferred`).
    """
    outcome = upstream.update_package_versions_status(
        package, versions, target, deadline, expected_status=expected_status, revisions=revisions
    )
    unclear = {
        v
        for v, failure in outcome.failed.items()
        if failure.code
        in (VersionErrorCode.MISMATCHED_REVISION, VersionErrorCode.MISMATCHED_STATUS)
    }
    if not outcome.after_lost_response or not unclear:
        return outcome
    state = upstream.package_state(package, deadline)
    moved = {v for v in unclear if state.statuses.get(v) is target}
    return DeleteOutcome(
        {
            **outcome.successful,
            **{v: SuccessfulVersion(state.revisions.get(v, ""), target) for v in moved},
        },
        {v: f for v, f in outcome.failed.items() if v not in moved},
        outcome.aws_request_ids,
        inferred=dict.fromkeys(
            moved, f"moved to {target} by an earlier attempt whose answer was lost"
        ),
    )


@dataclass(frozen=True, slots=True)
class _Recovery:
    """The recovery window of a request's package, and its versions' pending purges."""

    window: timedelta | None
    pending: Mapping[str, PendingPurge]

    def purge_at(self, version: str, now: datetime) -> datetime:
        """When `version`, archived `now`, is purged: when its pending purge (if it has one)
        is due, else at the end of the window."""
        scheduled = self.pending.get(version)
        if scheduled is not None:
            return scheduled.due_at
        return now + (self.window or timedelta(0))


@dataclass(frozen=True, slots=True)
class _Archived:
    """Who archived what, in which event, when: what a scheduled purge records."""

    package: PackageRef
    principal: Principal
    event_id: str
    at: datetime


def _effects(
    archived: _Archived,
    plan: Mapping[str, PlannedVersion],
    outcome: DeleteOutcome,
    pending: Mapping[str, PendingPurge],
) -> PurgeEffects:
    """The pending purges a delete's outcome schedules (archived versions) and closes
    (versions that had one and were deleted at once)."""
    schedule = []
    close = []
    package, principal = archived.package, archived.principal
    for version, ok in outcome.successful.items():
        planned = plan.get(version)
        if planned is None:
            continue
        if ok.status is VersionStatus.ARCHIVED and planned.purge_at is not None:
            if version in pending:
                continue  # already scheduled: the earlier purge stands
            schedule.append(
                PendingPurge(
                    purge_id=str(uuid.uuid4()),
                    package=package,
                    version=version,
                    revision=ok.revision,
                    previous_status=planned.status or VersionStatus.PUBLISHED,
                    requester=principal.id,
                    archive_event_id=archived.event_id,
                    archived_at=archived.at,
                    due_at=planned.purge_at,
                )
            )
        elif ok.status is VersionStatus.DELETED and version in pending:
            close.append(
                PurgeClosure(
                    package,
                    version,
                    PurgeState.PURGED,
                    f"deleted at once (purge_now) by {principal.id}",
                )
            )
    return PurgeEffects(tuple(schedule), tuple(close))


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


def merge_chunks(results: list[ChunkResult], *, draining: bool) -> DeleteOutcome:
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
