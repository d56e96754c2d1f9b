"""Decisions: Cedar semantics (default deny, forbid beats permit, error = deny), per version."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cedarpy
import pytest

from pkggov_gateway.adapters import cedar, cedar_input
from pkggov_gateway.adapters.cedar import CedarPolicyEngine, PolicyFiles, default_policy_files
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import (
    PolicyContext,
    PolicyRequest,
    VersionDecision,
    VersionFacts,
)
from pkggov_gateway.tools.policy_test import load_policy_cases

NOW = datetime(2025, 6, 1, tzinfo=UTC)
RC = VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False)
LATEST = VersionFacts("2.0.0", VersionStatus.PUBLISHED, True)
RELEASE = VersionFacts("1.0.0", VersionStatus.PUBLISHED, False)


@pytest.fixture(scope="module")
def shipped() -> CedarPolicyEngine:
    return CedarPolicyEngine(default_policy_files())


def with_policies(tmp_path: Path, **policies: str) -> CedarPolicyEngine:
    """The shipped schema and entities with the given policies (file name -> text)."""
    root = tmp_path / "set"
    shutil.copytree(default_policy_files().schema.parent, root)
    for path in (root / "policies").iterdir():
        path.unlink()
    for name, text in policies.items():
        (root / "policies" / f"{name}.cedar").write_text(text)
    return CedarPolicyEngine(
        PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")
    )


def request(
    principal: str,
    repository: str,
    *versions: VersionFacts,
    justification: str = "",
    version_count: int = 10,
    remaining: int = 5,
) -> PolicyRequest:
    return PolicyRequest(
        principal=Principal(principal, AuthMethod.MTLS, "ipv4:10.0.0.7:5000"),
        package=PackageRef("demo", repository, PackageFormat.NPM, "widgets", "acme"),
        versions=versions,
        version_count=version_count,
        remaining_after_request=remaining,
        context=PolicyContext(justification, False, len(versions), NOW, "ipv4:10.0.0.7:5000"),
    )


def test_mixed_request_is_decided_per_version_in_request_order(shipped: CedarPolicyEngine) -> None:
    """One batch, one decision per version, in the order asked, each with its own reasons."""
    decisions = shipped.decide(request("ci-bot", "dev-shared", LATEST, RC, RELEASE))
    assert [
        VersionDecision("2.0.0", False, ("never-delete-latest",)),
        VersionDecision("1.0.0-rc.1", True, ("ci-may-delete-dev-prereleases",)),
        VersionDecision("1.0.0", False, ()),
    ] == decisions


def test_forbid_beats_permit_and_is_reported(shipped: CedarPolicyEngine) -> None:
    """A release admin (permitted) deleting the latest: denied, by the forbid's @id."""
    (decision,) = shipped.decide(request("alice", "dev-shared", LATEST))
    assert VersionDecision("2.0.0", False, ("never-delete-latest",)) == decision


def test_every_forbid_that_applies_is_reported(shipped: CedarPolicyEngine) -> None:
    """The latest and only version in prod without a justification: four forbids, in order
    (one an approval policy: with the others, it is a plain deny)."""
    (decision,) = shipped.decide(
        request("alice", "prod-main", LATEST, version_count=1, remaining=0)
    )
    assert (
        "never-delete-latest",
        "never-delete-only-remaining-version",
        "prod-irreversible-needs-release-admin-approval",
        "prod-needs-release-admin-and-justification",
    ) == decision.policy_ids
    assert not decision.needs_approval


def test_default_deny_reports_no_policy(shipped: CedarPolicyEngine) -> None:
    """Nothing permits ci to delete a release version: denied with no policy ids."""
    (decision,) = shipped.decide(request("ci-bot", "dev-shared", RELEASE))
    assert VersionDecision("1.0.0", False, (), ()) == decision


def test_principal_in_no_group_is_denied(shipped: CedarPolicyEngine) -> None:
    """bob is in the entities file but in no group: nothing permits him."""
    assert [False, False] == [
        d.allowed for d in shipped.decide(request("bob", "dev-x", RC, RELEASE))
    ]


def test_unknown_principal_is_evaluated_with_no_groups(shipped: CedarPolicyEngine) -> None:
    """A principal missing from the entities file is decided (denied), not an error."""
    decisions = shipped.decide(request("spiffe://elsewhere/svc", "dev-x", RC, LATEST))
    assert [
        VersionDecision("1.0.0-rc.1", False, ()),
        VersionDecision("2.0.0", False, ("never-delete-latest",)),
    ] == decisions


def test_groups_argument_replaces_the_entities_file(shipped: CedarPolicyEngine) -> None:
    """decide(groups=...) is how policy tests give a principal groups."""
    (decision,) = shipped.decide(request("new-svc", "dev-x", RC), groups=["ci"])
    assert decision.allowed
    (decision,) = shipped.decide(request("ci-bot", "dev-x", RC), groups=[])
    assert not decision.allowed


