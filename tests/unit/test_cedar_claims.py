"""Workload tokens in policy: the principal's issuer and claims (typed by the schema, sent only
when read), claim groups as parents, `groups_for`, and the shipped GitHub Actions example."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from pkggov_gateway.adapters import cedar_input
from pkggov_gateway.adapters.cedar import (
    CLAIM_ATTRIBUTES,
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    RequestFacts,
    default_policy_files,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PEER = "ipv4:10.0.0.7:5000"
GITHUB_POLICY = "github-main-may-delete-dev-unlisted-prereleases"
RC_UNLISTED = VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False)
RC_ARCHIVED = VersionFacts("1.0.0-rc.2", VersionStatus.ARCHIVED, False)
RELEASE_UNLISTED = VersionFacts("1.0.0", VersionStatus.UNLISTED, False)
LATEST_RC = VersionFacts("2.0.0-rc.1", VersionStatus.UNLISTED, True)


def token(
    *,
    issuer: str | None = "github",
    claim_groups: tuple[str, ...] = (),
    principal_id: str = "github:repo:acme/widgets:ref:refs/heads/main",
    **claims: str,
) -> Principal:
    """A workload token's principal (default: acme/widgets on refs/heads/main)."""
    attributes = {"repository": "acme/widgets", "ref": "refs/heads/main"} | claims
    return Principal(
        principal_id,
        AuthMethod.TOKEN,
        PEER,
        issuer=issuer,
        token_id="jti-1",
        attributes={name: value for name, value in attributes.items() if value},
        claim_groups=claim_groups,
    )


def request(
    principal: Principal, *versions: VersionFacts, repository: str = "dev-shared"
) -> PolicyRequest:
    return PolicyRequest(
        principal=principal,
        package=PackageRef("demo", repository, PackageFormat.NPM, "widgets"),
        versions=versions,
        version_count=10,
        remaining_after_request=5,
        context=PolicyContext("", False, len(versions), NOW, PEER),
    )


def principal_attrs(entities_json: str, principal_id: str) -> dict[str, Any]:
    """The attrs of `principal_id`'s entity in a batch's entities JSON."""
    (entity,) = [
        e
        for e in json.loads(entities_json)
        if e["uid"] == {"type": cedar_input.PRINCIPAL_TYPE, "id": principal_id}
    ]
    return dict(entity["attrs"])


def parents(entities_json: str, principal_id: str) -> list[str]:
    (entity,) = [
        e
        for e in json.loads(entities_json)
        if e["uid"] == {"type": cedar_input.PRINCIPAL_TYPE, "id": principal_id}
    ]
    return [parent["id"] for parent in entity["parents"]]


@pytest.fixture(scope="module")
def shipped() -> CedarPolicyEngine:
    return CedarPolicyEngine(default_policy_files())


def copy_shipped(tmp_path: Path, **policies: str) -> PolicyFiles:
    """The shipped set in `tmp_path`; with `policies` (file name -> text), only those."""
    root = tmp_path / "set"
    shutil.copytree(default_policy_files().schema.parent, root)
    if policies:
        for path in (root / "policies").iterdir():
            path.unlink()
        for name, text in policies.items():
            (root / "policies" / f"{name}.cedar").write_text(text)
    return PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")


def permit_when(condition: str, policy_id: str = "p") -> str:
    return (
        f'@id("{policy_id}")\npermit (principal, action == '
        f'Pkggov::Action::"DeletePackageVersion", resource)\nwhen {{ {condition} }};\n'
    )


# What is sent


def test_token_principal_carries_issuer_and_its_present_claims_typed_by_the_schema() -> None:
    """A token's entity: auth_method "token", its issuer, and a claims record of exactly the
    attributes it has, all strings; the shipped schema accepts it as it is sent."""
    principal = token(environment="dev", repository_id="123456789")
    batch = cedar_input.version_input(request(principal, RC_UNLISTED), (), cedar_input.ALL_READS)
    attrs = principal_attrs(batch.entities, principal.id)
    assert {
        "auth_method": "token",
        "issuer": "github",
        "claims": {
            "environment": "dev",
            "ref": "refs/heads/main",
            "repository": "acme/widgets",
            "repository_id": "123456789",
        },
    } == attrs
    schema = cedarpy.Schema.from_str(default_policy_files().schema.read_text())
    cedarpy.Entities.from_json_str(batch.entities, schema)  # conforms (raises otherwise)


