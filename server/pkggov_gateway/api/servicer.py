"""The pkggov.v1 servicers: proto in, use case, proto out; errors are mapped by the edge."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime

import grpc
import structlog
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.convert import FORMATS, from_delete_request, to_delete_response
from pkggov_gateway.api.interceptors import CURRENT_AUDIT, CURRENT_PRINCIPAL, ReplayedCall
from pkggov_gateway.domain.audit import (
    AuditEventRecord,
    AuditQuery,
    Decision,
    EntryKind,
    parse_time,
    replay_verdict,
)
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    AuditEventNotFoundError,
    DeniedVersion,
    FieldViolation,
    InvalidRequestError,
    PolicyDeniedError,
    RequestIdConflictError,
    RequestInProgressError,
    UnauthenticatedError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.ports import PolicyEngine
from pkggov_gateway.service.audit import AuditCall, Auditor
from pkggov_gateway.service.delete_versions import DeletePackageVersions

__all__ = ["AuditServicer", "PackageGovernanceServicer"]

_NO_DEADLINE = 86_400.0
_DEFAULT_PAGE = 50
_MAX_PAGE = 500


def _principal() -> Principal:
    principal = CURRENT_PRINCIPAL.get()
    if principal is None:  # the edge interceptor authenticates every pkggov method
        raise UnauthenticatedError("the call carries no identity")
    return principal


class PackageGovernanceServicer(pb_grpc.PackageGovernanceServiceServicer):
    """Serves pkggov.v1.PackageGovernanceService; errors are mapped by an interceptor."""

    def __init__(
        self,
        delete_versions: DeletePackageVersions,
        *,
        default_deadline: float,
        max_deadline: float,
        drain: DrainSignal,
    ) -> None:
        self._delete_versions = delete_versions
        self._drain = drain
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline

    def DeletePackageVersions(  # noqa: N802 - the generated method name
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        """Decide and delete the requested versions and report each one's outcome."""
        principal = _principal()
        audit = CURRENT_AUDIT.get()
        if request.request_id:
            _check_request_id(request.request_id)
            if audit is not None:
                replayed = _replay(audit)
                if replayed is not None:
                    return replayed
        raw = from_delete_request(request)
        outcome = self._delete_versions.execute(raw, principal, self._deadline(context), audit)
        if audit is not None:
            audit.aws_request_ids = list(outcome.aws_request_ids)
            audit.inferred = dict(outcome.inferred)
        structlog.contextvars.bind_contextvars(aws_request_ids=list(outcome.aws_request_ids))
        return to_delete_response(outcome, with_plan=raw.validate_only)

    def _deadline(self, context: grpc.ServicerContext) -> Deadline:
        """The caller's deadline capped at the maximum, or the default when the caller set none.

        grpc reports "no deadline" as a remaining time of many years; anything beyond a day
        is taken as no deadline.
        """
        remaining = context.time_remaining()
        if remaining is None or remaining > _NO_DEADLINE:
            return Deadline.after(self._default_deadline, self._drain)
        return Deadline.after(min(remaining, self._max_deadline), self._drain)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
"""A UUID in its canonical 8-4-4-4-12 text form (uuid.UUID would also take braces, a urn:
prefix, missing hyphens and other spellings of one id, which would be different retry keys)."""


def _check_request_id(request_id: str) -> None:
    if _UUID.fullmatch(request_id) is None:
        raise InvalidRequestError(
            [
                FieldViolation(
                    "request_id",
                    "must be a UUID in its canonical form (8-4-4-4-12 hex digits, e.g. from "
                    "uuid4), as AIP-155 asks",
                )
            ]
        )


