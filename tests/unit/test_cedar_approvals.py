"""Four eyes in Cedar: approval policies (forbids annotated @approval) and what a decision
says about them, votes on deletion requests (ApproveDeletionRequest), and persons."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from pkggov_gateway.adapters import cedar_input
from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    RequestFacts,
    default_policy_files,
)
from pkggov_gateway.domain.approvals import (
    DeletionPlan,
    DeletionRequestRecord,
    PlannedItem,
    RequestState,
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
from pkggov_gateway.testing import FakePolicy

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PEER = "ipv4:10.0.0.7:5000"
PACKAGE = PackageRef("demo", "prod-release", PackageFormat.NPM, "widgets", "acme")
RELEASE = VersionFacts("1.0.0", VersionStatus.PUBLISHED, False)
OTHER = VersionFacts("1.1.0", VersionStatus.PUBLISHED, False)
LATEST = VersionFacts("2.0.0", VersionStatus.PUBLISHED, True)
SHIPPED_APPROVAL = "prod-irreversible-needs-release-admin-approval"
DELETE = 'action == Pkggov::Action::"DeletePackageVersion"'
APPROVE = 'action == Pkggov::Action::"ApproveDeletionRequest"'

PERMIT_ALL = '@id("permit-all")\npermit (principal, action, resource);\n'
NEEDS_ADMIN = (
    '@id("needs-admin")\n@approval("one release-admin")\n'
    f"forbid (principal, {DELETE}, resource)\n"
    'unless { context.approver_groups.contains("release-admins") };\n'
)
NEVER_LATEST = (
    f'@id("never-latest")\nforbid (principal, {DELETE}, resource) when {{ resource.is_latest }};\n'
)


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


def load_error(files: PolicyFiles) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        CedarPolicyEngine(files)
    return caught.value


def delete(
    principal: str,
    *versions: VersionFacts,
    repository: str = "prod-release",
    approvals: int = 0,
    approver_groups: tuple[str, ...] = (),
    window: bool = False,
    purge_now: bool = False,
    justification: str = "CVE-2026-0001",
) -> PolicyRequest:
    return PolicyRequest(
        principal=Principal(principal, AuthMethod.MTLS, PEER),
        package=replace(PACKAGE, repository=repository),
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
            approvals=approvals,
            approver_groups=approver_groups,
        ),
    )


def record(
    requester: str = "alice",
    *items: PlannedItem,
    request_id: str = "3f2a9c",
    purge_now: bool = True,
    latest: str | None = "2.0.0",
) -> DeletionRequestRecord:
    items = items or (PlannedItem("1.0.0", "rev-1", VersionStatus.PUBLISHED, False),)
    plan = DeletionPlan(
        package=PACKAGE,
        versions=items,
        latest=latest,
        version_count=3,
        requested=tuple(item.version for item in items),
        justification="CVE-2026-0001",
        expected_status=None,
        allow_partial=False,
        purge_now=purge_now,
    )
    return DeletionRequestRecord(
        request_id=request_id,
        requester=requester,
        requester_person=requester,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=72),
        state=RequestState.PENDING,
        plan=plan,
        plan_hash=plan.digest(),
        required_by=(SHIPPED_APPROVAL,),
        event_id="event-1",
    )


def vote(
    engine: CedarPolicyEngine, principal: str, request: Any, reason: str = "ok"
) -> VersionDecision:
    who = Principal(principal, AuthMethod.DEV, PEER)
    return engine.authorize_approval(who, request, NOW, reason)


# --- the decision rule -----------------------------------------------------------------------


def test_denied_only_by_an_approval_policy_needs_approval(tmp_path: Path) -> None:
    """Allowed without it, denied by it alone: denied, naming it, with needs_approval."""
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN)
    assert [VersionDecision("1.0.0", False, ("needs-admin",), needs_approval=True)] == (
        engine.decide(delete("bob", RELEASE))
    )
    assert ["needs-admin"] == engine.approval_policy_ids()


def test_the_votes_in_the_context_lift_it(tmp_path: Path) -> None:
    """With the approvers' groups in the context, the approval policy does not apply."""
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN)
    approved = delete("bob", RELEASE, approvals=1, approver_groups=("release-admins",))
    assert [VersionDecision("1.0.0", True, ("permit-all",))] == engine.decide(approved)
    other_group = delete("bob", RELEASE, approvals=3, approver_groups=("ci", "auditors"))
    assert [True] == [d.needs_approval for d in engine.decide(other_group)]


