"""Value objects of the package-deletion domain, spelled as CodeArtifact spells them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class PackageFormat(StrEnum):
    """A CodeArtifact package format, valued with CodeArtifact's own spelling."""

    NPM = "npm"
    PYPI = "pypi"
    MAVEN = "maven"
    NUGET = "nuget"
    GENERIC = "generic"
    RUBY = "ruby"
    SWIFT = "swift"
    CARGO = "cargo"


class VersionStatus(StrEnum):
    """A package version status as CodeArtifact reports it."""

    PUBLISHED = "Published"
    UNFINISHED = "Unfinished"
    UNLISTED = "Unlisted"
    ARCHIVED = "Archived"
    DISPOSED = "Disposed"
    DELETED = "Deleted"


class VersionErrorCode(StrEnum):
    """Why CodeArtifact (or the gateway) did not process one version."""

    ALREADY_EXISTS = "ALREADY_EXISTS"
    MISMATCHED_REVISION = "MISMATCHED_REVISION"
    MISMATCHED_STATUS = "MISMATCHED_STATUS"
    NOT_ALLOWED = "NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    SKIPPED = "SKIPPED"


class NamespaceRule(StrEnum):
    """Whether a format's packages have a namespace."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    FORBIDDEN = "forbidden"


NAMESPACE_RULES: Mapping[PackageFormat, NamespaceRule] = {
    PackageFormat.NPM: NamespaceRule.OPTIONAL,
    PackageFormat.PYPI: NamespaceRule.FORBIDDEN,
    PackageFormat.MAVEN: NamespaceRule.REQUIRED,
    PackageFormat.NUGET: NamespaceRule.FORBIDDEN,
    PackageFormat.GENERIC: NamespaceRule.REQUIRED,
    PackageFormat.RUBY: NamespaceRule.FORBIDDEN,
    PackageFormat.SWIFT: NamespaceRule.REQUIRED,
    PackageFormat.CARGO: NamespaceRule.FORBIDDEN,
}


@dataclass(frozen=True, slots=True)
class PackageRef:
    """One package in one repository: everything CodeArtifact needs to name it."""

    domain: str
    repository: str
    format: PackageFormat
    package: str
    namespace: str | None = None
    domain_owner: str | None = None


def canonical_package(package: PackageRef) -> PackageRef:
    """`package` named as CodeArtifact stores it, so policy sees one name per package.

    CodeArtifact normalizes Python package names (PEP 503: lower case, runs of ``-_.`` become
    one ``-``) and lower-cases Swift namespaces and names; npm names are lower case by the
    registry's rules. Other formats are case-sensitive and left as they are.
    """
    fmt = package.format
    if fmt is PackageFormat.PYPI:
        return replace(package, package=re.sub(r"[-_.]+", "-", package.package).lower())
    if fmt is PackageFormat.SWIFT:
        namespace = package.namespace.lower() if package.namespace else package.namespace
        return replace(package, namespace=namespace, package=package.package.lower())
    return package


@dataclass(frozen=True, slots=True)
class PackageState:
    """A package's versions as CodeArtifact reports them now."""

    statuses: Mapping[str, VersionStatus]
    """Every existing version (any status) -> its status."""
    latest: str | None = None
    """The package's default display version, as CodeArtifact chooses it."""
    published_at: Mapping[str, datetime] = field(default_factory=dict)
    """Publication times, for the versions they were asked for."""
    revisions: Mapping[str, str] = field(default_factory=dict)
    """Every existing version's revision, when CodeArtifact reported it."""


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """A validated request: the package, its distinct versions in request order, a status guard,
    and how to apply policy (justification, dry run, all-or-nothing or partial)."""

    package: PackageRef
    versions: tuple[str, ...]
    expected_status: VersionStatus | None = None
    justification: str = ""
    validate_only: bool = False
    allow_partial: bool = False
    purge_now: bool = False


class PlanOutcome(StrEnum):
    """What a call would do, or decided, for one version."""

    WOULD_DELETE = "WOULD_DELETE"
    DENIED = "DENIED"
    NOT_FOUND = "NOT_FOUND"
    STATUS_MISMATCH = "STATUS_MISMATCH"
    WOULD_ARCHIVE = "WOULD_ARCHIVE"
    """A recovery window applies: the version is archived and its purge scheduled."""
    WOULD_RESTORE = "WOULD_RESTORE"
    NOT_PENDING_PURGE = "NOT_PENDING_PURGE"
    """A restore of a version that has no pending purge."""
    REVISION_MISMATCH = "REVISION_MISMATCH"
    """A restore of a version changed since it was archived."""
    NEEDS_APPROVAL = "NEEDS_APPROVAL"
    """Allowed only once approved: the call records a deletion request instead."""
    PLAN_CHANGED = "PLAN_CHANGED"
    """A cleanup job's deletion of a version that changed since it was planned, or that the
    plan's rule would now keep: not sent."""


FORWARDED = frozenset(
    {PlanOutcome.WOULD_DELETE, PlanOutcome.WOULD_ARCHIVE, PlanOutcome.WOULD_RESTORE}
)
"""The outcomes whose versions are sent upstream."""


@dataclass(frozen=True, slots=True)
class PlannedVersion:
    """The decision for one version, with the deciding policies' @ids and its current state."""

    outcome: PlanOutcome
    message: str
    policy_ids: tuple[str, ...] = ()
    status: VersionStatus | None = None
    is_latest: bool = False
    purge_at: datetime | None = None
    """WOULD_ARCHIVE: when the archived version is purged."""


@dataclass(frozen=True, slots=True)
class SuccessfulVersion:
    """A version CodeArtifact processed, with the revision and status it reported.

    `status` is None only if CodeArtifact reported a status this gateway does not know.
    """

    revision: str
    status: VersionStatus | None
    purge_at: datetime | None = None
    """An archived version's scheduled purge (None: not archived under a window)."""


@dataclass(frozen=True, slots=True)
class FailedVersion:
    """A version that was not processed, with the code and message explaining why.

    `code` is None only if CodeArtifact reported a code this gateway does not know; the
    message then starts with that code.
    """

    code: VersionErrorCode | None
    message: str


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    """The merged per-version result of one DeletePackageVersions request."""

    successful: Mapping[str, SuccessfulVersion] = field(default_factory=dict)
    failed: Mapping[str, FailedVersion] = field(default_factory=dict)
    aws_request_ids: tuple[str, ...] = ()
    plan: Mapping[str, PlannedVersion] = field(default_factory=dict)
    """Every requested version's decision (filled by the governed use case)."""
    after_lost_response: bool = False
    """An earlier attempt of this upstream call may have been applied without its answer
    arriving (a dropped connection or a timeout), so NOT_FOUND may mean "deleted by it"."""
    inferred: Mapping[str, str] = field(default_factory=dict)
    """Versions reported deleted although the answer said NOT_FOUND: they existed before the
    call and an attempt whose answer was lost deleted them. Version -> explanation."""
