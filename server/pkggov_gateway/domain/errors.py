"""Domain errors: what can go wrong, named without any transport in mind.

The hierarchy (the gRPC layer maps each leaf to a status through one table)::

    PkggovError
    ├── UnauthenticatedError         no acceptable identity; nothing is evaluated or forwarded
    ├── MalformedRequestError        the request bytes are not a valid message; nothing is read
    ├── MethodNotImplementedError    the method is declared but the gateway does not serve it
    ├── InvalidRequestError          the request breaks field rules; nothing is forwarded
    ├── DeadlineTooShortError        too little time is left to call CodeArtifact at all
    ├── GatewayDrainingError         the gateway is shutting down; nothing more is sent
    ├── PolicyDeniedError            policy denies versions (all-or-nothing); nothing is deleted
    ├── VersionLimitError            more versions than the caller's groups may name at once
    ├── AuditUnavailableError        the audit store cannot commit; nothing is forwarded
    ├── QuotaExceededError           the caller's deletion quota for the window is used up
    ├── RequestIdConflictError       a request_id reused with different content
    ├── RequestInProgressError       a request_id whose first call has not finished
    ├── PackageBusyError             another call holds the package until past the deadline
    ├── AuditEventNotFoundError      no audit event has the id asked for
    ├── CleanupError                 a cleanup plan or job refuses the step (subclass says why)
    └── UpstreamError                CodeArtifact (or the way to it) failed the call
        ├── UpstreamValidationError      400 ValidationException
        ├── UpstreamNotFoundError        404 ResourceNotFoundException
        ├── UpstreamAccessDeniedError    403 AccessDeniedException (the gateway's AWS identity)
        ├── UpstreamConflictError        409 ConflictException
        ├── UpstreamThrottledError       429 ThrottlingException, after bounded retries
        ├── UpstreamRateLimitedError     the gateway's own rate limit toward CodeArtifact has no
        │                                slot within the deadline; nothing was sent
        ├── UpstreamInternalError        500 InternalServerException, after bounded retries
        ├── UpstreamUnavailableError     connection refused, endpoint unreachable, dropped
        ├── UpstreamTimeoutError         the deadline ran out while a call was in flight
        ├── GatewayCredentialsError      the gateway's own AWS credentials are missing/invalid
        └── UpstreamUnknownError         an error code the gateway does not know
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule on one request field (proto field path, e.g. ``versions[2]``)."""

    field: str
    description: str


class PkggovError(Exception):
    """Base of every error the gateway reports to its caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def metadata(self) -> Mapping[str, str]:
        """Facts for ErrorInfo.metadata (none unless the error has some)."""
        return {}


class UnauthenticatedError(PkggovError):
    """Raised when a call carries no identity the gateway accepts."""


class MalformedRequestError(PkggovError):
    """Raised when the request's bytes cannot be decoded as the method's request message."""


class MethodNotImplementedError(PkggovError):
    """Raised when a called method is declared (its service is served) but not implemented."""


class InvalidRequestError(PkggovError):
    """Raised when a request breaks one or more field rules; carries every violation."""

    _NAMED = 5  # fields named in the message; BadRequest carries the rest

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        names = list(dict.fromkeys(v.field for v in self.violations))
        shown = ", ".join(names[: self._NAMED]) + (", ..." if len(names) > self._NAMED else "")
        super().__init__(f"invalid request: {len(self.violations)} bad field(s): {shown}")


@dataclass(frozen=True, slots=True)
class DeniedVersion:
    """One version policy denied, with the @ids of the deciding policies (empty: none permits)."""

    version: str
    policy_ids: tuple[str, ...]
    reason: str


class PolicyDeniedError(PkggovError):
    """Raised when policy denies one or more versions and partial deletion was not asked for."""

    def __init__(
        self, denied: Sequence[DeniedVersion], requested: int, *, message: str | None = None
    ) -> None:
        self.denied = tuple(denied)
        super().__init__(
            message
            or f"policy denies {len(self.denied)} of {requested} version(s); nothing was deleted"
        )


class VersionLimitError(PkggovError):
    """Raised when a request names more versions than the caller's groups may at once."""

    def __init__(self, requested: int, limit: int, groups: Sequence[str]) -> None:
        self.requested = requested
        self.limit = limit
        self.groups = tuple(groups)
        held = ", ".join(self.groups) or "no group"
        super().__init__(
            f"the request names {requested} versions; callers in {held} may name at most {limit}"
        )


