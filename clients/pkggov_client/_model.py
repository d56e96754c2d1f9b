"""Plain Python types for the pkggov API: formats, statuses and the result of a delete."""

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


def ordered_keys(keys: Iterable[str], order: Iterable[str]) -> list[str]:
    """Return `keys` with those listed in `order` first (in that order), then the rest sorted."""
    present = set(keys)
    first = [key for key in dict.fromkeys(order) if key in present]
    return first + sorted(present.difference(first))


@dataclass(frozen=True)
class DeleteResult:
    """The outcome of DeletePackageVersions, keyed by version; `raw` is the response proto."""

    successful: Mapping[str, SuccessfulVersion]
    failed: Mapping[str, FailedVersion]
    raw: pb.DeletePackageVersionsResponse = field(repr=False)

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
        return cls(
            successful=MappingProxyType(successful),
            failed=MappingProxyType(failed),
            raw=response,
        )

    @property
    def all_deleted(self) -> bool:
        """True when no version failed."""
        return not self.failed

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
