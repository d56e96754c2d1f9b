"""The audit service: opens governed calls on one store, and reconciles what crashes left open.

`Auditor.begin` opens a `GovernedCall` (service.governed_call) for each RPC: it owns the
call's record from the request-id replay to the outcome. Every commit a call waits for goes
through `Auditor.append`, which times it.

`reconcile` closes intents left open by a crash: it reads the versions' state from
CodeArtifact and records what it found.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from pkggov_gateway.domain.approvals import ApprovalEffects, RequestState, Transition
from pkggov_gateway.domain.audit import (
    AppendGuard,
    EventClosed,
    NewEntry,
    QuotaCheck,
    StoredEntry,
    format_time,
    parse_time,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    PkggovError,
    UpstreamNotFoundError,
)
from pkggov_gateway.domain.model import (
    PackageFormat,
    PackageRef,
    PackageState,
    PlanOutcome,
    VersionStatus,
)
from pkggov_gateway.domain.records import IntentFacts, ReconciliationRecord
from pkggov_gateway.domain.recovery import PendingPurge, PurgeClosure, PurgeEffects, PurgeState
from pkggov_gateway.ports import AuditStore, CodeArtifactPort, Metrics, NullMetrics
from pkggov_gateway.service.governed_call import GovernedCall

__all__ = ["Auditor", "QuotaLimits", "Reconciled", "default_replica"]

log = structlog.get_logger("pkggov.audit")


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Versions a principal may delete per window: by group (most generous applies), else
    `default` (0: unlimited)."""

    window_seconds: float = 3600.0
    default: int = 0
    by_group: Mapping[str, int] = field(default_factory=dict)

    def check_for(self, principal: str, groups: Sequence[str]) -> QuotaCheck | None:
        """The quota that applies to `principal` (None: unlimited)."""
        limits = [self.by_group[g] for g in groups if g in self.by_group]
        limit = max(limits) if limits else self.default
        if limit <= 0:
            return None
        held = [g for g in groups if g in self.by_group]
        where = f"group {held[limits.index(limit)]}" if limits else "the default"
        hours = self.window_seconds / 3600
        subject = f"versions deleted per {hours:g} h for {principal} ({where})"
        return QuotaCheck(principal, limit, self.window_seconds, subject)


