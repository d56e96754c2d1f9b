"""Four eyes: deletion requests that wait for approval, bound to the exact plan they approve.

When policy says a deletion needs approval (a forbid annotated ``@approval`` is all that stands
in its way), the call deletes nothing: it records a *deletion request* holding the plan exactly
as it was decided (every version with its revision and status, the package facts the policy
used, the justification and the flags), a SHA-256 of that plan, and its requester. Principals
whom policy lets approve vote (approve or reject, each with a reason). The requester never
counts as an approver, whatever the policy says, in any identity form of the same person; one
person counts once. `ExecuteDeletionRequest` runs the plan only while it still holds, through
the governed delete path, with the votes in the policy's context.

Like pending purges, a deletion request changes only together with the audit entry that
explains it (`ApprovalEffects` ride on the entry), checked atomically with it
(`RequestGuard`): creation with the call's outcome, a vote or a state change with the
intent of the call that makes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pkggov_gateway.domain.errors import (
    AlreadyVotedError,
    PkggovError,
    RequestExpiredError,
    RequestNotPendingError,
)
from pkggov_gateway.domain.model import PackageFormat, PackageRef, PackageState, VersionStatus

__all__ = [
    "ApprovalEffects",
    "DeletionPlan",
    "DeletionRequestPage",
    "DeletionRequestQuery",
    "DeletionRequestRecord",
    "NewVote",
    "PlannedItem",
    "RequestGuard",
    "RequestState",
    "Transition",
    "Vote",
    "WebhookEvent",
]

_T = TypeVar("_T")


class RequestState(StrEnum):
    """Where a deletion request stands. Only PENDING can change; EXECUTING is the claim of
    one executor (two replicas executing the same request run it once)."""

    PENDING = "pending"
    EXECUTING = "executing"
    EXECUTED = "executed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One version of the plan, as it was decided."""

    version: str
    revision: str
    status: VersionStatus
    is_latest: bool


