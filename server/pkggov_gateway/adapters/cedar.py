"""The PolicyEngine port implemented with Cedar (cedarpy): load, validate, reload, decide.

A policy set is a Cedar schema, a directory of ``*.cedar`` files (one policy per statement,
each with a unique ``@id("...")``) and an entities file putting principals in groups. It is
loaded into one immutable snapshot: the schema, policies and group entities parsed once, the
policies validated against the schema, and a probe request checked against the schema so that
what `decide` sends is known to conform. `reload` builds a new snapshot and swaps the
reference; a bad new set leaves the old one in force.

Cedar decides everything: default deny, forbid beats permit. An evaluation error is a deny
here even where Cedar would let another policy allow (Cedar skips an erroring policy).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy

from pkggov_gateway.adapters.cedar_entities import GROUP_TYPE, load_entities
from pkggov_gateway.adapters.cedar_source import (
    PolicyLoadError,
    Statement,
    locate_error,
    split_statements,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import (
    PolicyContext,
    PolicyRequest,
    VersionDecision,
    VersionFacts,
)
from pkggov_gateway.domain.versions import is_prerelease

__all__ = [
    "CONTEXT_ATTRIBUTES",
    "DERIVED_RESOURCE_ATTRIBUTES",
    "PRINCIPAL_TYPE",
    "READ_AUDIT_ACTION",
    "RESOURCE_ATTRIBUTES",
    "RESOURCE_TYPE",
    "CedarPolicyEngine",
    "PolicyFiles",
    "PolicyLoadError",
    "default_policy_files",
]

PRINCIPAL_TYPE = "Pkggov::Principal"
RESOURCE_TYPE = "Pkggov::PackageVersion"
_ACTION = {"type": "Pkggov::Action", "id": "DeletePackageVersion"}
READ_AUDIT_ACTION = "ReadAuditLog"
_READ_ACTION = {"type": "Pkggov::Action", "id": READ_AUDIT_ACTION}
_AUDIT_LOG = {"type": "Pkggov::AuditLog", "id": "audit"}
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
    }
)
DERIVED_RESOURCE_ATTRIBUTES = frozenset({"prerelease"})
"""Attributes pkggov computes (from format and version) rather than reads from CodeArtifact."""
CONTEXT_ATTRIBUTES = frozenset(
    {"justification", "dry_run", "request_size", "now", "peer", "auth_method"}
)
_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")
_NOT_WHAT_IS_SENT = "the schema does not describe what pkggov sends"
_SENT = (
    "pkggov sends Pkggov::Principal {auth_method: String} in Pkggov::Group; "
    "Pkggov::PackageVersion {domain, domain_owner, repository, format, namespace, package, "
    "version, status: String, prerelease, is_latest: Bool, version_count, "
    "remaining_after_request: Long, "
    'published_at?: Long}; action Pkggov::Action::"DeletePackageVersion" with context '
    "{justification: String, dry_run: Bool, request_size: Long, now: Long, peer: String, "
    'auth_method: String}; entity Pkggov::AuditLog; action Pkggov::Action::"ReadAuditLog" '
    "(principal Principal, resource AuditLog) with context {now: Long, peer: String, "
    "auth_method: String}"
)


@dataclass(frozen=True, slots=True)
class PolicyFiles:
    """Where a policy set is read from."""

    schema: Path
    """The Cedar schema (Cedar schema syntax)."""
    policies: Path
    """A directory of ``*.cedar`` files (read in name order) or one ``.cedar`` file."""
    entities: Path
    """The entities file (.yaml, .yml or .json): groups and the principals in them."""


def default_policy_files() -> PolicyFiles:
    """The example policy set shipped in the package (``pkggov_gateway/policies``)."""
    root = Path(__file__).resolve().parent.parent / "policies"
    return PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")


@dataclass(frozen=True, slots=True)
class _Policy:
    """One loaded policy: its @id, effect and where it was read from."""

    id: str
    forbid: bool
    path: Path
    line: int


@dataclass(frozen=True, slots=True)
class _Reads:
    """What the policies can observe of a decision's input (everything, for the probe).

    Only the attributes some policy reads are sent: cedarpy spends most of a decision parsing
    attribute values, and a decision cannot change when no policy can see the difference.
    For the same reason, versions that look the same to every policy (same values of the
    per-version attributes read) are decided by one Cedar request, unless a policy looks at
    the resource itself (``resource == ...``, ``resource in ...``, a scope on the resource).
    Their decision is the same, errors included: an evaluation error can only show values
    the policy read, as the schema rules out reading an attribute an entity lacks.
    """

    resource: frozenset[str]
    context: frozenset[str]
    resource_identity: bool
    """True when some policy uses the resource entity other than to read an attribute."""

    @staticmethod
    def of(policies: Iterable[Any]) -> _Reads:
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
            if policy.get("resource", {}).get("op") != "All":
                resource_identity = True
            walk(policy.get("conditions", []))
        context = CONTEXT_ATTRIBUTES if whole_context else CONTEXT_ATTRIBUTES & names
        return _Reads(RESOURCE_ATTRIBUTES & names, context, resource_identity)


_ALL = _Reads(RESOURCE_ATTRIBUTES, CONTEXT_ATTRIBUTES, resource_identity=True)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything one decision needs, parsed once and never changed."""

    policy_set: cedarpy.PolicySet
    base: cedarpy.Entities
    policies: tuple[_Policy, ...]
    by_cedar_id: Mapping[str, tuple[int, _Policy]]
    """Cedar's positional id (``policy0``, ...) -> (index, policy)."""
    groups: tuple[str, ...]
    members: Mapping[str, tuple[str, ...]]
    reads: _Reads


