"""Proto <-> domain conversion for the pkggov.v1 messages, by table; and what the audit
record holds of a request or response (its proto JSON, or a summary)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.domain.errors import FieldViolation
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageFormat,
    PlanOutcome,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.recovery import RESTORE_METHOD, PendingPurge
from pkggov_gateway.domain.validation import RawDeleteRequest, UnknownEnumValue

__all__ = [
    "FORMATS",
    "STATUSES",
    "TIMESTAMP_RULE",
    "from_delete_request",
    "from_restore_request",
    "recorded_response",
    "render_request",
    "to_delete_response",
    "to_pending_purge",
]

FORMATS: dict[int, PackageFormat] = {
    pb.PACKAGE_FORMAT_NPM: PackageFormat.NPM,
    pb.PACKAGE_FORMAT_PYPI: PackageFormat.PYPI,
    pb.PACKAGE_FORMAT_MAVEN: PackageFormat.MAVEN,
    pb.PACKAGE_FORMAT_NUGET: PackageFormat.NUGET,
    pb.PACKAGE_FORMAT_GENERIC: PackageFormat.GENERIC,
    pb.PACKAGE_FORMAT_RUBY: PackageFormat.RUBY,
    pb.PACKAGE_FORMAT_SWIFT: PackageFormat.SWIFT,
    pb.PACKAGE_FORMAT_CARGO: PackageFormat.CARGO,
}

STATUSES: dict[int, VersionStatus] = {
    pb.PACKAGE_VERSION_STATUS_PUBLISHED: VersionStatus.PUBLISHED,
    pb.PACKAGE_VERSION_STATUS_UNFINISHED: VersionStatus.UNFINISHED,
    pb.PACKAGE_VERSION_STATUS_UNLISTED: VersionStatus.UNLISTED,
    pb.PACKAGE_VERSION_STATUS_ARCHIVED: VersionStatus.ARCHIVED,
    pb.PACKAGE_VERSION_STATUS_DISPOSED: VersionStatus.DISPOSED,
    pb.PACKAGE_VERSION_STATUS_DELETED: VersionStatus.DELETED,
}

ERROR_CODES: dict[int, VersionErrorCode] = {
    pb.PACKAGE_VERSION_ERROR_CODE_ALREADY_EXISTS: VersionErrorCode.ALREADY_EXISTS,
    pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_REVISION: VersionErrorCode.MISMATCHED_REVISION,
    pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS: VersionErrorCode.MISMATCHED_STATUS,
    pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED: VersionErrorCode.NOT_ALLOWED,
    pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND: VersionErrorCode.NOT_FOUND,
    pb.PACKAGE_VERSION_ERROR_CODE_SKIPPED: VersionErrorCode.SKIPPED,
}

_E = TypeVar("_E")


def _enum(number: int, table: Mapping[int, _E]) -> _E | UnknownEnumValue | None:
    if number == 0:
        return None
    found = table.get(number)
    return found if found is not None else UnknownEnumValue(number)


def _invert(table: dict[int, _E]) -> dict[_E, int]:
    return {value: key for key, value in table.items()}


STATUS_NUMBERS = _invert(STATUSES)
FORMAT_NUMBERS = _invert(FORMATS)

PLAN_OUTCOMES: dict[PlanOutcome, int] = {
    PlanOutcome.WOULD_DELETE: pb.VERSION_OUTCOME_WOULD_DELETE,
    PlanOutcome.DENIED: pb.VERSION_OUTCOME_DENIED,
    PlanOutcome.NOT_FOUND: pb.VERSION_OUTCOME_NOT_FOUND,
    PlanOutcome.STATUS_MISMATCH: pb.VERSION_OUTCOME_STATUS_MISMATCH,
    PlanOutcome.WOULD_ARCHIVE: pb.VERSION_OUTCOME_WOULD_ARCHIVE,
    PlanOutcome.WOULD_RESTORE: pb.VERSION_OUTCOME_WOULD_RESTORE,
    PlanOutcome.NOT_PENDING_PURGE: pb.VERSION_OUTCOME_NOT_PENDING_PURGE,
    PlanOutcome.REVISION_MISMATCH: pb.VERSION_OUTCOME_REVISION_MISMATCH,
    PlanOutcome.NEEDS_APPROVAL: pb.VERSION_OUTCOME_NEEDS_APPROVAL,
    PlanOutcome.PLAN_CHANGED: pb.VERSION_OUTCOME_PLAN_CHANGED,
}
_ERROR_CODE_NUMBERS = _invert(ERROR_CODES)


def from_delete_request(request: pb.DeletePackageVersionsRequest) -> RawDeleteRequest:
    """The request's fields as the core's unvalidated input."""
    return RawDeleteRequest(
        domain=request.domain,
        domain_owner=request.domain_owner,
        repository=request.repository,
        format=_enum(request.format, FORMATS),
        namespace=request.namespace,
        package=request.package,
        versions=list(request.versions),
        expected_status=_enum(request.expected_status, STATUSES),
        justification=request.justification,
        validate_only=request.validate_only,
        allow_partial=request.allow_partial,
        purge_now=request.purge_now,
    )


def from_restore_request(request: pb.RestorePackageVersionsRequest) -> RawDeleteRequest:
    """A restore's fields as the core's unvalidated input (the package and versions are named
    as for a delete, and checked by the same rules)."""
    return RawDeleteRequest(
        domain=request.domain,
        domain_owner=request.domain_owner,
        repository=request.repository,
        format=_enum(request.format, FORMATS),
        namespace=request.namespace,
        package=request.package,
        versions=list(request.versions),
        justification=request.justification,
        validate_only=request.validate_only,
    )


_R = TypeVar("_R", pb.DeletePackageVersionsResponse, pb.RestorePackageVersionsResponse)


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_delete_response(
    outcome: DeleteOutcome,
    *,
    with_plan: bool = False,
    response: _R | None = None,
) -> _R:
    """The merged outcome as the proto response (a delete's, or the `response` given: a
    restore's), keyed by version like CodeArtifact; with the per-version decisions when
    `with_plan` (dry runs)."""
    if response is None:
        response = pb.DeletePackageVersionsResponse()  # type: ignore[assignment]
    assert response is not None  # noqa: S101 - set above
    if with_plan:
        for version, planned in outcome.plan.items():
            decision = response.decisions[version]
            decision.outcome = PLAN_OUTCOMES[planned.outcome]  # type: ignore[assignment]
            decision.policy_ids.extend(planned.policy_ids)
            decision.message = planned.message
            decision.status = STATUS_NUMBERS.get(planned.status, 0) if planned.status else 0  # type: ignore[assignment]
            decision.is_latest = planned.is_latest
            if planned.purge_at is not None:
                decision.purge_time.CopyFrom(stamp(planned.purge_at))
    for version, ok in outcome.successful.items():
        entry = response.successful_versions[version]
        entry.revision = ok.revision
        entry.status = STATUS_NUMBERS.get(ok.status, 0) if ok.status else 0  # type: ignore[assignment]
        if ok.purge_at is not None:
            entry.purge_time.CopyFrom(stamp(ok.purge_at))
            entry.restore_method = RESTORE_METHOD
    for version, failure in outcome.failed.items():
        error = response.failed_versions[version]
        error.error_code = _ERROR_CODE_NUMBERS.get(failure.code, 0) if failure.code else 0  # type: ignore[assignment]
        error.error_message = failure.message
    return response


def to_pending_purge(purge: PendingPurge) -> pb.PendingPurge:
    """A pending purge as the proto message."""
    package = purge.package
    return pb.PendingPurge(
        domain=package.domain,
        domain_owner=package.domain_owner or "",
        repository=package.repository,
        format=FORMAT_NUMBERS[package.format],  # type: ignore[arg-type]
        namespace=package.namespace or "",
        package=package.package,
        version=purge.version,
        revision=purge.revision,
        previous_status=STATUS_NUMBERS.get(purge.previous_status, 0),  # type: ignore[arg-type]
        requester=purge.requester,
        archive_event_id=purge.archive_event_id,
        archive_time=stamp(purge.archived_at),
        purge_time=stamp(purge.due_at),
        attempts=purge.attempts,
        last_error=purge.last_error,
    )


# --- what the audit record holds of a request and a response ------------------------------


def _as_dict(message: Message) -> dict[str, Any]:
    """The message's proto JSON with its field names, every field without presence included:
    by `_Renderer` when it renders the message's type, else (and when it meets a value that
    JSON cannot show, so that the error is json_format's) by json_format."""
    render = _renderer(message.DESCRIPTOR)
    if render is not None:
        try:
            return render(message)
        except ValueError:  # a Timestamp out of range: let json_format raise its error
            pass
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


_TIMESTAMP = "google.protobuf.Timestamp"
_RENDERERS: dict[str, _Renderer | None] = {}

_PLAIN, _PRESENCE, _REPEATED, _MAP = range(4)
"""How a field is rendered: a singular field without presence (present unless it holds its
default), one with presence (a message: present when set), a repeated field, a map."""

_Render = Callable[[Any], Any] | None
"""How one value is rendered; None: as it is (a string, a bool)."""


_BUILDING = threading.RLock()
"""Held while renderers are built: `_Renderer.of` marks a type None while it builds it (a
recursive type is left to json_format), a mark no other thread may take for the result."""


def _renderer(descriptor: Any) -> _Renderer | None:
    """The renderer of the message type `descriptor` (None: json_format renders it)."""
    name = descriptor.full_name
    if name not in _RENDERERS:
        with _BUILDING:  # reentrant: building a type builds the types of its fields
            if name not in _RENDERERS:
                _RENDERERS[name] = _Renderer.of(descriptor)
    return _RENDERERS[name]


class _EnumNames(dict[int, Any]):
    """An enum's value names by number; an unknown number stays a number (an open enum)."""

    def __missing__(self, number: int) -> Any:
        return number


def _value_renderer(field: Any) -> tuple[bool, _Render]:
    """Whether `_Renderer` renders the values of `field`, and how: strings and bools as they
    are, open enums by name, Timestamps as json_format does, and messages of these kinds."""
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return field.type != FieldDescriptor.TYPE_BYTES, None
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return True, None
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        if enum.is_closed or enum.full_name == "google.protobuf.NullValue":
            return False, None
        return True, _EnumNames({value.number: value.name for value in enum.values}).__getitem__
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        name = field.message_type.full_name
        if name == _TIMESTAMP:
            return True, lambda stamp: stamp.ToJsonString()
        if name.startswith("google.protobuf."):  # json_format's own forms (wrappers, Any, ...)
            return False, None
        nested = _renderer(field.message_type)
        return nested is not None, nested
    return False, None


class _Renderer:
    """json_format.MessageToDict(preserving_proto_field_name=True,
    always_print_fields_with_no_presence=True) of one message type, equal to it key for key
    and in the same order, for types whose fields are strings, bools, open enums, Timestamps,
    messages of them, repeated ones and maps with string keys.

    json_format is generic: several calls and look-ups per field of every message. A
    response of 1,000 versions holds 1,000 messages, and rendering it for the audit took
    about an eighth of the gateway's CPU for the call; this takes less than half that.
    As in json_format: the fields set, in field number order, then those without presence
    that are not set, with their default values, in declaration order.
    """

    def __init__(
        self, fields: list[tuple[str, int, _Render]], defaults: list[tuple[str, int, Any]]
    ) -> None:
        self._fields = fields
        self._defaults = defaults

    @classmethod
    def of(cls, descriptor: Any) -> _Renderer | None:
        """The renderer of `descriptor`'s type; None when it has a field of another kind."""
        _RENDERERS[descriptor.full_name] = None  # a recursive type is left to json_format
        fields: list[tuple[int, str, int, _Render]] = []
        defaults: list[tuple[str, int, Any]] = []
        for field in descriptor.fields:
            if field.is_extension or field.containing_oneof is not None:
                return None
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                key = entry.fields_by_name["key"]
                known, render = _value_renderer(entry.fields_by_name["value"])
                if key.cpp_type != FieldDescriptor.CPPTYPE_STRING or not known:
                    return None
                fields.append((field.number, field.name, _MAP, render))
                defaults.append((field.name, _MAP, None))
                continue
            known, render = _value_renderer(field)
            if not known:
                return None
            if field.is_repeated:
                fields.append((field.number, field.name, _REPEATED, render))
                defaults.append((field.name, _REPEATED, None))
            elif field.has_presence:  # a message (proto3 optionals are in a oneof)
                if render is None:
                    return None
                fields.append((field.number, field.name, _PRESENCE, render))
            else:
                fields.append((field.number, field.name, _PLAIN, render))
                default = field.default_value
                defaults.append(
                    (field.name, _PLAIN, default if render is None else render(default))
                )
        fields.sort(key=lambda item: item[0])
        return cls([(name, kind, render) for _, name, kind, render in fields], defaults)

    def __call__(self, message: Any) -> dict[str, Any]:
        js: dict[str, Any] = {}
        for name, kind, render in self._fields:
            if kind == _PRESENCE:
                if message.HasField(name):
                    js[name] = cast(Callable[[Any], Any], render)(getattr(message, name))
                continue
            value = getattr(message, name)
            if not value:  # not set (a field without presence is set when not its default)
                continue
            if kind == _PLAIN:
                js[name] = value if render is None else render(value)
            elif render is None:
                js[name] = list(value) if kind == _REPEATED else dict(value)
            elif kind == _REPEATED:
                js[name] = [render(item) for item in value]
            else:
                js[name] = {key: render(value[key]) for key in value}
        for name, kind, default in self._defaults:
            if name not in js:
                js[name] = {} if kind == _MAP else [] if kind == _REPEATED else default
        return js


TIMESTAMP_RULE = (
    "must be a valid Timestamp: seconds within 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, "
    "nanos within 0 and 999,999,999"
)

_UNRENDERABLE = {"google.protobuf.Timestamp": TIMESTAMP_RULE}
"""What a field of this message type that JSON cannot show breaks, by type."""


def render_request(message: Message) -> tuple[dict[str, Any], list[FieldViolation]]:
    """The request as the audit records it, and the fields JSON cannot show (a Timestamp out
    of its range, say): those are recorded as unrenderable and make the call invalid, so the
    edge never fails while recording a request, whatever it holds."""
    try:
        return _as_dict(message), []
    except Exception:  # noqa: BLE001, S110 - json_format raises several types; found below
        pass
    bad: dict[str, str] = {}
    for descriptor, _ in message.ListFields():
        alone = type(message)()
        alone.MergeFrom(message)
        for other, _ in message.ListFields():
            if other.name != descriptor.name:
                alone.ClearField(other.name)
        try:
            json_format.MessageToDict(alone)
        except Exception as error:  # noqa: BLE001 - any failure makes the field unrenderable
            kind = descriptor.message_type.full_name if descriptor.message_type else ""
            bad[descriptor.name] = _UNRENDERABLE.get(kind) or (
                f"cannot be recorded: {str(error).partition(' field: ')[2] or error}"
            )
    rest = type(message)()
    rest.MergeFrom(message)
    for name in bad:
        rest.ClearField(name)
    rendered = _as_dict(rest)
    rendered.update({name: {"unrenderable": text} for name, text in bad.items()})
    return rendered, [FieldViolation(name, text) for name, text in bad.items()]


def _plan_page(response: Any) -> dict[str, Any]:
    """A page of a cleanup plan, as recorded: its header and the packages it shows."""
    return {
        "plan": _as_dict(response.plan),
        "packages": [
            f"{p.namespace}/{p.package}" if p.namespace else p.package for p in response.packages
        ],
        "next_page": bool(response.next_page_token),
    }


_SUMMARIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "pkggov.v1.ListAuditEventsResponse": lambda r: {
        "event_ids": [e.event_id for e in r.events],
        "next_page": bool(r.next_page_token),
    },
    "pkggov.v1.GetAuditEventResponse": lambda r: {"event_id": r.event.event_id},
    "pkggov.v1.PlanCleanupResponse": _plan_page,
    "pkggov.v1.GetCleanupPlanResponse": _plan_page,
    "pkggov.v1.GetCleanupJobResponse": lambda r: {
        "job": _as_dict(r.job),
        "results": [f"{p.namespace}/{p.package}" if p.namespace else p.package for p in r.results],
        "next_page": bool(r.next_page_token),
    },
}
"""Responses recorded by what they name, not whole: an audit read's answer holds recorded
bodies, which would nest (and grow) with every read of a read; a cleanup plan is stored
whole beside the audit, under the hash its outcome records, and is named here by its header
and packages."""


def recorded_response(response: Message) -> dict[str, Any]:
    """What the outcome records of an OK response."""
    summary = _SUMMARIES.get(response.DESCRIPTOR.full_name)
    return summary(response) if summary is not None else _as_dict(response)
