"""One suite, three cleanup stores: the in-memory fake answers as SQLite and PostgreSQL do.

Every test runs on `pkggov_gateway.testing.InMemoryAuditStore`, on a SQLite file and on a
PostgreSQL schema of its own (skipped when PostgreSQL cannot be reached, unless CI is set),
through the CleanupStore port only, with two replicas of one deployment ("a" and "b": two
stores on one database; in memory, `another_replica`). Tampering with a stored plan is done
as an attacker with the database would (an UPDATE; in memory, `tamper_cleanup_plan`). The
last tests race replicas' claims on the SQL stores and migrate an older SQL store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest

from pkggov_gateway.adapters.sql import (
    Dialect,
    PostgresDialect,
    SqlAuditStore,
    SqliteDialect,
    open_audit_store,
)
from pkggov_gateway.domain.audit import NewEntry, format_time
from pkggov_gateway.domain.cleanup import (
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    CleanupScope,
    JobState,
    PackagePlan,
    PackageResult,
    PlannedEntry,
    VersionResult,
    plan_hash,
)
from pkggov_gateway.domain.errors import CleanupPlanLimitError, CleanupPlanTamperedError
from pkggov_gateway.domain.model import PackageFormat, PackageRef, PlanOutcome, VersionStatus
from pkggov_gateway.domain.retention import Clause, rule_from_mapping
from pkggov_gateway.ports import CleanupStore
from pkggov_gateway.testing import InMemoryAuditStore
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.integration.dialect_wrappers import OldDialect

NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
LEASE = timedelta(minutes=5)
BERLIN = timezone(timedelta(hours=2))
REQUESTER = {
    "id": "alice",
    "method": "mtls",
    "issuer": None,
    "token_id": None,
    "attributes": {"team": "web"},
    "claim_groups": ["releasers"],
}


class Store(CleanupStore, Protocol):
    """The port, and the replica the store leases jobs to."""

    replica: str


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which store the test runs on."""
    return str(request.param)


@pytest.fixture
def stores(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Store, Store]]:
    """Two replicas ("a", "b") of one deployment on one empty database of `backend`."""
    if backend == "memory":
        a = InMemoryAuditStore(replica="a")
        yield a, a.another_replica("b")
        return
    if backend == "sqlite":
        url = f"sqlite:{tmp_path}/audit.db"
    else:
        url = pg_schema_url(request.getfixturevalue("pg_schema"))
    opened: list[SqlAuditStore] = []
    try:
        for name in ("a", "b"):
            opened.append(open_audit_store(url, replica=name, heartbeat_seconds=3600))
        yield opened[0], opened[1]
    finally:
        for store in opened:
            store.close()


@pytest.fixture
def store(stores: tuple[Store, Store]) -> Store:
    """Replica "a"."""
    return stores[0]


def tamper(store: Store, plan_id: str, seq: int, text: str) -> None:
    """Overwrite a stored package's JSON behind the gateway's back."""
    if isinstance(store, InMemoryAuditStore):
        store.tamper_cleanup_plan(plan_id, seq, text)
        return
    assert isinstance(store, SqlAuditStore)
    with store.dialect.reader() as conn:
        conn.execute(
            store.dialect.sql(
                "UPDATE cleanup_plan_packages SET package = ? WHERE plan_id = ? AND seq = ?"
            ),
            (text, plan_id, seq),
        )


# --- builders ----------------------------------------------------------------------------------


def package(n: int, *, versions: int = 2) -> PackagePlan:
    """Package n's plan: `versions` versions, the older ones deleted."""
    ref = PackageRef("demo", "dev", PackageFormat.NPM, f"pkg-{n}", namespace="acme")
    entries = tuple(
        PlannedEntry(
            version=f"1.0.{v}",
            revision=f"rev-{n}-{v}",
            status=VersionStatus.PUBLISHED,
            delete=v < versions - 1,
            clause=Clause.SELECTED if v < versions - 1 else Clause.LATEST,
            reason="older than 30 days" if v < versions - 1 else "the latest version",
            prerelease=v == 0,
            published_at=datetime(2030, 1, 1 + v, 12, 0, 0, 500, tzinfo=BERLIN),
            policy=PlanOutcome.WOULD_DELETE if v < versions - 1 else None,
            policy_ids=("allow-dev",) if v < versions - 1 else (),
            purge_at=NOW + timedelta(days=7) if v == 0 else None,
        )
        for v in range(versions)
    )
    return PackagePlan(
        package=ref,
        latest=f"1.0.{versions - 1}",
        entries=entries,
        published_order=tuple(f"1.0.{v}" for v in reversed(range(versions))),
        error="listing failed once" if n == 2 else "",
    )


