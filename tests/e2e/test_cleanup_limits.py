"""Stored cleanup plans are bounded: a principal has at most cleanup.max_open_plans unexpired
plans (RESOURCE_EXHAUSTED / CLEANUP_PLAN_LIMIT beyond), and plans are pruned
cleanup.plan_retention_days after they expire, unless a job still applies them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, load_demo_seed
from pkggov_gateway.runtime import Gateway
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
    """Two plans, then CLEANUP_PLAN_LIMIT for alice (not for bob); an hour later she plans."""
    with cleanup_stub_for(gateway, "alice") as alice, cleanup_stub_for(gateway, "bob") as bob:
        alice.PlanCleanup(PLAN, timeout=30)
        alice.PlanCleanup(PLAN, timeout=30)
        with pytest.raises(grpc.RpcError) as raised:
            alice.PlanCleanup(PLAN, timeout=30)
        error = rich_error(raised.value)
        assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "CLEANUP_PLAN_LIMIT") == (
            error.code,
            error.reason,
        )
        assert bob.PlanCleanup(PLAN, timeout=30).plan.plan_id
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
