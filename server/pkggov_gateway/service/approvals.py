"""Four eyes: deletion requests, votes and execution (see domain.approvals).

`ApprovalDesk` is both the delete use case's collaborator (it opens a request when policy says
a deletion needs approval, and closes it when an approved plan ran) and the use cases of
ApprovalService: get, list, approve, reject, cancel, execute, and the expiry sweep every
replica runs.

Rules that hold whatever the policy says: the requester (any identity form of the same
person, by the entities file's `person`) never votes on their own request; one person votes
once; only the requester cancels or executes; expired, rejected, cancelled and executed
requests never run; a plan whose stored form no longer matches the hash recorded in the audit
chain when it was created is refused (PLAN_TAMPERED). Every change commits with the audit
entry that explains it, checked atomically (a `RequestGuard` under the chain's lock), so votes
cast at different replicas count once each and two executions run once.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pkggov_gateway.domain.approvals import (
    ApprovalEffects,
    DeletionPlan,
    DeletionRequestPage,
    DeletionRequestQuery,
    DeletionRequestRecord,
    NewVote,
    PlannedItem,
    RequestGuard,
    RequestState,
    Transition,
    Vote,
    WebhookEvent,
    plan_digest,
)
from pkggov_gateway.domain.audit import EntryKind, format_time
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    AlreadyVotedError,
    ApprovalRequiredError,
    AuditUnavailableError,
    DeletionRequestError,
    DeletionRequestNotFoundError,
    DeniedVersion,
    FieldViolation,
    InvalidRequestError,
    NotRequesterError,
    PlanChangedError,
    PlanTamperedError,
    PolicyDeniedError,
    RequestExpiredError,
    RequestNotPendingError,
    SelfApprovalError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    DeleteRequest,
    PackageState,
    PlannedVersion,
    PlanOutcome,
)
from pkggov_gateway.domain.records import RecordedStatus, request_json, response_json
from pkggov_gateway.domain.validation import RawDeleteRequest
from pkggov_gateway.ports import AuditStore, PolicyEngine, RequestStore
from pkggov_gateway.service.audit import Auditor
from pkggov_gateway.service.delete_versions import CallJournal, DeletePackageVersions

__all__ = [
    "AUTO_EXECUTE_METHOD",
    "EXPIRE_METHOD",
    "ApprovalDesk",
    "ApprovalRules",
    "reason_violations",
]

EXPIRE_METHOD = "/pkggov.internal.Approvals/ExpireDeletionRequest"
"""The method the expiry sweep's audit events name (no client can call it)."""
AUTO_EXECUTE_METHOD = "/pkggov.internal.Approvals/ExecuteDeletionRequest"
"""The method of an automatic execution's audit event (approvals.auto_execute)."""

