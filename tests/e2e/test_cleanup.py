"""Retention end to end (issue 17): PlanCleanup, ApplyCleanup and the job runner over real gRPC,
against the emulator (read back through unmodified boto3 and its call log) and a real SQLite
store, with the shipped policy.

Each test makes its packages in demo/dev-x (created per test) with chosen statuses and
publication times. The gateway runs on a test clock (tests.e2e.test_recoverable_delete.Clock):
ages are decided by moving it, never by sleeping; a job is waited for by polling GetCleanupJob.

alice and dave are release-admins (alice may delete anything in dev-* but a package's latest
version and its last one); ci-bot may delete only Unlisted or Archived pre-releases in dev-*;
carol is an auditor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.runtime import Gateway
from tests.e2e.cleanup_helpers import (
    ALLOWED,
    RUNNER,
    Cleanup,
    Package,
    applied_deletions,
    as_deleted,
    codeartifact_client,
    create_repository,
    entries,
    failure,
    kept,
    package_key,
    planned_deletions,
    result_map,
    seed,
    upstream_versions,
)
from tests.e2e.harness import GatewayFactory, approval_stub_for, stub_for, wait_for
from tests.e2e.test_recoverable_delete import Clock

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
WINDOW_DAYS = 30


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codeartifact(emulator: Emulator) -> Any:
    """boto3 on the emulator, with demo/dev-x created."""
    client = codeartifact_client(emulator)
    create_repository(client)
    return client


@pytest.fixture
def gateway(make_gateway: GatewayFactory, clock: Clock, codeartifact: Any) -> Iterator[Gateway]:
    """The shipped policy on the test clock; the job runner looks for work every 0.1 s."""
    with make_gateway(clock=clock, policy={}, cleanup=RUNNER) as gw:
        yield gw


def _spread(
    versions: Sequence[str], start: datetime, status: dict[str, str] | None = None
) -> list[tuple[str, str, datetime]]:
    """`versions` published in this order, a day apart from `start`."""
    status = status or {}
    return [(v, status.get(v, "Published"), start + i * DAY) for i, v in enumerate(versions)]


def _dry_run(
    gateway: Gateway, principal: str, package: Package, versions: Sequence[str], **fields: Any
) -> pb.DeletePackageVersionsResponse:
    """DeletePackageVersions(validate_only, allow_partial) of `versions`, as `principal`."""
    with stub_for(gateway, principal=principal) as stub:
        response: pb.DeletePackageVersionsResponse = stub.DeletePackageVersions(
            pb.DeletePackageVersionsRequest(
                **package.fields(),
                versions=list(versions),
                validate_only=True,
                allow_partial=True,
                **fields,
            ),
            timeout=30,
        )
    return response


# --- 1. a plan is what its job does, and what a dry run decides --------------------------------


@dataclass(frozen=True)
class Case:
    """A package, its versions (publication order), the rule, who plans, and what the rule
    must delete by the format's ordering (the rest it keeps)."""

    package: Package
    versions: Sequence[str]
    rule: pb.CleanupRule
    principal: str
    deleted: frozenset[str]
    allowed: frozenset[str] | None = None
    """Of `deleted`, what policy allows (None: all)."""
    status: dict[str, str] = field(default_factory=dict)