class AuditUnavailableError(PkggovError):
    """Raised when the audit store cannot durably record an entry (fail closed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the audit store cannot record this call, so nothing was done ({detail}); retry later"
        )
        self.detail = detail


class QuotaExceededError(PkggovError):
    """Raised when deleting would take the caller past its versions-per-window quota."""

    def __init__(
        self, subject: str, limit: int, used: int, asked: int, retry_after_seconds: float
    ) -> None:
        super().__init__(
            f"deletion quota exceeded: {subject} is {limit}; {used} used, {asked} more asked"
        )
        self.subject = subject
        self.limit = limit
        self.used = used
        self.asked = asked
        self.retry_after_seconds = retry_after_seconds


class RequestIdConflictError(PkggovError):
    """Raised when a request_id already names a call with different content (AIP-155)."""

    def __init__(self, request_id: str, event_id: str) -> None:
        super().__init__(
            f"request_id {request_id} was already used, by audit event {event_id}, "
            "for a request with different content"
        )
        self.request_id = request_id
        self.event_id = event_id


class RequestInProgressError(PkggovError):
    """Raised when a request_id names a call that has not finished (or awaits reconciliation)."""

    def __init__(self, request_id: str, event_id: str) -> None:
        super().__init__(
            f"request_id {request_id} names a call still in progress (audit event {event_id}); "
            "retry later"
        )
        self.request_id = request_id
        self.event_id = event_id


class PackageBusyError(PkggovError):
    """Raised when another call is deciding on or changing the same package and does not let
    go of it before this call's deadline; nothing was read, recorded as intent or sent."""

    def __init__(self, package: str, waited_seconds: float) -> None:
        super().__init__(
            f"another call is changing package {package} and did not finish within this "
            f"call's deadline ({waited_seconds:.3f}s waited); nothing was sent: retry"
        )
        self.package = package
        self.waited_seconds = waited_seconds


class AuditEventNotFoundError(PkggovError):
    """Raised when an audit event id names no event."""

    _QUOTED = 64  # characters of the id the message quotes; the audited request has it whole

    def __init__(self, event_id: str) -> None:
        shown = repr(event_id[: self._QUOTED])
        if len(event_id) > self._QUOTED:
            shown += f"… ({len(event_id)} characters)"
        super().__init__(f"no audit event has id {shown}")
        self.event_id = event_id


class ApprovalRequiredError(PkggovError):
    """Raised when policy lets the deletion run only once approved: nothing was deleted, and
    a deletion request holding the plan was recorded (or, for a dry run, would be)."""

    def __init__(
        self, request_id: str | None, policy_ids: Sequence[str], plan_hash: str, versions: int
    ) -> None:
        ids = ", ".join(policy_ids) or "an approval policy"
        where = (
            f"deletion request {request_id} records the plan: approvers vote on it, then "
            "ExecuteDeletionRequest runs it"
            if request_id
            else "a real call would record a deletion request"
        )
        super().__init__(
            f"{versions} version(s) need approval ({ids}); nothing was deleted; {where}"
        )
        self.request_id = request_id
        self.policy_ids = tuple(policy_ids)
        self.plan_hash = plan_hash

    def metadata(self) -> Mapping[str, str]:
        """The request's id and the plan's hash."""
        found = {"deletion_request_id": self.request_id or "", "plan_hash": self.plan_hash}
        return {key: value for key, value in found.items() if value}


class DeletionRequestNotFoundError(PkggovError):
    """Raised when a deletion request id names no request."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no deletion request has id {request_id!r}")
        self.request_id = request_id


class DeletionRequestError(PkggovError):
    """Base of the refusals of a step on a deletion request (the subclass says which)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id

    def metadata(self) -> Mapping[str, str]:
        """The request's id."""
        return {"deletion_request_id": self.request_id}


class SelfApprovalError(DeletionRequestError):
    """The requester (in any identity form of the same person) voted on their own request."""


class AlreadyVotedError(DeletionRequestError):
    """The person has already voted on the request: one person counts once."""


class RequestNotPendingError(DeletionRequestError):
    """The request was executed, rejected, cancelled or is being executed: it cannot change."""


class RequestExpiredError(DeletionRequestError):
    """The request expired: it can never run."""


class NotRequesterError(DeletionRequestError):
    """Only the requester may cancel or execute a request."""


class PlanTamperedError(DeletionRequestError):
    """The stored plan does not match the hash recorded when the request was created."""


class PlanChangedError(PkggovError):
    """Raised when an approved plan no longer holds at execution: nothing was deleted."""

    def __init__(self, request_id: str, changes: Sequence[str]) -> None:
        super().__init__(
            f"the plan of deletion request {request_id} no longer holds, nothing was deleted: "
            + "; ".join(changes)
        )
        self.request_id = request_id
        self.changes = tuple(changes)

    def metadata(self) -> Mapping[str, str]:
        """The request's id."""
        return {"deletion_request_id": self.request_id}


class CleanupError(PkggovError):
    """Base of the refusals of a step on a cleanup plan or job (the subclass says which)."""

    def __init__(self, message: str, *, plan_id: str = "", job_id: str = "") -> None:
        super().__init__(message)
        self.plan_id = plan_id
        self.job_id = job_id

    def metadata(self) -> Mapping[str, str]:
        """The plan's and the job's ids, where known."""
        found = {"cleanup_plan_id": self.plan_id, "cleanup_job_id": self.job_id}
        return {key: value for key, value in found.items() if value}


class CleanupPlanNotFoundError(CleanupError):
    """No cleanup plan has the id asked for."""