_SWEEPER = Principal("pkggov:approvals", AuthMethod.INTERNAL, "internal")
_MAX_REASON = 1024
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters a reason must not hold: C0 (but tab and newline), DEL, C1, bidi overrides."""
_OPEN = (RequestState.PENDING,)
_RUNNABLE = (RequestState.PENDING, RequestState.EXECUTING)
"""An execution that sent nothing closes a pending request; one that did, the request its
intent claimed (moved to executing)."""


@dataclass(frozen=True, slots=True)
class ApprovalRules:
    """How long a request waits, and whether one rejection ends it (config.approvals)."""

    expire_seconds: float = 72 * 3600.0
    rejection_ends: bool = True
    auto_execute: bool = False
    """Run a request for its requester as soon as its approvals satisfy policy."""
    execute_seconds: float = 60.0
    """The deadline of an automatic execution."""


class ApprovalDesk:
    """Deletion requests: opened by the delete use case, voted on, executed (module doc)."""

    def __init__(
        self,
        requests: RequestStore,
        audit: AuditStore,
        auditor: Auditor,
        policy: PolicyEngine,
        settings: ApprovalRules,
        *,
        status_of: Callable[[BaseException], RecordedStatus] | None = None,
        drain: DrainSignal | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._drain = drain
        self._status_of = status_of or (lambda error: RecordedStatus("INTERNAL", "", str(error)))
        self._tried: dict[str, int] = {}
        """Per pending request, the counted approvals when it was last run automatically."""
        self._requests = requests
        self._audit = audit
        self._auditor = auditor
        self._policy = policy
        self._settings = settings
        self._clock = clock
        self._delete: DeletePackageVersions | None = None

    def serve(self, delete: DeletePackageVersions) -> None:
        """The delete use case that executes approved plans (it also opens requests here)."""
        self._delete = delete

    # --- opened by the delete use case --------------------------------------------------

    def open_request(
        self,
        principal: Principal,
        request: DeleteRequest,
        state: PackageState,
        plan: Mapping[str, PlannedVersion],
        journal: CallJournal | None,
    ) -> ApprovalRequiredError:
        """Record a deletion request for `plan` with the call's outcome (not for a dry run);
        return the error the call fails with."""
        waiting = [p for p in plan.values() if p.outcome is PlanOutcome.NEEDS_APPROVAL]
        policy_ids = tuple(dict.fromkeys(i for p in waiting for i in p.policy_ids))
        deletion_plan = _plan_of(request, state, plan)
        digest = deletion_plan.digest()
        if request.validate_only or journal is None:
            return ApprovalRequiredError(None, policy_ids, digest, len(waiting))
        now = self._clock()
        person = self._policy.current().person_of(principal.id)
        record = DeletionRequestRecord(
            request_id=str(uuid.uuid4()),
            requester=principal.id,
            requester_person=person,
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.expire_seconds),
            state=RequestState.PENDING,
            plan=deletion_plan,
            plan_hash=digest,
            required_by=policy_ids,
            event_id=journal.event_id,
        )
        journal.will_approve(
            ApprovalEffects(create=(record,), notify=(self._event("created", record, principal),)),
            deletion_request=_summary(record),
        )
        return ApprovalRequiredError(record.request_id, policy_ids, digest, len(waiting))

    # --- ApprovalService ----------------------------------------------------------------

    def get(self, principal: Principal, request_id: str) -> DeletionRequestRecord:
        """The request, for its requester and for principals who may read the audit record
        or vote on it (PolicyDeniedError otherwise, NOT_FOUND when there is none)."""
        view = self._policy.current()
        now = self._clock()
        reader = view.authorize_read(principal, now).allowed
        found = self._requests.deletion_request(request_id)
        if found is None:
            if reader:  # whether an id exists is told only to who may read the record
                raise DeletionRequestNotFoundError(request_id)
            raise _denied(principal, "read this deletion request", request_id)
        record = found
        if reader or view.person_of(principal.id) == record.requester_person:
            return record
        if view.authorize_approval(principal, record, now, "").allowed:
            return record
        raise _denied(principal, "read this deletion request", request_id)

    def list(
        self, principal: Principal, query: Callable[[], DeletionRequestQuery]
    ) -> DeletionRequestPage:
        """One page of requests, for principals who may read the audit record."""
        if not self._policy.current().authorize_read(principal, self._clock()).allowed:
            raise _denied(principal, "list deletion requests", "*")
        return self._requests.deletion_requests(query())

    def vote(
        self,
        principal: Principal,
        request_id: str,
        reason: str,
        journal: CallJournal,
        *,
        approve: bool,
        plan_hash: str = "",
    ) -> DeletionRequestRecord:
        """Approve or reject a pending request (see the module docstring for the rules);
        with `plan_hash`, only if it is the request's (the plan the approver reviewed)."""
        _check_reason(reason, required=True)
        record = self._record(request_id)
        view = self._policy.current()
        person = view.person_of(principal.id)
        if person == record.requester_person:
            raise SelfApprovalError(
                f"{principal.id} requested deletion request {request_id} and may not vote on "
                "it (in any identity form of the same person)",
                request_id,
            )
        now = self._clock()
        self._check_open(record, now)
        decision = view.authorize_approval(principal, record, now, reason)
        if not decision.allowed:
            raise _denied(principal, "vote on this deletion request", request_id, decision)
        if plan_hash and plan_hash.lower() != record.plan_hash:  # told only to a voter
            raise PlanChangedError(
                request_id,
                [f"its plan hash is {record.plan_hash}, not the {plan_hash} that was reviewed"],
            )
        self._check_integrity(record)
        if any(vote.person == person for vote in record.votes):
            raise AlreadyVotedError(
                f"{principal.id} has already voted on deletion request {request_id}",
                request_id,
            )
        vote = Vote(
            approver=principal.id,
            person=person,
            approve=approve,
            groups=view.groups_for(principal),
            reason=reason,
            at=now,
            event_id=journal.event_id,
        )
        ends = not approve and self._settings.rejection_ends
        transitions = (
            (
                Transition(
                    request_id,
                    _OPEN,
                    RequestState.REJECTED,
                    f"rejected by {principal.id}: {reason}",
                ),
            )
            if ends
            else ()
        )
        voted = _with_vote(record, vote)
        kind = "approved" if approve else "rejected"
        journal.commit(
            ApprovalEffects(
                votes=(NewVote(request_id, vote),),
                transitions=transitions,
                notify=(self._event(kind, voted, principal, reason=reason),),
            ),
            RequestGuard(request_id, _OPEN, now, voter=person),
            vote={
                "deletion_request_id": request_id,
                "approve": approve,
                "person": person,
                "groups": list(vote.groups),
                "reason": reason,
                "plan_hash": record.plan_hash,
            },
        )
        return self._record(request_id)

    def cancel(
        self, principal: Principal, request_id: str, reason: str, journal: CallJournal
    ) -> DeletionRequestRecord:
        """Cancel a pending request; only its requester may."""
        _check_reason(reason, required=False)
        record = self._record(request_id)
        self._check_requester(principal, record, "cancel")
        now = self._clock()
        self._check_open(record, now)
        why = f"cancelled by {principal.id}" + (f": {reason}" if reason else "")
        journal.commit(
            ApprovalEffects(
                transitions=(Transition(request_id, _OPEN, RequestState.CANCELLED, why),),
                notify=(self._event("cancelled", record, principal, reason=reason),),
            ),
            RequestGuard(request_id, _OPEN, now),
            deletion_request={"id": request_id, "to": RequestState.CANCELLED.value},
        )
        return self._record(request_id)

    def execute(
        self, principal: Principal, request_id: str, deadline: Deadline, journal: CallJournal
    ) -> tuple[DeleteOutcome, DeletionRequestRecord]:
        """Run an approved request's plan through the governed delete (only its requester).

        The request is read again under the package's lock (`load` of the run), so two
        executions take turns and the second finds it executed; the plan must still hold and
        policy, given the votes, must allow it (ApprovalRequiredError while it does not)."""
        assert self._delete is not None  # noqa: S101 - wired by the composition root
        record = self._record(request_id)
        self._check_requester(principal, record, "execute")
        self._check_open(record, self._clock())
        self._check_integrity(record)
        run = _ApprovedRun(self, request_id)
        # The call's record names what it deletes, as a delete's does (for reconciliation).
        journal.received({**_request_json(record.plan), "deletion_request_id": request_id})
        try:
            outcome = self._delete.execute(
                _raw_request(record.plan), principal, deadline, journal, approved=run
            )
        except Exception as error:
            if journal.intent is not None:  # claimed, then failed: it may be run again
                journal.will_approve(
                    ApprovalEffects(
                        transitions=(
                            Transition(
                                request_id,
                                (RequestState.EXECUTING,),
                                RequestState.PENDING,
                                f"execution failed: {error}",
                            ),
                        )
                    )
                )
            raise
        # The outcome, which closes the request, is committed once the answer is made: the
        # answer shows the request as that commit leaves it.
        executed = replace(
            self._record(request_id),
            state=RequestState.EXECUTED,
            closed_reason=_executed_reason(record, principal.id),
            closed_event_id=journal.event_id,
        )
        return outcome, executed

    def sweep(self) -> None:
        """What every replica does periodically: record expiries, and (auto_execute) run the
        requests whose approvals may now satisfy policy."""
        self.expire_due()
        if self._settings.auto_execute:
            self.execute_approved()

    def execute_approved(self, limit: int = 100) -> int:
        """Run, for its requester, each pending request with an approval it was not run with
        yet (each its own audit event, by the requester, method AUTO_EXECUTE_METHOD): the
        governed delete decides whether the approvals now satisfy policy. How many ran."""
        page = self._requests.deletion_requests(
            DeletionRequestQuery(state=RequestState.PENDING, limit=limit)
        )
        pending = {record.request_id for record in page.requests}
        self._tried = {k: v for k, v in self._tried.items() if k in pending}
        ran = 0
        for record in page.requests:
            approvals = len(record.approvers())
            if approvals <= self._tried.get(record.request_id, 0):
                continue
            self._tried[record.request_id] = approvals
            if self._run_for_requester(record):
                ran += 1
        return ran

    def _run_for_requester(self, record: DeletionRequestRecord) -> bool:
        principal = Principal(record.requester, AuthMethod.INTERNAL, "internal")
        call = self._auditor.begin(AUTO_EXECUTE_METHOD, str(uuid.uuid4()), "internal")
        call.identified(principal)
        call.received({"deletion_request_id": record.request_id, "automatic": True})
        deadline = Deadline.after(self._settings.execute_seconds, self._drain)
        try:
            outcome, _ = self.execute(principal, record.request_id, deadline, call)
        except Exception as error:  # noqa: BLE001 - recorded; tried again after a new vote
            with contextlib.suppress(AuditUnavailableError):
                call.failed(error, self._status_of(error))
            return False
        with contextlib.suppress(AuditUnavailableError):  # durable: retried by the store
            call.succeeded(
                {"deletion_request_id": record.request_id, "result": response_json(outcome)}
            )
        self._tried.pop(record.request_id, None)
        return True

    def expire_due(self, limit: int = 100) -> int:
        """Record the expiry of every pending request past its expiry (each its own audit
        event by pkggov:approvals); how many."""
        now = self._clock()
        expired = self._requests.expired_requests(now, limit)
        done = 0
        for record in expired:
            call = self._auditor.begin(EXPIRE_METHOD, str(uuid.uuid4()), "internal")
            call.identified(_SWEEPER)
            call.received({"deletion_request_id": record.request_id})
            try:  # one replica records it: the others' guards find it expired already
                call.commit(
                    ApprovalEffects(
                        transitions=(
                            Transition(
                                record.request_id,
                                _OPEN,
                                RequestState.EXPIRED,
                                f"expired at {format_time(record.expires_at)}",
                            ),
                        ),
                        notify=(self._event("expired", record, _SWEEPER),),
                    ),
                    RequestGuard(record.request_id, _OPEN, now, expired_ok=True),
                    deletion_request={"id": record.request_id, "to": RequestState.EXPIRED.value},
                )
            except DeletionRequestError:
                continue  # nothing was written
            call.succeeded({"deletion_request_id": record.request_id, "state": "expired"})
            done += 1
        return done

    # --- used by the delete use case while executing ---------------------------------------

    def load_for_run(self, request_id: str) -> DeletionRequestRecord:
        """The request as it is now, checked again (under the package's lock)."""
        record = self._record(request_id)
        self._check_open(record, self._clock())
        self._check_integrity(record)
        return record

    def claim(self, record: DeletionRequestRecord, journal: CallJournal) -> None:
        """The execution's intent moves the request from pending to executing, refused if a
        rejection, cancellation or another execution got there first (under the chain's
        lock): from then on no vote or cancellation can change it."""
        journal.on_intent(
            ApprovalEffects(
                transitions=(
                    Transition(
                        record.request_id,
                        _OPEN,
                        RequestState.EXECUTING,
                        f"being executed by {record.requester}",
                    ),
                )
            ),
            RequestGuard(record.request_id, _OPEN, self._clock()),
        )

    def executed(
        self,
        record: DeletionRequestRecord,
        outcome: DeleteOutcome,
        journal: CallJournal,
        by: Principal,
    ) -> None:
        """The plan ran (executed by `by`): the outcome closes the request and notifies."""
        approvers = [v.approver for v in record.approvers()]
        principal = Principal(record.requester, AuthMethod.INTERNAL, "")
        journal.will_approve(
            ApprovalEffects(
                transitions=(
                    Transition(
                        record.request_id,
                        _RUNNABLE,
                        RequestState.EXECUTED,
                        _executed_reason(record, by.id),
                    ),
                ),
                notify=(
                    self._event(
                        "executed",
                        record,
                        principal,
                        deleted=sorted(outcome.successful),
                        failed=sorted(outcome.failed),
                    ),
                ),
            ),
            deletion_request={
                **_summary(record),
                "approved_by": approvers,
                "executed": True,
            },
        )

    # --- helpers ------------------------------------------------------------------------------

    def _record(self, request_id: str) -> DeletionRequestRecord:
        record = self._requests.deletion_request(request_id)
        if record is None:
            raise DeletionRequestNotFoundError(request_id)
        return record

    def _check_requester(
        self, principal: Principal, record: DeletionRequestRecord, what: str
    ) -> None:
        if self._policy.current().person_of(principal.id) != record.requester_person:
            raise NotRequesterError(
                f"only the requester ({record.requester}) may {what} deletion request "
                f"{record.request_id}",
                record.request_id,
            )

    def _check_open(self, record: DeletionRequestRecord, now: datetime) -> None:
        if record.state is RequestState.EXPIRED or (
            record.state is RequestState.PENDING and record.expires_at <= now
        ):
            raise RequestExpiredError(
                f"deletion request {record.request_id} expired at "
                f"{format_time(record.expires_at)}: it can never run",
                record.request_id,
            )
        if record.state is not RequestState.PENDING:
            raise RequestNotPendingError(
                f"deletion request {record.request_id} is {record.state.value}"
                + (f" ({record.closed_reason})" if record.closed_reason else "")
                + ": it can no longer change",
                record.request_id,
            )

    def _check_integrity(self, record: DeletionRequestRecord) -> None:
        """The stored request is the one the audit chain recorded: its plan hashes to the hash
        stored with it and recorded when it was created (with its requester and expiry), and
        every vote is the one its own audit event recorded."""
        stored = record.stored_plan
        recorded = self._recorded_hash(record)
        if (
            stored is None
            or plan_digest(stored) != record.plan_hash
            or recorded != record.plan_hash
        ):
            raise PlanTamperedError(
                f"the stored plan of deletion request {record.request_id} does not match the "
                "hash recorded in the audit chain when it was created: it was changed outside "
                "the gateway and will not be approved or run",
                record.request_id,
            )
        for vote in record.votes:
            if not self._vote_recorded(record, vote):
                raise PlanTamperedError(
                    f"the vote of {vote.approver} on deletion request {record.request_id} is not "
                    "the one the audit chain recorded: the stored votes were changed outside the "
                    "gateway, and the request will not be approved or run",
                    record.request_id,
                )

    def _vote_recorded(self, record: DeletionRequestRecord, vote: Vote) -> bool:
        """True when the vote's audit event recorded this vote, by this principal."""
        event = self._audit.event(vote.event_id)
        if event is None:
            return False
        intent = event.entry(EntryKind.INTENT)
        if intent is None:
            return False
        cast = intent.body.get("vote") or {}
        principal = (intent.body.get("principal") or {}).get("id")
        return (
            cast.get("deletion_request_id"),
            cast.get("approve"),
            cast.get("person"),
            principal,
        ) == (record.request_id, vote.approve, vote.person, vote.approver)

    def _recorded_hash(self, record: DeletionRequestRecord) -> str | None:
        """The plan hash the audit chain recorded when the request was created, if the
        creating event also names the request's id, requester and requester's person (None
        otherwise: the stored request is not the one the chain recorded)."""
        event = self._audit.event(record.event_id)
        if event is None:
            return None
        outcome = event.entry(EntryKind.OUTCOME)
        if outcome is None:
            return None
        summary = outcome.body.get("deletion_request") or {}
        principal = (outcome.body.get("principal") or {}).get("id")
        recorded = (summary.get("id"), summary.get("requester_person"), principal)
        expires = summary.get("expires")
        if recorded != (record.request_id, record.requester_person, record.requester) or (
            expires != format_time(record.expires_at)
        ):
            return None
        found = summary.get("plan_hash")
        return str(found) if found else None

    def _event(
        self, kind: str, record: DeletionRequestRecord, actor: Principal, **data: Any
    ) -> WebhookEvent:
        return WebhookEvent(
            event_id=str(uuid.uuid4()),
            kind=kind,
            request_id=record.request_id,
            payload={
                **_summary(record),
                "actor": actor.id,
                "requester": record.requester,
                "expires": format_time(record.expires_at),
                "approvals": len(record.approvers()),
                **data,
            },
            created_at=self._clock(),
        )


