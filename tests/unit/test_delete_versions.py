"""The use case: validation before forwarding, chunks of 100, bounded parallelism, merge rule."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from pkggov_gateway.adapters.package_locks import LocalPackageLocks
from pkggov_gateway.domain.approvals import ApprovalEffects, RequestGuard
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import (
    DeadlineTooShortError,
    DeniedVersion,
    GatewayDrainingError,
    InvalidRequestError,
    PackageBusyError,
    PolicyDeniedError,
    UpstreamNotFoundError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    FailedVersion,
    PackageFormat,
    PackageRef,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.policy import PolicyRequest, VersionDecision
from pkggov_gateway.domain.recovery import PurgeEffects
from pkggov_gateway.domain.validation import RawDeleteRequest
from pkggov_gateway.service.delete_versions import DeleteLimits, DeletePackageVersions
from pkggov_gateway.testing import DELETE, FakeCodeArtifact, FakePackageLocks, FakePolicy

PACKAGE = PackageRef("demo", "dev-shared", PackageFormat.GENERIC, "artifact", "bulk")
"""The package every request of these tests names (see _raw)."""

_Fake = TypeVar("_Fake", bound=FakeCodeArtifact)


def _seeded(fake: _Fake, existing: int = 1001) -> _Fake:
    """`fake` holding versions 1.0.0 ... 1.0.<existing - 1> of PACKAGE, all Published."""
    fake.add_package(PACKAGE, [f"1.0.{i}" for i in range(existing)])
    return fake


ALICE = Principal("alice", AuthMethod.DEV, "ipv4:127.0.0.1:1")


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(8)
    yield pool
    pool.shutdown()


def _raw(count: int) -> RawDeleteRequest:
    return RawDeleteRequest(
        domain="demo",
        repository="dev-shared",
        format=PackageFormat.GENERIC,
        namespace="bulk",
        package="artifact",
        versions=[f"1.0.{i}" for i in range(count)],
    )


@dataclass
class _Bound:
    """The use case with its principal bound, so tests read `execute(raw, deadline)`."""

    use_case: DeletePackageVersions

    def execute(self, raw: RawDeleteRequest, deadline: Deadline) -> DeleteOutcome:
        return self.use_case.execute(raw, ALICE, deadline)


def _use_case(
    fake: FakeCodeArtifact,
    executor: ThreadPoolExecutor,
    parallelism: int = 4,
    policy: FakePolicy | None = None,
) -> _Bound:
    return _Bound(
        DeletePackageVersions(
            fake,
            executor,
            DeleteLimits(max_versions=1000, chunk_parallelism=parallelism),
            policy or FakePolicy(),
            locks=FakePackageLocks(),
        )
    )


def test_invalid_request_is_not_forwarded(executor: ThreadPoolExecutor) -> None:
    """A request that breaks a rule raises InvalidRequestError and calls nothing."""
    fake = _seeded(FakeCodeArtifact())
    with pytest.raises(InvalidRequestError):
        _use_case(fake, executor).execute(_raw(0), Deadline.after(5))
    assert [] == fake.sent()


def test_short_deadline_is_refused_before_calling(executor: ThreadPoolExecutor) -> None:
    """Less time than min_upstream_seconds left: DeadlineTooShortError, nothing sent."""
    fake = _seeded(FakeCodeArtifact())
    with pytest.raises(DeadlineTooShortError):
        _use_case(fake, executor).execute(_raw(3), Deadline.after(0.05))
    assert [] == fake.sent()


def test_up_to_100_versions_is_one_call(executor: ThreadPoolExecutor) -> None:
    """100 distinct versions go upstream in one call."""
    fake = _seeded(FakeCodeArtifact())
    outcome = _use_case(fake, executor).execute(_raw(100), Deadline.after(5))
    assert [100] == [len(c) for c in fake.sent()]
    assert 100 == len(outcome.successful)


def test_single_call_error_propagates(executor: ThreadPoolExecutor) -> None:
    """With one chunk, the upstream error is the call's error."""
    fake = _seeded(FakeCodeArtifact())
    fake.fail_next(DELETE, UpstreamNotFoundError("no such package", resource_type="package"))
    with pytest.raises(UpstreamNotFoundError):
        _use_case(fake, executor).execute(_raw(5), Deadline.after(5))