def _replay(audit: AuditCall) -> pb.DeletePackageVersionsResponse | None:
    """The recorded answer when this request_id was answered before (AIP-155); raises for a
    reused id with other content or a call still in progress; None: run the call."""
    previous = audit.previous()
    if previous is None:
        return None
    claimed = previous.entries[0].body.get("fingerprint")
    if claimed != audit.fingerprint():
        raise RequestIdConflictError(audit.request_id or "", previous.event_id)
    verdict = replay_verdict(previous)
    if verdict == "open":
        raise RequestInProgressError(audit.request_id or "", previous.event_id)
    if verdict == "rerun":
        return None
    outcome = previous.entry(EntryKind.OUTCOME)
    assert outcome is not None  # noqa: S101 - replay_verdict says so
    audit.replay_of = previous.event_id
    status = outcome.body.get("status") or {}
    if status.get("code") == "OK":
        response = pb.DeletePackageVersionsResponse()
        json_format.ParseDict(outcome.body.get("response") or {}, response)
        return response
    raise ReplayedCall(status_pb2.Status.FromString(base64.b64decode(status["details"])))


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Serves pkggov.v1.AuditService: reads of the audit record, authorized by policy."""

    def __init__(self, auditor: Auditor, policy: PolicyEngine) -> None:
        self._auditor = auditor
        self._policy = policy

    def _authorize(self) -> None:
        principal = _principal()
        decision = self._policy.current().authorize_read(principal, datetime.now(UTC))
        if not decision.allowed:
            reason = "; ".join(decision.errors) or (
                f"denied by {', '.join(decision.policy_ids)}"
                if decision.policy_ids
                else "no policy permits ReadAuditLog"
            )
            raise PolicyDeniedError(
                [DeniedVersion("audit", decision.policy_ids, reason)],
                1,
                message=f"policy does not let {principal.id} read the audit record: {reason}",
            )

    def ListAuditEvents(  # noqa: N802 - the generated method name
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        """One page of events, newest first."""
        self._authorize()
        query = _query(request)
        page = self._auditor.store.list_events(query)
        token = ""
        if page.next_before_seq is not None:
            token = _token(request, page.next_before_seq)
        return pb.ListAuditEventsResponse(
            events=[to_audit_event(event) for event in page.events], next_page_token=token
        )

    def GetAuditEvent(  # noqa: N802 - the generated method name
        self, request: pb.GetAuditEventRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditEventResponse:
        """One event by id."""
        self._authorize()
        if not request.event_id:
            raise InvalidRequestError([FieldViolation("event_id", "is required")])
        event = self._auditor.store.event(request.event_id)
        if event is None:
            raise AuditEventNotFoundError(request.event_id)
        return pb.GetAuditEventResponse(event=to_audit_event(event))


_DECISIONS = frozenset(d.value for d in Decision)
_CODES = frozenset(code.name for code in grpc.StatusCode)


def _filters(request: pb.ListAuditEventsRequest) -> str:
    copy = pb.ListAuditEventsRequest()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    copy.ClearField("page_size")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def _token(request: pb.ListAuditEventsRequest, before_seq: int) -> str:
    data = json.dumps({"before": before_seq, "filters": _filters(request)})
    return base64.urlsafe_b64encode(data.encode()).decode()


def _query(request: pb.ListAuditEventsRequest) -> AuditQuery:
    violations: list[FieldViolation] = []
    before: int | None = None
    if request.page_token:
        try:
            data = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
            before = int(data["before"])
            same = data["filters"] == _filters(request)
        except (ValueError, KeyError, TypeError, binascii.Error):
            violations.append(FieldViolation("page_token", "is not a token this service issued"))
        else:
            if not same:
                violations.append(
                    FieldViolation("page_token", "was issued for other filters; keep them equal")
                )
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if request.decision and request.decision not in _DECISIONS:
        violations.append(
            FieldViolation("decision", f"must be one of {', '.join(sorted(_DECISIONS))}")
        )
    if request.status_code and request.status_code not in _CODES:
        violations.append(FieldViolation("status_code", "must be a gRPC status code name"))
    package_format = None
    if request.format:
        if request.format not in FORMATS:
            violations.append(FieldViolation("format", f"unknown value {request.format}"))
        else:
            package_format = pb.PackageFormat.Name(request.format)
    if violations:
        raise InvalidRequestError(violations)
    size = request.page_size or _DEFAULT_PAGE
    return AuditQuery(
        principal=request.principal or None,
        domain=request.domain or None,
        repository=request.repository or None,
        format=package_format,
        namespace=request.namespace or None,
        package=request.package or None,
        version=request.version or None,
        decision=request.decision or None,
        status_code=request.status_code or None,
        since=request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None,
        until=request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None,
        before_seq=before,
        limit=min(size, _MAX_PAGE),
    )


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(parse_time(text))
    return stamp


def to_audit_event(event: AuditEventRecord) -> pb.AuditEvent:
    """The proto view of an event: a summary and every entry as recorded."""
    first = event.entries[0].body
    outcome = event.entry(EntryKind.OUTCOME)
    status = (outcome.body.get("status") or {}) if outcome is not None else {}
    entries = []
    for entry in event.entries:
        body = struct_pb2.Struct()
        json_format.ParseDict(dict(entry.body), body)
        entries.append(
            pb.AuditEntry(
                seq=entry.seq,
                kind=entry.kind.value,
                time=_timestamp(str(entry.body["time"])),
                hash=entry.hash,
                prev_hash=entry.prev_hash,
                body=body,
            )
        )
    return pb.AuditEvent(
        event_id=event.event_id,
        time=_timestamp(str(first.get("received") or first["time"])),
        principal=str((first.get("principal") or {}).get("id") or ""),
        method=str((first.get("rpc") or {}).get("method") or ""),
        decision=str(outcome.body.get("decision") or "") if outcome is not None else "",
        status_code=str(status.get("code") or ""),
        reason=str(status.get("reason") or ""),
        entries=entries,
    )
