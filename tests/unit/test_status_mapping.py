"""The two translation tables: botocore errors -> domain errors -> gRPC status with details;
and the trailer budget every status is cut to before it is sent."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import botocore.session
import grpc
import pytest
from botocore import exceptions as bce
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.adapters.codeartifact_errors import CLIENT_ERROR_TABLE, translate
from pkggov_gateway.api.status import ERROR_DOMAIN, STATUS_TABLE, rule_for, to_rpc_status
from pkggov_gateway.api.status_budget import (
    ELLIPSIS,
    MAX_DENIED_LISTED,
    MAX_FIELD_VIOLATIONS,
    MAX_MESSAGE_BYTES,
    METADATA_LIMIT,
    STATUS_BUDGET,
    TRAILER_BUDGET,
    cut_text,
    entry_bytes,
    fit_status,
    percent_encoded_bytes,
    status_trailer_bytes,
)
from pkggov_gateway.domain import errors
from pkggov_gateway.domain.errors import (
    DeniedVersion,
    FieldViolation,
    InvalidRequestError,
    PkggovError,
    PolicyDeniedError,
)


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
        and cls
        not in (PkggovError, errors.UpstreamError, errors.DeletionRequestError, errors.CleanupError)
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


# --- the trailer budget ---------------------------------------------------------------------

EMOJI = "\U0001f600"
HUGE = ("%é\x01" + EMOJI + "a") * 12_000
"""60,000 characters that cost the most: percent-encoded 3 to 12 bytes each, and `%`."""

EVENT_ID = "0f4d8a52-9d1c-4b8e-8f1e-6c2d7a9b3e10"
SENT_BESIDE = entry_bytes("grpc-status", 2) + entry_bytes("x-pkggov-audit-event-id", len(EVENT_ID))
"""What the trailers beside the status count: grpc-status and the audit event id."""

_WORST_ARGUMENTS: list[tuple[Any, Any]] = [
    (str, HUGE),
    (str | None, HUGE),
    (int, 2**31 - 1),
    (float, 1e12),
    (float | None, 1e12),
    (bool, True),
    (Sequence[str], [f"{HUGE}{i}" for i in range(50)]),
    (
        Sequence[FieldViolation],
        [FieldViolation(f"versions[{i}]{HUGE}", HUGE) for i in range(1000)],
    ),
    (
        Sequence[DeniedVersion],
        [DeniedVersion(f"{HUGE}{i}", (HUGE, HUGE), HUGE) for i in range(1000)],
    ),
]
"""A parameter's annotation -> the worst value for it: long, costly to encode, many."""


def _worst(cls: type[PkggovError]) -> PkggovError:
    """`cls` built with the worst value for each parameter (keyword ones included)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in inspect.signature(cls, eval_str=True).parameters.values():
        if param.kind is param.VAR_KEYWORD:  # UpstreamError's aws_request_id, aws_error_code
            kwargs.update(aws_request_id=HUGE, aws_error_code=HUGE)
            continue
        value = next((v for a, v in _WORST_ARGUMENTS if a == param.annotation), None)
        assert value is not None, f"no worst value for {cls.__name__}.{param.name}"
        if param.kind is param.KEYWORD_ONLY:
            kwargs[param.name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


def _type_names(status: status_pb2.Status) -> list[str]:
    return sorted(str(d.type_url) for d in status.details)


def _listed_and_left_out(status: status_pb2.Status) -> tuple[int, int] | None:
    """(entries listed, entries counted as left out) of the status's list detail, if any."""
    for packed in status.details:
        if packed.Is(pb.PolicyDenial.DESCRIPTOR):
            denial = pb.PolicyDenial()
            packed.Unpack(denial)
            return len(denial.denied_versions), denial.omitted_count
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            *shown, last = bad.field_violations
            if last.description.endswith("more violation(s) of the same rules"):
                return len(shown), int(last.description.split()[1])
            return len(bad.field_violations), 0
    return None


def test_the_budget_leaves_a_margin_below_grpcs_limit() -> None:
    """Status budget + what is sent beside it <= the trailer budget, a KiB below 8 KiB."""
    assert STATUS_BUDGET + SENT_BESIDE <= TRAILER_BUDGET <= METADATA_LIMIT - 1024


