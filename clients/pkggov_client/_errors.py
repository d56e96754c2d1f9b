"""The one error a pkggov call raises, decoded from the gateway's google.rpc.Status.

Exception hierarchy::

    Exception
     └── PkggovError      any non-OK status from the gateway or from gRPC itself

The gateway sends every error as a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer with one ``ErrorInfo`` and maybe ``BadRequest``, ``ResourceInfo``, ``RetryInfo``,
``QuotaFailure`` (reason VERSION_LIMIT_EXCEEDED) and ``pkggov.v1.PolicyDenial`` (reason
POLICY_DENIED).
Statuses produced by gRPC itself (server down, deadline, message too large) carry no details;
they decode into a `PkggovError` whose `reason` is None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from pkggov_client import pb
from pkggov_client._text import printable

__all__ = [
    "DeniedVersion",
    "FieldViolation",
    "PkggovError",
    "QuotaViolation",
    "ResourceDetail",
    "error_from_rpc_error",
]

_DETAILS_TRAILER = "grpc-status-details-bin"


class FieldViolation(NamedTuple):
    """One bad request field, from google.rpc.BadRequest."""

    field: str
    description: str


class ResourceDetail(NamedTuple):
    """The resource an error is about, from google.rpc.ResourceInfo."""

    type: str
    name: str
    description: str


class DeniedVersion(NamedTuple):
    """One version that policy denied, from pkggov.v1.PolicyDenial.

    `policy_ids` are the @id annotations of the deciding policies; empty means that no policy
    permits the version.
    """

    version: str
    policy_ids: tuple[str, ...]
    reason: str


class QuotaViolation(NamedTuple):
    """One exceeded limit, from google.rpc.QuotaFailure."""

    subject: str
    description: str


class PkggovError(Exception):
    """Raised when a pkggov call ends with any non-OK gRPC status.

    `reason`, `domain` and `metadata` come from the status's ErrorInfo, `field_violations`
    from BadRequest, `resource` from ResourceInfo, `retry_after` (seconds) from RetryInfo,
    `quota_violations` from QuotaFailure, and `denied_versions` with `denied_omitted` (how
    many more denied versions the gateway did not list) from pkggov.v1.PolicyDenial; each is
    empty, zero or None when the status did not carry it. `status` is the decoded
    ``google.rpc.Status``, or None when the call had no details. `audit_event_id`,
    `deletion_request_id` and `plan_hash` read the ErrorInfo metadata of those names: a delete
    that needs approval (`approval_required`, reason APPROVAL_REQUIRED) names the deletion
    request it recorded and its plan's hash.
    """

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    metadata: Mapping[str, str]
    field_violations: list[FieldViolation]
    resource: ResourceDetail | None
    retry_after: float | None
    denied_versions: list[DeniedVersion]
    denied_omitted: int
    quota_violations: list[QuotaViolation]
    status: status_pb2.Status | None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        resource: tuple[str, str, str] | None = None,
        retry_after: float | None = None,
        denied_versions: Iterable[tuple[str, Sequence[str], str]] = (),
        denied_omitted: int = 0,
        quota_violations: Iterable[tuple[str, str]] = (),
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = MappingProxyType(dict(metadata or {}))
        self.field_violations = [FieldViolation(*violation) for violation in field_violations]
        self.resource = None if resource is None else ResourceDetail(*resource)
        self.retry_after = retry_after
        self.denied_versions = [
            DeniedVersion(version, tuple(policy_ids), reason)
            for version, policy_ids, reason in denied_versions
        ]
        self.denied_omitted = denied_omitted
        self.quota_violations = [QuotaViolation(*violation) for violation in quota_violations]
        self.status = status

    @property
    def audit_event_id(self) -> str | None:
        """The id of the audit event that recorded the failed call (ErrorInfo metadata
        "audit_event_id"), or None when the error did not come from the gateway's record."""
        return self.metadata.get("audit_event_id") or None

    @property
    def deletion_request_id(self) -> str | None:
        """The deletion request the error is about (ErrorInfo metadata "deletion_request_id"),
        or None. For reason APPROVAL_REQUIRED it is the request the call recorded instead of
        deleting: approvers vote on it (`PkggovClient.approve_deletion_request`) and its
        requester then runs it (`PkggovClient.execute_deletion_request`)."""
        return self.metadata.get("deletion_request_id") or None

    @property
    def plan_hash(self) -> str | None:
        """The SHA-256 (hex) of the plan that needs approval (ErrorInfo metadata "plan_hash",
        reason APPROVAL_REQUIRED), which approvers see on the request; or None."""
        return self.metadata.get("plan_hash") or None

    @property
    def approval_required(self) -> bool:
        """True when the call needs approval (reason APPROVAL_REQUIRED): nothing was deleted."""
        return self.reason == "APPROVAL_REQUIRED"

    @property
    def headline(self) -> str:
        """The first line of the error: ``<CODE> <reason>: <message>``, each value that came
        from the gateway made `printable` (a newline or a terminal escape in it shows as
        ``\\n``, ``\\x1b``)."""
        head = self.code.name if self.reason is None else f"{self.code.name} {self.reason}"
        head = printable(head)
        return f"{head}: {printable(self.message)}" if self.message else head

    def detail_lines(self) -> list[str]:
        """One indented line per detail: field violations, denied versions, quota violations,
        resource, retry delay, metadata; every value `printable`, as in `headline`."""
        p = printable
        lines = [f"  {p(field)}: {p(description)}" for field, description in self.field_violations]
        lines.extend(
            f"  denied {p(denied.version)}: {p(_denial_reason(denied))}"
            for denied in self.denied_versions
        )
        if self.denied_omitted:
            lines.append(f"  \u2026 and {self.denied_omitted} more denied")
        lines.extend(
            f"  quota: {p(subject)}: {p(description)}" if description else f"  quota: {p(subject)}"
            for subject, description in self.quota_violations
        )
        if self.resource is not None:
            kind, name, description = self.resource
            lines.append(
                f"  resource: {p(kind)} {p(name)}" + (f": {p(description)}" if description else "")
            )
        if self.retry_after is not None:
            lines.append(f"  retry after: {self.retry_after:g}s")
        if self.metadata:
            pairs = ", ".join(f"{p(key)}={p(self.metadata[key])}" for key in sorted(self.metadata))
            lines.append(f"  metadata: {pairs}")
        return lines

    def __str__(self) -> str:
        return "\n".join([self.headline, *self.detail_lines()])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, reason={self.reason!r})"


