"""Cleanup jobs under faults: a gateway killed (SIGKILL) in the middle of a job and another one
resuming it on the same store, and two replicas on one PostgreSQL store taking jobs at once.

What happened is read where it is observable: CodeArtifact (boto3 on the emulator, and the
emulator's call log: how many applied DeletePackageVersions calls named each version), the
job (GetCleanupJob) and the audit record (its entries, and the chain verifier).
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.adapters.sql import SqlAuditStore
from pkggov_gateway.domain.cleanup import CLEANUP_JOB_METHOD
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.e2e.audit_helpers import reopened_store, row_body
from tests.e2e.cleanup_helpers import (
    RUNNER,
    STOP_POINTS,
    Cleanup,
    Package,
    applied_deletions,
    as_deleted,
    child_gateway,
    codeartifact_client,
    create_repository,
    planned_deletions,
    result_map,
    seed,
    upstream_versions,
)
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    GatewayFactory,
    external_upstream_env,
    gateway_settings,
    running_gateway,
    wait_for,
)
from tests.e2e.test_recoverable_delete import Clock

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
LATENCY = 0.5
"""How long CodeArtifact holds each deletion in the binary's test (seconds)."""
VERSIONS = [f"1.0.{i}" for i in range(12)]
"""Each package's versions; "keep the newest 2" deletes ten of them."""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codeartifact(emulator: Emulator) -> Any:
    """boto3 on the emulator, with demo/dev-x created."""
    client = codeartifact_client(emulator)
    create_repository(client)
    return client


def _packages(emulator: Emulator, clock: Clock, prefix: str, count: int) -> list[Package]:
    packages = [Package("npm", "acme", f"{prefix}-{n}") for n in range(count)]
    for package in packages:
        seed(
            emulator,
            package,
            [(v, "Published", clock.now - (30 - i) * DAY) for i, v in enumerate(VERSIONS)],
        )
    return packages


def _cleanup_events(store: SqlAuditStore) -> list[dict[str, Any]]:
    """Every entry body of the cleanup jobs' deletion calls, in chain order."""
    bodies = [row_body(row) for row in store.iter_rows()]
    events = {
        b["event_id"] for b in bodies if (b.get("rpc") or {}).get("method") == CLEANUP_JOB_METHOD
    }
    return [b for b in bodies if b["event_id"] in events]


def _verified(store: SqlAuditStore) -> None:
    """No intent left open, and the hash chain verifies."""
    assert [] == store.open_intents()
    report = verify(store.iter_rows())
    assert report.ok, report.first_problem


# --- 4. a gateway killed in the middle of a job -------------------------------------------------


@pytest.mark.parametrize("stop", STOP_POINTS)
def test_a_job_killed_mid_apply_is_resumed_without_deleting_anything_twice(
    stop: str,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    tmp_path: Path,
) -> None:
    """A gateway SIGKILLed mid-job is resumed by another: nothing deleted twice, all reported."""
    # A gateway process runs a job over four packages and is killed with SIGKILL at its second
    # DeletePackageVersions (`stop`: before it is sent, or once CodeArtifact applied it). A new
    # gateway on the same SQLite store, an hour later, reconciles the dead one's intent and resumes
    # the job: it SUCCEEDS, reports every planned version DELETED, each was deleted by exactly one
    # applied DeletePackageVersions, the kept ones are all there, and the audit chain verifies with
    # no intent left open.
    packages = _packages(emulator, clock, "crash", 4)
    store = f"sqlite:{tmp_path}/audit.db"
    with child_gateway(
        store,
        emulator.endpoint_url,
        now=clock.now,
        stop=stop,
        at=2,
        replica="crashed",
        log=tmp_path / "child.log",
    ) as child:
        alice = Cleanup(child, "alice")
        response = alice.plan(
            pb.CleanupRule(keep_newest=2),
            domain="demo",
            repository="dev-x",
            package_pattern="crash-*",
        )
        planned = planned_deletions(alice.packages(response.plan.plan_id))
        assert 40 == len(planned)
        job = alice.apply(response.plan)
        stopped_in, number = child.wait_stopped()
        assert (stopped_in, number) == ("crash-1", 2)
        child.kill()
    # Deleted so far, once each: crash-0's ten and, after_send, crash-1's.
    interrupted = Counter(as_deleted(applied_deletions(emulator)).values())
    assert {1: 20 if stop == "after_send" else 10} == dict(interrupted)

    clock.advance(HOUR)  # past the dead replica's lease and its intent's orphan time
    settings = gateway_settings(
        emulator.endpoint_url,
        policy={},
        audit={"store": store, "replica": "survivor"},
        cleanup=RUNNER,
    )
    with running_gateway(settings, clock=clock) as survivor:
        alice = Cleanup(survivor, "alice")
        done = alice.wait(job.job_id)
        assert pb.CLEANUP_JOB_STATE_SUCCEEDED == done.state, done
        assert Counter(dict.fromkeys(planned, 1)) == as_deleted(applied_deletions(emulator))
        for package in packages:
            assert {"1.0.10", "1.0.11"} == set(upstream_versions(codeartifact, package))
        _verified(survivor.audit_store)
        events = _cleanup_events(survivor.audit_store)
        assert {"crashed", "survivor"} >= {body["replica"] for body in events}
        # What the job reports: it deleted all 40 (the 10 of the interrupted call included).
        results = alice.results(job.job_id)
        by_version = {
            (r.package, v.version): (pb.CleanupResult.Name(v.result), v.message)
            for r in results
            for v in r.versions
        }
        wrong = {k: v for k, v in by_version.items() if v[0] != "CLEANUP_RESULT_DELETED"}
        assert {} == wrong
        assert dict.fromkeys(planned, pb.CLEANUP_RESULT_DELETED) == result_map(results)
        assert (4, 40, 40) == (done.packages_done, done.versions_planned, done.versions_deleted)