def test_large_request_is_split_in_order_and_merged(executor: ThreadPoolExecutor) -> None:
    """1,000 versions become ten calls of 100 in request order, merged into one outcome."""
    fake = _seeded(FakeCodeArtifact(delete_delay=0.01))
    outcome = _use_case(fake, executor, parallelism=3).execute(_raw(1000), Deadline.after(5))
    assert [100] * 10 == [len(c) for c in fake.sent()]
    assert {f"1.0.{i}" for i in range(1000)} == {v for c in fake.sent() for v in c}
    assert 1000 == len(outcome.successful)
    assert {} == dict(outcome.failed)
    assert 10 == len(outcome.aws_request_ids)
    assert fake.peak <= 3


def test_failed_chunk_after_successes_does_not_hide_deletions(
    executor: ThreadPoolExecutor,
) -> None:
    """Chunk 2 throttled: chunk 1 reported deleted, chunk 2 SKIPPED, chunk 3 not attempted."""
    fake = _seeded(FakeCodeArtifact())
    fake.fail_next(DELETE, UpstreamThrottledError("slow down"), after=1)
    outcome = _use_case(fake, executor, parallelism=1).execute(_raw(250), Deadline.after(5))
    assert 2 == len(fake.sent())
    assert {f"1.0.{i}" for i in range(100)} == set(outcome.successful)
    assert (
        FailedVersion(VersionErrorCode.SKIPPED, "not deleted: chunk 2 of 3 failed (slow down)")
        == outcome.failed["1.0.150"]
    )
    assert (
        FailedVersion(
            VersionErrorCode.SKIPPED,
            "not attempted: an earlier chunk failed, so chunk 3 of 3 was not sent",
        )
        == outcome.failed["1.0.249"]
    )
    assert 150 == len(outcome.failed)


def test_timed_out_chunk_is_reported_as_outcome_unknown(executor: ThreadPoolExecutor) -> None:
    """A chunk whose outcome is unknown says so in its SKIPPED message."""
    fake = _seeded(FakeCodeArtifact())
    fake.fail_next(DELETE, UpstreamTimeoutError("no answer"), after=1)
    outcome = _use_case(fake, executor, parallelism=1).execute(_raw(200), Deadline.after(5))
    message = outcome.failed["1.0.100"].message
    assert message.startswith("outcome unknown: chunk 2 of 2 may have been applied (no answer)")


def test_all_chunks_failing_is_the_first_error(executor: ThreadPoolExecutor) -> None:
    """No chunk returned: the call fails with the first chunk's error, not an OK."""
    fake = _seeded(FakeCodeArtifact())
    fake.fail_next(DELETE, UpstreamNotFoundError("gone"))
    with pytest.raises(UpstreamNotFoundError):
        _use_case(fake, executor, parallelism=1).execute(_raw(300), Deadline.after(5))
    assert 1 == len(fake.sent())


def test_no_result_but_an_unknown_outcome_reports_the_unknown_outcome(
    executor: ThreadPoolExecutor,
) -> None:
    """Chunk 1 throttled, chunk 2 timed out: the caller hears of the timeout, not the 429."""
    # In flight for 0.05 s: both lanes have taken their chunk before either fails.
    fake = _seeded(FakeCodeArtifact(delete_delay=0.05))
    fake.fail_next(
        DELETE, UpstreamThrottledError("slow down"), when=lambda c: "1.0.0" in c.versions
    )
    fake.fail_next(
        DELETE, UpstreamTimeoutError("no answer"), when=lambda c: "1.0.100" in c.versions
    )
    with pytest.raises(UpstreamTimeoutError):
        _use_case(fake, executor, parallelism=2).execute(_raw(200), Deadline.after(5))
    assert 2 == len(fake.sent())


