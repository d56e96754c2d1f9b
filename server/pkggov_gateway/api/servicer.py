"""The pkggov.v1 servicers: proto in, use case, proto out; errors are mapped by the edge."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import DecodeError, EncodeError, Message

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.convert import (
    FORMATS,
    TIMESTAMP_RULE,
    from_delete_request,
    from_restore_request,
    to_delete_response,
    to_pending_purge,
)
from pkggov_gateway.api.interceptors import governed
from pkggov_gateway.domain.audit import AuditEventRecord, AuditQuery, Decision, parse_time
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    FieldViolation,
    InvalidRequestError,
    MethodNotImplementedError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.page_token import PageTokens
from pkggov_gateway.domain.records import EventSummary
from pkggov_gateway.domain.recovery import PurgeQuery
from pkggov_gateway.service.audit_reads import AuditReads
from pkggov_gateway.service.delete_versions import DeletePackageVersions
from pkggov_gateway.service.restore_versions import RestorePackageVersions

__all__ = [
    "AuditServicer",
    "PackageGovernanceServicer",
    "caller_deadline",
    "check_request_id",
    "checked_id",
    "filters_digest",
    "id_violations",
]

_NO_DEADLINE = 86_400.0
DEFAULT_PAGE = 50
MAX_PAGE = 500


class PackageGovernanceServicer(pb_grpc.PackageGovernanceServiceServicer):
    """Serves pkggov.v1.PackageGovernanceService; errors are mapped by an interceptor."""

    def __init__(
        self,
        delete_versions: DeletePackageVersions,
        *,
        default_deadline: float,
        max_deadline: float,
        drain: DrainSignal,
        restore_versions: RestorePackageVersions | None = None,
        reads: AuditReads | None = None,
        page_token_key: bytes = b"",
    ) -> None:
        self._delete_versions = delete_versions
        self._restore_versions = restore_versions
        self._reads = reads
        self._tokens = PageTokens(page_token_key) if page_token_key else None
        self._drain = drain
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline

    def DeletePackageVersions(  # noqa: N802 - the generated method name
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        """Decide and delete the requested versions and report each one's outcome."""
        recorded = _replayed(request.request_id, context, pb.DeletePackageVersionsResponse())
        if recorded is not None:
            return recorded
        edge = governed(context)
        raw = from_delete_request(request)
        assert edge.principal is not None  # noqa: S101 - governed() says so
        outcome = self._delete_versions.execute(
            raw, edge.principal, self._deadline(context), edge.call
        )
        return to_delete_response(outcome, with_plan=raw.validate_only)

    def RestorePackageVersions(  # noqa: N802 - the generated method name
        self, request: pb.RestorePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.RestorePackageVersionsResponse:
        """Decide and restore the requested archived versions and report each one's outcome."""
        recorded = _replayed(request.request_id, context, pb.RestorePackageVersionsResponse())
        if recorded is not None:
            return recorded
        edge = governed(context)
        if self._restore_versions is None:
            raise MethodNotImplementedError("RestorePackageVersions")
        raw = from_restore_request(request)
        assert edge.principal is not None  # noqa: S101 - governed() says so
        outcome = self._restore_versions.execute(
            raw, edge.principal, self._deadline(context), edge.call
        )
        return to_delete_response(
            outcome, with_plan=raw.validate_only, response=pb.RestorePackageVersionsResponse()
        )

    def ListPendingPurges(  # noqa: N802 - the generated method name
        self, request: pb.ListPendingPurgesRequest, context: grpc.ServicerContext
    ) -> pb.ListPendingPurgesResponse:
        """One page of pending purges, soonest due first."""
        if self._reads is None or self._tokens is None:
            raise MethodNotImplementedError("ListPendingPurges")
        tokens = self._tokens
        page = self._reads.pending_purges(_reader(context), lambda: _purge_query(request, tokens))
        response = pb.ListPendingPurgesResponse(
            pending_purges=[to_pending_purge(p) for p in page.purges]
        )
        if page.next_after is not None:
            response.next_page_token = tokens.issue_after(page.next_after, _filters(request))
        return response

    def _deadline(self, context: grpc.ServicerContext) -> Deadline:
        return caller_deadline(context, self._default_deadline, self._max_deadline, self._drain)


def caller_deadline(
    context: grpc.ServicerContext, default: float, most: float, drain: DrainSignal
) -> Deadline:
    """The caller's deadline capped at `most`, or `default` when the caller set none; it ends
    early when the gateway drains.

    grpc reports "no deadline" as a remaining time of many years; anything beyond a day is
    taken as no deadline.
    """
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE:
        return Deadline.after(default, drain)
    return Deadline.after(min(remaining, most), drain)


UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
"""A UUID in its canonical 8-4-4-4-12 text form (uuid.UUID would also take braces, a urn:
prefix, missing hyphens and other spellings of one id, which would be different retry keys)."""


_R = TypeVar("_R", pb.DeletePackageVersionsResponse, pb.RestorePackageVersionsResponse)


def _replayed(request_id: str, context: grpc.ServicerContext, empty: _R) -> _R | None:
    """The recorded response of an earlier call with this request_id (AIP-155), or None:
    run the call. Raises as GovernedCall.replayed, and InvalidRequestError for a malformed id."""
    if not request_id:
        return None
    check_request_id(request_id)
    call = governed(context).call
    recorded = call.replayed() if call is not None else None
    if recorded is None:
        return None
    return json_format.ParseDict(dict(recorded), empty)


def id_violations(field: str, text: str, what: str) -> list[FieldViolation]:
    """The broken rules of an id field that names `what` (a UUID the gateway made)."""
    if not text:
        return [FieldViolation(field, "is required")]
    if UUID.fullmatch(text) is None:
        return [FieldViolation(field, f"must be {what} (a UUID, 8-4-4-4-12 hex)")]
    return []


def checked_id(field: str, text: str, what: str) -> str:
    """An id field, in lower case (any case is accepted); InvalidRequestError naming it."""
    violations = id_violations(field, text, what)
    if violations:
        raise InvalidRequestError(violations)
    return text.lower()


def _event_id(event_id: str) -> str:
    """An audit event id (a UUID the gateway made, in lower case); any case is accepted."""
    return checked_id("event_id", event_id, "an audit event id")


def check_request_id(request_id: str) -> None:
    if UUID.fullmatch(request_id) is None:
        raise InvalidRequestError(
            [
                FieldViolation(
                    "request_id",
                    "must be a UUID in its canonical form (8-4-4-4-12 hex digits, e.g. from "
                    "uuid4), as AIP-155 asks",
                )
            ]
        )


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Serves pkggov.v1.AuditService: reads of the audit record (authorized by the use case)."""

    def __init__(self, reads: AuditReads, page_token_key: bytes) -> None:
        self._reads = reads
        self._tokens = PageTokens(page_token_key)

    def ListAuditEvents(  # noqa: N802 - the generated method name
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        """One page of events, newest first."""
        page = self._reads.list_events(_reader(context), lambda: _query(request, self._tokens))
        response = pb.ListAuditEventsResponse()
        size = 0
        next_before = page.next_before_seq
        for i, event in enumerate(page.events):
            shown = to_audit_event(event)
            size += shown.ByteSize()
            if i and size > MAX_PAGE_BYTES:  # the rest on the next page
                next_before = page.positions[i - 1]
                break
            response.events.append(shown)
        if next_before is not None:
            response.next_page_token = self._tokens.issue(next_before, _filters(request))
        return response

    def GetAuditEvent(  # noqa: N802 - the generated method name
        self, request: pb.GetAuditEventRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditEventResponse:
        """One event by id."""
        event = self._reads.event(_reader(context), lambda: _event_id(request.event_id))
        return pb.GetAuditEventResponse(event=to_audit_event(event))


def _reader(context: grpc.ServicerContext) -> Principal:
    principal = governed(context).principal
    assert principal is not None  # noqa: S101 - governed() says so
    return principal


MAX_PAGE_BYTES = 3 * 1024 * 1024
"""A listing page ends early rather than grow past this (gRPC clients accept 4 MiB by
default; an event of a 1,000-version call with its decisions can take a megabyte)."""

_DECISIONS = frozenset(d.value for d in Decision)
_CODES = frozenset(code.name for code in grpc.StatusCode)

_FILTER_LENGTHS = {
    "principal": 2048,
    "requester": 2048,
    "domain": 50,
    "repository": 100,
    "namespace": 255,
    "package": 255,
    "version": 255,
}
"""The longest value each text filter takes: CodeArtifact's own maxima for its names (see
domain.validation), 2,048 for a principal (a SPIFFE ID's limit). Longer never matches."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLANK = re.compile(r"[\x00\s]", re.ASCII)
_NEVER_IN = {
    "principal": _CONTROL,
    "requester": _CONTROL,
    "domain": _CONTROL,
    "repository": _CONTROL,
    "namespace": _BLANK,
    "package": _BLANK,
    "version": _BLANK,
}
"""Characters no recorded value of the filter can hold, so a filter with one is a caller's
mistake, not a search: control characters in principals, domains and repositories; NUL and
whitespace in namespaces, packages and versions (CodeArtifact's names allow other control
characters, such as ESC, so they can be searched for; NUL is stored as U+FFFD)."""

_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
"""google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z."""


def _filters(request: Message) -> str:
    """A digest of a listing request's filters (all but its page token and size)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    copy.ClearField("page_size")
    return filters_digest(copy)


def filters_digest(filters: Message) -> str:
    """What a page token is bound to: the listing (its request type) and its filters, so a
    token of one listing is never taken by another."""
    kind = filters.DESCRIPTOR.full_name.encode()
    return hashlib.sha256(kind + b"\0" + filters.SerializeToString(deterministic=True)).hexdigest()[
        :32
    ]


_AUDIT_FILTERS = ("principal", "domain", "repository", "namespace", "package", "version")


def _text_violations(
    request: pb.ListAuditEventsRequest | pb.ListPendingPurgesRequest,
    names: tuple[str, ...] = _AUDIT_FILTERS,
) -> list[FieldViolation]:
    violations = []
    for name in names:
        longest = _FILTER_LENGTHS[name]
        value: str = getattr(request, name)
        if len(value) > longest:
            violations.append(
                FieldViolation(name, f"must be at most {longest} characters, got {len(value)}")
            )
        elif _NEVER_IN[name].search(value):
            what = "control characters" if _NEVER_IN[name] is _CONTROL else "NUL or whitespace"
            violations.append(FieldViolation(name, f"must not contain {what}"))
    return violations


def _time(
    request: Message,
    name: Literal["start_time", "end_time", "due_before"],
    violations: list[FieldViolation],
) -> datetime | None:
    """The timestamp field `name` (None: unset); out of Timestamp's range: a violation."""
    if not request.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, name)
    low, high = _TIMESTAMP_SECONDS
    if low <= stamp.seconds <= high and 0 <= stamp.nanos <= 999_999_999:
        return stamp.ToDatetime(UTC)
    violations.append(FieldViolation(name, TIMESTAMP_RULE))
    return None