@dataclass(frozen=True, slots=True)
class DeletionPlan:
    """Exactly what a deletion request would do, and the facts the decision rested on."""

    package: PackageRef
    versions: tuple[PlannedItem, ...]
    latest: str | None
    """The package's latest version when decided."""
    version_count: int
    """How many versions the package had when decided."""
    requested: tuple[str, ...]
    """Every version the request named (some may not exist or be refused), in order."""
    justification: str
    expected_status: VersionStatus | None
    allow_partial: bool
    purge_now: bool

    def body(self) -> dict[str, Any]:
        """The plan as JSON (what the store keeps and the hash covers)."""
        package = self.package
        return {
            "package": {
                "domain": package.domain,
                "domain_owner": package.domain_owner or "",
                "repository": package.repository,
                "format": package.format.value,
                "namespace": package.namespace or "",
                "package": package.package,
            },
            "versions": [
                {
                    "version": item.version,
                    "revision": item.revision,
                    "status": item.status.value,
                    "is_latest": item.is_latest,
                }
                for item in self.versions
            ],
            "latest": self.latest,
            "version_count": self.version_count,
            "requested": list(self.requested),
            "justification": self.justification,
            "expected_status": self.expected_status.value if self.expected_status else None,
            "allow_partial": self.allow_partial,
            "purge_now": self.purge_now,
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the plan's canonical JSON: what approvers approve."""
        return plan_digest(self.body())

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeletionPlan:
        """The plan `body` describes: the inverse of `body` (an empty namespace or domain
        owner is None). Raises KeyError, TypeError or ValueError for a body that is not one
        (a value of the wrong type is not converted)."""
        package = body["package"]
        expected = body["expected_status"]
        return cls(
            package=PackageRef(
                domain=_typed(package["domain"], str),
                repository=_typed(package["repository"], str),
                format=PackageFormat(_typed(package["format"], str)),
                package=_typed(package["package"], str),
                namespace=_typed(package["namespace"], str) or None,
                domain_owner=_typed(package["domain_owner"], str) or None,
            ),
            versions=tuple(
                PlannedItem(
                    version=_typed(item["version"], str),
                    revision=_typed(item["revision"], str),
                    status=VersionStatus(_typed(item["status"], str)),
                    is_latest=_typed(item["is_latest"], bool),
                )
                for item in _typed(body["versions"], list)
            ),
            latest=None if body["latest"] is None else _typed(body["latest"], str),
            version_count=_typed(body["version_count"], int),
            requested=tuple(_typed(v, str) for v in _typed(body["requested"], list)),
            justification=_typed(body["justification"], str),
            expected_status=None if expected is None else VersionStatus(_typed(expected, str)),
            allow_partial=_typed(body["allow_partial"], bool),
            purge_now=_typed(body["purge_now"], bool),
        )

    def changes(self, state: PackageState) -> list[str]:
        """What no longer holds of the plan in `state` (empty: it all holds): its versions
        with their statuses and revisions, the latest version, the number of versions."""
        found = []
        for item in self.versions:
            status = state.statuses.get(item.version)
            if status is None:
                found.append(f"version {item.version} no longer exists")
                continue
            if status is not item.status:
                found.append(f"version {item.version} is {status}, not {item.status}")
            revision = state.revisions.get(item.version)
            if revision is not None and revision != item.revision:
                found.append(f"version {item.version} has another revision (changed since)")
        if state.latest != self.latest:
            found.append(f"the latest version is {state.latest}, not {self.latest}")
        if len(state.statuses) != self.version_count:
            found.append(
                f"the package has {len(state.statuses)} versions, not {self.version_count}"
            )
        return found


def _typed(value: Any, kind: type[_T]) -> _T:
    """`value` when it is a `kind` (an int is not a bool, nor a bool an int), else TypeError."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"a plan holds a {kind.__name__} here, not {value!r}")
    return value


def plan_digest(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a plan body's canonical JSON (sorted keys, no spaces, ASCII)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Vote:
    """One principal's vote on a request, as recorded."""

    approver: str
    """The principal id as identified."""
    person: str
    """Whom the principal id belongs to (the entities file's `person`, else the id)."""
    approve: bool
    groups: tuple[str, ...]
    reason: str
    at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class DeletionRequestRecord:
    """A deletion request as stored, with its votes."""

    request_id: str
    requester: str
    requester_person: str
    created_at: datetime
    expires_at: datetime
    state: RequestState
    plan: DeletionPlan
    plan_hash: str
    required_by: tuple[str, ...]
    """The @ids of the approval policies that asked for it."""
    event_id: str
    """The audit event that created it."""
    votes: tuple[Vote, ...] = ()
    closed_reason: str = ""
    closed_event_id: str = ""
    stored_plan: Mapping[str, Any] | None = None
    """The plan's body as read back from the store (None for a new record): a tampered row
    shows as a digest that differs from `plan_hash` or from the creating audit entry's."""

    def approvers(self) -> tuple[Vote, ...]:
        """The approving votes that count: not the requester's person, one per person."""
        seen: set[str] = set()
        counted = []
        for vote in self.votes:
            if vote.approve and vote.person != self.requester_person and vote.person not in seen:
                seen.add(vote.person)
                counted.append(vote)
        return tuple(counted)

    def rejections(self) -> tuple[Vote, ...]:
        """The rejecting votes."""
        return tuple(vote for vote in self.votes if not vote.approve)


@dataclass(frozen=True, slots=True)
class NewVote:
    """A vote to insert (with the audit entry of the call that casts it)."""

    request_id: str
    vote: Vote


@dataclass(frozen=True, slots=True)
class Transition:
    """Moves a request from one of `from_states` to `to_state` (no effect otherwise)."""

    request_id: str
    from_states: tuple[RequestState, ...]
    to_state: RequestState
    reason: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One notification to deliver (created, approved, rejected, expired, executed, ...)."""

    event_id: str
    kind: str
    request_id: str
    payload: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalEffects:
    """Changes to deletion requests committed atomically with an audit entry."""

    create: tuple[DeletionRequestRecord, ...] = ()
    votes: tuple[NewVote, ...] = ()
    transitions: tuple[Transition, ...] = ()
    notify: tuple[WebhookEvent, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.create or self.votes or self.transitions or self.notify)


@dataclass(frozen=True, slots=True)
class RequestGuard:
    """Checked under the chain's lock with the entry it guards (so across replicas).

    The request must exist, be in one of `states` and not be expired at `now`; with `voter`,
    that person must not have voted on it yet. Refused: domain.errors.DeletionRequestError.
    """

    request_id: str
    states: tuple[RequestState, ...]
    now: datetime
    voter: str | None = None
    expired_ok: bool = False
    """Accept a pending request past its expiry (the step that records the expiry)."""

    def refusal(self, state: str, expires_at: datetime, *, voted: bool) -> PkggovError | None:
        """Why the guard refuses a request found in `state` (its stored value) that expires
        at `expires_at`, whose voter has (`voted`) or has not voted on it; None: it may
        proceed. The one verdict of every store."""
        request_id = self.request_id
        allowed = [str(s) for s in self.states]  # a StrEnum's str is its value
        expired = RequestExpiredError(
            f"deletion request {request_id} expired at {expires_at.isoformat()}: it can never run",
            request_id,
        )
        if state == RequestState.EXPIRED.value and state not in allowed:
            return expired
        if state not in allowed:
            return RequestNotPendingError(
                f"deletion request {request_id} is {state}, not "
                f"{' or '.join(allowed) or 'any'}: this step cannot be taken on it",
                request_id,
            )
        late = expires_at <= self.now
        if state == RequestState.PENDING.value and late and not self.expired_ok:
            return expired
        if voted:
            return AlreadyVotedError(
                f"{self.voter} has already voted on deletion request {request_id}: "
                "one person counts once",
                request_id,
            )
        return None


@dataclass(frozen=True, slots=True)
class DeletionRequestQuery:
    """Filters of the request listing (None: any), newest first."""

    state: RequestState | None = None
    requester: str | None = None
    domain: str | None = None
    repository: str | None = None
    package: str | None = None
    after: tuple[str, str] | None = None
    """(created_at as `format_time`, request_id) of the previous page's last row."""
    limit: int = 50


@dataclass(frozen=True, slots=True)
class DeletionRequestPage:
    """One page of requests; `next_after` is the cursor of the next page (None: last)."""

    requests: Sequence[DeletionRequestRecord]
    next_after: tuple[str, str] | None = None