def test_draining_starts_no_new_chunk(executor: ThreadPoolExecutor) -> None:
    """Shutdown begins during chunk 1: it completes, chunks 2 and 3 are SKIPPED, not sent."""
    drain = DrainSignal()

    class DrainingDuringFirstCall(FakeCodeArtifact):
        def delete_package_versions(
            self,
            package: PackageRef,
            versions: Sequence[str],
            expected_status: VersionStatus | None,
            deadline: Deadline,
        ) -> DeleteOutcome:
            drain.start()
            return super().delete_package_versions(package, versions, expected_status, deadline)

    fake = _seeded(DrainingDuringFirstCall())
    outcome = _use_case(fake, executor, parallelism=1).execute(_raw(250), Deadline.after(5, drain))
    assert 1 == len(fake.sent())
    assert 100 == len(outcome.successful)
    assert (
        FailedVersion(
            VersionErrorCode.SKIPPED,
            "not attempted: the gateway is shutting down, so chunk 2 of 3 was not sent",
        )
        == outcome.failed["1.0.100"]
    )


def test_draining_before_any_call_is_gateway_draining(executor: ThreadPoolExecutor) -> None:
    """A call that reaches the use case after shutdown began sends nothing."""
    drain = DrainSignal()
    drain.start()
    fake = _seeded(FakeCodeArtifact())
    with pytest.raises(GatewayDrainingError):
        _use_case(fake, executor).execute(_raw(3), Deadline.after(5, drain))
    assert [] == fake.sent()


def test_denied_version_fails_the_whole_call_by_default(executor: ThreadPoolExecutor) -> None:
    """All-or-nothing: one denied version is PolicyDeniedError and nothing is sent."""
    fake = _seeded(FakeCodeArtifact())
    policy = FakePolicy(deny=frozenset({"1.0.1"}))
    with pytest.raises(PolicyDeniedError) as caught:
        _use_case(fake, executor, policy=policy).execute(_raw(3), Deadline.after(5))
    assert [DeniedVersion("1.0.1", ("deny-listed",), "denied by deny-listed")] == list(
        caught.value.denied
    )
    assert [] == fake.sent()


def test_partial_mode_deletes_the_allowed_and_reports_the_denied(
    executor: ThreadPoolExecutor,
) -> None:
    """allow_partial: allowed versions go upstream, denied ones are NOT_ALLOWED with the ids."""
    fake = _seeded(FakeCodeArtifact())
    policy = FakePolicy(deny=frozenset({"1.0.1"}))
    raw = dataclasses.replace(_raw(3), allow_partial=True)
    outcome = _use_case(fake, executor, policy=policy).execute(raw, Deadline.after(5))
    assert [("1.0.0", "1.0.2")] == fake.sent()
    assert (
        FailedVersion(VersionErrorCode.NOT_ALLOWED, "denied by deny-listed")
        == (outcome.failed["1.0.1"])
    )


def test_missing_versions_are_not_evaluated_nor_sent(executor: ThreadPoolExecutor) -> None:
    """A version that does not exist upstream is NOT_FOUND, not decided, not forwarded."""
    fake = _seeded(FakeCodeArtifact(), existing=2)
    policy = FakePolicy()
    outcome = _use_case(fake, executor, policy=policy).execute(_raw(3), Deadline.after(5))
    assert ["1.0.0", "1.0.1"] == [f.version for f in policy.requests[0].versions]
    assert VersionErrorCode.NOT_FOUND == outcome.failed["1.0.2"].code
    assert [("1.0.0", "1.0.1")] == fake.sent()


def test_policy_sees_counts_and_latest(executor: ThreadPoolExecutor) -> None:
    """version_count, remaining_after_request and is_latest come from the package state."""
    fake = _seeded(FakeCodeArtifact(), existing=3)
    policy = FakePolicy()
    _use_case(fake, executor, policy=policy).execute(_raw(3), Deadline.after(5))
    [request] = policy.requests
    assert (3, 0) == (request.version_count, request.remaining_after_request)
    assert [False, False, True] == [f.is_latest for f in request.versions]


