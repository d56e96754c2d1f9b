"""The audit record on a real PostgreSQL server, each test in its own schema.

Needs PostgreSQL at postgresql://postgres@127.0.0.1:5432/test (trust auth). Skipped when it
is unreachable, unless the CI environment variable is set (then the tests fail).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.domain.audit import EntryKind
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import PG_HOST, PG_PORT, PG_URL, pg_schema_url
from tests.e2e.audit_helpers import audit_event, audit_health, deletes, kinds
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    failed_call,
    request,
    stub_for,
    wait_for,
)


def test_allowed_delete_is_recorded_in_postgres(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """An allowed delete: intent then outcome, stored in the test's schema."""
    with make_gateway(audit={"store": pg_schema_url(pg_schema)}) as gw, stub_for(gw) as stub:
        response = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
        event = audit_event(gw, response.audit_event_id)
    assert ["intent", "outcome"] == kinds(event)
    intent, outcome = event.entries
    assert intent.seq < outcome.seq
    assert ("OK", "allowed") == (outcome.body["status"]["code"], outcome.body["decision"])
    assert ["1.0.0"] == list(outcome.body["response"]["successful_versions"])
    assert outcome.body["upstream"]["aws_request_ids"]
    assert 1 == deletes(emulator)
    assert ["intent", "outcome"] == _stored_kinds(pg_schema, response.audit_event_id)


class _TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; `cut` closes every connection and stops
    listening (PostgreSQL then looks unreachable), `resume` listens again on the same port."""

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0
        self.resume()

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((PG_HOST, PG_PORT), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked on it (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.usefixtures("postgres")
def test_fail_closed_when_postgres_is_unreachable(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """PostgreSQL goes away after start: a delete fails UNAVAILABLE (AUDIT_UNAVAILABLE) and
    nothing is deleted; health says NOT_SERVING until it is back."""
    proxy = _TcpProxy()
    store = pg_schema_url(pg_schema, proxy.port)
    try:
        with make_gateway(audit={"store": store}) as gw, stub_for(gw) as stub:
            assert health_pb2.HealthCheckResponse.SERVING == audit_health(gw)
            proxy.cut()
            error = failed_call(stub, request(versions=["1.0.0"]))
            assert (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE") == (
                error.code,
                error.reason,
            )
            assert error.metadata.get("audit_event_id")
            assert 0 == deletes(emulator)
            assert "Published" == emulator.version_status(
                "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
            )
            assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.NOT_SERVING)
            proxy.resume()
            assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.SERVING)
            response = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
            assert ["1.0.0"] == list(response.successful_versions)
    finally:
        proxy.cut()
    assert 1 == deletes(emulator)
    assert ["intent", "outcome"] == _stored_kinds(pg_schema, response.audit_event_id)
    assert [] == _stored_kinds(pg_schema, error.metadata["audit_event_id"])


def test_reads_work_again_once_postgres_is_back(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """After an outage, once health is SERVING again, a delete with a request_id (which
    reads the record first) and an audit read succeed."""
    proxy = _TcpProxy()
    store = pg_schema_url(pg_schema, proxy.port)
    try:
        with make_gateway(audit={"store": store}) as gw, stub_for(gw) as stub:
            first = stub.DeletePackageVersions(
                request(versions=["1.0.0"], request_id=str(uuid.uuid4())), timeout=10
            )
            proxy.cut()
            failed_call(stub, request(versions=["1.1.0"]))
            proxy.resume()
            assert wait_for(lambda: audit_health(gw) == health_pb2.HealthCheckResponse.SERVING)
            again = stub.DeletePackageVersions(
                request(versions=["1.1.0"], request_id=str(uuid.uuid4())), timeout=10
            )
            assert ["1.1.0"] == list(again.successful_versions)
            with grpc.insecure_channel(gw.address) as channel:
                got = pb_grpc.AuditServiceStub(channel).GetAuditEvent(
                    pb.GetAuditEventRequest(event_id=first.audit_event_id),
                    timeout=10,
                    metadata=((PRINCIPAL_KEY, "alice"),),
                )
            assert first.audit_event_id == got.event.event_id
    finally:
        proxy.cut()
    assert 2 == deletes(emulator)


def _stored_kinds(schema: str, event_id: str) -> list[str]:
    """The kinds of an event's rows, read straight from the test's schema."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT kind FROM "{schema}".audit_entries WHERE event_id = %s ORDER BY seq',  # noqa: S608 - the test's own schema name
            (event_id,),
        ).fetchall()
    return [str(row[0]) for row in rows]


CALLS_PER_GATEWAY = 50


def _call(
    gateway: Gateway, req: pb.DeletePackageVersionsRequest
) -> pb.DeletePackageVersionsResponse:
    with stub_for(gateway) as stub:
        return stub.DeletePackageVersions(req, timeout=30)


def test_two_gateways_share_one_record_under_load(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Two replicas on one schema, 2 x 50 concurrent calls (half real deletes, half dry runs):
    every call has exactly one outcome, every forwarding call exactly one intent, the chain
    verifies, and a request_id answered by one replica is replayed by the other."""
    versions = [f"7.0.{k}" for k in range(2 * CALLS_PER_GATEWAY)]
    for version in versions:
        emulator.put_version("demo", "dev-shared", "npm", None, "left-pad", version)
    requests = [
        request(
            versions=[version],
            validate_only=k % 2 == 1,
            request_id=str(uuid.uuid4()),
        )
        for k, version in enumerate(versions)
    ]
    url = pg_schema_url(pg_schema)
    with (
        make_gateway(audit={"store": url, "replica": "a"}) as a,
        make_gateway(audit={"store": url, "replica": "b"}) as b,
        ThreadPoolExecutor(16) as pool,
    ):
        targets = [a if k < CALLS_PER_GATEWAY else b for k in range(len(requests))]
        futures = [pool.submit(_call, gw, req) for gw, req in zip(targets, requests, strict=True)]
        responses = [f.result() for f in futures]

        forwarding = [k for k in range(len(requests)) if k % 2 == 0]
        assert len(forwarding) == deletes(emulator)
        for k, response in enumerate(responses):
            event = audit_event(a, response.audit_event_id)
            outcomes = [e for e in event.entries if e.kind is EntryKind.OUTCOME]
            intents = [e for e in event.entries if e.kind is EntryKind.INTENT]
            assert 1 == len(outcomes), event
            assert (1 if k in forwarding else 0) == len(intents), event
            expected = "allowed" if k in forwarding else "dry_run"
            assert expected == outcomes[0].body["decision"]
            assert ("a" if k < CALLS_PER_GATEWAY else "b") == outcomes[0].body["replica"]
            if k in forwarding:
                assert [versions[k]] == list(response.successful_versions)
                assert intents[0].seq < outcomes[0].seq

        report = verify(a.audit_store.iter_rows())
        assert report.ok, report.first_problem
        assert len(requests) + len(forwarding) == report.entries

        # AIP-155 across replicas: a delete answered by a, retried at b.
        replayed = _call(b, requests[0])
        assert responses[0] == replayed
        assert len(forwarding) == deletes(emulator)
        other = pb.DeletePackageVersionsRequest()
        other.CopyFrom(requests[0])
        other.versions[:] = [versions[2]]
        with stub_for(b) as stub:
            error = failed_call(stub, other)
        assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (
            error.code,
            error.reason,
        )
        assert len(forwarding) == deletes(emulator)
