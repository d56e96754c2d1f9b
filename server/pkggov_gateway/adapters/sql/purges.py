"""Pending purges (domain.recovery) in the store's database: the ``pending_purges`` table.

A row is one scheduled purge of one version; it stays after it is closed (state ``purged``,
``restored`` or ``cancelled``, with the time, reason and event id of the entry that closed
it). At most one row per version (`package_identity` + version) is ``pending`` (a partial unique
index). Times are `format_time` text, so text order is time order.

Two kinds of writes, on two paths:

- `apply_effects`: an audit entry's `PurgeEffects`, run by the group-commit writer inside
  the chain-locked transaction that inserts the entry (they commit with it or not at all).
  Closes first, then schedules: an entry that closes a version's purge and schedules a new
  one replaces it. A schedule is ``INSERT ... ON CONFLICT DO NOTHING``: a version's earlier
  pending purge (or a row with the same purge id) stays.
- `claim_due` and `release`: the purge worker's lease, which decides nothing. Each is ONE
  statement in its own transaction on a pooled (autocommit) connection, never under the
  chain's lock. PostgreSQL picks the rows to lease with ``FOR UPDATE SKIP LOCKED`` in a
  materialized CTE (evaluated once), so replicas claiming together lease disjoint rows and do
  not wait for each other; SQLite's single ``UPDATE`` takes the database's write lock when it
  starts (as ``BEGIN IMMEDIATE`` does), so it sees the newest rows.

Every text value written is free of NUL (PostgreSQL's text cannot hold it: U+FFFD instead), so
a caller's odd string cannot make the writer's batch fail forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pkggov_gateway.adapters.sql.queries import fetch
from pkggov_gateway.domain.audit import format_time, parse_time
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.package_key import package_identity
from pkggov_gateway.domain.recovery import (
    PendingPurge,
    PurgeEffects,
    PurgePage,
    PurgeQuery,
    PurgeState,
    PurgeStats,
)

if TYPE_CHECKING:
    from pkggov_gateway.adapters.sql.dialects import Dialect

__all__ = [
    "PurgeRecord",
    "apply_effects",
    "check_effects",
    "claim_due",
    "page",
    "pending_for",
    "release",
    "state_of",
    "stats",
]

_PURGE = (
    "purge_id, domain, domain_owner, repository, format, namespace, package, version, "
    "revision, previous_status, requester, archive_event_id, archived_at, due_at, attempts, "
    "last_error, next_attempt_at"
)
"""The columns `_purge` reads, in its order."""

_SCHEDULE = (
    "INSERT INTO pending_purges (purge_id, package_key, domain, domain_owner, repository, "
    "format, namespace, package, version, revision, previous_status, requester, "
    "archive_event_id, archived_at, due_at, state, attempts, last_error, next_attempt_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)

_CLOSE = (
    "UPDATE pending_purges SET state = ?, closed_at = ?, closed_reason = ?, closed_event_id = ? "
    "WHERE package_key = ? AND version = ? AND state = 'pending'"
)

_NEXT_DUE = "coalesce(next_attempt_at, due_at)"
"""When a pending purge is next due: its retry time, else its due time."""

_CLAIM = (
    f"WITH due AS MATERIALIZED (SELECT purge_id FROM pending_purges "  # noqa: S608 - fixed names
    f"WHERE state = 'pending' AND {_NEXT_DUE} <= ? AND (lease_until IS NULL OR lease_until <= ?) "
    f"ORDER BY {_NEXT_DUE}, purge_id LIMIT ?{{lock}}) "
    f"UPDATE pending_purges SET lease_owner = ?, lease_until = ? "
    f"WHERE purge_id IN (SELECT purge_id FROM due) RETURNING {_PURGE}"
)
"""`{lock}`: PostgreSQL's row locks (see `claim_due`)."""

_RELEASE = (
    "UPDATE pending_purges SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
    "lease_owner = NULL, lease_until = NULL "
    "WHERE purge_id = ? AND state = 'pending' AND lease_owner = ?"
)


