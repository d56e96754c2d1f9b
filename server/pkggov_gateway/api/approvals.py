"""The pkggov.v1.ApprovalService servicer: proto in, ApprovalDesk, proto out.

Errors are mapped by the edge (api.status); the desk enforces the rules (service.approvals).
"""

from __future__ import annotations

import re

import grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.convert import (
    FORMAT_NUMBERS,
    STATUS_NUMBERS,
    stamp,
    to_delete_response,
)
from pkggov_gateway.api.interceptors import governed_call
from pkggov_gateway.api.servicer import (
    DEFAULT_PAGE,
    MAX_PAGE,
    caller_deadline,
    checked_id,
    filters_digest,
    id_violations,
)
from pkggov_gateway.domain.approvals import (
    DeletionRequestQuery,
    DeletionRequestRecord,
    RequestState,
)
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.page_token import PageTokens
from pkggov_gateway.service.approvals import ApprovalDesk, reason_violations

__all__ = ["ApprovalServicer", "to_deletion_request"]

_STATES = {
    pb.DELETION_REQUEST_STATE_PENDING: RequestState.PENDING,
    pb.DELETION_REQUEST_STATE_EXECUTING: RequestState.EXECUTING,
    pb.DELETION_REQUEST_STATE_EXECUTED: RequestState.EXECUTED,
    pb.DELETION_REQUEST_STATE_REJECTED: RequestState.REJECTED,
    pb.DELETION_REQUEST_STATE_CANCELLED: RequestState.CANCELLED,
    pb.DELETION_REQUEST_STATE_EXPIRED: RequestState.EXPIRED,
}
_STATE_NUMBERS = {state: number for number, state in _STATES.items()}
_TEXT_FILTERS = {"requester": 2048, "domain": 50, "repository": 100, "package": 255}