def test_an_approval_policy_with_another_forbid_is_a_plain_deny(tmp_path: Path) -> None:
    """Approval cannot lift another forbid: denied by both, no needs_approval."""
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN, latest=NEVER_LATEST)
    assert [
        VersionDecision("2.0.0", False, ("needs-admin", "never-latest")),
        VersionDecision("1.0.0", False, ("needs-admin",), needs_approval=True),
    ] == engine.decide(delete("bob", LATEST, RELEASE))


def test_an_approval_policy_where_nothing_permits_is_a_plain_deny(tmp_path: Path) -> None:
    """Without the approval policy nothing permits: approval could not help, so denied."""
    engine = with_policies(
        tmp_path,
        admins='@id("admins")\npermit (principal in Pkggov::Group::"release-admins", '
        f"{DELETE}, resource);\n",
        approval=NEEDS_ADMIN,
    )
    (bob,) = engine.decide(delete("bob", RELEASE))
    (alice,) = engine.decide(delete("alice", RELEASE))
    assert VersionDecision("1.0.0", False, ("needs-admin",)) == bob
    assert VersionDecision("1.0.0", False, ("needs-admin",), needs_approval=True) == alice


def test_a_set_of_only_approval_policies_needs_no_approval(tmp_path: Path) -> None:
    """Without them the set is empty (default deny): a plain deny."""
    engine = with_policies(tmp_path, approval=NEEDS_ADMIN)
    assert engine._snapshot.without_approvals is None
    assert [VersionDecision("1.0.0", False, ("needs-admin",))] == engine.decide(
        delete("bob", RELEASE)
    )


def test_an_evaluation_error_is_a_plain_deny(tmp_path: Path) -> None:
    """An approval policy that fails to evaluate, or another that does: denied, never
    needs_approval."""
    failing_approval = (
        '@id("failing-approval")\n@approval\n'
        f"forbid (principal, {DELETE}, resource)\n"
        "when { resource.version_count * 9223372036854775807 > 0 };\n"
    )
    overflow = (
        f'@id("overflow")\nforbid (principal, {DELETE}, resource)\n'
        "when { resource.remaining_after_request * 9223372036854775807 > 0 };\n"
    )
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=failing_approval)
    (decision,) = engine.decide(delete("bob", RELEASE))
    assert (False, False, ("failing-approval",)) == (
        decision.allowed,
        decision.needs_approval,
        decision.policy_ids,
    )
    assert decision.errors
    engine = with_policies(tmp_path / "2", allow=PERMIT_ALL, approval=NEEDS_ADMIN, other=overflow)
    (decision,) = engine.decide(delete("bob", RELEASE))
    assert (False, False) == (decision.allowed, decision.needs_approval)
    assert "overflow" in decision.policy_ids
    assert decision.errors


def test_an_erring_permit_beside_an_approval_policy_is_a_plain_deny(tmp_path: Path) -> None:
    """Cedar skips an erring permit and another permit allows: still an error, so denied,
    and not needs_approval (the set without approval policies would err the same way)."""
    erring_permit = (
        f'@id("erring-permit")\npermit (principal, {DELETE}, resource)\n'
        "when { resource.version_count * 9223372036854775807 > 0 };\n"
    )
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN, erring=erring_permit)
    (decision,) = engine.decide(delete("bob", RELEASE))
    assert (False, False) == (decision.allowed, decision.needs_approval)
    assert decision.errors


