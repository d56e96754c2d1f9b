"""CleanupService against bad input and attacks, over real gRPC, the emulator and a real SQLite
store, with the shipped policy.

* Every bad field of PlanCleanupRequest and its CleanupRule is INVALID_ARGUMENT / INVALID_REQUEST
  with a BadRequest naming it (and only the bad ones), never INTERNAL, and nothing is read from
  or sent to CodeArtifact (the emulator's call log stays empty). Regular expressions are RE2:
  a pattern that would backtrack catastrophically is answered at once.
* Ids, hashes, page tokens and request ids of the other methods are checked the same way;
  unknown ids are NOT_FOUND.
* Only the requester applies or cancels; auditors read; others do not; nobody anonymous.
* A plan past its time, a plan or a job written into the database outside the gateway, and
  page tokens of another listing are refused, and nothing is deleted.
* Hypothesis generates CleanupRules: never INTERNAL, and the bad fields named are exactly those
  an independent reading of the rule's documented limits finds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
import re2
from google.rpc import error_details_pb2
from hypothesis import event, given
from hypothesis import strategies as st

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator
from pkggov_gateway.adapters.sql import SqliteDialect
from pkggov_gateway.config import DEV_CLEANUP_RULES
from pkggov_gateway.domain.cleanup import plan_hash
from pkggov_gateway.runtime import Gateway
from tests.e2e.cleanup_helpers import (
    Cleanup,
    Package,
    applied_deletions,
    codeartifact_client,
    create_repository,
    failure,
    seed,
    upstream_versions,
)
from tests.e2e.harness import (
    SOAK,
    GatewayFactory,
    RichError,
    bad_fields,
    fuzz_settings,
    gateway_settings,
    rich_error,
    running_gateway,
)
from tests.e2e.test_recoverable_delete import Clock

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
UNKNOWN = "7d2a3c4e-0b1f-4e5a-9c8d-123456789abc"
"""A well-formed UUID no plan or job has."""
INVALID = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")

LEFT_PAD: dict[str, Any] = {
    "domain": "demo",
    "repository": "dev-shared",
    "format": pb.PACKAGE_FORMAT_NPM,
    "package": "left-pad",
}
"""A demo package with four releases."""


@pytest.fixture(scope="module")
def shipped(emulator: Emulator, _logging: None) -> Iterator[Gateway]:
    """A gateway with the shipped policy and the development profile's named rule; its job
    runner's pass runs at start-up only (the tests that need one run it)."""
    settings = gateway_settings(
        emulator.endpoint_url,
        policy={},
        cleanup={
            "interval_seconds": 3600,
            "rules": dict(DEV_CLEANUP_RULES),
            "max_open_plans": 100_000,  # every test of the module plans as alice
        },
    )
    with running_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codeartifact(emulator: Emulator) -> Any:
    client = codeartifact_client(emulator)
    create_repository(client)
    return client


def _plan(**fields: Any) -> dict[str, Any]:
    """A valid PlanCleanupRequest's fields (left-pad, keep the newest 1) with `fields` over."""
    return {**LEFT_PAD, "rule": pb.CleanupRule(keep_newest=1), "justification": "x", **fields}


def _refused(gateway: Gateway, principal: str | None = "alice", **fields: Any) -> RichError:
    """PlanCleanup with exactly `fields`, which must fail."""
    caller = Cleanup(gateway, principal)
    return failure(lambda: caller.call("PlanCleanup", pb.PlanCleanupRequest(**fields)))


def _runner(gateway: Gateway) -> Any:
    runner = gateway.cleanup_runner
    assert runner is not None
    return runner


def _db(gateway: Gateway) -> str:
    dialect = gateway.audit_store.dialect
    assert isinstance(dialect, SqliteDialect)
    return str(dialect.path)


