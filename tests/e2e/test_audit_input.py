"""Hostile input to every AuditService field, forwarded certificates and request ids, through
the real gateway: each is a documented status naming the field, never INTERNAL, UNKNOWN or
an outage (AUDIT_UNAVAILABLE), on SQLite and on PostgreSQL.

Principals (shipped entities.yaml): carol is an auditor; alice a release admin.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from tests.certs import make_ca
from tests.conftest import pg_schema_url
from tests.e2e.audit_helpers import audit_event
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    bad_fields,
    failed_call,
    request,
    rich_error,
    stub_for,
)

AuditStub = pb_grpc.AuditServiceStub
READER = ((PRINCIPAL_KEY, "carol"),)
TIMESTAMP_LOW, TIMESTAMP_HIGH = -62_135_596_800, 253_402_300_799


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> str | None:
    """The audit store of the gateway under test: a fresh SQLite file or PostgreSQL schema."""
    if request.param == "sqlite":
        return None  # gateway_settings' default: a fresh SQLite file
    schema: str = request.getfixturevalue("pg_schema")
    return pg_schema_url(schema)


@pytest.fixture
def shipped(make_gateway: GatewayFactory, store: str | None) -> Iterator[Gateway]:
    """A gateway with the shipped policies on the parametrized store, with a few events."""
    audit = {"store": store} if store else {}
    with make_gateway(policy={}, **({"audit": audit} if audit else {})) as gateway:
        with stub_for(gateway, "alice") as alice:
            for version in ("1.0.0", "1.1.0"):
                alice.DeletePackageVersions(request(versions=[version]), timeout=10)
        yield gateway


@contextmanager
def audit_stub(gateway: Gateway) -> Iterator[AuditStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.AuditServiceStub(channel)


def listing_error(gateway: Gateway, req: pb.ListAuditEventsRequest) -> RichError:
    with audit_stub(gateway) as audit, pytest.raises(grpc.RpcError) as caught:
        audit.ListAuditEvents(req, timeout=10, metadata=READER)
    return rich_error(caught.value)


def get_error(gateway: Gateway, event_id: str) -> RichError:
    with audit_stub(gateway) as audit, pytest.raises(grpc.RpcError) as caught:
        audit.GetAuditEvent(pb.GetAuditEventRequest(event_id=event_id), timeout=10, metadata=READER)
    return rich_error(caught.value)


def assert_invalid(error: RichError, *fields: str) -> None:
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    assert list(fields) == bad_fields(error)


def first_page_token(gateway: Gateway, **filters: Any) -> str:
    with audit_stub(gateway) as audit:
        page = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=1, **filters), timeout=10, metadata=READER
        )
    assert page.next_page_token
    return page.next_page_token


# --- page tokens ------------------------------------------------------------------------------


def _old_style(before: Any) -> str:
    """A token as the gateway issued them before they were signed: base64 of JSON, with a
    filter digest anyone can compute; `before` is what an attacker chose."""
    data = json.dumps({"before": before, "filters": "0" * 16}).encode()
    return base64.urlsafe_b64encode(data).decode()


FORGED = {
    "huge cursor": _old_style(10**30),
    "infinite cursor": _old_style(float("inf")).replace("Infinity", "1e999"),
    "string cursor": _old_style("9" * 40),
    "negative cursor": _old_style(-5),
    "base64 garbage": "!!!not-base64@@@",
    "empty payload": ".",
    "binary": base64.urlsafe_b64encode(bytes(range(256))).decode(),
    "very long": "A" * 100_000,
    "nul bytes": "abc\x00def",
}


@pytest.mark.parametrize("token", FORGED.values(), ids=FORGED.keys())
def test_forged_page_tokens_are_invalid(shipped: Gateway, token: str) -> None:
    """Tokens the deployment did not issue: INVALID_ARGUMENT naming page_token, never an
    overflow, INTERNAL or AUDIT_UNAVAILABLE."""
    assert_invalid(
        listing_error(shipped, pb.ListAuditEventsRequest(page_token=token)), "page_token"
    )


def test_truncated_and_altered_tokens_are_invalid(shipped: Gateway) -> None:
    """A real token cut short, or with its position re-signed by a guess, is refused."""
    token = first_page_token(shipped)
    payload, _, mac = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["before"] = 10**30
    altered = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    for bad in (token[: len(token) // 2], token[:-1], f"{altered}.{mac}", payload):
        assert_invalid(
            listing_error(shipped, pb.ListAuditEventsRequest(page_size=1, page_token=bad)),
            "page_token",
        )


def test_a_token_for_other_filters_is_invalid(shipped: Gateway) -> None:
    token = first_page_token(shipped, principal="alice")
    error = listing_error(
        shipped, pb.ListAuditEventsRequest(principal="bob", page_size=1, page_token=token)
    )
    assert_invalid(error, "page_token")
    assert "other filters" in error.details["BadRequest"].field_violations[0].description  # type: ignore[attr-defined]


def test_a_token_from_another_deployment_is_invalid(
    shipped: Gateway, make_gateway: GatewayFactory
) -> None:
    """Each deployment (audit store) signs with its own key."""
    token = first_page_token(shipped)
    with make_gateway(policy={}) as other, stub_for(other, "alice") as alice:
        alice.DeletePackageVersions(request(versions=["1.2.0"]), timeout=10)
        error = listing_error(other, pb.ListAuditEventsRequest(page_size=1, page_token=token))
    assert_invalid(error, "page_token")


def test_replicas_on_one_store_honour_each_others_tokens(
    make_gateway: GatewayFactory, pg_schema: str
) -> None:
    """A fleet shares the key through its store: page 2 may come from another replica."""
    audit = {"store": pg_schema_url(pg_schema)}
    with make_gateway(policy={}, audit=audit) as one, make_gateway(policy={}, audit=audit) as two:
        with stub_for(one, "alice") as alice:
            for version in ("1.0.0", "1.1.0"):
                alice.DeletePackageVersions(request(versions=[version]), timeout=10)
        filters: dict[str, Any] = {"principal": "alice", "decision": "allowed"}
        token = first_page_token(one, **filters)
        with audit_stub(two) as reader:
            page = reader.ListAuditEvents(
                pb.ListAuditEventsRequest(page_size=1, page_token=token, **filters),
                timeout=10,
                metadata=READER,
            )
    assert 1 == len(page.events)


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (TIMESTAMP_LOW - 1, 0),
        (TIMESTAMP_HIGH + 1, 0),
        (2**62, 0),
        (-(2**63), 0),
        (0, -1),
        (0, 1_000_000_000),
        (0, -(2**31)),
    ],
)
def test_timestamps_past_either_end_are_invalid(
    shipped: Gateway, field: str, seconds: int, nanos: int
) -> None:
    """Out of Timestamp's range: INVALID_ARGUMENT naming the field; the call is recorded
    as invalid, with the field marked unrenderable."""
    req = pb.ListAuditEventsRequest()
    getattr(req, field).seconds = seconds
    getattr(req, field).nanos = nanos
    error = listing_error(shipped, req)
    assert_invalid(error, field)
    recorded = audit_event(shipped, error.metadata["audit_event_id"])
    [outcome] = recorded.entries
    assert "invalid" == outcome.body["decision"]
    assert "unrenderable" in outcome.body["request"][field]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ((TIMESTAMP_LOW, 0), (TIMESTAMP_HIGH, 999_999_999)),
        ((TIMESTAMP_LOW, 0), None),
        (None, (TIMESTAMP_HIGH, 999_999_999)),
        ((0, 0), (0, 0)),
    ],
)
def test_timestamps_at_either_end_are_accepted(
    shipped: Gateway, start: tuple[int, int] | None, end: tuple[int, int] | None
) -> None:
    req = pb.ListAuditEventsRequest()
    for field, value in (("start_time", start), ("end_time", end)):
        if value is not None:
            getattr(req, field).seconds, getattr(req, field).nanos = value
    with audit_stub(shipped) as audit:
        page = audit.ListAuditEvents(req, timeout=10, metadata=READER)
    expected = 0 if start == end else 2  # [t, t) is empty; the rest hold both deletes
    assert expected == len([e for e in page.events if e.decision == "allowed"])


def test_an_end_before_the_start_is_invalid(shipped: Gateway) -> None:
    req = pb.ListAuditEventsRequest()
    req.start_time.seconds, req.end_time.seconds = 100, 99
    assert_invalid(listing_error(shipped, req), "end_time")


# --- filters and ids --------------------------------------------------------------------------

FILTERS = ("principal", "domain", "repository", "namespace", "package", "version")


@pytest.mark.parametrize("field", FILTERS)
@pytest.mark.parametrize(
    "value", ["x" * 60_000, "a\x00b", "line\nbreak"], ids=["long", "nul", "newline"]
)
def test_bad_filters_are_invalid(shipped: Gateway, field: str, value: str) -> None:
    """Too long, or with control characters (PostgreSQL refuses NUL in text): the caller's
    mistake, INVALID_ARGUMENT naming the field, not an audit outage."""
    filters: dict[str, Any] = {field: value}
    error = listing_error(shipped, pb.ListAuditEventsRequest(**filters))
    assert_invalid(error, field)


@pytest.mark.parametrize("field", ["namespace", "package", "version"])
def test_names_with_control_characters_codeartifact_allows_can_be_searched(
    shipped: Gateway, field: str
) -> None:
    """CodeArtifact's names allow ESC and other non-space control characters, and the
    gateway records them: a filter for one is a search (here: nothing found), not an error."""
    filters: dict[str, Any] = {field: "1.0\x1b[2J"}
    with audit_stub(shipped) as audit:
        page = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(**filters), timeout=10, metadata=READER
        )
    assert [] == list(page.events)


def test_every_bad_field_is_named_at_once(shipped: Gateway) -> None:
    """Every broken rule is named in one answer, Timestamps out of their range included (a
    read checks them itself, once the reader is authorized)."""
    req = pb.ListAuditEventsRequest(
        principal="\x00",
        version="v" * 300,
        decision="maybe",
        status_code="NOPE",
        page_size=-1,
        page_token="forged",
        format=99,  # type: ignore[arg-type]
    )
    expected = ["principal", "version", "page_token", "page_size", "decision", "status_code"]
    assert [*expected, "format"] == bad_fields(listing_error(shipped, req))
    req.start_time.nanos = -1
    req.end_time.seconds = 2**40
    assert [*expected, "format", "start_time", "end_time"] == bad_fields(
        listing_error(shipped, req)
    )


def test_filters_at_their_longest_are_accepted(shipped: Gateway) -> None:
    req = pb.ListAuditEventsRequest(
        principal="p" * 2048,
        domain="d" * 50,
        repository="r" * 100,
        namespace="n" * 255,
        package="k" * 255,
        version="v" * 255,
    )
    with audit_stub(shipped) as audit:
        assert [] == list(audit.ListAuditEvents(req, timeout=10, metadata=READER).events)


@pytest.mark.parametrize(
    "event_id",
    [
        "x" * 60_000,
        "\x00",
        "not-a-uuid",
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()).replace("-", ""),
    ],
    ids=["long", "nul", "words", "braces", "no-hyphens"],
)
def test_malformed_event_ids_are_invalid(shipped: Gateway, event_id: str) -> None:
    error = get_error(shipped, event_id)
    assert_invalid(error, "event_id")
    assert len(error.message) < 200  # the id is not echoed back


def test_an_event_id_in_upper_case_is_the_same_event(shipped: Gateway) -> None:
    with audit_stub(shipped) as audit:
        [first] = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(decision="allowed", page_size=1), timeout=10, metadata=READER
        ).events
        got = audit.GetAuditEvent(
            pb.GetAuditEventRequest(event_id=first.event_id.upper()), timeout=10, metadata=READER
        )
    assert first.event_id == got.event.event_id


def test_reads_of_reads_do_not_nest(shipped: Gateway) -> None:
    """A read's outcome records the ids it returned, not the events: reading the record
    many times over neither nests bodies past protobuf's limit nor grows them."""
    with audit_stub(shipped) as audit:
        for _ in range(60):
            audit.ListAuditEvents(pb.ListAuditEventsRequest(), timeout=10, metadata=READER)
        page = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(principal="carol", page_size=1), timeout=10, metadata=READER
        )
    [last] = page.events
    recorded = audit_event(shipped, last.event_id).entries[-1].body["response"]
    assert {"event_ids", "next_page"} == set(recorded)
    assert 50 == len(recorded["event_ids"])