def make_plan(plan_id: str, packages: list[PackagePlan]) -> CleanupPlan:
    """A plan over `packages`, its hash computed as the planner computes it."""
    plan = CleanupPlan(
        plan_id=plan_id,
        requester=REQUESTER,
        created_at=datetime(2031, 5, 6, 9, 8, 9, 123456, tzinfo=BERLIN),
        expires_at=datetime(2031, 5, 7, 9, 8, 9, tzinfo=BERLIN),
        scope=CleanupScope("demo", "dev", domain_owner="111122223333", format=PackageFormat.NPM),
        rule_name="old-prereleases",
        rule=rule_from_mapping(
            {
                "order": "published",
                "keep_newest": 3,
                "older_than_days": 30,
                "include": ["1.*"],
                "exclude_regex": "^0\\.",
                "prerelease": "exclude",
                "max_deletions": 0,
            }
        ),
        justification="quarterly cleanup",
        purge_now=False,
        package_count=len(packages),
        totals={"version_count": 2 * len(packages), "delete_count": len(packages)},
        clause_counts={"SELECTED": len(packages), "LATEST": len(packages)},
        warnings=("one package could not be read",),
        upstream_calls=7,
        event_id=f"event-{plan_id}",
    )
    digest = plan_hash(plan.header_json(), [p.to_json() for p in packages])
    return replace(plan, plan_hash=digest)


def job(job_id: str, *, plan_id: str = "plan-1", created_at: datetime = NOW) -> CleanupJob:
    """A new job (queued) of plan `plan_id`."""
    return CleanupJob(
        job_id=job_id,
        plan_id=plan_id,
        plan_hash="ab" * 32,
        requester=REQUESTER,
        state=JobState.QUEUED,
        created_at=created_at,
        updated_at=created_at,
        event_id=f"apply-{job_id}",
        packages_total=5,
        versions_planned=9,
    )


def result(seq: int, *outcomes: CleanupResult) -> PackageResult:
    """Package seq's result: one version per outcome."""
    return PackageResult(
        seq=seq,
        package=package(seq).package,
        versions=tuple(
            VersionResult(
                f"1.0.{i}",
                outcome,
                message=f"{outcome.value} as planned",
                purge_at=NOW + timedelta(days=7) if outcome is CleanupResult.ARCHIVED else None,
            )
            for i, outcome in enumerate(outcomes)
        ),
        audit_event_ids=(f"delete-{seq}",),
        deletion_request_id=f"req-{seq}",
    )


def counts(found: PackageResult) -> dict[str, int]:
    """A result's versions by outcome."""
    tally: dict[str, int] = {}
    for version in found.versions:
        tally[version.result.value] = tally.get(version.result.value, 0) + 1
    return tally


def claimed(store: Store, at: datetime = NOW) -> CleanupJob | None:
    return store.claim_job(at, at + LEASE)


def in_utc(moment: datetime) -> bool:
    return moment.utcoffset() == timedelta(0)


# --- plans -------------------------------------------------------------------------------------


def test_a_plan_reads_back_as_saved_and_rehashes_to_its_stored_hash(store: Store) -> None:
    """Header fields, rule, scope, totals and times (in the zone the header records) read back
    equal; the packages read back equal, in order; plan_hash over the header read back and
    the packages read back is the stored hash."""
    packages = [package(n, versions=n + 2) for n in range(3)]
    plan = make_plan("plan-1", packages)
    store.save_plan(plan, packages)
    found = store.cleanup_plan("plan-1")
    assert found is not None
    assert plan == found
    assert plan.header_json() == found.header_json()
    assert plan.rule.to_json() == found.rule.to_json()
    assert plan.scope == found.scope
    assert (plan.requester_id, plan.plan_hash) == ("alice", found.plan_hash)
    assert found.created_at.utcoffset() == timedelta(hours=2)
    assert found.created_at == plan.created_at
    read = store.plan_packages("plan-1", -1, 100)
    assert [(n, p) for n, p in enumerate(packages)] == read
    assert read[0][1].entries[0].published_at == packages[0].entries[0].published_at
    digest = plan_hash(found.header_json(), [p.to_json() for _, p in read])
    assert found.plan_hash == digest
    assert None is store.cleanup_plan("plan-2")