class CleanupJobNotFoundError(CleanupError):
    """No cleanup job has the id asked for."""


class CleanupNotRequesterError(CleanupError):
    """Only a plan's requester may apply it, and only a job's requester may cancel it."""


class CleanupPlanExpiredError(CleanupError):
    """The plan is past its expiry: plan again (the repository has changed since, perhaps)."""


class CleanupPlanHashMismatchError(CleanupError):
    """The plan_hash the caller reviewed is not the plan's."""


class CleanupPlanTamperedError(CleanupError):
    """The stored plan does not match the hash its PlanCleanup call recorded."""


class CleanupJobFinishedError(CleanupError):
    """The job has finished: it cannot be cancelled."""


class CleanupTooLargeError(CleanupError):
    """The plan would cover more packages or versions than the configuration allows."""


class CleanupPlanLimitError(CleanupError):
    """The principal has as many unexpired plans as the configuration allows."""


def plan_limit(principal: str, most: int) -> CleanupPlanLimitError:
    """The refusal of a plan beyond `principal`'s `most` unexpired plans."""
    return CleanupPlanLimitError(
        f"{principal} has {most} cleanup plans that have not expired "
        "(cleanup.max_open_plans): apply or wait for one to expire"
    )


class UnknownCleanupRuleError(CleanupError):
    """No configured cleanup rule has the name asked for."""


class CleanupRuleNotApplicableError(CleanupError):
    """The named rule does not apply to the repository asked for."""


class GatewayDrainingError(PkggovError):
    """Raised instead of starting an upstream call once the gateway has begun to shut down."""

    def __init__(self) -> None:
        super().__init__(
            "the gateway is shutting down; nothing more was sent to CodeArtifact for this "
            "request: retry it on another replica"
        )


class DeadlineTooShortError(PkggovError):
    """Raised before calling CodeArtifact when the caller's remaining time is too short."""

    def __init__(self, remaining: float, needed: float) -> None:
        super().__init__(
            f"deadline too short: {remaining:.3f}s left, at least {needed:.3f}s needed "
            "to call CodeArtifact; nothing was sent"
        )
        self.remaining = remaining
        self.needed = needed


class UpstreamError(PkggovError):
    """Base of the failures of a CodeArtifact call; carries the AWS request id when known.

    `outcome_unknown` is True when the request may have reached CodeArtifact and been
    applied although no answer came back (a read timeout, a dropped connection).
    """

    outcome_unknown: bool = False

    def __init__(
        self,
        message: str,
        *,
        aws_request_id: str | None = None,
        aws_error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.aws_request_id = aws_request_id
        self.aws_error_code = aws_error_code

    def metadata(self) -> Mapping[str, str]:
        """Facts for ErrorInfo.metadata: the AWS request id and error code when known."""
        found = {"aws_request_id": self.aws_request_id, "aws_error_code": self.aws_error_code}
        return {key: value for key, value in found.items() if value}


class UpstreamValidationError(UpstreamError):
    """Raised when CodeArtifact rejects the request as invalid (ValidationException)."""

    def __init__(self, message: str, *, reason: str | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class _ResourceError(UpstreamError):
    """An upstream error about one named resource."""

    def __init__(
        self,
        message: str,
        *,
        resource_type: str | None = None,
        resource_id: str | None = None,
        **kw: str | None,
    ) -> None:
        super().__init__(message, **kw)
        self.resource_type = resource_type
        self.resource_id = resource_id


class UpstreamNotFoundError(_ResourceError):
    """Raised when the domain, repository or package does not exist (ResourceNotFound)."""


class UpstreamConflictError(_ResourceError):
    """Raised when CodeArtifact reports a conflict with the resource's state."""


class UpstreamAccessDeniedError(UpstreamError):
    """Raised when the gateway's own AWS identity may not perform the call."""


class UpstreamThrottledError(UpstreamError):
    """Raised when CodeArtifact still throttles after the gateway's bounded retries."""

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, **kw: str | None
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after_seconds = retry_after_seconds


class UpstreamRateLimitedError(UpstreamError):
    """Raised when the gateway's rate limit toward CodeArtifact has no free slot before the
    caller's deadline; nothing was sent. `retry_after_seconds`: when a slot is next free."""

    def __init__(self, message: str, *, retry_after_seconds: float, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after_seconds = retry_after_seconds


class UpstreamInternalError(UpstreamError):
    """Raised when CodeArtifact still fails internally after the gateway's bounded retries."""


class UpstreamUnavailableError(UpstreamError):
    """Raised when CodeArtifact cannot be reached or the connection broke."""

    def __init__(self, message: str, *, outcome_unknown: bool = False, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.outcome_unknown = outcome_unknown


class UpstreamTimeoutError(UpstreamError):
    """Raised when the deadline ran out while a delete was in flight: its outcome is unknown."""

    outcome_unknown = True


class GatewayCredentialsError(UpstreamError):
    """Raised when the gateway's own AWS credentials are missing or rejected."""


class UpstreamUnknownError(UpstreamError):
    """Raised for an upstream error code the gateway has no mapping for."""
