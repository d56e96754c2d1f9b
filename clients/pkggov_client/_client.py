"""PkggovClient: a typed, blocking wrapper around the PackageGovernanceService, ApprovalService,
AuditService and CleanupService stubs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from pkggov.v1 import package_governance_pb2 as gov_pb2
from pkggov.v1 import package_governance_pb2_grpc as gov_pb2_grpc
from pkggov_client import pb
from pkggov_client._approval_model import (
    DeletionRequest,
    DeletionRequestExecution,
    DeletionRequestsPage,
    DeletionRequestState,
)
from pkggov_client._cleanup_model import (
    CleanupJob,
    CleanupJobPage,
    CleanupPlanPage,
    CleanupRule,
)
from pkggov_client._errors import error_from_rpc_error
from pkggov_client._model import (
    DeleteResult,
    PackageFormat,
    PackageVersionStatus,
    PendingPurgesPage,
    RestoreResult,
)
from pkggov_client._token import (
    AUTHORIZATION_KEY,
    FileToken,
    StaticToken,
    TokenError,
    TokenSource,
    is_loopback_target,
)

__all__ = ["DEFAULT_TIMEOUT", "PkggovClient", "check_metadata"]

DEFAULT_TIMEOUT = 30.0
"""The deadline, in seconds, of a call that does not set its own."""

_DEFAULT_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.primary_user_agent", "pkggov-client"),
)
_Response = TypeVar("_Response", bound=Message)
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")


def check_metadata(metadata: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Return the metadata as a tuple, or raise ValueError for a pair gRPC would refuse.

    Keys must be lower-case ASCII letters, digits, "_", "-" or "."; they may not start with
    "grpc-" (reserved) nor end with "-bin" (binary values are not supported here). Values must
    be printable ASCII.
    """
    pairs = tuple((key, value) for key, value in metadata)
    for key, value in pairs:
        if not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"invalid metadata key {key!r}: use lower-case letters, digits, _-.")
        if key.startswith("grpc-") or key.endswith("-bin"):
            raise ValueError(f"invalid metadata key {key!r}: grpc-* and *-bin are not allowed")
        if not _METADATA_VALUE.fullmatch(value):
            raise ValueError(f"invalid metadata value for {key!r}: use printable ASCII only")
    return pairs


def _token_source(
    token: str | None, token_file: str | os.PathLike[str] | None
) -> TokenSource | None:
    """Where the client's bearer token comes from, if it has one."""
    if token is not None and token_file is not None:
        raise ValueError("pass token or token_file, not both")
    if token is not None:
        return StaticToken(token)
    if token_file is not None:
        return FileToken(token_file)
    return None


def _version_list(versions: Iterable[str]) -> list[str]:
    """The versions as a list; TypeError for one string (a collection of characters)."""
    if isinstance(versions, str):
        raise TypeError("versions must be a collection of version strings, not one string")
    return list(versions)


