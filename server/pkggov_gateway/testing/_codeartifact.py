"""A CodeArtifactPort over packages held in memory, recording every call, failing on demand.

Deletes behave as CodeArtifact's DeletePackageVersions (and the emulator's): a version that
does not exist is NOT_FOUND, one not in `expected_status` is MISMATCHED_STATUS, the others are
removed and reported Deleted with their revision; more than 100 versions in one call is a
ValidationException. Packages are named as CodeArtifact stores them (`canonical_package`).

Scripted trouble: `fail_next` raises an UpstreamError on a chosen call of an operation
(optionally after applying it, as a timed-out delete that went through), and
`lose_next_answer` applies a delete whose answer is lost and returns what the adapter's retry
returns (NOT_FOUND for what the lost attempt deleted, ``after_lost_response``).
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
    PackageRef,
    PackageState,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.validation import CODEARTIFACT_MAX_VERSIONS_PER_CALL

__all__ = ["DELETE", "READ", "FakeCodeArtifact", "Operation", "UpstreamCall"]

Operation = Literal["package_state", "delete_package_versions"]
READ: Operation = "package_state"
DELETE: Operation = "delete_package_versions"


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One call the fake received: for a read, `versions` are those asked a published time."""

    operation: Operation
    package: PackageRef
    versions: tuple[str, ...] = ()
    expected_status: VersionStatus | None = None


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
    """None: the answer is lost and the call retried (deletes only)."""
    after: int
    when: Callable[[UpstreamCall], bool] | None
    applied: bool

    def matches(self, call: UpstreamCall) -> bool:
        return call.operation == self.operation and (self.when is None or self.when(call))


class FakeCodeArtifact:
    """The CodeArtifact port in memory (see the module docstring)."""

    def __init__(self, *, read_delay: float = 0.0, delete_delay: float = 0.0) -> None:
        """`read_delay`: seconds each read's answer travels back (after the state is read);
        `delete_delay`: seconds each delete is in flight before it applies."""
        self.read_delay = read_delay
        self.delete_delay = delete_delay
        self.calls: list[UpstreamCall] = []
        """Every call received, in arrival order."""
        self.peak = 0
        """The most delete calls that were in flight at once."""
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
        `after` more such calls; with `applied`, a delete is applied first (its answer is what
        was lost). Faults armed for one operation fire in the order they were armed."""
        with self._lock:
            self._faults.append(_Fault(operation, error, after, when, applied))

    def lose_next_answer(
        self, *, after: int = 0, when: Callable[[UpstreamCall], bool] | None = None
    ) -> None:
        """The delete that comes after `after` more (matching `when`) is applied, its answer
        lost, and the retry's answer returned, marked `after_lost_response`."""
        with self._lock:
            self._faults.append(_Fault(DELETE, None, after, when, applied=True))

    # --- what happened ---------------------------------------------------------------------

    def statuses(self, package: PackageRef) -> dict[str, VersionStatus]:
        """The versions `package` has now (empty when it does not exist)."""
        with self._lock:
            found = self._packages.get(_key(package))
            return {v: r.status for v, r in found.versions.items()} if found else {}

    def sent(self) -> list[tuple[str, ...]]:
        """The versions of each delete call received, in arrival order."""
        return [call.versions for call in self.calls if call.operation == DELETE]

    # --- the port --------------------------------------------------------------------------

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
    ) -> PackageState:
        """Every version's status and revision, the default display version, and the
        publication times asked for; UpstreamNotFoundError for an unknown package."""
        call = UpstreamCall(READ, package, tuple(published_time_for))
        with self._lock:
            self.calls.append(call)
            fault = self._fault(call)
            found = self._packages.get(_key(package))
            state = _state(found, published_time_for) if found is not None else None
        time.sleep(self.read_delay)
        if fault is not None and fault.error is not None:
            raise fault.error
        if state is None:
            raise _no_package(package)
        return state

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Delete `versions` as CodeArtifact does (see the module docstring)."""
        call = UpstreamCall(DELETE, package, tuple(versions), expected_status)
        with self._lock:
            self.calls.append(call)
            fault = self._fault(call)
            self._active += 1
            self.peak = max(self.peak, self._active)
        try:
            time.sleep(self.delete_delay)
            if fault is None:
                return self._delete(call)
            if fault.error is not None and not fault.applied:
                raise fault.error
            self._delete(call)  # applied, but its answer is lost
            if fault.error is not None:
                raise fault.error
            return replace(self._delete(call), after_lost_response=True)  # the retry's answer
        finally:
            with self._lock:
                self._active -= 1

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

    def _delete(self, call: UpstreamCall) -> DeleteOutcome:
        if len(call.versions) > CODEARTIFACT_MAX_VERSIONS_PER_CALL:
            raise UpstreamValidationError(
                f"versions: at most {CODEARTIFACT_MAX_VERSIONS_PER_CALL} per call",
                reason="FIELD_VALIDATION_FAILED",
            )
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
                elif call.expected_status is not None and record.status is not call.expected_status:
                    failed[version] = FailedVersion(
                        VersionErrorCode.MISMATCHED_STATUS,
                        f"Version {version} has status {record.status}, not the expected "
                        f"{call.expected_status}.",
                    )
                else:
                    del found.versions[version]
                    successful[version] = SuccessfulVersion(record.revision, VersionStatus.DELETED)
            if found.latest not in found.versions:
                found.latest = next(reversed(found.versions), None)
            request_id = f"fake-request-{next(self._request_ids)}"
        return DeleteOutcome(successful, failed, (request_id,))


def _key(package: PackageRef) -> PackageRef:
    """The package as CodeArtifact names it, whoever's account the caller named."""
    return replace(canonical_package(package), domain_owner=None)


def _state(package: _Package, published_time_for: Sequence[str]) -> PackageState:
    versions = package.versions
    return PackageState(
        {v: r.status for v, r in versions.items()},
        package.latest,
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
