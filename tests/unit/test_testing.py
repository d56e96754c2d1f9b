"""The shipped fakes do what their scripts say: failing appends, upstream faults, deny lists.

How the in-memory audit store answers when nothing fails is shown against SQLite and
PostgreSQL in tests/integration/test_audit_store_contract.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pkggov_gateway
from pkggov_gateway.domain.audit import EntryKind, NewEntry, format_time
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    PackageBusyError,
    UpstreamNotFoundError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamValidationError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import (
    PackageFormat,
    PackageRef,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts
from pkggov_gateway.testing import (
    DELETE,
    READ,
    FakeCodeArtifact,
    FakePackageLocks,
    FakePolicy,
    InMemoryAuditStore,
)

PKG = PackageRef("demo", "dev", PackageFormat.GENERIC, "artifact", "bulk")
SOON = Deadline.after(60)


def test_importing_the_fakes_loads_no_transport_nor_driver() -> None:
    code = (
        "import sys, pkggov_gateway.testing\n"
        "heavy = {'grpc', 'boto3', 'botocore', 'sqlite3', 'psycopg', 'psycopg_pool'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]\n" == run.stdout


def test_no_module_of_the_gateway_imports_the_fakes() -> None:
    """The production wiring (bootstrap and all it loads) never depends on the fakes."""
    root = Path(pkggov_gateway.__file__).parent
    importers = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if "testing" not in path.relative_to(root).parts
        and any(_imports_testing(node) for node in ast.walk(ast.parse(path.read_text())))
    ]
    assert [] == importers


def _imports_testing(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
    elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        return False
    return any(name.startswith("pkggov_gateway.testing") for name in names)


# --- InMemoryAuditStore: scripted failures -----------------------------------------------------


def entry(event: str, kind: str = "outcome") -> NewEntry:
    return NewEntry({"event_id": event, "kind": kind, "time": format_time(datetime.now(UTC))})


def test_a_failed_append_commits_nothing_and_the_store_heals_by_itself() -> None:
    store = InMemoryAuditStore()
    store.fail_next()
    assert not store.healthy()
    with pytest.raises(AuditUnavailableError):
        store.append(entry("e1", "intent"))
    assert (None, (), True) == (store.event("e1"), store.pending, store.healthy())
    assert 1 == store.append(entry("e2")).seq


def test_a_failed_durable_append_waits_and_commits_before_the_next_one() -> None:
    """The caller hears AuditUnavailableError; the entry is committed with the next append
    that goes through, ahead of it, and the store is unhealthy until then."""
    store = InMemoryAuditStore()
    store.fail_next()
    with pytest.raises(AuditUnavailableError):
        store.append(entry("e1"), durable=True)
    assert (["e1"], False) == ([e.event_id for e in store.pending], store.healthy())
    assert 2 == store.append(entry("e2")).seq
    assert [("e1", 1), ("e2", 2)] == [(e.event_id, e.seq) for e in store.entries()]
    assert ((), True) == (store.pending, store.healthy())


def test_failing_outcomes_until_healed_lets_intents_through() -> None:
    """kinds and times=None: outcomes fail (and wait) until heal commits them."""
    store = InMemoryAuditStore()
    store.fail_next(None, kinds=[EntryKind.OUTCOME])
    store.append(entry("e1", "intent"))
    for _ in range(2):
        with pytest.raises(AuditUnavailableError):
            store.append(entry("e1"), durable=True)
    store.append(entry("e2", "intent"))
    assert ["intent", "intent"] == [e.kind.value for e in store.entries()]
    assert 2 == len(store.pending)
    store.heal()
    assert ["intent", "intent", "outcome"] == [e.kind.value for e in store.entries()]
    assert (0, True) == (len(store.pending), store.healthy())


def test_failing_after_some_appends() -> None:
    store = InMemoryAuditStore()
    store.fail_next(2, after=1)
    store.append(entry("e1"))
    for event in ("e2", "e3"):
        with pytest.raises(AuditUnavailableError):
            store.append(entry(event))
    assert 2 == store.append(entry("e4")).seq
    with pytest.raises(ValueError, match="at least 1"):
        store.fail_next(0)


# --- FakeCodeArtifact --------------------------------------------------------------------------


def test_deletes_behave_as_codeartifact() -> None:
    """Missing: NOT_FOUND; another status than expected: MISMATCHED_STATUS; the others are
    removed with their revision; the default display version moves to what is left."""
    upstream = FakeCodeArtifact()
    statuses = {
        "1": VersionStatus.PUBLISHED,
        "2": VersionStatus.UNLISTED,
        "3": VersionStatus.PUBLISHED,
    }
    upstream.add_package(PKG, statuses)
    before = upstream.package_state(PKG, SOON)
    assert ("3", statuses) == (before.latest, dict(before.statuses))
    outcome = upstream.delete_package_versions(
        PKG, ["1", "2", "3", "9"], VersionStatus.PUBLISHED, SOON
    )
    assert {
        "1": SuccessfulVersion(before.revisions["1"], VersionStatus.DELETED),
        "3": SuccessfulVersion(before.revisions["3"], VersionStatus.DELETED),
    } == outcome.successful
    assert [VersionErrorCode.MISMATCHED_STATUS, VersionErrorCode.NOT_FOUND] == [
        outcome.failed[v].code for v in ("2", "9")
    ]
    assert 1 == len(outcome.aws_request_ids)
    assert ({"2": VersionStatus.UNLISTED}, "2") == (
        upstream.statuses(PKG),
        upstream.package_state(PKG, SOON).latest,
    )
    assert [READ, DELETE, READ] == [c.operation for c in upstream.calls]
    assert [("1", "2", "3", "9")] == upstream.sent()


def test_packages_are_named_as_codeartifact_stores_them() -> None:
    upstream = FakeCodeArtifact()
    upstream.add_package(PackageRef("d", "r", PackageFormat.PYPI, "My_Pkg"), ["1.0"])
    named = PackageRef("d", "r", PackageFormat.PYPI, "my-pkg", domain_owner="111122223333")
    assert ["1.0"] == list(upstream.package_state(named, SOON).statuses)
    with pytest.raises(UpstreamNotFoundError):
        upstream.package_state(PackageRef("d", "r", PackageFormat.PYPI, "other"), SOON)
    with pytest.raises(UpstreamValidationError):
        upstream.delete_package_versions(named, [str(i) for i in range(101)], None, SOON)


def test_faults_fire_on_the_chosen_call() -> None:
    """after counts the matching calls let through; `when` picks calls; `applied` deletes
    before raising; several faults fire in the order they were armed."""
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, ["1", "2", "3", "4"])
    upstream.fail_next(DELETE, UpstreamThrottledError("slow"), after=1)
    upstream.fail_next(
        DELETE, UpstreamTimeoutError("lost"), when=lambda c: "3" in c.versions, applied=True
    )
    upstream.delete_package_versions(PKG, ["1"], None, SOON)
    with pytest.raises(UpstreamThrottledError):
        upstream.delete_package_versions(PKG, ["2"], None, SOON)
    with pytest.raises(UpstreamTimeoutError):
        upstream.delete_package_versions(PKG, ["3"], None, SOON)
    assert {"2", "4"} == set(upstream.statuses(PKG))
    upstream.fail_next(READ, UpstreamThrottledError("slow"))
    with pytest.raises(UpstreamThrottledError):
        upstream.package_state(PKG, SOON)
    upstream.package_state(PKG, SOON)


def test_a_lost_answer_is_the_retry_answer() -> None:
    """Applied, then the retry finds the versions gone: NOT_FOUND, after_lost_response."""
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, ["1", "2"])
    upstream.lose_next_answer()
    outcome = upstream.delete_package_versions(PKG, ["1"], None, SOON)
    assert outcome.after_lost_response
    assert ({}, VersionErrorCode.NOT_FOUND) == (dict(outcome.successful), outcome.failed["1"].code)
    assert ["2"] == list(upstream.statuses(PKG))


# --- FakePolicy and FakePackageLocks -----------------------------------------------------------

ALICE = Principal("alice", AuthMethod.DEV, "ipv4:127.0.0.1:1")
MALLORY = Principal("mallory", AuthMethod.DEV, "ipv4:127.0.0.1:2")


def _request(principal: Principal) -> PolicyRequest:
    facts = tuple(VersionFacts(v, VersionStatus.PUBLISHED, False) for v in ("1", "2"))
    context = PolicyContext("", False, 2, datetime.now(UTC), principal.peer)
    return PolicyRequest(principal, PKG, facts, 2, 0, context)


def test_the_policy_denies_listed_versions_and_principals() -> None:
    policy = FakePolicy(deny=frozenset({"2"}), deny_principals=frozenset({"mallory"}))
    view = policy.current()
    assert [True, False] == [d.allowed for d in view.decide(_request(ALICE))]
    assert [False, False] == [d.allowed for d in view.decide(_request(MALLORY))]
    assert [("permit",), ("deny-listed",)] == [d.policy_ids for d in view.decide(_request(ALICE))]
    assert view.authorize_read(ALICE, datetime.now(UTC)).allowed
    assert not view.authorize_read(MALLORY, datetime.now(UTC)).allowed
    assert 3 == len(policy.requests)
    assert (("ci",), ()) == (
        FakePolicy(groups={"alice": ("ci",)}).groups_of("alice"),
        policy.groups_of("alice"),
    )


def test_the_locks_record_their_holds_and_can_be_busy() -> None:
    locks = FakePackageLocks()
    with locks.hold(PKG, SOON):
        assert locks.holding
    assert (["lock", "unlock"], [(PKG, SOON)], False) == (locks.log, locks.held, locks.holding)
    locks.busy = True
    with pytest.raises(PackageBusyError), locks.hold(PKG, SOON):
        pass
    assert ["lock", "unlock"] == locks.log