def test_prod_needs_justification(shipped: CedarPolicyEngine) -> None:
    """In prod-*, a release admin is allowed only with a justification (and, where no
    recovery window applies, another release admin's approval)."""
    (without,) = shipped.decide(request("alice", "prod-main", RELEASE))
    (with_one,) = shipped.decide(request("alice", "prod-main", RELEASE, justification="CVE"))
    assert (
        "prod-irreversible-needs-release-admin-approval",
        "prod-needs-release-admin-and-justification",
    ) == without.policy_ids
    assert not without.needs_approval
    approval = ("prod-irreversible-needs-release-admin-approval",)
    assert VersionDecision("1.0.0", False, approval, needs_approval=True) == with_one
    approved = replace(
        request("alice", "prod-main", RELEASE, justification="CVE"),
        context=PolicyContext(
            "CVE", False, 1, NOW, "ipv4:10.0.0.7:5000", approver_groups=("release-admins",)
        ),
    )
    assert [VersionDecision("1.0.0", True, ("release-admins-may-delete",))] == shipped.decide(
        approved
    )


def test_empty_request_needs_no_evaluation(shipped: CedarPolicyEngine) -> None:
    """No versions, no decisions."""
    assert [] == shipped.decide(request("alice", "dev-x"))


def test_a_version_named_twice_is_decided_twice(shipped: CedarPolicyEngine) -> None:
    """Duplicates (not expected from the use case) do not break the entity set."""
    decisions = shipped.decide(request("alice", "dev-x", RELEASE, RELEASE))
    assert [True, True] == [d.allowed for d in decisions]


def test_evaluation_error_is_a_deny_even_when_a_permit_applies(tmp_path: Path) -> None:
    """Cedar skips an erroring policy; the gateway denies, naming it and giving the error."""
    engine = with_policies(
        tmp_path,
        allow='@id("allow-all") permit (principal, action, resource);',
        overflow=(
            '@id("overflow")\nforbid (principal, action == Pkggov::Action::"'
            'DeletePackageVersion", resource)\n'
            "when { resource.version_count * 9223372036854775807 > 0 };"
        ),
    )
    (decision,) = engine.decide(request("alice", "dev-x", RELEASE))
    assert (False, ("overflow",)) == (decision.allowed, decision.policy_ids)
    assert 1 == len(decision.errors)
    assert "error while evaluating policy `overflow`: integer overflow" in decision.errors[0]


def test_published_time_is_used_only_when_present(tmp_path: Path) -> None:
    """A policy guarded by `has` sees published_at only for versions whose time is known."""
    engine = with_policies(
        tmp_path,
        allow='@id("allow-all") permit (principal, action, resource);',
        recent=(
            '@id("keep-recent")\nforbid (principal, action == Pkggov::Action::"'
            'DeletePackageVersion", resource)\n'
            "when { resource has published_at && resource.published_at > context.now - 86400 };"
        ),
    )
    assert engine.uses_published_time()
    recent = VersionFacts("1.0.0", VersionStatus.PUBLISHED, False, NOW - timedelta(hours=1))
    old = VersionFacts("0.9.0", VersionStatus.PUBLISHED, False, NOW - timedelta(days=30))
    unknown = VersionFacts("0.8.0", VersionStatus.PUBLISHED, False, None)
    decisions = engine.decide(request("alice", "dev-x", recent, old, unknown))
    assert [
        VersionDecision("1.0.0", False, ("keep-recent",)),
        VersionDecision("0.9.0", True, ("allow-all",)),
        VersionDecision("0.8.0", True, ("allow-all",)),
    ] == decisions


def test_a_policy_using_the_whole_context_gets_all_of_it(tmp_path: Path) -> None:
    """Attributes no policy reads are not sent, but a whole-record use gets every attribute."""
    context = (
        '{"justification": "why", "dry_run": false, "request_size": 1, '
        f'"now": {int(NOW.timestamp())}, "peer": "ipv4:10.0.0.7:5000", "auth_method": "mtls", '
        '"purge_now": false, "recovery_window": false, "approvals": 2, '
        '"approver_groups": ["ci", "release-admins"]}'
    )
    engine = with_policies(
        tmp_path,
        exact='@id("exact") permit (principal, action == Pkggov::Action::"'
        f'DeletePackageVersion", resource) when {{ context == {context} }};',
    )
    batch = request("bob", "dev-x", RELEASE, justification="why")
    approved = replace(  # a set: order and repeats do not matter
        batch,
        context=replace(batch.context, approvals=2, approver_groups=("release-admins", "ci", "ci")),
    )
    (decision,) = engine.decide(approved)
    assert decision.allowed
    (decision,) = engine.decide(batch)
    assert not decision.allowed


