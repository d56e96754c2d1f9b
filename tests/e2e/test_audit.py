"""The audit record through the real gateway, the real emulator and a real SQLite file.

Every pkggov.v1 call is one audit event: a delete that sends versions upstream commits an
`intent` entry first and an `outcome` entry after; a call that sends nothing has only an
outcome; an intent left open by a crash is closed by a `reconciliation` entry at start-up.
Demo data: demo/dev-shared npm left-pad 1.0.0-1.3.0 (1.3.0 latest).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_REGION,
    DEMO_SECRET_ACCESS_KEY,
    Emulator,
    FaultRule,
)
from pkggov_gateway.adapters.sql import SqliteDialect, open_audit_store
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.domain.audit import (
    SCHEMA_VERSION,
    AuditEventRecord,
    AuditQuery,
    EntryKind,
    NewEntry,
    StoredEntry,
    format_time,
)
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.tools.audit_verify import verify
from tests.e2e.audit_helpers import (
    audit_event,
    audit_health,
    deletes,
    kinds,
)
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    bad_fields,
    failed_call,
    gateway_settings,
    request,
    rich_error,
    stub_for,
    wait_for,
)

Stub = pb_grpc.PackageGovernanceServiceStub
SHIPPED: dict[str, str] = {}  # empty PolicySettings: the shipped example set
LEFT_PAD = ("demo", "dev-shared", "npm", None, "left-pad")


def _outcome(event: AuditEventRecord) -> dict[str, Any]:
    entry = event.entry(EntryKind.OUTCOME)
    assert entry is not None, f"event {event.event_id} has no outcome"
    return dict(entry.body)


def _trailer(call: Any) -> str | None:
    for key, value in call.trailing_metadata() or ():
        if key == "x-pkggov-audit-event-id":
            return str(value)
    return None


def _only_outcome(gateway: Gateway, error: RichError) -> dict[str, Any]:
    """The event named by an error's ErrorInfo: exactly one outcome entry, no intent."""
    event_id = error.metadata.get("audit_event_id")
    assert event_id, f"no audit_event_id in ErrorInfo metadata {error.metadata}"
    event = audit_event(gateway, event_id)
    assert ["outcome"] == kinds(event)
    return _outcome(event)


@pytest.fixture
def shipped(make_gateway: GatewayFactory) -> Iterator[Gateway]:
    """A gateway with the shipped example policies (development identity mode)."""
    with make_gateway(policy=SHIPPED) as gateway:
        yield gateway


# --- one event per call ---------------------------------------------------------------------


def test_allowed_delete_has_intent_then_outcome(
    stub: Stub, gateway: Gateway, emulator: Emulator
) -> None:
    """The response names an event whose intent precedes its outcome; the outcome records
    OK, allowed, the deleted versions and the AWS request ids; the trailer names it too."""
    response, call = stub.DeletePackageVersions.with_call(
        request(versions=["1.0.0", "1.1.0"]), timeout=10
    )
    assert response.audit_event_id
    assert response.audit_event_id == _trailer(call)
    event = audit_event(gateway, response.audit_event_id)
    assert ["intent", "outcome"] == kinds(event)
    intent, outcome = event.entries
    assert intent.seq < outcome.seq
    assert ["1.0.0", "1.1.0"] == intent.body["forward"]
    body = outcome.body
    assert "OK" == body["status"]["code"]
    assert "allowed" == body["decision"]
    assert intent.seq == body["intent_seq"]
    assert 2 == body["deleted"]
    assert {"1.0.0", "1.1.0"} == set(body["response"]["successful_versions"])
    assert {"1.0.0": "deleted", "1.1.0": "deleted"} == {
        v: info["result"] for v, info in body["upstream"]["versions"].items()
    }
    aws_ids = body["upstream"]["aws_request_ids"]
    assert aws_ids
    [delete] = emulator.calls("DeletePackageVersions")
    assert delete.request_id in aws_ids
    assert "alice" == body["principal"]["id"]