@pytest.mark.parametrize("cls", list(STATUS_TABLE), ids=lambda cls: cls.__name__)
def test_every_status_fits_whatever_the_error_held(cls: type[PkggovError]) -> None:
    """Each row built from its worst error: the sent status fits the budget with the same
    code, one ErrorInfo with reason, domain and every metadata key (the audit event id
    whole), the message cut from the whole one, every detail, and the lists' counts."""
    error = _worst(cls)
    whole = to_rpc_status(error, {"audit_event_id": EVENT_ID})
    sent = fit_status(whole)
    assert status_trailer_bytes(sent) + SENT_BESIDE <= TRAILER_BUDGET
    info, _ = _unpack(sent)
    whole_info, _ = _unpack(whole)
    assert (whole.code, rule_for(error).reason, ERROR_DOMAIN, EVENT_ID) == (
        sent.code,
        info.reason,
        info.domain,
        info.metadata["audit_event_id"],
    )
    assert sorted(whole_info.metadata) == sorted(info.metadata)
    assert sent.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
    assert percent_encoded_bytes(sent.message) <= MAX_MESSAGE_BYTES
    assert sent.message == whole.message or (
        sent.message.endswith(ELLIPSIS) and whole.message.startswith(sent.message[:-1])
    )
    assert _type_names(whole) == _type_names(sent)
    counts = _listed_and_left_out(sent)
    if isinstance(error, PolicyDeniedError):
        assert counts is not None
        assert len(error.denied) == sum(counts)
        assert 1 <= counts[0] <= MAX_DENIED_LISTED
    if isinstance(error, InvalidRequestError):
        assert counts is not None
        assert len(error.violations) == sum(counts)
        assert 1 <= counts[0] <= MAX_FIELD_VIOLATIONS
    assert sent == fit_status(sent)  # a replay of what was sent is sent the same


def test_internal_error_fits() -> None:
    """An unexpected exception's status fits (its text is not sent at all)."""
    sent = fit_status(to_rpc_status(RuntimeError(HUGE), {"audit_event_id": EVENT_ID}))
    assert status_trailer_bytes(sent) <= STATUS_BUDGET
    assert ("INTERNAL_ERROR", EVENT_ID) == (
        _unpack(sent)[0].reason,
        _unpack(sent)[0].metadata["audit_event_id"],
    )


def test_message_is_cut_by_its_percent_encoded_size() -> None:
    """A message of 4-byte characters is cut to at most 1 KiB percent-encoded, with "…"."""
    cut = cut_text(EMOJI * 1000, MAX_MESSAGE_BYTES, percent_encoded_bytes)
    assert cut.endswith(ELLIPSIS)
    assert MAX_MESSAGE_BYTES - 12 < percent_encoded_bytes(cut) <= MAX_MESSAGE_BYTES
    assert EMOJI * 1000 == cut_text(EMOJI * 1000, 12_000, percent_encoded_bytes)


def test_valid_versions_are_listed_whole() -> None:
    """Denied versions of 255 4-byte characters (the longest valid) are listed whole: fewer
    of them, and the rest counted."""
    versions = [EMOJI * 250 + f"{i:05d}" for i in range(100)]
    denied = [
        DeniedVersion(v, ("never-delete-latest",), "denied: no policy permits it") for v in versions
    ]
    whole = to_rpc_status(PolicyDeniedError(denied, 100))
    sent = fit_status(whole)
    denial = pb.PolicyDenial()
    next(d for d in sent.details if d.Is(denial.DESCRIPTOR)).Unpack(denial)
    assert versions[: len(denial.denied_versions)] == [d.version for d in denial.denied_versions]
    assert 100 == len(denial.denied_versions) + denial.omitted_count


def test_whole_status_keeps_every_violation() -> None:
    """The status the audit records lists every violation; the one sent counts the rest."""
    error = InvalidRequestError([FieldViolation(f"versions[{i}]", "too long") for i in range(1000)])
    whole = to_rpc_status(error)
    assert (1000, 0) == _listed_and_left_out(whole)
    assert (MAX_FIELD_VIOLATIONS, 1000 - MAX_FIELD_VIOLATIONS) == _listed_and_left_out(
        fit_status(whole)
    )


def test_a_recorded_count_is_kept_when_cut_again() -> None:
    """A status recorded with "and N more" (as before statuses were fitted) keeps N."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            *(
                error_details_pb2.BadRequest.FieldViolation(
                    field=f"versions[{i}]", description=HUGE
                )
                for i in range(20)
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="versions", description="and 980 more violation(s) of the same rules"
            ),
        ]
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain=ERROR_DOMAIN)
    recorded = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="invalid")
    recorded.details.add().Pack(info)
    recorded.details.add().Pack(bad)
    counts = _listed_and_left_out(fit_status(recorded))
    assert counts is not None
    assert 1000 == sum(counts)


def test_error_info_survives_when_nothing_else_fits() -> None:
    """Huge metadata values, a huge message and a huge unknown detail: the ErrorInfo stays
    (values cut), the detail that cannot fit is dropped."""
    info = error_details_pb2.ErrorInfo(
        reason="QUOTA_EXCEEDED",
        domain=ERROR_DOMAIN,
        metadata={"audit_event_id": EVENT_ID, **{f"key{i}": HUGE for i in range(8)}},
    )
    unknown = any_pb2.Any(type_url="type.googleapis.com/example.Unknown", value=b"x" * 20_000)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=HUGE)
    status.details.add().Pack(info)
    status.details.append(unknown)
    sent = fit_status(status)
    assert status_trailer_bytes(sent) <= STATUS_BUDGET
    assert 1 == len(sent.details)
    kept, _ = _unpack(sent)
    assert ("QUOTA_EXCEEDED", EVENT_ID) == (kept.reason, kept.metadata["audit_event_id"])
    assert sorted(info.metadata) == sorted(kept.metadata)