@contextlib.contextmanager
def _sqlite(gateway: Gateway) -> Iterator[sqlite3.Connection]:
    """The gateway's SQLite file, opened outside the gateway (as an intruder would)."""
    conn = sqlite3.connect(_db(gateway), timeout=10, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --- every field of PlanCleanupRequest and CleanupRule -----------------------------------------

CATASTROPHIC = "(a+)+" * 833 + "b"
"""About 5,000 characters of nested quantifiers."""

BAD_PLANS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "domain missing": (_plan(domain=""), {"domain"}),
    "domain with bad characters": (_plan(domain="Demo!"), {"domain"}),
    "repository missing": (_plan(repository=""), {"repository"}),
    "repository too long": (_plan(repository="r" * 101), {"repository"}),
    "domain_owner not an account": (_plan(domain_owner="12345"), {"domain_owner"}),
    "format unknown (raw 99)": (_plan(format=99), {"format"}),
    "format missing with a package": (_plan(format=pb.PACKAGE_FORMAT_UNSPECIFIED), {"format"}),
    "namespace for pypi": (
        _plan(format=pb.PACKAGE_FORMAT_PYPI, namespace="acme", package="requests-lite"),
        {"namespace"},
    ),
    "namespace missing for maven": (
        _plan(format=pb.PACKAGE_FORMAT_MAVEN, package="core"),
        {"namespace"},
    ),
    "npm scope with @": (_plan(namespace="@acme"), {"namespace"}),
    "package with a slash": (_plan(package="left/pad"), {"package"}),
    "package and package_pattern": (_plan(package_pattern="left-*"), {"package_pattern"}),
    "package_pattern too long": (
        _plan(package="", format=0, package_pattern="*" * 256),
        {"package_pattern"},
    ),
    "package_pattern unprintable": (
        _plan(package="", format=0, package_pattern="left\x00*"),
        {"package_pattern"},
    ),
    "justification too long": (_plan(justification="x" * 1025), {"justification"}),
    "justification with a control character": (_plan(justification="a\x07b"), {"justification"}),
    "both rule_name and rule": (_plan(rule_name="dev-prereleases"), {"rule_name"}),
    "neither rule_name nor rule": (_plan(rule=None), {"rule_name"}),
    "rule_name with bad characters": (_plan(rule=None, rule_name="no such rule!"), {"rule_name"}),
    "page_size negative": (_plan(page_size=-1), {"page_size"}),
    "keep_newest negative": (_plan(rule=pb.CleanupRule(keep_newest=-1)), {"rule.keep_newest"}),
    "keep_newest int32 max": (
        _plan(rule=pb.CleanupRule(keep_newest=2**31 - 1)),
        {"rule.keep_newest"},
    ),
    "keep_newest 0 is no guard": (_plan(rule=pb.CleanupRule(keep_newest=0)), {"rule.keep_newest"}),
    "patterns alone are no guard": (
        _plan(rule=pb.CleanupRule(include=["1.*"], exclude_regex="2.*")),
        {"rule.keep_newest"},
    ),
    "keep_newest_releases negative": (
        _plan(rule=pb.CleanupRule(keep_newest=1, keep_newest_releases=-1)),
        {"rule.keep_newest_releases"},
    ),
    "keep_newest_prereleases above 100000": (
        _plan(rule=pb.CleanupRule(keep_newest=1, keep_newest_prereleases=100_001)),
        {"rule.keep_newest_prereleases"},
    ),
    "older_than_days above 36500, the only guard": (
        _plan(rule=pb.CleanupRule(older_than_days=36_501)),
        {"rule.older_than_days", "rule.keep_newest"},
    ),
    "keep_newest_releases with pre-releases only": (
        _plan(
            rule=pb.CleanupRule(
                prerelease=pb.PRERELEASE_SCOPE_ONLY, keep_newest_releases=3, older_than_days=9
            )
        ),
        {"rule.keep_newest_releases"},
    ),
    "keep_newest_prereleases with releases only, the only guard": (
        _plan(
            rule=pb.CleanupRule(prerelease=pb.PRERELEASE_SCOPE_EXCLUDE, keep_newest_prereleases=3)
        ),
        {"rule.keep_newest_prereleases", "rule.keep_newest"},
    ),
    "keep_younger_than_days negative": (
        _plan(rule=pb.CleanupRule(keep_newest=1, keep_younger_than_days=-7)),
        {"rule.keep_younger_than_days"},
    ),
    "max_deletions negative": (
        _plan(rule=pb.CleanupRule(keep_newest=1, max_deletions=-1)),
        {"rule.max_deletions"},
    ),
    "order unknown (raw 99)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, order=99)),  # type: ignore[arg-type]
        {"rule.order"},
    ),
    "order negative (raw -1)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, order=-1)),  # type: ignore[arg-type]
        {"rule.order"},
    ),
    "prerelease unknown (raw 42)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, prerelease=42)),  # type: ignore[arg-type]
        {"rule.prerelease"},
    ),
    "statuses unknown (raw 42)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, statuses=[42])),  # type: ignore[list-item]
        {"rule.statuses[0]"},
    ),
    "statuses Deleted": (
        _plan(
            rule=pb.CleanupRule(
                keep_newest=1,
                statuses=[pb.PACKAGE_VERSION_STATUS_PUBLISHED, pb.PACKAGE_VERSION_STATUS_DELETED],
            )
        ),
        {"rule.statuses[1]"},
    ),
    "statuses unspecified": (
        _plan(rule=pb.CleanupRule(keep_newest=1, statuses=[0])),  # type: ignore[list-item]
        {"rule.statuses[0]"},
    ),
    "include empty pattern": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include=["1.*", ""])),
        {"rule.include[1]"},
    ),
    "include pattern too long": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include=["a" * 256])),
        {"rule.include[0]"},
    ),
    "include 51 patterns": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include=["*"] * 51)),
        {"rule.include"},
    ),
    "include 20,000 patterns": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include=[f"{i}.*" for i in range(20_000)])),
        {"rule.include"},
    ),
    "exclude unprintable": (
        _plan(rule=pb.CleanupRule(keep_newest=1, exclude=["ok", "bad\x01"])),
        {"rule.exclude[1]"},
    ),
    "include_regex unbalanced": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include_regex="(")),
        {"rule.include_regex"},
    ),
    "include_regex backreference (not RE2)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include_regex=r"(a)\1")),
        {"rule.include_regex"},
    ),
    "exclude_regex lookahead (not RE2)": (
        _plan(rule=pb.CleanupRule(keep_newest=1, exclude_regex="(?=1)1.*")),
        {"rule.exclude_regex"},
    ),
    "include_regex repetition too large": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include_regex="((a{1000}){1000}){1000}")),
        {"rule.include_regex"},
    ),
    "include_regex 5000 characters of nested quantifiers": (
        _plan(rule=pb.CleanupRule(keep_newest=1, include_regex=CATASTROPHIC)),
        {"rule.include_regex"},
    ),
    "exclude_regex with a NUL": (
        _plan(rule=pb.CleanupRule(keep_newest=1, exclude_regex="1\x00")),
        {"rule.exclude_regex"},
    ),
    "every field of a request at once": (
        _plan(
            domain="",
            repository="",
            justification="x" * 2000,
            rule=pb.CleanupRule(
                keep_newest=-1,
                older_than_days=-1,
                order=7,  # type: ignore[arg-type]
                statuses=[9],  # type: ignore[list-item]
                include=[""],
                include_regex="(",
            ),
        ),
        {
            "domain",
            "repository",
            "justification",
            "rule.keep_newest",
            "rule.older_than_days",
            "rule.order",
            "rule.statuses[0]",
            "rule.include[0]",
            "rule.include_regex",
        },
    ),
}