def _denial_reason(denied: DeniedVersion) -> str:
    """The gateway's reason for a denial, or one built from its policy ids when it sent none."""
    if denied.reason:
        return " ".join(denied.reason.split())
    if denied.policy_ids:
        return "denied by " + ", ".join(denied.policy_ids)
    return "no policy permits"


def _rich_status(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    """Decode the google.rpc.Status trailer; None when absent or unreadable."""
    for key, value in trailers:
        if key == _DETAILS_TRAILER and isinstance(value, bytes):
            try:
                status: status_pb2.Status = status_pb2.Status.FromString(value)
            except DecodeError:
                return None
            return status
    return None


def error_from_rpc_error(err: grpc.RpcError) -> PkggovError:
    """Translate a failed gRPC call into a `PkggovError`, unpacking every known detail.

    Unlike ``grpc_status.rpc_status.from_call`` this never raises: a trailer whose code or
    message disagrees with the call's is still used for its details, and a trailer that does
    not decode is ignored. The call's own code and message win.
    """
    call: object = err  # grpc raises objects that are both RpcError and Call.
    trailers: Iterable[tuple[str, str | bytes]] = ()
    if isinstance(call, grpc.Call):
        code = call.code()
        message = call.details() or ""
        trailers = call.trailing_metadata() or ()
    else:
        code, message = grpc.StatusCode.UNKNOWN, str(err)
    status = _rich_status(trailers)
    if status is None:
        return PkggovError(code, message)

    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    resource: ResourceDetail | None = None
    retry_after: float | None = None
    denied: list[DeniedVersion] = []
    denied_omitted = 0
    quota: list[QuotaViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and reason is None:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain = info.reason or None, info.domain or None
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(violation.field, violation.description)
                for violation in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR) and resource is None:
            found = error_details_pb2.ResourceInfo()
            detail.Unpack(found)
            resource = ResourceDetail(found.resource_type, found.resource_name, found.description)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) and retry_after is None:
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif detail.Is(pb.PolicyDenial.DESCRIPTOR):
            denial = pb.PolicyDenial()
            detail.Unpack(denial)
            denied.extend(
                DeniedVersion(d.version, tuple(d.policy_ids), d.reason)
                for d in denial.denied_versions
            )
            denied_omitted += max(denial.omitted_count, 0)
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota_failure = error_details_pb2.QuotaFailure()
            detail.Unpack(quota_failure)
            quota.extend(
                QuotaViolation(violation.subject, violation.description)
                for violation in quota_failure.violations
            )
    return PkggovError(
        code,
        message or status.message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        resource=resource,
        retry_after=retry_after,
        denied_versions=denied,
        denied_omitted=denied_omitted,
        quota_violations=quota,
        status=status,
    )