def _query(request: pb.ListAuditEventsRequest, tokens: PageTokens) -> AuditQuery:
    """The store query for `request`; InvalidRequestError naming every bad field."""
    violations = _text_violations(request)
    before: int | None = None
    if request.page_token:
        try:
            before = tokens.read(request.page_token, _filters(request))
        except InvalidRequestError as error:
            violations += error.violations
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
            violations.append(FieldViolation("format", "is not a PackageFormat value"))
        else:
            package_format = pb.PackageFormat.Name(request.format)
    since = _time(request, "start_time", violations)
    until = _time(request, "end_time", violations)
    start, end = request.start_time, request.end_time
    if (
        since is not None
        and until is not None
        and (end.seconds, end.nanos)
        < (
            start.seconds,
            start.nanos,
        )
    ):
        violations.append(FieldViolation("end_time", "must not be before start_time"))
    if violations:
        raise InvalidRequestError(violations)
    size = request.page_size or DEFAULT_PAGE
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
        since=since,
        until=until,
        before_seq=before,
        limit=min(size, MAX_PAGE),
    )


_PURGE_FILTERS = ("domain", "repository", "package", "requester")


def _purge_query(request: pb.ListPendingPurgesRequest, tokens: PageTokens) -> PurgeQuery:
    """The store query for `request`; InvalidRequestError naming every bad field."""
    violations = _text_violations(request, _PURGE_FILTERS)
    after: tuple[str, str] | None = None
    if request.page_token:
        try:
            after = tokens.read_after(request.page_token, _filters(request))
        except InvalidRequestError as error:
            violations += error.violations
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    due_before = _time(request, "due_before", violations)
    if due_before is not None and request.due_before.nanos % 1000:
        # Stored times have microseconds: "before T + 1 ns" includes a purge due at T.
        due_before = due_before + timedelta(microseconds=1) if due_before.year < 9999 else None
    if violations:
        raise InvalidRequestError(violations)
    return PurgeQuery(
        domain=request.domain or None,
        repository=request.repository or None,
        package=request.package or None,
        requester=request.requester or None,
        due_before=due_before,
        after=after,
        limit=min(request.page_size or DEFAULT_PAGE, MAX_PAGE),
    )


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(parse_time(text))
    return stamp


_TOO_DEEP = (
    "this entry's body nests deeper than a protobuf Struct may (an audit read recorded by an "
    "earlier gateway, which kept the events it returned); the store holds it whole"
)


def to_audit_event(event: AuditEventRecord) -> pb.AuditEvent:
    """The proto view of an event: a summary and every entry as recorded."""
    summary = EventSummary.of(event)
    entries = []
    for entry in event.entries:
        shown = pb.AuditEntry(
            seq=entry.seq,
            kind=entry.kind.value,
            time=_timestamp(entry.time),
            hash=entry.hash,
            prev_hash=entry.prev_hash,
        )
        try:
            json_format.ParseDict(dict(entry.body), shown.body)
            shown.body.SerializeToString()  # within protobuf's nesting limit?
        except (json_format.ParseError, DecodeError, EncodeError, RecursionError):
            shown.body.Clear()
            shown.body.update({"body_not_shown": _TOO_DEEP})
        entries.append(shown)
    return pb.AuditEvent(
        event_id=summary.event_id,
        time=_timestamp(summary.received),
        principal=summary.principal,
        method=summary.method,
        decision=summary.decision,
        status_code=summary.status_code,
        reason=summary.reason,
        entries=entries,
    )
