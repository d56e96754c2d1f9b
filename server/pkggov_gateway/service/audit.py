"""Auditing calls: one event per RPC, write-ahead intents, outcomes, replays, quotas, recovery.

`Auditor.begin` opens an `AuditCall` for each RPC. The edge fills in who called and what was
asked; the delete use case reports its plan and, before sending anything upstream, commits
the *intent* (`before_forwarding`: fail closed; the quota and request_id claim are checked
atomically with it). `finish` writes the *outcome* (or the only entry of a call that sent
nothing). An outcome that cannot be committed after an intent is retried by the store until
it is; a call with nothing committed at all fails instead (fail closed).

`reconcile` closes intents left open by a crash: it reads the versions' state from
CodeArtifact and records what it found.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from pkggov_gateway.domain.audit import (
    SCHEMA_VERSION,
    AppendGuard,
    AuditEventRecord,
    Decision,
    EntryKind,
    NewEntry,
    QuotaCheck,
    RequestIdClaimed,
    StoredEntry,
    canonical,
    format_time,
    parse_time,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    PkggovError,
    QuotaExceededError,
    RequestInProgressError,
    UpstreamNotFoundError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    PackageFormat,
    PackageRef,
    PlannedVersion,
    VersionStatus,
)
from pkggov_gateway.ports import AuditStore, CodeArtifactPort, Metrics, NullMetrics

_NOT_RUN = frozenset({"REQUEST_IN_PROGRESS", "REQUEST_ID_REUSED"})

__all__ = ["AuditCall", "Auditor", "QuotaLimits", "Reconciled", "fingerprint"]

log = structlog.get_logger("pkggov.audit")


def fingerprint(request: Mapping[str, Any]) -> str:
    """What "the same content" means for a request_id: the request without its request_id."""
    content = {k: v for k, v in request.items() if k != "request_id"}
    return hashlib.sha256(canonical(content).encode()).hexdigest()


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
    """Opens AuditCalls on one store; reconciles open intents."""

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

    def begin(self, method: str, rpc_request_id: str, peer: str) -> AuditCall:
        """A new event for one RPC (nothing is written yet)."""
        return AuditCall(self, method, rpc_request_id, peer, self._clock())

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
            intent = event.entries[0]
            recorded = intent.body.get("time", "")
            mine = replica is not None and intent.body.get("replica") == replica
            old = older_than is not None and recorded < format_time(older_than)
            if not (mine or old):
                continue
            settled_at = _settled_at(intent, settle_seconds)
            if not old and settled_at is not None and settled_at > now:
                due = settled_at if due is None else min(due, settled_at)
                continue
            self._reconcile_one(upstream, intent, timeout_seconds)
            done += 1
        return Reconciled(done, due)

    def _reconcile_one(
        self, upstream: CodeArtifactPort, intent: StoredEntry, timeout_seconds: float
    ) -> None:
        request = intent.body.get("request") or {}
        versions = [str(v) for v in intent.body.get("forward") or ()]
        states: dict[str, str] = {}
        detail = ""
        try:
            package = PackageRef(
                domain=str(request["domain"]),
                repository=str(request["repository"]),
                format=PackageFormat(
                    str(request["format"]).removeprefix("PACKAGE_FORMAT_").lower()
                ),
                package=str(request["package"]),
                namespace=request.get("namespace") or None,
                domain_owner=request.get("domain_owner") or None,
            )
            state = upstream.package_state(package, Deadline.after(timeout_seconds))
            for version in versions:
                status = state.statuses.get(version)
                gone = status is None or status is VersionStatus.DELETED
                states[version] = "deleted" if gone else "still_present"
        except (PkggovError, KeyError, ValueError) as err:
            detail = f"CodeArtifact could not be read: {err}"
            if isinstance(err, UpstreamNotFoundError):
                states = dict.fromkeys(versions, "deleted")
                detail = f"the package no longer exists: {err}"
            else:
                states = dict.fromkeys(versions, "unknown")
        body = {
            "schema": SCHEMA_VERSION,
            "event_id": intent.event_id,
            "kind": EntryKind.RECONCILIATION.value,
            "time": format_time(self._clock()),
            "replica": self.store.replica,
            "principal": intent.body.get("principal"),
            "request": request,
            "intent_seq": intent.seq,
            "versions": states,
            "deleted": sum(1 for s in states.values() if s == "deleted"),
            "detail": detail or "the call ended without an outcome (the gateway stopped)",
        }
        self.store.append(NewEntry(body), durable=True)
        log.warning(
            "audit.reconciled", event_id=intent.event_id, versions=states, detail=body["detail"]
        )


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a reconciliation pass did: how many intents it closed, and when the earliest one
    it left for later (this replica's, its call's deadline not yet settled) will be due."""

    count: int
    next_due: datetime | None = None


