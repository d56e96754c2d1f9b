"""Plain Python types for four-eyes deletion (ApprovalService): a deletion request bound to its
plan, its votes, a page of requests, and what executing one did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from pkggov_client import pb
from pkggov_client._model import (
    DeleteResult,
    PackageFormat,
    PackageVersionStatus,
    _CaseInsensitiveStrEnum,
    timestamp_to_datetime,
)

__all__ = [
    "DeletionRequest",
    "DeletionRequestExecution",
    "DeletionRequestState",
    "DeletionRequestsPage",
    "DeletionVote",
    "PlannedVersion",
]

_STATE_PREFIX = "DELETION_REQUEST_STATE_"


class DeletionRequestState(_CaseInsensitiveStrEnum):
    """Where a deletion request stands; `DeletionRequestState("Pending")` works.

    Only a PENDING request can change: it takes votes, and its requester can cancel or execute
    it. EXECUTING is one replica's claim while it runs the plan; EXECUTED, REJECTED, CANCELLED
    and EXPIRED are final (the last three never run).
    """

    PENDING = "pending"
    EXECUTING = "executing"
    EXECUTED = "executed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        """True for a state the request never leaves (executed, rejected, cancelled, expired)."""
        return self not in (DeletionRequestState.PENDING, DeletionRequestState.EXECUTING)

    def to_proto(self) -> pb.DeletionRequestState.ValueType:
        """Return the matching `pkggov.v1.DeletionRequestState` value."""
        return pb.DeletionRequestState.Value(f"{_STATE_PREFIX}{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> DeletionRequestState | None:
        """Return the state of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = pb.DeletionRequestState.Name(pb.DeletionRequestState.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix(_STATE_PREFIX))


