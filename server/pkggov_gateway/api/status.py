"""Domain errors -> gRPC status with rich details, by one table (the README shows the same).

Every status carries exactly one google.rpc.ErrorInfo (domain ``pkggov.internal``, a stable
UPPER_SNAKE reason, metadata with the AWS request id when there is one), plus
BadRequest, ResourceInfo or RetryInfo where they help the caller.

`to_rpc_status` builds the whole status, which the audit record keeps; where a status is sent,
the edge cuts it to the trailer budget with `status_budget.fit_status`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.api.status_budget import MAX_DENIED_LISTED
from pkggov_gateway.domain.errors import (
    AlreadyVotedError,
    ApprovalRequiredError,
    AuditEventNotFoundError,
    AuditUnavailableError,
    CleanupJobFinishedError,
    CleanupJobNotFoundError,
    CleanupNotRequesterError,
    CleanupPlanExpiredError,
    CleanupPlanHashMismatchError,
    CleanupPlanLimitError,
    CleanupPlanNotFoundError,
    CleanupPlanTamperedError,
    CleanupRuleNotApplicableError,
    CleanupTooLargeError,
    DeadlineTooShortError,
    DeletionRequestNotFoundError,
    GatewayCredentialsError,
    GatewayDrainingError,
    InvalidRequestError,
    MalformedRequestError,
    MethodNotImplementedError,
    NotRequesterError,
    PackageBusyError,
    PkggovError,
    PlanChangedError,
    PlanTamperedError,
    PolicyDeniedError,
    QuotaExceededError,
    RequestExpiredError,
    RequestIdConflictError,
    RequestInProgressError,
    RequestNotPendingError,
    SelfApprovalError,
    UnauthenticatedError,
    UnknownCleanupRuleError,
    UpstreamAccessDeniedError,
    UpstreamConflictError,
    UpstreamInternalError,
    UpstreamNotFoundError,
    UpstreamRateLimitedError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamUnknownError,
    UpstreamValidationError,
    VersionLimitError,
)

__all__ = ["ERROR_DOMAIN", "INTERNAL_RULE", "STATUS_TABLE", "StatusRule", "to_rpc_status"]

ERROR_DOMAIN = "pkggov.internal"

_Details = Callable[[PkggovError], Sequence[Message]]


@dataclass(frozen=True, slots=True)
class StatusRule:
    """How one domain error is reported: code, ErrorInfo reason, extra details, message."""

    code: grpc.StatusCode
    reason: str
    details: _Details = lambda _error: ()
    message: Callable[[PkggovError], str] = lambda error: error.message


def _bad_request(error: PkggovError) -> Sequence[Message]:
    """Every violation (the audit record keeps them all); `fit_status` cuts the list that is
    sent to MAX_FIELD_VIOLATIONS, or fewer by bytes, and counts the rest."""
    assert isinstance(error, InvalidRequestError)  # noqa: S101 - the table pairs them
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
        for v in error.violations
    ]
    return [error_details_pb2.BadRequest(field_violations=violations)]


_UPSTREAM_FIELDS = {
    "domain": "domain",
    "domainOwner": "domain_owner",
    "repository": "repository",
    "format": "format",
    "namespace": "namespace",
    "package": "package",
    "versions": "versions",
    "expectedStatus": "expected_status",
}


def _upstream_bad_request(error: PkggovError) -> Sequence[Message]:
    """Name the fields CodeArtifact's message points at ("... at 'domain' failed ...")."""
    fields = [
        _UPSTREAM_FIELDS.get(name.split(".")[0], name)
        for name in re.findall(r"at '([^']+)'", error.message)
    ]
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=field, description=error.message)
        for field in dict.fromkeys(fields or ["request"])
    ]
    return [error_details_pb2.BadRequest(field_violations=violations)]


def _resource_info(error: PkggovError) -> Sequence[Message]:
    assert isinstance(error, UpstreamNotFoundError | UpstreamConflictError)  # noqa: S101
    return [
        error_details_pb2.ResourceInfo(
            resource_type=error.resource_type or "",
            resource_name=error.resource_id or "",
            description=error.message,
        )
    ]


