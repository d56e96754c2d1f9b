"""Test helpers: a scripted fake gateway (PackageGovernanceService and ApprovalService), a port-0
server for it, status builders and a deletion request builder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from pkggov_client import pb
from pkggov_client._model import PackageVersionStatus

__all__ = [
    "FakeGateway",
    "RecordedApprovalCall",
    "RecordedCall",
    "RecordedListCall",
    "RecordedRestoreCall",
    "add_decision",
    "add_vote",
    "deletion_request",
    "plain_status",
    "rich_status",
    "serve",
]


@dataclass(frozen=True)
class RecordedCall:
    """One request a `FakeGateway` received, its call metadata and seconds left to its deadline."""

    request: pb.DeletePackageVersionsRequest
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None


@dataclass(frozen=True)
class RecordedRestoreCall:
    """One RestorePackageVersions request a `FakeGateway` received, as `RecordedCall`."""

    request: pb.RestorePackageVersionsRequest
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None


@dataclass(frozen=True)
class RecordedListCall:
    """One ListPendingPurges request a `FakeGateway` received, as `RecordedCall`."""

    request: pb.ListPendingPurgesRequest
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None


@dataclass(frozen=True)
class RecordedApprovalCall:
    """One ApprovalService request a `FakeGateway` received: the method's name (such as
    "ApproveDeletionRequest"), the request, its call metadata and seconds left to its deadline."""

    method: str
    request: Message
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None


def _metadata(context: grpc.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((key, value) for key, value in context.invocation_metadata())


@dataclass
class FakeGateway(pb.PackageGovernanceServiceServicer, pb.ApprovalServiceServicer):
    """A PackageGovernanceService and ApprovalService that answer as scripted, or abort with
    `error` when set.

    DeletePackageVersions answers `response`, RestorePackageVersions `restore_response`, and
    ListPendingPurges the page of `pending_pages` keyed by the request's page_token (an empty
    page for a token it does not hold). Every call is appended to `calls`, `restore_calls` or
    `pending_calls`, so tests can check what the client sent.

    ApprovalService: Get, Approve, Reject and Cancel answer the request of `deletion_requests`
    whose key is the request's id, as it is stored there (the fake casts no vote: script the
    request as it should come back); ExecuteDeletionRequest answers it with `execute_result`;
    an id it does not hold aborts NOT_FOUND with reason DELETION_REQUEST_NOT_FOUND, as the
    gateway does. ListDeletionRequests answers the page of `deletion_request_pages` keyed by
    the request's page_token (an empty page for a token it does not hold). Every call is
    appended to `approval_calls`.
    """

    response: pb.DeletePackageVersionsResponse = field(
        default_factory=pb.DeletePackageVersionsResponse
    )
    error: grpc.Status | None = None
    calls: list[RecordedCall] = field(default_factory=list)
    restore_response: pb.RestorePackageVersionsResponse = field(
        default_factory=pb.RestorePackageVersionsResponse
    )
    restore_calls: list[RecordedRestoreCall] = field(default_factory=list)
    pending_pages: dict[str, pb.ListPendingPurgesResponse] = field(default_factory=dict)
    pending_calls: list[RecordedListCall] = field(default_factory=list)
    deletion_requests: dict[str, pb.DeletionRequest] = field(default_factory=dict)
    deletion_request_pages: dict[str, pb.ListDeletionRequestsResponse] = field(default_factory=dict)
    execute_result: pb.DeletePackageVersionsResponse = field(
        default_factory=pb.DeletePackageVersionsResponse
    )
    approval_calls: list[RecordedApprovalCall] = field(default_factory=list)

    def DeletePackageVersions(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        """Record the call, then answer it as scripted."""
        self.calls.append(RecordedCall(request, _metadata(context), context.time_remaining()))
        if self.error is not None:
            context.abort_with_status(self.error)
        return self.response

    def RestorePackageVersions(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.RestorePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.RestorePackageVersionsResponse:
        """Record the call, then answer it as scripted."""
        self.restore_calls.append(
            RecordedRestoreCall(request, _metadata(context), context.time_remaining())
        )
        if self.error is not None:
            context.abort_with_status(self.error)
        return self.restore_response

    def ListPendingPurges(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.ListPendingPurgesRequest, context: grpc.ServicerContext
    ) -> pb.ListPendingPurgesResponse:
        """Record the call, then answer the page scripted for its page_token."""
        self.pending_calls.append(
            RecordedListCall(request, _metadata(context), context.time_remaining())
        )
        if self.error is not None:
            context.abort_with_status(self.error)
        return self.pending_pages.get(request.page_token, pb.ListPendingPurgesResponse())

    def _approval_call(
        self, method: str, request: Message, context: grpc.ServicerContext
    ) -> pb.DeletionRequest:
        """Record an ApprovalService call, abort with `error` when set, and return the stored
        request named by the call's id (NOT_FOUND when there is none; List has no id and gets
        an empty request)."""
        self.approval_calls.append(
            RecordedApprovalCall(method, request, _metadata(context), context.time_remaining())
        )
        if self.error is not None:
            context.abort_with_status(self.error)
        request_id = getattr(request, "id", None)
        if request_id is None:
            return pb.DeletionRequest()
        stored = self.deletion_requests.get(request_id)
        if stored is None:
            context.abort_with_status(
                rich_status(
                    grpc.StatusCode.NOT_FOUND,
                    f"no deletion request has id {request_id!r}",
                    reason="DELETION_REQUEST_NOT_FOUND",
                    resource=("pkggov.v1.DeletionRequest", request_id, ""),
                )
            )
            raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover
        return stored

    def GetDeletionRequest(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.GetDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.GetDeletionRequestResponse:
        """Record the call, then answer the stored request."""
        stored = self._approval_call("GetDeletionRequest", request, context)
        return pb.GetDeletionRequestResponse(deletion_request=stored)

    def ListDeletionRequests(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.ListDeletionRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeletionRequestsResponse:
        """Record the call, then answer the page scripted for its page_token."""
        self._approval_call("ListDeletionRequests", request, context)
        return self.deletion_request_pages.get(
            request.page_token, pb.ListDeletionRequestsResponse()
        )

    def ApproveDeletionRequest(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.ApproveDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.ApproveDeletionRequestResponse:
        """Record the call, then answer the stored request."""
        stored = self._approval_call("ApproveDeletionRequest", request, context)
        return pb.ApproveDeletionRequestResponse(deletion_request=stored)

    def RejectDeletionRequest(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.RejectDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.RejectDeletionRequestResponse:
        """Record the call, then answer the stored request."""
        stored = self._approval_call("RejectDeletionRequest", request, context)
        return pb.RejectDeletionRequestResponse(deletion_request=stored)

    def CancelDeletionRequest(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.CancelDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.CancelDeletionRequestResponse:
        """Record the call, then answer the stored request."""
        stored = self._approval_call("CancelDeletionRequest", request, context)
        return pb.CancelDeletionRequestResponse(deletion_request=stored)

    def ExecuteDeletionRequest(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.ExecuteDeletionRequestRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteDeletionRequestResponse:
        """Record the call, then answer `execute_result` with the stored request."""
        stored = self._approval_call("ExecuteDeletionRequest", request, context)
        return pb.ExecuteDeletionRequestResponse(
            result=self.execute_result, deletion_request=stored
        )


@dataclass(frozen=True)
class _Status(grpc.Status):
    """A grpc.Status without rich details."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()


