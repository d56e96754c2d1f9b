"""What pkggov sends Cedar: the entity types and attributes, and the requests built from them.

A deletion (action DeletePackageVersion) or a restore (RestorePackageVersion) is one Cedar
batch: one request per version (or per kind of version, see `Reads`), the principal in its
groups (the caller's: the entities file's and, for a token, its claim groups) and one
resource entity per request; a restore's resource also names the principal
that archived it (``archived_by``), which is then in the batch too, in its groups. A read of
the audit record is one request on the ``Pkggov::AuditLog`` entity. A vote on a deletion
request (ApproveDeletionRequest) is one request on a ``Pkggov::DeletionRequest`` entity built
from the request's plan, whose requester is in the batch too, in its groups. Only the
attributes some policy reads are sent in per-version decisions (reads and votes send all);
the loader checks with the schema, once, that everything could be (see `cedar_loading`).

The caller's principal entity has ``auth_method`` and, for a workload token (auth_method
"token"), ``issuer`` (the configured issuer's name) and ``claims``: a record of the token's
attributes (`Principal.attributes`) whose names are in `CLAIM_ATTRIBUTES`, all Strings, each
present only when the token has it (an empty record when it has none). A name the schema does
not declare is never sent: no policy could read it. A principal that is not the caller
(``archived_by``, a request's ``requester``) has neither, as no token of it is at hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pkggov_gateway.adapters.cedar_entities import GROUP_TYPE
from pkggov_gateway.domain.approvals import DeletionRequestRecord
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.policy import PolicyAction, PolicyRequest
from pkggov_gateway.domain.versions import is_prerelease

__all__ = [
    "ALL_READS",
    "APPROVAL_CONTEXT_ATTRIBUTES",
    "APPROVE_ACTION",
    "CLAIM_ATTRIBUTES",
    "CONTEXT_ATTRIBUTES",
    "CONTEXT_OF",
    "DERIVED_RESOURCE_ATTRIBUTES",
    "PLAN_CLEANUP_ACTION",
    "PRINCIPAL_ATTRIBUTES",
    "PRINCIPAL_TYPE",
    "READ_AUDIT_ACTION",
    "REQUEST_ATTRIBUTES",
    "REQUEST_TYPE",
    "RESOURCE_ATTRIBUTES",
    "RESOURCE_TYPE",
    "RESTORE_RESOURCE_ATTRIBUTES",
    "SENT",
    "CedarInput",
    "Reads",
    "RequestFacts",
    "approval_input",
    "delete_input",
    "plan_input",
    "read_input",
    "token_claims",
    "version_input",
]

PRINCIPAL_TYPE = "Pkggov::Principal"
RESOURCE_TYPE = "Pkggov::PackageVersion"
_ACTIONS = {action: {"type": "Pkggov::Action", "id": action.value} for action in PolicyAction}
READ_AUDIT_ACTION = "ReadAuditLog"
_READ_ACTION = {"type": "Pkggov::Action", "id": READ_AUDIT_ACTION}
PLAN_CLEANUP_ACTION = "PlanCleanup"
_PLAN_ACTION = {"type": "Pkggov::Action", "id": PLAN_CLEANUP_ACTION}
_AUDIT_LOG = {"type": "Pkggov::AuditLog", "id": "audit"}
APPROVE_ACTION = "ApproveDeletionRequest"
_APPROVE_ACTION = {"type": "Pkggov::Action", "id": APPROVE_ACTION}
REQUEST_TYPE = "Pkggov::DeletionRequest"
REQUEST_ATTRIBUTES = frozenset(
    {
        "requester",
        "domain",
        "repository",
        "format",
        "namespace",
        "package",
        "version_count",
        "purge_now",
        "includes_latest",
    }
)
"""The attributes of a Pkggov::DeletionRequest (the resource of ApproveDeletionRequest)."""
APPROVAL_CONTEXT_ATTRIBUTES = frozenset({"reason", "now", "peer", "auth_method"})
"""The context of ApproveDeletionRequest."""
RESOURCE_ATTRIBUTES = frozenset(
    {
        "domain",
        "domain_owner",
        "repository",
        "format",
        "namespace",
        "package",
        "version",
        "prerelease",
        "status",
        "is_latest",
        "version_count",
        "remaining_after_request",
        "published_at",
        "archived_by",
    }
)
CLAIM_ATTRIBUTES = frozenset(
    {
        # GitHub Actions
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "ref",
        "ref_type",
        "environment",
        "workflow_ref",
        "job_workflow_ref",
        "runner_environment",
        "event_name",
        # Kubernetes service-account tokens (the kubernetes.io claim)
        "namespace",
        "service_account",
        "pod",
        # SPIFFE JWT-SVIDs
        "spiffe_id",
    }
)
"""The token attributes pkggov sends in the principal's ``claims`` record (all String): the
names an issuer's configuration may make attributes of (others would never be sent)."""
PRINCIPAL_ATTRIBUTES = frozenset({"auth_method", "issuer", "claims"})
"""The attributes of the caller's Pkggov::Principal (issuer and claims: tokens only)."""
_TOKEN_ATTRIBUTES = frozenset({"issuer", "claims"})
RESTORE_RESOURCE_ATTRIBUTES = frozenset({"archived_by"})
"""Attributes sent only in RestorePackageVersion decisions."""
DERIVED_RESOURCE_ATTRIBUTES = frozenset({"prerelease"})
"""Attributes pkggov computes (from format and version) rather than reads from CodeArtifact."""
_COMMON_CONTEXT = frozenset(
    {"justification", "dry_run", "request_size", "now", "peer", "auth_method"}
)
CONTEXT_OF: Mapping[PolicyAction, frozenset[str]] = {
    PolicyAction.DELETE: _COMMON_CONTEXT
    | {"purge_now", "recovery_window", "approvals", "approver_groups"},
    PolicyAction.RESTORE: _COMMON_CONTEXT,
}
"""The context attributes of each per-version action."""
CONTEXT_ATTRIBUTES = frozenset().union(*CONTEXT_OF.values())
"""Every context attribute of some per-version action."""
SENT = (
    "pkggov sends Pkggov::Principal {auth_method: String, issuer?: String, claims?: "
    "{repository?, repository_id?, repository_owner?, repository_owner_id?, ref?, ref_type?, "
    "environment?, workflow_ref?, job_workflow_ref?, runner_environment?, event_name?, "
    "namespace?, service_account?, pod?, spiffe_id?: String}} in Pkggov::Group; "
    "Pkggov::PackageVersion {domain, domain_owner, repository, format, namespace, package, "
    "version, status: String, prerelease, is_latest: Bool, version_count, "
    "remaining_after_request: Long, published_at?: Long, archived_by?: Principal}; "
    'action Pkggov::Action::"DeletePackageVersion" with context '
    "{justification: String, dry_run: Bool, request_size: Long, now: Long, peer: String, "
    "auth_method: String, purge_now: Bool, recovery_window: Bool, approvals: Long, "
    "approver_groups: Set<String>}; "
    'action Pkggov::Action::"RestorePackageVersion" (principal Principal, resource '
    "PackageVersion) with context {justification: String, dry_run: Bool, request_size: Long, "
    "now: Long, peer: String, auth_method: String}; entity Pkggov::AuditLog; action "
    'Pkggov::Action::"ReadAuditLog" (principal Principal, resource AuditLog) with context '
    "{now: Long, peer: String, auth_method: String}; entity Pkggov::DeletionRequest "
    "{requester: Principal, domain, repository, format, namespace, package: String, "
    "version_count: Long, purge_now, includes_latest: Bool}; action "
    'Pkggov::Action::"ApproveDeletionRequest" (principal Principal, resource DeletionRequest) '
    "with context {reason: String, now: Long, peer: String, auth_method: String}"
)
"""What pkggov sends, in words (for an error saying the schema does not describe it)."""


