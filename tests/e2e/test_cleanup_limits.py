"""Stored cleanup plans are bounded: a principal has at most cleanup.max_open_plans unexpired
plans (RESOURCE_EXHAUSTED / CLEANUP_PLAN_LIMIT beyond), and plans are pruned
cleanup.plan_retention_days after they expire, unless a job still applies them."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, load_demo_seed
from pkggov_gateway.domain.errors import UpstreamAccessDeniedError
from pkggov_gateway.runtime import Gateway
from tests.e2e.cleanup_helpers import (
    Package,
    codeartifact_client,
    create_repository,
    seed,
    upstream_versions,
)
from tests.e2e.harness import (
    cleanup_stub_for,
    gateway_settings,
    rich_error,
    running_gateway,
    wait_for,
)


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


@pytest.fixture
def clock() -> Clock:
    """The gateway's clock."""
    return Clock()


@pytest.fixture
def gateway(clock: Clock) -> Iterator[Gateway]:
    """A gateway on the demo data whose principals may hold two unexpired plans, each
    applicable for an hour and kept a day after that."""
    with Emulator(seed=load_demo_seed()) as emulator:
        settings = gateway_settings(
            emulator.endpoint_url,
            policy={},
            cleanup={"max_open_plans": 2, "plan_ttl_hours": 1.0, "plan_retention_days": 1.0},
        )
        with running_gateway(settings, clock=clock) as running:
            yield running


PLAN = pb.PlanCleanupRequest(
    domain="demo",
    repository="dev-shared",
    format=pb.PACKAGE_FORMAT_NPM,
    package="left-pad",
    rule=pb.CleanupRule(keep_newest=2),
)


def test_a_third_open_plan_is_refused_until_one_expires(gateway: Gateway, clock: Clock) -> None:
    """Two plans, then CLEANUP_PLAN_LIMIT for alice (not for dave); an hour later she plans."""
    with cleanup_stub_for(gateway, "alice") as alice, cleanup_stub_for(gateway, "dave") as dave:
        alice.PlanCleanup(PLAN, timeout=30)
        alice.PlanCleanup(PLAN, timeout=30)
        with pytest.raises(grpc.RpcError) as raised:
            alice.PlanCleanup(PLAN, timeout=30)
        error = rich_error(raised.value)
        assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "CLEANUP_PLAN_LIMIT") == (
            error.code,
            error.reason,
        )
        assert dave.PlanCleanup(PLAN, timeout=30).plan.plan_id
        clock.advance(timedelta(hours=1))
        assert alice.PlanCleanup(PLAN, timeout=30).plan.plan_id


def test_expired_plans_are_pruned_after_their_retention(gateway: Gateway, clock: Clock) -> None:
    """A plan is readable until a day after it expired; then a runner pass prunes it
    (GetCleanupPlan: NOT_FOUND / CLEANUP_PLAN_NOT_FOUND)."""
    with cleanup_stub_for(gateway, "alice") as alice:
        plan_id = alice.PlanCleanup(PLAN, timeout=30).plan.plan_id
        clock.advance(timedelta(hours=1, minutes=1))
        read = alice.GetCleanupPlan(pb.GetCleanupPlanRequest(plan_id=plan_id), timeout=30)
        assert plan_id == read.plan.plan_id  # expired, still kept
        clock.advance(timedelta(days=1))

        def pruned() -> bool:
            try:
                alice.GetCleanupPlan(pb.GetCleanupPlanRequest(plan_id=plan_id), timeout=30)
            except grpc.RpcError as error:
                return rich_error(error).reason == "CLEANUP_PLAN_NOT_FOUND"
            return False

        assert wait_for(pruned, timeout=10.0)


