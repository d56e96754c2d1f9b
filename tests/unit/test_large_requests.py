"""A large request shares what its versions have alike, and each version still gets exactly
what it got alone: its Cedar attributes, its decision, its plan entry, its recorded decision.

(The cost of a 1,000-version request is per version: these shortcuts keep it a look-up per
version where the work is the same for many.)
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pkggov_gateway.adapters import cedar, cedar_input
from pkggov_gateway.adapters.cedar_input import ALL_READS, Reads
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import (
    DeleteRequest,
    PackageFormat,
    PackageRef,
    PackageState,
    PlannedVersion,
    PlanOutcome,
    VersionStatus,
)
from pkggov_gateway.domain.policy import (
    PolicyAction,
    PolicyContext,
    PolicyRequest,
    VersionDecision,
    VersionFacts,
)
from pkggov_gateway.domain.records import _decisions
from pkggov_gateway.domain.recovery import PendingPurge, RecoveryWindow, RecoveryWindows
from pkggov_gateway.ports import PurgeStore
from pkggov_gateway.service.delete_versions import (
    DeleteLimits,
    DeletePackageVersions,
    decided,
)
from pkggov_gateway.testing import FakeCodeArtifact, FakePackageLocks, FakePolicy

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PACKAGE = PackageRef("demo", "prod-shared", PackageFormat.NPM, "widgets", "acme")
ALICE = Principal("alice", AuthMethod.DEV, "ipv4:127.0.0.1:1")


def _kinds() -> list[VersionFacts]:
    """Three copies of each kind of version (status x latest x pre-release x published time x
    archiver), interleaved."""
    kinds = [
        (status, latest, suffix, published, archiver)
        for status in VersionStatus
        for latest in (False, True)
        for suffix in ("", "-rc.1")
        for published in (None, NOW - timedelta(days=2), NOW - timedelta(days=2, seconds=-0.5))
        for archiver in (None, "alice", "bob")
    ]
    return [
        VersionFacts(f"{i}.{copy}.0{suffix}", status, latest, published, archiver)
        for copy in range(3)
        for i, (status, latest, suffix, published, archiver) in enumerate(kinds)
    ]


def _attrs(entities_json: str) -> dict[str, dict[str, Any]]:
    """The resource entities' attributes by resource id."""
    return {
        entity["uid"]["id"]: entity["attrs"]
        for entity in json.loads(entities_json)
        if entity["uid"]["type"] == cedar_input.RESOURCE_TYPE
    }


def test_a_shared_cedar_request_sends_what_each_of_its_versions_sends_alone() -> None:
    """For every action and every set of attributes read: the entity a version's request
    names has the attributes that version has alone, and two requests never send the same."""
    versions = tuple(_kinds())
    reads_of = [
        ALL_READS,
        Reads(frozenset({"status", "is_latest", "prerelease"}), frozenset(), False),
        Reads(frozenset({"published_at", "archived_by", "status"}), frozenset(), False),
        Reads(frozenset({"repository"}), frozenset({"now"}), False),
    ]
    for action in PolicyAction:
        request = PolicyRequest(
            ALICE, PACKAGE, versions, 500, 10, PolicyContext("", False, 9, NOW, "p"), action
        )
        for reads in reads_of:
            members = {"bob": ("ci",)}
            shared = cedar_input.version_input(request, ("dev",), reads, members=members)
            alone = cedar_input.version_input(
                request, ("dev",), reads, shared=False, members=members
            )
            sent, own = _attrs(shared.entities), _attrs(alone.entities)
            named = [shared.requests[slot]["resource"]["id"] for slot in shared.slots]
            for facts, name in zip(versions, named, strict=True):
                assert own[facts.version] == sent[name]
            assert len(sent) == len(shared.requests)
            assert len(sent) == len({json.dumps(a, sort_keys=True) for a in sent.values()})
            assert json.loads(alone.entities)[0] == json.loads(shared.entities)[0]


def test_a_decision_named_for_another_version_keeps_every_other_field() -> None:
    """What cedar gives a version decided by another's request: `replace` of its version."""
    decision = VersionDecision("a", False, ("p", "q"), ("boom",), True)
    assert dataclasses.replace(decision, version="b") == cedar._renamed(decision, "b")
    assert {f.name for f in dataclasses.fields(VersionDecision)} == {
        "version",
        "allowed",
        "policy_ids",
        "errors",
        "needs_approval",
    }, "a new field: _renamed must copy it"


