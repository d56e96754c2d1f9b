"""The audit record: entries, their canonical form, the hash chain, and what is indexed.

Every RPC is one audit *event* (named by its ``event_id``, which the response carries). An
event is stored as one or more *entries*, each appended to one hash chain:

- ``intent``: written and committed before anything is sent to CodeArtifact (write-ahead);
- ``outcome``: written after the call, with what CodeArtifact said and what the caller got.
  A call that sends nothing upstream (denied, invalid, dry run, ...) has only this entry;
- ``reconciliation``: written after a crash left an intent without outcome, with the state
  CodeArtifact reports for the intent's versions.

An entry's body is a JSON object; its *canonical form* (sorted keys, no spaces, ASCII) is what
is hashed: ``hash = sha256(prev_hash + canonical)``, where ``prev_hash`` is the hash of the
entry before it in the chain (``GENESIS`` for the first). Modifying, deleting, inserting or
reordering an entry breaks the chain at that entry (CloudTrail's digest chain).

The store also keeps a few columns for queries (principal, package, decision, ...). They are
derived from the body by `columns_of`, so `verify` can check them too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pkggov_gateway.domain.approvals import ApprovalEffects, RequestGuard
from pkggov_gateway.domain.recovery import PurgeEffects

__all__ = [
    "CLOSING_KINDS",
    "EXACT_FILTERS",
    "FINAL_CODES",
    "GENESIS",
    "SCHEMA_VERSION",
    "AppendGuard",
    "AuditColumns",
    "AuditEventRecord",
    "AuditPage",
    "AuditQuery",
    "Decision",
    "EntryKind",
    "EventClosed",
    "NewEntry",
    "QuotaCheck",
    "RequestIdClaimed",
    "StoredEntry",
    "canonical",
    "chain_hash",
    "column_values",
    "columns_of",
    "format_time",
    "parse_time",
    "replay_verdict",
]

SCHEMA_VERSION = 1
GENESIS = "0" * 64
"""The prev_hash of the first entry of a chain."""


class EntryKind(StrEnum):
    """What an entry records about its event."""

    INTENT = "intent"
    OUTCOME = "outcome"
    RECONCILIATION = "reconciliation"


class Decision(StrEnum):
    """An event's decision, as one word (the `decision` filter of the audit query)."""

    ALLOWED = "allowed"
    """Every existing version policy decided on was allowed (and sent, unless a dry run)."""
    PARTIAL = "partial"
    """allow_partial: some versions were allowed and sent, others denied."""
    DENIED = "denied"
    """Policy (or a guardrail or quota) refused the call; nothing was sent."""
    DRY_RUN = "dry_run"
    """validate_only: decided, nothing deleted."""
    INVALID = "invalid"
    """The request broke field rules or was not a request message; nothing was read."""
    UNAUTHENTICATED = "unauthenticated"
    """No identity; nothing was evaluated."""
    FAILED = "failed"
    """Anything else that ended in an error (upstream failure, deadline, shutdown, ...)."""
    READ = "read"
    """An audit query (ListAuditEvents, GetAuditEvent) that was answered."""
    REPLAYED = "replayed"
    """A retry with a known request_id, answered from the record (nothing was sent)."""
    APPROVAL_REQUIRED = "approval_required"
    """Policy lets the deletion run only once approved: a deletion request was recorded and
    nothing was deleted."""