def test_plan_packages_page_by_seq(store: Store) -> None:
    """Pages of `limit` after `after` (-1: from the first), in seq order; nothing past the
    end, for limit 0, or for an unknown plan."""
    packages = [package(n) for n in range(5)]
    store.save_plan(make_plan("plan-1", packages), packages)
    store.save_plan(make_plan("plan-2", packages[:1]), packages[:1])
    pages = [[seq for seq, _ in store.plan_packages("plan-1", after, 2)] for after in (-1, 1, 3, 4)]
    assert [[0, 1], [2, 3], [4], []] == pages
    assert [p.package for p in packages[2:4]] == [
        p.package for _, p in store.plan_packages("plan-1", 1, 2)
    ]
    assert [] == store.plan_packages("plan-1", -1, 0)
    assert [] == store.plan_packages("plan-3", -1, 10)
    assert [0] == [seq for seq, _ in store.plan_packages("plan-2", -1, 10)]


def test_a_plan_without_packages_reads_back_empty(store: Store) -> None:
    plan = make_plan("plan-1", [])
    store.save_plan(plan, [])
    found = store.cleanup_plan("plan-1")
    assert found is not None
    assert plan_hash(found.header_json(), []) == found.plan_hash
    assert [] == store.plan_packages("plan-1", -1, 10)


def test_a_plan_is_written_once(store: Store) -> None:
    """A second save of a plan id is refused and changes nothing."""
    packages = [package(n) for n in range(2)]
    plan = make_plan("plan-1", packages)
    store.save_plan(plan, packages)
    other = make_plan("plan-1", [package(9)] * 3)
    with pytest.raises(ValueError, match="plan-1"):
        store.save_plan(other, [package(9)] * 3)
    assert plan == store.cleanup_plan("plan-1")
    assert packages == [p for _, p in store.plan_packages("plan-1", -1, 10)]


def test_a_package_changed_in_the_database_no_longer_hashes_to_the_plan(
    store: Store,
) -> None:
    """A package rewritten behind the gateway's back reads back as rewritten (the hash shows
    it); one that is not a package's plan at all is CleanupPlanTamperedError."""
    packages = [package(n) for n in range(3)]
    store.save_plan(make_plan("plan-1", packages), packages)
    changed = replace(
        packages[1], entries=tuple(replace(e, delete=True) for e in packages[1].entries)
    )
    tamper(store, "plan-1", 1, json.dumps(changed.to_json()))
    found = store.cleanup_plan("plan-1")
    assert found is not None
    read = [p for _, p in store.plan_packages("plan-1", -1, 10)]
    assert changed == read[1]
    assert found.plan_hash != plan_hash(found.header_json(), [p.to_json() for p in read])
    tamper(store, "plan-1", 2, '{"package": "nonsense"}')
    assert [0] == [seq for seq, _ in store.plan_packages("plan-1", -1, 1)]
    with pytest.raises(CleanupPlanTamperedError, match="plan-1") as raised:
        store.plan_packages("plan-1", 1, 10)
    assert {"cleanup_plan_id": "plan-1"} == raised.value.metadata()


# --- jobs --------------------------------------------------------------------------------------


