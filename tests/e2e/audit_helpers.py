"""What the audit end-to-end tests (SQLite and PostgreSQL) share: reading the record back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pkggov_emulator import Emulator
from pkggov_gateway.bootstrap import Gateway
from pkggov_gateway.domain.audit import AuditEventRecord
from tests.e2e.harness import health_status, wait_for

__all__ = [
    "AUDIT_HEALTH",
    "audit_event",
    "audit_health",
    "coordinates",
    "deletes",
    "kinds",
    "wait_for",
]

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
    return health_status(gateway.address, AUDIT_HEALTH)


def coordinates(params: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """domain, repository, format, namespace, package (CodeArtifact's names) of a request, as
    the audit records it or the emulator received it."""
    return (
        str(params.get("domain") or ""),
        str(params.get("repository") or ""),
        str(params.get("format") or "").removeprefix("PACKAGE_FORMAT_").lower(),
        str(params.get("namespace") or ""),
        str(params.get("package") or ""),
    )
