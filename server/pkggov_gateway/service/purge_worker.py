"""The purge worker: deletes (or disposes) archived versions whose recovery window has ended.

Every replica runs one (`runtime.Gateway` calls `run_once` every interval). Each pass:

1. Leases up to `batch` due purges from the store (`claim_due_purges`: a purge is leased to
   one replica at a time; PostgreSQL's ``FOR UPDATE SKIP LOCKED`` across a fleet).
2. Per package, holding the package's lock (the same lock as callers' deletes and restores):
   re-reads the purges (a restore may have closed one since), then reads the package from
   CodeArtifact. A version still Archived at the revision it was archived at is purged; one
   that is gone, in another status (restored, re-published) or at another revision (changed
   outside the gateway) has its purge cancelled, with the reason recorded.
3. Purges as a governed call of its own, so that the audit record holds it like any delete:
   the intent is committed before anything is sent (no intent, no purge); the call goes
   through the same adapter (rate limiter, retries, deadline); the outcome records what
   CodeArtifact answered and which caller's request each purge completes, and closes the
   purges in its own transaction. DeletePackageVersions is sent with expectedStatus Archived
   (it takes no revision guard); DisposePackageVersions also pins each version's revision.
4. When something fails (CodeArtifact throttling or down, the audit store down), the purges are
   released and tried again after a backoff that doubles per attempt: nothing is lost, and a
   purge whose outcome is unknown is re-read before it is tried again. A crash mid-purge leaves
   the lease to expire and the intent to the reconciler; the next attempt re-reads the version
   and finds it gone (recorded as purged) or still archived (purged then): never twice.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from pkggov_gateway.domain.audit import format_time
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    PkggovError,
    UpstreamError,
    UpstreamNotFoundError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageRef,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.package_key import package_identity
from pkggov_gateway.domain.records import RecordedStatus, request_json, response_json
from pkggov_gateway.domain.recovery import (
    PURGE_WORKER_PRINCIPAL,
    PendingPurge,
    PurgeClosure,
    PurgeEffects,
    PurgeState,
)
from pkggov_gateway.ports import CodeArtifactPort, Metrics, NullMetrics, PackageLocks, PurgeStore
from pkggov_gateway.service.audit import Auditor

__all__ = ["PURGE_METHOD", "PurgeRun", "PurgeSettings", "PurgeWorker"]

log = structlog.get_logger("pkggov.purge")

OUTCOME_UNKNOWN = "outcome unknown: "
"""How a released purge's last_error starts when its attempt may have been applied: a later
attempt that finds the version gone records it purged by that attempt."""

PURGE_METHOD = "/pkggov.internal.PurgeWorker/PurgePackageVersions"
"""The method the purge worker's audit events name (no client can call it)."""


@dataclass(frozen=True, slots=True)
class PurgeSettings:
    """How the worker purges: the final step, batch, lease, retry backoff and call deadline."""

    dispose: bool = False
    """Dispose (assets deleted, record kept as Disposed) instead of delete."""
    batch: int = 100
    lease_seconds: float = 120.0
    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    deadline_seconds: float = 60.0