def test_dry_run_returns_the_plan_and_sends_nothing(executor: ThreadPoolExecutor) -> None:
    """validate_only: the plan for every version, no delete."""
    fake = _seeded(FakeCodeArtifact(), existing=2)
    raw = dataclasses.replace(_raw(3), validate_only=True)
    outcome = _use_case(fake, executor).execute(raw, Deadline.after(5))
    assert [PlanOutcome.WOULD_DELETE, PlanOutcome.WOULD_DELETE, PlanOutcome.NOT_FOUND] == [
        p.outcome for p in outcome.plan.values()
    ]
    assert [] == fake.sent()


def test_group_limit(executor: ThreadPoolExecutor) -> None:
    """A principal whose groups allow 2 versions may not name 3."""
    use_case = DeletePackageVersions(
        _seeded(FakeCodeArtifact()),
        executor,
        DeleteLimits(group_max_versions={"ci": 2}),
        FakePolicy(groups={"alice": ("ci",)}),
        locks=FakePackageLocks(),
    )
    with pytest.raises(VersionLimitError):
        use_case.execute(_raw(3), ALICE, Deadline.after(5))


# --- one package at a time -------------------------------------------------------------------


class _Steps(FakeCodeArtifact):
    """A FakeCodeArtifact (of PACKAGE) logging reads and deletes into its lock's log, and
    whether the package lock was held at each; also the call journal (plan and intent)."""

    def __init__(self, locks: FakePackageLocks | None = None) -> None:
        super().__init__()
        self.locks = locks or FakePackageLocks()
        self._held = contextlib.ExitStack()
        _seeded(self)

    def _step(self, name: str) -> None:
        self.locks.log.append(f"{name}{'' if self.locks.holding else ' (unlocked)'}")

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
        by_published: bool = False,
    ) -> PackageState:
        self._step("read")
        return super().package_state(
            package, deadline, published_time_for=published_time_for, by_published=by_published
        )

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        self._step("delete")
        return super().delete_package_versions(package, versions, expected_status, deadline)

    def planned(self, plan: Mapping[str, PlannedVersion]) -> None:
        self._step("plan")

    def check_quota(self, groups: Sequence[str], versions: int) -> None:
        self._step("quota")

    event_id = "00000000-0000-4000-8000-000000000000"

    def before_forwarding(
        self,
        groups: Sequence[str],
        versions: Sequence[str],
        deadline: Deadline,
        *,
        counts_quota: bool = True,
    ) -> None:
        self._step("intent")

    def delivered(self, outcome: DeleteOutcome) -> None:
        self._step("delivered")

    def will_apply(self, effects: PurgeEffects) -> None:
        self._step("effects")

    def hold_until_recorded(self, held: AbstractContextManager[None]) -> None:
        self._held.enter_context(held)

    intent = None

    def will_approve(self, effects: ApprovalEffects, **recorded: Any) -> None:
        self._step("approvals")

    def on_intent(self, effects: ApprovalEffects, guard: RequestGuard) -> None:
        self._step("claim")

    def received(self, request: Mapping[str, Any]) -> None:
        self._step("received")

    def commit(self, effects: ApprovalEffects, guard: RequestGuard, **recorded: Any) -> None:
        self._step("commit")

    def recorded(self) -> None:
        """The edge records the outcome, then the call lets go of what it held."""
        self._step("recorded")
        self._held.close()


def _locked_use_case(steps: _Steps, executor: ThreadPoolExecutor) -> DeletePackageVersions:
    return DeletePackageVersions(
        steps,
        executor,
        DeleteLimits(max_versions=1000, chunk_parallelism=2, min_upstream_seconds=0.2),
        FakePolicy(),
        locks=steps.locks,
    )


