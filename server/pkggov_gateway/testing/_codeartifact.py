"""A CodeArtifactPort over packages held in memory, recording every call, failing on demand.

The three writes behave as CodeArtifact's (and the emulator's), checking each version in this
order: a version that does not exist is NOT_FOUND, one not in `expected_status` is
MISMATCHED_STATUS, one whose revision differs from its entry in `revisions` is
MISMATCHED_REVISION; more than 100 versions in one call is a ValidationException.

- DeletePackageVersions removes the others and reports them Deleted with their revision.
- UpdatePackageVersionsStatus moves them to the target status (Archived, Published or
  Unlisted; another target is a ValidationException). A change issues a new revision; a
  version already in the target status keeps its revision; a Disposed version is NOT_ALLOWED.
- DisposePackageVersions makes them Disposed with a new revision (an already Disposed version
  succeeds again with its revision).

Every version keeps a revision (``rev-N``, unique within the fake). The default display
version is the one designated (`add_package`'s `latest`) unless it is Archived or Disposed,
else the last other version that is not. Packages are named as CodeArtifact stores them
(`canonical_package`).

Scripted trouble: `fail_next` raises an UpstreamError on a chosen call of an operation
(optionally after applying it, as a timed-out write that went through), and
`lose_next_answer` applies a write whose answer is lost and returns what the adapter's retry
returns (the same call applied again, marked ``after_lost_response``: NOT_FOUND for what a
lost delete deleted, MISMATCHED_REVISION for what a lost pinned status change moved).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    UpstreamError,
    UpstreamNotFoundError,
    UpstreamValidationError,
)
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    FailedVersion,
    PackageFormat,
    PackageRef,
    PackageState,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.validation import CODEARTIFACT_MAX_VERSIONS_PER_CALL

__all__ = [
    "DELETE",
    "DISPOSE",
    "READ",
    "UPDATE_STATUS",
    "WRITES",
    "FakeCodeArtifact",
    "Operation",
    "UpstreamCall",
]

Operation = Literal[
    "package_state",
    "delete_package_versions",
    "update_package_versions_status",
    "dispose_package_versions",
]
READ: Operation = "package_state"
DELETE: Operation = "delete_package_versions"
UPDATE_STATUS: Operation = "update_package_versions_status"
DISPOSE: Operation = "dispose_package_versions"
WRITES: frozenset[Operation] = frozenset({DELETE, UPDATE_STATUS, DISPOSE})
"""The operations that change versions (they can lose their answer)."""

_UPDATE_TARGETS = frozenset(
    {VersionStatus.ARCHIVED, VersionStatus.PUBLISHED, VersionStatus.UNLISTED}
)
_HIDDEN = frozenset({VersionStatus.ARCHIVED, VersionStatus.DISPOSED})
"""Statuses never chosen as the default display version."""


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One call the fake received: for a read, `versions` are those asked a published time;
    `target_status` is a status update's, `revisions` a status update's or disposal's guard."""

    operation: Operation
    package: PackageRef
    versions: tuple[str, ...] = ()
    expected_status: VersionStatus | None = None
    target_status: VersionStatus | None = None
    revisions: Mapping[str, str] | None = None


@dataclass(slots=True)
class _Version:
    status: VersionStatus
    revision: str
    published_at: datetime | None = None


@dataclass(slots=True)
class _Package:
    versions: dict[str, _Version]
    latest: str | None


@dataclass(slots=True)
class _Fault:
    operation: Operation
    error: UpstreamError | None
    """None: the answer is lost and the call retried (writes only)."""
    after: int
    when: Callable[[UpstreamCall], bool] | None
    applied: bool

    def matches(self, call: UpstreamCall) -> bool:
        return call.operation == self.operation and (self.when is None or self.when(call))