class CedarPolicyEngine:
    """Decides deletions with a Cedar policy set; reloadable without interrupting decisions.

    Raises PolicyLoadError from the constructor when the set cannot be loaded.
    """

    def __init__(self, files: PolicyFiles) -> None:
        self._files = files
        self._snapshot = _load(files)
        self._reload_lock = threading.Lock()
        self.last_reload_error: PolicyLoadError | None = None
        """The error of the last reload if it failed (cleared by a good reload)."""
        self.reloads_ok = 0
        self.reloads_failed = 0

    @property
    def files(self) -> PolicyFiles:
        """Where this engine reads its policy set from."""
        return self._files

    def reload(self) -> None:
        """Load the whole set again and put it in force; on failure keep the old one and raise.

        The error is recorded in `last_reload_error` and counted in `reloads_failed`.
        """
        with self._reload_lock:
            try:
                snapshot = _load(self._files)
            except PolicyLoadError as err:
                self.reloads_failed += 1
                self.last_reload_error = err
                raise
            self._snapshot = snapshot  # one reference swap: a decision sees old or new
            self.reloads_ok += 1
            self.last_reload_error = None

    def policy_ids(self) -> list[str]:
        """The @ids of the policies in force, in load order."""
        return [policy.id for policy in self._snapshot.policies]

    def known_groups(self) -> tuple[str, ...]:
        """The groups the entities file defines, in file order."""
        return self._snapshot.groups

    def current(self) -> PinnedPolicy:
        """The set in force now, pinned for one request (a reload cannot change it)."""
        return PinnedPolicy(self, self._snapshot)

    def groups_of(self, principal_id: str) -> tuple[str, ...]:
        """The groups the entities file puts `principal_id` in (empty when none)."""
        return self.current().groups_of(principal_id)

    def uses_published_time(self) -> bool:
        """True when some policy reads ``published_at`` (the caller must then look it up)."""
        return self.current().uses_published_time()

    def decide(
        self, request: PolicyRequest, *, groups: Sequence[str] | None = None
    ) -> list[VersionDecision]:
        """Decide every version of `request` in one Cedar batch, in the request's order.

        `groups` replaces the principal's groups from the entities file (policy tests use
        it). Allowed decisions carry the permit policies that allowed; denied ones the forbid
        policies that denied (none: no policy permits), plus any policy that failed to
        evaluate, whose error is in `errors`.
        """
        return _decide(self._snapshot, request, groups)

    def authorize_read(
        self, principal: Principal, now: datetime, *, groups: Sequence[str] | None = None
    ) -> VersionDecision:
        """Decide whether `principal` may read the audit record (action ReadAuditLog)."""
        return _authorize_read(self._snapshot, principal, now, groups)


class PinnedPolicy:
    """One snapshot of a CedarPolicyEngine's policy set, used for a whole request."""

    def __init__(self, engine: CedarPolicyEngine, snapshot: _Snapshot) -> None:
        self._engine = engine
        self._snapshot = snapshot

    def groups_of(self, principal_id: str) -> tuple[str, ...]:
        """The groups this set's entities put `principal_id` in."""
        return self._snapshot.members.get(principal_id, ())

    def uses_published_time(self) -> bool:
        """True when a policy of this set reads ``published_at``."""
        return "published_at" in self._snapshot.reads.resource

    def decide(self, request: PolicyRequest) -> list[VersionDecision]:
        """Decide with this set (see CedarPolicyEngine.decide)."""
        return _decide(self._snapshot, request, None)

    def authorize_read(self, principal: Principal, now: datetime) -> VersionDecision:
        """Decide a read of the audit record with this set."""
        return _authorize_read(self._snapshot, principal, now, None)


