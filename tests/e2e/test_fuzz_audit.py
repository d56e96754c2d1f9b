"""Property-based fuzzing of AuditService through real gRPC, on SQLite and on PostgreSQL.

Generated ListAuditEvents and GetAuditEvent requests (every field: valid, boundary and hostile
values: long and control-character text, int32 extremes, unknown enum numbers, timestamps
anywhere in int64 seconds and int32 nanos, forged page tokens) and raw bytes go to a gateway
with the shipped policy, as an auditor. Per example:

* the status is OK, INVALID_ARGUMENT or NOT_FOUND: never UNKNOWN, INTERNAL, or an outage
  (UNAVAILABLE / AUDIT_UNAVAILABLE) for what is the caller's mistake;
* every error carries exactly one ErrorInfo with the call's audit event id;
* INVALID_ARGUMENT names exactly the fields that break a documented rule (the oracle below,
  written from the README, not from the gateway's code): every broken rule at once, a
  Timestamp out of its range included (then end before start is not judged);
* a request that breaks no rule is answered OK (listing) or OK / NOT_FOUND (get);
* bytes that do not parse are INVALID_ARGUMENT / MALFORMED_REQUEST.

Sizes: DEFAULT_EXAMPLES on every run; `make soak` (PKGGOV_SOAK=1) runs SOAK_EXAMPLES.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import grpc
import psycopg
import pytest
from google.protobuf.message import DecodeError
from hypothesis import event, given
from hypothesis import strategies as st
from psycopg import sql

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from tests.conftest import pg_schema_url
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    SOAK,
    RichError,
    bad_fields,
    fuzz_settings,
    gateway_settings,
    request,
    rich_error,
    running_gateway,
    stub_for,
)

DEFAULT_EXAMPLES = {"list": 250, "get": 80, "bytes": 120}
SOAK_EXAMPLES = {"list": 20_000, "get": 5_000, "bytes": 5_000}
EXAMPLES = SOAK_EXAMPLES if SOAK else DEFAULT_EXAMPLES
READER = ((PRINCIPAL_KEY, "carol"),)
LIST_METHOD = "/pkggov.v1.AuditService/ListAuditEvents"
GET_METHOD = "/pkggov.v1.AuditService/GetAuditEvent"

# The documented rules (README, "Reading the audit record").
LONGEST = {
    "principal": 2048,
    "domain": 50,
    "repository": 100,
    "namespace": 255,
    "package": 255,
    "version": 255,
}
DECISIONS = {"allowed", "partial", "denied", "dry_run", "invalid", "unauthenticated", "failed"}
DECISIONS |= {"read", "replayed"}
CODES = {code.name for code in grpc.StatusCode}
SECONDS = (-62_135_596_800, 253_402_300_799)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NUL_OR_SPACE = re.compile(r"[\x00\s]", re.ASCII)
NEVER_IN = {"principal": CONTROL, "domain": CONTROL, "repository": CONTROL}
"""What a filter can never hold; namespace, package and version: NUL or ASCII whitespace
(CodeArtifact's names allow other control characters)."""
UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
TimeField = Literal["start_time", "end_time"]
TIME_FIELDS: tuple[TimeField, ...] = ("start_time", "end_time")
ALLOWED_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def pg_module_schema(postgres: str) -> Iterator[str]:
    """A PostgreSQL schema for this module's gateway, dropped afterwards."""
    name = f"pkggov_f_{uuid.uuid4().hex}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def audited(
    request: pytest.FixtureRequest, emulator: Emulator, _logging: None
) -> Iterator[Gateway]:
    """A gateway (shipped policy) on SQLite or PostgreSQL, holding a few events."""
    audit: dict[str, str] = {}
    if request.param == "postgresql":
        audit["store"] = pg_schema_url(request.getfixturevalue("pg_module_schema"))
    overrides: dict[str, Any] = {"policy": {}, **({"audit": audit} if audit else {})}
    with running_gateway(gateway_settings(emulator.endpoint_url, **overrides)) as gateway:
        with stub_for(gateway, "alice") as alice:
            alice.DeletePackageVersions(request_for("1.0.0"), timeout=10)
        yield gateway


def request_for(version: str) -> pb.DeletePackageVersionsRequest:
    return request(versions=[version], validate_only=True)


@pytest.fixture(scope="module")
def channel(audited: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(audited.address) as chan:
        yield chan


# --- strategies -----------------------------------------------------------------------------

_text = st.one_of(
    st.just(""),
    st.sampled_from(["alice", "demo", "dev-shared", "left-pad", "1.0.0", "carol"]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
    st.integers(0, 3000).map(lambda n: "x" * n),
)
_int32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 500, 501, -1]))
_seconds = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([SECONDS[0], SECONDS[0] - 1, SECONDS[1], SECONDS[1] + 1, 0]),
    st.integers(SECONDS[0], SECONDS[1]),
)
_nanos = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 999_999_999, -1]))
_timestamps = st.one_of(st.none(), st.tuples(_seconds, _nanos))
_tokens = st.one_of(
    st.just(""), st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.hex())
)


_stamps_in_range = st.tuples(st.integers(SECONDS[0], SECONDS[1]), st.integers(0, 999_999_999))
_TAME = {
    **dict.fromkeys(LONGEST, st.sampled_from(["", "alice", "demo", "dev-shared", "left-pad"])),
    "decision": st.sampled_from(["", *sorted(DECISIONS)]),
    "status_code": st.sampled_from(["", *sorted(CODES)]),
    "format": st.integers(0, 8),
    "page_size": st.integers(0, 600),
    "page_token": st.just(""),
    "start_time": st.one_of(st.none(), _stamps_in_range),
    "end_time": st.one_of(st.none(), _stamps_in_range),
}
"""Values that break no rule: half the examples are mostly made of them, so that valid
requests and single broken rules are well covered, not only requests broken everywhere."""

