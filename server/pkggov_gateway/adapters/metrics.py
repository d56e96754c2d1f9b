"""Prometheus metrics (prometheus-client): the Metrics port, on a registry of the gateway's own.

Each gateway has its own CollectorRegistry (several gateways can live in one process, as in
the tests), exported over HTTP at `metrics.listen` with the process collectors (CPU, memory,
open files) and the Python GC collector. Names follow Prometheus conventions: `_total`
counters, `_seconds` histograms, base units.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pkggov_gateway.domain.recovery import PurgeStats

__all__ = ["MetricsServer", "PrometheusMetrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Seconds: from sub-millisecond (a denied call, an audit commit) to the longest deadline."""


class PrometheusMetrics:
    """The Metrics port over prometheus-client, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self._rpcs = Counter(
            "pkggov_rpcs", "RPCs handled, by method and gRPC status code.", ["method", "code"],
            registry=r,
        )  # fmt: skip
        self._rpc_seconds = Histogram(
            "pkggov_rpc_duration_seconds", "Time to handle an RPC, by method.", ["method"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._in_flight = Gauge(
            "pkggov_rpcs_in_flight", "RPCs being handled now.", ["method"], registry=r
        )
        self._decisions = Counter(
            "pkggov_decisions",
            "Per-version decisions: allowed, denied, not_found, status_mismatch.",
            ["outcome"],
            registry=r,
        )
        self._upstream = Counter(
            "pkggov_upstream_calls",
            "Attempts of CodeArtifact operations, by outcome (ok or the error's kind).",
            ["operation", "outcome"],
            registry=r,
        )
        self._upstream_seconds = Histogram(
            "pkggov_upstream_call_duration_seconds", "Time of one CodeArtifact attempt.",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._rate_wait = Histogram(
            "pkggov_rate_limit_wait_seconds",
            "Time an attempt waited for its turn under the rate limit toward CodeArtifact.",
            ["kind"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._rate_refused = Counter(
            "pkggov_rate_limit_refused",
            "Attempts refused because their turn would come after the deadline.",
            ["kind"],
            registry=r,
        )
        self._audit_seconds = Histogram(
            "pkggov_audit_commit_duration_seconds",
            "Time to durably commit an audit entry the call waits for, by kind.",
            ["kind"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._chain_lock_wait = Histogram(
            "pkggov_audit_chain_lock_wait_seconds",
            "Per group commit: time to get the audit chain's lock (shared by a fleet).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._group_commit = Histogram(
            "pkggov_audit_group_commit_seconds",
            "Per group commit: from reading the chain's tail (lock held) to the commit's answer.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._group_entries = Histogram(
            "pkggov_audit_group_commit_entries",
            "Entries per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        self._audit_failures = Counter(
            "pkggov_audit_commit_failures",
            "Audit commits that failed (an intent: the call was refused).",
            ["kind"],
            registry=r,
        )
        self._audit_up = Gauge(
            "pkggov_audit_store_up", "1 while the audit store commits, else 0.", registry=r
        )
        self._reloads = Counter(
            "pkggov_policy_reloads", "Policy reloads, by result (ok, failed).", ["result"],
            registry=r,
        )  # fmt: skip
        for result in ("ok", "failed"):
            self._reloads.labels(result)  # exported at 0 before the first reload
        self._purges = Counter(
            "pkggov_purges",
            "Pending purges ended by the purge worker (purged, cancelled) or failed and "
            "retried later (failed).",
            ["result"],
            registry=r,
        )
        for result in ("purged", "cancelled", "failed"):
            self._purges.labels(result)
        self._cleanup_versions = Counter(
            "pkggov_cleanup_versions",
            "Planned deletions of cleanup jobs, by result (deleted, archived, plan_changed, "
            "denied, awaiting_approval, failed).",
            ["result"],
            registry=r,
        )
        self._cleanup_jobs = Counter(
            "pkggov_cleanup_jobs",
            "Cleanup jobs ended, by state (succeeded, cancelled, failed).",
            ["state"],
            registry=r,
        )
        for state in ("succeeded", "cancelled", "failed"):
            self._cleanup_jobs.labels(state)
        self._purges_pending = Gauge(
            "pkggov_purges_pending", "Archived versions awaiting their purge.", registry=r
        )
        self._purges_due = Gauge(
            "pkggov_purges_due", "Pending purges whose recovery window has ended.", registry=r
        )
        self._purges_overdue = Gauge(
            "pkggov_purges_overdue_seconds",
            "How long the oldest due purge has been due (0 when none is).",
            registry=r,
        )
        self._webhooks = Counter(
            "pkggov_webhook_deliveries",
            "Webhook delivery attempts, by event kind and outcome (delivered, http_status, "
            "timeout, tls, connection, invalid).",
            ["kind", "outcome"],
            registry=r,
        )
        self._webhook_seconds = Histogram(
            "pkggov_webhook_duration_seconds",
            "Time of one webhook delivery attempt.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._stream_limits = Counter(
            "pkggov_stream_limits",
            "Streaming calls refused (budget, peer) or ended (idle, max_age) by their limits; "
            "unary calls ended waiting for their message (message_peer, message_budget, "
            "message_late).",
            ["reason"],
            registry=r,
        )
        for reason in (
            "budget",
            "peer",
            "idle",
            "max_age",
            "message_peer",
            "message_budget",
            "message_late",
        ):
            self._stream_limits.labels(reason)
        self._tokens = Counter(
            "pkggov_token_verifications",
            "Bearer tokens verified (result ok) or refused (result: why), by configured issuer "
            'name ("-": none identified).',
            ["issuer", "result"],
            registry=r,
        )
        self._jwks_fetches = Counter(
            "pkggov_jwks_fetches",
            "Fetches of an issuer's signing keys (JWKS), by result (ok, failed).",
            ["issuer", "result"],
            registry=r,
        )
        self._jwks_success = Gauge(
            "pkggov_jwks_last_success_timestamp_seconds",
            "When an issuer's keys were last fetched successfully (Unix time).",
            ["issuer"],
            registry=r,
        )
        self._jwks_failure = Gauge(
            "pkggov_jwks_last_failure_timestamp_seconds",
            "When a fetch of an issuer's keys last failed (Unix time).",
            ["issuer"],
            registry=r,
        )
        self._jwks_state = _JwksState()
        r.register(self._jwks_state)

    def rpc_started(self, method: str) -> None:
        """Count a call in flight."""
        self._in_flight.labels(method).inc()

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """Count the call by code and time it."""
        self._in_flight.labels(method).dec()
        self._rpcs.labels(method, code).inc()
        self._rpc_seconds.labels(method).observe(seconds)

    def decisions(self, outcomes: Mapping[str, int]) -> None:
        """Count one call's per-version decisions."""
        for outcome, count in outcomes.items():
            self._decisions.labels(outcome).inc(count)

    def upstream_call(self, operation: str, outcome: str, seconds: float) -> None:
        """Count and time one CodeArtifact attempt."""
        self._upstream.labels(operation, outcome).inc()
        self._upstream_seconds.labels(operation).observe(seconds)

    def rate_limit_wait(self, kind: str, seconds: float, *, refused: bool) -> None:
        """Time a wait for a turn, or count a refusal."""
        if refused:
            self._rate_refused.labels(kind).inc()
        else:
            self._rate_wait.labels(kind).observe(seconds)

    def audit_commit(self, kind: str, seconds: float, *, ok: bool) -> None:
        """Time a commit, or count a failure."""
        if ok:
            self._audit_seconds.labels(kind).observe(seconds)
        else:
            self._audit_failures.labels(kind).inc()

    def audit_group_commit(self, entries: int, wait_seconds: float, hold_seconds: float) -> None:
        """Time a group commit's wait for the chain lock and its hold; count its entries."""
        self._chain_lock_wait.observe(wait_seconds)
        self._group_commit.observe(hold_seconds)
        self._group_entries.observe(entries)

    def audit_healthy(self, healthy: bool) -> None:
        """Set the store's health gauge."""
        self._audit_up.set(1 if healthy else 0)

    def policy_reload(self, *, ok: bool) -> None:
        """Count a reload by result."""
        self._reloads.labels("ok" if ok else "failed").inc()

    def purges_done(self, purged: int, cancelled: int, failed: int) -> None:
        """Count a purge worker pass's results."""
        for result, count in (("purged", purged), ("cancelled", cancelled), ("failed", failed)):
            if count:
                self._purges.labels(result).inc(count)

    def cleanup_versions(self, results: Mapping[str, int]) -> None:
        """Count a cleanup job step's per-version results."""
        for result, count in results.items():
            if count:
                self._cleanup_versions.labels(result).inc(count)

    def cleanup_job_ended(self, state: str) -> None:
        """Count a cleanup job that ended in `state`."""
        self._cleanup_jobs.labels(state).inc()

    def purges_pending(self, stats: PurgeStats, now: datetime) -> None:
        """Set the pending-purge gauges."""
        self._purges_pending.set(stats.pending)
        self._purges_due.set(stats.due)
        oldest = stats.oldest_due
        self._purges_overdue.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    def webhook_attempt(self, kind: str, outcome: str, seconds: float) -> None:
        """Count and time a webhook delivery attempt."""
        self._webhooks.labels(kind, outcome).inc()
        self._webhook_seconds.observe(seconds)

    def stream_limited(self, reason: str) -> None:
        """Count a stream refused or ended, or a unary call ended, by its limits."""
        self._stream_limits.labels(reason).inc()

    def token_checked(self, issuer: str, result: str) -> None:
        """Count a bearer token verified or refused."""
        self._tokens.labels(issuer, result).inc()

    def jwks_fetched(self, issuer: str, *, ok: bool, keys: int, usable_seconds: float) -> None:
        """Count a JWKS fetch, stamp its time, and note the keys usable from now on."""
        self._jwks_fetches.labels(issuer, "ok" if ok else "failed").inc()
        (self._jwks_success if ok else self._jwks_failure).labels(issuer).set_to_current_time()
        self._jwks_state.fetched(issuer, ok=ok, keys=keys, usable_seconds=usable_seconds)


