"""The queries that both the readers and the writer's guards run on the chain's table.

Each takes the dialect and an open connection: a reader runs it on a pooled connection, the
writer inside its chain-locked transaction (so a guard sees every entry committed before).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pkggov_gateway.domain.audit import (
    AuditEventRecord,
    QuotaCheck,
    StoredEntry,
    format_time,
    parse_time,
)

if TYPE_CHECKING:
    from pkggov_gateway.adapters.sql.dialects import Dialect

__all__ = ["SELECT_ENTRY", "event_by_request_id", "fetch", "quota_usage", "stored_entry"]

SELECT_ENTRY = "SELECT seq, prev_hash, hash, body FROM audit_entries"
"""The columns `stored_entry` reads, from the chain's table."""


def fetch(dialect: Dialect, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows `sql` (``?`` placeholders) selects with `params`."""
    cursor = conn.execute(dialect.sql(sql), tuple(params))
    return [tuple(row) for row in cursor.fetchall()]


def stored_entry(row: Sequence[Any]) -> StoredEntry:
    """The entry in a row of `SELECT_ENTRY`'s columns."""
    seq, prev_hash, digest, body = row
    return StoredEntry(int(seq), str(prev_hash), str(digest), json.loads(body))


def event_by_request_id(
    dialect: Dialect, conn: Any, principal: str, request_id: str
) -> AuditEventRecord | None:
    """The latest event in which `principal` claimed AIP-155 `request_id`, or None."""
    rows = fetch(
        dialect,
        conn,
        "SELECT event_id FROM audit_entries WHERE request_id = ? AND principal = ? "
        "ORDER BY seq DESC LIMIT 1",
        (request_id, principal),
    )
    if not rows:
        return None
    event_id = str(rows[0][0])
    entries = fetch(dialect, conn, f"{SELECT_ENTRY} WHERE event_id = ? ORDER BY seq", (event_id,))
    return AuditEventRecord(event_id, tuple(stored_entry(row) for row in entries))


def quota_usage(dialect: Dialect, conn: Any, quota: QuotaCheck) -> tuple[int, float]:
    """Versions `quota.principal` deleted (or is deleting) in the window, and the seconds
    until the oldest of them leaves it."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=quota.window_seconds)
    rows = fetch(
        dialect,
        conn,
        "SELECT i.versions_planned, i.recorded_at, (SELECT o.versions_deleted FROM "
        "audit_entries o WHERE o.event_id = i.event_id AND o.kind <> 'intent' "
        "ORDER BY o.seq DESC LIMIT 1) FROM audit_entries i WHERE i.kind = 'intent' "
        "AND i.principal = ? AND i.recorded_at >= ? ORDER BY i.recorded_at",
        (quota.principal, format_time(since)),
    )
    used = 0
    retry = 1.0
    for planned, at, done in rows:
        count = int(done if done is not None else planned or 0)
        if count and used == 0:  # the oldest counted deletion leaves the window first
            left = parse_time(str(at)) + timedelta(seconds=quota.window_seconds)
            retry = max(1.0, (left - now).total_seconds())
        used += count
    return used, retry
