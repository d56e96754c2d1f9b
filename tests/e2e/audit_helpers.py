"""What the audit end-to-end tests (SQLite and PostgreSQL) share: reading the record back."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pkggov_emulator import Emulator
from pkggov_gateway.bootstrap import Gateway
from pkggov_gateway.domain.audit import AuditEventRecord

AUDIT_HEALTH = "pkggov.audit"


def deletes(emulator: Emulator) -> int:
    """How many DeletePackageVersions calls reached the emulator."""
    return len(emulator.calls("DeletePackageVersions"))


def audit_event(gateway: Gateway, event_id: str) -> AuditEventRecord:
    """The recorded event (it must exist)."""
    found = gateway.audit_store.event(event_id)
    assert found is not None, f"no audit event {event_id}"
    return found


def kinds(record: AuditEventRecord) -> list[str]:
    """The event's entry kinds in chain order."""
    return [entry.kind.value for entry in record.entries]


def audit_health(gateway: Gateway) -> int:
    """The gateway's grpc.health.v1 status for the audit store."""
    with grpc.insecure_channel(gateway.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=AUDIT_HEALTH), timeout=5
        )
    return int(reply.status)


def wait_for(predicate: Callable[[], bool], timeout: float = 8.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
