"""The in-memory CodeArtifact domain model: domains, repositories, packages and versions.

It also holds the rules AWS applies to them (namespaces per format, status transitions,
revisions, per-version outcomes of the batch operations). Pure Python: no HTTP, no botocore.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ._errors import ConflictError, ResourceNotFoundError, ValidationError

__all__ = [
    "NAMESPACE_FORBIDDEN",
    "NAMESPACE_REQUIRED",
    "STORED_STATUSES",
    "UPDATE_TARGET_STATUSES",
    "Asset",
    "BatchResult",
    "Domain",
    "Package",
    "PackageRef",
    "PackageVersion",
    "Repository",
    "Store",
    "check_namespace",
    "new_revision",
    "stable_revision",
]

# Statuses a version can have while it exists ("Deleted" only appears in responses).
STORED_STATUSES = ("Published", "Unfinished", "Unlisted", "Archived", "Disposed")
UPDATE_TARGET_STATUSES = ("Archived", "Published", "Unlisted")
NAMESPACE_REQUIRED = frozenset({"maven", "swift", "generic"})
NAMESPACE_FORBIDDEN = frozenset({"pypi", "nuget", "ruby", "cargo"})


def new_revision() -> str:
    """Return a fresh random revision, base64 like the ones AWS hands out (44 characters)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def stable_revision(*parts: str) -> str:
    """Return a deterministic revision for seeded versions (base64 of a SHA-256 of the parts)."""
    digest = hashlib.sha256("/".join(parts).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def check_namespace(package_format: str, namespace: str | None) -> None:
    """Apply the per-format namespace rule; raise ValidationError when it is broken."""
    if package_format in NAMESPACE_REQUIRED and namespace is None:
        raise ValidationError(
            f"A namespace is required for {package_format} packages.",
            reason="FIELD_VALIDATION_FAILED",
        )
    if package_format in NAMESPACE_FORBIDDEN and namespace is not None:
        raise ValidationError(
            f"{package_format} packages do not have a namespace; "
            f"namespace '{namespace}' is not allowed.",
            reason="FIELD_VALIDATION_FAILED",
        )


@dataclass(frozen=True)
class PackageRef:
    """Identifies a package: its domain (and owner), repository, format, namespace and name."""

    domain: str
    repository: str
    format: str
    namespace: str | None
    package: str
    domain_owner: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """The package's key inside its repository."""
        return (self.format, self.namespace or "", self.package)

    def describe(self) -> str:
        """Human-readable coordinates for messages, e.g. ``npm package @acme/widgets``."""
        return f"{self.format} package {display_name(self.format, self.namespace, self.package)}"


def display_name(package_format: str, namespace: str | None, name: str) -> str:
    """Return the name AWS displays: ``@scope/name`` for scoped npm, else the package name."""
    if package_format == "npm" and namespace:
        return f"@{namespace}/{name}"
    return name


@dataclass
class Asset:
    """One file of a package version."""

    name: str
    size: int
    hashes: dict[str, str]


@dataclass
class PackageVersion:
    """One version record; it stays (as Disposed) until deleted."""

    version: str
    status: str
    revision: str
    published_time: dt.datetime
    assets: dict[str, Asset] = field(default_factory=dict)


@dataclass
class Package:
    """A package and its versions; it survives the deletion of all its versions."""

    format: str
    namespace: str | None
    name: str
    versions: dict[str, PackageVersion] = field(default_factory=dict)
    publish: str = "ALLOW"
    upstream: str = "ALLOW"

    @property
    def display_name(self) -> str:
        """The name AWS displays for this package."""
        return display_name(self.format, self.namespace, self.name)


@dataclass
class Repository:
    """A repository of a domain."""

    name: str
    created_time: dt.datetime
    description: str | None = None
    upstreams: list[str] = field(default_factory=list)
    packages: dict[tuple[str, str, str], Package] = field(default_factory=dict)


@dataclass
class Domain:
    """A domain owned by the emulator's account."""

    name: str
    created_time: dt.datetime
    encryption_key: str
    repositories: dict[str, Repository] = field(default_factory=dict)

    def asset_size_bytes(self) -> int:
        """Total size of the assets stored in the domain."""
        return sum(
            asset.size
            for repository in self.repositories.values()
            for package in repository.packages.values()
            for version in package.versions.values()
            for asset in version.assets.values()
        )


@dataclass
class BatchResult:
    """Per-version outcome of a batch operation: successes (revision, status) and failures."""

    successful: dict[str, tuple[str, str]] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """The whole emulated account: thread-safe through ``lock`` (reentrant).

    Every method takes the lock itself; callers that read records and then format them hold
    ``lock`` around both steps.
    """

    def __init__(
        self,
        *,
        account_id: str,
        region: str,
        clock: Callable[[], dt.datetime] = _utc_now,
        revisions: Callable[[], str] = new_revision,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.clock = clock
        self.lock = threading.RLock()
        self.domains: dict[str, Domain] = {}
        self._revisions = revisions

    # ---- identifiers -------------------------------------------------------------------------

    def domain_arn(self, domain: str) -> str:
        """ARN of a domain."""
        return f"arn:aws:codeartifact:{self.region}:{self.account_id}:domain/{domain}"

    def repository_arn(self, domain: str, repository: str) -> str:
        """ARN of a repository."""
        return (
            f"arn:aws:codeartifact:{self.region}:{self.account_id}:repository/{domain}/{repository}"
        )

    def package_arn(self, ref: PackageRef) -> str:
        """ARN of a package (``//`` where there is no namespace, as IAM expects)."""
        return (
            f"arn:aws:codeartifact:{self.region}:{self.account_id}:package/"
            f"{ref.domain}/{ref.repository}/{ref.format}/{ref.namespace or ''}/{ref.package}"
        )

    def default_encryption_key(self) -> str:
        """The KMS key ARN reported for domains created without one."""
        return f"arn:aws:kms:{self.region}:{self.account_id}:alias/aws/codeartifact"

    # ---- lookups -----------------------------------------------------------------------------

    def domain(self, name: str, owner: str | None = None) -> Domain:
        """Return a domain; raise ResourceNotFoundError if absent or owned by another account."""
        with self.lock:
            found = self.domains.get(name)
            if found is None or (owner is not None and owner != self.account_id):
                shown_owner = owner or self.account_id
                raise ResourceNotFoundError(
                    f"Domain '{name}' owned by account '{shown_owner}' was not found.",
                    resource_type="domain",
                    resource_id=name,
                )
            return found

    def repository(self, domain: str, repository: str, owner: str | None = None) -> Repository:
        """Return a repository; raise ResourceNotFoundError for it or its domain."""
        with self.lock:
            found = self.domain(domain, owner).repositories.get(repository)
            if found is None:
                raise ResourceNotFoundError(
                    f"Repository '{repository}' was not found in domain '{domain}'.",
                    resource_type="repository",
                    resource_id=repository,
                )
            return found

    def package(self, ref: PackageRef) -> Package:
        """Return a package; raise ResourceNotFoundError for it, its repository or domain."""
        with self.lock:
            repository = self.repository(ref.domain, ref.repository, ref.domain_owner)
            found = repository.packages.get(ref.key)
            if found is None:
                raise ResourceNotFoundError(
                    f"The {ref.describe()} was not found in repository '{ref.repository}'.",
                    resource_type="package",
                    resource_id=ref.package,
                )
            return found

    def version(self, ref: PackageRef, version: str) -> PackageVersion:
        """Return a package version; raise ResourceNotFoundError if anything is missing."""
        with self.lock:
            found = self.package(ref).versions.get(version)
            if found is None:
                raise ResourceNotFoundError(
                    f"Version {version} of the {ref.describe()} was not found in repository "
                    f"'{ref.repository}'.",
                    resource_type="package-version",
                    resource_id=version,
                )
            return found

    def version_status(self, ref: PackageRef, version: str) -> str | None:
        """Return a version's status, or None if it (or anything above it) does not exist."""
        with self.lock:
            try:
                return self.version(ref, version).status
            except ResourceNotFoundError:
                return None

    # ---- creation ----------------------------------------------------------------------------

    def create_domain(
        self,
        name: str,
        *,
        encryption_key: str | None = None,
        created_time: dt.datetime | None = None,
    ) -> Domain:
        """Create a domain; raise ConflictError if it exists."""
        with self.lock:
            if name in self.domains:
                raise ConflictError(
                    f"Domain '{name}' already exists.", resource_type="domain", resource_id=name
                )
            domain = Domain(
                name=name,
                created_time=created_time or self.clock(),
                encryption_key=encryption_key or self.default_encryption_key(),
            )
            self.domains[name] = domain
            return domain

    def create_repository(
        self,
        domain: str,
        name: str,
        *,
        owner: str | None = None,
        description: str | None = None,
        upstreams: Iterable[str] = (),
        created_time: dt.datetime | None = None,
    ) -> Repository:
        """Create a repository; raise ConflictError if it exists, ResourceNotFoundError for a
        missing domain or upstream repository."""
        with self.lock:
            parent = self.domain(domain, owner)
            if name in parent.repositories:
                raise ConflictError(
                    f"Repository '{name}' already exists in domain '{domain}'.",
                    resource_type="repository",
                    resource_id=name,
                )
            upstream_names = list(upstreams)
            for upstream in upstream_names:
                self.repository(domain, upstream, owner)
            repository = Repository(
                name=name,
                created_time=created_time or self.clock(),
                description=description,
                upstreams=upstream_names,
            )
            parent.repositories[name] = repository
            return repository

    def ensure_package(self, ref: PackageRef) -> Package:
        """Return the package, creating it (without versions) if needed; apply the namespace
        rule; raise ResourceNotFoundError for a missing repository or domain."""
        check_namespace(ref.format, ref.namespace)
        with self.lock:
            repository = self.repository(ref.domain, ref.repository, ref.domain_owner)
            package = repository.packages.get(ref.key)
            if package is None:
                package = Package(format=ref.format, namespace=ref.namespace, name=ref.package)
                repository.packages[ref.key] = package
            return package

    def put_version(
        self,
        ref: PackageRef,
        version: str,
        *,
        status: str = "Published",
        published_time: dt.datetime | None = None,
        revision: str | None = None,
        assets: Iterable[Asset] = (),
    ) -> PackageVersion:
        """Create or replace a version of any format (seeding and test set-up; no AWS call
        does this for non-generic formats). Creates the package if needed."""
        check_namespace(ref.format, ref.namespace)
        if status not in STORED_STATUSES:
            raise ValueError(f"status must be one of {', '.join(STORED_STATUSES)}, not {status!r}")
        with self.lock:
            package = self.ensure_package(ref)
            record = PackageVersion(
                version=version,
                status=status,
                revision=revision or self._revisions(),
                published_time=published_time or self.clock(),
                assets={asset.name: asset for asset in assets},
            )
            package.versions[version] = record
            return record

    def publish(
        self,
        ref: PackageRef,
        version: str,
        *,
        asset_name: str,
        content: bytes,
        sha256: str,
        unfinished: bool,
    ) -> tuple[PackageVersion, Asset]:
        """PublishPackageVersion: add one asset to a new or Unfinished generic version."""
        if ref.format != "generic":
            raise ValidationError(
                "Only generic packages can be published using PublishPackageVersion.",
                reason="FIELD_VALIDATION_FAILED",
            )
        check_namespace(ref.format, ref.namespace)
        actual = hashlib.sha256(content).hexdigest()
        if actual != sha256.lower():
            raise ValidationError(
                f"The SHA256 hash of the asset content ({actual}) does not match "
                f"assetSHA256 ({sha256}).",
                reason="OTHER",
            )
        asset = Asset(
            name=asset_name,
            size=len(content),
            hashes={
                "MD5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
                "SHA-1": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
                "SHA-256": actual,
                "SHA-512": hashlib.sha512(content).hexdigest(),
            },
        )
        with self.lock:
            package = self.ensure_package(ref)
            record = package.versions.get(version)
            if record is not None and record.status != "Unfinished":
                raise ConflictError(
                    f"Version {version} of the {ref.describe()} already exists with status "
                    f"{record.status}.",
                    resource_type="package-version",
                    resource_id=version,
                )
            if record is not None and asset_name in record.assets:
                raise ConflictError(
                    f"Asset '{asset_name}' already exists in version {version} of the "
                    f"{ref.describe()}.",
                    resource_type="asset",
                    resource_id=asset_name,
                )
            if record is None:
                record = PackageVersion(
                    version=version,
                    status="Unfinished",
                    revision=self._revisions(),
                    published_time=self.clock(),
                )
                package.versions[version] = record
            record.assets[asset_name] = asset
            record.status = "Unfinished" if unfinished else "Published"
            record.revision = self._revisions()
            return record, asset

    # ---- batch operations ----------------------------------------------------------------------

    def _guarded(
        self,
        ref: PackageRef,
        versions: Iterable[str],
        result: BatchResult,
        expected_status: str | None,
        version_revisions: Mapping[str, str] | None,
    ) -> Iterator[tuple[str, PackageVersion, Package]]:
        """Yield each requested version that exists and passes the status and revision
        guards; the others are recorded in `result.failed`. Call with the lock held."""
        package = self.package(ref)
        for version in versions:
            record = package.versions.get(version)
            if record is None:
                result.failed[version] = _not_found(ref, version)
                continue
            failure = _guard(version, record, expected_status, version_revisions)
            if failure is not None:
                result.failed[version] = failure
                continue
            yield version, record, package

    def delete_versions(
        self, ref: PackageRef, versions: Iterable[str], *, expected_status: str | None
    ) -> BatchResult:
        """DeletePackageVersions: remove each version in any status, Archived and Disposed
        included (NOT_FOUND / MISMATCHED_STATUS otherwise); the version string is then free to
        be published again, with a new revision."""
        result = BatchResult()
        with self.lock:
            for version, record, package in self._guarded(
                ref, versions, result, expected_status, None
            ):
                del package.versions[version]
                result.successful[version] = (record.revision, "Deleted")
        return result

    def update_versions_status(
        self,
        ref: PackageRef,
        versions: Iterable[str],
        *,
        target_status: str,
        expected_status: str | None,
        version_revisions: Mapping[str, str] | None,
    ) -> BatchResult:
        """UpdatePackageVersionsStatus: move versions to Archived, Published or Unlisted.

        Each version must exist (NOT_FOUND) and pass the guards (MISMATCHED_STATUS, then
        MISMATCHED_REVISION); a Disposed version cannot move (NOT_ALLOWED). A change issues a
        new revision; a version already in `target_status` succeeds with its revision kept
        (AWS does not document either; pkggov pins on the revision a change reports). Another
        target status is a ValidationException for the whole call.
        """
        if target_status not in UPDATE_TARGET_STATUSES:
            raise ValidationError(
                f"targetStatus must be one of {', '.join(UPDATE_TARGET_STATUSES)}; "
                f"use DisposePackageVersions or DeletePackageVersions for {target_status}.",
                reason="FIELD_VALIDATION_FAILED",
            )
        result = BatchResult()
        with self.lock:
            for version, record, _ in self._guarded(
                ref, versions, result, expected_status, version_revisions
            ):
                if record.status == "Disposed":
                    result.failed[version] = (
                        "NOT_ALLOWED",
                        f"Version {version} is Disposed and cannot change status.",
                    )
                    continue
                if record.status != target_status:
                    record.status = target_status
                    record.revision = self._revisions()
                result.successful[version] = (record.revision, record.status)
        return result

    def dispose_versions(
        self,
        ref: PackageRef,
        versions: Iterable[str],
        *,
        expected_status: str | None,
        version_revisions: Mapping[str, str] | None,
    ) -> BatchResult:
        """DisposePackageVersions: delete the assets and set the status to Disposed, with a new
        revision (guards as for a status update); a Disposed version succeeds again with its
        revision kept. The record stays, so the version string cannot be published again
        until it is deleted."""
        result = BatchResult()
        with self.lock:
            for version, record, _ in self._guarded(
                ref, versions, result, expected_status, version_revisions
            ):
                if record.status != "Disposed":
                    record.status = "Disposed"
                    record.assets.clear()
                    record.revision = self._revisions()
                result.successful[version] = (record.revision, record.status)
        return result


def _not_found(ref: PackageRef, version: str) -> tuple[str, str]:
    return (
        "NOT_FOUND",
        f"Version {version} of the {ref.describe()} was not found in repository "
        f"'{ref.repository}'.",
    )


def _guard(
    version: str,
    record: PackageVersion,
    expected_status: str | None,
    version_revisions: Mapping[str, str] | None,
) -> tuple[str, str] | None:
    """Return the (errorCode, errorMessage) stopping this version, or None to proceed."""
    if expected_status is not None and record.status != expected_status:
        return (
            "MISMATCHED_STATUS",
            f"Version {version} has status {record.status}, not the expected {expected_status}.",
        )
    if version_revisions is not None and version in version_revisions:
        expected_revision = version_revisions[version]
        if expected_revision != record.revision:
            return (
                "MISMATCHED_REVISION",
                f"Version {version} has revision {record.revision}, not the expected "
                f"{expected_revision}.",
            )
    return None