class FakeCodeArtifact:
    """The CodeArtifact port in memory (see the module docstring)."""

    def __init__(self, *, read_delay: float = 0.0, delete_delay: float = 0.0) -> None:
        """`read_delay`: seconds each read's answer travels back (after the state is read);
        `delete_delay`: seconds each write (delete, status update, disposal) is in flight
        before it applies."""
        self.read_delay = read_delay
        self.delete_delay = delete_delay
        self.calls: list[UpstreamCall] = []
        """Every call received, in arrival order."""
        self.peak = 0
        """The most write calls (deletes, status updates, disposals) in flight at once."""
        self._active = 0
        self._lock = threading.Lock()
        self._packages: dict[PackageRef, _Package] = {}
        self._faults: list[_Fault] = []
        self._revisions = itertools.count(1)
        self._request_ids = itertools.count(1)

    # --- arranging -------------------------------------------------------------------------

    def add_package(
        self,
        package: PackageRef,
        versions: Mapping[str, VersionStatus] | Iterable[str],
        *,
        latest: str | None = None,
        published_at: Mapping[str, datetime] | None = None,
    ) -> None:
        """Create (or replace) `package` with `versions` (names: all Published). The default
        display version is `latest`, else the last version given."""
        statuses = (
            dict(versions)
            if isinstance(versions, Mapping)
            else dict.fromkeys(versions, VersionStatus.PUBLISHED)
        )
        times = published_at or {}
        with self._lock:
            self._packages[_key(package)] = _Package(
                {
                    version: _Version(status, self._revision(), times.get(version))
                    for version, status in statuses.items()
                },
                latest if latest is not None else next(reversed(statuses), None),
            )

    def put_version(
        self,
        package: PackageRef,
        version: str,
        status: VersionStatus = VersionStatus.PUBLISHED,
        *,
        published_at: datetime | None = None,
    ) -> str:
        """Create or replace one version of an existing package with a new revision (as a
        re-publication after a delete would), and return that revision. KeyError when the
        package does not exist."""
        with self._lock:
            record = _Version(status, self._revision(), published_at)
            self._packages[_key(package)].versions[version] = record
            return record.revision

    def fail_next(
        self,
        operation: Operation,
        error: UpstreamError,
        *,
        after: int = 0,
        when: Callable[[UpstreamCall], bool] | None = None,
        applied: bool = False,
    ) -> None:
        """Raise `error` from the call of `operation` (matching `when`) that comes after
        `after` more such calls; with `applied`, a write is applied first (its answer is what
        was lost). Faults armed for one operation fire in the order they were armed."""
        if applied and operation not in WRITES:
            raise ValueError(f"only a write can be applied before failing, not {operation}")
        with self._lock:
            self._faults.append(_Fault(operation, error, after, when, applied))

    def lose_next_answer(
        self,
        operation: Operation = DELETE,
        *,
        after: int = 0,
        when: Callable[[UpstreamCall], bool] | None = None,
    ) -> None:
        """The write of `operation` that comes after `after` more (matching `when`) is
        applied, its answer lost, and the retry's answer returned, marked
        `after_lost_response`."""
        if operation not in WRITES:
            raise ValueError(f"only a write can lose its answer, not {operation}")
        with self._lock:
            self._faults.append(_Fault(operation, None, after, when, applied=True))

    # --- what happened ---------------------------------------------------------------------

    def statuses(self, package: PackageRef) -> dict[str, VersionStatus]:
        """The versions `package` has now (empty when it does not exist)."""
        with self._lock:
            found = self._packages.get(_key(package))
            return {v: r.status for v, r in found.versions.items()} if found else {}

    def revisions(self, package: PackageRef) -> dict[str, str]:
        """The revision of each version `package` has now (empty when it does not exist)."""
        with self._lock:
            found = self._packages.get(_key(package))
            return {v: r.revision for v, r in found.versions.items()} if found else {}

    def sent(self, operation: Operation = DELETE) -> list[tuple[str, ...]]:
        """The versions of each call of `operation` (a delete by default) received, in
        arrival order."""
        return [call.versions for call in self.calls if call.operation == operation]

    # --- the port --------------------------------------------------------------------------

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
        by_published: bool = False,
    ) -> PackageState:
        """Every version's status and revision, the default display version, and the
        publication times asked for; UpstreamNotFoundError for an unknown package. With
        `by_published`, versions newest published first (those with no time in the order
        they were added, after the others)."""
        call = UpstreamCall(READ, package, tuple(published_time_for))
        with self._lock:
            self.calls.append(call)
            fault = self._fault(call)
            found = self._packages.get(_key(package))
            state = (
                _state(found, published_time_for, by_published=by_published)
                if found is not None
                else None
            )
        time.sleep(self.read_delay)
        if fault is not None and fault.error is not None:
            raise fault.error
        if state is None:
            raise _no_package(package)
        return state

    def published_time(
        self, package: PackageRef, version: str, deadline: Deadline
    ) -> datetime | None:
        """The version's publication time as arranged (None when none was given)."""
        call = UpstreamCall(READ, package, (version,))
        with self._lock:
            self.calls.append(call)
            fault = self._fault(call)
            found = self._packages.get(_key(package))
            record = found.versions.get(version) if found is not None else None
        time.sleep(self.read_delay)
        if fault is not None and fault.error is not None:
            raise fault.error
        if found is None:
            raise _no_package(package)
        if record is None:
            raise UpstreamNotFoundError(
                f"Package version {version} not found.",
                resource_type="package-version",
                resource_id=version,
            )
        return record.published_at

    def list_packages(
        self,
        domain: str,
        repository: str,
        deadline: Deadline,
        *,
        domain_owner: str | None = None,
        format: PackageFormat | None = None,
        namespace: str | None = None,
        prefix: str | None = None,
    ) -> list[PackageRef]:
        """The arranged packages of the repository, filtered as CodeArtifact filters."""
        with self._lock:
            known = list(self._packages)
        time.sleep(self.read_delay)
        return sorted(
            (
                replace(p, domain_owner=domain_owner)
                for p in known
                if p.domain == domain
                and p.repository == repository
                and (format is None or p.format is format)
                and (namespace is None or (p.namespace or "").startswith(namespace))
                and (prefix is None or p.package.startswith(prefix))
            ),
            key=lambda p: (p.format.value, p.namespace or "", p.package),
        )

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Delete `versions` as CodeArtifact does (see the module docstring)."""
        return self._write(UpstreamCall(DELETE, package, tuple(versions), expected_status))

    def update_package_versions_status(
        self,
        package: PackageRef,
        versions: Sequence[str],
        target_status: VersionStatus,
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """Move `versions` to `target_status` as CodeArtifact does (see the module docstring)."""
        call = UpstreamCall(
            UPDATE_STATUS,
            package,
            tuple(versions),
            expected_status,
            target_status,
            None if revisions is None else dict(revisions),
        )
        return self._write(call)

    def dispose_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """Dispose of `versions` as CodeArtifact does (see the module docstring)."""
        call = UpstreamCall(
            DISPOSE,
            package,
            tuple(versions),
            expected_status,
            revisions=None if revisions is None else dict(revisions),
        )
        return self._write(call)

    # --- internals -------------------------------------------------------------------------

    def _revision(self) -> str:
        return f"rev-{next(self._revisions)}"

    def _fault(self, call: UpstreamCall) -> _Fault | None:
        """The fault this call meets, if any (removed); counts down the others it passes."""
        fired: _Fault | None = None
        for fault in self._faults:
            if not fault.matches(call):
                continue
            if fault.after > 0:
                fault.after -= 1
            elif fired is None:
                fired = fault
        if fired is not None:
            self._faults.remove(fired)
        return fired

    def _write(self, call: UpstreamCall) -> DeleteOutcome:
        """Record `call`, meet its fault if one is armed, and apply it (the writes' common
        path: delay, concurrency peak, errors raised before or after applying, lost answers)."""
        with self._lock:
            self.calls.append(call)
            fault = self._fault(call)
            self._active += 1
            self.peak = max(self.peak, self._active)
        try:
            time.sleep(self.delete_delay)
            if fault is None:
                return self._apply(call)
            if fault.error is not None and not fault.applied:
                raise fault.error
            self._apply(call)  # applied, but its answer is lost
            if fault.error is not None:
                raise fault.error
            return replace(self._apply(call), after_lost_response=True)  # the retry's answer
        finally:
            with self._lock:
                self._active -= 1

    def _apply(self, call: UpstreamCall) -> DeleteOutcome:
        """Apply one write to the packages and report each version's outcome."""
        if len(call.versions) > CODEARTIFACT_MAX_VERSIONS_PER_CALL:
            raise UpstreamValidationError(
                f"versions: at most {CODEARTIFACT_MAX_VERSIONS_PER_CALL} per call",
                reason="FIELD_VALIDATION_FAILED",
            )
        new_status = _new_status(call)
        successful: dict[str, SuccessfulVersion] = {}
        failed: dict[str, FailedVersion] = {}
        with self._lock:
            found = self._packages.get(_key(call.package))
            if found is None:
                raise _no_package(call.package)
            for version in call.versions:
                record = found.versions.get(version)
                if record is None:
                    failed[version] = FailedVersion(
                        VersionErrorCode.NOT_FOUND, f"Version {version} was not found."
                    )
                elif (failure := _guard(call, version, record)) is not None:
                    failed[version] = failure
                elif new_status is VersionStatus.DELETED:
                    del found.versions[version]
                    successful[version] = SuccessfulVersion(record.revision, new_status)
                elif record.status is new_status:  # nothing changes: the revision stays
                    successful[version] = SuccessfulVersion(record.revision, new_status)
                elif record.status is VersionStatus.DISPOSED:
                    failed[version] = FailedVersion(
                        VersionErrorCode.NOT_ALLOWED,
                        f"Version {version} is Disposed and cannot change status.",
                    )
                else:
                    record.status = new_status
                    record.revision = self._revision()
                    successful[version] = SuccessfulVersion(record.revision, new_status)
            if found.latest not in found.versions:
                found.latest = next(reversed(found.versions), None)
            request_id = f"fake-request-{next(self._request_ids)}"
        return DeleteOutcome(successful, failed, (request_id,))