def test_a_job_is_created_queued_and_reads_back_with_aware_times(store: Store) -> None:
    """Whatever state it is given, a new job is queued; its times read back as the same
    instants, in UTC; its requester as given."""
    created = datetime(2031, 5, 6, 9, 8, 9, 654321, tzinfo=BERLIN)
    given = replace(job("job-1", created_at=created), state=JobState.RUNNING)
    store.create_job(given)
    found = store.cleanup_job("job-1")
    assert found is not None
    assert replace(given, state=JobState.QUEUED) == found
    assert (created, created) == (found.created_at, found.updated_at)
    assert in_utc(found.created_at)
    assert in_utc(found.updated_at)
    assert (REQUESTER, "alice") == (dict(found.requester), found.requester_id)
    assert (0, 0, {}, "", False, "", 0) == (
        found.next_seq,
        found.packages_done,
        dict(found.counts),
        found.last_error,
        found.cancel_requested,
        found.cancel_reason,
        found.attempts,
    )
    assert None is store.cleanup_job("job-2")
    with pytest.raises(ValueError, match="job-1"):
        store.create_job(job("job-1", plan_id="plan-9"))
    assert "plan-1" == store.cleanup_job("job-1").plan_id  # type: ignore[union-attr]


def test_one_replica_at_a_time_holds_a_job_until_its_lease_expires(
    stores: tuple[Store, Store],
) -> None:
    """a leases the job (running); b finds nothing while a's lease lasts, and takes it once
    the lease has expired; a, its lease lost, can then neither record a step, retry nor
    finish the job."""
    a, b = stores
    a.create_job(job("job-1"))
    leased = claimed(a)
    assert leased is not None
    assert ("job-1", JobState.RUNNING, NOW) == (leased.job_id, leased.state, leased.updated_at)
    assert in_utc(leased.updated_at)
    assert None is claimed(a)
    assert None is claimed(b)
    assert None is claimed(b, NOW + LEASE - timedelta(microseconds=1))
    taken = claimed(b, NOW + LEASE)
    assert taken is not None
    assert ("job-1", JobState.RUNNING) == (taken.job_id, taken.state)
    assert None is a.record_step(
        "job-1", result(0, CleanupResult.DELETED), counts={"deleted": 1}, now=NOW, lease_until=NOW
    )
    a.retry_job("job-1", retry_at=NOW + timedelta(hours=1), error="late", now=NOW)
    a.finish_job("job-1", JobState.FAILED, NOW, "late")
    found = b.cleanup_job("job-1")
    assert found is not None
    assert (JobState.RUNNING, 0, "", 0) == (
        found.state,
        found.attempts,
        found.last_error,
        found.next_seq,
    )
    assert [] == b.job_results("job-1", -1, 10)
    assert b.record_step(
        "job-1",
        result(0, CleanupResult.DELETED),
        counts={"deleted": 1},
        now=NOW + LEASE,
        lease_until=NOW + 2 * LEASE,
    )


def test_jobs_are_claimed_oldest_first_and_finished_ones_never(store: Store) -> None:
    """By created_at, then job id; a job claimed is leased, so the next claim takes the next
    job; a finished or cancelled job is not claimed."""
    store.create_job(job("job-c", created_at=NOW - timedelta(minutes=1)))
    store.create_job(job("job-b", created_at=NOW - timedelta(minutes=2)))
    store.create_job(job("job-a", created_at=NOW - timedelta(minutes=2)))
    store.create_job(job("job-d", created_at=NOW - timedelta(minutes=3)))
    store.cancel_job("job-d", "not wanted", NOW)
    order = []
    for _ in range(3):
        leased = claimed(store)
        assert leased is not None
        order.append(leased.job_id)
    assert ["job-a", "job-b", "job-c"] == order
    assert None is claimed(store)
    store.finish_job("job-a", JobState.SUCCEEDED, NOW)
    again = [claimed(store, NOW + LEASE), claimed(store, NOW + LEASE), claimed(store, NOW + LEASE)]
    assert ["job-b", "job-c", None] == [j and j.job_id for j in again]
    late = [claimed(store, NOW + 9 * LEASE) for _ in range(3)]
    assert ["job-b", "job-c", None] == [j and j.job_id for j in late]


