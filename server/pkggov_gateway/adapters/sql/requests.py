"""Deletion requests (domain.approvals) in the store's database: ``deletion_requests``, their
``deletion_request_votes`` and the ``webhook_outbox`` of notifications about them.

A request row holds its plan as the plan body's canonical JSON (sorted keys, no spaces,
ASCII: the text `DeletionPlan.digest` hashes) beside the ``plan_hash`` recorded when it was
created, and the plan's package in columns of its own for the listing's filters. It stays
after it is closed (``executed``, ``rejected``, ``cancelled`` or ``expired``, with the time,
reason and event id of the entry that closed it). A vote row is one person's vote (at most
one per person and request); ``seq`` is the chain position of the entry that cast it, so
votes read back in the order they were cast. Times are `format_time` text, so text order is
time order.

Three kinds of statements, on two paths:

- `apply_effects`: an audit entry's `ApprovalEffects`, run by the group-commit writer inside
  the chain-locked transaction that inserts the entry (they commit with it or not at all), in
  this order: creations, votes, transitions, notifications. Creations, votes and
  notifications are ``INSERT ... ON CONFLICT DO NOTHING`` (an existing request id, a person's
  second vote, a queued notification's id: the earlier row stays, and the entry is not
  refused for it; the guard is what refuses). A transition is one ``UPDATE ... WHERE state
  IN (from_states)``: no effect from any other state.
- `refusal`: the `RequestGuard` of an entry, checked by the writer in the same transaction
  before the entry is inserted, so every replica's entries see each other's (the chain's
  lock serializes them).
- `claim_webhooks`, `delivered` and `failed`: the notifier's lease, which decides nothing. As
  the purge worker's (see `purges`), each is ONE statement on a pooled (autocommit)
  connection, never under the chain's lock; PostgreSQL picks the rows to lease with ``FOR
  UPDATE SKIP LOCKED``.

Every text value written to a column of its own is free of NUL (PostgreSQL's text cannot hold
it: U+FFFD instead); JSON columns are ASCII. A caller's odd string cannot make the writer's
batch fail forever, nor can a state or a body the writer could not store (`check_effects`
refuses them before the entry is queued).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from pkggov_gateway.adapters.sql.queries import fetch
from pkggov_gateway.domain.approvals import (
    ApprovalEffects,
    DeletionPlan,
    DeletionRequestQuery,
    DeletionRequestRecord,
    RequestGuard,
    RequestState,
    Vote,
    WebhookEvent,
)
from pkggov_gateway.domain.audit import format_time, parse_time
from pkggov_gateway.domain.errors import (
    DeletionRequestNotFoundError,
    PkggovError,
    PlanTamperedError,
)

if TYPE_CHECKING:
    from pkggov_gateway.adapters.sql.dialects import Dialect

__all__ = [
    "FINAL_STATES",
    "Found",
    "WebhookRecord",
    "apply_effects",
    "check_effects",
    "claim_webhooks",
    "delivered",
    "expired",
    "failed",
    "json_text",
    "page",
    "read_request",
    "record_of",
    "refusal",
    "webhook_record",
]

FINAL_STATES = frozenset(
    {RequestState.EXECUTED, RequestState.REJECTED, RequestState.CANCELLED, RequestState.EXPIRED}
)
"""States a request never leaves: a transition into one records when, why and by which
event it was closed."""

_REQUEST = (
    "request_id, requester, requester_person, created_at, expires_at, state, plan, plan_hash, "
    "required_by, event_id, closed_reason, closed_event_id"
)
"""The columns `record_of` reads, in its order."""

_VOTE = "request_id, approver, person, approve, groups, reason, voted_at, event_id"
"""The columns `_vote` reads, in its order."""

_CREATE = (
    "INSERT INTO deletion_requests (request_id, requester, requester_person, created_at, "
    "expires_at, state, domain, repository, format, namespace, package, plan, plan_hash, "
    "required_by, event_id, closed_reason, closed_event_id, closed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

_VOTE_INSERT = (
    "INSERT INTO deletion_request_votes (request_id, person, approver, approve, groups, "
    "reason, voted_at, event_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

_TRANSITION = (
    "UPDATE deletion_requests SET state = ?, closed_reason = ?, closed_event_id = ?, "
    "closed_at = ? WHERE request_id = ? AND state IN ({marks})"
)

_NOTIFY = (
    "INSERT INTO webhook_outbox (event_id, kind, request_id, payload, created_at, attempts, "
    "last_error, next_attempt_at, seq) VALUES (?, ?, ?, ?, ?, 0, '', ?, ?) "
    "ON CONFLICT DO NOTHING"
)

_WEBHOOK = "event_id, kind, request_id, payload, created_at, attempts"
"""The columns `_webhook` reads, in its order."""

_CLAIM = (
    "WITH due AS MATERIALIZED (SELECT event_id FROM webhook_outbox "  # noqa: S608 - fixed names
    "WHERE delivered_at IS NULL AND next_attempt_at <= ? "
    "AND (lease_until IS NULL OR lease_until <= ?) "
    "ORDER BY created_at, seq, event_id LIMIT ?{lock}) "
    "UPDATE webhook_outbox SET lease_owner = ?, lease_until = ? "
    f"WHERE event_id IN (SELECT event_id FROM due) RETURNING {_WEBHOOK}, seq"
)
"""`{lock}`: PostgreSQL's row locks (see `claim_webhooks`)."""