@dataclass(frozen=True, slots=True)
class Reads:
    """What the policies can observe of a decision's input (everything, for the probe).

    Only the attributes some policy reads are sent: cedarpy spends most of a decision parsing
    attribute values, and a decision cannot change when no policy can see the difference.
    For the same reason, versions that look the same to every policy (same values of the
    per-version attributes read; for ``archived_by``, the same principal, whose groups follow
    from its id) are decided by one Cedar request, unless a policy looks at the resource
    itself (``resource == ...``, ``resource in ...``, a scope on the resource). Their
    decision is the same, errors included: an evaluation error can only show values the
    policy read, as the schema rules out reading an attribute an entity lacks.

    `context` holds the names read of every action's context; each request gets those its
    action has (`CONTEXT_OF`). `principal` holds the token attributes read (``issuer``,
    ``claims``: the whole record when a policy reads it at all); ``auth_method`` is always
    sent. A policy whose scope names only other actions (ReadAuditLog,
    ApproveDeletionRequest) cannot see a per-version decision: what it reads does not count.
    """

    resource: frozenset[str]
    context: frozenset[str]
    resource_identity: bool
    """True when some policy uses the resource entity other than to read an attribute."""
    principal: frozenset[str] = _TOKEN_ATTRIBUTES
    """The token attributes of the caller some policy reads (of ``issuer``, ``claims``)."""

    @staticmethod
    def of(policies: Iterable[Any]) -> Reads:
        """What the EST (Cedar JSON) `policies` read; the whole context if one uses it whole."""
        names: set[str] = set()
        whole_context = False
        resource_identity = False

        def walk(node: Any) -> None:
            nonlocal whole_context, resource_identity
            if isinstance(node, dict):
                if node == {"Var": "context"}:
                    whole_context = True  # e.g. `context == {...}`: send it all
                    return
                if node == {"Var": "resource"}:
                    resource_identity = True  # e.g. `resource == ...`, `resource in ...`
                    return
                for key, value in node.items():
                    if key in {".", "has"} and isinstance(value, dict):
                        names.add(str(value.get("attr")))
                        if value.get("left") not in ({"Var": "context"}, {"Var": "resource"}):
                            walk(value.get("left"))
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        for policy in policies:
            if not _may_apply_per_version(policy):
                continue
            if policy.get("resource", {}).get("op") != "All":
                resource_identity = True
            walk(policy.get("conditions", []))
        context = CONTEXT_ATTRIBUTES if whole_context else CONTEXT_ATTRIBUTES & names
        # Names are matched wherever read (``resource.archived_by.claims`` too): sending
        # more than a policy reads is harmless, less never happens.
        return Reads(
            RESOURCE_ATTRIBUTES & names, context, resource_identity, _TOKEN_ATTRIBUTES & names
        )