def test_record_step_stores_the_result_and_advances_the_job(
    stores: tuple[Store, Store],
) -> None:
    """Each step adds its counts, moves next_seq past the package, counts it done, clears
    attempts and error, and extends the lease (b cannot take the job after the first lease
    would have ended); the job as updated is returned."""
    a, b = stores
    a.create_job(job("job-1"))
    assert claimed(a) is not None
    a.retry_job("job-1", retry_at=NOW + timedelta(seconds=1), error="throttled", now=NOW)
    assert claimed(a, NOW + timedelta(seconds=1)) is not None
    first = result(0, CleanupResult.DELETED, CleanupResult.DELETED, CleanupResult.DENIED)
    later = NOW + timedelta(minutes=4)
    step = a.record_step("job-1", first, counts=counts(first), now=later, lease_until=later + LEASE)
    assert step is not None
    assert (1, 1, {"deleted": 2, "denied": 1}, 0, "", later) == (
        step.next_seq,
        step.packages_done,
        dict(step.counts),
        step.attempts,
        step.last_error,
        step.updated_at,
    )
    assert None is claimed(b, NOW + LEASE + timedelta(seconds=2))  # the lease was extended
    second = result(1, CleanupResult.DELETED, CleanupResult.ARCHIVED, CleanupResult.FAILED)
    step = a.record_step(
        "job-1", second, counts=counts(second), now=later, lease_until=later + LEASE
    )
    assert step is not None
    assert (2, 2) == (step.next_seq, step.packages_done)
    assert {"deleted": 3, "denied": 1, "archived": 1, "failed": 1} == dict(step.counts)
    assert step == a.cleanup_job("job-1") == b.cleanup_job("job-1")
    assert [first, second] == a.job_results("job-1", -1, 10)
    assert None is b.record_step(
        "job-1", result(2), counts={"deleted": 5}, now=later, lease_until=later + LEASE
    )
    assert step == a.cleanup_job("job-1")
    assert [0, 1] == [r.seq for r in a.job_results("job-1", -1, 10)]


def test_record_step_refuses_unknown_counts_before_writing(store: Store) -> None:
    store.create_job(job("job-1"))
    assert claimed(store) is not None
    with pytest.raises(ValueError, match="bogus"):
        store.record_step("job-1", result(0), counts={"bogus": 1}, now=NOW, lease_until=NOW + LEASE)
    found = store.cleanup_job("job-1")
    assert found is not None
    assert (0, 0, {}) == (found.next_seq, found.packages_done, dict(found.counts))
    assert [] == store.job_results("job-1", -1, 10)


def test_a_retried_job_waits_for_its_retry_time(stores: tuple[Store, Store]) -> None:
    """retry_job counts the attempt, records the error and ends the lease: no replica takes
    the job before retry_at, either may at it; a non-owner's retry is ignored."""
    a, b = stores
    a.create_job(job("job-1"))
    assert claimed(a) is not None
    retry_at = NOW + timedelta(minutes=10)
    a.retry_job("job-1", retry_at=retry_at, error="throttled", now=NOW + timedelta(seconds=1))
    found = a.cleanup_job("job-1")
    assert found is not None
    assert (JobState.RUNNING, 1, "throttled", NOW + timedelta(seconds=1)) == (
        found.state,
        found.attempts,
        found.last_error,
        found.updated_at,
    )
    assert None is claimed(a, retry_at - timedelta(microseconds=1))
    assert None is claimed(b, retry_at - timedelta(microseconds=1))
    a.retry_job("job-1", retry_at=NOW, error="not leased", now=NOW)  # nobody holds it
    taken = claimed(b, retry_at)
    assert taken is not None
    assert (1, "throttled") == (taken.attempts, taken.last_error)
    a.retry_job("job-1", retry_at=NOW, error="not mine", now=retry_at)
    b.retry_job("job-1", retry_at=retry_at + LEASE, error="again", now=retry_at)
    found = b.cleanup_job("job-1")
    assert found is not None
    assert (2, "again") == (found.attempts, found.last_error)
    assert None is claimed(a, retry_at + LEASE - timedelta(microseconds=1))
    assert claimed(a, retry_at + LEASE) is not None


