"""Recoverable deletion: recovery windows, pending purges and how they change.

Under a recovery window, a governed delete archives a version (CodeArtifact's reversible
status) instead of deleting it, and schedules its *purge* for the end of the window. Until
then `RestorePackageVersions` can bring it back; when the purge falls due, a replica's purge
worker deletes it, unless it was restored or changed meanwhile.

A pending purge is durable state beside the audit chain. It changes only together with the
audit entry that explains the change (`PurgeEffects` ride on the entry and commit in its
transaction): an archive's outcome schedules, a restore's or purge's outcome closes, and a
reconciliation after a crash does whichever the versions' state shows. Only the worker's
lease (`claim`/`release`) changes a row without an entry: it decides nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pkggov_gateway.domain.model import PackageRef, VersionStatus

__all__ = [
    "PURGE_WORKER_PRINCIPAL",
    "RESTORE_METHOD",
    "PendingPurge",
    "PurgeClosure",
    "PurgeEffects",
    "PurgePage",
    "PurgeQuery",
    "PurgeState",
    "PurgeStats",
    "RecoveryWindow",
    "RecoveryWindows",
]

RESTORE_METHOD = "/pkggov.v1.PackageGovernanceService/RestorePackageVersions"
"""What a caller calls to restore an archived version (named in the delete's response)."""

PURGE_WORKER_PRINCIPAL = "pkggov:purge-worker"
"""The principal the purge worker's audit events name (it completes another's request)."""


@dataclass(frozen=True, slots=True)
class RecoveryWindow:
    """A window for the repositories matching `domain` and `repository` (fnmatch globs)."""

    domain: str
    repository: str
    window: timedelta
    """Zero: no window (deletion is immediate)."""

    def matches(self, package: PackageRef) -> bool:
        """True when this window's patterns match the package's domain and repository."""
        return fnmatch.fnmatchcase(package.domain, self.domain) and fnmatch.fnmatchcase(
            package.repository, self.repository
        )


@dataclass(frozen=True, slots=True)
class RecoveryWindows:
    """The configured windows, first match wins; no match means no window."""

    windows: tuple[RecoveryWindow, ...] = ()

    def window_for(self, package: PackageRef) -> timedelta | None:
        """The recovery window of `package`'s repository, or None (immediate deletion)."""
        for window in self.windows:
            if window.matches(package):
                return window.window if window.window > timedelta(0) else None
        return None


class PurgeState(StrEnum):
    """Where a scheduled purge stands."""

    PENDING = "pending"
    PURGED = "purged"
    """The version was deleted (or disposed) by the worker, or at once by a purge_now."""
    RESTORED = "restored"
    """RestorePackageVersions brought the version back."""
    CANCELLED = "cancelled"
    """The version was restored, re-published or changed outside the gateway, or is gone."""


@dataclass(frozen=True, slots=True)
class PendingPurge:
    """One archived version awaiting its purge, pinned to the revision it was archived at."""

    purge_id: str
    package: PackageRef
    version: str
    revision: str
    """The version's revision after archiving: the purge deletes only this revision."""
    previous_status: VersionStatus
    """The status it had before archiving: what a restore moves it back to."""
    requester: str
    """The principal whose request archived it (the purge completes that request)."""
    archive_event_id: str
    archived_at: datetime
    due_at: datetime
    attempts: int = 0
    """Purge attempts that failed (and were retried later)."""
    last_error: str = ""
    next_attempt_at: datetime | None = None
    """When a failed purge is tried again (None: at `due_at`)."""


@dataclass(frozen=True, slots=True)
class PurgeClosure:
    """Ends the pending purge of one version (no effect if none is pending)."""

    package: PackageRef
    version: str
    state: PurgeState
    reason: str


@dataclass(frozen=True, slots=True)
class PurgeEffects:
    """Changes to pending purges committed atomically with an audit entry (see module doc).

    `schedule` inserts a pending purge unless the version already has one (the earlier one
    stays, with its due time); `close` ends the version's pending purge, recording the state,
    the reason and the entry's event id and time.
    """

    schedule: tuple[PendingPurge, ...] = ()
    close: tuple[PurgeClosure, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.schedule or self.close)


@dataclass(frozen=True, slots=True)
class PurgeQuery:
    """Filters of the pending-purge listing (None: any), soonest due first."""

    domain: str | None = None
    repository: str | None = None
    package: str | None = None
    requester: str | None = None
    due_before: datetime | None = None
    """Exclusive upper bound of the due time."""
    after: tuple[str, str] | None = None
    """(due_at as `format_time`, purge_id) of the last row of the previous page."""
    limit: int = 50


@dataclass(frozen=True, slots=True)
class PurgePage:
    """One page of pending purges; `next_after` is the cursor of the next page (None: last)."""

    purges: Sequence[PendingPurge]
    next_after: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PurgeStats:
    """The pending purges at a glance, for metrics."""

    pending: int
    due: int
    """Pending purges whose due time has passed."""
    oldest_due: datetime | None
    """The due time of the longest-overdue purge (None: nothing is due)."""
