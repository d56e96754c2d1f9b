"""Recoverable deletion in Cedar: purge_now and recovery_window on a delete, and restores
(action RestorePackageVersion, with the archiving principal as `resource.archived_by`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from pkggov_gateway.adapters import cedar, cedar_input
from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    default_policy_files,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import (
    PolicyAction,
    PolicyContext,
    PolicyRequest,
    VersionDecision,
    VersionFacts,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PEER = "ipv4:10.0.0.7:5000"
RELEASE = VersionFacts("1.0.0", VersionStatus.PUBLISHED, False)
LATEST = VersionFacts("2.0.0", VersionStatus.PUBLISHED, True)
RC = VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False)
PURGE_NOW = "purge-now-needs-release-admin-and-justification"
RESTORE = 'action == Pkggov::Action::"RestorePackageVersion"'
DELETE = 'action == Pkggov::Action::"DeletePackageVersion"'


@pytest.fixture(scope="module")
def shipped() -> CedarPolicyEngine:
    return CedarPolicyEngine(default_policy_files())


def copy_shipped(tmp_path: Path, *, keep_policies: bool = True) -> PolicyFiles:
    root = tmp_path / "set"
    shutil.copytree(default_policy_files().schema.parent, root)
    if not keep_policies:
        for path in (root / "policies").iterdir():
            path.unlink()
    return PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")


def with_policies(tmp_path: Path, **policies: str) -> CedarPolicyEngine:
    """The shipped schema and entities with only the given policies (name -> text)."""
    files = copy_shipped(tmp_path, keep_policies=False)
    for name, text in policies.items():
        (files.policies / f"{name}.cedar").write_text(text)
    return CedarPolicyEngine(files)


def delete(
    principal: str,
    repository: str,
    *versions: VersionFacts,
    purge_now: bool = False,
    window: bool = True,
    justification: str = "",
) -> PolicyRequest:
    return PolicyRequest(
        principal=Principal(principal, AuthMethod.MTLS, PEER),
        package=PackageRef("demo", repository, PackageFormat.NPM, "widgets", "acme"),
        versions=versions,
        version_count=10,
        remaining_after_request=5,
        context=PolicyContext(
            justification,
            False,
            len(versions),
            NOW,
            PEER,
            purge_now=purge_now,
            recovery_window=window,
        ),
    )


def archived(version: str, by: str | None, *, latest: bool = False) -> VersionFacts:
    return VersionFacts(version, VersionStatus.ARCHIVED, latest, None, by)


def restore(principal: str, repository: str, *versions: VersionFacts) -> PolicyRequest:
    request = delete(principal, repository, *versions, window=False)
    return replace(request, remaining_after_request=10, action=PolicyAction.RESTORE)


def context_of(query: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = json.loads(query["context"])
    return context


# --- the shipped policies --------------------------------------------------------------------


def test_purge_now_under_a_window_needs_a_release_admin_and_a_justification(
    shipped: CedarPolicyEngine,
) -> None:
    """alice with a justification may purge at once; without one, or as ci, the forbid denies."""
    (allowed,) = shipped.decide(
        delete("alice", "dev-x", RELEASE, purge_now=True, justification="CVE")
    )
    (unjustified,) = shipped.decide(delete("alice", "dev-x", RELEASE, purge_now=True))
    (ci,) = shipped.decide(delete("ci-bot", "dev-x", RC, purge_now=True, justification="x"))
    assert VersionDecision("1.0.0", True, ("release-admins-may-delete",)) == allowed
    assert VersionDecision("1.0.0", False, (PURGE_NOW,)) == unjustified
    assert VersionDecision("1.0.0-rc.1", False, (PURGE_NOW,)) == ci


def test_purge_now_without_a_window_and_a_window_without_purge_now_are_plain_deletes(
    shipped: CedarPolicyEngine,
) -> None:
    """The forbid needs both: ci's permitted delete stays permitted either way."""
    (no_window,) = shipped.decide(delete("ci-bot", "dev-x", RC, purge_now=True, window=False))
    (archive,) = shipped.decide(delete("ci-bot", "dev-x", RC))
    assert [True, True] == [no_window.allowed, archive.allowed]


def test_purge_now_never_deletes_the_latest(shipped: CedarPolicyEngine) -> None:
    """A justified purge_now by a release admin on the latest: never-delete-latest denies
    (with the approval policy, which alone would only ask for approval)."""
    (decision,) = shipped.decide(
        delete("alice", "prod-release", LATEST, purge_now=True, justification="withdrawn")
    )
    assert (
        VersionDecision(
            "2.0.0",
            False,
            ("never-delete-latest", "prod-irreversible-needs-release-admin-approval"),
        )
        == decision
    )


