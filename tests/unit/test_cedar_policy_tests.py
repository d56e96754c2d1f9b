"""Offline policy tests: the shipped tests.yaml passes, covers every rule, and failures show."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkggov_gateway.adapters.cedar import CedarPolicyEngine, PolicyLoadError, default_policy_files
from pkggov_gateway.domain.identity import AuthMethod
from pkggov_gateway.domain.model import PackageFormat, VersionStatus
from pkggov_gateway.domain.policy import PolicyAction
from pkggov_gateway.tools.policy_test import load_policy_cases, run_policy_tests

SHIPPED_TESTS = default_policy_files().schema.parent / "tests.yaml"


def test_shipped_tests_all_pass() -> None:
    """Every case of the shipped test file passes against the shipped policies."""
    results = run_policy_tests(default_policy_files(), SHIPPED_TESTS)
    assert [] == [result.name for result in results if not result.passed]
    assert len(results) >= 12


def test_shipped_tests_cover_every_rule_both_ways() -> None:
    """Each policy decides some case, and some case of the same kind goes the other way."""
    engine = CedarPolicyEngine(default_policy_files())
    results = run_policy_tests(engine, SHIPPED_TESTS)
    for policy_id in engine.policy_ids():
        deciding = [r for r in results if policy_id in r.policies]
        assert deciding, f"no case is decided by {policy_id}"
        outcomes = {r.got for r in deciding}
        other_way = [r for r in results if policy_id not in r.policies and r.got not in outcomes]
        assert other_way, f"no case goes the other way for {policy_id}"
    assert {"allow", "deny", "needs_approval"} == {r.got for r in results}


def test_failing_case_is_reported_with_what_was_got(tmp_path: Path) -> None:
    """A wrong expectation fails; so does a right decision by the wrong policy."""
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "cases:\n"
        "  - name: wrong decision\n"
        "    principal: bob\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0-rc.1, status: Unlisted}\n"
        "    expect: allow\n"
        "  - name: wrong policy\n"
        "    principal: alice\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0, is_latest: true}\n"
        "    expect: deny\n"
        "    policies: [never-delete-only-remaining-version]\n"
        "  - name: right\n"
        "    principal: alice\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0, is_latest: true}\n"
        "    expect: deny\n"
        "    policies: [never-delete-latest]\n"
    )
    results = run_policy_tests(default_policy_files(), tests)
    assert [("allow", "deny", False), ("deny", "deny", False), ("deny", "deny", True)] == [
        (r.expect, r.got, r.passed) for r in results
    ]
    assert ("never-delete-latest",) == results[1].policies
    assert ("never-delete-only-remaining-version",) == results[1].expected_policies


def test_case_defaults_and_conversions(tmp_path: Path) -> None:
    """Unspecified fields take the documented defaults; spellings and times are converted."""
    tests = tmp_path / "tests.json"
    tests.write_text(
        '{"cases": [{"name": "n", "principal": "p", "expect": "DENY",'
        ' "resource": {"repository": "r", "package": "k", "version": "1", "status": "unlisted",'
        ' "format": "PyPI", "published_at": "2024-05-01T00:00:00+00:00"},'
        ' "context": {"now": 1700000000, "auth_method": "dev"}}]}'
    )
    (case,) = load_policy_cases(tests)
    request = case.request
    assert ("deny", None, None) == (case.expect, case.groups, case.policies)
    assert ("example", None, None) == (
        request.package.domain,
        request.package.namespace,
        request.package.domain_owner,
    )
    assert (PackageFormat.PYPI, VersionStatus.UNLISTED) == (
        request.package.format,
        request.versions[0].status,
    )
    assert (2, 1, False) == (
        request.version_count,
        request.remaining_after_request,
        request.versions[0].is_latest,
    )
    assert 1714521600 == int(request.versions[0].published_at.timestamp())  # type: ignore[union-attr]
    assert (1700000000, AuthMethod.DEV) == (
        int(request.context.now.timestamp()),
        request.principal.method,
    )


def test_restore_cases_and_the_recovery_flags(tmp_path: Path) -> None:
    """A case names its action; a restore defaults to Archived and may name archived_by; a
    delete takes purge_now and recovery_window (default false)."""
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "cases:\n"
        "  - name: restore\n"
        "    action: restorepackageversion\n"
        "    principal: ci-bot\n"
        "    resource: {repository: r, package: k, version: '1', archived_by: ci-bot}\n"
        "    expect: allow\n"
        "  - name: delete\n"
        "    principal: alice\n"
        "    resource: {repository: r, package: k, version: '1'}\n"
        "    context: {purge_now: true, recovery_window: true}\n"
        "    expect: deny\n"
        "  - name: plain delete\n"
        "    principal: alice\n"
        "    resource: {repository: r, package: k, version: '1'}\n"
        "    expect: allow\n"
    )
    restore, purge, plain = load_policy_cases(tests)
    assert ("RestorePackageVersion", PolicyAction.RESTORE) == (
        restore.action,
        restore.request.action,
    )
    assert (VersionStatus.ARCHIVED, "ci-bot") == (
        restore.request.versions[0].status,
        restore.request.versions[0].archived_by,
    )
    assert (PolicyAction.DELETE, True, True) == (
        purge.request.action,
        purge.request.context.purge_now,
        purge.request.context.recovery_window,
    )
    assert (VersionStatus.PUBLISHED, None, False, False) == (
        plain.request.versions[0].status,
        plain.request.versions[0].archived_by,
        plain.request.context.purge_now,
        plain.request.context.recovery_window,
    )
    results = run_policy_tests(default_policy_files(), tests)
    assert [("restore", True), ("delete", True), ("plain delete", True)] == [
        (r.name, r.passed) for r in results
    ]
    assert ("purge-now-needs-release-admin-and-justification",) == results[1].policies


def test_approval_cases_votes_and_needs_approval(tmp_path: Path) -> None:
    """A delete may carry the votes (approvals, approver_groups) and expect needs_approval;
    an ApproveDeletionRequest case's resource is a deletion request."""
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "cases:\n"
        "  - name: needs approval\n"
        "    principal: alice\n"
        "    resource: {repository: prod-x, package: k, version: '1'}\n"
        "    context: {justification: why}\n"
        "    expect: needs_approval\n"
        "  - name: approved\n"
        "    principal: alice\n"
        "    resource: {repository: prod-x, package: k, version: '1'}\n"
        "    context: {justification: why, approvals: 1, approver_groups: [release-admins]}\n"
        "    expect: allow\n"
        "  - name: a needs_approval expected but allowed fails\n"
        "    principal: alice\n"
        "    resource: {repository: dev-x, package: k, version: '1'}\n"
        "    expect: needs_approval\n"
        "  - name: vote\n"
        "    action: approvedeletionrequest\n"
        "    principal: dave\n"
        "    resource: {id: r-7, requester: ci-bot, repository: prod-x, format: pypi,\n"
        "               namespace: ns, package: k, version_count: 3, purge_now: true,\n"
        "               includes_latest: true}\n"
        "    context: {reason: checked, now: 1700000000}\n"
        "    expect: allow\n"
        "    policies: [release-admins-may-approve]\n"
        "  - name: ci votes\n"
        "    action: ApproveDeletionRequest\n"
        "    principal: ci-bot\n"
        "    resource: {requester: alice, repository: prod-x, package: k}\n"
        "    expect: deny\n"
        "  - name: a group given in the test may vote\n"
        "    action: ApproveDeletionRequest\n"
        "    principal: new-admin\n"
        "    groups: [release-admins]\n"
        "    resource: {requester: alice, repository: prod-x, package: k}\n"
        "    expect: allow\n"
    )
    needs, approved, _, vote, _, _ = load_policy_cases(tests)
    assert (0, ()) == (needs.request.context.approvals, needs.request.context.approver_groups)
    assert (1, ("release-admins",)) == (
        approved.request.context.approvals,
        approved.request.context.approver_groups,
    )
    assert ("ApproveDeletionRequest", "checked") == (vote.action, vote.reason)
    assert vote.approval is not None
    assert (
        "r-7",
        "ci-bot",
        PackageFormat.PYPI,
        "ns",
        3,
        True,
        True,
    ) == (
        vote.approval.request_id,
        vote.approval.requester,
        vote.approval.package.format,
        vote.approval.package.namespace,
        vote.approval.version_count,
        vote.approval.purge_now,
        vote.approval.includes_latest,
    )
    assert 1700000000 == int(vote.request.context.now.timestamp())
    results = run_policy_tests(default_policy_files(), tests)
    assert [
        ("needs_approval", True),
        ("allow", True),
        ("allow", False),
        ("allow", True),
        ("deny", True),
        ("allow", True),
    ] == [(r.got, r.passed) for r in results]
    assert ("prod-irreversible-needs-release-admin-approval",) == results[0].policies
    assert "needs_approval" == results[0].to_dict()["got"]


