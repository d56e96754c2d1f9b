"""Test helpers: a scripted fake gateway, a port-0 server for it, and status builders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from pkggov_client import pb
from pkggov_client._model import PackageVersionStatus

__all__ = [
    "FakeGateway",
    "RecordedCall",
    "RecordedListCall",
    "RecordedRestoreCall",
    "add_decision",
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


def _metadata(context: grpc.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((key, value) for key, value in context.invocation_metadata())


@dataclass
class FakeGateway(pb.PackageGovernanceServiceServicer):
    """A PackageGovernanceService that answers as scripted, or aborts with `error` when set.

    DeletePackageVersions answers `response`, RestorePackageVersions `restore_response`, and
    ListPendingPurges the page of `pending_pages` keyed by the request's page_token (an empty
    page for a token it does not hold). Every call is appended to `calls`, `restore_calls` or
    `pending_calls`, so tests can check what the client sent.
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


@contextlib.contextmanager
def serve(
    servicer: pb.PackageGovernanceServiceServicer, *, host: str = "127.0.0.1"
) -> Iterator[str]:
    """Run `servicer` on a free port of `host` and yield its target ("host:port")."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb.add_PackageGovernanceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop(grace=None).wait()