@dataclass(frozen=True, slots=True)
class _ApprovedRun:
    """What the delete use case needs to run an approved plan: the request, read again under
    the package's lock, and a way to close it with the outcome."""

    desk: ApprovalDesk
    request_id: str

    def load(self) -> DeletionRequestRecord:
        return self.desk.load_for_run(self.request_id)

    def executed(
        self,
        record: DeletionRequestRecord,
        outcome: DeleteOutcome,
        journal: CallJournal,
        by: Principal,
    ) -> None:
        self.desk.executed(record, outcome, journal, by)

    def claim(self, record: DeletionRequestRecord, journal: CallJournal) -> None:
        self.desk.claim(record, journal)


def _plan_of(
    request: DeleteRequest, state: PackageState, plan: Mapping[str, PlannedVersion]
) -> DeletionPlan:
    """The deletion plan of a request: the versions it would send (allowed or waiting for
    approval), each with its revision and status, and the package facts decided on."""
    wanted = (PlanOutcome.WOULD_DELETE, PlanOutcome.WOULD_ARCHIVE, PlanOutcome.NEEDS_APPROVAL)
    items = tuple(
        PlannedItem(
            version,
            state.revisions.get(version, ""),
            planned.status,
            version == state.latest,
        )
        for version, planned in plan.items()
        if planned.outcome in wanted and planned.status is not None
    )
    return DeletionPlan(
        package=request.package,
        versions=items,
        latest=state.latest,
        version_count=len(state.statuses),
        requested=request.versions,
        justification=request.justification,
        expected_status=request.expected_status,
        allow_partial=request.allow_partial,
        purge_now=request.purge_now,
    )


