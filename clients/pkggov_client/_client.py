"""PkggovClient: a typed, blocking wrapper around the PackageGovernanceService stub."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

import grpc

from pkggov_client import pb
from pkggov_client._errors import error_from_rpc_error
from pkggov_client._model import DeleteResult, PackageFormat, PackageVersionStatus

__all__ = ["DEFAULT_TIMEOUT", "PkggovClient", "check_metadata"]

DEFAULT_TIMEOUT = 30.0
"""The deadline, in seconds, of a call that does not set its own."""

_DEFAULT_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.primary_user_agent", "pkggov-client"),
)
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


class PkggovClient:
    """A connection to the pkggov gateway; use it as a context manager to close the channel.

    `credentials` None means plaintext (an insecure channel); `metadata` is sent with every
    call; `timeout` is the default deadline in seconds. Every method raises
    `pkggov_client.PkggovError` for a non-OK status.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = DEFAULT_TIMEOUT,
        options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.target = target
        self.timeout = timeout
        self._metadata = check_metadata(metadata)
        channel_options = [*_DEFAULT_OPTIONS, *options]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=channel_options)
        self._stub = pb.PackageGovernanceServiceStub(self._channel)
        self._audit = pb.AuditServiceStub(self._channel)

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
        """
        if isinstance(versions, str):
            raise TypeError("versions must be a collection of version strings, not one string")
        version_list = list(versions)
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
        )
        try:
            response = self._stub.DeletePackageVersions(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return DeleteResult.from_proto(response, order=version_list)

    def list_audit_events(
        self, request: pb.ListAuditEventsRequest, *, timeout: float | None = None
    ) -> pb.ListAuditEventsResponse:
        """One page of audit events, newest first (AuditService.ListAuditEvents)."""
        try:
            response: pb.ListAuditEventsResponse = self._audit.ListAuditEvents(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
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
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response.event