def test_only_versions_denied_by_approval_policies_are_decided_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch for all; a second batch with only the versions approval policies denied,
    against the set without them; none at all when no version needs it."""
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN, latest=NEVER_LATEST)
    batches: list[tuple[int, int]] = []
    real = cedarpy.is_authorized_batch

    def counting(requests: list[Any], policies: Any, *args: Any) -> Any:
        batches.append((len(requests), len(policies)))
        return real(requests, policies, *args)

    monkeypatch.setattr(cedarpy, "is_authorized_batch", counting)
    engine.decide(delete("bob", LATEST, RELEASE))
    assert [(2, 3), (1, 2)] == batches  # only the version not latest is decided again
    batches.clear()
    approved = delete("bob", LATEST, RELEASE, approver_groups=("release-admins",))
    assert [False, True] == [d.allowed for d in engine.decide(approved)]
    assert [(2, 3)] == batches


def test_versions_sharing_a_cedar_request_each_keep_needs_approval(tmp_path: Path) -> None:
    """Versions that look alike are decided once; each decision says needs_approval."""
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN, latest=NEVER_LATEST)
    decisions = engine.decide(delete("bob", RELEASE, OTHER))
    assert [
        VersionDecision("1.0.0", False, ("needs-admin",), needs_approval=True),
        VersionDecision("1.1.0", False, ("needs-admin",), needs_approval=True),
    ] == decisions


def test_an_approval_policy_is_an_ordinary_forbid_for_other_actions(tmp_path: Path) -> None:
    """A restore (or a read, or a vote) it forbids is denied: no approval flow there."""
    on_restore = (
        '@id("restore-approval")\n@approval("an admin")\n'
        'forbid (principal, action == Pkggov::Action::"RestorePackageVersion", resource);\n'
    )
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=on_restore)
    archived = VersionFacts("1.0.0", VersionStatus.ARCHIVED, False, None, "bob")
    restore = replace(delete("bob", archived), action=PolicyAction.RESTORE)
    assert [VersionDecision("1.0.0", False, ("restore-approval",))] == engine.decide(restore)


def test_a_reload_brings_its_own_approval_policies(tmp_path: Path) -> None:
    """The set without approval policies is built per snapshot: a reload replaces it."""
    files = copy_shipped(tmp_path, keep_policies=False)
    (files.policies / "allow.cedar").write_text(PERMIT_ALL)
    engine = CedarPolicyEngine(files)
    assert [True] == [d.allowed for d in engine.decide(delete("bob", RELEASE))]
    (files.policies / "approval.cedar").write_text(NEEDS_ADMIN)
    engine.reload()
    assert [True] == [d.needs_approval for d in engine.decide(delete("bob", RELEASE))]


# --- loading ---------------------------------------------------------------------------------


def test_approval_on_a_permit_is_refused_naming_file_line_and_policy(tmp_path: Path) -> None:
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text(
        "// a permit cannot ask for approval\n"
        '@id("approving-permit")\n@approval("two admins")\n'
        "permit (principal, action, resource);\n"
    )
    error = load_error(files)
    assert (bad, 2) == (error.path, error.line)
    assert '"approving-permit"' in error.message
    assert "@approval is only for forbid policies" in error.message


def test_approval_with_no_value_and_its_note_are_kept(tmp_path: Path) -> None:
    """@approval alone marks an approval policy; its value is kept as a note."""
    bare = f'@id("bare")\n@approval\nforbid (principal, {DELETE}, resource);\n'
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=NEEDS_ADMIN, bare=bare)
    notes = {p.id: (p.approval, p.approval_note) for p in engine._snapshot.policies}
    assert {
        "bare": (True, ""),
        "needs-admin": (True, "one release-admin"),
        "permit-all": (False, ""),
    } == notes


def test_a_schema_without_the_approval_action_is_refused(tmp_path: Path) -> None:
    """The loader checks with the schema what a vote sends."""
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    start = text.index('  action "ApproveDeletionRequest"')
    end = text.index("};", start) + 2
    release = files.policies / "release-admins-may-approve.cedar"
    release.unlink()
    files.schema.write_text(text[:start] + text[end:])
    error = load_error(files)
    assert files.schema == error.path
    assert "does not describe what pkggov sends" in error.message


def test_a_schema_without_the_vote_context_is_refused(tmp_path: Path) -> None:
    """DeletePackageVersion's context must have approvals and approver_groups."""
    files = copy_shipped(tmp_path)
    for path in files.policies.iterdir():
        if "approval" in path.name:
            path.unlink()
    text = files.schema.read_text()
    files.schema.write_text(text.replace("      approver_groups: Set<String>,\n", ""))
    error = load_error(files)
    assert files.schema == error.path
    assert "does not describe what pkggov sends" in error.message