def _retry_delay(delay: float) -> error_details_pb2.RetryInfo:
    seconds = math.floor(delay)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(
            seconds=seconds, nanos=int((delay - seconds) * 1_000_000_000)
        )
    )


def _retry_info(error: PkggovError) -> Sequence[Message]:
    assert isinstance(error, UpstreamThrottledError | UpstreamRateLimitedError)  # noqa: S101
    delay = error.retry_after_seconds if error.retry_after_seconds is not None else 1.0
    return [_retry_delay(delay)]


def _policy_denial(error: PkggovError) -> Sequence[Message]:
    """The first MAX_DENIED_LISTED denied versions, whole, and the count of the rest (the
    audit outcome's decisions hold every one); `fit_status` cuts what is sent by bytes."""
    assert isinstance(error, PolicyDeniedError)  # noqa: S101 - the table pairs them
    listed = error.denied[:MAX_DENIED_LISTED]
    return [
        pb.PolicyDenial(
            denied_versions=[
                pb.DeniedVersion(version=d.version, policy_ids=d.policy_ids, reason=d.reason)
                for d in listed
            ],
            omitted_count=len(error.denied) - len(listed),
        )
    ]


def _quota_failure(error: PkggovError) -> Sequence[Message]:
    assert isinstance(error, VersionLimitError)  # noqa: S101 - the table pairs them
    return [
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="versions per call for groups: " + (", ".join(error.groups) or "none"),
                    description=error.message,
                )
            ]
        )
    ]


def _quota_exceeded(error: PkggovError) -> Sequence[Message]:
    assert isinstance(error, QuotaExceededError)  # noqa: S101 - the table pairs them
    return [
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=error.subject, description=error.message
                )
            ]
        ),
        _retry_delay(error.retry_after_seconds),
    ]


def _credentials_message(error: PkggovError) -> str:
    return (
        "the gateway's own AWS credentials are missing or invalid; this is an operator "
        f"problem the caller cannot fix ({error.message})"
    )