def format_time(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # Fields, not strftime: its %Y does not pad years before 1000, and this runs for every
    # time of every entry.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def parse_time(text: str) -> datetime:
    """The inverse of `format_time`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def canonical(body: Mapping[str, Any]) -> str:
    """The canonical JSON form of an entry body: the exact text that is hashed and stored."""
    # ASCII with \u escapes: any string (even a lone surrogate from decoded upstream JSON)
    # has a form that encodes, so one odd value can never jam the store.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(prev_hash: str, canonical_body: str) -> str:
    """The SHA-256 (hex) chaining an entry to the one before it."""
    return hashlib.sha256((prev_hash + canonical_body).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditColumns:
    """The indexed columns of an entry, all derived from its body.

    `request_id` is the body's top-level ``request_id``: set only on the entry that claims an
    AIP-155 request id (the first entry of the event that executed it), so it is unique.
    """

    event_id: str
    kind: str
    recorded_at: str
    request_id: str | None
    principal: str | None
    domain: str | None
    repository: str | None
    format: str | None
    namespace: str | None
    package: str | None
    versions: str | None
    """The requested versions as ``\\nv1\\nv2\\n`` (so ``LIKE '%\\nv\\n%'`` finds one)."""
    decision: str | None
    status_code: str | None
    versions_planned: int | None
    """Intent: how many versions it is about to send (what a quota counts until the outcome)."""
    versions_deleted: int | None
    """Outcome and reconciliation: how many versions were deleted."""


COLUMNS: tuple[str, ...] = tuple(AuditColumns.__dataclass_fields__)
"""The indexed columns' names, in table order (AuditColumns' field order)."""


def column_values(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed columns of an entry, derived from its body, in `COLUMNS` order.

    The one derivation: the store writes these values and `verify` compares them.
    Raises KeyError when the body lacks event_id, kind or time.
    """
    request = body.get("request") or {}
    principal = body.get("principal") or {}
    status = body.get("status") or {}
    versions = request.get("versions")
    forward = body.get("forward")
    deleted = body.get("deleted")
    return (
        str(body["event_id"]),
        str(body["kind"]),
        str(body["time"]),
        _text(body.get("request_id")),
        _text(principal.get("id")),
        _text(request.get("domain")),
        _text(request.get("repository")),
        _text(request.get("format")),
        _text(request.get("namespace")),
        _text(request.get("package")),
        _no_nul("\n" + "\n".join(map(str, versions)) + "\n") if versions else None,
        _text(body.get("decision")),
        _text(status.get("code")),
        len(forward) if isinstance(forward, list | tuple) else None,
        int(deleted) if isinstance(deleted, int) else None,
    )


def columns_of(body: Mapping[str, Any]) -> AuditColumns:
    """The indexed columns of an entry, by name (see `column_values`)."""
    return AuditColumns(*column_values(body))


def _text(value: Any) -> str | None:
    """A text column: None for absent or empty, else the value as a string."""
    return _no_nul(str(value)) if value not in (None, "") else None


def _no_nul(text: str) -> str:
    """`text` with each NUL replaced by U+FFFD: PostgreSQL's text cannot hold NUL, and a
    caller's request must not make its own record unwritable (the body keeps the NUL)."""
    return text.replace("\x00", "\ufffd")