class Auditor:
    """Opens governed calls on one store; reconciles open intents."""

    def __init__(
        self,
        store: AuditStore,
        *,
        quotas: QuotaLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.quotas = quotas or QuotaLimits()
        self._clock = clock
        self.metrics = metrics or NullMetrics()

    def append(
        self,
        entry: NewEntry,
        *,
        guard: AppendGuard | None = None,
        durable: bool = False,
    ) -> StoredEntry:
        """Append a call's entry to the store, timing the commit the call waits for."""
        kind = entry.kind.value
        started = time.perf_counter()
        try:
            stored = self.store.append(entry, guard=guard, durable=durable)
        except AuditUnavailableError:
            self.metrics.audit_commit(kind, time.perf_counter() - started, ok=False)
            raise
        self.metrics.audit_commit(kind, time.perf_counter() - started, ok=True)
        return stored

    def now(self) -> datetime:
        """The time on the auditor's clock: every time a record holds is read from it, so
        that deadlines, windows and reconciliation agree (a test's clock included)."""
        return self._clock()

    def begin(self, method: str, rpc_request_id: str, peer: str) -> GovernedCall:
        """A new governed call, and its event, for one RPC (nothing is written yet)."""
        return GovernedCall(self, method, rpc_request_id, peer, self.now())

    def reconcile(
        self,
        upstream: CodeArtifactPort,
        *,
        older_than: datetime | None = None,
        replica: str | None = None,
        settle_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
    ) -> Reconciled:
        """Record a reconciliation for each open intent that is settled: of `replica` (a
        process of this replica died with it open) once its call's deadline is `settle_seconds`
        past, or of any replica when older than `older_than`.

        Waiting for the deadline matters: the dead process may have sent a delete that
        CodeArtifact applies only after a successor started, and a reading taken before that
        would record "still_present" for good. After the deadline nothing more was sent, and
        the settle time covers a request CodeArtifact was still processing.
        """
        done = 0
        due: datetime | None = None
        now = self._clock()
        for event in self.store.open_intents():
            intent = IntentFacts.of(event.entries[0])
            mine = replica is not None and intent.replica == replica
            old = older_than is not None and intent.time < format_time(older_than)
            if not (mine or old):
                continue
            settled_at = _settled_at(intent, settle_seconds)
            if not old and settled_at is not None and settled_at > now:
                due = settled_at if due is None else min(due, settled_at)
                continue
            done += self._reconcile_one(upstream, intent, timeout_seconds)
        return Reconciled(done, due)

    def _reconcile_one(
        self, upstream: CodeArtifactPort, intent: IntentFacts, timeout_seconds: float
    ) -> bool:
        """Record the reconciliation of one open intent; False when another replica (a sweep
        starting at the same time) or the call's own process closed the event first."""
        versions = intent.forward
        states: dict[str, str] = {}
        detail = ""
        package: PackageRef | None = None
        state: PackageState | None = None
        try:
            fields = intent.package_fields()
            package = PackageRef(
                domain=str(fields["domain"]),
                repository=str(fields["repository"]),
                format=PackageFormat(str(fields["format"])),
                package=str(fields["package"]),
                namespace=fields["namespace"],
                domain_owner=fields["domain_owner"],
            )
            state = upstream.package_state(package, Deadline.after(timeout_seconds))
            for version in versions:
                states[version] = _found(intent, version, state)
        except (PkggovError, KeyError, ValueError) as err:
            detail = f"CodeArtifact could not be read: {err}"
            if isinstance(err, UpstreamNotFoundError):
                states = dict.fromkeys(versions, "deleted")
                detail = f"the package no longer exists: {err}"
            else:
                states = dict.fromkeys(versions, "unknown")
        effects = _purge_effects(intent, package, states, state)
        record = ReconciliationRecord(
            intent=intent,
            time=self._clock(),
            replica=self.store.replica,
            versions=states,
            detail=detail or "the call ended without an outcome (the gateway stopped)",
        )
        try:
            self.store.append(
                NewEntry(record.body(), effects, _request_effects(intent, states)),
                guard=AppendGuard(closes_open_event=True),
                durable=True,
            )
        except EventClosed:
            log.info("audit.closed_elsewhere", event_id=intent.entry.event_id)
            return False
        log.warning(
            "audit.reconciled",
            event_id=intent.entry.event_id,
            versions=states,
            detail=record.detail,
        )
        return True


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a reconciliation pass did: how many intents it closed, and when the earliest one
    it left for later (this replica's, its call's deadline not yet settled) will be due."""

    count: int
    next_due: datetime | None = None


def _found(intent: IntentFacts, version: str, state: PackageState) -> str:
    """What reconciliation found of a forwarded version: deleted, archived (by an archive),
    restored (by a restore), or still_present."""
    status = state.statuses.get(version)
    if status is None or status is VersionStatus.DELETED:
        return "deleted"
    method = str((intent.entry.body.get("rpc") or {}).get("method") or "")
    if status is VersionStatus.DISPOSED and method.endswith("/PurgePackageVersions"):
        return "deleted"  # a purge whose final step is disposal: done
    planned = intent.decision(version)
    if planned == PlanOutcome.WOULD_ARCHIVE.value and status is VersionStatus.ARCHIVED:
        return "archived"
    if planned == PlanOutcome.WOULD_RESTORE.value and status is not VersionStatus.ARCHIVED:
        return "restored"
    return "still_present"


def _purge_effects(
    intent: IntentFacts,
    package: PackageRef | None,
    states: Mapping[str, str],
    state: PackageState | None,
) -> PurgeEffects:
    """What a reconciliation does to pending purges: an archived version is scheduled (with the
    revision found now), a deleted one's purge is closed as purged, a restored one's as
    restored. A crash can thus never leave an archived version without its purge."""
    if package is None:
        return PurgeEffects()
    schedule: list[PendingPurge] = []
    close: list[PurgeClosure] = []
    event_id = intent.entry.event_id
    for version, found in states.items():
        if found == "archived" and state is not None:
            previous, due = intent.archived(version)
            schedule.append(
                PendingPurge(
                    purge_id=str(uuid.uuid4()),
                    package=package,
                    version=version,
                    revision=state.revisions.get(version, ""),
                    previous_status=previous,
                    requester=intent.principal,
                    archive_event_id=event_id,
                    archived_at=parse_time(intent.time),
                    due_at=due,
                )
            )
        elif found == "deleted":
            reason = f"reconciled: found deleted after the call of event {event_id} ended"
            close.append(PurgeClosure(package, version, PurgeState.PURGED, reason))
        elif found == "restored":
            reason = f"reconciled: found restored after the call of event {event_id} ended"
            close.append(PurgeClosure(package, version, PurgeState.RESTORED, reason))
    return PurgeEffects(tuple(schedule), tuple(close))


def _request_effects(intent: IntentFacts, states: Mapping[str, str]) -> ApprovalEffects:
    """An approved request's execution that ended without an outcome: the request its intent
    claimed is executed if anything it sent took effect, else pending again."""
    request_id = intent.request.get("deletion_request_id")
    if not request_id:
        return ApprovalEffects()
    applied = any(found in ("deleted", "archived") for found in states.values())
    to = RequestState.EXECUTED if applied else RequestState.PENDING
    event_id = intent.entry.event_id
    reason = f"reconciled: the execution of event {event_id} ended without an outcome"
    return ApprovalEffects(
        transitions=(Transition(str(request_id), (RequestState.EXECUTING,), to, reason),)
    )


def _settled_at(intent: IntentFacts, settle_seconds: float) -> datetime | None:
    """When an intent's call can have sent nothing more (its deadline plus the settle time);
    None for an intent that recorded no deadline (written by an older gateway)."""
    if intent.deadline is None:
        return None
    try:
        return parse_time(intent.deadline) + timedelta(seconds=settle_seconds)
    except ValueError:
        return None


def default_replica() -> str:
    """The replica name when none is configured: the host name."""
    return socket.gethostname() or "gateway"