_DELIVERED = (
    "UPDATE webhook_outbox SET delivered_at = ?, attempts = attempts + 1, "
    "lease_owner = NULL, lease_until = NULL WHERE event_id = ? AND delivered_at IS NULL"
)

_FAILED = (
    "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
    "lease_owner = NULL, lease_until = NULL "
    "WHERE event_id = ? AND delivered_at IS NULL AND lease_owner = ?"
)


class WebhookRecord(NamedTuple):
    """Where a queued notification stands (`SqlAuditStore.webhook_record`)."""

    delivered_at: str | None
    """When it was delivered (`format_time` text); None while it is not."""
    attempts: int
    last_error: str
    next_attempt_at: str
    lease_owner: str | None
    lease_until: str | None


def _text(value: str) -> str:
    """`value` without NUL (see the module docstring)."""
    return value.replace("\x00", "\ufffd")


def _opt(value: str | None) -> str | None:
    """`value` without NUL; None for None or empty."""
    return _text(value) if value else None


def json_text(value: Any) -> str:
    """The canonical JSON of `value` (sorted keys, no spaces, ASCII): what a JSON column
    holds. Raises TypeError or ValueError for a value JSON cannot hold."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def check_effects(effects: ApprovalEffects) -> None:
    """Raise ValueError (or TypeError) for effects the writer must not be given: checked
    before the entry is queued, as a statement that fails would fail the writer's batch."""
    for record in effects.create:
        RequestState(record.state)
        if record.plan.digest() != record.plan_hash:
            raise ValueError(
                f"deletion request {record.request_id}: plan_hash is not the plan's digest"
            )
        json_text(list(record.required_by))
        for vote in record.votes:
            json_text(list(vote.groups))
    for new in effects.votes:
        json_text(list(new.vote.groups))
    for transition in effects.transitions:
        RequestState(transition.to_state)
        for state in transition.from_states:
            RequestState(state)
    for event in effects.notify:
        json_text(event.payload)


def apply_effects(
    dialect: Dialect, conn: Any, effects: ApprovalEffects, event_id: str, time: str, *, seq: int
) -> None:
    """Apply an entry's effects in the writer's transaction: creations, votes, transitions,
    notifications (see the module docstring).

    `event_id`, `time` (`format_time` text) and `seq` are the entry's: a transition into a
    final state records the first two, a vote the last."""
    for record in effects.create:
        _create(dialect, conn, record, time)
        for vote in record.votes:
            _insert_vote(dialect, conn, record.request_id, vote, seq)
    for new in effects.votes:
        _insert_vote(dialect, conn, new.request_id, new.vote, seq)
    for transition in effects.transitions:
        if not transition.from_states:
            continue  # from no state: no effect (and ``IN ()`` is no SQL)
        to = RequestState(transition.to_state)
        final = to in FINAL_STATES
        states = [RequestState(state).value for state in transition.from_states]
        conn.execute(
            dialect.sql(_TRANSITION.format(marks=", ".join("?" for _ in states))),
            (
                to.value,
                _text(transition.reason) if final else None,
                _text(event_id) if final else None,
                time if final else None,
                _text(transition.request_id),
                *states,
            ),
        )
    for event in effects.notify:
        at = format_time(event.created_at)
        conn.execute(
            dialect.sql(_NOTIFY),
            (
                _text(event.event_id),
                _text(event.kind),
                _text(event.request_id),
                json_text(event.payload),
                at,
                at,
                seq,
            ),
        )


def _create(dialect: Dialect, conn: Any, record: DeletionRequestRecord, time: str) -> None:
    package = record.plan.package
    state = RequestState(record.state)
    conn.execute(
        dialect.sql(_CREATE),
        (
            _text(record.request_id),
            _text(record.requester),
            _text(record.requester_person),
            format_time(record.created_at),
            format_time(record.expires_at),
            state.value,
            _text(package.domain),
            _text(package.repository),
            package.format.value,
            _opt(package.namespace),
            _text(package.package),
            json_text(record.plan.body()),
            _text(record.plan_hash),
            json_text(list(record.required_by)),
            _text(record.event_id),
            _opt(record.closed_reason),
            _opt(record.closed_event_id),
            time if state in FINAL_STATES else None,
        ),
    )