def test_a_page_of_large_events_fits_a_default_client(shipped: Gateway) -> None:
    """Events of 1,000-version calls are large: a page ends early (below gRPC's default
    4 MiB receive limit) and the next page token continues where it ended."""
    versions = [f"{i:04d}" + "v" * 251 for i in range(1000)]
    with stub_for(shipped, "alice") as alice:
        for _ in range(8):
            alice.DeletePackageVersions(
                request(versions=versions, validate_only=True, allow_partial=True), timeout=30
            )
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    with audit_stub(shipped) as audit:
        while True:
            page = audit.ListAuditEvents(
                pb.ListAuditEventsRequest(decision="dry_run", page_token=token),
                timeout=30,
                metadata=READER,
            )
            seen += [e.event_id for e in page.events]
            sizes.append(len(page.events))
            token = page.next_page_token
            if not token:
                break
    assert 8 == len(set(seen)) == len(seen)
    assert len(sizes) > 1


# --- request ids ------------------------------------------------------------------------------


def test_a_request_id_in_another_case_is_the_same_retry_key(
    shipped: Gateway, emulator: Emulator
) -> None:
    """AIP-155 ids are case-insensitive: a retry in upper case replays, nothing is sent."""
    request_id = str(uuid.uuid4())
    with stub_for(shipped, "alice") as alice:
        first = alice.DeletePackageVersions(
            request(versions=["1.2.0"], request_id=request_id), timeout=10
        )
        sent = len(emulator.calls())
        again = alice.DeletePackageVersions(
            request(versions=["1.2.0"], request_id=request_id.upper()), timeout=10
        )
        other = failed_call(alice, request(versions=["1.3.0"], request_id=request_id.upper()))
    assert first == again
    assert sent == len(emulator.calls())
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (other.code, other.reason)


