"""Every error reaches a default-configured client whatever the input held, and the audit
record keeps what the trailers had no room for.

gRPC clients refuse trailers over 8 KiB (``grpc.max_metadata_size``) and report
RESOURCE_EXHAUSTED instead of the gateway's status; these calls used to produce 15 KB or more.
Every channel here is a plain ``grpc.insecure_channel`` without options. Principals (shipped
entities.yaml): `bob` in no group, so every delete he asks for is denied; `alice` a release
admin; `carol` an auditor, who reads the record through AuditService.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.api.status_budget import (
    ELLIPSIS,
    MAX_MESSAGE_BYTES,
    TRAILER_BUDGET,
    entry_bytes,
    percent_encoded_bytes,
)
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    request,
    rich_error,
    stub_for,
)

SHIPPED: dict[str, str] = {}  # empty PolicySettings: the shipped example set
PACKAGE = ("demo", "dev-shared", "npm", None, "left-pad")
EMOJI = "\U0001f600"  # four bytes in UTF-8, twelve percent-encoded


def _long_versions(count: int, unit: str) -> list[str]:
    """`count` distinct versions of 255 characters: `unit` repeated, then a number."""
    return [unit * 250 + f"{i:05d}" for i in range(count)]


LONG_VERSIONS = _long_versions(50, "v") + _long_versions(50, EMOJI)
"""A hundred versions of the longest length CodeArtifact allows, half of 4-byte characters."""


@pytest.fixture
def shipped(make_gateway: GatewayFactory) -> Iterator[Gateway]:
    """A gateway with the shipped example policies (development identity mode)."""
    with make_gateway(policy=SHIPPED) as gateway:
        yield gateway


@contextmanager
def _audit_stub(gateway: Gateway) -> Iterator[pb_grpc.AuditServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.AuditServiceStub(channel)


def _as(principal: str) -> tuple[tuple[str, str]]:
    return ((PRINCIPAL_KEY, principal),)


def _trailer_bytes(error: grpc.RpcError) -> int:
    """What the trailers of a failed call counted toward the client's limit, as HPACK counts
    them (binary values as sent, base64)."""
    call: Any = error
    total = entry_bytes("grpc-status", len(str(call.code().value[0])))
    total += entry_bytes("grpc-message", percent_encoded_bytes(call.details() or ""))
    for key, value in call.trailing_metadata() or ():
        size = 4 * math.ceil(len(value) / 3) if key.endswith("-bin") else len(value)
        total += entry_bytes(key, size)
    return total


def _arrives(call: Any) -> tuple[RichError, int]:
    """Run `call`, which must fail with the gateway's own status (not the client's
    RESOURCE_EXHAUSTED); its rich error and trailer size, which must be within the budget."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = rich_error(caught.value)
    size = _trailer_bytes(caught.value)
    assert size <= TRAILER_BUDGET, f"{size} bytes of trailers: {error.code} {error.reason}"
    return error, size


def _recorded(gateway: Gateway, event_id: str) -> pb.AuditEvent:
    """The event as an auditor reads it through AuditService."""
    with _audit_stub(gateway) as audit:
        reply = audit.GetAuditEvent(
            pb.GetAuditEventRequest(event_id=event_id), timeout=10, metadata=_as("carol")
        )
    return reply.event


def _outcome(event: pb.AuditEvent) -> dict[str, Any]:
    [outcome] = [e for e in event.entries if e.kind == "outcome"]
    return json_format.MessageToDict(outcome.body)


def _recorded_status(event: pb.AuditEvent) -> status_pb2.Status:
    return status_pb2.Status.FromString(base64.b64decode(_outcome(event)["status"]["details"]))


def _detail(status: status_pb2.Status, cls: type[Any]) -> Any:
    found = cls()
    next(d for d in status.details if d.Is(cls.DESCRIPTOR)).Unpack(found)
    return found


def test_denial_of_many_long_versions_arrives(shipped: Gateway, emulator: Emulator) -> None:
    """bob denied 100 existing versions of 255 characters (half of 4-byte characters):
    PERMISSION_DENIED / POLICY_DENIED arrives; the PolicyDenial lists what fits, whole, and
    counts the rest; the audit record has every version's decision and the longer list."""
    for version in LONG_VERSIONS:
        emulator.put_version(*PACKAGE, version)
    with stub_for(shipped, "bob") as stub:
        error, _ = _arrives(
            lambda: stub.DeletePackageVersions(request(versions=LONG_VERSIONS), timeout=30)
        )
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    denial = error.details["PolicyDenial"]
    assert isinstance(denial, pb.PolicyDenial)
    listed = [d.version for d in denial.denied_versions]
    assert len(LONG_VERSIONS) == len(listed) + denial.omitted_count
    assert listed
    assert set(listed) <= set(LONG_VERSIONS)  # whole: a valid version is never cut
    assert "policy denies 100 of 100 version(s); nothing was deleted" == error.message
    event = _recorded(shipped, error.metadata["audit_event_id"])
    outcome = _outcome(event)
    assert dict.fromkeys(LONG_VERSIONS, "DENIED") == {
        v: d["outcome"] for v, d in outcome["decisions"].items()
    }
    recorded = _detail(_recorded_status(event), pb.PolicyDenial)
    assert (50, 50) == (len(recorded.denied_versions), recorded.omitted_count)
    assert len(recorded.denied_versions) > len(listed)
    assert 0 == len(emulator.calls("DeletePackageVersions"))