def _new_status(call: UpstreamCall) -> VersionStatus:
    """The status a write gives the versions it processes; a ValidationException for a status
    update to another target than Archived, Published or Unlisted."""
    if call.operation == DELETE:
        return VersionStatus.DELETED
    if call.operation == DISPOSE:
        return VersionStatus.DISPOSED
    if call.target_status not in _UPDATE_TARGETS:
        raise UpstreamValidationError(
            f"targetStatus must be Archived, Published or Unlisted, not {call.target_status}",
            reason="FIELD_VALIDATION_FAILED",
        )
    return call.target_status


def _key(package: PackageRef) -> PackageRef:
    """The package as CodeArtifact names it, whoever's account the caller named."""
    return replace(canonical_package(package), domain_owner=None)


def _guard(call: UpstreamCall, version: str, record: _Version) -> FailedVersion | None:
    """Why `version` fails the guards of `call` (status, then revision), or None."""
    if call.expected_status is not None and record.status is not call.expected_status:
        return FailedVersion(
            VersionErrorCode.MISMATCHED_STATUS,
            f"Version {version} has status {record.status}, not the expected "
            f"{call.expected_status}.",
        )
    expected_revision = (call.revisions or {}).get(version)
    if expected_revision is not None and expected_revision != record.revision:
        return FailedVersion(
            VersionErrorCode.MISMATCHED_REVISION,
            f"Version {version} has revision {record.revision}, not the expected "
            f"{expected_revision}.",
        )
    return None