class _JwksState(Collector):
    """`pkggov_jwks_keys` and `pkggov_jwks_age_seconds` by issuer, as of each scrape: keys
    stop counting when their cache lifetime ends, without another fetch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[int, float]] = {}  # issuer -> (keys, usable until)
        self._loaded: dict[str, float] = {}  # issuer -> last successful fetch (monotonic)

    def fetched(self, issuer: str, *, ok: bool, keys: int, usable_seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._keys[issuer] = (keys, now + usable_seconds)
            if ok:
                self._loaded[issuer] = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        keys = GaugeMetricFamily(
            "pkggov_jwks_keys",
            "Signing keys of an issuer usable now (0: none loaded, or their cache ended).",
            labels=["issuer"],
        )
        age = GaugeMetricFamily(
            "pkggov_jwks_age_seconds",
            "Time since an issuer's keys were last fetched successfully.",
            labels=["issuer"],
        )
        with self._lock:
            for issuer, (count, until) in sorted(self._keys.items()):
                keys.add_metric([issuer], count if now < until else 0)
            for issuer, loaded in sorted(self._loaded.items()):
                age.add_metric([issuer], now - loaded)
        yield keys
        yield age


class MetricsServer:
    """The HTTP endpoint that serves a registry at /metrics (prometheus-client's server)."""

    def __init__(self, registry: CollectorRegistry | Collector, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(
            int(port),
            addr=host.strip("[]"),
            registry=registry,
        )

    @property
    def address(self) -> str:
        """HOST:PORT it listens on (the real port when 0 was asked for)."""
        return f"{self._host}:{self._httpd.server_port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