def _authorize_read(
    snapshot: _Snapshot, principal: Principal, now: datetime, groups: Sequence[str] | None
) -> VersionDecision:
    """Decide ReadAuditLog on the audit record for `principal`; an error is a deny."""
    if groups is None:
        groups = snapshot.members.get(principal.id, ())
    request, entities_json = _read_input(principal, groups, now)
    try:
        entities = snapshot.base.with_added_json_str(entities_json)
        (result,) = cedarpy.is_authorized_batch([request], snapshot.policy_set, entities)
    except ValueError as err:
        return VersionDecision("audit", False, (), (f"policy evaluation failed: {err}",))
    return _decision(snapshot, "audit", result)


def _principal_entity(principal: Principal, groups: Iterable[str]) -> dict[str, Any]:
    """The principal as a Cedar entity, in its groups."""
    return {
        "uid": {"type": PRINCIPAL_TYPE, "id": principal.id},
        "attrs": {"auth_method": principal.method.value},
        "parents": [{"type": GROUP_TYPE, "id": group} for group in groups],
    }


def _read_input(
    principal: Principal, groups: Iterable[str], now: datetime
) -> tuple[dict[str, Any], str]:
    principal_entity = _principal_entity(principal, groups)
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


def _decide(
    snapshot: _Snapshot, request: PolicyRequest, groups: Sequence[str] | None
) -> list[VersionDecision]:
    """Decide every version of `request` with `snapshot` in one Cedar batch."""
    versions = request.versions
    if not versions:
        return []
    if groups is None:
        groups = snapshot.members.get(request.principal.id, ())
    cedar_input = _cedar_input(request, groups, snapshot.reads)
    try:
        entities = snapshot.base.with_added_json_str(cedar_input.entities)
        results = cedarpy.is_authorized_batch(cedar_input.requests, snapshot.policy_set, entities)
    except ValueError as err:
        failure = (f"policy evaluation failed: {err}",)
        return [VersionDecision(facts.version, False, (), failure) for facts in versions]
    # One decision per Cedar request, named by the version that made it; the others alike
    # get a copy under their own name.
    decided = [
        _decision(snapshot, str(query["resource"]["id"]), result)
        for query, result in zip(cedar_input.requests, results, strict=True)
    ]
    return [
        decision
        if (decision := decided[slot]).version == facts.version
        else VersionDecision(facts.version, decision.allowed, decision.policy_ids, decision.errors)
        for facts, slot in zip(versions, cedar_input.slots, strict=True)
    ]


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class _CedarInput:
    """One Cedar batch for a PolicyRequest."""

    requests: list[dict[str, Any]]
    """The Cedar requests, one per distinct version (or kind of version: see _Reads)."""
    entities: str
    """The entities to add to the base set as JSON: the principal and the resources."""
    slots: list[int]
    """For each version of the PolicyRequest, in order, the index of its Cedar request."""


def _cedar_input(
    request: PolicyRequest, groups: Iterable[str], reads: _Reads, *, shared: bool = True
) -> _CedarInput:
    """The Cedar batch deciding `request`, sending only the attributes in `reads`.

    With `shared` (and when no policy looks at the resource itself), versions whose read
    per-version attributes are equal share one Cedar request; the first of them names it.
    All JSON is made by one `json.dumps` each.
    """
    principal = request.principal
    package = request.package
    context = request.context
    method = principal.method.value
    principal_entity = _principal_entity(principal, groups)
    principal_uid = principal_entity["uid"]
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
            )
            if name in reads.context
        }
    )
    by_identity = not shared or reads.resource_identity or send_version
    requests: list[dict[str, Any]] = []
    slots: list[int] = []
    seen: dict[object, int] = {}
    for facts in request.versions:
        version = facts.version
        attrs: dict[str, Any] = {}
        if send_version:
            attrs["version"] = version
        if send_prerelease:
            attrs["prerelease"] = is_prerelease(package.format, version)
        if send_status:
            attrs["status"] = facts.status.value
        if send_latest:
            attrs["is_latest"] = facts.is_latest
        if send_published and facts.published_at is not None:
            attrs["published_at"] = _epoch(facts.published_at)
        key: object = version if by_identity else tuple(attrs.items())
        slot = seen.get(key)
        if slot is None:  # a new version (or kind of version): one more Cedar request
            slot = seen[key] = len(requests)
            resource = {"type": RESOURCE_TYPE, "id": version}
            requests.append(
                {
                    "principal": principal_uid,
                    "action": _ACTION,
                    "resource": resource,
                    "context": context_json,
                }
            )
            entities.append({"uid": resource, "attrs": common | attrs, "parents": []})
        slots.append(slot)
    return _CedarInput(requests, json.dumps(entities), slots)


