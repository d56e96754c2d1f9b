"""Offline policy tests, like ``opa test``: sample requests with the decision they expect.

A test file (YAML or JSON) holds ``cases``; each names a principal, one package version and
the expected decision, and is decided through `CedarPolicyEngine.decide`, the path the
gateway uses::

    cases:
      - name: ci deletes an unlisted pre-release in dev
        principal: ci-bot
        groups: [ci]               # optional: replaces the entities file's groups
        resource: {repository: dev-shared, package: widgets, version: 1.0.0-rc.1,
                   status: Unlisted}
        context: {justification: "", dry_run: false, request_size: 1}   # optional
        expect: allow              # allow | deny
        policies: [ci-may-delete-dev-prereleases]   # optional: the deciding @ids
      - name: a release admin skips the recovery window
        principal: alice
        resource: {repository: prod-release, package: widgets, version: 1.0.0}
        context: {purge_now: true, recovery_window: true, justification: CVE-2025-0001}
        expect: allow
      - name: the archiver restores
        action: RestorePackageVersion
        principal: ci-bot
        resource: {repository: dev-shared, package: widgets, version: 1.0.0-rc.1,
                   archived_by: ci-bot}
        expect: allow
      - name: an auditor reads the audit record
        action: ReadAuditLog       # optional: DeletePackageVersion (default),
        principal: carol           # RestorePackageVersion, ReadAuditLog (no resource) or
        expect: allow              # ApproveDeletionRequest (a deletion request)
      - name: purging at once in prod needs approval
        principal: alice
        resource: {repository: prod-release, package: widgets, version: 1.0.0}
        context: {purge_now: true, recovery_window: true, justification: CVE-2025-0001}
        expect: needs_approval     # denied only by @approval policies, allowed without them
        policies: [prod-irreversible-needs-release-admin-approval]
      - name: approved by a release admin, it is allowed
        principal: alice
        resource: {repository: prod-release, package: widgets, version: 1.0.0}
        context: {purge_now: true, recovery_window: true, justification: CVE-2025-0001,
                  approvals: 1, approver_groups: [release-admins]}
        expect: allow
      - name: another release admin may approve
        action: ApproveDeletionRequest
        principal: dave
        resource: {requester: alice, repository: prod-release, package: widgets,
                   version_count: 1, purge_now: true}
        context: {reason: checked the CVE}
        expect: allow
      - name: a GitHub Actions workflow on main, by its token's claims
        principal:
          id: "github:repo:acme/widgets:ref:refs/heads/main"
          issuer: github                # a workload token: auth_method defaults to token
          claims: {repository: acme/widgets, ref: refs/heads/main}
          claim_groups: [ci]            # optional: the groups its claims put it in
        resource: {repository: dev-shared, package: widgets, version: 1.0.0-rc.1,
                   status: Unlisted}
        expect: allow

``principal`` is an id, or a mapping for a workload token: ``id`` (required), ``issuer``
(the configured issuer's name), ``claims`` (the token's attributes: a mapping of the names the
schema declares in ``claims``, see `CLAIM_ATTRIBUTES`, to strings; only those given are
sent) and ``claim_groups`` (the groups its claims put it in, which the entities file must
define; added to its groups, ``groups`` or the entities file's). With any of these three,
auth_method defaults to (and must be) ``token``. Claim values are strings (quote numeric ids:
``repository_id: "123456"``).

``expect`` is ``allow``, ``deny`` or ``needs_approval`` (denied only by approval policies,
forbids annotated ``@approval``, and allowed without them: a delete that needs approval).

Resource defaults: domain ``example``, domain_owner and namespace empty, format ``npm``,
status ``Published`` (``Archived`` for a restore), is_latest false, version_count 2,
remaining_after_request 1, no published_at, no archived_by (a principal id; restores only:
that principal is in its groups from the entities file). Context defaults: empty
justification, not a dry run, request_size 1, now 2025-01-01T00:00:00Z, peer
``ipv4:127.0.0.1:50000``, auth_method ``mtls``, and for a delete purge_now and
recovery_window false, approvals 0 and approver_groups empty (groups the entities file
defines). Times are epoch seconds or ISO 8601.

An ApproveDeletionRequest case's resource is a deletion request: ``requester`` (a principal
id, in its groups from the entities file), ``repository`` and ``package`` (required),
``id`` (default ``request-1``), domain ``example``, format ``npm``, namespace empty,
version_count 1, purge_now and includes_latest false; its context: ``reason`` (default
empty), now, peer and auth_method.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pkggov_gateway.adapters.cedar import CedarPolicyEngine
from pkggov_gateway.adapters.cedar_entities import Document, read_document
from pkggov_gateway.adapters.cedar_input import (
    APPROVAL_CONTEXT_ATTRIBUTES,
    APPROVE_ACTION,
    CLAIM_ATTRIBUTES,
    CONTEXT_OF,
    DERIVED_RESOURCE_ATTRIBUTES,
    PLAN_CLEANUP_ACTION,
    READ_AUDIT_ACTION,
    REQUEST_ATTRIBUTES,
    RESOURCE_ATTRIBUTES,
    RESTORE_RESOURCE_ATTRIBUTES,
    RequestFacts,
)
from pkggov_gateway.adapters.cedar_loading import PolicyFiles, PolicyLoadError
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyAction, PolicyContext, PolicyRequest, VersionFacts

__all__ = ["CaseResult", "PolicyCase", "load_policy_cases", "run_policy_tests"]

DEFAULT_NOW = datetime(2025, 1, 1, tzinfo=UTC)
_DECISIONS = ("allow", "deny", "needs_approval")
_CASE_KEYS = {
    "name",
    "action",
    "principal",
    "groups",
    "resource",
    "context",
    "expect",
    "policies",
}
_PRINCIPAL_KEYS = {"id", "issuer", "claims", "claim_groups"}
DELETE_ACTION = PolicyAction.DELETE.value
RESTORE_ACTION = PolicyAction.RESTORE.value
_ACTIONS = {
    DELETE_ACTION: DELETE_ACTION,
    RESTORE_ACTION: RESTORE_ACTION,
    READ_AUDIT_ACTION: READ_AUDIT_ACTION,
    PLAN_CLEANUP_ACTION: PLAN_CLEANUP_ACTION,
    APPROVE_ACTION: APPROVE_ACTION,
}
_RESOURCE_KEYS = {
    DELETE_ACTION: RESOURCE_ATTRIBUTES - DERIVED_RESOURCE_ATTRIBUTES - RESTORE_RESOURCE_ATTRIBUTES,
    RESTORE_ACTION: RESOURCE_ATTRIBUTES - DERIVED_RESOURCE_ATTRIBUTES,
    APPROVE_ACTION: REQUEST_ATTRIBUTES | {"id"},
    PLAN_CLEANUP_ACTION: {"domain", "repository"},
}
_CONTEXT_KEYS = {
    DELETE_ACTION: CONTEXT_OF[PolicyAction.DELETE],
    RESTORE_ACTION: CONTEXT_OF[PolicyAction.RESTORE],
    READ_AUDIT_ACTION: CONTEXT_OF[PolicyAction.DELETE] & CONTEXT_OF[PolicyAction.RESTORE],
    PLAN_CLEANUP_ACTION: CONTEXT_OF[PolicyAction.DELETE] & CONTEXT_OF[PolicyAction.RESTORE],
    APPROVE_ACTION: APPROVAL_CONTEXT_ATTRIBUTES,
}
_HINTS = {
    **dict.fromkeys(DERIVED_RESOURCE_ATTRIBUTES, "derived from format and version"),
    **dict.fromkeys(RESTORE_RESOURCE_ATTRIBUTES, f"{RESTORE_ACTION} only"),
    **dict.fromkeys(
        CONTEXT_OF[PolicyAction.DELETE] - CONTEXT_OF[PolicyAction.RESTORE], f"{DELETE_ACTION} only"
    ),
    **dict.fromkeys(("requester", "includes_latest", "reason"), f"{APPROVE_ACTION} only"),
}
"""Why a key is unknown where it is, when it is known elsewhere."""


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One sample request from a test file and what it expects."""

    name: str
    line: int | None
    request: PolicyRequest
    groups: tuple[str, ...] | None
    expect: str
    policies: tuple[str, ...] | None
    action: str = DELETE_ACTION
    """DeletePackageVersion or RestorePackageVersion (the request's one version, and the
    request's action), ReadAuditLog (no resource) or ApproveDeletionRequest (`approval`)."""
    approval: RequestFacts | None = None
    """For ApproveDeletionRequest: the deletion request voted on."""
    reason: str = ""
    """For ApproveDeletionRequest: the vote's reason."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: what was expected, what Cedar decided, pass or fail."""

    name: str
    expect: str
    got: str
    """``allow``, ``deny`` or ``needs_approval``."""
    policies: tuple[str, ...]
    """The @ids that decided it."""
    expected_policies: tuple[str, ...] | None
    errors: tuple[str, ...]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready mapping."""
        return {
            "name": self.name,
            "expect": self.expect,
            "got": self.got,
            "policies": list(self.policies),
            "expected_policies": (
                None if self.expected_policies is None else list(self.expected_policies)
            ),
            "errors": list(self.errors),
            "passed": self.passed,
        }


def run_policy_tests(
    engine_or_files: CedarPolicyEngine | PolicyFiles, path: Path
) -> list[CaseResult]:
    """Decide every case of the test file at `path`, in file order.

    Raises PolicyLoadError when the policy set or the test file cannot be loaded.
    """
    engine = (
        engine_or_files
        if isinstance(engine_or_files, CedarPolicyEngine)
        else CedarPolicyEngine(engine_or_files)
    )
    results = []
    for case in load_policy_cases(path, known_groups=engine.known_groups()):
        if case.action == READ_AUDIT_ACTION:
            decision = engine.authorize_read(
                case.request.principal, case.request.context.now, groups=case.groups
            )
        elif case.action == PLAN_CLEANUP_ACTION:
            decision = engine.authorize_plan(
                case.request.principal,
                case.request.package.domain,
                case.request.package.repository,
                case.request.context.now,
                groups=case.groups,
            )
        elif case.approval is not None:
            decision = engine.authorize_approval(
                case.request.principal,
                case.approval,
                case.request.context.now,
                case.reason,
                groups=case.groups,
            )
        else:
            (decision,) = engine.decide(case.request, groups=case.groups)
        got = (
            "allow" if decision.allowed else "needs_approval" if decision.needs_approval else "deny"
        )
        passed = got == case.expect and (
            case.policies is None or sorted(case.policies) == sorted(decision.policy_ids)
        )
        results.append(
            CaseResult(
                case.name,
                case.expect,
                got,
                decision.policy_ids,
                case.policies,
                decision.errors,
                passed,
            )
        )
    return results


def load_policy_cases(
    path: Path, *, known_groups: tuple[str, ...] | None = None
) -> list[PolicyCase]:
    """Read a test file; raise PolicyLoadError (with the line) for a malformed case.

    With `known_groups`, a case's ``groups`` must name only those.
    """
    doc = read_document(path)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise doc.error((), "expected a mapping with a 'cases' list")
    if set(data) - {"cases"}:
        raise doc.error((), f"unknown key(s): {', '.join(sorted(map(str, set(data) - {'cases'})))}")
    cases = []
    names: set[str] = set()
    for index, raw in enumerate(data["cases"]):
        case = _case(doc, index, raw, known_groups)
        if case.name in names:
            raise doc.error(("cases", index, "name"), f"duplicate case name {case.name!r}")
        names.add(case.name)
        cases.append(case)
    if not cases:
        raise doc.error(("cases",), "no cases")
    return cases


def _label(where: tuple[str | int, ...]) -> str:
    """``("cases", 0, "resource")`` -> ``cases[0].resource``."""
    label = ""
    for part in where:
        label += f"[{part}]" if isinstance(part, int) else f".{part}" if label else part
    return label


class _Reader:
    """Reads typed fields of one mapping of a case, raising errors located in the file."""

    def __init__(
        self, doc: Document, where: tuple[str | int, ...], value: Any, keys: AbstractSet[str]
    ):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise doc.error(where, f"{_label(where)} must be a mapping")
        unknown = sorted(str(key) for key in value if key not in keys)
        if unknown:
            hints = "; ".join(f"{key}: {_HINTS[key]}" for key in unknown if key in _HINTS)
            hint = f" ({hints})" if hints else ""
            raise doc.error(where, f"unknown key(s) in {_label(where)}: {', '.join(unknown)}{hint}")
        self._doc, self._where, self._value = doc, where, value

    @property
    def where(self) -> tuple[str | int, ...]:
        """Where this mapping is in the file."""
        return self._where

    def get(self, key: str) -> Any:
        """The raw value at `key` (None when absent)."""
        return self._value.get(key)

    def error(self, key: str, message: str) -> PolicyLoadError:
        """An error about `key` of this mapping, at its line."""
        where = (*self._where, key)
        return self._doc.error(where, f"{_label(where)}: {message}")

    def string(self, key: str, default: str | None = None) -> str:
        value = self._value.get(key, default)
        if value is None:
            raise self.error(key, "is required")
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        """The string at `key`, or None when absent."""
        return None if self._value.get(key) is None else self.string(key)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._value.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self._value.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"expected an integer, got {value!r}")
        return value

    def moment(self, key: str, default: datetime | None) -> datetime | None:
        value = self._value.get(key, default)
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        raise self.error(key, f"expected epoch seconds or an ISO 8601 time, got {value!r}")

    def choice(self, key: str, default: str, choices: dict[str, Any]) -> Any:
        """One of `choices` (keyed by their spelling), in any letter case."""
        value = self.string(key, default)
        for spelling, member in choices.items():
            if spelling.lower() == value.lower():
                return member
        raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")


def _case(doc: Document, index: int, raw: Any, known_groups: tuple[str, ...] | None) -> PolicyCase:
    where: tuple[str | int, ...] = ("cases", index)
    case = _Reader(doc, where, raw, _CASE_KEYS)
    name = case.string("name")
    action = case.choice("action", DELETE_ACTION, _ACTIONS)
    if action == READ_AUDIT_ACTION and case.get("resource") is not None:
        raise case.error("resource", f"{READ_AUDIT_ACTION} has no resource fields")
    expect = case.string("expect").lower()
    if expect not in _DECISIONS:
        raise case.error("expect", f"expected allow, deny or needs_approval, got {expect!r}")
    if expect == "needs_approval" and action != DELETE_ACTION:
        raise case.error("expect", f"needs_approval is a {DELETE_ACTION} outcome only")
    groups = _names(doc, (*where, "groups"), case.get("groups"), known_groups)
    policies = _names(doc, (*where, "policies"), case.get("policies"), None)
    given = case.get("resource")
    if action == PLAN_CLEANUP_ACTION:  # a repository: the rest of a version's resource unused
        given = {**(given if isinstance(given, dict) else {}), "package": "-", "version": "-"}
    resource = _Reader(
        doc,
        (*where, "resource"),
        {"repository": "-", "package": "-", "version": "-"}
        if action == READ_AUDIT_ACTION
        else given,
        _RESOURCE_KEYS.get(action, _RESOURCE_KEYS[DELETE_ACTION]) | {"package", "version"}
        if action == PLAN_CLEANUP_ACTION
        else _RESOURCE_KEYS.get(action, _RESOURCE_KEYS[DELETE_ACTION]),
    )
    context = _Reader(doc, (*where, "context"), case.get("context"), _CONTEXT_KEYS[action])
    approver_groups = _names(
        doc, (*where, "context", "approver_groups"), context.get("approver_groups"), known_groups
    )
    statuses = {status.value: status for status in VersionStatus}
    formats = {fmt.value: fmt for fmt in PackageFormat}
    peer = context.string("peer", "ipv4:127.0.0.1:50000")
    now = context.moment("now", DEFAULT_NOW) or DEFAULT_NOW
    principal = _principal(doc, case, context, peer, known_groups)
    package = PackageRef(
        domain=resource.string("domain", "example"),
        repository=resource.string("repository"),
        format=resource.choice("format", "npm", formats),
        package=resource.string("package"),
        namespace=resource.string("namespace", "") or None,
        domain_owner=resource.string("domain_owner", "") or None,  # (no such key in a request)
    )
    approval = None
    if action == APPROVE_ACTION:
        approval = RequestFacts(
            request_id=resource.string("id", "request-1"),
            requester=resource.string("requester"),
            package=package,
            version_count=resource.integer("version_count", 1),
            purge_now=resource.boolean("purge_now", False),
            includes_latest=resource.boolean("includes_latest", False),
        )
        resource = _Reader(doc, (*where, "resource"), {"version": "-"}, {"version"})
    request = PolicyRequest(
        principal=principal,
        package=package,
        versions=(
            VersionFacts(
                version=resource.string("version"),
                status=resource.choice(
                    "status", "Archived" if action == RESTORE_ACTION else "Published", statuses
                ),
                is_latest=resource.boolean("is_latest", False),
                published_at=resource.moment("published_at", None),
                archived_by=resource.optional_string("archived_by"),
            ),
        ),
        version_count=resource.integer("version_count", 2),
        remaining_after_request=resource.integer("remaining_after_request", 1),
        context=PolicyContext(
            justification=context.string("justification", ""),
            dry_run=context.boolean("dry_run", False),
            request_size=context.integer("request_size", 1),
            now=now,
            peer=peer,
            purge_now=context.boolean("purge_now", False),
            recovery_window=context.boolean("recovery_window", False),
            approvals=context.integer("approvals", 0),
            approver_groups=approver_groups or (),
        ),
        action=PolicyAction.RESTORE if action == RESTORE_ACTION else PolicyAction.DELETE,
    )
    return PolicyCase(
        name,
        doc.line_of(where),
        request,
        groups,
        expect,
        policies,
        action,
        approval,
        context.string("reason", ""),
    )


def _principal(
    doc: Document,
    case: _Reader,
    context: _Reader,
    peer: str,
    known_groups: tuple[str, ...] | None,
) -> Principal:
    """The case's principal: an id, or a mapping of a workload token's id, issuer, claims and
    claim groups (auth_method from the context; default mtls, or token for a token)."""
    methods = {method.value: method for method in AuthMethod}
    raw = case.get("principal")
    if not isinstance(raw, dict):
        return Principal(
            case.string("principal"), context.choice("auth_method", "mtls", methods), peer
        )
    where = (*case.where, "principal")
    fields = _Reader(doc, where, raw, _PRINCIPAL_KEYS)
    principal_id = fields.string("id")
    issuer = fields.optional_string("issuer")
    claims = _Reader(doc, (*where, "claims"), fields.get("claims"), CLAIM_ATTRIBUTES)
    attributes = {
        name: claims.string(name) for name in sorted(map(str, fields.get("claims") or {}))
    }
    claim_groups = _names(doc, (*where, "claim_groups"), fields.get("claim_groups"), known_groups)
    token = any(raw.get(key) is not None for key in ("issuer", "claims", "claim_groups"))
    method = context.choice("auth_method", "token" if token else "mtls", methods)
    if method is not AuthMethod.TOKEN:
        for key in ("issuer", "claims", "claim_groups"):
            if raw.get(key) is not None:
                raise fields.error(
                    key, f"is for a workload token (auth_method token), not {method.value}"
                )
    return Principal(
        principal_id,
        method,
        peer,
        issuer=issuer,
        attributes=attributes,
        claim_groups=claim_groups or (),
    )


def _names(
    doc: Document, where: tuple[str | int, ...], value: Any, known: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """An optional list of names; with `known`, each must be one of them."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise doc.error(where, f"{_label(where)} must be a list of strings")
    if known is not None:
        for index, item in enumerate(value):
            if item not in known:
                raise doc.error(
                    (*where, index),
                    f"unknown group {item!r} (groups: {', '.join(known) or 'none are defined'})",
                )
    return tuple(value)
