"""A governed call and its record, from begin to finish: one owner for both.

`Auditor.begin` opens a `GovernedCall` for each RPC. The edge tells it who called
(`identified`) and what was asked (`received`); the servicer asks it for a recorded answer
(`replayed`, AIP-155) before anything runs; the use case, which receives it explicitly as its
journal, reports its plan, checks the quota of a dry run and commits the intent
(`before_forwarding`: no intent, nothing leaves) and reports what CodeArtifact answered
(`delivered`); the edge ends it with what the caller got (`succeeded` or `failed`). The
outcome's decision is classified from the domain error, by one table.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pkggov_gateway.domain.approvals import ApprovalEffects, RequestGuard
from pkggov_gateway.domain.audit import (
    AppendGuard,
    AuditEventRecord,
    Decision,
    NewEntry,
    RequestIdClaimed,
    StoredEntry,
    replay_verdict,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    ApprovalRequiredError,
    CleanupError,
    CleanupJobNotFoundError,
    CleanupPlanNotFoundError,
    CleanupRuleNotApplicableError,
    DeletionRequestError,
    DeletionRequestNotFoundError,
    InvalidRequestError,
    MalformedRequestError,
    PlanChangedError,
    PolicyDeniedError,
    QuotaExceededError,
    RequestIdConflictError,
    RequestInProgressError,
    UnauthenticatedError,
    UnknownCleanupRuleError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import DeleteOutcome, PlannedVersion, VersionErrorCode
from pkggov_gateway.domain.records import (
    OK,
    CallHeader,
    IntentRecord,
    OutcomeFacts,
    OutcomeRecord,
    RecordedFailure,
    RecordedStatus,
    RequestFacts,
)
from pkggov_gateway.domain.recovery import PurgeEffects

if TYPE_CHECKING:
    from pkggov_gateway.service.audit import Auditor

__all__ = ["DECISION_BY_ERROR", "GovernedCall", "decision_for"]

DECISION_BY_ERROR: dict[type[BaseException], Decision] = {
    InvalidRequestError: Decision.INVALID,
    MalformedRequestError: Decision.INVALID,
    RequestIdConflictError: Decision.INVALID,
    UnauthenticatedError: Decision.UNAUTHENTICATED,
    PolicyDeniedError: Decision.DENIED,
    VersionLimitError: Decision.DENIED,
    QuotaExceededError: Decision.DENIED,
    ApprovalRequiredError: Decision.APPROVAL_REQUIRED,
    DeletionRequestError: Decision.DENIED,
    PlanChangedError: Decision.DENIED,
    DeletionRequestNotFoundError: Decision.INVALID,
    CleanupError: Decision.DENIED,
    CleanupPlanNotFoundError: Decision.INVALID,
    CleanupJobNotFoundError: Decision.INVALID,
    UnknownCleanupRuleError: Decision.INVALID,
    CleanupRuleNotApplicableError: Decision.INVALID,
}
"""The decision an outcome records for a call that ended in this error; any other error is
``failed`` (upstream failures, deadlines, shutdown, an unavailable store, bugs)."""

_NOT_RUN = (RequestInProgressError, RequestIdConflictError, RecordedFailure)
"""Errors of a call that did not run its request: its outcome claims no request_id."""

CHANGING_METHODS = frozenset(
    {
        "DeletePackageVersions",
        "RestorePackageVersions",
        "PurgePackageVersions",
        "ApproveDeletionRequest",
        "RejectDeletionRequest",
        "CancelDeletionRequest",
        "ExecuteDeletionRequest",
        "ExpireDeletionRequest",
        "ApplyCleanup",
        "CancelCleanupJob",
    }
)
"""Methods (by their last name part) whose answered call changed something (CodeArtifact, a
pending purge, a deletion request): any other answered call is a read."""


def decision_for(error: BaseException) -> Decision:
    """The table's decision for `error` (by its most specific class), else FAILED."""
    for cls in type(error).__mro__:
        decision = DECISION_BY_ERROR.get(cls)
        if decision is not None:
            return decision
    return Decision.FAILED