def test_token_principal_cases(tmp_path: Path) -> None:
    """A workload token's principal: id, issuer, claims (strings, only those given) and claim
    groups; auth_method token by default. A plain id stays a certificate (mtls)."""
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "cases:\n"
        "  - name: main\n"
        "    principal:\n"
        "      id: 'github:repo:acme/widgets:ref:refs/heads/main'\n"
        "      issuer: github\n"
        "      claims: {repository: acme/widgets, ref: refs/heads/main, repository_id: '42'}\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0-rc.1, status: Unlisted}\n"
        "    expect: allow\n"
        "    policies: [github-main-may-delete-dev-unlisted-prereleases]\n"
        "  - name: in ci by its claims\n"
        "    principal: {id: 'kubernetes:system:serviceaccount:builds:cleanup',\n"
        "                claims: {namespace: builds}, claim_groups: [ci]}\n"
        "    groups: []\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0-rc.1, status: Archived}\n"
        "    expect: allow\n"
        "    policies: [ci-may-delete-dev-prereleases]\n"
        "  - name: claim groups alone make a token\n"
        "    action: ReadAuditLog\n"
        "    principal: {id: 'spiffe:x', claim_groups: [auditors]}\n"
        "    expect: allow\n"
        "  - name: an id alone is a certificate\n"
        "    principal: {id: 'github:repo:acme/widgets:ref:refs/heads/main'}\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0-rc.1, status: Unlisted}\n"
        "    expect: deny\n"
    )
    main, ci, reader, plain = load_policy_cases(tests)
    principal = main.request.principal
    assert (AuthMethod.TOKEN, "github") == (principal.method, principal.issuer)
    assert {"repository": "acme/widgets", "ref": "refs/heads/main", "repository_id": "42"} == (
        principal.attributes
    )
    assert () == principal.claim_groups
    assert (AuthMethod.TOKEN, None, ("ci",)) == (
        ci.request.principal.method,
        ci.request.principal.issuer,
        ci.request.principal.claim_groups,
    )
    assert (AuthMethod.TOKEN, ("auditors",)) == (
        reader.request.principal.method,
        reader.request.principal.claim_groups,
    )
    assert (AuthMethod.MTLS, {}) == (
        plain.request.principal.method,
        plain.request.principal.attributes,
    )
    results = run_policy_tests(default_policy_files(), tests)
    assert [("allow", True), ("allow", True), ("allow", True), ("deny", True)] == [
        (r.got, r.passed) for r in results
    ]


