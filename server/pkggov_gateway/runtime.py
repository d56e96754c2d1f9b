"""The running gateway's lifecycle: start (reconcile, serve), the audit watcher, health, policy
reload and stop.

`bootstrap.build_gateway` wires a `Gateway` from settings; this module builds no adapter.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from pkggov_gateway import __version__
from pkggov_gateway.adapters.cedar_source import PolicyLoadError
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.startup import cause_of, store_error

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from pkggov_emulator import Emulator
    from pkggov_gateway.adapters.cedar import CedarPolicyEngine
    from pkggov_gateway.adapters.codeartifact import BotoCodeArtifact
    from pkggov_gateway.adapters.metrics import MetricsServer, PrometheusMetrics
    from pkggov_gateway.adapters.package_locks import (
        FilePackageLocks,
        LocalPackageLocks,
        PostgresPackageLocks,
    )
    from pkggov_gateway.adapters.sql import SqlAuditStore
    from pkggov_gateway.adapters.tokens import TokenVerifier
    from pkggov_gateway.adapters.webhooks import WebhookSender
    from pkggov_gateway.api.server import GrpcServer
    from pkggov_gateway.config import Settings
    from pkggov_gateway.domain.deadline import DrainSignal
    from pkggov_gateway.service.approvals import ApprovalDesk
    from pkggov_gateway.service.audit import Auditor, Reconciled
    from pkggov_gateway.service.cleanup_jobs import CleanupRunner
    from pkggov_gateway.service.purge_worker import PurgeWorker

__all__ = ["Gateway", "freeze_startup_heap"]

JWKS_CHECK_SECONDS = 10.0
"""How often the token issuers' keys are checked for a refresh (each issuer refreshes past half
its cache lifetime)."""

log = structlog.get_logger("pkggov.runtime")


@dataclasses.dataclass
class Gateway:
    """A wired gateway: its gRPC server and what must be closed with it.

    `serve_metrics` starts the Prometheus endpoint at `start()` (None when switched off),
    raising StartupError naming metrics.listen when it cannot listen.
    """

    settings: Settings
    server: GrpcServer
    chunk_executor: ThreadPoolExecutor
    drain: DrainSignal
    policy: CedarPolicyEngine
    audit_store: SqlAuditStore
    auditor: Auditor
    upstream: BotoCodeArtifact
    metrics: PrometheusMetrics
    serve_metrics: Callable[[], MetricsServer | None]
    emulator: Emulator | None = None
    metrics_server: MetricsServer | None = None
    package_locks: LocalPackageLocks | FilePackageLocks | PostgresPackageLocks | None = None
    purge_worker: PurgeWorker | None = None
    approvals: ApprovalDesk | None = None
    webhooks: WebhookSender | None = None
    token_verifier: TokenVerifier | None = None
    cleanup_runner: CleanupRunner | None = None
    sweeps_orphans: bool = True
    """Whether this gateway also reconciles other replicas' intents past
    audit.orphan_after_seconds (its own are always reconciled once settled). Of the workers of
    one replica (server.workers) only the first does, so that they do not race to close the
    same orphan (the second would read CodeArtifact for nothing: its reconciliation is
    refused, the event being closed already)."""
    _sender: threading.Thread | None = None
    _cleaner: threading.Thread | None = None
    _stopping: threading.Event = dataclasses.field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _purger: threading.Thread | None = None

    @property
    def address(self) -> str:
        """HOST:PORT the gRPC server listens on."""
        return self.server.address

    @property
    def metrics_address(self) -> str | None:
        """HOST:PORT of the Prometheus endpoint once started (None when switched off)."""
        return self.metrics_server.address if self.metrics_server is not None else None

    def start(self) -> None:
        """Reconcile intents a crash left open, start serving, and watch the audit store.

        Raises StartupError naming the setting (audit.store, metrics.listen) that prevents
        it, having released everything (the process can exit).
        """
        try:
            self._start()
        except BaseException:
            self.server.stop(0)
            self._release()
            raise

    def _start(self) -> None:
        try:
            reconciled = self._reconcile()
        except AuditUnavailableError as error:
            cause = f"cannot reconcile open intents: {cause_of(error)}"
            raise store_error(self.settings, cause) from error
        if reconciled.count or reconciled.next_due:
            log.warning(
                "audit.reconciled_at_start",
                events=reconciled.count,
                pending_until=reconciled.next_due.isoformat() if reconciled.next_due else None,
            )
        self.metrics_server = self.serve_metrics()
        self.metrics.audit_healthy(True)
        self.server.start()
        self._watcher = threading.Thread(
            target=self._watch,
            args=(reconciled.next_due,),
            name="pkggov-audit-watch",
            daemon=True,
        )
        self._watcher.start()
        tasks = self._background_tasks()
        if tasks:
            self._purger = threading.Thread(
                target=self._background, args=(tasks,), name="pkggov-background", daemon=True
            )
            self._purger.start()
        if self.webhooks is not None:
            # A thread of its own: a slow receiver must not hold up the purge worker.
            interval = self.settings.webhooks.interval_seconds
            self._sender = threading.Thread(
                target=self._background,
                args=([("webhooks", interval, self.webhooks.run_once)],),
                name="pkggov-webhooks",
                daemon=True,
            )
            self._sender.start()
        if self.cleanup_runner is not None:
            # A thread of its own: a long cleanup job must not hold up purges or expiries.
            interval = self.settings.cleanup.interval_seconds
            self._cleaner = threading.Thread(
                target=self._background,
                args=([("cleanup", interval, self.cleanup_runner.run_once)],),
                name="pkggov-cleanup",
                daemon=True,
            )
            self._cleaner.start()
        log.info(
            "gateway.started",
            address=self.address,
            metrics=self.metrics_address,
            version=__version__,
            audit=self.audit_store.dialect.description,
            replica=self.audit_store.replica,
        )

    def _reconcile(self) -> Reconciled:
        """Reconcile this replica's settled open intents and (`sweeps_orphans`) any replica's
        stale ones."""
        audit = self.settings.audit
        older_than = self.auditor.now() - timedelta(seconds=audit.orphan_after_seconds)
        return self.auditor.reconcile(
            self.upstream,
            replica=self.audit_store.replica,
            older_than=older_than if self.sweeps_orphans else None,
            settle_seconds=audit.reconcile_settle_seconds,
        )

    def _watch(self, first_due: datetime | None = None) -> None:
        """Mirror the audit store's health in gRPC health; reconcile open intents every
        interval, and as soon as one left unsettled is due."""
        interval = timedelta(seconds=self.settings.audit.reconcile_interval_seconds)
        healthy = True
        next_sweep = self.auditor.now() + interval
        if first_due is not None:
            next_sweep = min(next_sweep, first_due)
        while not self._stopping.wait(0.25):
            now_healthy = self.audit_store.healthy()
            if now_healthy != healthy:
                healthy = now_healthy
                self.server.set_audit_health(healthy=healthy)
                self.metrics.audit_healthy(healthy)
            if healthy and self.auditor.now() >= next_sweep:
                next_sweep = self.auditor.now() + interval
                try:
                    due = self._reconcile().next_due
                except Exception:
                    log.exception("audit.reconcile_failed")
                    continue
                if due is not None:
                    next_sweep = min(next_sweep, due)

    def _background_tasks(self) -> list[tuple[str, float, Callable[[], object]]]:
        """What every replica runs periodically: the purge worker, the approval expiry sweep
        (name, interval in seconds, the pass)."""
        tasks: list[tuple[str, float, Callable[[], object]]] = []
        if self.purge_worker is not None:
            interval = self.settings.recovery.worker_interval_seconds
            tasks.append(("purge", interval, self.purge_worker.run_once))
        if self.approvals is not None:
            interval = self.settings.approvals.sweep_interval_seconds
            tasks.append(("approvals", interval, self.approvals.sweep))
        if self.token_verifier is not None:  # keys refreshed before their cache runs out
            tasks.append(("jwks", JWKS_CHECK_SECONDS, self._check_token_keys))
        return tasks

    def _check_token_keys(self) -> None:
        """Refresh issuers' keys that are due, and report their state in health."""
        verifier = self.token_verifier
        assert verifier is not None  # noqa: S101 - a task only when there is one
        verifier.refresh_due()
        self.server.set_token_health(verifier.ready())

    def _background(self, tasks: list[tuple[str, float, Callable[[], object]]]) -> None:
        """Run each task at start-up and then every its interval (real time), until stopped
        or draining; a failed pass is logged and tried again at its next turn."""
        due = dict.fromkeys((name for name, _, _ in tasks), time.monotonic())
        while not self.drain.draining:
            now = time.monotonic()
            for name, interval, run in tasks:
                if due[name] <= now:
                    try:
                        run()
                    except Exception:
                        log.exception("background.pass_failed", task=name)
                    due[name] = time.monotonic() + interval
            if self._stopping.wait(max(0.0, min(due.values()) - time.monotonic())):
                return

    def reload_policy(self) -> bool:
        """Reload schema, policies and entities (SIGHUP). A bad new set keeps the old one in
        force, is logged, and turns the `pkggov.policy` health status NOT_SERVING."""
        try:
            self.policy.reload()
        except PolicyLoadError as error:
            log.error("policy.reload_failed", error=str(error), note="previous policy in force")
            self.server.set_policy_health(healthy=False)
            self.metrics.policy_reload(ok=False)
            return False
        log.info("policy.reloaded", policies=self.policy.policy_ids())
        self.metrics.policy_reload(ok=True)
        self.server.set_policy_health(healthy=True)
        return True

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: start no new upstream call, report NOT_SERVING, refuse new calls,
        let in-flight calls finish (their current upstream attempt at most), then release."""
        seconds = self.settings.server.grace_seconds if grace is None else grace
        log.info("gateway.stopping", grace_s=seconds)
        self.drain.start()
        self.server.stop(seconds)
        self._release()
        log.info("gateway.stopped")

    def _release(self) -> None:
        """Release all but the gRPC server: threads, the store, the metrics server, the
        emulator (silently: a failed start reports only its StartupError)."""
        self.chunk_executor.shutdown(wait=True, cancel_futures=True)
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self._purger is not None:
            self._purger.join()
        if self._sender is not None:
            self._sender.join()
        if self._cleaner is not None:
            self._cleaner.join()
        if self.webhooks is not None:
            self.webhooks.close()
        self.audit_store.close()
        if self.package_locks is not None:
            self.package_locks.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.emulator is not None:
            self.emulator.stop()


def freeze_startup_heap() -> None:
    """Move everything start-up made (boto3's and botocore's models, the protobuf descriptors,
    the policy set: most of the heap) out of the cyclic garbage collector's sight, for the
    process's life (`gc.freeze`). Its full collections otherwise walk all of it again and
    again, in the middle of the allocation bursts of large requests (measured: up to 10 % of
    the gateway's CPU on 1,000-version requests). For a serving process only, once it
    started: a test process that starts many gateways would keep each one's cycles."""
    gc.collect()
    gc.freeze()