class PurgeRecord(NamedTuple):
    """Where a scheduled purge stands, closed or not (`SqlAuditStore.purge_state`)."""

    state: PurgeState
    closed_at: str | None
    """The closing entry's time (`format_time` text); None while pending."""
    closed_reason: str | None
    closed_event_id: str | None


def _text(value: str) -> str:
    """`value` without NUL (see the module docstring)."""
    return value.replace("\x00", "\ufffd")


def _opt(value: str | None) -> str | None:
    return None if value is None else _text(value)


def check_effects(effects: PurgeEffects) -> None:
    """Raise ValueError for effects the writer must not be given (checked before queueing)."""
    for closure in effects.close:
        if PurgeState(closure.state) is PurgeState.PENDING:
            raise ValueError(f"a closure of {closure.version!r} cannot leave it pending")


def apply_effects(
    dialect: Dialect, conn: Any, effects: PurgeEffects, event_id: str, time: str
) -> None:
    """Apply an entry's effects in the writer's transaction: close, then schedule.

    `event_id` and `time` (`format_time` text) are the entry's: a closure records them."""
    for closure in effects.close:
        conn.execute(
            dialect.sql(_CLOSE),
            (
                PurgeState(closure.state).value,
                time,
                _text(closure.reason),
                _text(event_id),
                _text(package_identity(closure.package)),
                _text(closure.version),
            ),
        )
    for purge in effects.schedule:
        package = purge.package
        conn.execute(
            dialect.sql(_SCHEDULE),
            (
                _text(purge.purge_id),
                _text(package_identity(package)),
                _text(package.domain),
                _opt(package.domain_owner),
                _text(package.repository),
                package.format.value,
                _opt(package.namespace),
                _text(package.package),
                _text(purge.version),
                _text(purge.revision),
                VersionStatus(purge.previous_status).value,
                _text(purge.requester),
                _text(purge.archive_event_id),
                format_time(purge.archived_at),
                format_time(purge.due_at),
                purge.attempts,
                _text(purge.last_error),
                None if purge.next_attempt_at is None else format_time(purge.next_attempt_at),
            ),
        )


def _purge(row: Sequence[Any]) -> PendingPurge:
    """The pending purge in a row of `_PURGE`'s columns."""
    (
        purge_id,
        domain,
        domain_owner,
        repository,
        fmt,
        namespace,
        package,
        version,
        revision,
        previous_status,
        requester,
        archive_event_id,
        archived_at,
        due_at,
        attempts,
        last_error,
        next_attempt_at,
    ) = row
    return PendingPurge(
        purge_id=str(purge_id),
        package=PackageRef(
            domain=str(domain),
            repository=str(repository),
            format=PackageFormat(fmt),
            package=str(package),
            namespace=None if namespace is None else str(namespace),
            domain_owner=None if domain_owner is None else str(domain_owner),
        ),
        version=str(version),
        revision=str(revision),
        previous_status=VersionStatus(previous_status),
        requester=str(requester),
        archive_event_id=str(archive_event_id),
        archived_at=parse_time(str(archived_at)),
        due_at=parse_time(str(due_at)),
        attempts=int(attempts),
        last_error=str(last_error),
        next_attempt_at=None if next_attempt_at is None else parse_time(str(next_attempt_at)),
    )


def _next_due(purge: PendingPurge) -> tuple[str, str]:
    """The claim order of a purge: next due time, then purge id."""
    return format_time(purge.next_attempt_at or purge.due_at), purge.purge_id


def pending_for(
    dialect: Dialect, conn: Any, package: PackageRef, versions: Sequence[str]
) -> dict[str, PendingPurge]:
    """The pending purges of `versions` of `package` (by `package_identity`), by version."""
    wanted = list(dict.fromkeys(_text(version) for version in versions))
    found: dict[str, PendingPurge] = {}
    key = _text(package_identity(package))
    for start in range(0, len(wanted), 500):  # well within every placeholder limit
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = fetch(
            dialect,
            conn,
            f"SELECT {_PURGE} FROM pending_purges WHERE state = 'pending' "  # noqa: S608 - placeholders only
            f"AND package_key = ? AND version IN ({marks})",
            (key, *chunk),
        )
        for row in rows:
            purge = _purge(row)
            found[purge.version] = purge
    return found