def test_a_policy_for_votes_only_changes_nothing_a_version_decision_reads(tmp_path: Path) -> None:
    """What ApproveDeletionRequest policies read is not sent in per-version decisions."""
    by_request = (
        f'@id("one-request")\npermit (principal, {APPROVE}, '
        'resource == Pkggov::DeletionRequest::"r1")\n'
        'when { resource.package == "widgets" && context.reason != "" };\n'
    )
    engine = with_policies(tmp_path, allow=PERMIT_ALL, votes=by_request)
    assert (frozenset(), frozenset(), False) == (
        engine._snapshot.reads.resource,
        engine._snapshot.reads.context,
        engine._snapshot.reads.resource_identity,
    )


def test_the_shipped_set_sends_approver_groups_only_as_read(shipped: CedarPolicyEngine) -> None:
    """The shipped approval policy reads approver_groups (sent as a set), not approvals."""
    reads = shipped._snapshot.reads
    assert "approver_groups" in reads.context
    assert "approvals" not in reads.context
    built = cedar_input.version_input(
        delete("alice", RELEASE, approvals=2, approver_groups=("release-admins", "ci", "ci")),
        ("release-admins",),
        reads,
    )
    context = json.loads(built.requests[0]["context"])
    assert ["ci", "release-admins"] == context["approver_groups"]
    assert "approvals" not in context
    every = cedar_input.version_input(
        delete("alice", RELEASE, approvals=2), ("release-admins",), cedar_input.ALL_READS
    )
    context = json.loads(every.requests[0]["context"])
    assert (2, []) == (context["approvals"], context["approver_groups"])


def test_a_policy_reading_approvals_counts_votes(tmp_path: Path) -> None:
    """approvals (a Long) may ask for a quorum."""
    two = (
        '@id("two-approvals")\n@approval("two people")\n'
        f"forbid (principal, {DELETE}, resource) unless {{ context.approvals >= 2 }};\n"
    )
    engine = with_policies(tmp_path, allow=PERMIT_ALL, approval=two)
    decided = [engine.decide(delete("bob", RELEASE, approvals=n))[0] for n in (0, 1, 2)]
    assert [(False, True), (False, True), (True, False)] == [
        (d.allowed, d.needs_approval) for d in decided
    ]


# --- the shipped approval policy --------------------------------------------------------------


def test_shipped_prod_irreversible_deletes_need_a_release_admins_approval(
    shipped: CedarPolicyEngine,
) -> None:
    """purge_now under the window, or any delete without one, in prod-*: needs approval;
    archiving under the window: allowed at once; approved by a release admin: allowed."""
    needs = VersionDecision("1.0.0", False, (SHIPPED_APPROVAL,), needs_approval=True)
    allowed = VersionDecision("1.0.0", True, ("release-admins-may-delete",))
    assert [needs] == shipped.decide(delete("alice", RELEASE, window=True, purge_now=True))
    assert [needs] == shipped.decide(delete("alice", RELEASE))
    assert [needs] == shipped.decide(delete("alice", RELEASE, purge_now=True))
    assert [allowed] == shipped.decide(delete("alice", RELEASE, window=True))
    assert [allowed] == shipped.decide(
        delete("alice", RELEASE, purge_now=True, window=True, approver_groups=("release-admins",))
    )
    assert [allowed] == shipped.decide(delete("alice", RELEASE, repository="dev-x"))