def test_restores_by_the_archiver_or_a_release_admin(shipped: CedarPolicyEngine) -> None:
    """Per version: the archiver may, another principal may not, a release admin always may."""
    versions = (archived("1.0.0", "ci-bot"), archived("1.1.0", "bob"), archived("1.2.0", None))
    assert [
        VersionDecision("1.0.0", True, ("requester-may-restore",)),
        VersionDecision("1.1.0", False, ()),
        VersionDecision("1.2.0", False, ()),
    ] == shipped.decide(restore("ci-bot", "dev-x", *versions))
    assert [True, True, True] == [
        d.allowed for d in shipped.decide(restore("alice", "prod-x", *versions))
    ]
    (own,) = shipped.decide(restore("alice", "prod-x", archived("1.0.0", "alice")))
    assert ("release-admins-may-restore", "requester-may-restore") == own.policy_ids


def test_the_delete_forbids_do_not_apply_to_restores(shipped: CedarPolicyEngine) -> None:
    """The latest and only version, in prod, no justification: the archiver restores it."""
    request = replace(
        restore("ci-bot", "prod-x", archived("2.0.0", "ci-bot", latest=True)),
        version_count=1,
        remaining_after_request=1,
    )
    (decision,) = shipped.decide(request)
    assert VersionDecision("2.0.0", True, ("requester-may-restore",)) == decision


def test_a_group_is_not_the_archiver(shipped: CedarPolicyEngine) -> None:
    """Another principal in the archiver's group (ci) may not restore its archive."""
    (decision,) = shipped.decide(
        restore("spiffe://pkggov.test/ci/builder", "dev-x", archived("1.0.0", "ci-bot"))
    )
    assert not decision.allowed


# --- what is sent ---------------------------------------------------------------------------


def test_a_restore_is_a_request_for_its_own_action_and_context(shipped: CedarPolicyEngine) -> None:
    """RestorePackageVersion, archived_by as an entity reference, no delete-only context."""
    snapshot = shipped._snapshot
    built = cedar_input.version_input(
        restore("alice", "dev-x", archived("1.0.0", "alice")),
        ("release-admins",),
        cedar_input.ALL_READS,
    )
    (query,) = built.requests
    assert {"type": "Pkggov::Action", "id": "RestorePackageVersion"} == query["action"]
    assert {"justification", "dry_run", "request_size", "now", "peer", "auth_method"} == set(
        context_of(query)
    )
    principal, resource = json.loads(built.entities)
    assert {"__entity": {"type": "Pkggov::Principal", "id": "alice"}} == resource["attrs"][
        "archived_by"
    ]
    assert "alice" == principal["uid"]["id"]  # the caller is the archiver: one entity
    assert "archived_by" in snapshot.reads.resource


def test_a_delete_sends_purge_now_and_recovery_window_when_read_and_never_archived_by(
    shipped: CedarPolicyEngine,
) -> None:
    """The shipped set reads both flags; a delete never names an archiver, even if known."""
    request = delete("alice", "dev-x", replace(RELEASE, archived_by="alice"), purge_now=True)
    built = cedar_input.version_input(request, (), shipped._snapshot.reads)
    (query,) = built.requests
    assert "DeletePackageVersion" == query["action"]["id"]
    assert {"purge_now": True, "recovery_window": True} == {
        name: value
        for name, value in context_of(query).items()
        if name in {"purge_now", "recovery_window"}
    }
    assert all("archived_by" not in entity["attrs"] for entity in json.loads(built.entities))
    everything = cedar_input.version_input(request, (), cedar_input.ALL_READS)
    assert all("archived_by" not in e["attrs"] for e in json.loads(everything.entities))


def test_attributes_no_policy_reads_are_not_sent(tmp_path: Path) -> None:
    """A set that never reads the flags nor archived_by does not send them."""
    engine = with_policies(tmp_path, allow='@id("allow-all") permit (principal, action, resource);')
    reads = engine._snapshot.reads
    assert frozenset() == reads.context
    assert "archived_by" not in reads.resource
    built = cedar_input.version_input(
        restore("bob", "dev-x", archived("1.0.0", "ci-bot")), (), reads
    )
    assert {} == context_of(built.requests[0])
    assert 2 == len(json.loads(built.entities))  # the caller and the version, no archiver
    (decision,) = engine.decide(delete("bob", "dev-x", RELEASE, purge_now=True))
    assert decision.allowed


def test_a_policy_using_the_whole_restore_context_gets_all_of_it(tmp_path: Path) -> None:
    """The whole context of a restore is its own six attributes, not the delete's eight."""
    context = (
        '{"justification": "", "dry_run": false, "request_size": 1, '
        f'"now": {int(NOW.timestamp())}, "peer": "{PEER}", "auth_method": "mtls"}}'
    )
    engine = with_policies(
        tmp_path,
        exact=f'@id("exact") permit (principal, {RESTORE}, resource)\n'
        f"when {{ context == {context} }};",
    )
    (decision,) = engine.decide(restore("bob", "dev-x", archived("1.0.0", None)))
    assert decision.allowed