def _raw_request(plan: DeletionPlan) -> RawDeleteRequest:
    """The delete an approved plan runs: exactly its versions, with the original flags."""
    package = plan.package
    return RawDeleteRequest(
        domain=package.domain,
        domain_owner=package.domain_owner or "",
        repository=package.repository,
        format=package.format,
        namespace=package.namespace or "",
        package=package.package,
        versions=[item.version for item in plan.versions],
        expected_status=plan.expected_status,
        justification=plan.justification,
        allow_partial=plan.allow_partial,
        purge_now=plan.purge_now,
    )


def _request_json(plan: DeletionPlan) -> dict[str, Any]:
    """The delete an approved plan runs, as a DeletePackageVersionsRequest's JSON."""
    return request_json(
        plan.package,
        [item.version for item in plan.versions],
        expected_status=plan.expected_status,
        justification=plan.justification,
        allow_partial=plan.allow_partial,
        purge_now=plan.purge_now,
    )


def _summary(record: DeletionRequestRecord) -> dict[str, Any]:
    """What an audit entry records of a request it creates or acts on."""
    package = record.plan.package
    return {
        "id": record.request_id,
        "plan_hash": record.plan_hash,
        "requester_person": record.requester_person,
        "expires": format_time(record.expires_at),
        "package": {
            "domain": package.domain,
            "repository": package.repository,
            "format": package.format.value,
            "namespace": package.namespace or "",
            "package": package.package,
        },
        "versions": [item.version for item in record.plan.versions],
        "required_by": list(record.required_by),
    }


