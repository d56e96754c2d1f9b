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
from pkggov_gateway.ports import CodeArtifactPort
from pkggov_gateway.testing import (
    DELETE,
    DISPOSE,
    READ,
    UPDATE_STATUS,
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


def test_the_fake_is_a_codeartifact_port() -> None:
    """mypy checks this assignment against the port's signatures."""
    port: CodeArtifactPort = FakeCodeArtifact()
    assert isinstance(port, FakeCodeArtifact)


def test_status_updates_behave_as_codeartifact() -> None:
    """Guards in order (missing, status, revision); a change issues a new revision, a no-op
    keeps it; Disposed cannot move; the call records its target and revisions."""
    upstream = FakeCodeArtifact()
    upstream.add_package(
        PKG,
        {
            "1": VersionStatus.PUBLISHED,
            "2": VersionStatus.PUBLISHED,
            "3": VersionStatus.UNLISTED,
            "4": VersionStatus.DISPOSED,
            "5": VersionStatus.ARCHIVED,
        },
    )
    before = upstream.revisions(PKG)
    pins = {"1": before["1"], "2": "stale"}
    outcome = upstream.update_package_versions_status(
        PKG,
        ["1", "2", "3", "9"],
        VersionStatus.ARCHIVED,
        SOON,
        expected_status=VersionStatus.PUBLISHED,
        revisions=pins,
    )
    after = upstream.revisions(PKG)
    assert {"1": SuccessfulVersion(after["1"], VersionStatus.ARCHIVED)} == outcome.successful
    assert after["1"] != before["1"]
    assert {
        "2": VersionErrorCode.MISMATCHED_REVISION,
        "3": VersionErrorCode.MISMATCHED_STATUS,
        "9": VersionErrorCode.NOT_FOUND,
    } == {v: f.code for v, f in outcome.failed.items()}
    no_op = upstream.update_package_versions_status(PKG, ["1", "5"], VersionStatus.ARCHIVED, SOON)
    assert {
        "1": SuccessfulVersion(after["1"], VersionStatus.ARCHIVED),
        "5": SuccessfulVersion(before["5"], VersionStatus.ARCHIVED),
    } == no_op.successful
    disposed = upstream.update_package_versions_status(PKG, ["4"], VersionStatus.PUBLISHED, SOON)
    assert VersionErrorCode.NOT_ALLOWED == disposed.failed["4"].code
    call = upstream.calls[0]
    assert (UPDATE_STATUS, VersionStatus.ARCHIVED, pins) == (
        call.operation,
        call.target_status,
        call.revisions,
    )
    assert [("1", "2", "3", "9"), ("1", "5"), ("4",)] == upstream.sent(UPDATE_STATUS)
    assert [] == upstream.sent()


def test_a_status_update_to_another_target_or_of_too_many_versions_is_refused() -> None:
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, ["1"])
    for target in (VersionStatus.DISPOSED, VersionStatus.DELETED, VersionStatus.UNFINISHED):
        with pytest.raises(UpstreamValidationError):
            upstream.update_package_versions_status(PKG, ["1"], target, SOON)
    with pytest.raises(UpstreamValidationError):
        upstream.dispose_package_versions(PKG, [str(i) for i in range(101)], SOON)
    assert {"1": VersionStatus.PUBLISHED} == upstream.statuses(PKG)