def test_shipped_approval_never_helps_ci_in_prod(shipped: CedarPolicyEngine) -> None:
    """ci is refused in prod by a non-approval forbid: approved or not, a plain deny."""
    rc = VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False)
    for groups in ((), ("release-admins",)):
        (decision,) = shipped.decide(delete("ci-bot", rc, approver_groups=groups))
        assert (False, False) == (decision.allowed, decision.needs_approval)
        assert "prod-needs-release-admin-and-justification" in decision.policy_ids


# --- votes (ApproveDeletionRequest) ------------------------------------------------------------


def test_shipped_release_admins_may_approve(shipped: CedarPolicyEngine) -> None:
    """dave (a release admin, either identity form) may vote; ci and an auditor may not. The
    decision is named by the request id."""
    request = record("alice")
    assert VersionDecision("3f2a9c", True, ("release-admins-may-approve",)) == vote(
        shipped, "dave", request
    )
    assert vote(shipped, "spiffe://pkggov.test/ops/dave", request).allowed
    assert VersionDecision("3f2a9c", False, ()) == vote(shipped, "ci-bot", request)
    assert not vote(shipped, "carol", request).allowed
    assert not vote(shipped, "nobody", request).allowed
    pinned = shipped.current()
    dave = Principal("dave", AuthMethod.DEV, PEER)
    assert pinned.authorize_approval(dave, request, NOW, "ok").allowed


def test_the_request_entity_is_built_from_the_plan(shipped: CedarPolicyEngine) -> None:
    """Resource id = request id; attributes from the plan; the requester an entity in its
    groups; the context has the reason."""
    items = (
        PlannedItem("1.0.0", "rev-1", VersionStatus.PUBLISHED, False),
        PlannedItem("2.0.0", "rev-2", VersionStatus.PUBLISHED, True),
    )
    facts = RequestFacts.of(record("ci-bot", *items, purge_now=False))
    assert RequestFacts("3f2a9c", "ci-bot", PACKAGE, 2, False, True) == facts
    query, entities_json = cedar_input.approval_input(
        Principal("dave", AuthMethod.DEV, PEER),
        ("release-admins",),
        facts,
        NOW,
        "checked",
        members=shipped._snapshot.members,
    )
    assert {"type": "Pkggov::DeletionRequest", "id": "3f2a9c"} == query["resource"]
    assert {"type": "Pkggov::Action", "id": "ApproveDeletionRequest"} == query["action"]
    assert {
        "reason": "checked",
        "now": int(NOW.timestamp()),
        "peer": PEER,
        "auth_method": "dev",
    } == json.loads(query["context"])
    voter, requester, resource = json.loads(entities_json)
    assert "dave" == voter["uid"]["id"]
    assert ("ci-bot", "", [{"type": "Pkggov::Group", "id": "ci"}]) == (
        requester["uid"]["id"],
        requester["attrs"]["auth_method"],
        requester["parents"],
    )
    assert {
        "requester": {"__entity": {"type": "Pkggov::Principal", "id": "ci-bot"}},
        "domain": "demo",
        "repository": "prod-release",
        "format": "npm",
        "namespace": "acme",
        "package": "widgets",
        "version_count": 2,
        "purge_now": False,
        "includes_latest": True,
    } == resource["attrs"]
    own = cedar_input.approval_input(
        Principal("ci-bot", AuthMethod.DEV, PEER), ("ci",), facts, NOW, "mine"
    )
    assert 2 == len(json.loads(own[1]))  # the voter is the requester: one principal entity


def test_includes_latest_follows_the_plans_latest(shipped: CedarPolicyEngine) -> None:
    """A plan deleting the version that was latest when decided includes the latest."""
    item = PlannedItem("2.0.0", "rev-2", VersionStatus.PUBLISHED, False)
    assert RequestFacts.of(record("alice", item, latest="2.0.0")).includes_latest
    assert not RequestFacts.of(record("alice", item, latest="3.0.0")).includes_latest