class PkggovClient:
    """A connection to the pkggov gateway; use it as a context manager to close the channel.

    `credentials` None means plaintext (an insecure channel); `metadata` is sent with every
    call; `timeout` is the default deadline in seconds. Every method raises
    `pkggov_client.PkggovError` for a non-OK status.

    Workload identity: `token` (a JWT, such as a CI job's OIDC token) or `token_file` (a file
    holding one, such as a Kubernetes projected service-account token) is sent with every call
    as ``authorization: Bearer TOKEN``. The file is read when the client is made and again
    before any call after it changed (it is stat'ed each call; a rotation by symlink swap or
    rewrite is picked up), with surrounding whitespace stripped. A token travels only over
    TLS, or in plaintext to a loopback or Unix-socket `target` (development); otherwise, as
    for a missing, unreadable or empty file, the constructor raises
    `pkggov_client.TokenError`, as a method does when the file can no longer be read. No
    message, and no repr, holds the token.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = DEFAULT_TIMEOUT,
        options: Sequence[tuple[str, str | int]] = (),
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.target = target
        self.timeout = timeout
        self._metadata = check_metadata(metadata)
        self._token = _token_source(token, token_file)
        sends_authorization = any(key == AUTHORIZATION_KEY for key, _ in self._metadata)
        if self._token is not None and sends_authorization:
            raise ValueError(
                f"metadata already holds {AUTHORIZATION_KEY!r}: pass a token, or that "
                "metadata, not both"
            )
        if (
            (self._token is not None or sends_authorization)
            and credentials is None
            and not is_loopback_target(target)
        ):
            raise TokenError(
                f"refusing to send a bearer token in plaintext to {target!r}: pass TLS "
                "credentials (plaintext is only allowed to a loopback or Unix-socket target, "
                "for development)"
            )
        if self._token is not None:
            self._token.token()  # a missing, unreadable or empty file fails here, not later
        channel_options = [*_DEFAULT_OPTIONS, *options]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=channel_options)
        self._stub = pb.PackageGovernanceServiceStub(self._channel)
        self._audit = pb.AuditServiceStub(self._channel)
        self._approvals = pb.ApprovalServiceStub(self._channel)
        self._cleanup = gov_pb2_grpc.CleanupServiceStub(self._channel)

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of a call: the client's, and its current bearer token, if any."""
        if self._token is None:
            return self._metadata
        return (*self._metadata, (AUTHORIZATION_KEY, f"Bearer {self._token.token()}"))

    def close(self) -> None:
        """Close the channel; calls made afterwards fail."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"

    def delete_package_versions(
        self,
        *,
        domain: str,
        repository: str,
        format: PackageFormat | str,
        package: str,
        versions: Iterable[str],
        namespace: str | None = None,
        domain_owner: str | None = None,
        expected_status: PackageVersionStatus | str | None = None,
        justification: str | None = None,
        validate_only: bool = False,
        allow_partial: bool = False,
        request_id: str | None = None,
        purge_now: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete versions of one package; per-version failures are in `DeleteResult.failed`.

        `format` and `expected_status` take the enums or their CodeArtifact spellings in any
        case ("npm", "PyPI", "published"); an unknown spelling raises ValueError before any
        call is made. `justification` is the free-text reason that policy and audit see.
        `validate_only` makes a dry run: everything is checked and decided as for a real call,
        nothing is deleted, and `DeleteResult.decisions` holds the plan. With `allow_partial`
        the versions policy allows are deleted and denied ones come back in `failed` with
        NOT_ALLOWED; without it one denied version fails the whole call with PkggovError
        (reason POLICY_DENIED, see `PkggovError.denied_versions`). `timeout` overrides the
        client's default deadline for this call. `request_id` (a UUID) makes retries safe
        (AIP-155): the gateway answers a repeated id with the recorded response.

        Where the gateway gives the repository a recovery window, allowed versions are archived
        instead of deleted: they come back in `successful` with status ARCHIVED, their
        `purge_time` and the method that restores them (`restore_package_versions`) until then.
        `purge_now` deletes them at once instead, if policy allows it.
        """
        version_list = _version_list(versions)
        request = pb.DeletePackageVersionsRequest(
            domain=domain,
            domain_owner=domain_owner or "",
            repository=repository,
            format=PackageFormat(format).to_proto(),
            namespace=namespace or "",
            package=package,
            versions=version_list,
            expected_status=(
                pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNSPECIFIED
                if expected_status is None
                else PackageVersionStatus(expected_status).to_proto()
            ),
            justification=justification or "",
            validate_only=validate_only,
            allow_partial=allow_partial,
            request_id=request_id or "",
            purge_now=purge_now,
        )
        try:
            response = self._stub.DeletePackageVersions(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return DeleteResult.from_proto(response, order=version_list)

    def restore_package_versions(
        self,
        *,
        domain: str,
        repository: str,
        format: PackageFormat | str,
        package: str,
        versions: Iterable[str],
        namespace: str | None = None,
        domain_owner: str | None = None,
        justification: str | None = None,
        validate_only: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> RestoreResult:
        """Restore versions that a governed delete archived under a recovery window, before
        their purge: each goes back to the status it had, and its purge is cancelled.

        Arguments as for `delete_package_versions`. Per-version failures are in
        `RestoreResult.failed`: NOT_FOUND (no such version), MISMATCHED_STATUS (not archived),
        NOT_ALLOWED (archived, but not by the gateway), MISMATCHED_REVISION (changed since it
        was archived). A version policy denies fails the whole call with PkggovError (reason
        POLICY_DENIED). `validate_only` makes a dry run whose plan is in
        `RestoreResult.decisions`.
        """
        version_list = _version_list(versions)
        request = pb.RestorePackageVersionsRequest(
            domain=domain,
            domain_owner=domain_owner or "",
            repository=repository,
            format=PackageFormat(format).to_proto(),
            namespace=namespace or "",
            package=package,
            versions=version_list,
            justification=justification or "",
            validate_only=validate_only,
            request_id=request_id or "",
        )
        try:
            response = self._stub.RestorePackageVersions(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return RestoreResult.from_proto(response, order=version_list)

    def list_pending_purges(
        self,
        *,
        domain: str | None = None,
        repository: str | None = None,
        package: str | None = None,
        requester: str | None = None,
        due_before: datetime | None = None,
        page_size: int = 0,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> PendingPurgesPage:
        """One page of the versions archived under a recovery window whose purge is pending,
        soonest due first (PackageGovernanceService.ListPendingPurges).

        Every filter left None matches everything; `requester` is the principal whose request
        archived the version; `due_before` (timezone-aware; a naive datetime raises
        ValueError) keeps purges due before it. `page_size` 0 means the gateway's default
        (50; at most 500). For the next page pass `PendingPurgesPage.next_page_token` as
        `page_token`, with the same filters. Authorized as reading the audit record.
        """
        request = pb.ListPendingPurgesRequest(
            domain=domain or "",
            repository=repository or "",
            package=package or "",
            requester=requester or "",
            page_size=page_size,
            page_token=page_token or "",
        )
        if due_before is not None:
            if due_before.tzinfo is None or due_before.utcoffset() is None:
                raise ValueError("due_before must be a timezone-aware datetime")
            request.due_before.FromDatetime(due_before)
        try:
            response: pb.ListPendingPurgesResponse = self._stub.ListPendingPurges(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return PendingPurgesPage.from_proto(response)

    def list_audit_events(
        self, request: pb.ListAuditEventsRequest, *, timeout: float | None = None
    ) -> pb.ListAuditEventsResponse:
        """One page of audit events, newest first (AuditService.ListAuditEvents)."""
        try:
            response: pb.ListAuditEventsResponse = self._audit.ListAuditEvents(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def get_audit_event(self, event_id: str, *, timeout: float | None = None) -> pb.AuditEvent:
        """One audit event by id (AuditService.GetAuditEvent)."""
        try:
            response: pb.GetAuditEventResponse = self._audit.GetAuditEvent(
                pb.GetAuditEventRequest(event_id=event_id),
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response.event

    def _invoke(
        self,
        method: Callable[..., _Response],
        request: Message,
        timeout: float | None,
    ) -> _Response:
        """Call `method` with the client's metadata and deadline; PkggovError on failure."""
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._call_metadata(),
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err

    # --- ApprovalService: four-eyes deletion requests -----------------------------------------

    def get_deletion_request(
        self, deletion_request_id: str, *, timeout: float | None = None
    ) -> DeletionRequest:
        """One deletion request with its plan and votes (ApprovalService.GetDeletionRequest).

        Readable by its requester and by the principals policy lets read the audit record or
        approve it. An id that names no request raises PkggovError with NOT_FOUND (reason
        DELETION_REQUEST_NOT_FOUND).
        """
        response = self._invoke(
            self._approvals.GetDeletionRequest,
            pb.GetDeletionRequestRequest(id=deletion_request_id),
            timeout,
        )
        return DeletionRequest.from_proto(response.deletion_request)

    def list_deletion_requests(
        self,
        *,
        state: DeletionRequestState | str | None = None,
        requester: str | None = None,
        domain: str | None = None,
        repository: str | None = None,
        package: str | None = None,
        page_size: int = 0,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> DeletionRequestsPage:
        """One page of deletion requests, newest first (ApprovalService.ListDeletionRequests).

        Every filter left None matches everything; `state` takes the enum or its name in any
        case ("pending"; an unknown name raises ValueError before any call is made);
        `requester` is the principal whose call created the request. `page_size` 0 means the
        gateway's default (50; at most 500). For the next page pass
        `DeletionRequestsPage.next_page_token` as `page_token`, with the same filters.
        Authorized as reading the audit record.
        """
        request = pb.ListDeletionRequestsRequest(
            state=(
                pb.DeletionRequestState.DELETION_REQUEST_STATE_UNSPECIFIED
                if state is None
                else DeletionRequestState(state).to_proto()
            ),
            requester=requester or "",
            domain=domain or "",
            repository=repository or "",
            package=package or "",
            page_size=page_size,
            page_token=page_token or "",
        )
        response = self._invoke(self._approvals.ListDeletionRequests, request, timeout)
        return DeletionRequestsPage.from_proto(response)

    def approve_deletion_request(
        self,
        deletion_request_id: str,
        reason: str,
        *,
        plan_hash: str = "",
        timeout: float | None = None,
    ) -> DeletionRequest:
        """Approve a pending deletion request, with a reason (required, at most 1024
        characters); returns the request after the vote, whose `approvals` counts it.

        Policy decides who may approve (Pkggov::Action::"ApproveDeletionRequest"). The
        gateway refuses, with PkggovError: the requester (PERMISSION_DENIED, reason
        SELF_APPROVAL), a second vote of one person (ALREADY_EXISTS, ALREADY_VOTED), a request
        that is no longer pending (FAILED_PRECONDITION, REQUEST_NOT_PENDING or
        REQUEST_EXPIRED), a blank reason (INVALID_ARGUMENT), and, with `plan_hash` (the plan
        the approver reviewed), a request whose plan hash differs (FAILED_PRECONDITION,
        PLAN_CHANGED).
        """
        response = self._invoke(
            self._approvals.ApproveDeletionRequest,
            pb.ApproveDeletionRequestRequest(
                id=deletion_request_id, reason=reason, plan_hash=plan_hash
            ),
            timeout,
        )
        return DeletionRequest.from_proto(response.deletion_request)

    def reject_deletion_request(
        self, deletion_request_id: str, reason: str, *, timeout: float | None = None
    ) -> DeletionRequest:
        """Reject a pending deletion request, with a reason (required); returns the request
        after the vote. A rejection ends the request (state REJECTED) unless the gateway's
        configuration says otherwise. Refused as `approve_deletion_request` is."""
        response = self._invoke(
            self._approvals.RejectDeletionRequest,
            pb.RejectDeletionRequestRequest(id=deletion_request_id, reason=reason),
            timeout,
        )
        return DeletionRequest.from_proto(response.deletion_request)

    def cancel_deletion_request(
        self, deletion_request_id: str, reason: str = "", *, timeout: float | None = None
    ) -> DeletionRequest:
        """Cancel a pending deletion request (its requester only: PERMISSION_DENIED, reason
        NOT_REQUESTER, for anyone else), with an optional reason; returns the cancelled
        request, which can never run."""
        response = self._invoke(
            self._approvals.CancelDeletionRequest,
            pb.CancelDeletionRequestRequest(id=deletion_request_id, reason=reason),
            timeout,
        )
        return DeletionRequest.from_proto(response.deletion_request)

    def execute_deletion_request(
        self, deletion_request_id: str, *, timeout: float | None = None
    ) -> DeletionRequestExecution:
        """Run an approved deletion request's plan through the governed delete path (its
        requester only); returns the delete's result per version and the executed request.

        The gateway re-reads the package first and runs only while the plan still holds:
        otherwise PkggovError with FAILED_PRECONDITION, reason PLAN_CHANGED (its message names
        what changed), and nothing is deleted. Executing before the approvals satisfy policy
        fails with APPROVAL_REQUIRED; a request that expired, was rejected or cancelled with
        REQUEST_EXPIRED or REQUEST_NOT_PENDING; a stored plan that no longer matches its hash
        with DATA_LOSS, PLAN_TAMPERED.
        """
        response = self._invoke(
            self._approvals.ExecuteDeletionRequest,
            pb.ExecuteDeletionRequestRequest(id=deletion_request_id),
            timeout,
        )
        return DeletionRequestExecution.from_proto(response)

    # --- CleanupService: retention plans and the jobs that apply them --------------------------

    def plan_cleanup(
        self,
        *,
        domain: str,
        repository: str,
        rule_name: str | None = None,
        rule: CleanupRule | None = None,
        format: PackageFormat | str | None = None,
        namespace: str | None = None,
        package: str | None = None,
        package_pattern: str | None = None,
        domain_owner: str | None = None,
        justification: str | None = None,
        purge_now: bool = False,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> CleanupPlanPage:
        """Plan a cleanup (CleanupService.PlanCleanup): decide every version of one package
        (`format`, `namespace`, `package`) or of the repository's packages that the filters
        match (`format`, a `namespace` prefix, the `package_pattern` glob) by a rule, and, for
        the versions it would delete, by policy, as a dry run of `delete_package_versions`
        would. Nothing is deleted: the gateway keeps the plan, which `apply_cleanup` runs.

        Give exactly one of `rule_name` (a rule of the gateway's configuration, which must
        apply to the repository: INVALID_ARGUMENT, reason UNKNOWN_CLEANUP_RULE or
        CLEANUP_RULE_NOT_APPLICABLE otherwise) and `rule` (inline); the gateway checks that,
        and every field of the rule, naming each bad field (``rule_name``,
        ``rule.keep_newest``). `format` takes the enum or its spelling in any case (an unknown
        spelling raises ValueError before any call is made). `justification` is what policy
        and audit see for the deletions; `purge_now` asks them to delete at once where a
        recovery window would archive. Returns the plan and its first page of packages
        (`page_size` 0: the gateway's default, 50; at most 500); `get_cleanup_plan` pages on.
        """
        request = gov_pb2.PlanCleanupRequest(
            domain=domain,
            domain_owner=domain_owner or "",
            repository=repository,
            format=(
                pb.PackageFormat.PACKAGE_FORMAT_UNSPECIFIED
                if format is None
                else PackageFormat(format).to_proto()
            ),
            namespace=namespace or "",
            package=package or "",
            package_pattern=package_pattern or "",
            rule_name=rule_name or "",
            justification=justification or "",
            purge_now=purge_now,
            page_size=page_size,
        )
        if rule is not None:
            request.rule.CopyFrom(rule.to_proto())
        response = self._invoke(self._cleanup.PlanCleanup, request, timeout)
        return CleanupPlanPage.from_proto(response)

    def get_cleanup_plan(
        self,
        plan_id: str,
        *,
        page_size: int = 0,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> CleanupPlanPage:
        """A plan and one page of its packages (CleanupService.GetCleanupPlan); pass
        `CleanupPlanPage.next_page_token` as `page_token` for the next page. Readable by its
        requester and by the principals policy lets read the audit record; an id that names no
        plan raises PkggovError with NOT_FOUND (reason CLEANUP_PLAN_NOT_FOUND)."""
        response = self._invoke(
            self._cleanup.GetCleanupPlan,
            gov_pb2.GetCleanupPlanRequest(
                plan_id=plan_id, page_size=page_size, page_token=page_token or ""
            ),
            timeout,
        )
        return CleanupPlanPage.from_proto(response)

    def apply_cleanup(
        self,
        plan_id: str,
        *,
        plan_hash: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> CleanupJob:
        """Start the durable job that runs a plan (CleanupService.ApplyCleanup); returns at
        once with the job (QUEUED): follow it with `get_cleanup_job`.

        Only the plan's requester may apply it (PERMISSION_DENIED, reason NOT_REQUESTER), before
        it expires (FAILED_PRECONDITION, PLAN_EXPIRED); with `plan_hash` (the plan the caller
        reviewed) a plan whose hash differs is refused (PLAN_HASH_MISMATCH). `request_id` (a
        UUID) makes retries safe (AIP-155): a retry gets the same job.
        """
        response = self._invoke(
            self._cleanup.ApplyCleanup,
            gov_pb2.ApplyCleanupRequest(
                plan_id=plan_id, plan_hash=plan_hash, request_id=request_id or ""
            ),
            timeout,
        )
        return CleanupJob.from_proto(response.job)

    def get_cleanup_job(
        self,
        job_id: str,
        *,
        include_results: bool = False,
        page_size: int = 0,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> CleanupJobPage:
        """A job's state and progress (CleanupService.GetCleanupJob), and with
        `include_results` one page of its per-package results (`page_size` 0: the gateway's
        default, 50; at most 500); pass `CleanupJobPage.next_page_token` as `page_token` for the
        next page. Readable by its requester and by the principals policy lets read the audit
        record; an id that names no job raises PkggovError with NOT_FOUND (reason
        CLEANUP_JOB_NOT_FOUND)."""
        response = self._invoke(
            self._cleanup.GetCleanupJob,
            gov_pb2.GetCleanupJobRequest(
                job_id=job_id,
                include_results=include_results,
                page_size=page_size,
                page_token=page_token or "",
            ),
            timeout,
        )
        return CleanupJobPage.from_proto(response)

    def cancel_cleanup_job(
        self, job_id: str, reason: str = "", *, timeout: float | None = None
    ) -> CleanupJob:
        """Cancel a job (CleanupService.CancelCleanupJob; its requester only: PERMISSION_DENIED,
        reason NOT_REQUESTER, for anyone else), with an optional reason; returns the job. No
        package not yet started is deleted; the one in progress finishes. A job that has ended
        raises PkggovError with FAILED_PRECONDITION (reason CLEANUP_JOB_FINISHED)."""
        response = self._invoke(
            self._cleanup.CancelCleanupJob,
            gov_pb2.CancelCleanupJobRequest(job_id=job_id, reason=reason),
            timeout,
        )
        return CleanupJob.from_proto(response.job)