def plain_status(code: grpc.StatusCode, message: str) -> grpc.Status:
    """Return a status with no google.rpc details, as gRPC itself produces."""
    return _Status(code, message)


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    domain: str = "pkggov.internal",
    metadata: Mapping[str, str] | None = None,
    field_violations: Iterable[tuple[str, str]] = (),
    resource: tuple[str, str, str] | None = None,
    retry_after: float | None = None,
    denied_versions: Iterable[tuple[str, Sequence[str], str]] = (),
    denied_omitted: int = 0,
    quota_violations: Iterable[tuple[str, str]] = (),
) -> grpc.Status:
    """Return a status carrying a google.rpc.Status, the way the gateway sends errors.

    ErrorInfo is added when `reason` is given, BadRequest when there are `field_violations`,
    pkggov.v1.PolicyDenial when there are `denied_versions` (version, policy ids, reason) or
    `denied_omitted`, QuotaFailure when there are `quota_violations` (subject, description),
    ResourceInfo for `resource` (type, name, description) and RetryInfo for `retry_after`.
    """
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason is not None:
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
        )
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=name, description=description)
        for name, description in field_violations
    ]
    if violations:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=violations))
    denied = [
        pb.DeniedVersion(version=version, policy_ids=policy_ids, reason=why)
        for version, policy_ids, why in denied_versions
    ]
    if denied or denied_omitted:
        status.details.add().Pack(
            pb.PolicyDenial(denied_versions=denied, omitted_count=denied_omitted)
        )
    quota = [
        error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)
        for subject, description in quota_violations
    ]
    if quota:
        status.details.add().Pack(error_details_pb2.QuotaFailure(violations=quota))
    if resource is not None:
        kind, name, description = resource
        status.details.add().Pack(
            error_details_pb2.ResourceInfo(
                resource_type=kind, resource_name=name, description=description
            )
        )
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