class GovernedCall:
    """One RPC's governed call and its audit event (see the module docstring)."""

    def __init__(
        self, auditor: Auditor, method: str, rpc_request_id: str, peer: str, now: datetime
    ) -> None:
        self._auditor = auditor
        self.event_id = str(uuid.uuid4())
        self._header = CallHeader(
            event_id=self.event_id,
            method=method,
            rpc_request_id=rpc_request_id,
            peer=peer,
            received=now,
            replica=auditor.store.replica,
        )
        self._started = time.perf_counter()
        self._facts: RequestFacts | None = None
        self._plan: Mapping[str, PlannedVersion] | None = None
        self.intent: StoredEntry | None = None
        self._delivered: DeleteOutcome | None = None
        self._replay_of: str | None = None
        self.previous: AuditEventRecord | None = None
        """The earlier event of this request_id that `replayed` found (None: none)."""
        self._effects = PurgeEffects()
        self._approvals = ApprovalEffects()
        self._intent_approvals = ApprovalEffects()
        self._intent_guard: RequestGuard | None = None
        self._outcome_extra: dict[str, Any] = {}
        self._held = contextlib.ExitStack()

    # --- who called and what was asked (the edge) ------------------------------------------

    @property
    def principal(self) -> Principal | None:
        """The authenticated caller (None until `identified`)."""
        return self._header.principal

    @property
    def request_id(self) -> str | None:
        """The AIP-155 retry key of the request, in lower case (None: none was sent)."""
        return self._facts.request_id if self._facts is not None else None

    @property
    def aws_request_ids(self) -> tuple[str, ...]:
        """CodeArtifact's request ids of what the call sent (for the log line)."""
        return self._delivered.aws_request_ids if self._delivered is not None else ()

    def identified(self, principal: Principal) -> None:
        """The caller, as the edge authenticated it."""
        self._header = replace(self._header, principal=principal)

    def received(self, request: Mapping[str, Any]) -> None:
        """The request as received (every field, the proto's JSON names)."""
        self._header = replace(self._header, request=request)
        self._facts = RequestFacts.of(request)

    # --- AIP-155 ---------------------------------------------------------------------------

    def replayed(self) -> Mapping[str, Any] | None:
        """The recorded response when this request_id was answered OK before (the caller
        converts it back); None: run the call.

        Raises RecordedFailure with the recorded error status when that answer was a final
        error, RequestIdConflictError for a reused id with other content, and
        RequestInProgressError while the first call is still open.
        """
        previous = self.previous = self._previous()
        if previous is None:
            return None
        facts = OutcomeFacts.of(previous)
        assert self._facts is not None  # noqa: S101 - _previous needs them
        if facts.fingerprint != self._facts.fingerprint:
            raise RequestIdConflictError(self.request_id or "", previous.event_id)
        verdict = replay_verdict(previous)
        if verdict == "open":
            raise RequestInProgressError(self.request_id or "", previous.event_id)
        if verdict == "rerun":
            return None
        assert facts.status is not None  # noqa: S101 - replay_verdict says so
        self._replay_of = previous.event_id
        if facts.status.code != OK.code:
            raise RecordedFailure(facts.status)
        return facts.response

    def _previous(self) -> AuditEventRecord | None:
        if self.request_id is None or self.principal is None:
            return None
        return self._auditor.store.event_by_request_id(self.principal.id, self.request_id)

    # --- the use case's journal -------------------------------------------------------------

    @property
    def plan(self) -> Mapping[str, PlannedVersion]:
        """The per-version decisions the use case reported (empty before it did)."""
        return self._plan or {}

    def planned(self, plan: Mapping[str, PlannedVersion]) -> None:
        """The per-version decisions (recorded in the intent and the outcome)."""
        self._plan = dict(plan)

    def check_quota(self, groups: Sequence[str], versions: int) -> None:
        """For a dry run: fail as the real call would if the quota is used up (reads only)."""
        if self.principal is None:
            return
        quota = self._auditor.quotas.check_for(self.principal.id, groups)
        if quota is None:
            return
        used, retry = self._auditor.store.quota_usage(quota)
        if used + versions > quota.limit:
            raise QuotaExceededError(quota.subject, quota.limit, used, versions, retry)

    def before_forwarding(
        self,
        groups: Sequence[str],
        versions: Sequence[str],
        deadline: Deadline,
        *,
        counts_quota: bool = True,
    ) -> None:
        """Commit the intent: nothing may be sent upstream before this returns.

        Raises AuditUnavailableError (fail closed), QuotaExceededError, RequestInProgressError.
        """
        principal = self.principal
        quota = None
        if principal is not None and counts_quota:
            quota = self._auditor.quotas.check_for(principal.id, groups)
        record = IntentRecord(
            header=self._header,
            request_id=self.request_id,
            fingerprint=self._fingerprint() or "",
            plan=self._plan,
            forward=tuple(versions),
            deadline=self._auditor.now() + timedelta(seconds=max(0.0, deadline.remaining())),
        )
        guard = AppendGuard(
            request_id=self.request_id, quota=quota, deletion_request=self._intent_guard
        )
        try:
            self.intent = self._auditor.append(
                NewEntry(record.body(), approvals=self._intent_approvals), guard=guard
            )
        except RequestIdClaimed as duplicate:
            raise RequestInProgressError(
                self.request_id or "", duplicate.event.event_id
            ) from duplicate

    def delivered(self, outcome: DeleteOutcome) -> None:
        """What CodeArtifact answered (request ids, versions inferred deleted)."""
        self._delivered = outcome

    def on_intent(self, effects: ApprovalEffects, guard: RequestGuard) -> None:
        """Changes to a deletion request that the intent (`before_forwarding`) commits,
        checked by `guard` atomically with it (an approved plan's execution claims it)."""
        self._intent_approvals = effects
        self._intent_guard = guard

    def will_approve(self, effects: ApprovalEffects, **recorded: Any) -> None:
        """Changes to deletion requests that commit with the outcome, which also records
        `recorded` (e.g. the request created)."""
        self._approvals = effects
        self.record(**recorded)

    def record(self, **facts: Any) -> None:
        """Facts the outcome records besides the answer (a cleanup plan's id and hash)."""
        self._outcome_extra.update(facts)

    def commit(self, effects: ApprovalEffects, guard: RequestGuard, **recorded: Any) -> None:
        """Commit an intent that makes `effects` (a vote, a state change) now, checked by
        `guard` atomically with it; the intent records `recorded`. Raises the guard's
        DeletionRequestError, or AuditUnavailableError (nothing changed)."""
        record = IntentRecord(
            header=self._header,
            request_id=self.request_id,
            fingerprint=self._fingerprint() or "",
            plan=None,
            forward=(),
            deadline=self._auditor.now(),
            extra=recorded,
        )
        self.intent = self._auditor.append(
            NewEntry(record.body(), approvals=effects),
            guard=AppendGuard(deletion_request=guard),
        )

    def hold_until_recorded(self, held: AbstractContextManager[None]) -> None:
        """Enter `held` (the package's lock) now, and leave it only once the outcome is
        committed (or could not be): no other call decides on the package before this call's
        record, and the pending purges it changes, are in. `release` leaves it in any case."""
        self._held.enter_context(held)

    def release(self) -> None:
        """Leave what `hold_until_recorded` entered (idempotent; the edge calls it last)."""
        self._held.close()

    def will_apply(self, effects: PurgeEffects) -> None:
        """Changes to pending purges that commit with the outcome, in its transaction."""
        self._effects = effects

    # --- the end (the edge) -----------------------------------------------------------------

    def succeeded(self, response: Mapping[str, Any] | None) -> StoredEntry:
        """Record the OK answer (`response`: what is recorded of it). Raises
        AuditUnavailableError when it cannot be committed (after an intent the store keeps
        retrying it)."""
        if self._replay_of is not None:
            decision = Decision.REPLAYED
        elif self._header.method.rpartition("/")[2] not in CHANGING_METHODS:
            decision = Decision.READ
        elif self._facts is not None and self._facts.dry_run:
            decision = Decision.DRY_RUN
        else:
            refused = (self._delivered or DeleteOutcome()).failed.values()
            partial = any(f.code is VersionErrorCode.NOT_ALLOWED for f in refused)
            decision = Decision.PARTIAL if partial else Decision.ALLOWED
        return self._finish(decision, OK, response, ran=True)

    def failed(self, error: BaseException, status: RecordedStatus) -> StoredEntry:
        """Record the error answer `status`, classified by `error`; raises as `succeeded`."""
        decision = Decision.REPLAYED if self._replay_of is not None else decision_for(error)
        return self._finish(decision, status, None, ran=not isinstance(error, _NOT_RUN))

    def _finish(
        self,
        decision: Decision,
        status: RecordedStatus,
        response: Mapping[str, Any] | None,
        *,
        ran: bool,
    ) -> StoredEntry:
        delivered = self._delivered or DeleteOutcome()
        record = OutcomeRecord(
            header=self._header,
            time=self._auditor.now(),
            decision=decision,
            status=status,
            response=response,
            duration_ms=round((time.perf_counter() - self._started) * 1000, 3),
            aws_request_ids=delivered.aws_request_ids,
            inferred=delivered.inferred,
            intent_seq=self.intent.seq if self.intent is not None else None,
            # Only a call that ran the request claims its request_id; a replay or a refused
            # retry (in progress, reused id) must not take the id from the call that ran.
            claimed_request_id=self.request_id if ran and self._replay_of is None else None,
            fingerprint=self._fingerprint(),
            plan=self._plan,
            replay_of=self._replay_of,
            extra=self._outcome_extra,
        )
        try:
            return self._auditor.append(
                NewEntry(record.body(), self._effects, self._approvals),
                durable=self.intent is not None,
            )
        finally:
            self.release()

    def _fingerprint(self) -> str | None:
        return self._facts.fingerprint if self._facts is not None else None
