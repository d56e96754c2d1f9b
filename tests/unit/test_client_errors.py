"""error_from_rpc_error turns any failed call into a PkggovError with every google.rpc detail."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from pkggov_client import (
    DeniedVersion,
    FieldViolation,
    PkggovError,
    QuotaViolation,
    ResourceDetail,
    error_from_rpc_error,
    pb,
)
from pkggov_client.testing import FakeGateway, plain_status, rich_status, serve

_REQUEST = pb.DeletePackageVersionsRequest(domain="demo", versions=["1.0.0"])


def _failed_call(target: str, *, timeout: float = 5.0) -> grpc.RpcError:
    """Call DeletePackageVersions on `target` and return the RpcError it raises."""
    with grpc.insecure_channel(target) as channel:
        stub = pb.PackageGovernanceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.DeletePackageVersions(_REQUEST, timeout=timeout)
    return raised.value


def _error_for(status: grpc.Status) -> PkggovError:
    with serve(FakeGateway(error=status)) as target:
        return error_from_rpc_error(_failed_call(target))


def test_rich_status_decodes_every_detail() -> None:
    error = _error_for(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "request is invalid",
            reason="INVALID_REQUEST",
            metadata={"aws_request_id": "req-1", "aws_error_code": "ValidationException"},
            field_violations=[("domain", "must be 2 to 50 characters"), ("versions", "empty")],
            resource=("package", "demo/dev-shared/npm/widgets", "does not exist"),
            retry_after=1.5,
        )
    )

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "request is invalid"
    assert error.reason == "INVALID_REQUEST"
    assert error.domain == "pkggov.internal"
    assert error.metadata == {"aws_request_id": "req-1", "aws_error_code": "ValidationException"}
    assert [
        FieldViolation("domain", "must be 2 to 50 characters"),
        FieldViolation("versions", "empty"),
    ] == error.field_violations
    assert ResourceDetail("package", "demo/dev-shared/npm/widgets", "does not exist") == (
        error.resource
    )
    assert error.retry_after == 1.5
    assert error.status is not None


def test_rich_error_reads_well() -> None:
    error = _error_for(
        rich_status(
            grpc.StatusCode.NOT_FOUND,
            "package widgets not found",
            reason="UPSTREAM_NOT_FOUND",
            metadata={"aws_request_id": "req-1"},
            field_violations=[("package", "unknown")],
            resource=("package", "widgets", ""),
            retry_after=2,
        )
    )

    assert str(error) == (
        "NOT_FOUND UPSTREAM_NOT_FOUND: package widgets not found\n"
        "  package: unknown\n"
        "  resource: package widgets\n"
        "  retry after: 2s\n"
        "  metadata: aws_request_id=req-1"
    )


def test_policy_denial_decodes_every_denied_version_and_the_omitted_count() -> None:
    error = _error_for(
        rich_status(
            grpc.StatusCode.PERMISSION_DENIED,
            "policy denies 52 of 60 versions",
            reason="POLICY_DENIED",
            denied_versions=[
                ("1.3.0", ["never-delete-latest"], "denied by never-delete-latest"),
                ("2.0.0", ["prod-needs-admins", "prod-needs-justification"], ""),
                ("2.1.0", [], ""),
            ],
            denied_omitted=49,
        )
    )

    assert [
        DeniedVersion("1.3.0", ("never-delete-latest",), "denied by never-delete-latest"),
        DeniedVersion("2.0.0", ("prod-needs-admins", "prod-needs-justification"), ""),
        DeniedVersion("2.1.0", (), ""),
    ] == error.denied_versions
    assert (error.denied_omitted, error.quota_violations) == (49, [])
    assert str(error) == (
        "PERMISSION_DENIED POLICY_DENIED: policy denies 52 of 60 versions\n"
        "  denied 1.3.0: denied by never-delete-latest\n"
        "  denied 2.0.0: denied by prod-needs-admins, prod-needs-justification\n"
        "  denied 2.1.0: no policy permits\n"
        "  \u2026 and 49 more denied"
    )


def test_quota_failure_decodes_every_violation() -> None:
    error = _error_for(
        rich_status(
            grpc.StatusCode.PERMISSION_DENIED,
            "120 versions requested, at most 100 allowed",
            reason="VERSION_LIMIT_EXCEEDED",
            quota_violations=[
                ("versions per call for groups: ci", "at most 100 versions per call"),
                ("versions per call for groups: none", ""),
            ],
        )
    )

    assert [
        QuotaViolation("versions per call for groups: ci", "at most 100 versions per call"),
        QuotaViolation("versions per call for groups: none", ""),
    ] == error.quota_violations
    assert (error.denied_versions, error.denied_omitted) == ([], 0)
    assert str(error) == (
        "PERMISSION_DENIED VERSION_LIMIT_EXCEEDED: 120 versions requested, at most 100 allowed\n"
        "  quota: versions per call for groups: ci: at most 100 versions per call\n"
        "  quota: versions per call for groups: none"
    )


def test_status_with_only_error_info_has_empty_details() -> None:
    error = _error_for(
        rich_status(grpc.StatusCode.INTERNAL, "no credentials", reason="GATEWAY_CREDENTIALS")
    )

    assert (
        error.reason,
        error.field_violations,
        error.resource,
        error.retry_after,
        error.denied_versions,
        error.denied_omitted,
        error.quota_violations,
    ) == ("GATEWAY_CREDENTIALS", [], None, None, [], 0, [])
    assert str(error) == "INTERNAL GATEWAY_CREDENTIALS: no credentials"


def test_status_without_details_keeps_code_and_message() -> None:
    error = _error_for(plain_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large"))

    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "message too large"
    assert (error.reason, error.domain, error.metadata, error.status) == (None, None, {}, None)
    assert str(error) == "RESOURCE_EXHAUSTED: message too large"


def test_unreachable_server_is_unavailable() -> None:
    with serve(FakeGateway()) as target:
        pass  # The server is stopped again, so nothing listens on its port.

    error = error_from_rpc_error(_failed_call(target))

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason is None


class _SlowGateway(FakeGateway):
    """Waits until released, so that a short deadline expires."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def DeletePackageVersions(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        self.release.wait(5)
        return super().DeletePackageVersions(request, context)