def _executed_reason(record: DeletionRequestRecord, by: str) -> str:
    approvers = ", ".join(v.approver for v in record.approvers())
    return f"executed by {by}, approved by {approvers}"


def _with_vote(record: DeletionRequestRecord, vote: Vote) -> DeletionRequestRecord:
    return replace(record, votes=(*record.votes, vote))


def reason_violations(reason: str, *, required: bool) -> list[FieldViolation]:
    """What is wrong with a vote's or cancellation's reason (empty: nothing)."""
    if required and not reason.strip():
        return [FieldViolation("reason", "is required: say why")]
    if len(reason) > _MAX_REASON:
        return [FieldViolation("reason", f"must be at most {_MAX_REASON} characters")]
    if _UNSAFE.search(reason):
        return [
            FieldViolation(
                "reason",
                "must not contain control characters or bidirectional overrides (they make a "
                "reason display as something else)",
            )
        ]
    return []


def _check_reason(reason: str, *, required: bool) -> None:
    violations = reason_violations(reason, required=required)
    if violations:
        raise InvalidRequestError(violations)


def _denied(
    principal: Principal,
    what: str,
    request_id: str,
    decision: Any = None,
) -> PolicyDeniedError:
    ids: Sequence[str] = tuple(getattr(decision, "policy_ids", ()) or ())
    reason = f"denied by {', '.join(ids)}" if ids else "no policy permits it"
    return PolicyDeniedError(
        [DeniedVersion(request_id, tuple(ids), reason)],
        1,
        message=f"policy does not let {principal.id} {what}: {reason}",
    )