class _EntryBody:
    """What an entry's body says of it (for the entry dataclasses below)."""

    __slots__ = ()
    body: Mapping[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def kind(self) -> EntryKind:
        return EntryKind(self.body["kind"])

    @property
    def time(self) -> str:
        """When the entry was written (`format_time`'s form)."""
        return str(self.body["time"])


@dataclass(frozen=True, slots=True)
class NewEntry(_EntryBody):
    """An entry to append: its body (with event_id, kind and time set), and the changes to
    pending purges that commit with it (in its transaction, or not at all)."""

    body: Mapping[str, Any]
    effects: PurgeEffects = field(default_factory=PurgeEffects)
    approvals: ApprovalEffects = field(default_factory=ApprovalEffects)


@dataclass(frozen=True, slots=True)
class StoredEntry(_EntryBody):
    """An entry as stored: its place in the chain, hashes and body."""

    seq: int
    prev_hash: str
    hash: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of an audit listing (None: any), newest first, one page at a time."""

    principal: str | None = None
    domain: str | None = None
    repository: str | None = None
    format: str | None = None
    namespace: str | None = None
    package: str | None = None
    version: str | None = None
    decision: str | None = None
    status_code: str | None = None
    since: datetime | None = None
    """Inclusive lower bound of the event's time."""
    until: datetime | None = None
    """Exclusive upper bound of the event's time."""
    before_seq: int | None = None
    """Only events listed after the page that ended at this position (pagination)."""
    limit: int = 50


EXACT_FILTERS: tuple[str, ...] = (
    "principal",
    "domain",
    "repository",
    "format",
    "namespace",
    "package",
    "decision",
    "status_code",
)
"""The AuditQuery filters that match an indexed column of the same name exactly (`version`
matches one of the versions; the times and `before_seq` are bounds)."""


@dataclass(frozen=True, slots=True)
class AuditEventRecord:
    """One event: its entries in chain order (intent, outcome, reconciliation, as present)."""

    event_id: str
    entries: tuple[StoredEntry, ...]

    @property
    def head(self) -> StoredEntry:
        """The entry that lists the event: its outcome, else its intent (still open)."""
        for entry in self.entries:
            if entry.kind is EntryKind.OUTCOME:
                return entry
        return self.entries[0]

    def entry(self, kind: EntryKind) -> StoredEntry | None:
        """The entry of `kind`, if the event has one."""
        return next((e for e in self.entries if e.kind is kind), None)


@dataclass(frozen=True, slots=True)
class AuditPage:
    """A page of events, newest first, and where the next page starts (None: the last)."""

    events: tuple[AuditEventRecord, ...]
    next_before_seq: int | None
    positions: tuple[int, ...] = ()
    """Each event's place in the listing: a page cut short after event i continues with
    ``before_seq = positions[i]``."""


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """Refuse an intent that would take `principal` past `limit` versions in the window."""

    principal: str
    limit: int
    window_seconds: float
    subject: str
    """Where the limit comes from, for the caller (e.g. "versions per hour for group ci")."""


@dataclass(frozen=True, slots=True)
class AppendGuard:
    """Checks made atomically with an append, under the chain's lock (so across replicas)."""

    request_id: str | None = None
    """The AIP-155 request id the entry claims for its principal. The claim fails
    (RequestIdClaimed) while an earlier claim's event is open or was answered with a final
    status; `claim_allowed` decides."""
    quota: QuotaCheck | None = None
    deletion_request: RequestGuard | None = None
    """The deletion request the entry acts on must be in a given state (and, for a vote, not
    voted on by the person): refused with DeletionRequestError."""
    closes_open_event: bool = False
    """The entry closes its event (a reconciliation), which must still be open: no outcome and
    no reconciliation yet. Refused with EventClosed otherwise (another replica's sweep, or the
    call's own process, closed it first)."""


class RequestIdClaimed(Exception):  # noqa: N818 - an outcome of a guard, not a failure
    """An append's guard found its request_id claimed by an event that is open or answered."""

    def __init__(self, event: AuditEventRecord) -> None:
        super().__init__(f"request_id already claimed by audit event {event.event_id}")
        self.event = event


class EventClosed(Exception):  # noqa: N818 - an outcome of a guard, not a failure
    """An append's guard found the event it would close closed already."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"audit event {event_id} is closed already")
        self.event_id = event_id


CLOSING_KINDS = (EntryKind.OUTCOME.value, EntryKind.RECONCILIATION.value)
"""The kinds of entry that close an event."""


FINAL_CODES = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
    }
)
"""Statuses a retry with the same request_id gets again from the record (AIP-155). After any
other status (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) the retry runs again."""


def replay_verdict(event: AuditEventRecord) -> str:
    """What a retry with this event's request_id gets: ``replay`` (the recorded answer),
    ``open`` (the call has not finished: ABORTED), or ``rerun`` (it failed retryably)."""
    outcome = event.entry(EntryKind.OUTCOME)
    if outcome is None:
        return "rerun" if event.entry(EntryKind.RECONCILIATION) is not None else "open"
    code = (outcome.body.get("status") or {}).get("code")
    return "replay" if code in FINAL_CODES else "rerun"
