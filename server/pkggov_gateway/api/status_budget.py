"""Fit a google.rpc.Status into a byte budget, so the caller's gRPC client accepts the trailers.

A status leaves in two trailers: its message in ``grpc-message`` (percent-encoded: every byte
outside printable ASCII, and ``%``, becomes three) and the whole serialized status in
``grpc-status-details-bin`` (base64 on the wire: 4/3; grpc-core counts the decoded bytes, but
we count the base64 in case a client counts the wire). gRPC clients refuse a trailer block
larger than ``grpc.max_metadata_size`` (8 KiB by default, counting name + value + 32 bytes per
entry as HPACK does) and report RESOURCE_EXHAUSTED instead of our status. `fit_status` makes
any status fit `STATUS_BUDGET` by those counts, whatever the input held:

1. the message is cut to `MAX_MESSAGE_BYTES` percent-encoded, ending in an ellipsis (…);
2. every string in a detail is cut to `MAX_TEXT_BYTES` of UTF-8 (ErrorInfo metadata values to
   `MAX_METADATA_BYTES`), ending in an ellipsis;
3. the one ErrorInfo (reason, domain, metadata with the audit event id) is always kept;
4. lists are cut by bytes (and to `MAX_LISTED` entries) and count what they leave out:
   PolicyDenial adds to ``omitted_count``, BadRequest ends with an "and N more" violation
   (when not even one entry fits, the entries' strings are cut shorter);
5. a detail that still does not fit is dropped (only a pathological one: a test shows every
   status the gateway makes fits).

The gateway fits a status where it is sent; the audit record keeps it whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from pkggov.v1 import package_governance_pb2 as pb

__all__ = [
    "ELLIPSIS",
    "MAX_DENIED_LISTED",
    "MAX_FIELD_VIOLATIONS",
    "MAX_LISTED",
    "MAX_MESSAGE_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_BYTES",
    "METADATA_LIMIT",
    "OTHER_TRAILERS",
    "STATUS_BUDGET",
    "TRAILER_BUDGET",
    "cut_text",
    "entry_bytes",
    "fit_status",
    "percent_encoded_bytes",
    "status_trailer_bytes",
]

METADATA_LIMIT = 8 * 1024
"""gRPC's default ``grpc.max_metadata_size``: the largest trailer block a client accepts."""

TRAILER_BUDGET = 7 * 1024
"""What the gateway lets its whole trailer block cost: a KiB below `METADATA_LIMIT` (the
accounting of other gRPC implementations may differ by a few bytes per entry)."""

OTHER_TRAILERS = 256
"""Kept for the trailers beside the status: ``grpc-status`` (45 bytes counted) and
``x-pkggov-audit-event-id`` (91 for a UUID)."""

STATUS_BUDGET = TRAILER_BUDGET - OTHER_TRAILERS
"""What ``grpc-message`` and ``grpc-status-details-bin`` may cost together (6,912 bytes)."""

MAX_MESSAGE_BYTES = 1024
"""The longest message, percent-encoded (1,024 ASCII characters, 341 of 3 or 4 bytes)."""

MAX_TEXT_BYTES = 1024
"""The longest string in a detail, in UTF-8: any valid CodeArtifact name or version (at most
255 characters of at most 4 bytes) is kept whole."""

MAX_METADATA_BYTES = 256
"""The longest ErrorInfo metadata value, in UTF-8 (request ids and error codes are far shorter)."""

MAX_DENIED_LISTED = 50
"""A PolicyDenial lists at most this many versions, as recorded and as sent (fewer there when
their bytes do not fit the budget); ``omitted_count`` counts the rest, and the audit outcome's
per-version decisions hold every one."""

MAX_FIELD_VIOLATIONS = 20
"""A BadRequest as sent lists at most this many violations (fewer when their bytes do not fit
the budget), then one more that counts the rest; the audit record keeps them all."""

ELLIPSIS = "…"
"""Ends every cut string."""

_ENTRY_OVERHEAD = 32
"""What HPACK (RFC 7541 section 4.1), and so gRPC's limit, counts per entry besides its bytes."""

_MESSAGE_KEY = "grpc-message"
_DETAILS_KEY = "grpc-status-details-bin"


_PLAIN = bytes(byte for byte in range(0x20, 0x7F) if byte != 0x25)
"""The bytes gRPC leaves as they are in ``grpc-message``: printable ASCII but ``%``."""


def percent_encoded_bytes(text: str) -> int:
    """Bytes of `text` in ``grpc-message``, where each byte not in `_PLAIN` becomes ``%XX``."""
    raw = text.encode()
    return len(raw) + 2 * len(raw.translate(None, _PLAIN))