def test_every_claim_attribute_is_declared_by_the_shipped_schema_as_an_optional_string() -> None:
    """The schema's claims record is CLAIM_ATTRIBUTES: each alone, and all together, conform;
    a claim the schema does not declare would not."""
    schema = cedarpy.Schema.from_str(default_policy_files().schema.read_text())

    def conforms(claims: dict[str, Any]) -> bool:
        entity = {
            "uid": {"type": cedar_input.PRINCIPAL_TYPE, "id": "t"},
            "attrs": {"auth_method": "token", "issuer": "x", "claims": claims},
            "parents": [],
        }
        try:
            cedarpy.Entities.from_json_str(json.dumps([entity]), schema)
        except ValueError:
            return False
        return True

    assert conforms(dict.fromkeys(CLAIM_ATTRIBUTES, "v"))
    assert conforms({})
    assert all(conforms({name: "v"}) for name in CLAIM_ATTRIBUTES)
    assert not conforms({"actor": "v"})
    assert not conforms({"repository_id": 123456789})  # typed: a String


def test_claims_the_schema_does_not_declare_are_never_sent() -> None:
    """Only names in CLAIM_ATTRIBUTES reach Cedar: no policy could read another."""
    principal = token(actor="octocat", sub="repo:acme/widgets:ref:refs/heads/main")
    batch = cedar_input.version_input(request(principal, RC_UNLISTED), (), cedar_input.ALL_READS)
    claims = principal_attrs(batch.entities, principal.id)["claims"]
    assert {"repository", "ref"} == set(claims)


def test_a_token_without_attributes_has_an_empty_claims_record() -> None:
    principal = token(repository="", ref="")
    batch = cedar_input.version_input(request(principal, RC_UNLISTED), (), cedar_input.ALL_READS)
    assert {"auth_method": "token", "issuer": "github", "claims": {}} == principal_attrs(
        batch.entities, principal.id
    )


def test_only_a_token_has_issuer_and_claims() -> None:
    """A certificate (or any non-token) principal never carries them, even if set."""
    odd = Principal(
        "spiffe://pkggov.test/ci/builder",
        AuthMethod.MTLS,
        PEER,
        issuer="github",
        attributes={"repository": "acme/widgets", "ref": "refs/heads/main"},
    )
    batch = cedar_input.version_input(request(odd, RC_UNLISTED), (), cedar_input.ALL_READS)
    assert {"auth_method": "mtls"} == principal_attrs(batch.entities, odd.id)


def test_reads_and_votes_send_the_token_attributes_and_not_the_requesters() -> None:
    """ReadAuditLog and ApproveDeletionRequest send everything of the caller; the requester,
    who is not the caller, has neither issuer nor claims."""
    principal = token(claim_groups=("ci",))
    _, read_entities = cedar_input.read_input(principal, ("ci",), NOW)
    assert "github" == principal_attrs(read_entities, principal.id)["issuer"]
    assert ["ci"] == parents(read_entities, principal.id)
    facts = RequestFacts(
        "r-1", "alice", PackageRef("demo", "prod-x", PackageFormat.NPM, "widgets"), 1, False, False
    )
    _, vote_entities = cedar_input.approval_input(
        principal, ("ci",), facts, NOW, "ok", members={"alice": ("release-admins",)}
    )
    assert {"repository", "ref"} == set(principal_attrs(vote_entities, principal.id)["claims"])
    assert {"auth_method": ""} == principal_attrs(vote_entities, "alice")


@pytest.mark.parametrize(
    ("condition", "sent"),
    [
        ("resource.prerelease", set()),
        ('principal has issuer && principal.issuer == "github"', {"issuer"}),
        ('principal has claims.ref && principal.claims.ref == "refs/heads/main"', {"claims"}),
        (
            'principal has issuer && principal.issuer == "github" && principal has claims',
            {"issuer", "claims"},
        ),
    ],
)
def test_issuer_and_claims_are_sent_only_when_some_policy_reads_them(
    tmp_path: Path, condition: str, sent: set[str]
) -> None:
    """Like resource and context attributes: what no policy reads is not sent (it could not
    change a decision); auth_method always is."""
    engine = CedarPolicyEngine(copy_shipped(tmp_path, p=permit_when(condition)))
    snapshot = engine._snapshot
    assert sent == set(snapshot.reads.principal)
    principal = token()
    batch = cedar_input.version_input(request(principal, RC_UNLISTED), (), snapshot.reads)
    assert {"auth_method", *sent} == set(principal_attrs(batch.entities, principal.id))
    (decision,) = engine.decide(request(principal, RC_UNLISTED))
    assert decision.allowed