def _insert_vote(dialect: Dialect, conn: Any, request_id: str, vote: Vote, seq: int) -> None:
    conn.execute(
        dialect.sql(_VOTE_INSERT),
        (
            _text(request_id),
            _text(vote.person),
            _text(vote.approver),
            1 if vote.approve else 0,
            json_text(list(vote.groups)),
            _text(vote.reason),
            format_time(vote.at),
            _text(vote.event_id),
            seq,
        ),
    )


def refusal(dialect: Dialect, conn: Any, guard: RequestGuard) -> PkggovError | None:
    """Why `guard` refuses its entry (in the writer's chain-locked transaction), or None.

    A request that does not exist: DeletionRequestNotFoundError. One that expired (stored so,
    or pending past its expiry at `guard.now`): RequestExpiredError. One in a state not in
    `guard.states`: RequestNotPendingError. With `guard.voter`, a person who voted on it
    already: AlreadyVotedError."""
    request_id = _text(guard.request_id)
    rows = fetch(
        dialect,
        conn,
        "SELECT state, expires_at FROM deletion_requests WHERE request_id = ?",
        (request_id,),
    )
    if not rows:
        return DeletionRequestNotFoundError(guard.request_id)
    state, expires_at = str(rows[0][0]), str(rows[0][1])
    voted = guard.voter is not None and bool(
        fetch(
            dialect,
            conn,
            "SELECT 1 FROM deletion_request_votes WHERE request_id = ? AND person = ?",
            (request_id, _text(guard.voter)),
        )
    )
    return _verdict(guard, state, expires_at, voted=voted)


def _verdict(
    guard: RequestGuard, state: str, expires_at: str, *, voted: bool
) -> PkggovError | None:
    """`RequestGuard.refusal` on a stored row (nothing here raises: a guard is checked inside
    the writer's batch)."""
    return guard.refusal(state, parse_time(expires_at), voted=voted)


# --- reads -----------------------------------------------------------------------------------

Found: TypeAlias = tuple[tuple[Any, ...], list[tuple[Any, ...]]]
"""A request row (`_REQUEST`'s columns) and its vote rows (`_VOTE`'s), in the order cast: read
on a connection, parsed (`record_of`) after it is returned, so that a row that does not parse
is told apart from a database failure."""


def _vote(row: Sequence[Any]) -> Vote:
    """The vote in a row of `_VOTE`'s columns."""
    _, approver, person, approve, groups, reason, voted_at, event_id = row
    return Vote(
        approver=str(approver),
        person=str(person),
        approve=bool(approve),
        groups=tuple(str(group) for group in json.loads(groups)),
        reason=str(reason),
        at=parse_time(str(voted_at)),
        event_id=str(event_id),
    )