@pytest.mark.parametrize("name", list(BAD_PLANS))
def test_a_bad_plan_request_names_each_bad_field_and_reads_nothing(
    name: str, shipped: Gateway, emulator: Emulator
) -> None:
    """Each bad PlanCleanup field is INVALID_ARGUMENT naming it, and nothing is read upstream."""
    # Each bad field is INVALID_ARGUMENT / INVALID_REQUEST naming exactly the bad fields, answered
    # within a second, with nothing read from CodeArtifact and no plan stored.
    fields, expected = BAD_PLANS[name]
    emulator.clear_calls()
    with _sqlite(shipped) as conn:
        before = conn.execute("SELECT COUNT(*) FROM cleanup_plans").fetchone()[0]
    started = time.monotonic()
    error = _refused(shipped, **{k: v for k, v in fields.items() if v is not None})
    assert time.monotonic() - started < 1.0
    assert INVALID == (error.code, error.reason), error
    assert expected == set(bad_fields(error))
    assert [] == emulator.calls()
    with _sqlite(shipped) as conn:
        assert before == conn.execute("SELECT COUNT(*) FROM cleanup_plans").fetchone()[0]


@pytest.mark.parametrize(
    ("rule_name", "repository", "reason"),
    [
        ("no-such-rule", "dev-nightly", "UNKNOWN_CLEANUP_RULE"),
        ("dev-prereleases", "prod-release", "CLEANUP_RULE_NOT_APPLICABLE"),
    ],
)
def test_a_named_rule_must_exist_and_apply_to_the_repository(
    rule_name: str, repository: str, reason: str, shipped: Gateway, emulator: Emulator
) -> None:
    """An unknown named rule, or one for other repositories, is INVALID_ARGUMENT; nothing read."""
    # An unknown rule name, or a rule for other repositories, is INVALID_ARGUMENT with its reason,
    # and nothing is read from CodeArtifact.
    emulator.clear_calls()
    error = _refused(
        shipped, domain="demo", repository=repository, rule_name=rule_name, justification="x"
    )
    assert (grpc.StatusCode.INVALID_ARGUMENT, reason) == (error.code, error.reason)
    assert [] == emulator.calls()


