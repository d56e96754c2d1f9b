"""The two translation tables: botocore errors -> domain errors -> gRPC status with details."""

from __future__ import annotations

import inspect

import botocore.session
import grpc
import pytest
from botocore import exceptions as bce
from google.rpc import code_pb2, error_details_pb2, status_pb2

from pkggov_gateway.adapters.codeartifact import CLIENT_ERROR_TABLE, translate
from pkggov_gateway.api.status import ERROR_DOMAIN, STATUS_TABLE, to_rpc_status
from pkggov_gateway.domain import errors
from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError, PkggovError


def _client_error(code: str, status: int, **fields: object) -> bce.ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened", **fields},
        "ResponseMetadata": {"RequestId": "req-123", "HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return bce.ClientError(response, "DeletePackageVersions")  # type: ignore[arg-type]


def _unpack(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, list[object]]:
    infos, others = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        else:
            others.append(detail.TypeName())
    assert 1 == len(infos), "exactly one ErrorInfo"
    return infos[0], others


def test_every_model_error_of_the_operation_is_mapped() -> None:
    """Each exception botocore's model lists for DeletePackageVersions has a table row."""
    model = botocore.session.get_session().get_service_model("codeartifact")
    listed = {s.name for s in model.operation_model("DeletePackageVersions").error_shapes}
    assert set() == listed - set(CLIENT_ERROR_TABLE)


def test_every_domain_error_has_a_status_row() -> None:
    """Each concrete PkggovError subclass is in the status table."""
    concrete = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, PkggovError)
        and cls not in (PkggovError, errors.UpstreamError)
        and not cls.__name__.startswith("_")
    }
    assert set() == concrete - set(STATUS_TABLE)


# (exception, grpc code, reason, extra detail types, metadata)
ROWS = [
    (
        _client_error("ValidationException", 400, reason="FIELD_VALIDATION_FAILED"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UPSTREAM_VALIDATION",
        ["google.rpc.BadRequest"],
        {
            "aws_request_id": "req-123",
            "aws_error_code": "ValidationException",
            "upstream_reason": "FIELD_VALIDATION_FAILED",
        },
    ),
    (
        _client_error(
            "ResourceNotFoundException", 404, resourceType="package", resourceId="left-pad"
        ),
        grpc.StatusCode.NOT_FOUND,
        "UPSTREAM_NOT_FOUND",
        ["google.rpc.ResourceInfo"],
        {"aws_request_id": "req-123", "aws_error_code": "ResourceNotFoundException"},
    ),
    (
        _client_error("AccessDeniedException", 403),
        grpc.StatusCode.PERMISSION_DENIED,
        "UPSTREAM_ACCESS_DENIED",
        [],
        {"aws_request_id": "req-123", "aws_error_code": "AccessDeniedException"},
    ),
    (
        _client_error("ConflictException", 409, resourceType="package-version", resourceId="1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "UPSTREAM_CONFLICT",
        ["google.rpc.ResourceInfo"],
        {"aws_request_id": "req-123", "aws_error_code": "ConflictException"},
    ),
    (
        _client_error("ThrottlingException", 429, retryAfterSeconds="3"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_THROTTLED",
        ["google.rpc.RetryInfo"],
        {"aws_request_id": "req-123", "aws_error_code": "ThrottlingException"},
    ),
    (
        _client_error("InternalServerException", 500),
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_INTERNAL_ERROR",
        [],
        {"aws_request_id": "req-123", "aws_error_code": "InternalServerException"},
    ),
    (
        bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        [],
        {},
    ),
    (
        bce.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        [],
        {},
    ),
    (
        bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
        [],
        {},
    ),
    (
        bce.NoCredentialsError(),
        grpc.StatusCode.INTERNAL,
        "GATEWAY_CREDENTIALS",
        [],
        {},
    ),
    (
        _client_error("UnrecognizedClientException", 403),
        grpc.StatusCode.INTERNAL,
        "GATEWAY_CREDENTIALS",
        [],
        {"aws_request_id": "req-123", "aws_error_code": "UnrecognizedClientException"},
    ),
    (
        _client_error("ServiceQuotaExceededException", 402),
        grpc.StatusCode.UNKNOWN,
        "UPSTREAM_UNKNOWN_ERROR",
        [],
        {"aws_request_id": "req-123", "aws_error_code": "ServiceQuotaExceededException"},
    ),
]


@pytest.mark.parametrize(
    ("exc", "code", "reason", "extra", "metadata"),
    ROWS,
    ids=[r[2] + ":" + type(r[0]).__name__ for r in ROWS],
)
def test_upstream_failure_maps_to_status(
    exc: Exception,
    code: grpc.StatusCode,
    reason: str,
    extra: list[str],
    metadata: dict[str, str],
) -> None:
    """Each row of the README's table: the status code, reason, details and metadata."""
    status = to_rpc_status(translate(exc))
    info, others = _unpack(status)
    assert (getattr(code_pb2, code.name), reason, ERROR_DOMAIN) == (
        status.code,
        info.reason,
        info.domain,
    )
    assert extra == others
    assert metadata == dict(info.metadata)


def test_timeout_message_says_outcome_is_unknown() -> None:
    """A read timeout while a delete is in flight says the outcome is unknown."""
    status = to_rpc_status(translate(bce.ReadTimeoutError(endpoint_url="http://x")))
    assert "outcome is unknown" in status.message


def test_throttling_retry_info_carries_retry_after() -> None:
    """RetryInfo.retry_delay is CodeArtifact's Retry-After."""
    status = to_rpc_status(
        translate(_client_error("ThrottlingException", 429, retryAfterSeconds="3"))
    )
    retry = error_details_pb2.RetryInfo()
    next(d for d in status.details if d.Is(retry.DESCRIPTOR)).Unpack(retry)
    assert 3 == retry.retry_delay.seconds


def test_not_found_resource_info() -> None:
    """ResourceInfo names the missing resource's type and id."""
    exc = _client_error(
        "ResourceNotFoundException", 404, resourceType="repository", resourceId="r1"
    )
    status = to_rpc_status(translate(exc))
    info = error_details_pb2.ResourceInfo()
    next(d for d in status.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    assert ("repository", "r1") == (info.resource_type, info.resource_name)


def test_invalid_request_bad_request_lists_each_field() -> None:
    """INVALID_ARGUMENT carries a BadRequest with one violation per bad field."""
    error = InvalidRequestError(
        [FieldViolation("domain", "is required"), FieldViolation("versions[1]", "too long")]
    )
    status = to_rpc_status(error)
    info, _ = _unpack(status)
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert (code_pb2.INVALID_ARGUMENT, "INVALID_REQUEST") == (status.code, info.reason)
    assert [("domain", "is required"), ("versions[1]", "too long")] == [
        (v.field, v.description) for v in bad.field_violations
    ]


def test_unexpected_exception_is_internal_without_leaking_text() -> None:
    """A bug is INTERNAL with reason INTERNAL_ERROR; its text stays in the log."""
    status = to_rpc_status(RuntimeError("secret detail"))
    info, _ = _unpack(status)
    assert (code_pb2.INTERNAL, "INTERNAL_ERROR") == (status.code, info.reason)
    assert "secret detail" not in status.message
