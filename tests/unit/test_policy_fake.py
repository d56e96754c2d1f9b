"""FakePolicy for both per-version actions: deletes (with purge_now) and restores; four eyes
(deletes that need approval, who may vote, persons)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from pkggov_gateway.domain.approvals import (
    DeletionPlan,
    DeletionRequestRecord,
    PlannedItem,
    RequestState,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyAction, PolicyContext, PolicyRequest, VersionFacts
from pkggov_gateway.testing import FakePolicy

PACKAGE = PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets")


def request(
    principal: str,
    *versions: VersionFacts,
    action: PolicyAction = PolicyAction.DELETE,
    purge_now: bool = False,
    window: bool = False,
    approvals: int = 0,
    approver_groups: tuple[str, ...] = (),
) -> PolicyRequest:
    context = PolicyContext(
        "",
        False,
        len(versions),
        datetime.now(UTC),
        "ipv4:127.0.0.1:1",
        purge_now,
        window,
        approvals,
        approver_groups,
    )
    return PolicyRequest(
        Principal(principal, AuthMethod.DEV, "ipv4:127.0.0.1:1"),
        PACKAGE,
        versions,
        len(versions) + 1,
        1,
        context,
        action,
    )


def archived(version: str, by: str | None) -> VersionFacts:
    return VersionFacts(version, VersionStatus.ARCHIVED, False, None, by)


def outcomes(policy: FakePolicy, batch: PolicyRequest) -> list[tuple[bool, tuple[str, ...]]]:
    return [(d.allowed, d.policy_ids) for d in policy.current().decide(batch)]


def test_by_default_restores_are_decided_like_deletes() -> None:
    """The deny lists apply to both actions; everything else is allowed by ``permit``."""
    policy = FakePolicy(deny=frozenset({"2"}), deny_principals=frozenset({"mallory"}))
    versions = (archived("1", "someone"), archived("2", None))
    assert [(True, ("permit",)), (False, ("deny-listed",))] == outcomes(
        policy, request("alice", *versions, action=PolicyAction.RESTORE)
    )
    assert [(False, ("deny-listed",))] * 2 == outcomes(
        policy, request("mallory", *versions, action=PolicyAction.RESTORE)
    )
    assert [PolicyAction.RESTORE] * 2 == [r.action for r in policy.requests]


def test_archiver_restores_only() -> None:
    """Only the archiver, or a member of a restore group, restores; others by not-the-archiver."""
    policy = FakePolicy(archiver_restores_only=True, groups={"alice": ("release-admins",)})
    versions = (archived("1", "bob"), archived("2", "carol"), archived("3", None))
    assert [
        (True, ("permit",)),
        (False, ("not-the-archiver",)),
        (False, ("not-the-archiver",)),
    ] == outcomes(policy, request("bob", *versions, action=PolicyAction.RESTORE))
    assert [(True, ("permit",))] * 3 == outcomes(
        policy, request("alice", *versions, action=PolicyAction.RESTORE)
    )
    policy.restore_groups = frozenset()  # "reload"
    assert [False, False, False] == [
        allowed
        for allowed, _ in outcomes(policy, request("alice", *versions, action=PolicyAction.RESTORE))
    ]
    assert [True, True, True] == [  # deletes are not restores
        allowed for allowed, _ in outcomes(policy, request("bob", *versions))
    ]


def test_deny_purge_now_applies_only_to_purge_now_under_a_window() -> None:
    """purge_now without a window, or a window without purge_now, is an ordinary delete."""
    policy = FakePolicy(deny_purge_now=frozenset({"ci-bot"}))
    version = VersionFacts("1", VersionStatus.UNLISTED, False)
    batch = request("ci-bot", version, purge_now=True, window=True)
    assert [(False, ("purge-now-denied",))] == outcomes(policy, batch)
    assert [(True, ("permit",))] == outcomes(
        policy, replace(batch, principal=Principal("alice", AuthMethod.DEV, ""))
    )
    assert [(True, ("permit",))] == outcomes(policy, request("ci-bot", version, purge_now=True))
    assert [(True, ("permit",))] == outcomes(policy, request("ci-bot", version, window=True))
    assert [(True, ("permit",))] == outcomes(
        policy, request("ci-bot", version, action=PolicyAction.RESTORE, purge_now=True, window=True)
    )


def test_approval_required_by_repository_or_version_until_approved() -> None:
    """A delete in a listed repository (or of a listed version) needs approval unless the
    context has enough approvals; other rules deny first; restores never need it."""
    policy = FakePolicy(approval_required=frozenset({"dev-shared"}), deny=frozenset({"3"}))
    versions = (VersionFacts("1", VersionStatus.PUBLISHED, False), archived("3", None))
    decided = policy.decide(request("alice", *versions))
    assert [(False, ("approval-required",), True), (False, ("deny-listed",), False)] == [
        (d.allowed, d.policy_ids, d.needs_approval) for d in decided
    ]
    assert [(True, ("permit",))] == outcomes(policy, request("alice", versions[0], approvals=1))
    assert [(True, ("permit",))] == outcomes(
        policy, request("alice", versions[0], action=PolicyAction.RESTORE)
    )
    policy.approval_required = frozenset({"2"})  # by version
    two = VersionFacts("2", VersionStatus.PUBLISHED, False)
    assert [True, False] == [
        d.needs_approval for d in policy.decide(request("alice", two, versions[0]))
    ]


def test_approval_quorum_and_group() -> None:
    """approvals_needed and approval_group: both must be met."""
    policy = FakePolicy(
        approval_required=frozenset({"dev-shared"}), approvals_needed=2, approval_group="admins"
    )
    version = VersionFacts("1", VersionStatus.PUBLISHED, False)
    decided = [
        policy.decide(request("a", version, approvals=n, approver_groups=groups))[0]
        for n, groups in ((1, ("admins",)), (2, ("ci",)), (2, ("ci", "admins")))
    ]
    assert [(False, True), (False, True), (True, False)] == [
        (d.allowed, d.needs_approval) for d in decided
    ]


def _record(requester: str) -> DeletionRequestRecord:
    plan = DeletionPlan(
        PACKAGE,
        (PlannedItem("1", "r", VersionStatus.PUBLISHED, False),),
        "2",
        2,
        ("1",),
        "why",
        None,
        False,
        False,
    )
    now = datetime.now(UTC)
    return DeletionRequestRecord(
        "req-1", requester, requester, now, now, RequestState.PENDING, plan, plan.digest(), (), "e"
    )


def test_authorize_approval_and_persons() -> None:
    """Anyone may vote by default; `approvers` restricts it; deny-listed principals never may.
    Every vote asked is recorded; person_of follows `persons`."""
    policy = FakePolicy(deny_principals=frozenset({"mallory"}), persons={"cert:alice": "alice"})
    now = datetime.now(UTC)

    def vote(who: str) -> tuple[bool, tuple[str, ...]]:
        decision = policy.current().authorize_approval(
            Principal(who, AuthMethod.DEV, ""), _record("alice"), now, "because"
        )
        assert "req-1" == decision.version
        return decision.allowed, decision.policy_ids

    assert (True, ("permit",)) == vote("dave")
    assert (False, ("deny-listed",)) == vote("mallory")
    policy.approvers = frozenset({"dave"})
    assert [(True, ("permit",)), (False, ("not-an-approver",))] == [vote("dave"), vote("bob")]
    assert [("dave", "req-1", "because")] * 2 == [
        (p.id, r, why) for p, r, why in policy.votes if p.id == "dave"
    ]
    assert ("alice", "alice", "bob") == (
        policy.person_of("cert:alice"),
        policy.person_of("alice"),
        policy.person_of("bob"),
    )


def test_groups_for_adds_claim_groups() -> None:
    """groups_for: the id's groups, then its claim groups (with `defined_groups`, only those
    defined), each once; restore groups count through claim groups too."""
    worker = Principal(
        "github:repo:acme/widgets:ref:refs/heads/main",
        AuthMethod.TOKEN,
        "ipv4:127.0.0.1:1",
        issuer="github",
        claim_groups=("release-admins", "ci", "no-such"),
    )
    policy = FakePolicy(groups={worker.id: ("ci",)})
    assert ("ci", "release-admins", "no-such") == policy.groups_for(worker)
    assert ("ci",) == policy.groups_of(worker.id)
    policy = replace(policy, defined_groups=frozenset({"ci", "release-admins"}))
    assert ("ci", "release-admins") == policy.current().groups_for(worker)
    policy = FakePolicy(archiver_restores_only=True)
    batch = replace(
        request("x", archived("1", "bob"), action=PolicyAction.RESTORE), principal=worker
    )
    assert [(True, ("permit",))] == outcomes(policy, batch)
    stranger = replace(worker, claim_groups=())
    assert [(False, ("not-the-archiver",))] == outcomes(policy, replace(batch, principal=stranger))