def test_a_vote_policy_sees_every_attribute(tmp_path: Path) -> None:
    """Policies on votes may read the request, its requester's groups and the reason."""
    strict = (
        f'@id("ci-requests-any-admin")\npermit (principal in Pkggov::Group::"release-admins", '
        f"{APPROVE}, resource)\n"
        'when { resource.requester in Pkggov::Group::"ci" && !resource.includes_latest && '
        'resource.version_count <= 2 && resource.repository like "prod-*" && '
        'resource.format == "npm" && resource.namespace == "acme" && context.reason != "" };\n'
        '@id("not-your-own")\n'
        f"forbid (principal, {APPROVE}, resource) when {{ resource.requester == principal }};\n"
    )
    engine = with_policies(tmp_path, votes=strict)
    assert vote(engine, "dave", record("ci-bot")).allowed
    assert not vote(engine, "dave", record("ci-bot"), reason="").allowed
    assert not vote(engine, "dave", record("alice")).allowed  # not ci's request
    decision = vote(engine, "alice", record("alice"))
    assert VersionDecision("3f2a9c", False, ("not-your-own",)) == decision


def test_a_vote_policy_error_is_a_deny(tmp_path: Path) -> None:
    erring = (
        f'@id("erring")\npermit (principal, {APPROVE}, resource)\n'
        "when { resource.version_count + 9223372036854775807 > 0 };\n"
    )
    engine = with_policies(tmp_path, votes=erring)
    decision = vote(engine, "dave", record("alice"))
    assert (False, ("erring",)) == (decision.allowed, decision.policy_ids)
    assert decision.errors


def test_a_vote_with_groups_replaced(shipped: CedarPolicyEngine) -> None:
    """authorize_approval(groups=...) replaces the voter's groups (policy tests use it)."""
    request = record("alice")
    principal = Principal("new-admin", AuthMethod.DEV, PEER)
    admin = ["release-admins"]
    assert shipped.authorize_approval(principal, request, NOW, "ok", groups=admin).allowed
    assert not shipped.authorize_approval(
        Principal("dave", AuthMethod.DEV, PEER), request, NOW, "ok", groups=[]
    ).allowed


# --- persons --------------------------------------------------------------------------------


def test_persons_default_to_the_principal_id(tmp_path: Path) -> None:
    files = copy_shipped(tmp_path)
    files.entities.write_text(
        "groups: {admins: {}}\n"
        "principals:\n"
        "  spiffe://x/ops/erin: {groups: [admins], person: erin}\n"
        "  erin: {groups: [admins]}\n"
        "  cn:frank: {person: Frank Jones}\n"
    )
    for path in files.policies.iterdir():
        path.unlink()
    (files.policies / "allow.cedar").write_text(PERMIT_ALL)
    engine = CedarPolicyEngine(files)
    assert ["erin", "erin", "Frank Jones", "frank", "zed"] == [
        engine.person_of(p) for p in ("spiffe://x/ops/erin", "erin", "cn:frank", "frank", "zed")
    ]
    assert "erin" == engine.current().person_of("spiffe://x/ops/erin")


@pytest.mark.parametrize(
    ("principals", "line", "message"),
    [
        ("  a: {person: ''}\n", 3, "principal 'a': person must be a non-empty string"),
        ("  a: {person: [x]}\n", 3, "principal 'a': person must be a non-empty string"),
        (
            "  spiffe://x/a: {person: a}\n  a: {person: Alice}\n",
            3,
            "principal 'spiffe://x/a': person 'a' is also a principal whose person is 'Alice'",
        ),
        ("  a: {persn: a}\n", 3, "unknown key 'persn' (expected: description, groups, person)"),
    ],
)
def test_bad_persons_are_refused_with_their_line(
    tmp_path: Path, principals: str, line: int, message: str
) -> None:
    files = copy_shipped(tmp_path)
    files.entities.write_text("groups: {}\nprincipals:\n" + principals)
    error = load_error(files)
    assert (files.entities, line) == (error.path, error.line)
    assert message in error.message


def test_fake_policy_persons() -> None:
    policy = FakePolicy(persons={"spiffe://x/alice": "alice"})
    assert ("alice", "alice", "bob") == (
        policy.current().person_of("spiffe://x/alice"),
        policy.person_of("alice"),
        policy.person_of("bob"),
    )