def test_a_plan_too_large_is_refused(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """Beyond cleanup.max_packages the plan is FAILED_PRECONDITION / CLEANUP_TOO_LARGE."""
    with make_gateway(policy={}, cleanup={"max_packages": 2, "interval_seconds": 3600}) as gw:
        error = _refused(
            gw, domain="demo", repository="dev-shared", rule=pb.CleanupRule(keep_newest=1)
        )
    assert (grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_TOO_LARGE") == (
        error.code,
        error.reason,
    )


def test_regular_expressions_are_linear_time_on_real_versions(
    shipped: Gateway, emulator: Emulator, codeartifact: Any, clock: Clock
) -> None:
    """Patterns that backtrack catastrophically elsewhere are decided at once, and correctly."""
    # include_regex "(a|aa)+" (catastrophic for a backtracking engine on "aaa…a!") and a glob of
    # forty stars over versions of up to 200 "a"s: the plan is answered in a second and decides each
    # version correctly.
    package = Package("generic", "tools", "redos")
    versions = [f"{'a' * n}!" for n in range(150, 201, 10)] + ["a" * 60]
    seed(
        emulator,
        package,
        [(v, "Published", clock.now - (len(versions) - i) * DAY) for i, v in enumerate(versions)],
    )
    started = time.monotonic()
    response = Cleanup(shipped, "alice").plan(
        pb.CleanupRule(
            order=pb.CLEANUP_ORDER_PUBLISHED,
            keep_newest=1,
            include_regex="(a|aa)+",
            exclude=["*a" * 40 + "*b"],
        ),
        **package.fields(),
    )
    assert time.monotonic() - started < 2.0
    decided = {v.version: v for v in response.packages[0].versions}
    for version in versions[:-1]:
        assert pb.CLEANUP_CLAUSE_NOT_INCLUDED == decided[version].clause, version
    assert pb.CLEANUP_CLAUSE_LATEST == decided["a" * 60].clause


# --- ids, hashes, tokens -------------------------------------------------------------------------

BAD_IDS = ["", "not-a-uuid", "7d2a3c4e0b1f4e5a9c8d123456789abc", "{" + UNKNOWN + "}", "x" * 5000]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_name_the_field(bad: str, shipped: Gateway, emulator: Emulator) -> None:
    """A plan_id or job_id that is not a UUID is INVALID_ARGUMENT naming it, in every method."""
    caller = Cleanup(shipped, "alice")
    calls = {
        "plan_id": [
            lambda: caller.get_plan(bad),
            lambda: caller.apply(bad),
        ],
        "job_id": [
            lambda: caller.get_job(bad),
            lambda: caller.cancel(bad),
        ],
    }
    for name, attempts in calls.items():
        for attempt in attempts:
            error = failure(attempt)
            assert INVALID == (error.code, error.reason), error
            assert [name] == bad_fields(error)
    assert [] == emulator.calls()


def test_unknown_ids_are_not_found(shipped: Gateway) -> None:
    """Well-formed ids of no plan or job are NOT_FOUND with the cleanup reason."""
    caller = Cleanup(shipped, "alice")
    for attempt, reason in (
        (lambda: caller.get_plan(UNKNOWN), "CLEANUP_PLAN_NOT_FOUND"),
        (lambda: caller.apply(UNKNOWN), "CLEANUP_PLAN_NOT_FOUND"),
        (lambda: caller.apply(UNKNOWN.upper()), "CLEANUP_PLAN_NOT_FOUND"),
        (lambda: caller.get_job(UNKNOWN), "CLEANUP_JOB_NOT_FOUND"),
        (lambda: caller.cancel(UNKNOWN), "CLEANUP_JOB_NOT_FOUND"),
    ):
        error = failure(attempt)
        assert (grpc.StatusCode.NOT_FOUND, reason) == (error.code, error.reason)


def test_other_bad_fields_of_the_other_methods(shipped: Gateway, emulator: Emulator) -> None:
    """Bad plan_hash, request_id, page_size, page_token and reason are INVALID_ARGUMENT by name."""
    # plan_hash not a SHA-256, request_id not a UUID, a negative page_size, a forged page token, a
    # reason too long or with control characters: INVALID_ARGUMENT naming each.
    caller = Cleanup(shipped, "alice")
    plan = caller.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    job = caller.apply(plan)
    cases = [
        ("plan_hash", lambda: caller.apply(plan.plan_id, plan_hash="abc")),
        ("plan_hash", lambda: caller.apply(plan.plan_id, plan_hash="g" * 64)),
        ("request_id", lambda: caller.apply(plan.plan_id, request_id="retry-1")),
        ("page_size", lambda: caller.get_plan(plan.plan_id, page_size=-1)),
        ("page_size", lambda: caller.get_job(job.job_id, include_results=True, page_size=-5)),
        ("page_token", lambda: caller.get_plan(plan.plan_id, page_token="forged.token")),
        ("page_token", lambda: caller.get_job(job.job_id, page_token="x" * 600)),
        ("reason", lambda: caller.cancel(job.job_id, "r" * 5000)),
        ("reason", lambda: caller.cancel(job.job_id, "stop\u202eevil")),
    ]
    for name, attempt in cases:
        error = failure(attempt)
        assert INVALID == (error.code, error.reason), (name, error)
        assert [name] == bad_fields(error)
    assert pb.CLEANUP_JOB_STATE_QUEUED == caller.job(job.job_id).state
    caller.cancel(job.job_id)


def test_page_tokens_of_another_listing_are_refused(shipped: Gateway, emulator: Emulator) -> None:
    """A page token of one plan pages neither another plan nor a job's results."""
    # A page token of one plan does not page another plan, nor a job's results (and the other way
    # round): INVALID_ARGUMENT naming page_token.
    caller = Cleanup(shipped, "alice")
    repository = {"domain": "demo", "repository": "dev-shared"}
    first = caller.plan(pb.CleanupRule(keep_newest=1), **repository, page_size=2)
    second = caller.plan(pb.CleanupRule(keep_newest=2), **repository, page_size=2)
    assert first.next_page_token
    assert second.next_page_token
    page = caller.get_plan(first.plan.plan_id, page_size=2, page_token=first.next_page_token)
    assert page.packages  # the token pages its own plan
    job = caller.apply(first.plan)
    for attempt in (
        lambda: caller.get_plan(second.plan.plan_id, page_token=first.next_page_token),
        lambda: caller.get_plan(first.plan.plan_id, page_token=second.next_page_token),
        lambda: caller.get_job(job.job_id, include_results=True, page_token=first.next_page_token),
    ):
        error = failure(attempt)
        assert INVALID == (error.code, error.reason), error
        assert ["page_token"] == bad_fields(error)
    caller.cancel(job.job_id)


def test_a_first_page_of_one_package_pages_on(shipped: Gateway) -> None:
    """page_size 1 on a plan of nine packages pages through all nine."""
    # page_size 1 on a plan of nine packages: the first page holds one package and a token, and
    # following the tokens reads all nine (PlanCleanup, then GetCleanupPlan).
    caller = Cleanup(shipped, "alice")
    response = caller.plan(
        pb.CleanupRule(keep_newest=1), domain="demo", repository="dev-shared", page_size=1
    )
    assert 9 == response.plan.package_count
    assert 1 == len(response.packages)
    names = [response.packages[0].package]
    token = response.next_page_token
    while token:
        page = caller.get_plan(response.plan.plan_id, page_size=1, page_token=token)
        names += [p.package for p in page.packages]
        token = page.next_page_token
    assert 9 == len(names) == len(set(names))


def test_job_results_page_one_package_at_a_time(shipped: Gateway, emulator: Emulator) -> None:
    """GetCleanupJob with page_size 1 pages through every package's result."""
    # GetCleanupJob with page_size 1 over a job of several packages pages through every package's
    # result.
    caller = Cleanup(shipped, "alice")
    response = caller.plan(pb.CleanupRule(keep_newest=1), domain="demo", repository="dev-shared")
    job = caller.apply(response.plan)
    assert _runner(shipped).run_once() is True
    done = caller.job(job.job_id)
    assert pb.CLEANUP_JOB_STATE_SUCCEEDED == done.state
    assert done.packages_total >= 2
    seen: list[str] = []
    token = ""
    for _ in range(20):
        page = caller.get_job(job.job_id, include_results=True, page_size=1, page_token=token)
        seen += [r.package for r in page.results]
        token = page.next_page_token
        if not token:
            break
    assert done.packages_total == len(seen) == len(set(seen))


# --- who may do what ------------------------------------------------------------------------------


def test_only_the_requester_applies_and_cancels_and_auditors_read(
    shipped: Gateway, emulator: Emulator
) -> None:
    """Only the requester applies and cancels; auditors read; bob reads nothing; anonymous fails."""
    # dave (a release-admin) may not apply or cancel alice's plan and job, bob may not even read
    # them (PERMISSION_DENIED / NOT_REQUESTER); carol (an auditor) and dave read them; nothing
    # anonymous is answered (UNAUTHENTICATED).
    alice = Cleanup(shipped, "alice")
    response = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD)
    plan = response.plan
    emulator.clear_calls()
    for principal in ("dave", "bob"):
        intruder = Cleanup(shipped, principal)
        error = failure(functools.partial(intruder.apply, plan))
        assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER") == (error.code, error.reason)
    with _sqlite(shipped) as conn:
        assert (
            0
            == conn.execute(
                "SELECT COUNT(*) FROM cleanup_jobs WHERE plan_id = ?", (plan.plan_id,)
            ).fetchone()[0]
        )
    job = alice.apply(plan)
    for principal in ("carol", "dave"):
        reader = Cleanup(shipped, principal)
        assert plan == reader.get_plan(plan.plan_id).plan
        assert list(response.packages) == list(reader.get_plan(plan.plan_id).packages)
        assert job.job_id == reader.get_job(job.job_id, include_results=True).job.job_id
        error = failure(functools.partial(reader.cancel, job.job_id))
        assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER") == (error.code, error.reason)
    bob = Cleanup(shipped, "bob")
    reads: list[Callable[[], object]] = [
        lambda: bob.get_plan(plan.plan_id),
        lambda: bob.get_job(job.job_id),
    ]
    for attempt in reads:
        error = failure(attempt)
        assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUESTER") == (error.code, error.reason)
    nobody = Cleanup(shipped, None)
    anonymous: list[Callable[[], object]] = [
        lambda: nobody.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD),
        lambda: nobody.get_plan(plan.plan_id),
        lambda: nobody.apply(plan),
        lambda: nobody.get_job(job.job_id),
        lambda: nobody.cancel(job.job_id),
    ]
    for attempt in anonymous:
        error = failure(attempt)
        assert grpc.StatusCode.UNAUTHENTICATED == error.code
    assert pb.CLEANUP_JOB_STATE_QUEUED == alice.job(job.job_id).state
    assert [] == emulator.calls("DeletePackageVersions")
    alice.cancel(job.job_id)