def test_a_gateway_binary_killed_while_a_deletion_is_in_flight_loses_nothing(
    emulator: Emulator,
    codeartifact: Any,
    tmp_path: Path,
    bin_dir: Path,
) -> None:
    """The gateway binary SIGKILLed with a deletion in flight: the job resumes, nothing twice."""
    # The real `pkggov-gateway` binary runs a job while CodeArtifact holds each deletion for half a
    # second; it is killed with SIGKILL while its second deletion is in CodeArtifact. Another
    # gateway on the same store (its lease and orphan times short) resumes the job: every planned
    # version is deleted exactly once and the chain verifies.
    packages = _packages(emulator, Clock(), "binary", 3)
    store = f"sqlite:{tmp_path}/audit.db"
    env = external_upstream_env(
        emulator.endpoint_url,
        PKGGOV_IDENTITY_MODE="dev",
        PKGGOV_AUDIT_STORE=store,
        PKGGOV_AUDIT_REPLICA="binary",
        PKGGOV_CLEANUP_INTERVAL_SECONDS="0.1",
        PKGGOV_CLEANUP_LEASE_SECONDS="2",
    )
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=LATENCY)
    )
    with spawn_gateway(bin_dir, **env) as process:
        alice = Cleanup(process, "alice")
        response = alice.plan(
            pb.CleanupRule(keep_newest=2),
            domain="demo",
            repository="dev-x",
            package_pattern="binary-*",
        )
        planned = planned_deletions(alice.packages(response.plan.plan_id))
        job = alice.apply(response.plan)
        # The first deletion answered: the second one is on its way (held upstream).
        assert wait_for(lambda: len(emulator.calls("DeletePackageVersions")) >= 1, timeout=20)
        running = alice.job(job.job_id)
        process.proc.kill()
        assert -signal.SIGKILL == process.proc.wait(timeout=10)
        assert (pb.CLEANUP_JOB_STATE_RUNNING, 3) == (running.state, running.packages_total)
        assert running.packages_done <= 1
    emulator.clear_faults()
    settings = gateway_settings(
        emulator.endpoint_url,
        policy={},
        audit={
            "store": store,
            "replica": "survivor",
            # Longer than CodeArtifact holds a call: the deletion in flight when the binary
            # died has landed before anyone reconciles it.
            "orphan_after_seconds": 4 * LATENCY,
            "reconcile_interval_seconds": 0.5,
        },
        cleanup={"interval_seconds": 0.1, "retry_seconds": 0.5},
    )
    with running_gateway(settings) as survivor:
        alice = Cleanup(survivor, "alice")
        done = alice.wait(job.job_id, timeout=60)
        assert pb.CLEANUP_JOB_STATE_SUCCEEDED == done.state, done
        assert Counter(dict.fromkeys(planned, 1)) == as_deleted(applied_deletions(emulator))
        for package in packages:
            assert {"1.0.10", "1.0.11"} == set(upstream_versions(codeartifact, package))
        # The job reports every planned version deleted, the in-flight call's included.
        results = alice.results(job.job_id)
        assert dict.fromkeys(planned, pb.CLEANUP_RESULT_DELETED) == result_map(results)
        assert len(planned) == done.versions_deleted
    with reopened_store(store, "auditor") as reopened:
        _verified(reopened)


# --- 6. two replicas on one PostgreSQL store ---------------------------------------------------


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    return pg_schema_url(pg_schema)


