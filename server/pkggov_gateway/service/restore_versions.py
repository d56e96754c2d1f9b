"""The governed RestorePackageVersions use case: bring back versions archived under a window.

Steps, as for a delete (service.delete_versions: validation, version limit, time check, the
package's lock for a real call), then:

1. Read the package's state from CodeArtifact and the requested versions' pending purges.
2. A version with no pending purge is refused (NOT_FOUND when it does not exist,
   MISMATCHED_STATUS when it is not Archived, NOT_ALLOWED when it is Archived but not by the
   gateway); one whose revision is no longer the one it was archived at (changed outside the
   gateway) is refused as MISMATCHED_REVISION. Neither is evaluated nor sent.
3. Decide the rest by the Cedar action RestorePackageVersion, the version's `archived_by`
   naming the requester whose request archived it. A denied version fails the whole call.
4. Record the intent (restores do not count against the deletion quota), then move each
   version back to the status it had before with UpdatePackageVersionsStatus, pinned to the
   archived revision and to status Archived, grouped by target status in calls of at most 100.
5. The outcome closes the restored versions' pending purges, in its own transaction.

A restore racing the purge worker is decided by the package's lock and CodeArtifact's own
guards: whichever runs second finds the version gone (the restore fails NOT_FOUND) or no longer
Archived at its revision (the purge is cancelled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import PolicyDeniedError
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    DeleteRequest,
    FailedVersion,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.policy import (
    PolicyAction,
    PolicyContext,
    PolicyRequest,
    VersionFacts,
)
from pkggov_gateway.domain.recovery import PendingPurge, PurgeClosure, PurgeEffects, PurgeState
from pkggov_gateway.ports import PolicyView
from pkggov_gateway.service.delete_versions import (
    DECISION_LABELS,
    NOT_FOUND_PLAN,
    ApprovedRun,
    CallJournal,
    Chunk,
    ChunkResult,
    GovernedChange,
    PlanCheck,
    archive_versions,
    decided,
    denied_in,
    merge_chunks,
    refusal_code,
)

__all__ = ["RestorePackageVersions"]

RESTORABLE = frozenset({VersionStatus.PUBLISHED, VersionStatus.UNLISTED, VersionStatus.ARCHIVED})
"""Statuses a restore can move a version back to: UpdatePackageVersionsStatus's targets
(Published, Unlisted, Archived), never Unfinished."""


class RestorePackageVersions(GovernedChange):
    """Validates, checks and decides a restore, then restores through the CodeArtifact port."""

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
        state = self._upstream.package_state(request.package, deadline)
        pending = (
            self._purges.pending_for(request.package, request.versions) if self._purges else {}
        )
        plan = self._decide(request, principal, state, policy, pending)
        self._metrics.decisions(Counter(DECISION_LABELS[p.outcome] for p in plan.values()))
        if journal is not None:
            journal.planned(plan)
        denied = denied_in(plan)
        if denied:
            raise PolicyDeniedError(denied, len(request.versions))
        forward = [v for v, p in plan.items() if p.outcome is PlanOutcome.WOULD_RESTORE]
        if request.validate_only:
            return DeleteOutcome(plan=plan)
        if journal is not None and forward:
            journal.before_forwarding((), forward, deadline, counts_quota=False)
        refused = {
            v: FailedVersion(refusal_code(p), p.message)
            for v, p in plan.items()
            if p.outcome is not PlanOutcome.WOULD_RESTORE
        }
        outcome = self._restore(request, forward, pending, deadline)
        outcome = DeleteOutcome(
            outcome.successful,
            {**refused, **outcome.failed},
            outcome.aws_request_ids,
            plan,
            inferred=outcome.inferred,
        )
        if journal is not None:
            journal.delivered(outcome)
            closures = tuple(
                PurgeClosure(
                    request.package,
                    version,
                    PurgeState.RESTORED,
                    f"restored to {ok.status} by {principal.id}",
                )
                for version, ok in outcome.successful.items()
            )
            if closures:
                journal.will_apply(PurgeEffects(close=closures))
        return outcome

    def _decide(
        self,
        request: DeleteRequest,
        principal: Principal,
        state: PackageState,
        policy: PolicyView,
        pending: Mapping[str, PendingPurge],
    ) -> dict[str, PlannedVersion]:
        plan: dict[str, PlannedVersion] = {}
        facts: list[VersionFacts] = []
        for version in request.versions:
            status = state.statuses.get(version)
            latest = version == state.latest
            scheduled = pending.get(version)
            if status is None:
                plan[version] = NOT_FOUND_PLAN
            elif scheduled is None:
                plan[version] = PlannedVersion(
                    PlanOutcome.NOT_PENDING_PURGE,
                    _not_pending(status),
                    status=status,
                    is_latest=latest,
                )
            elif scheduled.previous_status not in RESTORABLE:
                plan[version] = PlannedVersion(
                    PlanOutcome.NOT_PENDING_PURGE,
                    f"the version was {scheduled.previous_status} before it was archived, and "
                    "CodeArtifact cannot move a version back to it: its purge stays "
                    "pending (restore it with the AWS CLI, then it is cancelled)",
                    status=status,
                    is_latest=latest,
                )
            elif state.revisions.get(version, scheduled.revision) != scheduled.revision:
                plan[version] = PlannedVersion(
                    PlanOutcome.REVISION_MISMATCH,
                    "the version changed since it was archived (its revision differs): "
                    "it was re-published or changed outside the gateway",
                    status=status,
                    is_latest=latest,
                )
            else:
                plan[version] = PlannedVersion(PlanOutcome.WOULD_RESTORE, "", status=status)
                facts.append(VersionFacts(version, status, latest, archived_by=scheduled.requester))
        if not facts:
            return plan
        decisions = policy.decide(
            PolicyRequest(
                principal=principal,
                package=canonical_package(request.package),
                versions=tuple(facts),
                version_count=len(state.statuses),
                remaining_after_request=len(state.statuses),
                context=PolicyContext(
                    justification=request.justification,
                    dry_run=request.validate_only,
                    request_size=len(request.versions),
                    now=self._clock(),
                    peer=principal.peer,
                ),
                action=PolicyAction.RESTORE,
            )
        )
        for fact, decision in zip(facts, decisions, strict=True):
            outcome, message = decided(decision, PlanOutcome.WOULD_RESTORE)
            if decision.allowed:
                message += f"; restored to {pending[fact.version].previous_status}"
            plan[fact.version] = PlannedVersion(
                outcome, message, decision.policy_ids, fact.status, fact.is_latest
            )
        return plan

    def _restore(
        self,
        request: DeleteRequest,
        versions: list[str],
        pending: Mapping[str, PendingPurge],
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Move `versions` back, grouped by target status, in calls of at most chunk_size."""
        groups: dict[VersionStatus, list[str]] = {}
        for version in versions:
            groups.setdefault(pending[version].previous_status, []).append(version)
        size = self._limits.chunk_size
        batches = [
            (target, tuple(group[i : i + size]))
            for target, group in groups.items()
            for i in range(0, len(group), size)
        ]
        results = [ChunkResult(Chunk(chunk, VersionStatus.ARCHIVED)) for _, chunk in batches]
        for (target, chunk), result in zip(batches, results, strict=True):
            try:
                self._check_time(deadline)
                result.outcome = archive_versions(
                    self._upstream,
                    request.package,
                    chunk,
                    deadline,
                    revisions={v: pending[v].revision for v in chunk},
                    target=target,
                    expected_status=VersionStatus.ARCHIVED,
                )
            except Exception as exc:  # noqa: BLE001 - reported per chunk by merge_chunks
                result.error = exc
                break
        if not results:
            return DeleteOutcome()
        return merge_chunks(results, draining=deadline.is_draining())


def _not_pending(status: VersionStatus) -> str:
    if status is not VersionStatus.ARCHIVED:
        return f"the version is {status}, not Archived: it has no pending purge to cancel"
    return "the version is Archived but has no pending purge (it was not archived by pkggov)"