_WILD = {
    **dict.fromkeys(LONGEST, _text),
    "decision": st.one_of(_text, st.sampled_from(sorted(DECISIONS))),
    "status_code": st.one_of(_text, st.sampled_from(sorted(CODES))),
    "format": st.one_of(st.integers(0, 8), _int32),
    "page_size": _int32,
    "page_token": _tokens,
    "start_time": _timestamps,
    "end_time": _timestamps,
}


@st.composite
def list_requests(draw: st.DrawFn) -> pb.ListAuditEventsRequest:
    tame = draw(st.booleans())
    values: dict[str, Any] = {
        name: draw(_TAME[name] if tame and draw(st.integers(0, 9)) else _WILD[name])
        for name in _TAME
    }
    stamps = {name: values.pop(name) for name in ("start_time", "end_time")}
    req = pb.ListAuditEventsRequest(**values)
    for name, stamp in stamps.items():
        if stamp is not None:
            getattr(req, name).seconds, getattr(req, name).nanos = stamp
    return req


# --- the oracle -----------------------------------------------------------------------------


def _bad_time(req: pb.ListAuditEventsRequest, name: TimeField) -> bool:
    if not req.HasField(name):
        return False
    stamp = getattr(req, name)
    return not (SECONDS[0] <= stamp.seconds <= SECONDS[1] and 0 <= stamp.nanos <= 999_999_999)


def expected_bad(req: pb.ListAuditEventsRequest) -> set[str]:
    times: set[str] = {name for name in TIME_FIELDS if _bad_time(req, name)}
    bad = times | {
        name
        for name, longest in LONGEST.items()
        if len(getattr(req, name)) > longest
        or NEVER_IN.get(name, NUL_OR_SPACE).search(getattr(req, name))
    }
    if req.page_token:
        bad.add("page_token")  # no generated token is one the deployment signed
    if req.page_size < 0:
        bad.add("page_size")
    if req.decision and req.decision not in DECISIONS:
        bad.add("decision")
    if req.status_code and req.status_code not in CODES:
        bad.add("status_code")
    if req.format and not 1 <= req.format <= 8:
        bad.add("format")
    if req.HasField("start_time") and req.HasField("end_time") and not times:
        start, end = req.start_time, req.end_time
        if (end.seconds, end.nanos) < (start.seconds, start.nanos):
            bad.add("end_time")
    return bad


def _answer(call: Any, req: Any) -> tuple[grpc.StatusCode, RichError | None]:
    try:
        call(req, timeout=30, metadata=READER)
    except grpc.RpcError as error:
        rich = rich_error(error)
        assert rich.code in ALLOWED_CODES, (rich.code, rich.reason, rich.message)
        assert rich.metadata.get("audit_event_id"), rich
        return rich.code, rich
    return grpc.StatusCode.OK, None


@given(req=list_requests())
@fuzz_settings(EXAMPLES["list"])
@pytest.mark.timeout(3600 if SOAK else 300)
def test_fuzzed_listings(channel: grpc.Channel, req: pb.ListAuditEventsRequest) -> None:
    code, error = _answer(pb_grpc.AuditServiceStub(channel).ListAuditEvents, req)
    bad = expected_bad(req)
    event(f"{code.name}: {' '.join(sorted(bad)) or 'no rule broken'}"[:60])
    if not bad:
        assert grpc.StatusCode.OK == code, error
        return
    assert error is not None, f"accepted, but breaks {sorted(bad)}"
    assert ("INVALID_ARGUMENT", "INVALID_REQUEST") == (error.code.name, error.reason)
    assert bad == set(bad_fields(error))


@given(
    event_id=st.one_of(
        _text,
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
    )
)
@fuzz_settings(EXAMPLES["get"])
@pytest.mark.timeout(3600 if SOAK else 300)
def test_fuzzed_gets(channel: grpc.Channel, event_id: str) -> None:
    req = pb.GetAuditEventRequest(event_id=event_id)
    code, error = _answer(pb_grpc.AuditServiceStub(channel).GetAuditEvent, req)
    if UUID.fullmatch(event_id):
        assert code in {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, error
    else:
        assert error is not None
        assert (["event_id"], "INVALID_REQUEST") == (bad_fields(error), error.reason)


@given(data=st.binary(max_size=200), method=st.sampled_from([LIST_METHOD, GET_METHOD]))
@fuzz_settings(EXAMPLES["bytes"])
@pytest.mark.timeout(3600 if SOAK else 300)
def test_fuzzed_bytes(channel: grpc.Channel, data: bytes, method: str) -> None:
    raw = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    code, error = _answer(raw, data)
    message_type = pb.ListAuditEventsRequest if method == LIST_METHOD else pb.GetAuditEventRequest
    try:
        message_type.FromString(data)
    except DecodeError:
        assert error is not None
        assert "MALFORMED_REQUEST" == error.reason
    else:
        assert code in ALLOWED_CODES


def test_a_real_uuid_that_names_no_event_is_not_found(channel: grpc.Channel) -> None:
    code, error = _answer(
        pb_grpc.AuditServiceStub(channel).GetAuditEvent,
        pb.GetAuditEventRequest(event_id=str(uuid.uuid4())),
    )
    assert error is not None
    assert (grpc.StatusCode.NOT_FOUND, "AUDIT_EVENT_NOT_FOUND") == (code, error.reason)