def test_a_wrong_plan_hash_is_refused(shipped: Gateway, emulator: Emulator) -> None:
    """ApplyCleanup with another plan_hash is PLAN_HASH_MISMATCH and starts no job."""
    # ApplyCleanup with a plan_hash other than the plan's (any case of the right one is fine) is
    # FAILED_PRECONDITION / PLAN_HASH_MISMATCH and starts no job.
    alice = Cleanup(shipped, "alice")
    plan = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    wrong = ("0" if plan.plan_hash[0] != "0" else "1") + plan.plan_hash[1:]
    error = failure(lambda: alice.apply(plan.plan_id, plan_hash=wrong))
    assert (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_HASH_MISMATCH") == (
        error.code,
        error.reason,
    )
    with _sqlite(shipped) as conn:
        assert (
            0
            == conn.execute(
                "SELECT COUNT(*) FROM cleanup_jobs WHERE plan_id = ?", (plan.plan_id,)
            ).fetchone()[0]
        )
    job = alice.apply(plan.plan_id, plan_hash=plan.plan_hash.upper())
    alice.cancel(job.job_id)


def test_apply_retried_with_its_request_id_returns_the_same_job(
    shipped: Gateway, emulator: Emulator
) -> None:
    """ApplyCleanup retried with its request_id returns the same job and starts no other."""
    # ApplyCleanup sent again with the same request_id returns the same job and starts no second
    # one; the same request_id for another plan is REQUEST_ID_REUSED.
    alice = Cleanup(shipped, "alice")
    plan = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    request_id = str(uuid.uuid4())
    first = alice.apply(plan, request_id=request_id)
    again = alice.apply(plan, request_id=request_id)
    assert first.job_id == again.job_id
    assert first.plan_id == again.plan_id == plan.plan_id
    with _sqlite(shipped) as conn:
        assert (
            1
            == conn.execute(
                "SELECT COUNT(*) FROM cleanup_jobs WHERE plan_id = ?", (plan.plan_id,)
            ).fetchone()[0]
        )
    other = alice.plan(pb.CleanupRule(keep_newest=2), **LEFT_PAD).plan
    error = failure(lambda: alice.apply(other, request_id=request_id))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (error.code, error.reason)
    alice.cancel(first.job_id)


# --- time and tampering ---------------------------------------------------------------------------


def test_a_plan_past_its_time_is_not_applied(
    make_gateway: GatewayFactory, emulator: Emulator, clock: Clock
) -> None:
    """A plan applies until its expire_time on the gateway's clock, then is PLAN_EXPIRED."""
    # With plan_ttl_hours 24 on the test clock: a second before expire_time the plan applies; at
    # expire_time it is FAILED_PRECONDITION / PLAN_EXPIRED and starts no job.
    with make_gateway(clock=clock, policy={}, cleanup={"interval_seconds": 3600}) as gateway:
        alice = Cleanup(gateway, "alice")
        early = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
        late = alice.plan(pb.CleanupRule(keep_newest=2), **LEFT_PAD).plan
        assert clock.now + DAY == late.expire_time.ToDatetime(UTC)
        clock.advance(DAY - SECOND)
        alice.cancel(alice.apply(early).job_id)
        clock.advance(SECOND)
        error = failure(lambda: alice.apply(late))
        assert (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_EXPIRED") == (
            error.code,
            error.reason,
        )
        with _sqlite(gateway) as conn:
            assert (
                0
                == conn.execute(
                    "SELECT COUNT(*) FROM cleanup_jobs WHERE plan_id = ?", (late.plan_id,)
                ).fetchone()[0]
            )


def _tamper(gateway: Gateway, plan_id: str, *, rehash: bool) -> None:
    """In the stored plan, make the latest version (1.3.0, kept) a deletion that policy
    allows; with `rehash`, also store the plan_hash of the changed plan."""
    with _sqlite(gateway) as conn:
        (text,) = conn.execute(
            "SELECT package FROM cleanup_plan_packages WHERE plan_id = ? AND seq = 0", (plan_id,)
        ).fetchone()
        package = json.loads(text)
        for entry in package["entries"]:
            if entry["version"] == "1.3.0":
                entry.update(delete=True, clause="SELECTED", policy="would_delete")
        conn.execute(
            "UPDATE cleanup_plan_packages SET package = ? WHERE plan_id = ? AND seq = 0",
            (_canonical(package), plan_id),
        )
        if rehash:
            (header,) = conn.execute(
                "SELECT header FROM cleanup_plans WHERE plan_id = ?", (plan_id,)
            ).fetchone()
            digest = plan_hash(json.loads(header), [package])
            conn.execute(
                "UPDATE cleanup_plans SET plan_hash = ? WHERE plan_id = ?", (digest, plan_id)
            )