class ApprovalServicer(pb_grpc.ApprovalServiceServicer):
    """Serves pkggov.v1.ApprovalService."""

    def __init__(
        self,
        desk: ApprovalDesk,
        page_token_key: bytes,
        *,
        default_deadline: float,
        max_deadline: float,
        drain: DrainSignal,
    ) -> None:
        self._desk = desk
        self._drain = drain
        self._tokens = PageTokens(page_token_key)
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline

    def GetDeletionRequest(  # noqa: N802 - the generated method name
        self, request: pb.GetDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.GetDeletionRequestResponse:
        """One request with its plan and votes."""
        principal, _ = governed_call(context)
        record = self._desk.get(principal, _request_id(request.id))
        return pb.GetDeletionRequestResponse(deletion_request=to_deletion_request(record))

    def ListDeletionRequests(  # noqa: N802 - the generated method name
        self, request: pb.ListDeletionRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeletionRequestsResponse:
        """One page of requests, newest first."""
        principal, _ = governed_call(context)
        tokens = self._tokens
        page = self._desk.list(principal, lambda: _query(request, tokens))
        response = pb.ListDeletionRequestsResponse(
            deletion_requests=[to_deletion_request(r) for r in page.requests]
        )
        if page.next_after is not None:
            response.next_page_token = tokens.issue_after(page.next_after, _filters(request))
        return response

    def ApproveDeletionRequest(  # noqa: N802 - the generated method name
        self, request: pb.ApproveDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.ApproveDeletionRequestResponse:
        """Approve, with a reason."""
        principal, call = governed_call(context)
        _check(request.id, request.reason, required=True, plan_hash=request.plan_hash)
        record = self._desk.vote(
            principal,
            request.id.lower(),
            request.reason,
            call,
            approve=True,
            plan_hash=request.plan_hash,
        )
        return pb.ApproveDeletionRequestResponse(deletion_request=to_deletion_request(record))

    def RejectDeletionRequest(  # noqa: N802 - the generated method name
        self, request: pb.RejectDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.RejectDeletionRequestResponse:
        """Reject, with a reason."""
        principal, call = governed_call(context)
        _check(request.id, request.reason, required=True)
        record = self._desk.vote(principal, request.id.lower(), request.reason, call, approve=False)
        return pb.RejectDeletionRequestResponse(deletion_request=to_deletion_request(record))

    def CancelDeletionRequest(  # noqa: N802 - the generated method name
        self, request: pb.CancelDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.CancelDeletionRequestResponse:
        """Cancel (the requester only)."""
        principal, call = governed_call(context)
        _check(request.id, request.reason, required=False)
        record = self._desk.cancel(principal, request.id.lower(), request.reason, call)
        return pb.CancelDeletionRequestResponse(deletion_request=to_deletion_request(record))

    def ExecuteDeletionRequest(  # noqa: N802 - the generated method name
        self, request: pb.ExecuteDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteDeletionRequestResponse:
        """Run the approved plan (the requester only)."""
        principal, call = governed_call(context)
        outcome, record = self._desk.execute(
            principal, _request_id(request.id), self._deadline(context), call
        )
        result = to_delete_response(outcome)
        result.audit_event_id = call.event_id
        return pb.ExecuteDeletionRequestResponse(
            result=result, deletion_request=to_deletion_request(record)
        )

    def _deadline(self, context: grpc.ServicerContext) -> Deadline:
        return caller_deadline(context, self._default_deadline, self._max_deadline, self._drain)


_WHAT = "a deletion request id"


def _request_id(text: str) -> str:
    return checked_id("id", text, _WHAT)


def _check(request_id: str, reason: str, *, required: bool, plan_hash: str = "") -> None:
    """Every bad field of a vote or cancellation, named at once."""
    violations = id_violations("id", request_id, _WHAT) + reason_violations(
        reason, required=required
    )
    if plan_hash and _HASH.fullmatch(plan_hash) is None:
        violations.append(
            FieldViolation("plan_hash", "must be a SHA-256 in hex (64 characters), or empty")
        )
    if violations:
        raise InvalidRequestError(violations)


_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _filters(request: pb.ListDeletionRequestsRequest) -> str:
    copy = pb.ListDeletionRequestsRequest()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    copy.ClearField("page_size")
    return filters_digest(copy)


def _query(request: pb.ListDeletionRequestsRequest, tokens: PageTokens) -> DeletionRequestQuery:
    violations = []
    for name, longest in _TEXT_FILTERS.items():
        value: str = getattr(request, name)
        if len(value) > longest:
            violations.append(FieldViolation(name, f"must be at most {longest} characters"))
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            violations.append(FieldViolation(name, "must not contain control characters"))
    state = None
    if request.state:
        state = _STATES.get(request.state)
        if state is None:
            violations.append(FieldViolation("state", "is not a DeletionRequestState value"))
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    after = None
    if request.page_token:
        try:
            after = tokens.read_after(request.page_token, _filters(request))
        except InvalidRequestError as error:
            violations += error.violations
    if violations:
        raise InvalidRequestError(violations)
    return DeletionRequestQuery(
        state=state,
        requester=request.requester or None,
        domain=request.domain or None,
        repository=request.repository or None,
        package=request.package or None,
        after=after,
        limit=min(request.page_size or DEFAULT_PAGE, MAX_PAGE),
    )


def to_deletion_request(record: DeletionRequestRecord) -> pb.DeletionRequest:
    """A request as the proto message."""
    plan = record.plan
    package = plan.package
    counted = {vote.event_id for vote in record.approvers()}
    return pb.DeletionRequest(
        id=record.request_id,
        state=_STATE_NUMBERS[record.state],
        requester=record.requester,
        create_time=stamp(record.created_at),
        expire_time=stamp(record.expires_at),
        domain=package.domain,
        domain_owner=package.domain_owner or "",
        repository=package.repository,
        format=FORMAT_NUMBERS[package.format],  # type: ignore[arg-type]
        namespace=package.namespace or "",
        package=package.package,
        versions=[
            pb.PlannedVersion(
                version=item.version,
                revision=item.revision,
                status=STATUS_NUMBERS.get(item.status, 0),  # type: ignore[arg-type]
                is_latest=item.is_latest,
            )
            for item in plan.versions
        ],
        requested_versions=list(plan.requested),
        latest_version=plan.latest or "",
        version_count=plan.version_count,
        justification=plan.justification,
        expected_status=(
            STATUS_NUMBERS.get(plan.expected_status, 0) if plan.expected_status else 0  # type: ignore[arg-type]
        ),
        allow_partial=plan.allow_partial,
        purge_now=plan.purge_now,
        plan_hash=record.plan_hash,
        required_by=list(record.required_by),
        votes=[
            pb.DeletionVote(
                approver=vote.approver,
                approve=vote.approve,
                groups=list(vote.groups),
                reason=vote.reason,
                time=stamp(vote.at),
                counts=vote.event_id in counted,
                audit_event_id=vote.event_id,
            )
            for vote in record.votes
        ],
        approvals=len(counted),
        audit_event_id=record.event_id,
        closed_reason=record.closed_reason,
        closed_audit_event_id=record.closed_event_id,
    )