def test_recorded_decisions_of_shared_plan_entries_are_each_versions_own() -> None:
    """One PlannedVersion under many versions: each version's recorded decision is its own
    dict (and list), equal to what it would be alone."""
    allowed = PlannedVersion(
        PlanOutcome.WOULD_DELETE, "allowed by p", ("p",), VersionStatus.UNLISTED
    )
    archived = PlannedVersion(
        PlanOutcome.WOULD_ARCHIVE, "allowed by p", ("p",), VersionStatus.PUBLISHED, False, NOW
    )
    missing = PlannedVersion(PlanOutcome.NOT_FOUND, "gone")
    plan = {f"1.0.{i}": (allowed, archived, missing)[i % 3] for i in range(30)}
    recorded = _decisions(plan)
    assert recorded is not None
    for version, planned in plan.items():
        assert _decisions({version: planned}) == {version: recorded[version]}
    assert len({id(d) for d in recorded.values()}) == 30
    assert len({id(d["policy_ids"]) for d in recorded.values()}) == 30


class _Purges:
    """The pending purges the use case looks up (nothing else is called)."""

    def __init__(self, pending: dict[str, PendingPurge]) -> None:
        self._pending = pending

    def pending_for(self, package: PackageRef, versions: Any) -> dict[str, PendingPurge]:
        return {v: self._pending[v] for v in versions if v in self._pending}


def test_the_plan_of_a_large_request_is_each_versions_own_decision() -> None:
    """Many versions of a few kinds, denied, needing approval, allowed; under a recovery
    window, archived ones pending a purge keep its due time and the others get the window's
    end: every plan entry is what the version's own decision and state make it."""
    versions = [f"1.0.{i}" for i in range(60)]
    statuses = [
        VersionStatus.PUBLISHED,
        VersionStatus.UNLISTED,
        VersionStatus.ARCHIVED,
        VersionStatus.DISPOSED,
    ]
    state = PackageState(
        {v: statuses[i % 4] for i, v in enumerate(versions)} | {"9.9.9": VersionStatus.PUBLISHED},
        latest="1.0.7",
    )
    due = NOW + timedelta(days=3)
    pending = {
        v: PendingPurge("id", PACKAGE, v, "r", VersionStatus.PUBLISHED, "bob", "e", NOW, due)
        for i, v in enumerate(versions)
        if i % 8 == 2
    }
    policy = FakePolicy(
        deny=frozenset(versions[i] for i in range(0, 60, 5)),
        approval_required=frozenset(versions[i] for i in range(1, 60, 7)),
    )
    window = timedelta(days=7)
    use_case = DeletePackageVersions(
        FakeCodeArtifact(),
        ThreadPoolExecutor(1),
        DeleteLimits(),
        policy,
        locks=FakePackageLocks(),
        windows=RecoveryWindows((RecoveryWindow("*", "*", window),)),
        purges=cast(PurgeStore, _Purges(pending)),
        clock=lambda: NOW,
    )
    request = DeleteRequest(PACKAGE, (*versions, "no-such"), justification="why")
    plan = use_case.plan_on(request, ALICE, state, policy)
    facts = [VersionFacts(v, state.statuses[v], v == state.latest) for v in versions]
    decisions = policy.decide(
        PolicyRequest(
            ALICE,
            PACKAGE,
            tuple(facts),
            len(state.statuses),
            len(state.statuses) - len(versions),
            PolicyContext(
                "why", False, len(request.versions), NOW, ALICE.peer, recovery_window=True
            ),
        )
    )
    outcomes = set()
    for fact, decision in zip(facts, decisions, strict=True):
        outcome, message = decided(decision, PlanOutcome.WOULD_DELETE)
        purge_at = None
        if outcome is PlanOutcome.WOULD_DELETE and fact.status is not VersionStatus.DISPOSED:
            outcome = PlanOutcome.WOULD_ARCHIVE
            purge_at = pending[fact.version].due_at if fact.version in pending else NOW + window
        expected = PlannedVersion(
            outcome, message, decision.policy_ids, fact.status, fact.is_latest, purge_at
        )
        assert expected == plan[fact.version], fact.version
        outcomes.add(outcome)
    assert {
        PlanOutcome.WOULD_ARCHIVE,
        PlanOutcome.WOULD_DELETE,
        PlanOutcome.DENIED,
        PlanOutcome.NEEDS_APPROVAL,
    } == outcomes
    assert PlanOutcome.NOT_FOUND is plan["no-such"].outcome
    assert [*versions, "no-such"] == list(plan)