def page(dialect: Dialect, conn: Any, query: PurgeQuery) -> PurgePage:
    """One page of pending purges matching `query`, by (due_at, purge_id)."""
    where = ["state = 'pending'"]
    params: list[Any] = []
    for name in ("domain", "repository", "package", "requester"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = ?")
            params.append(value)
    if query.due_before is not None:
        where.append("due_at < ?")
        params.append(format_time(query.due_before))
    if query.after is not None:
        due, purge_id = query.after
        where.append("(due_at > ? OR (due_at = ? AND purge_id > ?))")
        params.extend((due, due, purge_id))
    limit = max(query.limit, 0)
    params.append(limit + 1)
    rows = fetch(
        dialect,
        conn,
        f"SELECT {_PURGE} FROM pending_purges WHERE {' AND '.join(where)} "  # noqa: S608 - fixed column names, values bound
        "ORDER BY due_at, purge_id LIMIT ?",
        params,
    )
    purges = [_purge(row) for row in rows[:limit]]
    more = len(rows) > limit and bool(purges)
    last = purges[-1] if more else None
    return PurgePage(purges, None if last is None else (format_time(last.due_at), last.purge_id))


def claim_due(
    dialect: Dialect,
    conn: Any,
    replica: str,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[PendingPurge]:
    """Lease up to `limit` due, unleased pending purges to `replica` (one statement; see the
    module docstring), soonest next due first."""
    if limit <= 0:
        return []
    at = format_time(now)
    lock = " FOR UPDATE SKIP LOCKED" if dialect.name == "postgresql" else ""
    rows = fetch(
        dialect,
        conn,
        _CLAIM.format(lock=lock),
        (at, at, limit, _text(replica), format_time(lease_until)),
    )
    return sorted((_purge(row) for row in rows), key=_next_due)


def release(
    dialect: Dialect,
    conn: Any,
    purge_id: str,
    retry_at: datetime,
    error: str,
    *,
    replica: str,
) -> None:
    """Count a failed attempt of a pending purge leased to `replica`, record `error`, end its
    lease, and make it due again at `retry_at` (nothing when it is not pending, or its lease
    expired and another replica took it)."""
    conn.execute(
        dialect.sql(_RELEASE),
        (_text(error), format_time(retry_at), _text(purge_id), _text(replica)),
    )


def state_of(dialect: Dialect, conn: Any, purge_id: str) -> PurgeRecord | None:
    """A purge's state, and when, why and by which event it was closed (None: no such
    purge)."""
    rows = fetch(
        dialect,
        conn,
        "SELECT state, closed_at, closed_reason, closed_event_id FROM pending_purges "
        "WHERE purge_id = ?",
        (_text(purge_id),),
    )
    if not rows:
        return None
    state, closed_at, reason, event_id = rows[0]
    return PurgeRecord(
        PurgeState(state),
        None if closed_at is None else str(closed_at),
        None if reason is None else str(reason),
        None if event_id is None else str(event_id),
    )


def stats(dialect: Dialect, conn: Any, now: datetime) -> PurgeStats:
    """Pending purges, those whose due time (`due_at`, whatever their retry time) is not after
    `now`, and the oldest such due time."""
    at = format_time(now)
    rows = fetch(
        dialect,
        conn,
        "SELECT count(*), coalesce(sum(CASE WHEN due_at <= ? THEN 1 ELSE 0 END), 0), "
        "min(CASE WHEN due_at <= ? THEN due_at END) FROM pending_purges "
        "WHERE state = 'pending'",
        (at, at),
    )
    pending, due, oldest = rows[0]
    return PurgeStats(
        pending=int(pending),
        due=int(due),
        oldest_due=None if oldest is None else parse_time(str(oldest)),
    )