def test_denied_call_is_one_outcome(shipped: Gateway, emulator: Emulator) -> None:
    """bob (no group) under the shipped policy: one outcome, denied, PERMISSION_DENIED."""
    with stub_for(shipped, "bob") as stub:
        error = failed_call(stub, request())
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    outcome = _only_outcome(shipped, error)
    assert "denied" == outcome["decision"]
    assert ("PERMISSION_DENIED", "POLICY_DENIED") == (
        outcome["status"]["code"],
        outcome["status"]["reason"],
    )
    assert "bob" == outcome["principal"]["id"]
    assert 0 == deletes(emulator)


def test_a_partial_delete_is_recorded_partial(shipped: Gateway, emulator: Emulator) -> None:
    """allow_partial with the latest version, which policy protects: the rest is deleted and
    the event's decision is partial (not allowed)."""
    with stub_for(shipped, "alice") as stub:
        response = stub.DeletePackageVersions(
            request(versions=["1.0.0", "1.3.0"], allow_partial=True), timeout=10
        )
    assert (["1.0.0"], ["1.3.0"]) == (
        list(response.successful_versions),
        list(response.failed_versions),
    )
    event = audit_event(shipped, response.audit_event_id)
    assert "partial" == event.head.body["decision"]


def test_invalid_request_is_one_outcome(stub: Stub, gateway: Gateway, emulator: Emulator) -> None:
    """A request breaking field rules: one outcome, invalid, INVALID_ARGUMENT; nothing read."""
    error = failed_call(stub, request(domain=""))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    outcome = _only_outcome(gateway, error)
    assert "invalid" == outcome["decision"]
    assert "INVALID_ARGUMENT" == outcome["status"]["code"]
    assert 0 == len(emulator.calls())


def test_unauthenticated_call_is_one_outcome(gateway: Gateway, emulator: Emulator) -> None:
    """No identity: one outcome, unauthenticated, with no principal."""
    with stub_for(gateway, principal=None) as stub:
        error = failed_call(stub, request())
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    outcome = _only_outcome(gateway, error)
    assert "unauthenticated" == outcome["decision"]
    assert "UNAUTHENTICATED" == outcome["status"]["code"]
    assert outcome["principal"] is None
    assert 0 == len(emulator.calls())


def test_dry_run_is_one_outcome(stub: Stub, gateway: Gateway, emulator: Emulator) -> None:
    """validate_only: one outcome, dry_run, OK; nothing deleted."""
    response, call = stub.DeletePackageVersions.with_call(
        request(versions=["1.0.0"], validate_only=True), timeout=10
    )
    assert response.audit_event_id == _trailer(call)
    event = audit_event(gateway, response.audit_event_id)
    assert ["outcome"] == kinds(event)
    outcome = _outcome(event)
    assert ("dry_run", "OK") == (outcome["decision"], outcome["status"]["code"])
    assert 0 == deletes(emulator)
    assert "Published" == emulator.version_status(*LEFT_PAD, "1.0.0")


# --- fail closed ----------------------------------------------------------------------------


@contextmanager
def _gateway_with_short_busy_timeout(emulator: Emulator, seconds: float) -> Iterator[Gateway]:
    """A gateway whose SQLite store gives up on a held lock after `seconds` (default 5 s)."""
    gateway = build_gateway(gateway_settings(emulator.endpoint_url))
    dialect = gateway.audit_store.dialect
    assert isinstance(dialect, SqliteDialect)
    dialect.busy_timeout_seconds = seconds  # before the writer's connection is first opened
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(grace=2.0)


@pytest.mark.usefixtures("_logging")
def test_fail_closed_when_sqlite_cannot_write(emulator: Emulator) -> None:
    """Another connection holds the write lock: the delete fails UNAVAILABLE
    (AUDIT_UNAVAILABLE) before anything is deleted; health follows the store."""
    with _gateway_with_short_busy_timeout(emulator, 0.2) as gw:
        dialect = gw.audit_store.dialect
        assert isinstance(dialect, SqliteDialect)
        assert health_pb2.HealthCheckResponse.SERVING == audit_health(gw)
        blocker = sqlite3.connect(dialect.path, timeout=5, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with stub_for(gw) as stub:
                error = failed_call(stub, request())
            assert (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE") == (
                error.code,
                error.reason,
            )
            assert error.metadata.get("audit_event_id")
            assert 0 == deletes(emulator)
            assert "Published" == emulator.version_status(*LEFT_PAD, "1.0.0")
            assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.SERVING)
        with stub_for(gw) as stub:
            response = stub.DeletePackageVersions(request(), timeout=10)
        assert ["1.0.0"] == list(response.successful_versions)
        assert 1 == deletes(emulator)