def test_a_policy_for_another_action_does_not_make_deletions_send_claims(tmp_path: Path) -> None:
    """A ReadAuditLog-only policy reading claims cannot see a per-version decision."""
    policy = (
        '@id("r")\npermit (principal, action == Pkggov::Action::"ReadAuditLog", resource)\n'
        'when { principal has claims.namespace && principal.claims.namespace == "audit" };\n'
    )
    engine = CedarPolicyEngine(copy_shipped(tmp_path, r=policy))
    assert frozenset() == engine._snapshot.reads.principal
    reader = token(issuer="kubernetes", repository="", ref="", namespace="audit")
    assert engine.authorize_read(reader, NOW).allowed  # reads send everything
    assert not engine.authorize_read(token(issuer="kubernetes", namespace="other"), NOW).allowed


def test_the_issuer_and_claims_decide_across_a_batch(tmp_path: Path) -> None:
    """The claim values are compared as strings, exactly (no case folding)."""
    files = copy_shipped(
        tmp_path,
        p=permit_when(
            'principal has claims.repository_id && principal.claims.repository_id == "42"'
        ),
    )
    engine = CedarPolicyEngine(files)
    assert [True, True] == [
        d.allowed
        for d in engine.decide(request(token(repository_id="42"), RC_UNLISTED, RC_ARCHIVED))
    ]
    assert [False] == [
        d.allowed for d in engine.decide(request(token(repository_id="420"), RC_UNLISTED))
    ]
    assert [False] == [d.allowed for d in engine.decide(request(token(), RC_UNLISTED))]


# The loader's check


def test_schema_without_claims_is_refused_as_not_describing_what_is_sent(tmp_path: Path) -> None:
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    start = text.index("    claims?: {")
    end = text.index("    },\n", start) + len("    },\n")
    files.schema.write_text(text[:start] + text[end:])
    with pytest.raises(PolicyLoadError) as caught:
        CedarPolicyEngine(files)
    assert files.schema == caught.value.path
    assert "does not describe what pkggov sends" in caught.value.message
    assert "claims?: {repository?" in caught.value.message  # the SENT text


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("      spiffe_id?: String,\n", ""),  # a claim missing
        ("      repository?: String,", "      repository: String,"),  # a claim required
        ("      repository_id?: String,", "      repository_id?: Long,"),  # mistyped
        ("    issuer?: String,", "    issuer: String,"),  # issuer required
    ],
)
def test_schema_must_describe_every_claim_as_an_optional_string(
    tmp_path: Path, old: str, new: str
) -> None:
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    assert old in text
    files.schema.write_text(text.replace(old, new, 1))
    with pytest.raises(PolicyLoadError, match="does not describe what pkggov sends"):
        CedarPolicyEngine(files)


def test_unguarded_claim_is_a_schema_violation(tmp_path: Path) -> None:
    """Every claim is optional: a policy must test `principal has claims.NAME` first."""
    files = copy_shipped(tmp_path, p=permit_when('principal.claims.ref == "refs/heads/main"'))
    with pytest.raises(PolicyLoadError, match="does not conform to the schema"):
        CedarPolicyEngine(files)


# Claim groups


def test_claim_groups_are_parents_with_the_entities_files_groups(
    shipped: CedarPolicyEngine,
) -> None:
    """groups_for: the entities file's groups for the id, then the claim groups it defines,
    each once; an undefined claim group is ignored."""
    listed = token(principal_id="ci-bot", claim_groups=("release-admins", "ci", "no-such"))
    assert ("ci", "release-admins") == shipped.groups_for(listed)
    assert ("ci", "release-admins") == shipped.current().groups_for(listed)
    assert ("ci",) == shipped.groups_of("ci-bot")  # by id only, as before
    assert ("auditors",) == shipped.groups_for(token(claim_groups=("auditors",)))
    assert () == shipped.groups_for(token(claim_groups=("no-such",)))
    assert () == shipped.groups_for(token())
    certificate = Principal("spiffe://pkggov.test/ci/builder", AuthMethod.MTLS, PEER)
    assert ("ci",) == shipped.groups_for(certificate)


def test_claim_groups_count_in_every_decision(shipped: CedarPolicyEngine) -> None:
    """A token its claims put in ci deletes as ci; in auditors reads the audit record; in
    release-admins votes; an undefined claim group gives nothing."""
    in_ci = token(issuer="kubernetes", claim_groups=("ci",), repository="", ref="")
    (decision,) = shipped.decide(request(in_ci, RC_ARCHIVED))
    assert (True, ("ci-may-delete-dev-prereleases",)) == (decision.allowed, decision.policy_ids)
    nowhere = token(issuer="kubernetes", claim_groups=("no-such",), repository="", ref="")
    (decision,) = shipped.decide(request(nowhere, RC_ARCHIVED))
    assert not decision.allowed
    assert not decision.errors
    assert shipped.authorize_read(token(claim_groups=("auditors",)), NOW).allowed
    assert not shipped.authorize_read(token(), NOW).allowed
    facts = RequestFacts(
        "r-1", "alice", PackageRef("demo", "prod-x", PackageFormat.NPM, "widgets"), 1, True, False
    )
    voter = token(claim_groups=("release-admins",))
    assert shipped.authorize_approval(voter, facts, NOW, "ok").allowed
    assert not shipped.authorize_approval(token(), facts, NOW, "ok").allowed