def test_real_call_holds_the_package_lock_from_read_to_last_chunk(
    executor: ThreadPoolExecutor,
) -> None:
    """The lock is taken before the state is read and released once the outcome is recorded,
    after the last of three chunks returned; the plan and the intent are recorded under it, in
    that order."""
    steps = _Steps()
    deadline = Deadline.after(5)
    _locked_use_case(steps, executor).execute(_raw(250), ALICE, deadline, steps)
    steps.recorded()
    assert [
        "lock",
        "read",
        "plan",
        "intent",
        "delete",
        "delete",
        "delete",
        "delivered",
        "recorded",
        "unlock",
    ] == (steps.locks.log)
    [(package, wait)] = steps.locks.held
    assert ("demo", "bulk", "artifact") == (package.domain, package.namespace, package.package)
    assert pytest.approx(deadline.expires_at - 0.4) == wait.expires_at  # read + delete left


def test_busy_package_reads_records_and_sends_nothing(executor: ThreadPoolExecutor) -> None:
    """The lock not had before the deadline: PackageBusyError; no read, no plan, no intent,
    no delete."""
    steps = _Steps(locks=FakePackageLocks(busy=True))
    with pytest.raises(PackageBusyError):
        _locked_use_case(steps, executor).execute(_raw(3), ALICE, Deadline.after(5), steps)
    assert [] == steps.locks.log
    assert [] == steps.calls


def test_lock_is_released_when_the_delete_fails(executor: ThreadPoolExecutor) -> None:
    """An upstream error inside the lock still releases it, once the failure is recorded."""
    steps = _Steps()
    steps.fail_next(DELETE, UpstreamThrottledError("slow down"))
    with pytest.raises(UpstreamThrottledError):
        _locked_use_case(steps, executor).execute(_raw(3), ALICE, Deadline.after(5), steps)
    steps.recorded()
    assert ["lock", "read", "plan", "intent", "delete", "recorded", "unlock"] == steps.locks.log


def test_dry_run_takes_no_lock(executor: ThreadPoolExecutor) -> None:
    """validate_only changes nothing, so it reads and decides without waiting for a turn."""
    steps = _Steps()
    raw = dataclasses.replace(_raw(3), validate_only=True)
    _locked_use_case(steps, executor).execute(raw, ALICE, Deadline.after(5), steps)
    assert ["read (unlocked)", "plan (unlocked)", "quota (unlocked)"] == steps.locks.log


class _NeverTheLastVersion(FakePolicy):
    """never-delete-only-remaining-version, as a fake."""

    def decide(self, request: PolicyRequest) -> list[VersionDecision]:
        last = request.version_count <= 1 or request.remaining_after_request == 0
        return [VersionDecision(f.version, not last, ("only-one",)) for f in request.versions]


def test_concurrent_deletes_of_the_last_two_versions_leave_one(
    executor: ThreadPoolExecutor,
) -> None:
    """Two threads delete one each of a package's two versions at once, through the in-process
    lock table: every round one is deleted and the other denied, as the package has one left."""
    for _ in range(10):
        # Two Unlisted versions whose reads are slow (the answer travels back while the
        # other call may be reading), so two calls read at once unless they take turns.
        upstream = FakeCodeArtifact(read_delay=0.05)
        upstream.add_package(PACKAGE, dict.fromkeys(("1.0.0", "1.0.1"), VersionStatus.UNLISTED))
        use_case = DeletePackageVersions(
            upstream,
            executor,
            DeleteLimits(),
            _NeverTheLastVersion(),
            locks=LocalPackageLocks(),
        )
        raws = [dataclasses.replace(_raw(0), versions=[v]) for v in ("1.0.0", "1.0.1")]
        with ThreadPoolExecutor(2) as callers:
            futures = [
                callers.submit(use_case.execute, raw, ALICE, Deadline.after(5)) for raw in raws
            ]
            errors = [f.exception() for f in futures]
        assert 1 == sum(isinstance(e, PolicyDeniedError) for e in errors), errors
        assert 1 == errors.count(None)
        assert 1 == len(upstream.statuses(PACKAGE))