def test_finish_job_ends_the_job_and_its_lease(stores: tuple[Store, Store]) -> None:
    """Only the lease holder finishes a job; the error, when given, becomes its last error;
    a finished job is never claimed again; a state that does not end a job is refused."""
    a, b = stores
    for name in ("job-1", "job-2"):
        a.create_job(job(name, created_at=NOW if name == "job-1" else NOW + timedelta(1)))
    assert "job-1" == claimed(a).job_id  # type: ignore[union-attr]
    a.retry_job("job-1", retry_at=NOW, error="throttled", now=NOW)
    assert "job-1" == claimed(a).job_id  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="running"):
        a.finish_job("job-1", JobState.RUNNING, NOW)
    b.finish_job("job-1", JobState.FAILED, NOW, "not mine")
    assert JobState.RUNNING == a.cleanup_job("job-1").state  # type: ignore[union-attr]
    done = NOW + timedelta(minutes=1)
    a.finish_job("job-1", JobState.SUCCEEDED, done)
    found = a.cleanup_job("job-1")
    assert found is not None
    assert (JobState.SUCCEEDED, "throttled", done) == (
        found.state,
        found.last_error,
        found.updated_at,
    )
    assert "job-2" == claimed(b, NOW + 9 * LEASE).job_id  # type: ignore[union-attr]
    b.finish_job("job-2", JobState.FAILED, done, "plan tampered")
    found = b.cleanup_job("job-2")
    assert found is not None
    assert (JobState.FAILED, "plan tampered") == (found.state, found.last_error)
    assert None is claimed(a, NOW + 99 * LEASE)
    a.finish_job("job-1", JobState.FAILED, done, "again")  # not leased any more: nothing
    assert JobState.SUCCEEDED == a.cleanup_job("job-1").state  # type: ignore[union-attr]


def test_cancel_job_in_each_state(stores: tuple[Store, Store]) -> None:
    """Queued: cancelled at once. Running and leased: marked (cancel_requested, reason),
    still running and leased; its runner then finishes it cancelled. Running with an expired
    lease, or waiting for a retry: cancelled at once (the former holder's step is refused).
    Finished: unchanged. Unknown: None."""
    a, b = stores
    for n in range(5):
        a.create_job(job(f"job-{n}", created_at=NOW + timedelta(seconds=n)))
    later = NOW + timedelta(seconds=30)

    queued = b.cancel_job("job-0", "by alice", later)
    assert queued is not None
    assert (JobState.CANCELLED, True, "by alice", later) == (
        queued.state,
        queued.cancel_requested,
        queued.cancel_reason,
        queued.updated_at,
    )
    assert queued == a.cleanup_job("job-0")

    assert "job-1" == claimed(a).job_id  # type: ignore[union-attr]
    marked = b.cancel_job("job-1", "by bob", later)
    assert marked is not None
    assert (JobState.RUNNING, True, "by bob") == (
        marked.state,
        marked.cancel_requested,
        marked.cancel_reason,
    )
    step = a.record_step(  # still a's
        "job-1",
        result(0, CleanupResult.DELETED),
        counts={"deleted": 1},
        now=later,
        lease_until=later + LEASE,
    )
    assert step is not None
    assert step.cancel_requested
    a.finish_job("job-1", JobState.CANCELLED, later)
    found = a.cleanup_job("job-1")
    assert found is not None
    assert (JobState.CANCELLED, "by bob", 1) == (
        found.state,
        found.cancel_reason,
        found.packages_done,
    )

    assert "job-2" == claimed(a).job_id  # type: ignore[union-attr]
    expired = b.cancel_job("job-2", "lease gone", NOW + LEASE)
    assert expired is not None
    assert (JobState.CANCELLED, True, "lease gone") == (
        expired.state,
        expired.cancel_requested,
        expired.cancel_reason,
    )
    assert None is a.record_step(
        "job-2", result(0), counts={}, now=NOW + LEASE, lease_until=NOW + 2 * LEASE
    )

    assert "job-3" == claimed(a).job_id  # type: ignore[union-attr]
    a.retry_job("job-3", retry_at=NOW + timedelta(hours=1), error="throttled", now=NOW)
    waiting = b.cancel_job("job-3", "no more", later)
    assert waiting is not None
    assert (JobState.CANCELLED, "throttled", 1) == (
        waiting.state,
        waiting.last_error,
        waiting.attempts,
    )
    left = [claimed(b, NOW + timedelta(hours=2)) for _ in range(2)]
    assert ["job-4", None] == [j and j.job_id for j in left]

    b.finish_job("job-4", JobState.SUCCEEDED, later)
    finished = b.cleanup_job("job-4")
    assert finished == a.cancel_job("job-4", "too late", NOW + timedelta(hours=4))
    assert finished == a.cleanup_job("job-4")
    assert None is a.cancel_job("job-9", "none", later)