@pytest.mark.parametrize("rehash", [False, True], ids=["changed", "changed-and-rehashed"])
def test_a_plan_changed_in_the_database_is_refused(
    rehash: bool, shipped: Gateway, emulator: Emulator
) -> None:
    """A plan changed in the database (rehashed or not) is PLAN_TAMPERED; nothing is deleted."""
    # A stored plan changed outside the gateway to delete the latest version (with, or without, its
    # stored hash recomputed to match): ApplyCleanup is DATA_LOSS / PLAN_TAMPERED, no job starts,
    # nothing is deleted.
    alice = Cleanup(shipped, "alice")
    plan = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    _tamper(shipped, plan.plan_id, rehash=rehash)
    error = failure(lambda: alice.apply(plan.plan_id))
    assert (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED") == (error.code, error.reason)
    with _sqlite(shipped) as conn:
        assert (
            0
            == conn.execute(
                "SELECT COUNT(*) FROM cleanup_jobs WHERE plan_id = ?", (plan.plan_id,)
            ).fetchone()[0]
        )
    assert [] == emulator.calls("DeletePackageVersions")


def test_a_plan_changed_after_apply_fails_the_job(shipped: Gateway, emulator: Emulator) -> None:
    """A plan changed in the database after ApplyCleanup fails its job; nothing is deleted."""
    # A plan changed (and rehashed) in the database after ApplyCleanup, before a runner takes the
    # job: the runner fails the job and deletes nothing.
    alice = Cleanup(shipped, "alice")
    plan = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    job = alice.apply(plan)
    _tamper(shipped, plan.plan_id, rehash=True)
    emulator.clear_calls()
    assert _runner(shipped).run_once() is True
    done = alice.job(job.job_id)
    assert pb.CLEANUP_JOB_STATE_FAILED == done.state, done
    assert done.last_error
    assert [] == emulator.calls("DeletePackageVersions")
    assert {"1.0.0", "1.1.0", "1.2.0", "1.3.0"} == set(
        upstream_versions(
            codeartifact_client(emulator), Package("npm", "", "left-pad", "dev-shared")
        )
    )


def test_a_plan_row_that_is_not_a_plan_is_data_loss(shipped: Gateway, emulator: Emulator) -> None:
    """A plan row that is not a plan, or names bob its requester, is PLAN_TAMPERED, not INTERNAL."""
    # A package row or header overwritten with something that is not a plan: reading or applying the
    # plan is DATA_LOSS / PLAN_TAMPERED, never INTERNAL; making bob its requester in the header does
    # not let bob apply it.
    alice = Cleanup(shipped, "alice")
    broken = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD).plan
    hijacked = alice.plan(pb.CleanupRule(keep_newest=2), **LEFT_PAD).plan
    with _sqlite(shipped) as conn:
        conn.execute(
            "UPDATE cleanup_plan_packages SET package = ? WHERE plan_id = ?",
            ('{"entries": "nope"}', broken.plan_id),
        )
        (header,) = conn.execute(
            "SELECT header FROM cleanup_plans WHERE plan_id = ?", (hijacked.plan_id,)
        ).fetchone()
        changed = json.loads(header)
        changed["requester"]["id"] = "bob"
        conn.execute(
            "UPDATE cleanup_plans SET header = ?, requester = 'bob' WHERE plan_id = ?",
            (_canonical(changed), hijacked.plan_id),
        )
    for attempt in (lambda: alice.get_plan(broken.plan_id), lambda: alice.apply(broken)):
        error = failure(attempt)
        assert (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED") == (error.code, error.reason)
    error = failure(lambda: Cleanup(shipped, "bob").apply(hijacked.plan_id))
    assert (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED") == (error.code, error.reason)
    assert [] == emulator.calls("DeletePackageVersions")


@pytest.mark.parametrize("acting_as", ["dave", "alice"])
@pytest.mark.parametrize("event", ["none", "the plan's"])
def test_a_job_written_into_the_database_is_never_run(
    event: str, acting_as: str, make_gateway: GatewayFactory, emulator: Emulator, clock: Clock
) -> None:
    """A job row written into the database without ApplyCleanup is failed, never run: at once
    when it acts as another than the plan's requester, else once its ApplyCleanup record is
    overdue."""
    # A job row inserted into the database for alice's plan, as dave or alice, without an
    # ApplyCleanup call that recorded it (its event id unknown, or the PlanCleanup call's): the
    # runner refuses it, or waits for the record a while and then fails it; nothing is deleted.
    with make_gateway(
        clock=clock, policy={}, cleanup={"interval_seconds": 3600, "retry_seconds": 1}
    ) as gateway:
        alice = Cleanup(gateway, "alice")
        response = alice.plan(pb.CleanupRule(keep_newest=1), **LEFT_PAD)
        plan = response.plan
        job_id = str(uuid.uuid4())
        event_id = str(uuid.uuid4()) if event == "none" else plan.audit_event_id
        with _sqlite(gateway) as conn:
            (now,) = conn.execute(  # the plan's creation time, as the store writes times
                "SELECT created_at FROM cleanup_plans WHERE plan_id = ?", (plan.plan_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO cleanup_jobs (job_id, plan_id, plan_hash, requester, state, "
                "created_at, updated_at, event_id, packages_total, versions_planned, counts) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, 1, ?, '{}')",
                (
                    job_id,
                    plan.plan_id,
                    plan.plan_hash,
                    _canonical(
                        {
                            "id": acting_as,
                            "method": "dev",
                            "issuer": None,
                            "token_id": None,
                            "attributes": {},
                            "claim_groups": [],
                        }
                    ),
                    now,
                    now,
                    event_id,
                    plan.delete_count,
                ),
            )
        emulator.clear_calls()
        assert _runner(gateway).run_once() is True
        if acting_as == "alice":  # the plan's requester: it waits for the record a while
            waiting = alice.job(job_id)
            assert waiting.state in {pb.CLEANUP_JOB_STATE_RUNNING, pb.CLEANUP_JOB_STATE_QUEUED}
            clock.advance(timedelta(minutes=5))
            assert _runner(gateway).run_once() is True
        failed = alice.job(job_id)
        assert pb.CLEANUP_JOB_STATE_FAILED == failed.state, failed
        reason = "never recorded" if acting_as == "alice" else "its requester is not its plan's"
        assert reason in failed.last_error
        assert [] == emulator.calls("DeletePackageVersions")
        assert not applied_deletions(emulator)


# --- fuzzing CleanupRule (hypothesis) -------------------------------------------------------------

FUZZ_EXAMPLES = 5_000 if SOAK else 300
"""Bounded: about 4 s on two shared cores; `make soak` (PKGGOV_SOAK=1) runs many more."""

_LIMITS = {
    "keep_newest": 100_000,
    "keep_newest_releases": 100_000,
    "keep_newest_prereleases": 100_000,
    "older_than_days": 36_500,
    "keep_younger_than_days": 36_500,
    "max_deletions": 100_000,
}
_GUARDS = (
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
)
_AGES = ("older_than_days", "keep_younger_than_days")
_RULE_STATUSES = {1, 2, 3, 4, 5}
"""Published, Unfinished, Unlisted, Archived, Disposed (not Unspecified, not Deleted)."""

_INT32 = st.integers(-(2**31), 2**31 - 1)
_counts = st.one_of(
    st.none(),
    st.integers(-2, 6),
    st.sampled_from([36_500, 36_501, 100_000, 100_001, -(2**31), 2**31 - 1]),
    _INT32,
)
_enums = st.one_of(st.integers(0, 3), st.integers(-3, 8), _INT32)
_globs = st.one_of(
    st.sampled_from(["*", "1.*", "*-rc*", "", "[", "a" * 255, "a" * 256, "x\x00", "é*", "\u200b"]),
    st.text(max_size=40),
    st.text(max_size=300),
)
_regexes = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            r"\d+\.\d+\.\d+",
            "(",
            "(a+)+$",
            "(?=a)",
            r"(a)\1",
            "a{1001}",
            "[z-a]",
            r"\C+",
            "a" * 256,
            "(?i)RC",
            ".*\x00",
            "(?P<n>x)",
        ]
    ),
    st.text(alphabet="ab1.()[]{}*+?|\\^$-,:=<>!PCpdw", max_size=40),
)


_valid_globs = st.text(alphabet="0123456789.*?[]!-abrc", min_size=1, max_size=30)
_valid_regexes = st.sampled_from(
    ["", r"\d+\.\d+\.\d+", r"1\..*", ".*-rc.*", "(a|b)+", r"\C+", "(?i)RC", "(?P<n>x)"]
)


@st.composite
def cleanup_rules(draw: st.DrawFn) -> pb.CleanupRule:
    """A CleanupRule: half of them within every documented limit (each field drawn from its
    valid values, with a guard), half anything at all (valid, boundary and adversarial)."""
    if draw(st.booleans()):
        scope = draw(st.integers(0, 3))
        fields: dict[str, Any] = {
            "order": draw(st.integers(0, 2)),
            "prerelease": scope,
            "statuses": draw(st.lists(st.integers(1, 5), max_size=4)),
            "include": draw(st.lists(_valid_globs, max_size=3)),
            "exclude": draw(st.lists(_valid_globs, max_size=3)),
            "include_regex": draw(_valid_regexes),
            "exclude_regex": draw(_valid_regexes),
        }
        rule = pb.CleanupRule(**fields)
        out_of_scope = {2: "keep_newest_releases", 3: "keep_newest_prereleases"}.get(scope)
        guards = [g for g in _GUARDS if g != out_of_scope]
        setattr(rule, draw(st.sampled_from(guards)), draw(st.integers(1, 50)))
        for name in [n for n in _LIMITS if n != out_of_scope]:
            if not rule.HasField(name) and draw(st.booleans()):  # type: ignore[arg-type]
                setattr(rule, name, draw(st.integers(0, 20)))
        if not any(getattr(rule, n) > 0 for n in ("keep_newest", *_AGES)):
            for name in ("keep_newest_releases", "keep_newest_prereleases"):  # each kind guarded
                if name != out_of_scope and not rule.HasField(name):  # type: ignore[arg-type]
                    setattr(rule, name, draw(st.integers(0, 20)))
        return rule
    anything: dict[str, Any] = {
        "order": draw(_enums),
        "prerelease": draw(_enums),
        "statuses": draw(st.lists(st.one_of(st.integers(0, 6), _enums), max_size=6)),
        "include": draw(
            st.one_of(st.lists(_globs, max_size=5), st.lists(_globs, min_size=50, max_size=52))
        ),
        "exclude": draw(st.lists(_globs, max_size=5)),
        "include_regex": draw(_regexes),
        "exclude_regex": draw(_regexes),
    }
    rule = pb.CleanupRule(**anything)
    for name in _LIMITS:
        value = draw(_counts)
        if value is not None:
            setattr(rule, name, value)
    return rule


def _pattern_bad(pattern: str) -> bool:
    return not pattern or len(pattern) > 255 or not pattern.isprintable()


def _regex_bad(pattern: str) -> bool:
    if not pattern:
        return False
    if _pattern_bad(pattern):
        return True
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options=options)
    except re2.error:
        return True
    return False