@pytest.fixture
def replicas(
    make_gateway: GatewayFactory, pg_url: str, clock: Clock, codeartifact: Any
) -> Iterator[tuple[Gateway, Gateway]]:
    """Replicas a and b on one PostgreSQL store, the shipped policy, the test clock; their
    runners' own passes run at start-up only (the tests run them)."""
    cleanup = {"interval_seconds": 3600}
    with (
        make_gateway(
            clock=clock, policy={}, audit={"store": pg_url, "replica": "a"}, cleanup=cleanup
        ) as a,
        make_gateway(
            clock=clock, policy={}, audit={"store": pg_url, "replica": "b"}, cleanup=cleanup
        ) as b,
    ):
        yield a, b


def _runner(gateway: Gateway) -> Any:
    runner = gateway.cleanup_runner
    assert runner is not None
    return runner


def _lease_owner(pg_url: str, job_id: str) -> str | None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM cleanup_jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def test_one_job_is_run_by_one_replica_at_a_time(
    replicas: tuple[Gateway, Gateway],
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    pg_url: str,
) -> None:
    """While replica a runs a job, b cannot take it; b's cancel stops it after a's package."""
    # While replica a runs a job (its first deletion held in CodeArtifact), replica b's pass finds
    # nothing to take, and cancelling from b marks it for a; a finishes the package in progress and
    # the job ends CANCELLED; nothing was deleted twice.
    a, b = replicas
    _packages(emulator, clock, "solo", 3)
    alice = Cleanup(a, "alice")
    response = alice.plan(
        pb.CleanupRule(keep_newest=2), domain="demo", repository="dev-x", package_pattern="solo-*"
    )
    job = Cleanup(b, "alice").apply(response.plan)
    emulator.clear_calls()
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0, count=1)
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_runner(a).run_once)
        assert wait_for(lambda: not emulator.faults())  # a's first deletion is upstream
        assert "a" == _lease_owner(pg_url, job.job_id)
        assert _runner(b).run_once() is False
        marked = Cleanup(b, "alice").cancel(job.job_id, "enough")
        assert pb.CLEANUP_JOB_STATE_RUNNING == marked.state
        assert running.result(timeout=30) is True
    done = alice.job(job.job_id)
    assert (pb.CLEANUP_JOB_STATE_CANCELLED, 1, 10) == (
        done.state,
        done.packages_done,
        done.versions_deleted,
    ), done
    assert {1} == set(applied_deletions(emulator).values())
    assert 10 == sum(applied_deletions(emulator).values())
    assert _runner(b).run_once() is False
    outcomes = [body for body in _cleanup_events(a.audit_store) if body["kind"] == "outcome"]
    assert {"a"} == {body["replica"] for body in outcomes}


def test_two_replicas_running_jobs_at_once_delete_each_version_once(
    replicas: tuple[Gateway, Gateway],
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """Two replicas on PostgreSQL share six jobs: one replica per job, each version deleted once."""
    # Six jobs (one package each) on one PostgreSQL store; replicas a and b run passes at once until
    # neither finds work: every job SUCCEEDS, both replicas ran jobs, each job's deletions were all
    # made by one replica, each planned version was deleted exactly once, and the chain verifies.
    a, b = replicas
    packages = _packages(emulator, clock, "shared", 6)
    alice = Cleanup(a, "alice")
    jobs: dict[str, set[Any]] = {}
    for package in packages:
        response = alice.plan(pb.CleanupRule(keep_newest=2), **package.fields())
        planned = planned_deletions(list(response.packages))
        jobs[Cleanup(b, "alice").apply(response.plan).job_id] = planned
    emulator.clear_calls()
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=0.2)
    )
    start = threading.Barrier(2)

    def drain(gateway: Gateway) -> int:
        start.wait(timeout=10)
        ran = 0
        for _ in range(20):
            if not _runner(gateway).run_once(most=1):  # one job a pass
                return ran
            ran += 1
        return ran

    with ThreadPoolExecutor(2) as pool:
        ran = list(pool.map(drain, (a, b)))
    assert 6 == sum(ran)
    assert all(ran), ran  # both took part
    everything: set[Any] = set()
    for job_id, planned in jobs.items():
        done = alice.job(job_id)
        assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, 10) == (done.state, done.versions_deleted), done
        everything |= planned
    assert Counter(dict.fromkeys(everything, 1)) == as_deleted(applied_deletions(emulator))
    bodies = _cleanup_events(a.audit_store)
    job_of = {
        body["event_id"]: str(body["request"]["cleanup_job_id"])
        for body in bodies
        if (body.get("request") or {}).get("cleanup_job_id")
    }
    by_job: dict[str, set[str]] = {}
    for body in bodies:
        if body["kind"] == "outcome":
            by_job.setdefault(job_of[body["event_id"]], set()).add(str(body["replica"]))
    assert set(jobs) == set(by_job)
    assert all(len(replica) == 1 for replica in by_job.values()), by_job
    for package in packages:
        assert {"1.0.10", "1.0.11"} == set(upstream_versions(codeartifact, package))
    _verified(b.audit_store)