_PER_VERSION_ACTIONS = frozenset(action.value for action in PolicyAction)


def _may_apply_per_version(policy: Any) -> bool:
    """False when the EST `policy`'s action scope names only actions that are not
    per-version (``action == A`` or ``action in [A, B]``); True otherwise."""
    scope = policy.get("action", {})
    if scope.get("op") not in {"==", "in"}:
        return True
    named = scope.get("entities") if "entities" in scope else [scope.get("entity")]
    if not isinstance(named, list):
        return True
    for entity in named:
        if not isinstance(entity, dict) or entity.get("type") != "Pkggov::Action":
            return True  # not an action literal (not expected after validation): keep it
        if entity.get("id") in _PER_VERSION_ACTIONS:
            return True
    return False


ALL_READS = Reads(
    RESOURCE_ATTRIBUTES, CONTEXT_ATTRIBUTES, resource_identity=True, principal=_TOKEN_ATTRIBUTES
)
"""Every attribute, each version its own request: what the schema probe sends."""


@dataclass(frozen=True, slots=True)
class CedarInput:
    """One Cedar batch for a PolicyRequest."""

    requests: list[dict[str, Any]]
    """The Cedar requests, one per distinct version (or kind of version: see Reads)."""
    entities: str
    """The entities to add to the base set as JSON: the principal and the resources."""
    slots: list[int]
    """For each version of the PolicyRequest, in order, the index of its Cedar request."""


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _principal_entity(principal_id: str, auth_method: str, groups: Iterable[str]) -> dict[str, Any]:
    """A principal as a Cedar entity, in its groups."""
    return {
        "uid": {"type": PRINCIPAL_TYPE, "id": principal_id},
        "attrs": {"auth_method": auth_method},
        "parents": [{"type": GROUP_TYPE, "id": group} for group in groups],
    }


def _caller_entity(
    principal: Principal, groups: Iterable[str], token_reads: frozenset[str] = _TOKEN_ATTRIBUTES
) -> dict[str, Any]:
    """The caller as a Cedar entity, in `groups`; a token's ``issuer`` and ``claims`` too, of
    those in `token_reads` (see the module's doc)."""
    entity = _principal_entity(principal.id, principal.method.value, groups)
    if principal.method is AuthMethod.TOKEN:
        attrs = entity["attrs"]
        if principal.issuer is not None and "issuer" in token_reads:
            attrs["issuer"] = principal.issuer
        if "claims" in token_reads:
            attrs["claims"] = token_claims(principal)
    return entity