@dataclass(slots=True)
class PurgeRun:
    """What one pass did."""

    purged: int = 0
    cancelled: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class PurgeWorker:
    """Purges due versions (see the module docstring)."""

    def __init__(
        self,
        auditor: Auditor,
        purges: PurgeStore,
        upstream: CodeArtifactPort,
        locks: PackageLocks,
        settings: PurgeSettings,
        *,
        status_of: Callable[[BaseException], RecordedStatus],
        drain: DrainSignal | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        self._auditor = auditor
        self._purges = purges
        self._upstream = upstream
        self._locks = locks
        self._settings = settings
        self._status_of = status_of
        self._drain = drain
        self._clock = clock
        self._metrics = metrics or NullMetrics()
        self._principal = Principal(PURGE_WORKER_PRINCIPAL, AuthMethod.INTERNAL, "internal")

    def run_once(self) -> PurgeRun:
        """Lease the due purges and purge (or cancel) them, package by package."""
        run = PurgeRun()
        now = self._clock()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        claimed = self._purges.claim_due_purges(now, lease_until, self._settings.batch)
        by_package: dict[str, list[PendingPurge]] = {}
        for purge in claimed:
            by_package.setdefault(package_identity(purge.package), []).append(purge)
        for purges in by_package.values():
            # The lease covers the whole batch: a package is started only while its calls can
            # end before the lease lets another replica take the rest (left leased, they fall
            # due again when it ends).
            left = (lease_until - self._clock()).total_seconds()
            if left < self._settings.deadline_seconds or (self._drain and self._drain.draining):
                break
            self._purge_package(purges, run)
        self._metrics.purges_done(run.purged, run.cancelled, run.failed)
        self._metrics.purges_pending(self._purges.purge_stats(self._clock()), self._clock())
        return run

    def _purge_package(self, claimed: Sequence[PendingPurge], run: PurgeRun) -> None:
        package = claimed[0].package
        deadline = Deadline.after(self._settings.deadline_seconds, self._drain)
        try:
            with self._locks.hold(package, deadline):
                current = self._purges.pending_for(package, [p.version for p in claimed])
                # A restore (or a purge_now delete) may have closed one since it was leased.
                purges = [p for p in claimed if _same(current.get(p.version), p)]
                if purges:
                    try:
                        state = self._upstream.package_state(package, deadline)
                    except UpstreamNotFoundError:
                        state = PackageState({})  # the package is gone, and its versions
                    self._purge(package, purges, state, deadline, run)
        except Exception as error:  # noqa: BLE001 - every failure is retried later
            self._retry(claimed, error, run)

    def _purge(
        self,
        package: PackageRef,
        purges: Sequence[PendingPurge],
        state: PackageState,
        deadline: Deadline,
        run: PurgeRun,
    ) -> None:
        plan: dict[str, PlannedVersion] = {}
        cancel: dict[str, str] = {}
        done: dict[str, str] = {}
        attempts = self._unfinished_attempts(purges, state)
        for purge in purges:
            reason = _cancel_reason(purge, state)
            if purge.purge_id in attempts:
                done[purge.version] = (
                    f"deleted by an earlier purge attempt ({attempts[purge.purge_id]})"
                )
                plan[purge.version] = PlannedVersion(
                    PlanOutcome.NOT_FOUND, f"already purged: {done[purge.version]}"
                )
            elif reason is None:
                plan[purge.version] = PlannedVersion(
                    PlanOutcome.WOULD_DELETE,
                    f"recovery window ended at {format_time(purge.due_at)}",
                    status=VersionStatus.ARCHIVED,
                )
            else:
                cancel[purge.version] = reason
                plan[purge.version] = PlannedVersion(
                    PlanOutcome.STATUS_MISMATCH,
                    f"purge cancelled: {reason}",
                    status=state.statuses.get(purge.version),
                )
        call = self._auditor.begin(PURGE_METHOD, str(uuid.uuid4()), "internal")
        call.identified(self._principal)
        call.received(_request(package, purges, dispose=self._settings.dispose))
        call.planned(plan)
        forward = [v for v, p in plan.items() if p.outcome is PlanOutcome.WOULD_DELETE]
        outcome = DeleteOutcome()
        try:
            if forward:
                call.before_forwarding((), forward, deadline, counts_quota=False)
                outcome = self._send(package, forward, purges, deadline)
                call.delivered(outcome)
        except BaseException as error:
            status = self._status_of(error)
            closures = (
                *_closures(package, cancel, PurgeState.CANCELLED),
                *_closures(package, self._lost(package, forward, error), PurgeState.PURGED),
            )
            call.will_apply(PurgeEffects(close=closures))
            try:
                call.failed(error, status)
            except AuditUnavailableError:
                if call.intent is None:
                    raise  # nothing was recorded, and nothing was sent
            run.cancelled += len(closures)
            raise
        purged = {**done, **dict.fromkeys(outcome.successful, "purged by the worker")}
        for version, failure in outcome.failed.items():
            if failure.code in _GONE_OR_CHANGED:
                cancel[version] = f"not purged: {failure.message}"
        closures = (
            *_closures(package, purged, PurgeState.PURGED),
            *_closures(package, cancel, PurgeState.CANCELLED),
        )
        call.will_apply(PurgeEffects(close=closures))
        call.succeeded(response_json(outcome))
        run.purged += len(purged)
        run.cancelled += len(cancel)
        retry = [p for p in purges if p.version in outcome.failed and p.version not in cancel]
        for purge in retry:
            self._release(purge, outcome.failed[purge.version].message)
            run.failed += 1
        if cancel:
            log.info("purge.cancelled", versions=cancel, package=package.package)
        if purged:
            log.info("purge.purged", versions=sorted(purged), package=package.package)

    def _send(
        self,
        package: PackageRef,
        versions: Sequence[str],
        purges: Sequence[PendingPurge],
        deadline: Deadline,
    ) -> DeleteOutcome:
        archived = VersionStatus.ARCHIVED
        if self._settings.dispose:
            revisions = {p.version: p.revision for p in purges if p.version in versions}
            outcome = self._upstream.dispose_package_versions(
                package, versions, deadline, expected_status=archived, revisions=revisions
            )
            if not outcome.after_lost_response or not outcome.failed:
                return outcome
            # The retry finds what the lost attempt disposed no longer Archived at its revision.
            state = self._upstream.package_state(package, deadline)
            done = {v for v in outcome.failed if state.statuses.get(v) is VersionStatus.DISPOSED}
            return DeleteOutcome(
                {
                    **outcome.successful,
                    **{
                        v: SuccessfulVersion(state.revisions.get(v, ""), VersionStatus.DISPOSED)
                        for v in done
                    },
                },
                {v: f for v, f in outcome.failed.items() if v not in done},
                outcome.aws_request_ids,
                inferred=dict.fromkeys(done, "disposed by an attempt whose answer was lost"),
            )
        outcome = self._upstream.delete_package_versions(package, versions, archived, deadline)
        if not outcome.after_lost_response:
            return outcome
        # A lost answer's retry reports NOT_FOUND for what the lost attempt deleted.
        gone = {v: f for v, f in outcome.failed.items() if f.code is VersionErrorCode.NOT_FOUND}
        return DeleteOutcome(
            {
                **outcome.successful,
                **{v: _deleted(purges, v) for v in gone},
            },
            {v: f for v, f in outcome.failed.items() if v not in gone},
            outcome.aws_request_ids,
            inferred=dict.fromkeys(gone, "deleted by an attempt whose answer was lost"),
        )

    def _lost(
        self, package: PackageRef, forward: Sequence[str], error: BaseException
    ) -> dict[str, str]:
        """After a purge whose outcome is unknown (its answer was lost): the versions it
        deleted, found gone by a fresh read, so that they are recorded purged, not cancelled
        by the next attempt as "deleted outside the gateway"."""
        if not (forward and isinstance(error, UpstreamError) and error.outcome_unknown):
            return {}
        try:
            state = self._upstream.package_state(
                package, Deadline.after(self._settings.deadline_seconds, self._drain)
            )
        except UpstreamNotFoundError:
            state = PackageState({})
        except PkggovError:
            return {}  # the next attempt reads again (and the reconciler)
        reason = "deleted by this purge attempt, whose answer was lost"
        return {v: reason for v in forward if self._done(v, state)}

    def _done(self, version: str, state: PackageState) -> bool:
        """True when `state` shows the version purged: gone, or (final step dispose) Disposed."""
        status = state.statuses.get(version)
        return status is None or (self._settings.dispose and status is VersionStatus.DISPOSED)

    def _unfinished_attempts(
        self, purges: Sequence[PendingPurge], state: PackageState
    ) -> dict[str, str]:
        """For each purge whose version is gone: the event of an earlier attempt of it that
        forwarded it and ended without an outcome (its replica died), by purge id. Such a
        version was purged by that attempt, not deleted outside the gateway."""
        gone = {p.purge_id for p in purges if self._done(p.version, state)}
        if not gone:
            return {}
        found = {
            p.purge_id: "an attempt whose answer was lost"
            for p in purges
            if p.purge_id in gone and p.last_error.startswith(OUTCOME_UNKNOWN)
        }
        for event in self._auditor.store.open_intents():
            body = event.entries[0].body
            if (body.get("rpc") or {}).get("method") != PURGE_METHOD:
                continue
            forward = set(body.get("forward") or ())
            for item in (body.get("request") or {}).get("completes") or ():
                purge_id = item.get("purge_id")
                if purge_id in gone and item.get("version") in forward:
                    found[purge_id] = f"audit event {event.event_id}, ended without an outcome"
        return found

    def _retry(self, purges: Sequence[PendingPurge], error: BaseException, run: PurgeRun) -> None:
        message = error.message if isinstance(error, PkggovError) else repr(error)
        if isinstance(error, UpstreamError) and error.outcome_unknown:
            message = OUTCOME_UNKNOWN + message
        log.warning("purge.retry_later", error=message, versions=[p.version for p in purges])
        run.errors.append(message)
        for purge in purges:
            # When the store is down the lease simply expires, and the purge is due again.
            with contextlib.suppress(AuditUnavailableError):
                self._release(purge, message)
            run.failed += 1

    def _release(self, purge: PendingPurge, error: str) -> None:
        delay = min(
            self._settings.retry_seconds * (2**purge.attempts), self._settings.retry_max_seconds
        )
        retry_at = self._clock() + timedelta(seconds=delay)
        self._purges.release_purge(purge.purge_id, retry_at=retry_at, error=error)


_GONE_OR_CHANGED = frozenset(
    {
        VersionErrorCode.NOT_FOUND,
        VersionErrorCode.MISMATCHED_STATUS,
        VersionErrorCode.MISMATCHED_REVISION,
        VersionErrorCode.NOT_ALLOWED,
    }
)
"""Per-version answers that mean the version is no longer the one archived: its purge is
cancelled rather than retried."""


def _same(current: PendingPurge | None, claimed: PendingPurge) -> bool:
    return current is not None and current.purge_id == claimed.purge_id


def _cancel_reason(purge: PendingPurge, state: PackageState) -> str | None:
    """Why the version must not be purged (None: it is still as archived)."""
    status = state.statuses.get(purge.version)
    if status is None:
        return "the version no longer exists (deleted outside the gateway)"
    if status is not VersionStatus.ARCHIVED:
        return f"the version is {status} now (restored or changed outside the gateway)"
    revision = state.revisions.get(purge.version)
    if revision is not None and revision != purge.revision:
        return (
            "the version's revision changed since it was archived (re-published or changed "
            "outside the gateway)"
        )
    return None


def _deleted(purges: Sequence[PendingPurge], version: str) -> SuccessfulVersion:
    revision = next(p.revision for p in purges if p.version == version)
    return SuccessfulVersion(revision, VersionStatus.DELETED)


def _closures(
    package: PackageRef, reasons: Mapping[str, str], state: PurgeState
) -> tuple[PurgeClosure, ...]:
    return tuple(PurgeClosure(package, v, state, reason) for v, reason in reasons.items())


def _request(
    package: PackageRef, purges: Sequence[PendingPurge], *, dispose: bool
) -> dict[str, Any]:
    """What the purge's audit event records as its request: the package as a delete's request
    names it, the versions, and which caller's request each purge completes."""
    return request_json(
        package,
        [p.version for p in purges],
        expected_status=VersionStatus.ARCHIVED,
        final_step="dispose" if dispose else "delete",
        completes=[
            {
                "version": p.version,
                "requester": p.requester,
                "archive_event_id": p.archive_event_id,
                "revision": p.revision,
                "due": format_time(p.due_at),
                "purge_id": p.purge_id,
            }
            for p in purges
        ],
    )