def _settled_at(intent: StoredEntry, settle_seconds: float) -> datetime | None:
    """When an intent's call can have sent nothing more (its deadline plus the settle time);
    None for an intent that recorded no deadline (written by an older gateway)."""
    deadline = intent.body.get("deadline")
    if not isinstance(deadline, str):
        return None
    try:
        return parse_time(deadline) + timedelta(seconds=settle_seconds)
    except ValueError:
        return None


class AuditCall:
    """The audit event of one RPC, filled in as the call proceeds."""

    def __init__(
        self, auditor: Auditor, method: str, rpc_request_id: str, peer: str, now: datetime
    ) -> None:
        self._auditor = auditor
        self.event_id = str(uuid.uuid4())
        self.method = method
        self.rpc_request_id = rpc_request_id
        self.peer = peer
        self.time = now
        self._started = time.perf_counter()
        self.principal: Principal | None = None
        self.request: dict[str, Any] | None = None
        self._fingerprint: str | None = None
        self.request_id: str | None = None
        self.plan: Mapping[str, PlannedVersion] | None = None
        self.forward: list[str] | None = None
        self.intent: StoredEntry | None = None
        self.aws_request_ids: list[str] = []
        self.inferred: dict[str, str] = {}
        """Versions reported deleted from a NOT_FOUND after a lost answer, with why."""
        self.replay_of: str | None = None
        self.dry_run = False

    # --- filled in by the edge and the servicer ---------------------------------------------

    def set_request(self, request: dict[str, Any]) -> None:
        """The request as received (all fields, proto names)."""
        self.request = request
        self._fingerprint = None
        # AIP-155 retry key: a UUID, so any case names the same one (the servicer refuses
        # other spellings); kept in lower case so that a retry in another case replays.
        self.request_id = str(request.get("request_id") or "").lower() or None
        self.dry_run = bool(request.get("validate_only"))

    def previous(self) -> AuditEventRecord | None:
        """The event that earlier claimed this call's request_id (same principal), if any."""
        if self.request_id is None or self.principal is None:
            return None
        return self._auditor.store.event_by_request_id(self.principal.id, self.request_id)

    def fingerprint(self) -> str:
        """The request's fingerprint (computed once: replay check, intent and outcome)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.request or {})
        return self._fingerprint

    # --- the delete use case's journal ---------------------------------------------------

    def planned(self, plan: Mapping[str, PlannedVersion]) -> None:
        """The per-version decisions (recorded in the intent and the outcome)."""
        self.plan = dict(plan)

    def check_quota(self, groups: Sequence[str], versions: int) -> None:
        """For a dry run: fail as the real call would if the quota is used up (reads only)."""
        if self.principal is None:
            return
        quota = self._auditor.quotas.check_for(self.principal.id, groups)
        if quota is None:
            return
        used, retry = self._auditor.store.quota_usage(quota)
        if used + versions > quota.limit:
            raise QuotaExceededError(quota.subject, quota.limit, used, versions, retry)

    def before_forwarding(
        self, groups: Sequence[str], versions: Sequence[str], deadline: Deadline
    ) -> None:
        """Commit the intent: nothing may be sent upstream before this returns.

        Raises AuditUnavailableError (fail closed), QuotaExceededError, RequestInProgressError.
        """
        self.forward = list(versions)
        principal = self.principal
        quota = None
        if principal is not None:
            quota = self._auditor.quotas.check_for(principal.id, groups)
        body = self._base(EntryKind.INTENT)
        body["request_id"] = self.request_id
        body["fingerprint"] = self.fingerprint()
        body["decisions"] = self._decisions()
        body["forward"] = self.forward
        # Nothing of this call is sent upstream after its deadline: reconciliation after a
        # crash waits for it (plus a settle time), so it reads what the call left behind.
        body["deadline"] = format_time(
            datetime.now(UTC) + timedelta(seconds=max(0.0, deadline.remaining()))
        )
        guard = AppendGuard(request_id=self.request_id, quota=quota)
        try:
            self.intent = self._auditor.append(NewEntry(body), guard=guard)
        except RequestIdClaimed as duplicate:
            raise RequestInProgressError(
                self.request_id or "", duplicate.event.event_id
            ) from duplicate

    # --- the end --------------------------------------------------------------------------

    def finish(
        self,
        *,
        code: str,
        reason: str,
        message: str,
        response: Mapping[str, Any] | None,
        status_details: str | None,
        error_metadata: Mapping[str, str] | None = None,
    ) -> StoredEntry:
        """Write the outcome (or the only entry). Raises AuditUnavailableError when it cannot
        be committed; after an intent, the store keeps retrying it in the background."""
        body = self._base(EntryKind.OUTCOME)
        if self.intent is None:
            # Only a call that ran the request claims its request_id; a replay or a refused
            # retry (in progress, reused id) must not take the id from the call that ran.
            ran = self.replay_of is None and reason not in _NOT_RUN
            body["request_id"] = self.request_id if ran else None
            body["fingerprint"] = self.fingerprint() if self.request is not None else None
            body["decisions"] = self._decisions()
        else:
            body["intent_seq"] = self.intent.seq
        body["decision"] = self._decision(code, reason, response).value
        body["status"] = {
            "code": code,
            "reason": reason,
            "message": message,
            "details": status_details,
            "metadata": dict(error_metadata or {}),
        }
        body["response"] = dict(response) if response is not None else None
        body["upstream"] = {
            "aws_request_ids": self.aws_request_ids,
            "versions": _upstream_versions(response, self.inferred),
        }
        body["deleted"] = len((response or {}).get("successful_versions") or {})
        body["duration_ms"] = round((time.perf_counter() - self._started) * 1000, 3)
        if self.replay_of is not None:
            body["replay_of"] = self.replay_of
        return self._auditor.append(NewEntry(body), durable=self.intent is not None)

    def _base(self, kind: EntryKind) -> dict[str, Any]:
        principal = self.principal
        return {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "kind": kind.value,
            "time": format_time(self.time if kind is EntryKind.INTENT else datetime.now(UTC)),
            "received": format_time(self.time),
            "replica": self._auditor.store.replica,
            "rpc": {
                "method": self.method,
                "request_id": self.rpc_request_id,
                "peer": self.peer,
            },
            "principal": (
                {"id": principal.id, "auth_method": principal.method.value}
                if principal is not None
                else None
            ),
            "request": self.request,
        }

    def _decisions(self) -> dict[str, Any] | None:
        if self.plan is None:
            return None
        return {
            version: {
                "outcome": planned.outcome.value,
                "policy_ids": list(planned.policy_ids),
                "message": planned.message,
                "status": planned.status.value if planned.status is not None else None,
                "is_latest": planned.is_latest,
            }
            for version, planned in self.plan.items()
        }

    def _decision(self, code: str, reason: str, response: Mapping[str, Any] | None) -> Decision:
        if self.replay_of is not None:
            return Decision.REPLAYED
        if code == "OK":
            if not self.method.endswith("/DeletePackageVersions"):
                return Decision.READ
            if self.dry_run:
                return Decision.DRY_RUN
            failed = (response or {}).get("failed_versions") or {}
            if any(f.get("error_code") == "NOT_ALLOWED" for f in failed.values()):
                return Decision.PARTIAL
            return Decision.ALLOWED
        if code == "UNAUTHENTICATED":
            return Decision.UNAUTHENTICATED
        if code == "INVALID_ARGUMENT" and reason in {
            "INVALID_REQUEST",
            "MALFORMED_REQUEST",
            "REQUEST_ID_REUSED",
        }:
            return Decision.INVALID
        if reason in {"POLICY_DENIED", "VERSION_LIMIT_EXCEEDED", "QUOTA_EXCEEDED"}:
            return Decision.DENIED
        return Decision.FAILED


def _upstream_versions(
    response: Mapping[str, Any] | None, inferred: Mapping[str, str]
) -> dict[str, Any]:
    """Per version, what CodeArtifact (or the gateway) reported in the response; a version
    reported deleted from a NOT_FOUND after a lost answer says so in `inferred`."""
    if not response:
        return {}
    versions: dict[str, Any] = {}
    for version, info in (response.get("successful_versions") or {}).items():
        versions[version] = {"result": "deleted", **info}
        if version in inferred:
            versions[version]["inferred"] = inferred[version]
    for version, info in (response.get("failed_versions") or {}).items():
        versions[version] = {"result": "failed", **info}
    return versions


def default_replica() -> str:
    """The replica name when none is configured: the host name."""
    return socket.gethostname() or "gateway"