def test_claim_groups_are_added_to_groups_given_in_place_of_the_entities_files(
    shipped: CedarPolicyEngine,
) -> None:
    """decide(groups=...) replaces the entities file's groups, not the claim groups."""
    (decision,) = shipped.decide(request(token(claim_groups=("ci",)), RC_ARCHIVED), groups=())
    assert decision.allowed


def test_claim_groups_in_the_batch(shipped: CedarPolicyEngine) -> None:
    """The caller's entity has the claim groups as parents (the adapter passes them on)."""
    principal = token(principal_id="ci-bot", claim_groups=("auditors",))
    groups = shipped.groups_for(principal)
    batch = cedar_input.version_input(
        request(principal, RC_UNLISTED), groups, cedar_input.ALL_READS
    )
    assert ["ci", "auditors"] == parents(batch.entities, "ci-bot")


def test_claim_group_the_entities_file_lacks_is_a_load_error(tmp_path: Path) -> None:
    """The groups the identity configuration can put tokens in must be defined: at start, and
    at reload (which then keeps the old set)."""
    files = copy_shipped(tmp_path)
    with pytest.raises(PolicyLoadError, match="'deployers' is not defined") as caught:
        CedarPolicyEngine(files, claim_groups=("ci", "deployers"))
    assert files.entities == caught.value.path
    engine = CedarPolicyEngine(files, claim_groups=("ci",))
    text = files.entities.read_text()
    files.entities.write_text(
        text.replace("  ci:\n    description: Build and release automation.\n", "").replace(
            "groups: [ci]", "groups: []"
        )
    )
    with pytest.raises(PolicyLoadError, match="'ci' is not defined"):
        engine.reload()
    assert ("ci",) == engine.groups_for(token(claim_groups=("ci",)))
    CedarPolicyEngine(files)  # without claim groups the same set loads


# The shipped example


@pytest.mark.parametrize(
    ("principal", "version", "repository", "allowed"),
    [
        (token(), RC_UNLISTED, "dev-shared", True),
        (token(), RC_ARCHIVED, "dev-shared", False),  # Unlisted only
        (token(), RELEASE_UNLISTED, "dev-shared", False),  # pre-releases only
        (token(), RC_UNLISTED, "staging-shared", False),  # dev-* only
        (token(), RC_UNLISTED, "prod-dev", False),
        (token(ref="refs/heads/feature"), RC_UNLISTED, "dev-shared", False),
        (token(ref="refs/tags/v1.0.0"), RC_UNLISTED, "dev-shared", False),
        (token(ref="refs/pull/7/merge"), RC_UNLISTED, "dev-shared", False),
        (token(ref=""), RC_UNLISTED, "dev-shared", False),  # no ref claim
        (token(repository="mallory/widgets"), RC_UNLISTED, "dev-shared", False),
        (token(repository="Acme/Widgets"), RC_UNLISTED, "dev-shared", False),  # exact
        (token(repository=""), RC_UNLISTED, "dev-shared", False),
        (token(issuer="ghes"), RC_UNLISTED, "dev-shared", False),
        (token(issuer=None), RC_UNLISTED, "dev-shared", False),
    ],
)
def test_shipped_github_example(
    shipped: CedarPolicyEngine,
    principal: Principal,
    version: VersionFacts,
    repository: str,
    allowed: bool,
) -> None:
    """acme/widgets' workflows on refs/heads/main may delete Unlisted pre-releases in dev-*:
    nothing else, and nobody else by this policy."""
    (decision,) = shipped.decide(request(principal, version, repository=repository))
    assert decision.allowed is allowed
    assert not decision.errors
    assert (GITHUB_POLICY in decision.policy_ids) is allowed


def test_shipped_github_example_needs_a_token(shipped: CedarPolicyEngine) -> None:
    """A certificate or development name spelled like the token's id has no claims."""
    for method in (AuthMethod.MTLS, AuthMethod.DEV, AuthMethod.PROXY):
        lookalike = Principal(
            token().id, method, PEER, issuer="github", attributes=token().attributes
        )
        (decision,) = shipped.decide(request(lookalike, RC_UNLISTED))
        assert not decision.allowed


def test_shipped_github_example_yields_to_the_forbids(shipped: CedarPolicyEngine) -> None:
    (decision,) = shipped.decide(request(token(), LATEST_RC))
    assert (False, ("never-delete-latest",)) == (decision.allowed, decision.policy_ids)