def _latest(package: _Package) -> str | None:
    """The default display version: the designated one unless it is Archived or Disposed,
    else the last other version that is not."""
    versions = package.versions
    designated = versions.get(package.latest) if package.latest is not None else None
    if designated is not None and designated.status not in _HIDDEN:
        return package.latest
    shown = (v for v in reversed(versions) if versions[v].status not in _HIDDEN)
    return next(shown, None)


def _state(
    package: _Package, published_time_for: Sequence[str], *, by_published: bool = False
) -> PackageState:
    versions = package.versions
    order = list(versions)
    if by_published:
        timed = sorted(
            (v for v in order if versions[v].published_at is not None),
            key=lambda v: versions[v].published_at or datetime.min,
            reverse=True,
        )
        order = timed + [v for v in order if versions[v].published_at is None]
    return PackageState(
        {v: versions[v].status for v in order},
        _latest(package),
        {
            v: at
            for v in published_time_for
            if v in versions and (at := versions[v].published_at) is not None
        },
        {v: r.revision for v, r in versions.items()},
    )


def _no_package(package: PackageRef) -> UpstreamNotFoundError:
    return UpstreamNotFoundError(
        f"Package {package.package} not found in repository {package.repository}.",
        resource_type="package",
        resource_id=package.package,
    )