@pytest.mark.usefixtures("_logging")
def test_outcome_is_retried_when_the_store_fails_after_the_intent(emulator: Emulator) -> None:
    """The store locks up after the intent was committed and while the delete is in flight:
    the caller still gets the true answer (OK), health turns NOT_SERVING, and the outcome is
    committed once the store takes writes again."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0)
    )
    with _gateway_with_short_busy_timeout(emulator, 0.2) as gw, ThreadPoolExecutor(1) as pool:
        dialect = gw.audit_store.dialect
        assert isinstance(dialect, SqliteDialect)

        def delete() -> pb.DeletePackageVersionsResponse:
            with stub_for(gw) as stub:
                return stub.DeletePackageVersions(request(), timeout=10)

        future = pool.submit(delete)
        assert wait_for(lambda: len(gw.audit_store.open_intents()) == 1)
        [open_event] = gw.audit_store.open_intents()
        blocker = sqlite3.connect(dialect.path, timeout=5, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            response = future.result(timeout=10)
            assert ["1.0.0"] == list(response.successful_versions)
            assert open_event.event_id == response.audit_event_id
            assert ["intent"] == kinds(audit_event(gw, response.audit_event_id))
            assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.SERVING)
        event = audit_event(gw, response.audit_event_id)
        assert ["intent", "outcome"] == kinds(event)
        assert ("OK", "allowed") == (
            _outcome(event)["status"]["code"],
            _outcome(event)["decision"],
        )
    assert 1 == deletes(emulator)


# --- AIP-155 request_id ---------------------------------------------------------------------


def test_same_request_id_and_content_replays(
    stub: Stub, gateway: Gateway, emulator: Emulator
) -> None:
    """A retry with the same request_id and content gets the recorded answer; one delete."""
    req = request(versions=["1.0.0"], request_id=str(uuid.uuid4()))
    first = stub.DeletePackageVersions(req, timeout=10)
    second, call = stub.DeletePackageVersions.with_call(req, timeout=10)
    assert first == second
    assert 1 == deletes(emulator)
    replay_id = _trailer(call)
    assert replay_id
    assert replay_id != first.audit_event_id
    replay = audit_event(gateway, replay_id)
    assert ["outcome"] == kinds(replay)
    outcome = _outcome(replay)
    assert ("replayed", first.audit_event_id) == (outcome["decision"], outcome["replay_of"])


def test_same_request_id_other_content_is_rejected(stub: Stub, emulator: Emulator) -> None:
    """The same request_id with other content: INVALID_ARGUMENT, REQUEST_ID_REUSED."""
    request_id = str(uuid.uuid4())
    stub.DeletePackageVersions(request(versions=["1.0.0"], request_id=request_id), timeout=10)
    error = failed_call(stub, request(versions=["1.1.0"], request_id=request_id))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (error.code, error.reason)
    assert 1 == deletes(emulator)
    assert "Published" == emulator.version_status(*LEFT_PAD, "1.1.0")


def test_malformed_request_id_is_invalid(stub: Stub, gateway: Gateway, emulator: Emulator) -> None:
    """A request_id that is not a UUID: INVALID_ARGUMENT naming the field request_id."""
    error = failed_call(stub, request(request_id="not-a-uuid"))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    assert ["request_id"] == bad_fields(error)
    assert "invalid" == _only_outcome(gateway, error)["decision"]
    assert 0 == deletes(emulator)


def test_request_id_of_a_call_in_flight_is_aborted(
    stub: Stub, gateway: Gateway, emulator: Emulator
) -> None:
    """A retry while the first call with the request_id is still in flight: ABORTED
    (REQUEST_IN_PROGRESS); nothing more is sent; the first call completes."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0)
    )
    req = request(request_id=str(uuid.uuid4()))
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stub.DeletePackageVersions, req, timeout=10)
        assert wait_for(lambda: len(gateway.audit_store.open_intents()) == 1)
        error = failed_call(stub, req)
        assert (grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS") == (error.code, error.reason)
        first = future.result(timeout=10)
    assert ["1.0.0"] == list(first.successful_versions)
    assert 1 == deletes(emulator)


def test_retry_after_in_progress_gets_the_recorded_answer(
    stub: Stub, gateway: Gateway, emulator: Emulator
) -> None:
    """After an ABORTED (REQUEST_IN_PROGRESS) retry, a later retry with the same request_id
    and content gets the first call's recorded answer (AIP-155), not a new execution."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0)
    )
    req = request(request_id=str(uuid.uuid4()))
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stub.DeletePackageVersions, req, timeout=10)
        assert wait_for(lambda: len(gateway.audit_store.open_intents()) == 1)
        assert grpc.StatusCode.ABORTED == failed_call(stub, req).code
        first = future.result(timeout=10)
    assert first == stub.DeletePackageVersions(req, timeout=10)
    assert 1 == deletes(emulator)


def test_original_content_still_replays_after_a_reuse_was_rejected(
    stub: Stub, emulator: Emulator
) -> None:
    """A request_id reused with other content is rejected; a retry with the original content
    still gets the recorded answer."""
    request_id = str(uuid.uuid4())
    req = request(versions=["1.0.0"], request_id=request_id)
    first = stub.DeletePackageVersions(req, timeout=10)
    error = failed_call(stub, request(versions=["1.1.0"], request_id=request_id))
    assert "REQUEST_ID_REUSED" == error.reason
    assert first == stub.DeletePackageVersions(req, timeout=10)
    assert 1 == deletes(emulator)


def test_a_final_error_is_replayed(shipped: Gateway, emulator: Emulator) -> None:
    """A retry of a denied call with the same request_id gets the same error again,
    recorded as a replay of the first event."""
    req = request(request_id=str(uuid.uuid4()))
    with stub_for(shipped, "bob") as stub:
        first = failed_call(stub, req)
        second = failed_call(stub, req)
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (first.code, first.reason)
    assert (first.code, first.reason, first.message) == (
        second.code,
        second.reason,
        second.message,
    )
    assert 0 == len(emulator.calls("DeletePackageVersions"))
    denied = shipped.audit_store.list_events(AuditQuery(principal="bob"))
    decisions = sorted(_outcome(e)["decision"] for e in denied.events)
    assert ["denied", "replayed"] == decisions
    [replay] = [e for e in denied.events if _outcome(e)["decision"] == "replayed"]
    assert first.metadata["audit_event_id"] == _outcome(replay)["replay_of"]


# --- quotas ---------------------------------------------------------------------------------


def _quota_failure(error: RichError) -> None:
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED") == (error.code, error.reason)
    quota = error.details["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert 1 == len(quota.violations)
    assert quota.violations[0].subject
    retry = error.details["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds > 0


def test_quota_refuses_beyond_the_limit(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """max_versions 2: two versions are deleted; a third is RESOURCE_EXHAUSTED
    (QUOTA_EXCEEDED, QuotaFailure, RetryInfo), as is a dry run of it; nothing more deleted."""
    with make_gateway(quota={"max_versions": 2}) as gw, stub_for(gw) as stub:
        response = stub.DeletePackageVersions(request(versions=["1.0.0", "1.1.0"]), timeout=10)
        assert {"1.0.0", "1.1.0"} == set(response.successful_versions)
        error = failed_call(stub, request(versions=["1.2.0"]))
        _quota_failure(error)
        outcome = _only_outcome(gw, error)
        assert ("denied", "RESOURCE_EXHAUSTED") == (
            outcome["decision"],
            outcome["status"]["code"],
        )
        dry = failed_call(stub, request(versions=["1.2.0"], validate_only=True))
        _quota_failure(dry)
    assert 1 == deletes(emulator)
    assert "Published" == emulator.version_status(*LEFT_PAD, "1.2.0")


def test_dry_run_within_quota_does_not_consume_it(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A dry run within the quota succeeds and leaves the whole quota for the real call."""
    with make_gateway(quota={"max_versions": 2}) as gw, stub_for(gw) as stub:
        for _ in range(3):
            dry = stub.DeletePackageVersions(
                request(versions=["1.0.0", "1.1.0"], validate_only=True), timeout=10
            )
            assert {"1.0.0", "1.1.0"} == set(dry.decisions)
        response = stub.DeletePackageVersions(request(versions=["1.0.0", "1.1.0"]), timeout=10)
        assert {"1.0.0", "1.1.0"} == set(response.successful_versions)
        _quota_failure(failed_call(stub, request(versions=["1.2.0"], validate_only=True)))
    assert 1 == deletes(emulator)


# --- AuditService ---------------------------------------------------------------------------


@contextmanager
def _audit_stub(gateway: Gateway) -> Iterator[pb_grpc.AuditServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.AuditServiceStub(channel)


def _as(principal: str) -> tuple[tuple[str, str]]:
    return ((PRINCIPAL_KEY, principal),)


def _populate(gateway: Gateway) -> tuple[str, str, str]:
    """alice deletes 1.0.0, then 1.1.0; bob is denied 1.2.0. Returns their event ids."""
    with stub_for(gateway, "alice") as alice:
        first = alice.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
        second = alice.DeletePackageVersions(request(versions=["1.1.0"]), timeout=10)
    with stub_for(gateway, "bob") as bob:
        denied = failed_call(bob, request(versions=["1.2.0"]))
    return first.audit_event_id, second.audit_event_id, denied.metadata["audit_event_id"]


@pytest.mark.parametrize("reader", ["carol", "alice"])
def test_audit_readers_list_and_get_events(shipped: Gateway, reader: str) -> None:
    """Auditors and release admins list (filtered, paginated) and get events."""
    first, second, denied = _populate(shipped)
    with _audit_stub(shipped) as audit:
        by_bob = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(principal="bob"), timeout=10, metadata=_as(reader)
        )
        assert [denied] == [e.event_id for e in by_bob.events]
        [bob_event] = by_bob.events
        assert ("denied", "PERMISSION_DENIED", "POLICY_DENIED") == (
            bob_event.decision,
            bob_event.status_code,
            bob_event.reason,
        )
        assert ["outcome"] == [e.kind for e in bob_event.entries]

        allowed = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(decision="allowed"), timeout=10, metadata=_as(reader)
        )
        assert [second, first] == [e.event_id for e in allowed.events]  # newest first
        assert "" == allowed.next_page_token

        by_version = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(version="1.1.0"), timeout=10, metadata=_as(reader)
        )
        assert [second] == [e.event_id for e in by_version.events]

        pages: list[list[str]] = []
        token = ""
        while len(pages) < 5:
            page = audit.ListAuditEvents(
                pb.ListAuditEventsRequest(
                    principal="alice", decision="allowed", page_size=1, page_token=token
                ),
                timeout=10,
                metadata=_as(reader),
            )
            pages.append([e.event_id for e in page.events])
            token = page.next_page_token
            if not token:
                break
        assert [[second], [first]] == pages

        got = audit.GetAuditEvent(
            pb.GetAuditEventRequest(event_id=first), timeout=10, metadata=_as(reader)
        ).event
        assert (first, "alice", "allowed", "OK") == (
            got.event_id,
            got.principal,
            got.decision,
            got.status_code,
        )
        assert got.method.endswith("/DeletePackageVersions")
        assert ["intent", "outcome"] == [e.kind for e in got.entries]
        assert got.entries[0].seq < got.entries[1].seq
        assert got.entries[1].prev_hash  # chained