def _utf8_bytes(text: str) -> int:
    return len(text.encode())


def cut_text(text: str, limit: int, cost: Callable[[str], int] = _utf8_bytes) -> str:
    """`text` when it costs at most `limit`, else its longest prefix that costs at most `limit`
    with an ellipsis after it (cut between characters, never inside one)."""
    if cost(text) <= limit:
        return text
    room, end = limit - cost(ELLIPSIS), 0
    for char in text:
        room -= cost(char)
        if room < 0:
            break
        end += 1
    return text[:end] + ELLIPSIS


def entry_bytes(key: str, value_bytes: int) -> int:
    """What one trailer entry counts toward the limit."""
    return len(key) + value_bytes + _ENTRY_OVERHEAD


def status_trailer_bytes(status: status_pb2.Status) -> int:
    """What `status` costs in the trailer block: its message percent-encoded, its details
    base64-encoded, each with its key and HPACK's overhead."""
    return entry_bytes(_MESSAGE_KEY, percent_encoded_bytes(status.message)) + entry_bytes(
        _DETAILS_KEY, 4 * math.ceil(status.ByteSize() / 3)
    )


@dataclass(frozen=True, slots=True)
class _Caps:
    """How long the message and strings may be, in bytes (see the module's constants)."""

    message: int
    text: int
    metadata: int


_CAPS = (
    _Caps(MAX_MESSAGE_BYTES, MAX_TEXT_BYTES, MAX_METADATA_BYTES),
    _Caps(256, 128, 64),
)
"""Tried in turn: the first for every status the gateway makes; the second if the message and
ErrorInfo alone would not fit with the first (only with many long metadata values)."""


def _cap_strings(message: Message, limit: int) -> None:
    """Cut every string in `message` (nested messages and map values included) to `limit`."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                cut = [cut_text(item, limit) for item in value]
                del value[:]
                value.extend(cut)
            else:
                setattr(message, field.name, cut_text(value, limit))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                strings = entry.fields_by_name["value"].type
                for key in list(value):
                    if strings == FieldDescriptor.TYPE_STRING:
                        value[key] = cut_text(value[key], limit)
                    else:
                        _cap_strings(value[key], limit)
            elif field.is_repeated:
                for item in value:
                    _cap_strings(item, limit)
            else:
                _cap_strings(value, limit)


def _capped(message: Message, limit: int) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    _cap_strings(copy, limit)
    return copy


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)  # map entries sorted: a replay is the same bytes
    return packed


def _cut_denial(detail: Message, keep: int) -> Message:
    """The denial's first `keep` versions; the rest are added to ``omitted_count``."""
    assert isinstance(detail, pb.PolicyDenial)  # noqa: S101 - the table pairs them
    shown = pb.PolicyDenial()
    shown.denied_versions.extend(detail.denied_versions[:keep])
    shown.omitted_count = detail.omitted_count + len(detail.denied_versions) - keep
    return shown


_MORE = re.compile(r"and (\d+) more violation\(s\) of the same rules")
"""The description of the violation that counts those left out (as `_cut_violations` writes
it, and statuses recorded before fitting existed did)."""


def _root(field: str) -> str:
    """The field path up to its first index: ``versions`` for ``versions[3]``."""
    index = field.find("[")
    return field if index < 0 else field[:index]


def _cut_violations(detail: Message, keep: int) -> Message:
    """The first `keep` violations, then one that counts the rest (named by their field when
    they share one, e.g. ``versions`` for ``versions[3]`` ...). A counting violation already
    at the end is added to the count, so that cutting again changes nothing."""
    source: Any = detail  # google.rpc has no type stubs
    violations = list(source.field_violations)
    counted = _MORE.fullmatch(violations[-1].description) if violations else None
    fields = {violations.pop().field} if counted else set()
    hidden = violations[keep:]
    fields |= {_root(v.field) for v in hidden}
    more = len(hidden) + (int(counted[1]) if counted else 0)
    shown: Any = error_details_pb2.BadRequest(field_violations=violations[:keep])
    if more:
        shown.field_violations.add(
            field=cut_text(fields.pop(), _CAPS[-1].text) if len(fields) == 1 else "request",
            description=f"and {more} more violation(s) of the same rules",
        )
    result: Message = shown
    return result


_Cut = Callable[[Message, int], Message]

_LISTS: Mapping[str, tuple[type[Message], str, _Cut]] = {
    pb.PolicyDenial.DESCRIPTOR.full_name: (pb.PolicyDenial, "denied_versions", _cut_denial),
    error_details_pb2.BadRequest.DESCRIPTOR.full_name: (
        error_details_pb2.BadRequest,
        "field_violations",
        _cut_violations,
    ),
}
"""Details with a list that may be cut, by type name: class, list field, how to cut it."""