def test_replayed_denial_arrives_the_same(shipped: Gateway, emulator: Emulator) -> None:
    """A retry with the same request_id replays the recorded (whole) status cut the same way."""
    for version in LONG_VERSIONS:
        emulator.put_version(*PACKAGE, version)
    req = request(versions=LONG_VERSIONS, request_id=str(uuid.uuid4()))
    with stub_for(shipped, "bob") as stub:
        first, _ = _arrives(lambda: stub.DeletePackageVersions(req, timeout=10))
        second, _ = _arrives(lambda: stub.DeletePackageVersions(req, timeout=10))
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (second.code, second.reason)
    assert (first.message, first.details) == (second.message, second.details)


def test_unknown_audit_event_with_a_huge_id_arrives(shipped: Gateway) -> None:
    """GetAuditEvent with a 60,000-character id: NOT_FOUND (or INVALID_ARGUMENT if the id's
    length is checked) arrives, quoting at most a cut id; the record has the id whole."""
    huge = "é" * 30_000 + "x" * 30_000
    with _audit_stub(shipped) as audit:
        error, _ = _arrives(
            lambda: audit.GetAuditEvent(
                pb.GetAuditEventRequest(event_id=huge), timeout=10, metadata=_as("carol")
            )
        )
    assert (error.code, error.reason) in {
        (grpc.StatusCode.NOT_FOUND, "AUDIT_EVENT_NOT_FOUND"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
    }
    assert huge not in error.message
    event = _recorded(shipped, error.metadata["audit_event_id"])
    assert huge == _outcome(event)["request"]["event_id"]


def test_many_invalid_long_versions_arrive(shipped: Gateway, emulator: Emulator) -> None:
    """1000 invalid 255-character versions: INVALID_ARGUMENT / INVALID_REQUEST arrives; the
    BadRequest lists what fits and counts the rest; the record has all 1000 violations."""
    versions = [f"{EMOJI * 250}#{i:04d}" for i in range(1000)]
    with stub_for(shipped, "alice") as stub:
        error, _ = _arrives(
            lambda: stub.DeletePackageVersions(request(versions=versions), timeout=30)
        )
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    bad = error.details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    *shown, rest = bad.field_violations
    assert ("versions", "violation(s) of the same rules") == (
        rest.field,
        rest.description.partition(" more ")[2],
    )
    more = int(rest.description.split()[1])
    assert 1000 == len(shown) + more
    assert [f"versions[{i}]" for i in range(len(shown))] == [v.field for v in shown]
    recorded = _detail(
        _recorded_status(_recorded(shipped, error.metadata["audit_event_id"])),
        error_details_pb2.BadRequest,
    )
    assert [f"versions[{i}]" for i in range(1000)] == [v.field for v in recorded.field_violations]
    assert 0 == len(emulator.calls())


@pytest.mark.parametrize(
    ("xfcc", "says"),
    [
        pytest.param(
            "By=spiffe://pkggov.test/gw;URI=https://x.test/" + "a" * 6000,
            "the x-forwarded-client-cert header names no acceptable principal",
            id="no-id",
        ),
        pytest.param(
            "By=spiffe://pkggov.test/gw;" + "a" * 6000,
            "malformed x-forwarded-client-cert header: expected KEY=VALUE",
            id="malformed",
        ),
    ],
)
def test_unauthenticated_echoing_a_long_header_arrives(
    make_gateway: GatewayFactory, emulator: Emulator, xfcc: str, says: str
) -> None:
    """A trusted proxy's 6,000-character XFCC header that names no one, or cannot be read:
    UNAUTHENTICATED arrives, its message cut, not the header echoed whole."""
    identity = {"mode": "proxy", "trusted_proxies": "127.0.0.1/32"}
    with make_gateway(identity=identity, policy=SHIPPED) as gw, stub_for(gw, None) as stub:
        error, _ = _arrives(
            lambda: stub.DeletePackageVersions(
                request(), timeout=10, metadata=(("x-forwarded-client-cert", xfcc),)
            )
        )
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert error.message.startswith(says)
    assert percent_encoded_bytes(error.message) <= MAX_MESSAGE_BYTES
    assert 0 == len(emulator.calls())


def test_upstream_error_quoting_a_long_message_arrives(
    shipped: Gateway, emulator: Emulator
) -> None:
    """CodeArtifact's AccessDenied with a 20,000-character non-ASCII message: PERMISSION_DENIED
    / UPSTREAM_ACCESS_DENIED arrives with the message cut (ellipsis) and the AWS request id;
    the record has the message whole."""
    text = "accès refusé " * 1600
    emulator.add_fault(FaultRule(kind="access_denied", status_message=text))
    with stub_for(shipped, "alice") as stub:
        error, _ = _arrives(lambda: stub.DeletePackageVersions(request(), timeout=10))
    assert (grpc.StatusCode.PERMISSION_DENIED, "UPSTREAM_ACCESS_DENIED") == (
        error.code,
        error.reason,
    )
    assert error.message.endswith(ELLIPSIS)
    assert text.startswith(error.message.removesuffix(ELLIPSIS))
    assert error.metadata["aws_request_id"]
    event = _recorded(shipped, error.metadata["audit_event_id"])
    assert text.strip() == _outcome(event)["status"]["message"].strip()