def test_a_plan_runs_once_applying_it_again_gives_its_job(clock: Clock) -> None:
    """ApplyCleanup of a plan with a job queued (or running, or done) answers that job: no
    second job, no second deletion request; once that job is cancelled, the plan may run
    again. (The runner here looks for jobs only at start-up, so the job stays queued.)"""
    with Emulator(seed=load_demo_seed()) as emulator:
        settings = gateway_settings(
            emulator.endpoint_url, policy={}, cleanup={"interval_seconds": 3600.0}
        )
        with (
            running_gateway(settings, clock=clock) as idle,
            cleanup_stub_for(idle, "alice") as alice,
        ):
            plan = alice.PlanCleanup(PLAN, timeout=30).plan
            apply = pb.ApplyCleanupRequest(plan_id=plan.plan_id)
            first = alice.ApplyCleanup(apply, timeout=30).job
            assert first.job_id == alice.ApplyCleanup(apply, timeout=30).job.job_id
            cancel = pb.CancelCleanupJobRequest(job_id=first.job_id)
            cancelled = alice.CancelCleanupJob(cancel, timeout=30).job
            assert pb.CLEANUP_JOB_STATE_CANCELLED == cancelled.state
            assert first.job_id != alice.ApplyCleanup(apply, timeout=30).job.job_id


def test_a_failed_job_reports_what_its_last_package_deleted(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that fails in the middle of a package (its second call refused, no retries left)
    reports the versions the first call deleted as deleted, the others as failed."""
    package = Package("npm", "acme", "nightly", repository="dev-x")
    now = clock()
    with Emulator(seed=load_demo_seed()) as emulator:
        client = codeartifact_client(emulator)
        create_repository(client, "dev-x")
        seed(
            emulator,
            package,
            [("2.0.0", "Published", now - timedelta(days=1))]
            + [
                (f"1.0.0-n.{i}", "Unlisted", now - timedelta(days=100, minutes=i))
                for i in range(150)
            ],
        )
        settings = gateway_settings(
            emulator.endpoint_url,
            policy={},
            cleanup={"interval_seconds": 3600.0, "max_attempts": 1},
        )
        with running_gateway(settings, clock=clock) as idle, cleanup_stub_for(idle, "ci-bot") as ci:
            plan = ci.PlanCleanup(
                pb.PlanCleanupRequest(**package.fields(), rule=pb.CleanupRule(keep_newest=1)),
                timeout=30,
            ).plan
            assert (150, 150) == (plan.delete_count, plan.allowed_count)
            job = ci.ApplyCleanup(pb.ApplyCleanupRequest(plan_id=plan.plan_id), timeout=30).job
            real = idle.upstream.delete_package_versions
            calls: list[int] = []

            def second_refused(*args: Any, **kwargs: Any) -> Any:
                calls.append(1)
                if len(calls) >= 2:
                    raise UpstreamAccessDeniedError("refused (the test's second call)")
                return real(*args, **kwargs)

            monkeypatch.setattr(idle.upstream, "delete_package_versions", second_refused)
            assert idle.cleanup_runner is not None
            assert idle.cleanup_runner.run_once() is True
            read = ci.GetCleanupJob(
                pb.GetCleanupJobRequest(job_id=job.job_id, include_results=True), timeout=30
            )
        results = Counter(v.result for p in read.results for v in p.versions)
        assert pb.CLEANUP_JOB_STATE_FAILED == read.job.state
        assert {pb.CLEANUP_RESULT_DELETED: 100, pb.CLEANUP_RESULT_FAILED: 50} == dict(results)
        assert (100, 50) == (read.job.versions_deleted, read.job.versions_failed)
        assert 51 == len(upstream_versions(client, package))


@pytest.mark.parametrize(
    ("principal", "repository"), [("bob", "dev-shared"), ("ci-bot", "prod-release")]
)
def test_planning_is_authorized_by_policy(
    gateway: Gateway, principal: str, repository: str
) -> None:
    """PlanCleanup is the Cedar action PlanCleanup on the repository: bob (no group) may plan
    nothing, CI only dev-* repositories; refused with POLICY_DENIED before anything is read
    (no plan stored)."""
    request = pb.PlanCleanupRequest(
        domain="demo", repository=repository, rule=pb.CleanupRule(keep_newest=2)
    )
    with cleanup_stub_for(gateway, principal) as caller, pytest.raises(grpc.RpcError) as raised:
        caller.PlanCleanup(request, timeout=30)
    error = rich_error(raised.value)
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    assert 0 == gateway.audit_store.open_plans(principal, datetime(2000, 1, 1, tzinfo=UTC))