STATUS_TABLE: dict[type[PkggovError], StatusRule] = {
    UnauthenticatedError: StatusRule(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    PolicyDeniedError: StatusRule(
        grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED", _policy_denial
    ),
    VersionLimitError: StatusRule(
        grpc.StatusCode.PERMISSION_DENIED, "VERSION_LIMIT_EXCEEDED", _quota_failure
    ),
    MalformedRequestError: StatusRule(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST"),
    MethodNotImplementedError: StatusRule(grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED"),
    InvalidRequestError: StatusRule(
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", _bad_request
    ),
    DeadlineTooShortError: StatusRule(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT"),
    GatewayDrainingError: StatusRule(grpc.StatusCode.UNAVAILABLE, "GATEWAY_SHUTTING_DOWN"),
    AuditUnavailableError: StatusRule(grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE"),
    QuotaExceededError: StatusRule(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED", _quota_exceeded
    ),
    RequestIdConflictError: StatusRule(grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED"),
    RequestInProgressError: StatusRule(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS"),
    PackageBusyError: StatusRule(grpc.StatusCode.ABORTED, "PACKAGE_BUSY"),
    AuditEventNotFoundError: StatusRule(grpc.StatusCode.NOT_FOUND, "AUDIT_EVENT_NOT_FOUND"),
    ApprovalRequiredError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "APPROVAL_REQUIRED"),
    DeletionRequestNotFoundError: StatusRule(
        grpc.StatusCode.NOT_FOUND, "DELETION_REQUEST_NOT_FOUND"
    ),
    PlanChangedError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "PLAN_CHANGED"),
    SelfApprovalError: StatusRule(grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL"),
    AlreadyVotedError: StatusRule(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_VOTED"),
    RequestNotPendingError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_NOT_PENDING"),
    RequestExpiredError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_EXPIRED"),
    NotRequesterError: StatusRule(grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER"),
    PlanTamperedError: StatusRule(grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED"),
    CleanupPlanNotFoundError: StatusRule(grpc.StatusCode.NOT_FOUND, "CLEANUP_PLAN_NOT_FOUND"),
    CleanupJobNotFoundError: StatusRule(grpc.StatusCode.NOT_FOUND, "CLEANUP_JOB_NOT_FOUND"),
    CleanupNotRequesterError: StatusRule(grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER"),
    CleanupPlanExpiredError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "PLAN_EXPIRED"),
    CleanupPlanHashMismatchError: StatusRule(
        grpc.StatusCode.FAILED_PRECONDITION, "PLAN_HASH_MISMATCH"
    ),
    CleanupPlanTamperedError: StatusRule(grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED"),
    CleanupJobFinishedError: StatusRule(
        grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_JOB_FINISHED"
    ),
    CleanupTooLargeError: StatusRule(grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_TOO_LARGE"),
    CleanupPlanLimitError: StatusRule(grpc.StatusCode.RESOURCE_EXHAUSTED, "CLEANUP_PLAN_LIMIT"),
    UnknownCleanupRuleError: StatusRule(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_CLEANUP_RULE"),
    CleanupRuleNotApplicableError: StatusRule(
        grpc.StatusCode.INVALID_ARGUMENT, "CLEANUP_RULE_NOT_APPLICABLE"
    ),
    UpstreamValidationError: StatusRule(
        grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_VALIDATION", _upstream_bad_request
    ),
    UpstreamNotFoundError: StatusRule(
        grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND", _resource_info
    ),
    UpstreamAccessDeniedError: StatusRule(
        grpc.StatusCode.PERMISSION_DENIED, "UPSTREAM_ACCESS_DENIED"
    ),
    UpstreamConflictError: StatusRule(
        grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_CONFLICT", _resource_info
    ),
    UpstreamThrottledError: StatusRule(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_THROTTLED", _retry_info
    ),
    UpstreamRateLimitedError: StatusRule(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", _retry_info
    ),
    UpstreamInternalError: StatusRule(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_INTERNAL_ERROR"),
    UpstreamUnavailableError: StatusRule(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    UpstreamTimeoutError: StatusRule(grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    GatewayCredentialsError: StatusRule(
        grpc.StatusCode.INTERNAL, "GATEWAY_CREDENTIALS", message=_credentials_message
    ),
    UpstreamUnknownError: StatusRule(grpc.StatusCode.UNKNOWN, "UPSTREAM_UNKNOWN_ERROR"),
}
"""Each concrete domain error -> how it is reported. A test checks every error has a row."""

INTERNAL_RULE = StatusRule(grpc.StatusCode.INTERNAL, "INTERNAL_ERROR")
"""How an unexpected exception (a bug) is reported; its text is logged, not sent."""


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rule_for(error: BaseException) -> StatusRule:
    """The table's rule for `error` (by exact class, then by base), else INTERNAL_RULE."""
    for cls in type(error).__mro__:
        rule = STATUS_TABLE.get(cls)
        if rule is not None:
            return rule
    return INTERNAL_RULE


def to_rpc_status(
    error: BaseException, extra_metadata: Mapping[str, str] | None = None
) -> status_pb2.Status:
    """Build the whole google.rpc.Status for `error`, with exactly one ErrorInfo first (its
    metadata plus `extra_metadata`, e.g. the audit event id); send it through `fit_status`."""
    rule = rule_for(error)
    if isinstance(error, PkggovError) and rule is not INTERNAL_RULE:
        message = rule.message(error)
        extra = rule.details(error)
        metadata = dict(error.metadata())
        if isinstance(error, UpstreamValidationError) and error.reason:
            metadata["upstream_reason"] = error.reason
    else:
        message = "internal gateway error; see the gateway's log for this request id"
        extra, metadata = (), {}
    metadata.update(extra_metadata or {})
    info = error_details_pb2.ErrorInfo(reason=rule.reason, domain=ERROR_DOMAIN, metadata=metadata)
    return status_pb2.Status(
        code=getattr(code_pb2, rule.code.name),
        message=message,
        details=[_pack(info), *(_pack(d) for d in extra)],
    )
