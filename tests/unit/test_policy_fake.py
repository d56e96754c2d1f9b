"""FakePolicy for both per-version actions: deletes (with purge_now) and restores."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

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
) -> PolicyRequest:
    context = PolicyContext(
        "", False, len(versions), datetime.now(UTC), "ipv4:127.0.0.1:1", purge_now, window
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
