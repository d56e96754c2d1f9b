"""What the audit end-to-end tests (SQLite and PostgreSQL) share: reading the record back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pkggov_emulator import Emulator
from pkggov_gateway.adapters.sql import SqlAuditStore, open_audit_store
from pkggov_gateway.domain.audit import COLUMNS, AuditEventRecord
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import Reachable, health_status

AUDIT_HEALTH = "pkggov.audit"

BODY_COLUMN = 1 + len(COLUMNS)
"""Where a stored row (seq, *COLUMNS, body, prev_hash, hash) holds the entry's body."""


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


def audit_health(gateway: Reachable) -> int:
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


@contextmanager
def reopened_store(url: str, replica: str) -> Iterator[SqlAuditStore]:
    """The audit store at `url` opened as an auditor would (as `pkggov-admin audit verify` does),
    under the name `replica`; closed on exit."""
    store = open_audit_store(url, replica=replica, heartbeat_seconds=3600)
    try:
        yield store
    finally:
        store.close()


def row_body(row: Sequence[Any]) -> dict[str, Any]:
    """The entry body of a stored row (as `SqlAuditStore.iter_rows` yields them)."""
    body: dict[str, Any] = json.loads(row[BODY_COLUMN])
    return body