def test_audit_reads_are_audited(shipped: Gateway) -> None:
    """Audit reads are themselves events (decision "read", one outcome, no intent)."""
    _populate(shipped)
    with _audit_stub(shipped) as audit:
        audit.ListAuditEvents(
            pb.ListAuditEventsRequest(decision="denied"), timeout=10, metadata=_as("carol")
        )
        reads = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(principal="carol", decision="read"),
            timeout=10,
            metadata=_as("carol"),
        )
    [read] = reads.events
    assert read.method.endswith("/ListAuditEvents")
    assert ("OK", ["outcome"]) == (read.status_code, [e.kind for e in read.entries])


def test_page_token_is_bound_to_its_filters(shipped: Gateway) -> None:
    """A page token used with other filters: INVALID_ARGUMENT naming page_token."""
    _populate(shipped)
    with _audit_stub(shipped) as audit:
        page = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(principal="alice", page_size=1),
            timeout=10,
            metadata=_as("carol"),
        )
        assert page.next_page_token
        with pytest.raises(grpc.RpcError) as caught:
            audit.ListAuditEvents(
                pb.ListAuditEventsRequest(
                    principal="bob", page_size=1, page_token=page.next_page_token
                ),
                timeout=10,
                metadata=_as("carol"),
            )
    error = rich_error(caught.value)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    assert ["page_token"] == bad_fields(error)


