"""What the audit records of a message: api.convert's renderer is json_format's, to the key.

The edge records requests and responses as json_format.MessageToDict renders them (the proto
field names, every field without presence). convert renders the message types made of
strings, bools, enums, Timestamps and messages, lists and maps of them itself, faster; these
tests hold it to json_format's output, key order included, on random messages of every pkggov
type it renders.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.api import convert
from pkggov_gateway.api.convert import recorded_response, render_request, to_delete_response
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    FailedVersion,
    PlannedVersion,
    PlanOutcome,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
)

TYPES = sorted(pb.DESCRIPTOR.message_types_by_name.values(), key=lambda d: d.full_name)
RENDERED = [d for d in TYPES if convert._renderer(d) is not None]


def _json_format(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _text(rng: random.Random) -> str:
    return rng.choice(["", "1.0.0", "ü-π", "a\u2028b", "x" * rng.randint(1, 40)])


def _scalar(rng: random.Random, field: Any) -> Any:
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _text(rng)
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return rng.choice([*numbers, 0, 97])  # 97: a number the enum does not name
    raise AssertionError(field.full_name)


def _fill(rng: random.Random, message: Message, depth: int = 0) -> Message:
    """`message` with a random subset of its fields set (at random values, defaults too)."""
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        target = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value = entry.fields_by_name["value"]
            for _ in range(rng.randint(0, 4)):
                key = _text(rng)
                if value.message_type is not None:
                    _fill_value(rng, target[key], depth)
                else:
                    target[key] = _scalar(rng, value)
        elif field.is_repeated:
            for _ in range(rng.randint(0, 3)):
                if field.message_type is not None:
                    _fill_value(rng, target.add(), depth)
                else:
                    target.append(_scalar(rng, field))
        elif field.message_type is not None:
            _fill_value(rng, target, depth)
        else:
            setattr(message, field.name, _scalar(rng, field))
    return message


def _fill_value(rng: random.Random, message: Message, depth: int) -> None:
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        moment = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randint(0, 10**9), microseconds=rng.choice([0, 1000, 123456])
        )
        message.FromDatetime(moment)  # type: ignore[attr-defined]
    elif depth < 3:
        _fill(rng, message, depth + 1)
    else:
        message.SetInParent()


def test_it_renders_the_per_version_messages() -> None:
    """The requests and responses that carry one entry per version are rendered here."""
    names = {d.name for d in RENDERED}
    assert {
        "DeletePackageVersionsRequest",
        "DeletePackageVersionsResponse",
        "RestorePackageVersionsRequest",
        "RestorePackageVersionsResponse",
    } <= names


@pytest.mark.parametrize("descriptor", RENDERED, ids=lambda d: d.name)
def test_random_messages_render_as_json_format_does(descriptor: Descriptor) -> None:
    """Equal to json_format's dict, in the same key order (compared as JSON text)."""
    rng = random.Random(descriptor.full_name)  # noqa: S311 - test data, not secrets
    message_type = type(getattr(pb, descriptor.name)())
    for _ in range(200):
        message = _fill(rng, message_type())
        expected = _json_format(message)
        rendered = convert._as_dict(message)
        assert expected == rendered
        assert json.dumps(expected) == json.dumps(rendered)


def test_an_empty_message_renders_its_defaults() -> None:
    """Nothing set: every field without presence, at its default (an enum by its name)."""
    for descriptor in RENDERED:
        message = getattr(pb, descriptor.name)()
        assert json.dumps(_json_format(message)) == json.dumps(convert._as_dict(message))


def test_a_timestamp_json_cannot_show_fails_as_json_format_does() -> None:
    """A Timestamp out of JSON's range: json_format's error, as before (render_request then
    records the field as unrenderable)."""
    response = pb.DeletePackageVersionsResponse()
    response.successful_versions["1.0.0"].purge_time.seconds = -(10**12)
    with pytest.raises(json_format.SerializeToJsonError):
        recorded_response(response)
    request = pb.DeletePackageVersionsRequest(versions=["1.0.0"])
    assert render_request(request)[0] == _json_format(request)


def test_a_large_delete_response_records_as_before() -> None:
    """A 1,000-version outcome with archived, deleted and failed versions, and a dry run's
    plan: recorded exactly as json_format renders it."""
    purge_at = datetime(2027, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    successful = {
        f"1.0.{i}": SuccessfulVersion(
            f"rev{i}",
            VersionStatus.ARCHIVED if i % 3 == 0 else VersionStatus.DELETED,
            purge_at if i % 3 == 0 else None,
        )
        for i in range(900)
    }
    failed = {
        f"2.0.{i}": FailedVersion(VersionErrorCode.NOT_ALLOWED if i % 2 else None, "no")
        for i in range(100)
    }
    plan = {
        version: PlannedVersion(PlanOutcome.WOULD_DELETE, "allowed by x", ("x",), None, i == 0)
        for i, version in enumerate([*successful, *failed])
    }
    for with_plan in (False, True):
        response = to_delete_response(
            DeleteOutcome(successful, failed, plan=plan), with_plan=with_plan
        )
        response.audit_event_id = "0f6b1c9e-6a55-4c55-9a7e-1d2f3a4b5c6d"
        expected = _json_format(response)
        assert json.dumps(expected) == json.dumps(recorded_response(response))
        restore = to_delete_response(
            DeleteOutcome(successful, failed, plan=plan),
            with_plan=with_plan,
            response=pb.RestorePackageVersionsResponse(),
        )
        assert json.dumps(_json_format(restore)) == json.dumps(recorded_response(restore))