# --- certificates forwarded by a trusted proxy -----------------------------------------------


def _cert(*, subject: x509.Name, duplicate_san: bool = False) -> bytes:
    """A PEM certificate naming alice by URI SAN; `duplicate_san`: two SAN extensions (made by
    re-labelling an IssuerAlternativeName, since cryptography refuses to build one)."""
    ca = make_ca("pkggov-test-proxy-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.UniformResourceIdentifier("spiffe://pkggov.test/ops/alice")]
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    if duplicate_san:
        builder = builder.add_extension(x509.IssuerAlternativeName(names), critical=False)
    der = builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    if duplicate_san:
        issuer_alt_name, subject_alt_name = b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11"
        assert 1 == der.count(issuer_alt_name)
        der = der.replace(issuer_alt_name, subject_alt_name)
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


GOOD = _cert(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
CERTS = {
    "duplicate SAN": _cert(subject=x509.Name([]), duplicate_san=True),
    "truncated": GOOD[: len(GOOD) // 2],
    "truncated body": GOOD.replace(GOOD.splitlines()[3], b""),
    "not PEM": b"hello",
    "binary": bytes(range(256)),
}


@pytest.fixture
def behind_proxy(make_gateway: GatewayFactory) -> Iterator[Gateway]:
    identity = {"mode": "proxy", "trusted_proxies": "127.0.0.1/32"}
    with make_gateway(identity=identity) as gateway:
        yield gateway


def _xfcc(pem: bytes) -> str:
    return f'By=spiffe://pkggov.test/gw;Cert="{quote(pem, safe="")}"'


@pytest.mark.parametrize("pem", CERTS.values(), ids=CERTS.keys())
def test_unreadable_forwarded_certificates_are_unauthenticated(
    behind_proxy: Gateway, emulator: Emulator, pem: bytes
) -> None:
    with stub_for(behind_proxy, None) as stub, pytest.raises(grpc.RpcError) as caught:
        stub.DeletePackageVersions(
            request(), timeout=10, metadata=(("x-forwarded-client-cert", _xfcc(pem)),)
        )
    error = rich_error(caught.value)
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert [] == emulator.calls()


def test_a_forwarded_certificate_without_a_subject_names_its_san(
    behind_proxy: Gateway, emulator: Emulator
) -> None:
    """No subject at all is legal (SPIFFE SVIDs): the URI SAN is the principal."""
    pem = _cert(subject=x509.Name([]))
    with stub_for(behind_proxy, None) as stub:
        response = stub.DeletePackageVersions(
            request(), timeout=10, metadata=(("x-forwarded-client-cert", _xfcc(pem)),)
        )
    assert ["1.0.0"] == list(response.successful_versions)