def _decision(snapshot: _Snapshot, version: str, result: cedarpy.AuthzResult) -> VersionDecision:
    diagnostics = result.diagnostics
    errors = diagnostics.errors
    allowed = result.allowed and not errors
    deciding: list[tuple[int, _Policy]] = []
    for cedar_id in diagnostics.reasons:
        found = snapshot.by_cedar_id.get(cedar_id)
        # Allowed: the permits that allowed. Denied: the forbids (none: nothing permits).
        if found is not None and found[1].forbid is not allowed:
            deciding.append(found)
    if not errors:
        return VersionDecision(version, allowed, _ids(deciding))
    messages = []
    for error in errors:
        message = error
        for cedar_id in _POLICY_IN_ERROR.findall(error):
            found = snapshot.by_cedar_id.get(cedar_id)
            if found is not None:  # the failing policy decided it: name it by its @id
                deciding.append(found)
                message = message.replace(f"`{cedar_id}`", f"`{found[1].id}`")
        messages.append(message)
    return VersionDecision(version, False, _ids(deciding), tuple(messages))


def _ids(deciding: list[tuple[int, _Policy]]) -> tuple[str, ...]:
    if len(deciding) <= 1:
        return tuple(policy.id for _, policy in deciding)
    return tuple(dict.fromkeys(policy.id for _, policy in sorted(deciding, key=lambda p: p[0])))


# Loading


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PolicyLoadError(path, None, "no such file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyLoadError(path, None, f"cannot read: {err}") from err


def _policy_sources(path: Path) -> list[Path]:
    if path.is_dir():
        sources = sorted(p for p in path.iterdir() if p.suffix == ".cedar" and p.is_file())
        if not sources:
            raise PolicyLoadError(path, None, "no .cedar files in this directory")
        return sources
    if not path.exists():
        raise PolicyLoadError(path, None, "no such file or directory")
    return [path]


def _load(files: PolicyFiles) -> _Snapshot:
    """Read, parse and validate a whole policy set; raise PolicyLoadError on the first fault."""
    schema_text = _read(files.schema)
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as err:
        message = str(err)
        line = locate_error(schema_text, message, cedarpy.Schema.from_str)
        raise PolicyLoadError(files.schema, line, message) from err
    statements: list[tuple[Path, Statement]] = []
    policies: list[_Policy] = []
    bodies: list[Any] = []
    first_use: dict[str, _Policy] = {}
    for path in _policy_sources(files.policies):
        for statement in split_statements(_read(path)):
            policy, body = _parse_statement(path, statement)
            earlier = first_use.get(policy.id)
            if earlier is not None:
                raise PolicyLoadError(
                    path,
                    statement.line,
                    f'duplicate @id("{policy.id}"): first used at {earlier.path}:{earlier.line}',
                )
            first_use[policy.id] = policy
            statements.append((path, statement))
            policies.append(policy)
            bodies.append(body)
    if not policies:
        raise PolicyLoadError(files.policies, None, "no policies")
    text = "\n".join(statement.text for _, statement in statements)
    _validate(text, schema, statements, policies)
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
    except ValueError as err:  # each statement parsed alone; together they must too
        raise PolicyLoadError(files.policies, None, str(err)) from err
    if len(policy_set) != len(policies):
        raise PolicyLoadError(files.policies, None, "policy count changed when parsed together")
    entities_file = load_entities(files.entities)
    try:
        base = cedarpy.Entities.from_json_str(entities_file.cedar_json(), schema)
    except ValueError as err:
        raise PolicyLoadError(
            files.entities, None, f"the groups do not conform to the schema: {err}"
        ) from err
    snapshot = _Snapshot(
        policy_set=policy_set,
        base=base,
        policies=tuple(policies),
        by_cedar_id={f"policy{index}": (index, p) for index, p in enumerate(policies)},
        groups=entities_file.groups,
        members=entities_file.members,
        reads=_Reads.of(bodies),
    )
    _probe(files.schema, schema, snapshot)
    return snapshot


def _parse_statement(path: Path, statement: Statement) -> tuple[_Policy, Any]:
    """Parse one statement alone; return its policy and its EST (Cedar JSON) form."""
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(statement.text))
    except ValueError as err:
        message = str(err)
        line = locate_error(
            statement.text, message, cedarpy.PolicySet.from_str, first_line=statement.first_line
        )
        if not statement.terminated and message == "unexpected end of input":
            message += " (is the closing ';' missing?)"
        raise PolicyLoadError(path, line, message) from err
    if not statement.terminated:
        raise PolicyLoadError(path, statement.line, "the policy does not end with ';'")
    if parsed.get("templates"):
        raise PolicyLoadError(
            path,
            statement.line,
            "policy templates (?principal, ?resource) are not supported: write a static policy",
        )
    static = list(parsed.get("staticPolicies", {}).values())
    if len(static) != 1:
        raise PolicyLoadError(path, statement.line, "expected one policy in this statement")
    (body,) = static
    policy_id = body.get("annotations", {}).get("id")
    if not policy_id:
        raise PolicyLoadError(
            path, statement.line, 'every policy needs a non-empty @id("...") annotation'
        )
    policy = _Policy(policy_id, body.get("effect") == "forbid", path, statement.line)
    return policy, body


