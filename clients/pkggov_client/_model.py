"""Plain Python types for the pkggov API: formats, statuses, decisions and a delete's result."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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
    """A version that CodeArtifact processed: its revision and its status after the call."""

    revision: str
    status: PackageVersionStatus | None


@dataclass(frozen=True)
class FailedVersion:
    """A version that CodeArtifact did not process: why ("NOT_FOUND", ...) and its message."""

    error_code: str
    message: str


@dataclass(frozen=True)
class VersionDecision:
    """What a dry run decided for one version.

    `outcome` is "WOULD_DELETE", "DENIED", "NOT_FOUND" or "STATUS_MISMATCH" (an outcome this
    client does not know is kept as its number); `policy_ids` are the @id annotations of the
    deciding policies (empty for a deny means no policy permits it); `status` is the version's
    current status, None when it does not exist; `is_latest` says whether it is the package's
    latest version.
    """

    outcome: str
    policy_ids: tuple[str, ...]
    message: str
    status: PackageVersionStatus | None
    is_latest: bool

    @property
    def would_delete(self) -> bool:
        """True when the real call would delete the version."""
        return self.outcome == "WOULD_DELETE"

    @classmethod
    def from_proto(cls, decision: pb.VersionDecision) -> VersionDecision:
        """Build a decision from its proto."""
        return cls(
            outcome=outcome_name(decision.outcome),
            policy_ids=tuple(decision.policy_ids),
            message=decision.message,
            status=PackageVersionStatus.from_proto(decision.status),
            is_latest=decision.is_latest,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-ready camelCase keys."""
        return {
            "outcome": self.outcome,
            "policyIds": list(self.policy_ids),
            "message": self.message,
            "status": None if self.status is None else self.status.value,
            "isLatest": self.is_latest,
        }


def ordered_keys(keys: Iterable[str], order: Iterable[str]) -> list[str]:
    """Return `keys` with those listed in `order` first (in that order), then the rest sorted."""
    present = set(keys)
    first = [key for key in dict.fromkeys(order) if key in present]
    return first + sorted(present.difference(first))


@dataclass(frozen=True)
class DeleteResult:
    """The outcome of DeletePackageVersions, keyed by version; `raw` is the response proto.

    After a dry run (`validate_only`) `decisions` holds the plan for every requested version
    and the other two mappings are empty; after a real call `decisions` is empty.
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
        order = list(order)
        successful = {
            version: SuccessfulVersion(
                revision=response.successful_versions[version].revision,
                status=PackageVersionStatus.from_proto(
                    response.successful_versions[version].status
                ),
            )
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
        return cls(
            successful=MappingProxyType(successful),
            failed=MappingProxyType(failed),
            raw=response,
            decisions=MappingProxyType(decisions),
        )

    @property
    def audit_event_id(self) -> str | None:
        """The id of the audit event that recorded the call, or None if the gateway sent none."""
        return self.raw.audit_event_id or None

    @property
    def all_deleted(self) -> bool:
        """True when no version failed."""
        return not self.failed

    @property
    def all_would_delete(self) -> bool:
        """True when a dry run returned a plan in which every version would be deleted."""
        return bool(self.decisions) and all(d.would_delete for d in self.decisions.values())

    def to_codeartifact_dict(self) -> dict[str, Any]:
        """Return the result in the JSON shape of `aws codeartifact delete-package-versions`."""
        return {
            "successfulVersions": {
                version: {
                    "revision": info.revision,
                    "status": None if info.status is None else info.status.value,
                }
                for version, info in self.successful.items()
            },
            "failedVersions": {
                version: {"errorCode": info.error_code, "errorMessage": info.message}
                for version, info in self.failed.items()
            },
        }

    def to_plan_dict(self) -> dict[str, Any]:
        """Return a dry run's plan as ``{"decisions": {version: {"outcome": ...}}}``."""
        return {
            "decisions": {
                version: decision.to_dict() for version, decision in self.decisions.items()
            }
        }