def test_decisions_equal_those_made_with_every_attribute_and_the_schema() -> None:
    """Sending only what policies read changes no decision (every shipped test case)."""
    files = default_policy_files()
    engine = CedarPolicyEngine(files)
    snapshot = engine._snapshot
    schema = cedarpy.Schema.from_str(files.schema.read_text())
    cases = load_policy_cases(files.schema.parent / "tests.yaml")
    assert snapshot.reads != cedar_input.ALL_READS  # the shipped set reads only some attributes
    for case in cases:
        principal = case.request.principal
        listed = case.groups if case.groups is not None else engine.groups_of(principal.id)
        groups = (*listed, *principal.claim_groups)  # (the shipped cases' are all defined)
        full_input = cedar_input.version_input(
            case.request, groups, cedar_input.ALL_READS, members=snapshot.members
        )
        entities = snapshot.base.with_added_json_str(full_input.entities, schema)
        (full,) = cedarpy.is_authorized_batch(
            full_input.requests, snapshot.policy_set, entities, schema
        )
        (pruned,) = engine.decide(case.request, groups=case.groups)
        assert (full.allowed, sorted(full.diagnostics.reasons)) == (
            pruned.allowed,
            sorted(f"policy{engine.policy_ids().index(i)}" for i in pruned.policy_ids),
        ), case.name


def test_ids_are_data_never_parsed_as_cedar(shipped: CedarPolicyEngine) -> None:
    """A principal or version spelled like Cedar (quotes, newlines, entity syntax) is just text."""
    sneaky = VersionFacts('1.0.0-rc.1" || true || "', VersionStatus.UNLISTED, False)
    entity_like = VersionFacts('Pkggov::Group::"release-admins"', VersionStatus.UNLISTED, False)
    decisions = shipped.decide(request('Pkggov::Group::"ci"\n', "dev-x", sneaky, entity_like))
    assert [False, False] == [d.allowed for d in decisions]
    assert [(), ()] == [d.errors for d in decisions]
    (decision,) = shipped.decide(request("ci-bot", "dev-x", sneaky))
    assert decision.allowed  # the same text is an ordinary pre-release version


def _every_kind_of_version() -> tuple[VersionFacts, ...]:
    """Two versions of each kind (status x latest x pre-release x published time known)."""
    versions: list[VersionFacts] = []
    for status in VersionStatus:
        for latest in (False, True):
            for suffix in ("", "-rc.1"):
                for published in (None, NOW - timedelta(days=3)):
                    for copy in (1, 2):
                        number = f"{len(versions)}.{copy}.0{suffix}"
                        versions.append(VersionFacts(number, status, latest, published))
    return tuple(versions)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "by-name": '@id("by-name") forbid (principal, action == Pkggov::Action::"'
            'DeletePackageVersion", resource == '
            'Pkggov::PackageVersion::"0.1.0");'
        },
        {
            "by-version": '@id("by-version") forbid (principal, action == Pkggov::Action::"'
            'DeletePackageVersion", resource) '
            'when { resource.version like "1*" };'
        },
        {
            "by-age": '@id("by-age") forbid (principal, action == Pkggov::Action::"'
            'DeletePackageVersion", resource) '
            "when { resource has published_at && resource.published_at < context.now - 86400 };"
        },
    ],
)
def test_versions_that_look_alike_share_one_cedar_request(
    tmp_path: Path, extra: dict[str, str]
) -> None:
    """Versions no policy can tell apart are decided once; the decisions are unchanged."""
    policies = {
        path.stem: path.read_text() for path in sorted(default_policy_files().policies.iterdir())
    }
    engine = with_policies(tmp_path, **policies, **extra)
    snapshot = engine._snapshot
    versions = _every_kind_of_version()
    batch = request("ci-bot", "dev-x", *versions, justification="why")
    shared = cedar_input.version_input(batch, ("ci",), snapshot.reads)
    alone = cedar_input.version_input(batch, ("ci",), snapshot.reads, shared=False)
    assert len(alone.requests) == len(versions)
    if "by-age" in extra:  # the time is read too: the two copies of each kind still share
        kinds = len(versions) // 2
    elif extra:  # the policy looks at the resource or its version: each is its own
        kinds = len(versions)
    else:  # status x latest x pre-release: the time is not read, nor the name
        kinds = len(VersionStatus) * 2 * 2
    assert kinds == len(shared.requests)
    entities = snapshot.base.with_added_json_str(alone.entities)
    expected = [
        cedar._decision(snapshot, facts.version, result)
        for facts, result in zip(
            versions,
            cedarpy.is_authorized_batch(alone.requests, snapshot.policy_set, entities),
            strict=True,
        )
    ]
    assert expected == engine.decide(batch)
    assert any(d.allowed for d in expected)
    assert not all(d.allowed for d in expected)