def test_job_results_page_by_seq(store: Store) -> None:
    """Results after `after`, at most `limit`, in seq order, as recorded (their times
    aware); nothing for limit 0 or an unknown job; a step recorded again at a seq replaces
    its result."""
    store.create_job(job("job-1"))
    assert claimed(store) is not None
    recorded = [result(seq, CleanupResult.ARCHIVED, CleanupResult.DELETED) for seq in range(5)]
    for found in recorded:
        store.record_step("job-1", found, counts=counts(found), now=NOW, lease_until=NOW + LEASE)
    pages = [store.job_results("job-1", after, 2) for after in (-1, 1, 3, 4)]
    assert [recorded[0:2], recorded[2:4], recorded[4:], []] == pages
    purge_at = pages[0][0].versions[0].purge_at
    assert purge_at == NOW + timedelta(days=7)
    assert purge_at.tzinfo is not None
    assert [] == store.job_results("job-1", -1, 0)
    assert [] == store.job_results("job-2", -1, 10)
    again = result(2, CleanupResult.FAILED)
    step = store.record_step("job-1", again, counts={}, now=NOW, lease_until=NOW + LEASE)
    assert step is not None
    assert (5, 6) == (step.next_seq, step.packages_done)  # never moved back
    assert [again] == store.job_results("job-1", 1, 1)


# --- SQL: replicas racing ----------------------------------------------------------------------


def test_replicas_claiming_together_lease_each_job_once(
    backend: str, stores: tuple[Store, Store]
) -> None:
    """Two replicas, three threads each, claim until no job is left: every job is leased
    exactly once (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write lock)."""
    if backend == "memory":
        pytest.skip("a race between databases' transactions")
    a, b = stores
    total = 30
    for n in range(total):
        a.create_job(job(f"job-{n:02d}", created_at=NOW + timedelta(microseconds=n)))
    claims: dict[str, list[str]] = {"a": [], "b": []}
    failures: list[Exception] = []
    go = threading.Barrier(6)

    def worker(store: Store) -> None:
        try:
            go.wait()
            while (leased := claimed(store)) is not None:
                claims[store.replica].append(leased.job_id)
        except Exception as err:  # noqa: BLE001 - the test reports it
            failures.append(err)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    everything = claims["a"] + claims["b"]
    assert len(everything) == len(set(everything)) == total
    owners: Mapping[str, Any]
    assert isinstance(a, SqlAuditStore)
    with a.dialect.reader() as conn:
        owners = dict(conn.execute("SELECT job_id, lease_owner FROM cleanup_jobs").fetchall())
    assert {job_id: name for name, ids in claims.items() for job_id in ids} == owners


# --- SQL: migration 5 --------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_store_with_entries_migrates_to_cleanup_jobs_and_still_verifies(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An existing store (schema 4, with entries) gains the cleanup tables when a new gateway
    opens it, once; its chain still verifies, whatever plans and jobs are stored."""
    if database == "sqlite":
        url = f"sqlite:{tmp_path}/audit.db"
        dialect: Dialect = SqliteDialect(tmp_path / "audit.db")
    else:
        url = pg_schema_url(request.getfixturevalue("pg_schema"))
        dialect = PostgresDialect(url)
    old = SqlAuditStore(OldDialect(dialect, last=4), heartbeat_seconds=3600)
    for kind in ("intent", "outcome"):
        old.append(NewEntry({"event_id": "e1", "kind": kind, "time": format_time(NOW)}))
    old.close()
    store = open_audit_store(url, replica="a", heartbeat_seconds=3600)
    try:
        packages = [package(0)]
        store.save_plan(make_plan("plan-1", packages), packages)
        store.create_job(job("job-1"))
        assert claimed(store) is not None
        with store.dialect.reader() as conn:
            rows = conn.execute("SELECT version FROM pkggov_schema_migrations").fetchall()
        assert [version for version, _ in store.dialect.migrations()] == sorted(
            int(row[0]) for row in rows
        )
        assert 5 in {int(row[0]) for row in rows}
        report = verify(store.iter_rows())
        assert (True, 2) == (report.ok, report.entries)
    finally:
        store.close()


def test_open_plans_count_a_requesters_unexpired_plans(store: Store) -> None:
    """open_plans counts the requester's plans that expire after the time given, no others."""
    plan = make_plan("plan-open", [package(0)])
    store.save_plan(plan, [package(0)])
    before = plan.expires_at - timedelta(seconds=1)
    assert 1 == store.open_plans(plan.requester_id, before)
    assert 0 == store.open_plans(plan.requester_id, plan.expires_at)
    assert 0 == store.open_plans("someone-else", before)