MAX_LISTED: Mapping[str, int] = {
    pb.PolicyDenial.DESCRIPTOR.full_name: MAX_DENIED_LISTED,
    error_details_pb2.BadRequest.DESCRIPTOR.full_name: MAX_FIELD_VIOLATIONS,
}
"""The most entries each cut list shows, by detail type name."""

_SIMPLE: tuple[type[Message], ...] = (
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.DebugInfo,
    error_details_pb2.RequestInfo,
)
"""Other detail types whose strings are cut (any other type is kept whole if it fits)."""


def _type_name(packed: any_pb2.Any) -> str:
    return str(packed.type_url).rpartition("/")[2]


def _unpacked(packed: any_pb2.Any, cls: type[Message]) -> Message:
    message = cls()
    packed.Unpack(message)
    return message


class _Fitting:
    """A status being built within the budget, one detail at a time."""

    def __init__(self, code: int, message: str, budget: int) -> None:
        self.status = status_pb2.Status(code=code, message=message)
        self.budget = budget

    def fits(self, detail: any_pb2.Any) -> bool:
        trial = status_pb2.Status()
        trial.CopyFrom(self.status)
        trial.details.append(detail)
        return status_trailer_bytes(trial) <= self.budget

    def add(self, detail: any_pb2.Any) -> None:
        self.status.details.append(detail)


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return info
    return error_details_pb2.ErrorInfo()


def _base(status: status_pb2.Status, budget: int) -> tuple[_Fitting, _Caps]:
    """The message and the ErrorInfo, with the first caps that let them fit."""
    info = _error_info(status)
    for caps in _CAPS:
        fitting = _Fitting(
            status.code, cut_text(status.message, caps.message, percent_encoded_bytes), budget
        )
        capped = error_details_pb2.ErrorInfo(
            reason=cut_text(info.reason, caps.text),
            domain=cut_text(info.domain, caps.text),
            metadata={key: cut_text(value, caps.metadata) for key, value in info.metadata.items()},
        )
        packed = _pack(capped)
        if fitting.fits(packed) or caps is _CAPS[-1]:
            fitting.add(packed)
            break
    return fitting, caps


def _fit_list(fitting: _Fitting, detail: Message, caps: _Caps) -> None:
    """Add as many of the list's entries as fit (at most MAX_LISTED), counting the rest; when
    not even one fits with `caps`, entries with shorter strings (the next caps) instead."""
    name = detail.DESCRIPTOR.full_name
    _, field, cut = _LISTS[name]
    most = MAX_LISTED[name]
    head = cut(detail, min(len(getattr(detail, field)), most))  # the rest counted, once
    best: any_pb2.Any | None = None
    for smaller in _CAPS[_CAPS.index(caps) :]:
        capped = _capped(head, smaller.text)
        entries = min(len(getattr(capped, field)), most)
        for keep in range(entries + 1):
            packed = _pack(cut(capped, keep))
            if not fitting.fits(packed):
                break
            best, shown = packed, keep
        if best is not None and (shown or not entries):
            break
    if best is not None:
        fitting.add(best)


def _fit_simple(fitting: _Fitting, detail: Message) -> None:
    """Add the detail with its strings cut, shorter if need be; drop it if it cannot fit."""
    for caps in _CAPS:
        packed = _pack(_capped(detail, caps.text))
        if fitting.fits(packed):
            fitting.add(packed)
            return


def fit_status(status: status_pb2.Status, budget: int = STATUS_BUDGET) -> status_pb2.Status:
    """`status` cut to cost at most `budget` in the trailers (see the module docstring).

    Its one ErrorInfo comes first (a status without one gets an empty one), then the other
    details, and the details with a list last: they are cut to the room the others leave, so
    a long list never crowds out a RetryInfo. Deterministic: a replay fits the same way.
    """
    fitting, caps = _base(status, budget)
    others = [d for d in status.details if not d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    simple = {cls.DESCRIPTOR.full_name: cls for cls in _SIMPLE}
    lists: list[Message] = []
    for packed in others:
        name = _type_name(packed)
        if name in _LISTS:
            lists.append(_unpacked(packed, _LISTS[name][0]))
        elif name in simple:
            _fit_simple(fitting, _unpacked(packed, simple[name]))
        elif fitting.fits(packed):
            fitting.add(packed)
    for detail in lists:
        _fit_list(fitting, detail, caps)
    return fitting.status