def test_the_record_verifies_as_one_chain(shipped: Gateway) -> None:
    """After a mix of calls, the stored hash chain verifies end to end."""
    _populate(shipped)
    with _audit_stub(shipped) as audit:
        audit.ListAuditEvents(pb.ListAuditEventsRequest(), timeout=10, metadata=_as("carol"))
    report = verify(shipped.audit_store.iter_rows())
    assert report.ok, report.first_problem
    assert 2 * 2 + 1 + 1 == report.entries  # two deletes (intent + outcome), a denial, a read


def test_bob_may_not_read_the_audit(shipped: Gateway) -> None:
    """bob (no group): PERMISSION_DENIED, POLICY_DENIED, for listing and getting."""
    with _audit_stub(shipped) as audit:
        for call in (
            lambda: audit.ListAuditEvents(
                pb.ListAuditEventsRequest(), timeout=10, metadata=_as("bob")
            ),
            lambda: audit.GetAuditEvent(
                pb.GetAuditEventRequest(event_id=str(uuid.uuid4())),
                timeout=10,
                metadata=_as("bob"),
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error = rich_error(caught.value)
            assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (
                error.code,
                error.reason,
            )
            outcome = _only_outcome(shipped, error)
            assert ("denied", "bob") == (outcome["decision"], outcome["principal"]["id"])


def test_unknown_event_is_not_found(shipped: Gateway) -> None:
    """GetAuditEvent of an id that names no event: NOT_FOUND (AUDIT_EVENT_NOT_FOUND)."""
    with _audit_stub(shipped) as audit, pytest.raises(grpc.RpcError) as caught:
        audit.GetAuditEvent(
            pb.GetAuditEventRequest(event_id=str(uuid.uuid4())),
            timeout=10,
            metadata=_as("carol"),
        )
    error = rich_error(caught.value)
    assert (grpc.StatusCode.NOT_FOUND, "AUDIT_EVENT_NOT_FOUND") == (error.code, error.reason)


# --- crash recovery -------------------------------------------------------------------------


def _codeartifact(emulator: Emulator) -> Any:
    return boto3.client(
        "codeartifact",
        endpoint_url=emulator.endpoint_url,
        region_name=DEMO_REGION,
        aws_access_key_id=DEMO_ACCESS_KEY_ID,
        aws_secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )


def _orphan_intent(
    url: str, event_id: str, versions: list[str], deadline: datetime | None = None
) -> StoredEntry:
    """Write the intent a gateway of replica "test" left open when it died mid-call: deleting
    `versions` of demo/dev-shared npm left-pad, its call's deadline at `deadline` if given."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event_id": event_id,
        "kind": EntryKind.INTENT.value,
        "time": format_time(now),
        "received": format_time(now),
        "replica": "test",
        "rpc": {"method": "/pkggov.v1.PackageGovernanceService/DeletePackageVersions"},
        "principal": {"id": "alice", "auth_method": "dev"},
        "request": {
            "domain": "demo",
            "repository": "dev-shared",
            "format": "PACKAGE_FORMAT_NPM",
            "package": "left-pad",
            "namespace": "",
            "domain_owner": "",
            "versions": versions,
        },
        "request_id": None,
        "forward": versions,
    }
    if deadline is not None:
        body["deadline"] = format_time(deadline)
    store = open_audit_store(url, replica="test")
    try:
        intent = store.append(NewEntry(body))
        assert [event_id] == [e.event_id for e in store.open_intents()]
        return intent
    finally:
        store.close()


def test_open_intent_is_reconciled_at_start(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """An intent left open (a crash between intent and outcome) is reconciled when a gateway
    with the same replica name starts: per version, what CodeArtifact now reports."""
    url = f"sqlite:{tmp_path}/audit.db"
    event_id = str(uuid.uuid4())
    intent = _orphan_intent(url, event_id, ["1.0.0", "1.1.0"])
    _codeartifact(emulator).delete_package_versions(
        domain="demo",
        repository="dev-shared",
        format="npm",
        package="left-pad",
        versions=["1.0.0"],
    )
    with make_gateway(audit={"store": url, "replica": "test"}) as gw:
        event = audit_event(gw, event_id)
        assert ["intent", "reconciliation"] == kinds(event)
        reconciliation = event.entry(EntryKind.RECONCILIATION)
        assert reconciliation is not None
        assert {"1.0.0": "deleted", "1.1.0": "still_present"} == reconciliation.body["versions"]
        assert 1 == reconciliation.body["deleted"]
        assert intent.seq == reconciliation.body["intent_seq"]
        assert [] == gw.audit_store.open_intents()
    assert "Published" == emulator.version_status(*LEFT_PAD, "1.1.0")


def test_two_gateways_starting_at_once_reconcile_another_replicas_orphan_once(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Two replicas start at once on a store holding a dead replica's orphaned intent, and both
    sweep it while CodeArtifact answers reads slowly: one records the reconciliation, the
    other finds the event closed and both start (the second used to fail to start)."""
    url = f"sqlite:{tmp_path}/audit.db"
    event_id = str(uuid.uuid4())
    _orphan_intent(url, event_id, ["1.0.0"], deadline=datetime.now(UTC) - timedelta(minutes=1))
    emulator.add_fault(
        FaultRule(operation="ListPackageVersions", kind="latency", latency_seconds=1)
    )
    starts = [
        make_gateway(audit={"store": url, "replica": replica, "orphan_after_seconds": 0.001})
        for replica in ("a", "b")
    ]
    with ExitStack() as stack:
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(start.__enter__) for start in starts]
        for start in starts:
            stack.push(start.__exit__)
        gateways = [future.result() for future in started]
        [reconciliation] = [
            e
            for e in audit_event(gateways[0], event_id).entries
            if e.kind is EntryKind.RECONCILIATION
        ]
        assert reconciliation.body["replica"] in {"a", "b"}
        assert [] == gateways[1].audit_store.open_intents()


def test_an_intent_is_reconciled_only_once_its_call_has_settled(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A crashed call's intent whose deadline is still ahead is left open at start-up (the
    dead process's delete may still land upstream); once the deadline and the settle time have
    passed, the watcher reconciles it with what CodeArtifact then holds: here a delete that
    landed after the successor started."""
    url = f"sqlite:{tmp_path}/audit.db"
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    _orphan_intent(url, event_id, ["1.0.0"], deadline=now + timedelta(seconds=2))
    audit = {"store": url, "replica": "test", "reconcile_settle_seconds": 0.5}
    with make_gateway(audit=audit) as gw:
        assert [event_id] == [e.event_id for e in gw.audit_store.open_intents()]
        _codeartifact(emulator).delete_package_versions(  # the dead call's delete lands late
            domain="demo",
            repository="dev-shared",
            format="npm",
            package="left-pad",
            versions=["1.0.0"],
        )
        assert wait_for(lambda: not gw.audit_store.open_intents(), timeout=10)
        settled = datetime.now(UTC)
        reconciliation = audit_event(gw, event_id).entry(EntryKind.RECONCILIATION)
    assert reconciliation is not None
    assert {"1.0.0": "deleted"} == reconciliation.body["versions"]
    assert settled >= now + timedelta(seconds=2.5)