def record_of(found: Found) -> DeletionRequestRecord:
    """The request in a row read by `read_request`, `page` or `expired`, with its votes.

    Raises PlanTamperedError when the row does not read back as a request (its plan is not a
    plan, its state no state, ...: it was changed outside the gateway)."""
    row, vote_rows = found
    (
        request_id,
        requester,
        requester_person,
        created_at,
        expires_at,
        state,
        plan,
        plan_hash,
        required_by,
        event_id,
        closed_reason,
        closed_event_id,
    ) = row
    try:
        stored: Mapping[str, Any] = json.loads(plan)
        return DeletionRequestRecord(
            request_id=str(request_id),
            requester=str(requester),
            requester_person=str(requester_person),
            created_at=parse_time(str(created_at)),
            expires_at=parse_time(str(expires_at)),
            state=RequestState(state),
            plan=DeletionPlan.from_body(stored),
            plan_hash=str(plan_hash),
            required_by=tuple(str(policy) for policy in json.loads(required_by)),
            event_id=str(event_id),
            votes=tuple(_vote(vote) for vote in vote_rows),
            closed_reason="" if closed_reason is None else str(closed_reason),
            closed_event_id="" if closed_event_id is None else str(closed_event_id),
            stored_plan=stored,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise PlanTamperedError(
            f"deletion request {request_id} as stored is not a deletion request "
            f"({type(err).__name__}: {err}): it was changed outside the gateway",
            str(request_id),
        ) from err


def _with_votes(dialect: Dialect, conn: Any, sql: str, params: Sequence[Any]) -> list[Found]:
    """The request rows `sql` selects, each with its vote rows in the order cast."""
    rows = fetch(dialect, conn, sql, params)
    votes: dict[str, list[tuple[Any, ...]]] = {str(row[0]): [] for row in rows}
    wanted = list(votes)
    for start in range(0, len(wanted), 500):  # well within every placeholder limit
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for vote in fetch(
            dialect,
            conn,
            f"SELECT {_VOTE} FROM deletion_request_votes WHERE request_id IN ({marks}) "  # noqa: S608 - placeholders only
            "ORDER BY seq, person",
            chunk,
        ):
            votes[str(vote[0])].append(vote)
    return [(row, votes[str(row[0])]) for row in rows]


def read_request(dialect: Dialect, conn: Any, request_id: str) -> Found | None:
    """The row of request `request_id` with its votes (None: no such request)."""
    found = _with_votes(
        dialect,
        conn,
        f"SELECT {_REQUEST} FROM deletion_requests WHERE request_id = ?",  # noqa: S608 - fixed names
        (_text(request_id),),
    )
    return found[0] if found else None


def page(
    dialect: Dialect, conn: Any, query: DeletionRequestQuery
) -> tuple[list[Found], tuple[str, str] | None]:
    """One page of the requests matching `query`, newest first (created_at, then request id,
    descending), with their votes, and the cursor of the next page (None: the last)."""
    where: list[str] = []
    params: list[Any] = []
    if query.state is not None:
        where.append("state = ?")
        params.append(str(query.state))
    for name in ("requester", "domain", "repository", "package"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = ?")
            params.append(_text(value))
    if query.after is not None:
        created, request_id = query.after
        where.append("(created_at < ? OR (created_at = ? AND request_id < ?))")
        params.extend((_text(created), _text(created), _text(request_id)))
    limit = max(query.limit, 0)
    params.append(limit + 1)
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    found = _with_votes(
        dialect,
        conn,
        f"SELECT {_REQUEST} FROM deletion_requests {condition}"  # noqa: S608 - fixed column names, values bound
        "ORDER BY created_at DESC, request_id DESC LIMIT ?",
        params,
    )
    listed = found[:limit]
    if len(found) > limit and listed:
        last = listed[-1][0]
        return listed, (str(last[3]), str(last[0]))
    return listed, None


def expired(dialect: Dialect, conn: Any, now: datetime, limit: int) -> list[Found]:
    """Pending requests whose expiry is not after `now`, soonest expiry first (then id)."""
    if limit <= 0:
        return []
    return _with_votes(
        dialect,
        conn,
        f"SELECT {_REQUEST} FROM deletion_requests "  # noqa: S608 - fixed column names
        "WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at, request_id LIMIT ?",
        (format_time(now), limit),
    )


# --- the outbox --------------------------------------------------------------------------------


def _webhook(row: Sequence[Any]) -> tuple[WebhookEvent, int]:
    """The notification in a row of `_WEBHOOK`'s columns, and its attempts so far."""
    event_id, kind, request_id, payload, created_at, attempts = row
    return (
        WebhookEvent(
            event_id=str(event_id),
            kind=str(kind),
            request_id=str(request_id),
            payload=json.loads(payload),
            created_at=parse_time(str(created_at)),
        ),
        int(attempts),
    )


def claim_webhooks(
    dialect: Dialect,
    conn: Any,
    replica: str,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[tuple[WebhookEvent, int]]:
    """Lease up to `limit` undelivered notifications due at `now` and not leased past it to
    `replica` until `lease_until` (one statement; see `purges.claim_due`), oldest first."""
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
    # RETURNING keeps no order: oldest first, then in the order queued (the chain's).
    ordered = sorted(rows, key=lambda row: (str(row[4]), int(row[-1]), str(row[0])))
    return [_webhook(row[:-1]) for row in ordered]


def delivered(dialect: Dialect, conn: Any, event_id: str, at: datetime) -> None:
    """Mark a notification delivered at `at` (counting the attempt, ending any lease);
    nothing when it was delivered already."""
    conn.execute(dialect.sql(_DELIVERED), (format_time(at), _text(event_id)))


def failed(
    dialect: Dialect, conn: Any, event_id: str, retry_at: datetime, error: str, *, replica: str
) -> None:
    """Count a failed delivery of a notification leased to `replica`, record `error`, end the
    lease and make it due again at `retry_at` (nothing when it was delivered, or its lease
    expired and another replica took it)."""
    conn.execute(
        dialect.sql(_FAILED),
        (_text(error), format_time(retry_at), _text(event_id), _text(replica)),
    )


def webhook_record(dialect: Dialect, conn: Any, event_id: str) -> WebhookRecord | None:
    """Where a notification stands (None: none has `event_id`)."""
    rows = fetch(
        dialect,
        conn,
        "SELECT delivered_at, attempts, last_error, next_attempt_at, lease_owner, lease_until "
        "FROM webhook_outbox WHERE event_id = ?",
        (_text(event_id),),
    )
    if not rows:
        return None
    at, attempts, error, next_at, owner, until = rows[0]
    return WebhookRecord(
        None if at is None else str(at),
        int(attempts),
        str(error),
        str(next_at),
        None if owner is None else str(owner),
        None if until is None else str(until),
    )