def test_prune_plans_deletes_expired_plans_no_unfinished_job_applies(store: Store) -> None:
    """Plans expired before the time given go with their packages, unless a queued or running
    job applies them; a finished job's plan goes too, and the limit bounds one pass."""
    packages = [package(0), package(1)]
    for plan_id in ("plan-idle", "plan-busy", "plan-done", "plan-extra"):
        store.save_plan(make_plan(plan_id, packages), packages)
    store.create_job(job("job-done", plan_id="plan-done"))
    leased = claimed(store, at=NOW)
    assert leased is not None
    assert "job-done" == leased.job_id
    store.finish_job("job-done", JobState.SUCCEEDED, NOW)
    store.create_job(job("job-busy", plan_id="plan-busy"))  # queued: its plan stays
    expiry = make_plan("plan-idle", packages).expires_at
    assert 0 == store.prune_plans(expiry, 10)  # not yet expired before that time
    after = expiry + timedelta(days=1)
    assert 2 == store.prune_plans(after, 2)
    assert 1 == store.prune_plans(after, 10)
    remaining = [
        p for p in ("plan-idle", "plan-busy", "plan-done", "plan-extra") if store.cleanup_plan(p)
    ]
    assert ["plan-busy"] == remaining
    assert [] == store.plan_packages("plan-idle", -1, 10)
    assert 2 == len(store.plan_packages("plan-busy", -1, 10))


def test_plan_jobs_lists_a_plans_jobs_oldest_first(store: Store) -> None:
    """plan_jobs gives every job of one plan, oldest first, and no other plan's."""
    store.create_job(job("job-b", plan_id="plan-x", created_at=NOW + timedelta(seconds=1)))
    store.create_job(job("job-a", plan_id="plan-x", created_at=NOW))
    store.create_job(job("job-c", plan_id="plan-y"))
    assert ["job-a", "job-b"] == [j.job_id for j in store.plan_jobs("plan-x")]
    assert [] == store.plan_jobs("plan-none")


def test_renew_job_extends_only_this_replicas_lease(stores: tuple[Store, Store]) -> None:
    """renew_job moves a leased job's lease end for its replica; another replica's renewal
    changes nothing (False), and the renewed lease keeps the job from the other replica."""
    a, b = stores
    a.create_job(job("job-renew"))
    assert claimed(a, at=NOW) is not None
    later = NOW + timedelta(minutes=30)
    assert a.renew_job("job-renew", later) is True
    assert b.renew_job("job-renew", later + timedelta(hours=1)) is False
    assert b.claim_job(NOW + timedelta(minutes=20), later) is None  # still a's
    taken = b.claim_job(later, later + timedelta(minutes=10))
    assert taken is not None
    assert "job-renew" == taken.job_id


def test_concurrent_plans_never_pass_the_open_plan_limit(stores: tuple[Store, Store]) -> None:
    """Eight plans of one requester saved at once by two replicas with max_open=2: exactly two
    are stored, the others refused with CleanupPlanLimitError (the count and the insert are one
    transaction: SQLite's write lock, PostgreSQL's advisory lock on the requester)."""
    a, b = stores
    outcomes: list[str] = []
    go = threading.Barrier(8)

    def save(store: Store, n: int) -> None:
        plan = make_plan(f"plan-race-{n}", [package(0)])
        go.wait()
        try:
            store.save_plan(plan, [package(0)], max_open=2)
        except CleanupPlanLimitError:
            outcomes.append("limit")
        else:
            outcomes.append("saved")

    threads = [threading.Thread(target=save, args=((a, b)[n % 2], n)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (2, 6) == (outcomes.count("saved"), outcomes.count("limit"))
    before = make_plan("x", []).created_at
    assert 2 == a.open_plans("alice", before)