def _validate(
    text: str,
    schema: cedarpy.Schema,
    statements: list[tuple[Path, Statement]],
    policies: list[_Policy],
) -> None:
    """Validate the policies against the schema; raise for the first failing policy."""
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return
    by_index: dict[int, list[str]] = {}
    for error in result.errors:
        number = error.policy_id.removeprefix("policy")
        index = int(number) if number.isdigit() and error.policy_id != number else -1
        by_index.setdefault(index, []).append(error.error)
    index = min(by_index)
    if index < 0:  # not attributable to one policy (not expected: each parsed alone)
        raise PolicyLoadError(statements[0][0], None, "; ".join(by_index[index]))
    path, statement = statements[index]
    policy = policies[index]
    first, *others = by_index[index]
    message = first.replace(f"`policy{index}`", f"`{policy.id}`")
    line = locate_error(
        statement.text, message, first_line=statement.first_line, skip_names=frozenset({policy.id})
    )
    if others:
        message += f" (and {len(others)} more)"
    raise PolicyLoadError(path, line, f"does not conform to the schema: {message}")


def _probe(schema_path: Path, schema: cedarpy.Schema, snapshot: _Snapshot) -> None:
    """Check with the schema what `decide` sends (it then evaluates without the schema)."""
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    request = PolicyRequest(
        principal=Principal("probe", AuthMethod.MTLS, "ipv4:127.0.0.1:1"),
        package=PackageRef("domain", "repository", PackageFormat.NPM, "package", "scope", "1"),
        versions=(
            VersionFacts("1.0.0", VersionStatus.PUBLISHED, True, moment),
            VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False, None),
        ),
        version_count=2,
        remaining_after_request=0,
        context=PolicyContext("probe", True, 2, moment, "ipv4:127.0.0.1:1"),
    )
    probe = _cedar_input(request, snapshot.groups, _ALL)
    try:
        entities = snapshot.base.with_added_json_str(probe.entities, schema)
        results = cedarpy.is_authorized_batch(probe.requests, snapshot.policy_set, entities, schema)
    except ValueError as err:
        raise PolicyLoadError(schema_path, None, f"{_NOT_WHAT_IS_SENT}: {err} ({_SENT})") from err
    read_request, read_entities = _read_input(request.principal, snapshot.groups, moment)
    try:
        entities = snapshot.base.with_added_json_str(read_entities, schema)
        results += cedarpy.is_authorized_batch(
            [read_request], snapshot.policy_set, entities, schema
        )
    except ValueError as err:
        raise PolicyLoadError(schema_path, None, f"{_NOT_WHAT_IS_SENT}: {err} ({_SENT})") from err
    for result in results:
        for error in result.diagnostics.errors:
            if "while evaluating policy" not in error:
                raise PolicyLoadError(schema_path, None, f"{_NOT_WHAT_IS_SENT}: {error} ({_SENT})")