def expected_violations(rule: pb.CleanupRule) -> set[str]:
    """The fields of `rule` its documented limits refuse (an independent reading)."""
    bad: set[str] = set()
    if rule.order not in {0, 1, 2}:
        bad.add("rule.order")
    if rule.prerelease not in {0, 1, 2, 3}:
        bad.add("rule.prerelease")
    guarded = False
    valid: dict[str, int] = {}
    contradicts = {
        "keep_newest_releases": pb.PRERELEASE_SCOPE_ONLY,
        "keep_newest_prereleases": pb.PRERELEASE_SCOPE_EXCLUDE,
    }
    for name, most in _LIMITS.items():
        if not rule.HasField(name):  # type: ignore[arg-type]
            continue
        value = getattr(rule, name)
        if not 0 <= value <= most or rule.prerelease == contradicts.get(name):
            bad.add(f"rule.{name}")  # out of range, or a count of a kind out of scope
            continue
        valid[name] = value
        if name in _GUARDS and value > 0:
            guarded = True
    shared = any(valid.get(n, 0) > 0 for n in ("keep_newest", *_AGES))
    if not guarded:
        bad.add("rule.keep_newest")
    elif not shared:  # only per-kind counts: every kind in scope needs its own
        for name, outside in contradicts.items():
            if rule.prerelease != outside and name not in valid:
                bad.add(f"rule.{name}")
    for index, status in enumerate(rule.statuses):
        if status not in _RULE_STATUSES:
            bad.add(f"rule.statuses[{index}]")
    for name in ("include", "exclude"):
        patterns = list(getattr(rule, name))
        if len(patterns) > 50:
            bad.add(f"rule.{name}")
            continue
        bad |= {f"rule.{name}[{i}]" for i, p in enumerate(patterns) if _pattern_bad(p)}
    for name in ("include_regex", "exclude_regex"):
        if _regex_bad(getattr(rule, name)):
            bad.add(f"rule.{name}")
    return bad