def token_claims(principal: Principal) -> dict[str, str]:
    """The ``claims`` record pkggov sends for a token `principal`: its attributes named in
    `CLAIM_ATTRIBUTES` whose values are strings, in name order."""
    return {
        name: value
        for name, value in sorted(principal.attributes.items())
        if name in CLAIM_ATTRIBUTES and isinstance(value, str)
    }


def read_input(
    principal: Principal, groups: Iterable[str], now: datetime
) -> tuple[dict[str, Any], str]:
    """The Cedar request for `principal` reading the audit record, and its entities as JSON."""
    principal_entity = _caller_entity(principal, groups)
    principal_uid = principal_entity["uid"]
    method = principal.method.value
    entities = [principal_entity, {"uid": _AUDIT_LOG, "attrs": {}, "parents": []}]
    context = {"now": _epoch(now), "peer": principal.peer, "auth_method": method}
    request = {
        "principal": principal_uid,
        "action": _READ_ACTION,
        "resource": _AUDIT_LOG,
        "context": json.dumps(context),
    }
    return request, json.dumps(entities)


def plan_input(
    principal: Principal, groups: Iterable[str], domain: str, repository: str, now: datetime
) -> tuple[dict[str, Any], str]:
    """The Cedar request for `principal` planning a cleanup of `domain`/`repository`, and its
    entities as JSON."""
    principal_entity = _caller_entity(principal, groups)
    resource = {"type": "Pkggov::Repository", "id": f"{domain}/{repository}"}
    entities = [
        principal_entity,
        {"uid": resource, "attrs": {"domain": domain, "name": repository}, "parents": []},
    ]
    context = {"now": _epoch(now), "peer": principal.peer, "auth_method": principal.method.value}
    request = {
        "principal": principal_entity["uid"],
        "action": _PLAN_ACTION,
        "resource": resource,
        "context": json.dumps(context),
    }
    return request, json.dumps(entities)


def version_input(
    request: PolicyRequest,
    groups: Iterable[str],
    reads: Reads,
    *,
    shared: bool = True,
    members: Mapping[str, Iterable[str]] | None = None,
) -> CedarInput:
    """The Cedar batch deciding `request` for its action, sending only the attributes in
    `reads`; `groups` are all the caller's (the entities file's and its claim groups).

    With `shared` (and when no policy looks at the resource itself), versions whose read
    per-version attributes are equal share one Cedar request; the first of them names it.
    A restore's ``archived_by`` is sent as an entity reference; the principal it names, unless
    it is the caller, is added to the batch in its groups from `members` (principal id ->
    groups: the entities file), with auth_method "" as it is not the caller.
    All JSON is made by one `json.dumps` each.
    """
    principal = request.principal
    package = request.package
    context = request.context
    action = request.action
    method = principal.method.value
    principal_entity = _caller_entity(principal, groups, reads.principal)
    principal_uid = principal_entity["uid"]
    action_uid = _ACTIONS[action]
    entities: list[dict[str, Any]] = [principal_entity]
    wanted = reads.resource
    common = {
        name: value
        for name, value in (
            ("domain", package.domain),
            ("domain_owner", package.domain_owner or ""),
            ("repository", package.repository),
            ("format", package.format.value),
            ("namespace", package.namespace or ""),
            ("package", package.package),
            ("version_count", request.version_count),
            ("remaining_after_request", request.remaining_after_request),
        )
        if name in wanted
    }
    send_version = "version" in wanted
    send_prerelease = "prerelease" in wanted
    send_status = "status" in wanted
    send_latest = "is_latest" in wanted
    send_published = "published_at" in wanted
    send_archiver = "archived_by" in wanted and action is PolicyAction.RESTORE
    context_names = reads.context & CONTEXT_OF[action]
    context_json = json.dumps(
        {
            name: value
            for name, value in (
                ("justification", context.justification),
                ("dry_run", context.dry_run),
                ("request_size", context.request_size),
                ("now", _epoch(context.now)),
                ("peer", context.peer),
                ("auth_method", method),
                ("purge_now", context.purge_now),
                ("recovery_window", context.recovery_window),
                ("approvals", context.approvals),
                ("approver_groups", sorted(set(context.approver_groups))),
            )
            if name in context_names
        }
    )
    by_identity = not shared or reads.resource_identity or send_version
    in_batch = {principal.id}  # the principals the batch has entities for
    requests: list[dict[str, Any]] = []
    slots: list[int] = []
    seen: dict[object, int] = {}
    for facts in request.versions:
        version = facts.version
        # The values sent (None: not sent); versions alike in them share a Cedar request.
        prerelease = is_prerelease(package.format, version) if send_prerelease else None
        status = facts.status.value if send_status else None
        latest = facts.is_latest if send_latest else None
        when = facts.published_at if send_published else None
        published = _epoch(when) if when is not None else None
        archiver = facts.archived_by if send_archiver else None
        key: object = version if by_identity else (prerelease, status, latest, published, archiver)
        slot = seen.get(key)
        if slot is None:  # a new version (or kind of version): one more Cedar request
            slot = seen[key] = len(requests)
            resource = {"type": RESOURCE_TYPE, "id": version}
            requests.append(
                {
                    "principal": principal_uid,
                    "action": action_uid,
                    "resource": resource,
                    "context": context_json,
                }
            )
            attrs: dict[str, Any] = {}
            if send_version:
                attrs["version"] = version
            if send_prerelease:
                attrs["prerelease"] = prerelease
            if send_status:
                attrs["status"] = status
            if send_latest:
                attrs["is_latest"] = latest
            if published is not None:
                attrs["published_at"] = published
            if archiver is not None:
                attrs["archived_by"] = {"__entity": {"type": PRINCIPAL_TYPE, "id": archiver}}
                if archiver not in in_batch:  # in its groups: `... in Group` must hold
                    in_batch.add(archiver)
                    archiver_groups = (members or {}).get(archiver, ())
                    entities.append(_principal_entity(archiver, "", archiver_groups))
            entities.append({"uid": resource, "attrs": common | attrs, "parents": []})
        slots.append(slot)
    return CedarInput(requests, json.dumps(entities), slots)