def _time(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when it is not set."""
    return timestamp_to_datetime(stamp) if present else None


@dataclass(frozen=True)
class PlannedVersion:
    """One version of a deletion request's plan, as it was decided: execution runs only while
    the version still has this `revision` and `status` (and is, or is not, the latest)."""

    version: str
    revision: str
    status: PackageVersionStatus | None
    is_latest: bool

    @classmethod
    def from_proto(cls, planned: pb.PlannedVersion) -> PlannedVersion:
        """Build a planned version from its proto."""
        return cls(
            version=planned.version,
            revision=planned.revision,
            status=PackageVersionStatus.from_proto(planned.status),
            is_latest=planned.is_latest,
        )


@dataclass(frozen=True)
class DeletionVote:
    """One principal's vote on a deletion request.

    `approve` is True for an approval, False for a rejection; `groups` are the principal's
    groups when it voted; `counts` says whether the vote counts towards approval (never for
    the requester, nor for a second vote of one person); `audit_event_id` names the audit
    event of the vote (None when the gateway sent none).
    """

    approver: str
    approve: bool
    groups: tuple[str, ...]
    reason: str
    time: datetime | None
    counts: bool
    audit_event_id: str | None

    @classmethod
    def from_proto(cls, vote: pb.DeletionVote) -> DeletionVote:
        """Build a vote from its proto."""
        return cls(
            approver=vote.approver,
            approve=vote.approve,
            groups=tuple(vote.groups),
            reason=vote.reason,
            time=_time(vote.time, vote.HasField("time")),
            counts=vote.counts,
            audit_event_id=vote.audit_event_id or None,
        )


@dataclass(frozen=True)
class DeletionRequest:
    """A deletion that waits for approval, bound to its plan; `raw` is the proto.

    `versions` is the plan (each version with the revision and status it was decided on) and
    `plan_hash` its SHA-256, what approvers approve; `requested_versions` every version the
    original call named, `latest_version` and `version_count` the package facts the decision
    used. `required_by` holds the @ids of the approval policies that asked for approval;
    `votes` every vote in the order cast, `approvals` how many approving votes count. Text
    fields the gateway left empty (`domain_owner`, `namespace`, `justification`,
    `latest_version`, `closed_reason`, the event ids) are None; `state`, `format` and
    `expected_status` are None for a value this client does not know (or none).
    """

    id: str
    state: DeletionRequestState | None
    requester: str
    create_time: datetime | None
    expire_time: datetime | None
    domain: str
    domain_owner: str | None
    repository: str
    format: PackageFormat | None
    namespace: str | None
    package: str
    versions: tuple[PlannedVersion, ...]
    requested_versions: tuple[str, ...]
    latest_version: str | None
    version_count: int
    justification: str | None
    expected_status: PackageVersionStatus | None
    allow_partial: bool
    purge_now: bool
    plan_hash: str
    required_by: tuple[str, ...]
    votes: tuple[DeletionVote, ...]
    approvals: int
    audit_event_id: str | None
    closed_reason: str | None
    closed_audit_event_id: str | None
    raw: pb.DeletionRequest = field(repr=False)

    @classmethod
    def from_proto(cls, request: pb.DeletionRequest) -> DeletionRequest:
        """Build a deletion request from its proto."""
        return cls(
            id=request.id,
            state=DeletionRequestState.from_proto(request.state),
            requester=request.requester,
            create_time=_time(request.create_time, request.HasField("create_time")),
            expire_time=_time(request.expire_time, request.HasField("expire_time")),
            domain=request.domain,
            domain_owner=request.domain_owner or None,
            repository=request.repository,
            format=PackageFormat.from_proto(request.format),
            namespace=request.namespace or None,
            package=request.package,
            versions=tuple(PlannedVersion.from_proto(v) for v in request.versions),
            requested_versions=tuple(request.requested_versions),
            latest_version=request.latest_version or None,
            version_count=request.version_count,
            justification=request.justification or None,
            expected_status=PackageVersionStatus.from_proto(request.expected_status),
            allow_partial=request.allow_partial,
            purge_now=request.purge_now,
            plan_hash=request.plan_hash,
            required_by=tuple(request.required_by),
            votes=tuple(DeletionVote.from_proto(v) for v in request.votes),
            approvals=request.approvals,
            audit_event_id=request.audit_event_id or None,
            closed_reason=request.closed_reason or None,
            closed_audit_event_id=request.closed_audit_event_id or None,
            raw=request,
        )

    @property
    def pending(self) -> bool:
        """True while the request takes votes and can be cancelled or executed (unless it has
        expired since the gateway last looked: see `is_expired`)."""
        return self.state is DeletionRequestState.PENDING

    @property
    def rejections(self) -> tuple[DeletionVote, ...]:
        """The rejecting votes, in the order cast."""
        return tuple(vote for vote in self.votes if not vote.approve)

    @property
    def counted_approvers(self) -> tuple[str, ...]:
        """The approvers whose votes count, in the order they voted."""
        return tuple(vote.approver for vote in self.votes if vote.approve and vote.counts)

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when the request expired: its state says so, or it is still pending and its
        expiry is not after `now` (timezone-aware; default: the current time)."""
        if self.state is DeletionRequestState.EXPIRED:
            return True
        if not self.pending or self.expire_time is None:
            return False
        moment = datetime.now(UTC) if now is None else now
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        return self.expire_time <= moment

    @property
    def plan_versions(self) -> tuple[str, ...]:
        """The versions the plan deletes, in plan order."""
        return tuple(planned.version for planned in self.versions)


@dataclass(frozen=True)
class DeletionRequestsPage:
    """One page of ListDeletionRequests, newest first; `raw` is the response proto.

    `next_page_token` is None on the last page; pass it as `page_token`, with the same
    filters, for the next one.
    """

    deletion_requests: tuple[DeletionRequest, ...]
    next_page_token: str | None
    raw: pb.ListDeletionRequestsResponse = field(repr=False)

    @classmethod
    def from_proto(cls, response: pb.ListDeletionRequestsResponse) -> DeletionRequestsPage:
        """Build a page from a response."""
        return cls(
            deletion_requests=tuple(
                DeletionRequest.from_proto(r) for r in response.deletion_requests
            ),
            next_page_token=response.next_page_token or None,
            raw=response,
        )


@dataclass(frozen=True)
class DeletionRequestExecution:
    """What ExecuteDeletionRequest did: `result` is the governed delete's outcome per version,
    as `delete_package_versions` returns it (in plan order), `deletion_request` the request
    after it ran; `raw` is the response proto."""

    result: DeleteResult
    deletion_request: DeletionRequest
    raw: pb.ExecuteDeletionRequestResponse = field(repr=False)

    @classmethod
    def from_proto(cls, response: pb.ExecuteDeletionRequestResponse) -> DeletionRequestExecution:
        """Build an execution from a response."""
        request = DeletionRequest.from_proto(response.deletion_request)
        order = [*request.plan_versions, *request.requested_versions]
        return cls(
            result=DeleteResult.from_proto(response.result, order=order),
            deletion_request=request,
            raw=response,
        )

    @property
    def audit_event_id(self) -> str | None:
        """The audit event of the execution (the governed delete's), or None."""
        return self.result.audit_event_id