@pytest.mark.parametrize(
    ("case", "line", "message"),
    [
        (
            "  - {name: a, principal: p, expect: allow}\n",
            2,
            "cases[0].resource.repository: is required",
        ),
        (
            "  - name: a\n    principal: p\n    expect: maybe\n",
            4,
            "expect: expected allow, deny or needs_approval",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1', status: Gone}\n",
            5,
            "status: expected one of Published",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n    groups: [nope]\n"
            "    resource: {repository: r, package: k, version: '1'}\n",
            5,
            "unknown group 'nope'",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n    colour: red\n",
            2,
            "unknown key(s) in cases[0]: colour",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1', prerelease: true}\n",
            5,
            "unknown key(s) in cases[0].resource: prerelease (prerelease: derived from format",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1', archived_by: p}\n",
            5,
            "unknown key(s) in cases[0].resource: archived_by (archived_by: "
            "RestorePackageVersion only)",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n    action: RestorePackageVersion\n"
            "    resource: {repository: r, package: k, version: '1'}\n"
            "    context: {purge_now: true}\n",
            7,
            "unknown key(s) in cases[0].context: purge_now (purge_now: DeletePackageVersion only)",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n    action: RestorePackageVersion\n"
            "    resource: {repository: r, package: k, version: '1', archived_by: 7}\n",
            6,
            "cases[0].resource.archived_by: expected a string",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n    action: Restore\n",
            5,
            "expected one of DeletePackageVersion, RestorePackageVersion, ReadAuditLog, "
            "PlanCleanup, ApproveDeletionRequest",
        ),
        (
            "  - name: a\n    principal: p\n    expect: needs_approval\n"
            "    action: RestorePackageVersion\n"
            "    resource: {repository: r, package: k, version: '1'}\n",
            4,
            "needs_approval is a DeletePackageVersion outcome only",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1'}\n"
            "    context: {approver_groups: [release-admin]}\n",
            6,
            "unknown group 'release-admin'",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1'}\n"
            "    context: {approvals: many}\n",
            6,
            "cases[0].context.approvals: expected an integer",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1', requester: q}\n",
            5,
            "unknown key(s) in cases[0].resource: requester (requester: "
            "ApproveDeletionRequest only)",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    action: ApproveDeletionRequest\n"
            "    resource: {repository: r, package: k}\n",
            6,
            "cases[0].resource.requester: is required",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    action: ApproveDeletionRequest\n"
            "    resource: {requester: q, repository: r, package: k, version: '1'}\n",
            6,
            "unknown key(s) in cases[0].resource: version",
        ),
        (
            "  - name: a\n    principal: p\n    expect: allow\n"
            "    action: ApproveDeletionRequest\n"
            "    resource: {requester: q, repository: r, package: k}\n"
            "    context: {justification: x}\n",
            7,
            "unknown key(s) in cases[0].context: justification",
        ),
        (
            "  - name: a\n    principal: {issuer: github}\n    expect: allow\n"
            "    resource: {repository: r, package: k, version: '1'}\n",
            3,
            "cases[0].principal.id: is required",
        ),
        (
            "  - name: a\n    principal: {id: t, issuer: github, audience: x}\n"
            "    expect: allow\n    resource: {repository: r, package: k, version: '1'}\n",
            3,
            "unknown key(s) in cases[0].principal: audience",
        ),
        (
            "  - name: a\n    principal:\n      id: t\n      claims: {actor: octocat}\n"
            "    expect: allow\n    resource: {repository: r, package: k, version: '1'}\n",
            5,
            "unknown key(s) in cases[0].principal.claims: actor",
        ),
        (
            "  - name: a\n    principal:\n      id: t\n      claims: {repository_id: 42}\n"
            "    expect: allow\n    resource: {repository: r, package: k, version: '1'}\n",
            5,
            "cases[0].principal.claims.repository_id: expected a string",
        ),
        (
            "  - name: a\n    principal:\n      id: t\n      claim_groups: [deployers]\n"
            "    expect: allow\n    resource: {repository: r, package: k, version: '1'}\n",
            5,
            "unknown group 'deployers'",
        ),
        (
            "  - name: a\n    principal:\n      id: t\n      issuer: github\n"
            "    expect: allow\n    resource: {repository: r, package: k, version: '1'}\n"
            "    context: {auth_method: mtls}\n",
            5,
            "cases[0].principal.issuer: is for a workload token (auth_method token), not mtls",
        ),
        ("  -\n", 2, "cases[0].name: is required"),
        ("  - just text\n", 2, "cases[0] must be a mapping"),
    ],
)
def test_malformed_case_is_refused_with_its_line(
    tmp_path: Path, case: str, line: int, message: str
) -> None:
    """A test file that cannot be read is a load error naming the file and line."""
    tests = tmp_path / "tests.yaml"
    tests.write_text("cases:\n" + case)
    with pytest.raises(PolicyLoadError) as caught:
        run_policy_tests(default_policy_files(), tests)
    assert (tests, line) == (caught.value.path, caught.value.line)
    assert message in caught.value.message