def test_the_archiver_is_in_its_groups(tmp_path: Path) -> None:
    """`resource.archived_by in Group` holds for an archiver who is not the caller."""
    engine = with_policies(
        tmp_path,
        team=(
            '@id("team-restores") permit (principal in Pkggov::Group::"release-admins", '
            f"{RESTORE}, resource) when {{ resource has archived_by && resource.archived_by in "
            'Pkggov::Group::"ci" };'
        ),
        method=(
            f'@id("method") forbid (principal, {RESTORE}, resource) when {{ resource has '
            'archived_by && resource.archived_by.auth_method == "mtls" };'
        ),
    )
    versions = (archived("1.0.0", "ci-bot"), archived("1.1.0", "bob"), archived("1.2.0", "nobody"))
    assert [
        VersionDecision("1.0.0", True, ("team-restores",)),
        VersionDecision("1.1.0", False, ()),
        VersionDecision("1.2.0", False, ()),
    ] == engine.decide(restore("alice", "dev-x", *versions))
    built = cedar_input.version_input(
        restore("alice", "dev-x", *versions, archived("1.3.0", "ci-bot")),
        ("release-admins",),
        engine._snapshot.reads,
        members=engine._snapshot.members,
    )
    principals = [
        (e["uid"]["id"], e["attrs"]["auth_method"], [g["id"] for g in e["parents"]])
        for e in json.loads(built.entities)
        if e["uid"]["type"] == "Pkggov::Principal"
    ]
    assert [
        ("alice", "mtls", ["release-admins"]),
        ("ci-bot", "", ["ci"]),
        ("bob", "", []),
        ("nobody", "", []),
    ] == principals


def _restores_of_every_kind() -> tuple[VersionFacts, ...]:
    """Two versions of each kind: archiver x status x latest."""
    versions: list[VersionFacts] = []
    for archiver in ("ci-bot", "alice", None):
        for status in (VersionStatus.ARCHIVED, VersionStatus.UNLISTED):
            for latest in (False, True):
                for copy in (1, 2):
                    number = f"{len(versions)}.{copy}.0"
                    versions.append(VersionFacts(number, status, latest, None, archiver))
    return tuple(versions)


@pytest.mark.parametrize("principal", ["ci-bot", "alice", "bob"])
def test_restores_that_look_alike_share_one_request_and_archivers_do_not(
    tmp_path: Path, principal: str
) -> None:
    """The archiver is part of what a version looks like: the decisions are unchanged."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-team.cedar").write_text(
        f'@id("team") permit (principal, {RESTORE}, resource) when {{ resource has archived_by '
        '&& resource.archived_by in Pkggov::Group::"ci" && resource.is_latest };'
    )
    engine = CedarPolicyEngine(files)
    snapshot = engine._snapshot
    versions = _restores_of_every_kind()
    batch = restore(principal, "dev-x", *versions)
    groups = snapshot.members.get(principal, ())
    shared = cedar_input.version_input(batch, groups, snapshot.reads, members=snapshot.members)
    alone = cedar_input.version_input(
        batch, groups, snapshot.reads, shared=False, members=snapshot.members
    )
    assert 3 * 2 * 2 == len(shared.requests)  # archiver x status x latest; not the name
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
    allowed = {d.allowed for d in expected}
    assert ({True} if principal == "alice" else {True, False}) == allowed


# --- the schema must describe what is sent --------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    archived_by?: Principal,\n", ""),
        ("      purge_now: Bool,\n", ""),
        ("      recovery_window: Bool,\n", ""),
        ('action "RestorePackageVersion"', 'action "RestoreVersion"'),
    ],
)
def test_a_schema_not_describing_recovery_is_refused(tmp_path: Path, old: str, new: str) -> None:
    """Without archived_by, the two flags or the restore action, the set does not load."""
    files = copy_shipped(tmp_path, keep_policies=False)
    (files.policies / "allow.cedar").write_text(
        '@id("allow-all") permit (principal, action, resource);'
    )
    text = files.schema.read_text()
    assert 1 == text.count(old)
    files.schema.write_text(text.replace(old, new))
    with pytest.raises(PolicyLoadError) as caught:
        CedarPolicyEngine(files)
    assert files.schema == caught.value.path
    assert "does not describe what pkggov sends" in caught.value.message


def test_a_delete_flag_is_not_in_a_restore_context(tmp_path: Path) -> None:
    """A policy reading purge_now for every action does not conform: restores lack it."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-bad.cedar").write_text(
        '@id("bad") forbid (principal, action, resource) when { context.purge_now };'
    )
    with pytest.raises(PolicyLoadError, match="does not conform to the schema"):
        CedarPolicyEngine(files)
    (files.policies / "zz-bad.cedar").write_text(
        f'@id("fine") forbid (principal, {DELETE}, resource) when {{ context.purge_now }};'
    )
    assert "fine" in CedarPolicyEngine(files).policy_ids()