@pytest.fixture
def slow_target() -> Iterator[str]:
    gateway = _SlowGateway()
    with serve(gateway) as target:
        try:
            yield target
        finally:
            gateway.release.set()


def test_expired_deadline_is_deadline_exceeded(slow_target: str) -> None:
    error = error_from_rpc_error(_failed_call(slow_target, timeout=0.05))

    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason is None


class _GarbledGateway(FakeGateway):
    """Sends a details trailer that is not a google.rpc.Status."""

    def DeletePackageVersions(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        context.set_trailing_metadata((("grpc-status-details-bin", b"\xff\x00garbage"),))
        context.abort(grpc.StatusCode.INTERNAL, "boom")


def test_unreadable_details_are_ignored() -> None:
    with serve(_GarbledGateway()) as target:
        error = error_from_rpc_error(_failed_call(target))

    assert (error.code, error.message, error.reason) == (grpc.StatusCode.INTERNAL, "boom", None)


class _MismatchedGateway(FakeGateway):
    """Sends a NOT_FOUND google.rpc.Status but ends the call UNAVAILABLE."""

    def DeletePackageVersions(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        status = rich_status(grpc.StatusCode.NOT_FOUND, "gone", reason="UPSTREAM_NOT_FOUND")
        context.set_trailing_metadata(status.trailing_metadata)
        context.abort(grpc.StatusCode.UNAVAILABLE, "other")


def test_details_whose_code_disagrees_with_the_call_are_still_read() -> None:
    with serve(_MismatchedGateway()) as target:
        error = error_from_rpc_error(_failed_call(target))

    assert (
        error.code,
        error.message,
        error.reason,
    ) == (grpc.StatusCode.UNAVAILABLE, "other", "UPSTREAM_NOT_FOUND")


def test_rpc_error_that_is_not_a_call_is_unknown() -> None:
    error = error_from_rpc_error(grpc.RpcError("odd"))

    assert (error.code, error.message, error.reason) == (grpc.StatusCode.UNKNOWN, "odd", None)


def test_error_names_the_audit_event_from_its_error_info_or_none() -> None:
    """The gateway puts the event id in ErrorInfo metadata "audit_event_id"; gRPC's own errors
    (and ErrorInfo without it) have none."""
    recorded = _error_for(
        rich_status(
            grpc.StatusCode.PERMISSION_DENIED,
            "denied",
            reason="POLICY_DENIED",
            metadata={"audit_event_id": "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"},
        )
    )
    plain = _error_for(plain_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "too large"))

    assert "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13" == recorded.audit_event_id
    assert None is plain.audit_event_id