def test_disposals_behave_as_codeartifact() -> None:
    """Disposed with a new revision, guarded like a status update; disposing again keeps the
    revision; a Disposed version stays listed."""
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, {"1": VersionStatus.ARCHIVED, "2": VersionStatus.PUBLISHED})
    before = upstream.revisions(PKG)
    outcome = upstream.dispose_package_versions(
        PKG,
        ["1", "2"],
        SOON,
        expected_status=VersionStatus.ARCHIVED,
        revisions={"1": before["1"]},
    )
    again = upstream.dispose_package_versions(PKG, ["1"], SOON, revisions={"1": "stale"})
    ok = upstream.dispose_package_versions(PKG, ["1"], SOON)
    disposed = upstream.revisions(PKG)["1"]
    assert {"1": SuccessfulVersion(disposed, VersionStatus.DISPOSED)} == outcome.successful
    assert disposed != before["1"]
    assert VersionErrorCode.MISMATCHED_STATUS == outcome.failed["2"].code
    assert VersionErrorCode.MISMATCHED_REVISION == again.failed["1"].code
    assert {"1": SuccessfulVersion(disposed, VersionStatus.DISPOSED)} == ok.successful
    assert {"1": VersionStatus.DISPOSED, "2": VersionStatus.PUBLISHED} == upstream.statuses(PKG)
    assert 3 == len(upstream.sent(DISPOSE))


def test_archiving_the_default_display_version_moves_it_until_restored() -> None:
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, ["1", "2", "3"])
    upstream.update_package_versions_status(PKG, ["3"], VersionStatus.ARCHIVED, SOON)
    archived = upstream.package_state(PKG, SOON)
    upstream.update_package_versions_status(PKG, ["3"], VersionStatus.PUBLISHED, SOON)
    assert ("2", "3") == (archived.latest, upstream.package_state(PKG, SOON).latest)
    upstream.dispose_package_versions(PKG, ["1", "2", "3"], SOON)
    assert upstream.package_state(PKG, SOON).latest is None


def test_a_version_published_again_has_a_new_revision() -> None:
    """put_version: a deleted version comes back (as a re-publication) with a new revision."""
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, {"1": VersionStatus.ARCHIVED})
    archived = upstream.revisions(PKG)["1"]
    upstream.delete_package_versions(PKG, ["1"], VersionStatus.ARCHIVED, SOON)
    revision = upstream.put_version(PKG, "1")
    restore = upstream.update_package_versions_status(
        PKG, ["1"], VersionStatus.PUBLISHED, SOON, revisions={"1": archived}
    )
    assert revision != archived
    assert ({"1": revision}, VersionErrorCode.MISMATCHED_REVISION) == (
        upstream.revisions(PKG),
        restore.failed["1"].code,
    )


def test_faults_apply_to_status_updates_and_disposals() -> None:
    """fail_next and lose_next_answer take the new writes: an error raised before or after
    applying, and a lost answer whose retry meets the stale pin."""
    upstream = FakeCodeArtifact()
    upstream.add_package(PKG, ["1", "2", "3"])
    revisions = upstream.revisions(PKG)
    upstream.fail_next(UPDATE_STATUS, UpstreamThrottledError("slow"))
    upstream.fail_next(DISPOSE, UpstreamTimeoutError("lost"), applied=True)
    upstream.lose_next_answer(UPDATE_STATUS, when=lambda c: "3" in c.versions)
    with pytest.raises(UpstreamThrottledError):
        upstream.update_package_versions_status(PKG, ["1"], VersionStatus.ARCHIVED, SOON)
    with pytest.raises(UpstreamTimeoutError):
        upstream.dispose_package_versions(PKG, ["2"], SOON)
    lost = upstream.update_package_versions_status(
        PKG, ["3"], VersionStatus.ARCHIVED, SOON, revisions={"3": revisions["3"]}
    )
    assert lost.after_lost_response
    assert VersionErrorCode.MISMATCHED_REVISION == lost.failed["3"].code
    assert {
        "1": VersionStatus.PUBLISHED,
        "2": VersionStatus.DISPOSED,
        "3": VersionStatus.ARCHIVED,
    } == upstream.statuses(PKG)
    with pytest.raises(ValueError, match="only a write"):
        upstream.lose_next_answer(READ)
    with pytest.raises(ValueError, match="only a write"):
        upstream.fail_next(READ, UpstreamThrottledError("slow"), applied=True)


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