def add_decision(
    response: pb.DeletePackageVersionsResponse | pb.RestorePackageVersionsResponse,
    version: str,
    outcome: str,
    *,
    policy_ids: Sequence[str] = (),
    message: str = "",
    status: PackageVersionStatus | str | None = None,
    is_latest: bool = False,
    purge_time: datetime | None = None,
) -> None:
    """Add a dry-run decision for `version` to `response`, as the gateway plans it.

    `outcome` is a `pkggov.v1.VersionOutcome` name without its prefix: "WOULD_DELETE",
    "WOULD_ARCHIVE", "DENIED", "NOT_FOUND", "STATUS_MISMATCH", "WOULD_RESTORE", ...; `status`
    takes the enum or its CodeArtifact spelling in any case; `purge_time` (timezone-aware) is
    when a WOULD_ARCHIVE version would be purged.
    """
    decision = response.decisions[version]
    decision.outcome = pb.VersionOutcome.Value(f"VERSION_OUTCOME_{outcome}")
    decision.policy_ids.extend(policy_ids)
    decision.message = message
    if status is not None:
        decision.status = PackageVersionStatus(status).to_proto()
    decision.is_latest = is_latest
    if purge_time is not None:
        decision.purge_time.FromDatetime(purge_time)


_STATES = {
    name.removeprefix("DELETION_REQUEST_STATE_").lower(): value
    for name, value in pb.DeletionRequestState.items()
}


def deletion_request(
    request_id: str,
    *,
    state: str = "pending",
    requester: str = "alice",
    created: datetime = datetime(2099, 1, 5, 10, 0, tzinfo=UTC),
    expires_in: timedelta = timedelta(hours=72),
    domain: str = "demo",
    domain_owner: str = "",
    repository: str = "prod-npm",
    format: str = "npm",
    namespace: str = "",
    package: str = "widgets",
    versions: Iterable[tuple[str, str, PackageVersionStatus | str, bool]] = (
        ("1.0.0", "REV1", "Published", False),
    ),
    requested: Sequence[str] | None = None,
    latest_version: str = "1.1.0",
    version_count: int = 2,
    justification: str = "",
    plan_hash: str = "ab" * 32,
    required_by: Sequence[str] = ("prod-needs-release-admin",),
    approvals: int = 0,
    audit_event_id: str = "",
    closed_reason: str = "",
    closed_audit_event_id: str = "",
) -> pb.DeletionRequest:
    """Build a `pkggov.v1.DeletionRequest` as the gateway would send it.

    `state` is a DeletionRequestState name without its prefix, in any case ("pending");
    `created` defaults to a time far ahead, so that a pending request has not expired;
    `versions` are the plan's (version, revision, status, is_latest); `requested` defaults to
    the plan's versions; add votes with `add_vote`.
    """
    plan = list(versions)
    message = pb.DeletionRequest(
        id=request_id,
        state=_STATES[state.lower()],
        requester=requester,
        domain=domain,
        domain_owner=domain_owner,
        repository=repository,
        format=pb.PackageFormat.Value(f"PACKAGE_FORMAT_{format.upper()}"),
        namespace=namespace,
        package=package,
        versions=[
            pb.PlannedVersion(
                version=version,
                revision=revision,
                status=PackageVersionStatus(status).to_proto(),
                is_latest=is_latest,
            )
            for version, revision, status, is_latest in plan
        ],
        requested_versions=[v for v, *_ in plan] if requested is None else list(requested),
        latest_version=latest_version,
        version_count=version_count,
        justification=justification,
        plan_hash=plan_hash,
        required_by=list(required_by),
        approvals=approvals,
        audit_event_id=audit_event_id,
        closed_reason=closed_reason,
        closed_audit_event_id=closed_audit_event_id,
    )
    message.create_time.FromDatetime(created)
    message.expire_time.FromDatetime(created + expires_in)
    return message


def add_vote(
    request: pb.DeletionRequest,
    approver: str,
    *,
    approve: bool = True,
    groups: Sequence[str] = (),
    reason: str = "",
    at: datetime | None = None,
    counts: bool | None = None,
    audit_event_id: str = "",
) -> pb.DeletionVote:
    """Append a vote to `request` and return it. `at` defaults to an hour after the request
    was created; `counts` defaults to `approve`. The request's `approvals` is left as it is."""
    vote = request.votes.add(
        approver=approver,
        approve=approve,
        groups=list(groups),
        reason=reason,
        counts=approve if counts is None else counts,
        audit_event_id=audit_event_id,
    )
    moment = at or request.create_time.ToDatetime(tzinfo=UTC) + timedelta(hours=1)
    vote.time.FromDatetime(moment)
    return vote


@contextlib.contextmanager
def serve(
    servicer: pb.PackageGovernanceServiceServicer,
    *,
    host: str = "127.0.0.1",
    credentials: grpc.ServerCredentials | None = None,
) -> Iterator[str]:
    """Run `servicer` on a free port of `host` and yield its target ("host:port"); one that
    is also an ApprovalService (as `FakeGateway`) serves that too. With `credentials` (such as
    `grpc.ssl_server_credentials`) the port serves TLS, else plaintext."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb.add_PackageGovernanceServiceServicer_to_server(servicer, server)
    if isinstance(servicer, pb.ApprovalServiceServicer):
        pb.add_ApprovalServiceServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port(f"{host}:0")
    else:
        port = server.add_secure_port(f"{host}:0", credentials)
    server.start()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop(grace=None).wait()
