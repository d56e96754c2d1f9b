"""Plain Python types for the pkggov API: formats, statuses, decisions, the results of a delete
and of a restore, and the pending purges of versions archived under a recovery window."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from google.protobuf import timestamp_pb2

from pkggov_client import pb


class _CaseInsensitiveStrEnum(enum.StrEnum):
    """A StrEnum whose constructor also accepts its values in any letter case."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            folded = value.casefold()
            for member in cls:
                if member.value.casefold() == folded:
                    return member
        return None


class PackageFormat(_CaseInsensitiveStrEnum):
    """A package ecosystem, spelled as CodeArtifact spells it; `PackageFormat("PyPI")` works."""

    NPM = "npm"
    PYPI = "pypi"
    MAVEN = "maven"
    NUGET = "nuget"
    GENERIC = "generic"
    RUBY = "ruby"
    SWIFT = "swift"
    CARGO = "cargo"

    def to_proto(self) -> pb.PackageFormat.ValueType:
        """Return the matching `pkggov.v1.PackageFormat` value."""
        return pb.PackageFormat.Value(f"PACKAGE_FORMAT_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> PackageFormat | None:
        """Return the format of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = pb.PackageFormat.Name(pb.PackageFormat.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("PACKAGE_FORMAT_"))


class PackageVersionStatus(_CaseInsensitiveStrEnum):
    """A package version status, spelled as CodeArtifact spells it."""

    PUBLISHED = "Published"
    UNFINISHED = "Unfinished"
    UNLISTED = "Unlisted"
    ARCHIVED = "Archived"
    DISPOSED = "Disposed"
    DELETED = "Deleted"

    def to_proto(self) -> pb.PackageVersionStatus.ValueType:
        """Return the matching `pkggov.v1.PackageVersionStatus` value."""
        return pb.PackageVersionStatus.Value(f"PACKAGE_VERSION_STATUS_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> PackageVersionStatus | None:
        """Return the status of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = pb.PackageVersionStatus.Name(pb.PackageVersionStatus.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("PACKAGE_VERSION_STATUS_"))


def timestamp_to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    """Return a `google.protobuf.Timestamp` as an aware datetime in UTC."""
    return stamp.ToDatetime(tzinfo=UTC)


def format_time(moment: datetime | None) -> str | None:
    """Return a time as RFC 3339 in UTC, as proto3 JSON writes a Timestamp
    ("2027-01-05T10:00:00Z", fractions only when present); None stays None."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp.ToJsonString()


def error_code_name(value: int) -> str:
    """Return CodeArtifact's spelling of a per-version error code, such as "NOT_FOUND".

    A value this client does not know is returned as its number, so nothing is lost.
    """
    try:
        name = pb.PackageVersionErrorCode.Name(pb.PackageVersionErrorCode.ValueType(value))
    except ValueError:
        return str(value)
    return name.removeprefix("PACKAGE_VERSION_ERROR_CODE_")


def outcome_name(value: int) -> str:
    """Return the name of a per-version dry-run outcome, such as "WOULD_DELETE" or "DENIED".

    A value this client does not know is returned as its number, so nothing is lost.
    """
    try:
        name = pb.VersionOutcome.Name(pb.VersionOutcome.ValueType(value))
    except ValueError:
        return str(value)
    return name.removeprefix("VERSION_OUTCOME_")


@dataclass(frozen=True)
class SuccessfulVersion:
    """A version that CodeArtifact processed: its revision and its status after the call.

    A delete under a recovery window archives the version instead of deleting it: its status
    is then ARCHIVED, `purge_time` says when it will be purged unless restored before, and
    `restore_method` names the gRPC method that restores it. Otherwise `purge_time` is None
    and `restore_method` empty.
    """

    revision: str
    status: PackageVersionStatus | None
    purge_time: datetime | None = None
    restore_method: str = ""

    @property
    def archived(self) -> bool:
        """True when the version was archived (its purge is pending) rather than deleted."""
        return self.status is PackageVersionStatus.ARCHIVED

    @classmethod
    def from_proto(cls, info: pb.SuccessfulPackageVersionInfo) -> SuccessfulVersion:
        """Build a successful version from its proto."""
        return cls(
            revision=info.revision,
            status=PackageVersionStatus.from_proto(info.status),
            purge_time=(
                timestamp_to_datetime(info.purge_time) if info.HasField("purge_time") else None
            ),
            restore_method=info.restore_method,
        )


@dataclass(frozen=True)
class FailedVersion:
    """A version that CodeArtifact did not process: why ("NOT_FOUND", ...) and its message."""

    error_code: str
    message: str


@dataclass(frozen=True)
class VersionDecision:
    """What a dry run decided for one version.

    `outcome` is, for a delete, "WOULD_DELETE", "WOULD_ARCHIVE" (a recovery window applies:
    the version would be archived and purged at `purge_time`), "DENIED", "NOT_FOUND",
    "STATUS_MISMATCH" or "NEEDS_APPROVAL" (policy allows it only once approved: the real call
    records a deletion request instead of deleting, see `PkggovError.deletion_request_id`);
    for a restore, "WOULD_RESTORE", "DENIED", "NOT_FOUND",
    "NOT_PENDING_PURGE" or "REVISION_MISMATCH" (an outcome this client does not know is kept as
    its number). `policy_ids` are the @id annotations of the deciding policies (empty for a
    deny means no policy permits it); `status` is the version's current status, None when it
    does not exist; `is_latest` says whether it is the package's latest version; `purge_time`
    is set for WOULD_ARCHIVE only.
    """

    outcome: str
    policy_ids: tuple[str, ...]
    message: str
    status: PackageVersionStatus | None
    is_latest: bool
    purge_time: datetime | None = None

    @property
    def would_delete(self) -> bool:
        """True when the real call would delete the version at once."""
        return self.outcome == "WOULD_DELETE"

    @property
    def would_archive(self) -> bool:
        """True when the real call would archive the version under a recovery window."""
        return self.outcome == "WOULD_ARCHIVE"

    @property
    def needs_approval(self) -> bool:
        """True when policy allows the version only once a deletion request is approved."""
        return self.outcome == "NEEDS_APPROVAL"

    @property
    def would_restore(self) -> bool:
        """True when the real restore would restore the version."""
        return self.outcome == "WOULD_RESTORE"

    @classmethod
    def from_proto(cls, decision: pb.VersionDecision) -> VersionDecision:
        """Build a decision from its proto."""
        return cls(
            outcome=outcome_name(decision.outcome),
            policy_ids=tuple(decision.policy_ids),
            message=decision.message,
            status=PackageVersionStatus.from_proto(decision.status),
            is_latest=decision.is_latest,
            purge_time=(
                timestamp_to_datetime(decision.purge_time)
                if decision.HasField("purge_time")
                else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-ready camelCase keys (`purgeTime` in RFC 3339, or None)."""
        return {
            "outcome": self.outcome,
            "policyIds": list(self.policy_ids),
            "message": self.message,
            "status": None if self.status is None else self.status.value,
            "isLatest": self.is_latest,
            "purgeTime": format_time(self.purge_time),
        }


def ordered_keys(keys: Iterable[str], order: Iterable[str]) -> list[str]:
    """Return `keys` with those listed in `order` first (in that order), then the rest sorted."""
    present = set(keys)
    first = [key for key in dict.fromkeys(order) if key in present]
    return first + sorted(present.difference(first))


def _by_version(
    response: pb.DeletePackageVersionsResponse | pb.RestorePackageVersionsResponse,
    order: Iterable[str],
) -> tuple[
    Mapping[str, SuccessfulVersion], Mapping[str, FailedVersion], Mapping[str, VersionDecision]
]:
    """The three per-version maps of a delete's or a restore's response, read-only, with the
    versions named in `order` first."""
    order = list(order)
    successful = {
        version: SuccessfulVersion.from_proto(response.successful_versions[version])
        for version in ordered_keys(response.successful_versions, order)
    }
    failed = {
        version: FailedVersion(
            error_code=error_code_name(response.failed_versions[version].error_code),
            message=response.failed_versions[version].error_message,
        )
        for version in ordered_keys(response.failed_versions, order)
    }
    decisions = {
        version: VersionDecision.from_proto(response.decisions[version])
        for version in ordered_keys(response.decisions, order)
    }
    return MappingProxyType(successful), MappingProxyType(failed), MappingProxyType(decisions)


def _successful_dict(successful: Mapping[str, SuccessfulVersion]) -> dict[str, Any]:
    return {
        version: {
            "revision": info.revision,
            "status": None if info.status is None else info.status.value,
        }
        for version, info in successful.items()
    }


def _failed_dict(failed: Mapping[str, FailedVersion]) -> dict[str, Any]:
    return {
        version: {"errorCode": info.error_code, "errorMessage": info.message}
        for version, info in failed.items()
    }


@dataclass(frozen=True)
class DeleteResult:
    """The outcome of DeletePackageVersions, keyed by version; `raw` is the response proto.

    A version deleted under a recovery window is archived: it is in `successful` with status
    ARCHIVED and its `purge_time` (see `archived`). After a dry run (`validate_only`)
    `decisions` holds the plan for every requested version and the other two mappings are
    empty; after a real call `decisions` is empty.
    """

    successful: Mapping[str, SuccessfulVersion]
    failed: Mapping[str, FailedVersion]
    raw: pb.DeletePackageVersionsResponse = field(repr=False)
    decisions: Mapping[str, VersionDecision] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_proto(
        cls, response: pb.DeletePackageVersionsResponse, *, order: Iterable[str] = ()
    ) -> DeleteResult:
        """Build a result from a response; versions named in `order` come first when iterating."""
        successful, failed, decisions = _by_version(response, order)
        return cls(successful=successful, failed=failed, raw=response, decisions=decisions)

    @property
    def audit_event_id(self) -> str | None:
        """The id of the audit event that recorded the call, or None if the gateway sent none."""
        return self.raw.audit_event_id or None

    @property
    def all_deleted(self) -> bool:
        """True when no version failed."""
        return not self.failed

    @property
    def archived(self) -> Mapping[str, SuccessfulVersion]:
        """The versions archived under a recovery window (purge pending), in result order."""
        return MappingProxyType({v: info for v, info in self.successful.items() if info.archived})

    @property
    def all_would_delete(self) -> bool:
        """True when a dry run returned a plan in which every version would be deleted, or,
        under a recovery window, archived."""
        return bool(self.decisions) and all(
            d.would_delete or d.would_archive for d in self.decisions.values()
        )

    def to_codeartifact_dict(self) -> dict[str, Any]:
        """Return the result in the JSON shape of `aws codeartifact delete-package-versions`."""
        return {
            "successfulVersions": _successful_dict(self.successful),
            "failedVersions": _failed_dict(self.failed),
        }

    def to_plan_dict(self) -> dict[str, Any]:
        """Return a dry run's plan as ``{"decisions": {version: {"outcome": ...}}}``."""
        return {
            "decisions": {
                version: decision.to_dict() for version, decision in self.decisions.items()
            }
        }


@dataclass(frozen=True)
class RestoreResult:
    """The outcome of RestorePackageVersions, keyed by version; `raw` is the response proto.

    `successful` holds the restored versions with their new revision and the status they are
    back in; `failed` those not restored (NOT_FOUND, MISMATCHED_STATUS: not archived,
    NOT_ALLOWED: archived but not by the gateway, MISMATCHED_REVISION: changed since it was
    archived, ...). After a dry run (`validate_only`) `decisions` holds the plan for every
    requested version and the other two mappings are empty; after a real call it is empty.
    """

    successful: Mapping[str, SuccessfulVersion]
    failed: Mapping[str, FailedVersion]
    raw: pb.RestorePackageVersionsResponse = field(repr=False)
    decisions: Mapping[str, VersionDecision] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_proto(
        cls, response: pb.RestorePackageVersionsResponse, *, order: Iterable[str] = ()
    ) -> RestoreResult:
        """Build a result from a response; versions named in `order` come first when iterating."""
        successful, failed, decisions = _by_version(response, order)
        return cls(successful=successful, failed=failed, raw=response, decisions=decisions)

    @property
    def audit_event_id(self) -> str | None:
        """The id of the audit event that recorded the call, or None if the gateway sent none."""
        return self.raw.audit_event_id or None

    @property
    def all_restored(self) -> bool:
        """True when no version failed."""
        return not self.failed

    @property
    def all_would_restore(self) -> bool:
        """True when a dry run returned a plan in which every version would be restored."""
        return bool(self.decisions) and all(d.would_restore for d in self.decisions.values())

    def to_codeartifact_dict(self) -> dict[str, Any]:
        """Return the result in the JSON shape of `aws codeartifact
        update-package-versions-status` (successfulVersions, failedVersions)."""
        return {
            "successfulVersions": _successful_dict(self.successful),
            "failedVersions": _failed_dict(self.failed),
        }

    def to_plan_dict(self) -> dict[str, Any]:
        """Return a dry run's plan as ``{"decisions": {version: {"outcome": ...}}}``."""
        return {
            "decisions": {
                version: decision.to_dict() for version, decision in self.decisions.items()
            }
        }


@dataclass(frozen=True)
class PendingPurge:
    """One version archived under a recovery window, awaiting its purge.

    `namespace` and `domain_owner` are None when the archiving request named none (the
    gateway's own account); `revision` is the revision it was archived at (the purge deletes
    only that revision); `previous_status` the status a restore brings back; `requester` the
    principal whose request archived it, in the audit event `archive_event_id`; `attempts`
    counts failed purge attempts (retried), `last_error` says why the last one failed (None
    when none did).
    """

    domain: str
    domain_owner: str | None
    repository: str
    format: PackageFormat | None
    namespace: str | None
    package: str
    version: str
    revision: str
    previous_status: PackageVersionStatus | None
    requester: str
    archive_event_id: str
    archive_time: datetime | None
    purge_time: datetime | None
    attempts: int
    last_error: str | None

    @classmethod
    def from_proto(cls, purge: pb.PendingPurge) -> PendingPurge:
        """Build a pending purge from its proto."""
        return cls(
            domain=purge.domain,
            domain_owner=purge.domain_owner or None,
            repository=purge.repository,
            format=PackageFormat.from_proto(purge.format),
            namespace=purge.namespace or None,
            package=purge.package,
            version=purge.version,
            revision=purge.revision,
            previous_status=PackageVersionStatus.from_proto(purge.previous_status),
            requester=purge.requester,
            archive_event_id=purge.archive_event_id,
            archive_time=(
                timestamp_to_datetime(purge.archive_time)
                if purge.HasField("archive_time")
                else None
            ),
            purge_time=(
                timestamp_to_datetime(purge.purge_time) if purge.HasField("purge_time") else None
            ),
            attempts=purge.attempts,
            last_error=purge.last_error or None,
        )


@dataclass(frozen=True)
class PendingPurgesPage:
    """One page of ListPendingPurges, soonest due first; `raw` is the response proto.

    `next_page_token` is None on the last page; pass it as `page_token`, with the same
    filters, for the next one.
    """

    pending_purges: tuple[PendingPurge, ...]
    next_page_token: str | None
    raw: pb.ListPendingPurgesResponse = field(repr=False)

    @classmethod
    def from_proto(cls, response: pb.ListPendingPurgesResponse) -> PendingPurgesPage:
        """Build a page from a response."""
        return cls(
            pending_purges=tuple(PendingPurge.from_proto(p) for p in response.pending_purges),
            next_page_token=response.next_page_token or None,
            raw=response,
        )