delete_input = version_input
"""The name `version_input` had when it built deletions only."""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """A deletion request as Cedar sees it: the resource of ApproveDeletionRequest."""

    request_id: str
    requester: str
    package: PackageRef
    version_count: int
    """How many versions the plan deletes."""
    purge_now: bool
    includes_latest: bool
    """The plan deletes the package's latest version."""

    @staticmethod
    def of(record: DeletionRequestRecord) -> RequestFacts:
        """The facts of a stored request, from its plan."""
        plan = record.plan
        return RequestFacts(
            request_id=record.request_id,
            requester=record.requester,
            package=plan.package,
            version_count=len(plan.versions),
            purge_now=plan.purge_now,
            includes_latest=any(
                item.is_latest or item.version == plan.latest for item in plan.versions
            ),
        )


def approval_input(
    principal: Principal,
    groups: Iterable[str],
    request: RequestFacts,
    now: datetime,
    reason: str,
    *,
    members: Mapping[str, Iterable[str]] | None = None,
) -> tuple[dict[str, Any], str]:
    """The Cedar request for `principal` (in `groups`) voting on `request`, and its entities
    as JSON. Every attribute is sent. The requester, unless it is the caller, is in the batch
    in its groups from `members` (principal id -> groups), with auth_method ""."""
    method = principal.method.value
    principal_entity = _caller_entity(principal, groups)
    entities = [principal_entity]
    if request.requester != principal.id:
        requester_groups = (members or {}).get(request.requester, ())
        entities.append(_principal_entity(request.requester, "", requester_groups))
    package = request.package
    resource = {"type": REQUEST_TYPE, "id": request.request_id}
    attrs = {
        "requester": {"__entity": {"type": PRINCIPAL_TYPE, "id": request.requester}},
        "domain": package.domain,
        "repository": package.repository,
        "format": package.format.value,
        "namespace": package.namespace or "",
        "package": package.package,
        "version_count": request.version_count,
        "purge_now": request.purge_now,
        "includes_latest": request.includes_latest,
    }
    entities.append({"uid": resource, "attrs": attrs, "parents": []})
    context = {"reason": reason, "now": _epoch(now), "peer": principal.peer, "auth_method": method}
    query = {
        "principal": principal_entity["uid"],
        "action": _APPROVE_ACTION,
        "resource": resource,
        "context": json.dumps(context),
    }
    return query, json.dumps(entities)