def _echo(rule: pb.CleanupRule) -> pb.CleanupRule:
    """`rule` as a plan reports it: defaults filled in, statuses without repeats."""
    shown = pb.CleanupRule()
    shown.CopyFrom(rule)
    shown.order = rule.order or pb.CLEANUP_ORDER_VERSION
    shown.prerelease = rule.prerelease or pb.PRERELEASE_SCOPE_ANY
    statuses = list(dict.fromkeys(rule.statuses)) or [
        pb.PACKAGE_VERSION_STATUS_PUBLISHED,
        pb.PACKAGE_VERSION_STATUS_UNLISTED,
    ]
    del shown.statuses[:]
    shown.statuses.extend(statuses)
    return shown


def _check_named(expected: set[str], error: RichError, rule: pb.CleanupRule) -> None:
    """The BadRequest names exactly the `expected` fields; when the status was cut to its
    byte budget (api.status_budget: the first violations, then one counting the rest), the
    ones shown are expected and the count covers the rest."""
    detail = error.details["BadRequest"]
    assert isinstance(detail, error_details_pb2.BadRequest)
    violations = list(detail.field_violations)
    assert violations, error
    more = re.fullmatch(
        r"and (\d+) more violation\(s\) of the same rules", violations[-1].description
    )
    if more is None:
        assert expected == {v.field for v in violations}, (rule, error)
        return
    shown = {v.field for v in violations[:-1]}
    assert shown <= expected, (rule, error)
    assert len(shown) + int(more[1]) >= len(expected), (rule, error)
    event("refused: BadRequest cut to its budget")


@pytest.mark.timeout(300 if SOAK else 120)
@fuzz_settings(FUZZ_EXAMPLES)
@given(rule=cleanup_rules())
def test_fuzzed_rules_are_refused_by_field_or_planned(
    shipped: Gateway, emulator: Emulator, rule: pb.CleanupRule
) -> None:
    """Generated rules are never INTERNAL: refused naming exactly the bad fields, or planned."""
    # A generated CleanupRule: never INTERNAL or UNKNOWN; refused as INVALID_ARGUMENT naming exactly
    # the fields its documented limits refuse (and nothing read upstream), or planned: the plan
    # reports the rule as given, deletes only SELECTED versions, at most max_deletions.
    emulator.clear_calls()
    caller = Cleanup(shipped, "alice")
    expected = expected_violations(rule)
    try:
        response = caller.plan(rule, **LEFT_PAD)
    except grpc.RpcError as raw:
        code: Any = raw
        assert code.code() not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}, (
            code.details()
        )
        error = rich_error(raw)
        event(f"refused: {error.reason}")
        assert INVALID == (error.code, error.reason), error
        _check_named(expected, error, rule)
        assert [] == emulator.calls()
        return
    event("planned")
    assert set() == expected, rule
    assert _echo(rule) == response.plan.rule
    versions = response.packages[0].versions
    doomed = [v for v in versions if v.action == pb.CLEANUP_ACTION_DELETE]
    assert all(v.clause == pb.CLEANUP_CLAUSE_SELECTED for v in doomed)
    if rule.HasField("max_deletions"):
        assert len(doomed) <= rule.max_deletions
    assert "1.3.0" not in {v.version for v in doomed}  # the latest


def test_fuzz_oracle_agrees_with_the_named_cases() -> None:
    """The fuzz oracle finds exactly the bad fields each hand-written case expects."""
    # The fuzz test's reading of the limits finds, for each hand-written bad rule above, the fields
    # that case expects (so the oracle is not vacuous).
    for name, (fields, expected) in BAD_PLANS.items():
        rule = fields.get("rule")
        if rule is None or not all(f.startswith("rule.") for f in expected):
            continue
        assert expected == expected_violations(rule), name
    assert set() == expected_violations(pb.CleanupRule(keep_newest=1))