CASES = {
    # SemVer 2: 1.10.0 > 1.9.0, alpha.10 > alpha.2 (numeric identifiers), a pre-release below
    # its release. 2.0.0-alpha.2, published last, is the latest; 1.10.0 the newest release.
    # ci-bot may delete only the Unlisted pre-releases: the releases are DENIED.
    "npm-semver": Case(
        Package("npm", "acme", "retain-npm"),
        [
            "1.0.0",
            "1.2.0-rc.1",
            "1.2.0-rc.2",
            "1.2.0",
            "1.10.0",
            "1.9.0",
            "2.0.0-alpha.1",
            "2.0.0-alpha.10",
            "2.0.0-alpha.2",
        ],
        pb.CleanupRule(keep_newest_releases=1, keep_newest_prereleases=1),
        "ci-bot",
        deleted=frozenset({"2.0.0-alpha.1", "1.2.0-rc.2", "1.2.0-rc.1", "1.9.0", "1.2.0", "1.0.0"}),
        allowed=frozenset({"2.0.0-alpha.1", "1.2.0-rc.2", "1.2.0-rc.1"}),
        status=dict.fromkeys(("1.2.0-rc.1", "1.2.0-rc.2", "2.0.0-alpha.1"), "Unlisted"),
    ),
    # PEP 440: 2.0 > 1.10 > 1.2.dev3 > 1.1 > 1.1rc1 > 1.1b2 > 1.1a1 > 1.0.post1 > 1.0.
    "pypi-pep440": Case(
        Package("pypi", "", "retain-pypi"),
        ["1.0", "1.0.post1", "1.1a1", "1.1b2", "1.1rc1", "1.1", "1.2.dev3", "1.10", "2.0"],
        pb.CleanupRule(keep_newest=3),
        "alice",
        deleted=frozenset({"1.1", "1.1rc1", "1.1b2", "1.1a1", "1.0.post1", "1.0"}),
    ),
    # Maven's ComparableVersion: alpha < beta < rc < SNAPSHOT < release; pre-releases only.
    "maven-prereleases": Case(
        Package("maven", "com.acme", "retain-maven"),
        ["1.0", "1.1-alpha-1", "1.1-beta-2", "1.1-rc-1", "1.1-SNAPSHOT", "1.1", "1.10", "1.9"],
        pb.CleanupRule(prerelease=pb.PRERELEASE_SCOPE_ONLY, keep_newest_prereleases=1),
        "alice",
        deleted=frozenset({"1.1-rc-1", "1.1-beta-2", "1.1-alpha-1"}),
    ),
    # Gem::Version: 1.1.0.beta > 1.0.2 > 1.0.1 > 1.0.0 > 1.0.0.rc1 > 1.0.0.pre > 0.9.9; at most
    # two deletions, the oldest first.
    "ruby-max-deletions": Case(
        Package("ruby", "", "retain-ruby"),
        ["0.9.9", "1.0.0.pre", "1.0.0.rc1", "1.0.0", "1.0.1", "1.1.0.beta", "1.0.2"],
        pb.CleanupRule(keep_newest=3, max_deletions=2),
        "alice",
        deleted=frozenset({"1.0.0.pre", "0.9.9"}),
    ),
    # NuGet: 1.1.0 > 1.0.10 > 1.0.9 > 1.0.1 > 1.0.1-beta > 1.0.0.1 > 1.0.0; releases only, an
    # exclude glob.
    "nuget-releases": Case(
        Package("nuget", "", "Retain.Nuget"),
        ["1.0.0", "1.0.0.1", "1.0.1-beta", "1.0.1", "1.0.10", "1.0.9", "2.0.0-preview.1", "1.1.0"],
        pb.CleanupRule(
            prerelease=pb.PRERELEASE_SCOPE_EXCLUDE, keep_newest_releases=2, exclude=["1.0.0.*"]
        ),
        "alice",
        deleted=frozenset({"1.0.9", "1.0.1", "1.0.0"}),
        status={"2.0.0-preview.1": "Unlisted"},
    ),
    # Generic: no version ordering, ranked by publication; Published only; builds only.
    "generic-published": Case(
        Package("generic", "tools", "retain-generic"),
        ["build-9", "build-10", "nightly", "build-2", "build-1", "build-3", "build-0"],
        pb.CleanupRule(
            order=pb.CLEANUP_ORDER_PUBLISHED,
            keep_newest=2,
            statuses=[pb.PACKAGE_VERSION_STATUS_PUBLISHED],
            include_regex=r"build-\d+",
        ),
        "alice",
        deleted=frozenset({"build-9", "build-10", "build-2"}),
        status={"build-1": "Unlisted"},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_plan_is_what_its_job_deletes_and_what_a_dry_run_decides(
    name: str, gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Per format: the plan keeps the format's order, equals a dry run, and is what the job does."""
    # Per format and rule: the plan deletes what the format's ordering says; its policy outcomes are
    # a dry run's decisions; applying it deletes exactly its allowed deletions, each once, and every
    # other version is still in CodeArtifact.
    case = CASES[name]
    package = case.package
    seed(emulator, package, _spread(case.versions, clock.now - 100 * DAY, case.status))
    caller = Cleanup(gateway, case.principal)

    response = caller.plan(case.rule, **package.fields())
    plan = response.plan
    assert [package.key] == [package_key(p) for p in response.packages]
    decided = {v.version: v for v in response.packages[0].versions}
    assert set(case.versions) == set(decided)
    doomed = {v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE}
    assert case.deleted == doomed, {v: pb.CleanupClause.Name(e.clause) for v, e in decided.items()}
    allowed = {v for v in doomed if decided[v].policy_outcome in ALLOWED}
    assert (case.allowed if case.allowed is not None else case.deleted) == allowed
    for version, entry in decided.items():
        if entry.action == pb.CLEANUP_ACTION_KEEP:
            assert pb.VERSION_OUTCOME_UNSPECIFIED == entry.policy_outcome
            assert pb.CLEANUP_CLAUSE_SELECTED != entry.clause
        else:
            assert pb.CLEANUP_CLAUSE_SELECTED == entry.clause, version
    assert (plan.delete_count, plan.keep_count, plan.allowed_count, plan.denied_count) == (
        len(doomed),
        len(case.versions) - len(doomed),
        len(allowed),
        len(doomed) - len(allowed),
    )

    # The plan's policy outcomes are a dry run's decisions, made on the same state.
    dry = _dry_run(gateway, case.principal, package, sorted(doomed), justification="retention")
    assert doomed == set(dry.decisions)
    for version in doomed:
        assert (
            decided[version].policy_outcome,
            list(decided[version].policy_ids),
            decided[version].policy_message,
        ) == (
            dry.decisions[version].outcome,
            list(dry.decisions[version].policy_ids),
            dry.decisions[version].message,
        ), version

    emulator.clear_calls()
    job = caller.wait(caller.apply(plan).job_id)
    assert pb.CLEANUP_JOB_STATE_SUCCEEDED == job.state, job
    assert (job.versions_planned, job.versions_deleted, job.versions_denied) == (
        len(doomed),
        len(allowed),
        len(doomed) - len(allowed),
    )
    assert Counter({(package.key, v): 1 for v in allowed}) == as_deleted(
        applied_deletions(emulator)
    )
    remaining = upstream_versions(codeartifact, package)
    assert set(case.versions) - allowed == set(remaining)
    for version in set(case.versions) - allowed:
        assert case.status.get(version, "Published") == remaining[version]
    results = result_map(caller.results(job.job_id))
    assert {(package.key, v): pb.CLEANUP_RESULT_DELETED for v in allowed} | {
        (package.key, v): pb.CLEANUP_RESULT_DENIED for v in doomed - allowed
    } == results


def test_a_repository_plan_covers_every_format_and_its_job_deletes_exactly_that(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """A repository plan over five formats pages, and its job deletes exactly what it allows."""
    # One plan over a repository of six packages in five formats (one rule): the plan pages through
    # GetCleanupPlan, and its job deletes exactly the allowed deletions of every package, once each;
    # every kept version is still in CodeArtifact.
    start = clock.now - 100 * DAY
    for name in ("npm-semver", "pypi-pep440", "maven-prereleases", "ruby-max-deletions"):
        case = CASES[name]
        seed(emulator, case.package, _spread(case.versions, start, case.status))
    extra = Package("npm", "", "solo")
    seed(emulator, extra, _spread(["0.1.0"], start))
    generic = CASES["generic-published"]
    seed(emulator, generic.package, _spread(generic.versions, start, generic.status))
    caller = Cleanup(gateway, "alice")

    response = caller.plan(
        pb.CleanupRule(keep_newest=2), domain="demo", repository="dev-x", page_size=2
    )
    assert response.next_page_token
    packages = caller.packages(response.plan.plan_id)
    assert 6 == response.plan.package_count == len(packages)
    assert response.packages[:2] == packages[:2]
    decided = entries(packages)
    # Without an ordering of its own, every generic version is kept (and a warning says so).
    generic_entries = [e for (k, _), e in decided.items() if k == generic.package.key]
    assert {pb.CLEANUP_CLAUSE_UNORDERED, pb.CLEANUP_CLAUSE_LATEST} >= {
        e.clause for e in generic_entries
    }
    assert any("order = published" in w for w in response.plan.warnings)
    assert all(
        e.action == pb.CLEANUP_ACTION_KEEP for (k, _), e in decided.items() if k == extra.key
    )
    doomed = planned_deletions(packages)
    assert len(doomed) == response.plan.allowed_count > 0

    emulator.clear_calls()
    job = caller.wait(caller.apply(response.plan).job_id)
    assert pb.CLEANUP_JOB_STATE_SUCCEEDED == job.state, job
    assert Counter(dict.fromkeys(doomed, 1)) == as_deleted(applied_deletions(emulator))
    for key in {k for k, _ in decided}:
        package = Package(*key)
        remaining = set(upstream_versions(codeartifact, package))
        assert {v for (k, v) in kept(packages) if k == key} <= remaining
        assert not {v for (k, v) in doomed if k == key} & remaining


# --- 2. ages, on the gateway's clock ------------------------------------------------------------


def _daily(now: datetime, days: int) -> list[tuple[str, str, datetime]]:
    """1.0.0 ... 1.0.<days-1>, 1.0.i published (days - i) days before `now`."""
    return [(f"1.0.{i}", "Published", now - (days - i) * DAY) for i in range(days)]


def test_ages_are_decided_by_the_gateway_clock(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """older_than_days and keep_younger_than_days decide by the gateway's injected clock."""
    # older_than_days deletes what was published more than N days before the gateway's clock (a
    # version exactly N days old is kept, one a second older is not); moving the clock ten days
    # moves the split by ten versions; keep_younger_than_days keeps what is younger.
    package = Package("npm", "acme", "nightly")
    versions = _daily(clock.now, 60)
    versions[29] = ("1.0.29", "Published", clock.now - 30 * DAY - SECOND)
    versions[30] = ("1.0.30", "Published", clock.now - 30 * DAY)
    seed(emulator, package, versions)
    published = {v: when for v, _, when in versions}
    caller = Cleanup(gateway, "alice")
    rule = pb.CleanupRule(older_than_days=30, keep_newest=3)

    first = caller.plan(rule, **package.fields())
    decided = {v.version: v for v in first.packages[0].versions}
    assert {f"1.0.{i}" for i in range(30)} == {
        v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE
    }
    assert pb.CLEANUP_CLAUSE_NOT_OLDER_THAN == decided["1.0.30"].clause
    assert pb.CLEANUP_CLAUSE_SELECTED == decided["1.0.29"].clause
    for version, entry in decided.items():
        if entry.HasField("publish_time"):  # where the plan read it, it is what was published
            assert published[version] == entry.publish_time.ToDatetime(UTC), version

    young = caller.plan(pb.CleanupRule(keep_younger_than_days=7), **package.fields())
    decided = {v.version: v for v in young.packages[0].versions}
    # 1.0.i is 60 - i days old: 1.0.54 ... 1.0.58 are younger than 7 days, 1.0.59 the latest
    # (1.0.53, exactly 7 days old, is on the boundary: not asserted).
    young_ones = {v for v, e in decided.items() if e.clause == pb.CLEANUP_CLAUSE_KEEP_YOUNGER_THAN}
    assert {f"1.0.{i}" for i in range(54, 59)} == young_ones - {"1.0.53"}
    assert pb.CLEANUP_CLAUSE_LATEST == decided["1.0.59"].clause
    assert {f"1.0.{i}" for i in range(53)} == {
        v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE
    } - {"1.0.53"}

    clock.advance(10 * DAY)
    later = caller.plan(rule, **package.fields())
    decided = {v.version: v for v in later.packages[0].versions}
    assert {f"1.0.{i}" for i in range(40)} == {
        v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE
    }
    assert pb.CLEANUP_CLAUSE_NOT_OLDER_THAN == decided["1.0.40"].clause  # exactly 30 days now

    # Applying the later plan deletes its 40, and only them.
    emulator.clear_calls()
    job = caller.wait(caller.apply(later.plan).job_id)
    assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, 40) == (job.state, job.versions_deleted), job
    assert {f"1.0.{i}" for i in range(40, 60)} == set(upstream_versions(codeartifact, package))


def test_the_documented_prerelease_example_decides_every_clause(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """The documented pre-release example deletes only pre-releases between 30 and 60 days old."""
    # "Delete pre-releases older than 30 days, but keep the newest 5 of them and never anything
    # younger than 7 days" (the docstring's example) on nightly pre-releases, one a day for 60 days,
    # and releases: exactly the pre-releases between 30 and 60 days old go.
    package = Package("npm", "acme", "web")
    versions = [
        (f"2.0.0-nightly.{i}", "Published", clock.now - (60 - i) * DAY + HOUR) for i in range(60)
    ]
    versions += [("1.0.0", "Published", clock.now - 200 * DAY)]
    versions += [("1.1.0", "Published", clock.now - 100 * DAY)]
    seed(emulator, package, versions)
    rule = pb.CleanupRule(
        prerelease=pb.PRERELEASE_SCOPE_ONLY,
        older_than_days=30,
        keep_newest_prereleases=5,
        keep_younger_than_days=7,
    )
    response = Cleanup(gateway, "alice").plan(rule, **package.fields())
    decided = {v.version: v for v in response.packages[0].versions}
    # nightly.i is 60 - i days old less an hour: older than 30 days for i < 30.
    assert {f"2.0.0-nightly.{i}" for i in range(30)} == {
        v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE
    }
    clauses = Counter(pb.CleanupClause.Name(e.clause) for e in decided.values())
    # nightly.59 is the latest (and counts among the newest five); nightly.53 and .54 are
    # younger than 7 days; nightly.30 ... .52 are not older than 30 days.
    assert {
        "CLEANUP_CLAUSE_PRERELEASE_SCOPE": 2,
        "CLEANUP_CLAUSE_LATEST": 1,
        "CLEANUP_CLAUSE_KEEP_NEWEST_PRERELEASES": 4,
        "CLEANUP_CLAUSE_KEEP_YOUNGER_THAN": 2,
        "CLEANUP_CLAUSE_NOT_OLDER_THAN": 23,
        "CLEANUP_CLAUSE_SELECTED": 30,
    } == dict(clauses)
    assert pb.CLEANUP_CLAUSE_KEEP_YOUNGER_THAN == decided["2.0.0-nightly.53"].clause
    assert pb.CLEANUP_CLAUSE_NOT_OLDER_THAN == decided["2.0.0-nightly.52"].clause
    assert dict(response.plan.clause_counts.items()) == dict(clauses)


def test_an_age_rule_on_a_thousand_versions_reads_few_publication_times(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """An age rule on 1,000 versions reads one list page and at most 30 times; its job is exact."""
    # A package of 1,000 versions (one an hour) under two age thresholds: the plan reads one page of
    # versions and about 30 publication times (binary search), says so in upstream_calls, decides
    # each version by its age; the job deletes the planned ones in calls of at most 100 versions,
    # each once.
    package = Package("generic", "tools", "hourly")
    versions = [(f"b{i:04d}", "Published", clock.now - (1000 - i) * HOUR) for i in range(1000)]
    seed(emulator, package, versions)
    caller = Cleanup(gateway, "alice")

    emulator.clear_calls()
    rule = pb.CleanupRule(
        order=pb.CLEANUP_ORDER_PUBLISHED, older_than_days=30, keep_younger_than_days=7
    )
    response = caller.plan(rule, **package.fields())
    calls = Counter(c.operation for c in emulator.calls())
    assert 1 == calls["ListPackageVersions"]
    assert calls["DescribePackageVersion"] <= 30, calls
    assert {"ListPackageVersions", "DescribePackageVersion"} >= set(calls)
    assert response.plan.upstream_calls == sum(calls.values())
    # b0i is 1000 - i hours old: older than 30 days (720 h) for i < 280.
    old = {f"b{i:04d}" for i in range(280)}
    decided = {v.version: v for v in response.packages[0].versions}
    assert old == {v for v, e in decided.items() if e.action == pb.CLEANUP_ACTION_DELETE}
    assert pb.CLEANUP_CLAUSE_NOT_OLDER_THAN == decided["b0280"].clause  # exactly 720 h
    assert pb.CLEANUP_CLAUSE_KEEP_YOUNGER_THAN == decided["b0900"].clause

    emulator.clear_calls()
    job = caller.wait(caller.apply(response.plan).job_id, timeout=60)
    assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, 280) == (job.state, job.versions_deleted), job
    sizes = [len(c.params["versions"]) for c in emulator.calls("DeletePackageVersions")]
    assert sizes
    assert max(sizes) <= 100, sizes
    assert Counter(dict.fromkeys(((package.key, v) for v in old), 1)) == as_deleted(
        applied_deletions(emulator)
    )
    assert {f"b{i:04d}" for i in range(280, 1000)} == set(upstream_versions(codeartifact, package))


# --- 3. the plan changed under the job ----------------------------------------------------------


def test_versions_changed_since_planned_are_not_deleted(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Versions changed outside the gateway since planning are PLAN_CHANGED and never sent."""
    # After planning "keep the newest 3" of 1.0.0 ... 1.0.9, outside the gateway: 1.0.2 is unlisted,
    # 1.0.4 unlisted and published again (a new revision), 1.0.0 deleted, and the kept 1.0.8 deleted
    # (so the planned 1.0.6 is now among the newest three). The job reports those four PLAN_CHANGED
    # and sends none of them; it deletes 1.0.1, 1.0.3 and 1.0.5.
    package = Package("npm", "acme", "moving")
    versions = [f"1.0.{i}" for i in range(10)]
    seed(emulator, package, _spread(versions, clock.now - 20 * DAY))
    caller = Cleanup(gateway, "alice")
    response = caller.plan(pb.CleanupRule(keep_newest=3), **package.fields())
    assert {f"1.0.{i}" for i in range(7)} == {
        v.version for v in response.packages[0].versions if v.action == pb.CLEANUP_ACTION_DELETE
    }

    def status(version: str, target: str) -> None:
        codeartifact.update_package_versions_status(
            **package.boto(), versions=[version], targetStatus=target
        )

    status("1.0.2", "Unlisted")
    status("1.0.4", "Unlisted")
    status("1.0.4", "Published")
    codeartifact.delete_package_versions(**package.boto(), versions=["1.0.0", "1.0.8"])

    emulator.clear_calls()
    job = caller.wait(caller.apply(response.plan).job_id)
    assert pb.CLEANUP_JOB_STATE_SUCCEEDED == job.state, job
    assert (job.versions_deleted, job.versions_plan_changed) == (3, 4), job
    results = caller.results(job.job_id)
    by_version = {v.version: v for r in results for v in r.versions}
    assert {v: pb.CleanupResult.Name(r.result) for v, r in by_version.items()} == {
        f"1.0.{i}": "CLEANUP_RESULT_DELETED" for i in (1, 3, 5)
    } | {f"1.0.{i}": "CLEANUP_RESULT_PLAN_CHANGED" for i in (0, 2, 4, 6)}
    assert "status" in by_version["1.0.2"].message or "revision" in by_version["1.0.2"].message
    assert "revision" in by_version["1.0.4"].message
    assert "no longer exists" in by_version["1.0.0"].message
    assert "keeps it" in by_version["1.0.6"].message
    sent = [v for c in emulator.calls("DeletePackageVersions") for v in c.params["versions"]]
    assert ["1.0.1", "1.0.3", "1.0.5"] == sorted(sent)
    assert {
        "1.0.2": "Unlisted",
        "1.0.4": "Published",
        "1.0.6": "Published",
        "1.0.7": "Published",
        "1.0.9": "Published",
    } == upstream_versions(codeartifact, package)


# --- 5. recovery windows and approvals ----------------------------------------------------------


def _gated_gateway(make_gateway: GatewayFactory, clock: Clock) -> AbstractContextManager[Gateway]:
    """A gateway whose prod-* repositories have a 30-day window, so that the shipped policy
    asks a release admin's approval to purge there now."""
    return make_gateway(
        clock=clock,
        policy={},
        recovery={"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600},
        approvals={"sweep_interval_seconds": 3600},
        cleanup=RUNNER,
    )


def _plan_purge_now(caller: Cleanup, package: Package) -> pb.PlanCleanupResponse:
    """Alice's plan to purge now all but the newest 2 versions of `package`."""
    return caller.plan(
        pb.CleanupRule(keep_newest=2),
        **package.fields(),
        purge_now=True,
        justification="leaked credentials in old builds",
    )


def test_under_a_recovery_window_the_job_archives_and_restore_works(
    make_gateway: GatewayFactory, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Under a recovery window the job archives; ListPendingPurges shows them; restore works."""
    # With a 30-day window on demo/dev-x the plan says WOULD_ARCHIVE with the purge time; the job
    # archives (ARCHIVED, with that purge time); ListPendingPurges lists them for alice; a restore
    # brings one back.
    package = Package("npm", "acme", "windowed")
    versions = [f"1.0.{i}" for i in range(6)]
    seed(emulator, package, _spread(versions, clock.now - 20 * DAY))
    purge_time = clock.now + WINDOW_DAYS * DAY
    with make_gateway(
        clock=clock,
        policy={},
        recovery={"windows": {"demo/dev-x": float(WINDOW_DAYS)}, "worker_interval_seconds": 3600},
        cleanup=RUNNER,
    ) as gateway:
        caller = Cleanup(gateway, "alice")
        response = caller.plan(pb.CleanupRule(keep_newest=2), **package.fields())
        doomed = {f"1.0.{i}" for i in range(4)}
        for entry in response.packages[0].versions:
            if entry.version in doomed:
                assert pb.VERSION_OUTCOME_WOULD_ARCHIVE == entry.policy_outcome
                assert purge_time == entry.purge_time.ToDatetime(UTC)
        job = caller.wait(caller.apply(response.plan).job_id)
        assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, 4, 0) == (
            job.state,
            job.versions_archived,
            job.versions_deleted,
        ), job
        results = caller.results(job.job_id)
        for result in results[0].versions:
            assert pb.CLEANUP_RESULT_ARCHIVED == result.result
            assert purge_time == result.purge_time.ToDatetime(UTC)
        assert dict.fromkeys(doomed, "Archived") | {
            "1.0.4": "Published",
            "1.0.5": "Published",
        } == upstream_versions(codeartifact, package)
        with stub_for(gateway, principal="alice") as stub:
            listed = stub.ListPendingPurges(
                pb.ListPendingPurgesRequest(repository="dev-x", package="windowed"), timeout=10
            ).pending_purges
            assert doomed == {p.version for p in listed}
            assert {"alice"} == {p.requester for p in listed}
            assert {purge_time} == {p.purge_time.ToDatetime(UTC) for p in listed}
            restored = stub.RestorePackageVersions(
                pb.RestorePackageVersionsRequest(**package.fields(), versions=["1.0.1"]),
                timeout=10,
            )
        assert pb.PACKAGE_VERSION_STATUS_PUBLISHED == restored.successful_versions["1.0.1"].status
        assert "Published" == upstream_versions(codeartifact, package)["1.0.1"]


def test_deleting_for_good_in_prod_waits_for_approval_then_runs(
    make_gateway: GatewayFactory, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """purge_now in prod: the job opens a deletion request; dave approves; alice executes it."""
    # purge_now in prod-release (30-day window): the plan says NEEDS_APPROVAL (the shipped prod-
    # irreversible-needs-release-admin-approval); the job deletes nothing and reports
    # AWAITING_APPROVAL with the deletion request; dave approves, alice executes, and the versions
    # are gone.
    package = Package("npm", "acme", "gated", repository="prod-release")
    versions = [f"1.0.{i}" for i in range(4)]
    seed(emulator, package, _spread(versions, clock.now - 20 * DAY))
    with _gated_gateway(make_gateway, clock) as gateway:
        caller = Cleanup(gateway, "alice")
        response = _plan_purge_now(caller, package)
        plan = response.plan
        assert (2, 2, 0) == (plan.delete_count, plan.needs_approval_count, plan.allowed_count)
        for entry in response.packages[0].versions:
            if entry.version in {"1.0.0", "1.0.1"}:
                assert pb.VERSION_OUTCOME_NEEDS_APPROVAL == entry.policy_outcome
                assert "prod-irreversible-needs-release-admin-approval" in entry.policy_ids

        emulator.clear_calls()
        job = caller.wait(caller.apply(plan).job_id)
        assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, 2, 0) == (
            job.state,
            job.versions_awaiting_approval,
            job.versions_deleted,
        ), job
        assert [] == emulator.calls("DeletePackageVersions")
        (result,) = caller.results(job.job_id)
        assert {"1.0.0", "1.0.1"} == {
            v.version for v in result.versions if v.result == pb.CLEANUP_RESULT_AWAITING_APPROVAL
        }
        request_id = result.deletion_request_id
        assert request_id
        with approval_stub_for(gateway, principal="dave") as dave:
            dave.ApproveDeletionRequest(
                pb.ApproveDeletionRequestRequest(id=request_id, reason="confirmed"), timeout=10
            )
        with approval_stub_for(gateway, principal="alice") as alice:
            shown = alice.GetDeletionRequest(pb.GetDeletionRequestRequest(id=request_id))
            assert {"1.0.0", "1.0.1"} == {v.version for v in shown.deletion_request.versions}
            done = alice.ExecuteDeletionRequest(
                pb.ExecuteDeletionRequestRequest(id=request_id), timeout=10
            )
        assert {"1.0.0", "1.0.1"} == set(done.result.successful_versions)
        assert {"1.0.2": "Published", "1.0.3": "Published"} == upstream_versions(
            codeartifact, package
        )


# --- 7. cancellation ----------------------------------------------------------------------------


@pytest.fixture
def idle_gateway(
    make_gateway: GatewayFactory, clock: Clock, codeartifact: Any
) -> Iterator[Gateway]:
    """The shipped policy; the job runner's pass runs at start-up only (the tests run it)."""
    with make_gateway(clock=clock, policy={}, cleanup={"interval_seconds": 3600}) as gw:
        yield gw


def _runner(gateway: Gateway) -> Any:
    runner = gateway.cleanup_runner
    assert runner is not None
    return runner


def test_a_queued_job_cancelled_deletes_nothing(
    idle_gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """A queued job cancelled by its requester (not by bob) is CANCELLED and deletes nothing."""
    # A job cancelled before a runner takes it is CANCELLED (with who and why); no runner takes it
    # afterwards and nothing is deleted; bob may not cancel alice's job; cancelling it again is
    # CLEANUP_JOB_FINISHED.
    package = Package("npm", "acme", "queued")
    versions = [f"1.0.{i}" for i in range(5)]
    seed(emulator, package, _spread(versions, clock.now - 20 * DAY))
    alice = Cleanup(idle_gateway, "alice")
    response = alice.plan(pb.CleanupRule(keep_newest=1), **package.fields())
    job = alice.apply(response.plan)
    assert pb.CLEANUP_JOB_STATE_QUEUED == job.state

    denied = failure(lambda: Cleanup(idle_gateway, "bob").cancel(job.job_id, "mine now"))
    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER") == (denied.code, denied.reason)
    assert pb.CLEANUP_JOB_STATE_QUEUED == alice.job(job.job_id).state

    cancelled = alice.cancel(job.job_id, "wrong rule")
    assert pb.CLEANUP_JOB_STATE_CANCELLED == cancelled.state
    assert "alice" in cancelled.cancel_reason
    assert "wrong rule" in cancelled.cancel_reason
    emulator.clear_calls()
    assert _runner(idle_gateway).run_once() is False
    assert pb.CLEANUP_JOB_STATE_CANCELLED == alice.job(job.job_id).state
    assert [] == emulator.calls("DeletePackageVersions")
    assert set(versions) == set(upstream_versions(codeartifact, package))

    again = failure(lambda: alice.cancel(job.job_id))
    assert (grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_JOB_FINISHED") == (
        again.code,
        again.reason,
    )


def test_a_finished_job_cannot_be_cancelled(
    idle_gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Cancelling a SUCCEEDED job is FAILED_PRECONDITION / CLEANUP_JOB_FINISHED."""
    # Cancelling a SUCCEEDED job is FAILED_PRECONDITION / CLEANUP_JOB_FINISHED and changes nothing.
    package = Package("npm", "acme", "done")
    seed(emulator, package, _spread(["1.0.0", "1.0.1", "1.0.2"], clock.now - 5 * DAY))
    alice = Cleanup(idle_gateway, "alice")
    job = alice.apply(alice.plan(pb.CleanupRule(keep_newest=1), **package.fields()).plan)
    assert _runner(idle_gateway).run_once() is True
    assert pb.CLEANUP_JOB_STATE_SUCCEEDED == alice.job(job.job_id).state
    refused = failure(lambda: alice.cancel(job.job_id, "too late"))
    assert (grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_JOB_FINISHED") == (
        refused.code,
        refused.reason,
    )
    after = alice.job(job.job_id)
    assert (pb.CLEANUP_JOB_STATE_SUCCEEDED, "") == (after.state, after.cancel_reason)


def _three_packages(emulator: Emulator, clock: Clock) -> list[Package]:
    packages = [Package("npm", "acme", f"batch-{n}") for n in range(3)]
    for package in packages:
        seed(emulator, package, _spread(["1.0.0", "1.0.1", "1.0.2"], clock.now - 5 * DAY))
    return packages


def test_cancelling_a_running_job_finishes_the_package_in_progress_only(
    gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Cancelled mid-job: the package in progress finishes, the others are untouched."""
    # A job over three packages, cancelled while its first deletion is in CodeArtifact (held there
    # by a latency fault): that package finishes, the other two are not touched, the job ends
    # CANCELLED.
    packages = _three_packages(emulator, clock)
    alice = Cleanup(gateway, "alice")
    response = alice.plan(
        pb.CleanupRule(keep_newest=1), domain="demo", repository="dev-x", package_pattern="batch-*"
    )
    assert 3 == response.plan.package_count
    emulator.clear_calls()
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0, count=1)
    )
    job = alice.apply(response.plan)
    assert wait_for(lambda: not emulator.faults())  # the first deletion is held upstream
    marked = alice.cancel(job.job_id, "stop")  # the runner holds it: marked for the runner
    assert (pb.CLEANUP_JOB_STATE_RUNNING, "cancelled by alice: stop") == (
        marked.state,
        marked.cancel_reason,
    )
    done = alice.wait(job.job_id)
    assert pb.CLEANUP_JOB_STATE_CANCELLED == done.state, done
    assert (1, 2) == (done.packages_done, done.versions_deleted), done
    deleted = applied_deletions(emulator)
    assert {("npm", "acme", "batch-0", "1.0.0"): 1, ("npm", "acme", "batch-0", "1.0.1"): 1} == dict(
        deleted
    )
    for package in packages[1:]:
        assert {"1.0.0", "1.0.1", "1.0.2"} == set(upstream_versions(codeartifact, package))


def test_a_cancelled_job_reports_its_unstarted_deletions_cancelled(
    idle_gateway: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """A job cancelled before it started reports each planned deletion as CANCELLED."""
    # GetCleanupJob of a job cancelled before it started accounts for every planned deletion: each
    # is CLEANUP_RESULT_CANCELLED ("not deleted: the job was cancelled first").
    _three_packages(emulator, clock)
    alice = Cleanup(idle_gateway, "alice")
    response = alice.plan(
        pb.CleanupRule(keep_newest=1), domain="demo", repository="dev-x", package_pattern="batch-*"
    )
    job = alice.apply(response.plan)
    alice.cancel(job.job_id, "changed my mind")
    planned = {
        key
        for key, entry in entries(alice.packages(response.plan.plan_id)).items()
        if entry.action == pb.CLEANUP_ACTION_DELETE
    }
    assert 6 == len(planned)
    results = result_map(alice.results(job.job_id))
    assert dict.fromkeys(planned, pb.CLEANUP_RESULT_CANCELLED) == results


def test_a_changed_version_in_an_approval_call_is_plan_changed_not_awaiting(
    make_gateway: GatewayFactory, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Of versions needing approval, one changed since the plan is PLAN_CHANGED (not sent),
    the others AWAITING_APPROVAL in the deletion request the call recorded."""
    package = Package("npm", "acme", "gated-moving", repository="prod-release")
    versions = [f"1.0.{i}" for i in range(5)]
    seed(emulator, package, _spread(versions, clock.now - 20 * DAY))
    with _gated_gateway(make_gateway, clock) as gateway:
        caller = Cleanup(gateway, "alice")
        response = _plan_purge_now(caller, package)
        assert (3, 3) == (response.plan.delete_count, response.plan.needs_approval_count)
        codeartifact.update_package_versions_status(
            **package.boto(), versions=["1.0.1"], targetStatus="Unlisted"
        )
        job = caller.wait(caller.apply(response.plan).job_id)
        (result,) = caller.results(job.job_id)
        assert {
            "1.0.0": pb.CLEANUP_RESULT_AWAITING_APPROVAL,
            "1.0.1": pb.CLEANUP_RESULT_PLAN_CHANGED,
            "1.0.2": pb.CLEANUP_RESULT_AWAITING_APPROVAL,
        } == {v.version: v.result for v in result.versions}
        assert result.deletion_request_id
        assert (2, 1) == (job.versions_awaiting_approval, job.versions_plan_changed)
