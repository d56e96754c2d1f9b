"""Loading a Cedar policy set: its files read, parsed and validated into one snapshot.

A policy set is a Cedar schema, a directory of ``*.cedar`` files (one policy per statement,
each with a unique ``@id("...")``) and an entities file putting principals in groups. It is
loaded into one immutable snapshot: the schema, policies and group entities parsed once, the
policies validated against the schema, and a probe request checked against the schema so that
what the engine sends (`cedar_input`) is known to conform. The first fault found is raised as
a PolicyLoadError naming the file and, where known, the line.

A ``forbid`` annotated ``@approval`` (with any value, or none: the value is a description
for people, e.g. ``@approval("one release-admin other than the requester")``) is an
*approval policy*: what it forbids may still be done once approved (see `cedar`). The
snapshot also holds the set without the approval policies, parsed once, to tell that. A
``permit`` cannot be one (an approval cannot forbid less than nothing): a load error.

Claim groups: the identity configuration may put a token's principal in groups by its claims
(`Principal.claim_groups`). Such a group counts only when the entities file defines it; the
groups the configuration can name are given to `load_policy_set` as `claim_groups`, and a
set whose entities file lacks one of them is refused (a load error, so a reload dropping a
group that tokens are put in keeps the old set in force).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy

from pkggov_gateway.adapters.cedar_entities import load_entities
from pkggov_gateway.adapters.cedar_input import (
    ALL_READS,
    CLAIM_ATTRIBUTES,
    SENT,
    Reads,
    RequestFacts,
    approval_input,
    read_input,
    version_input,
)
from pkggov_gateway.adapters.cedar_source import (
    PolicyLoadError,
    Statement,
    locate_error,
    split_statements,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyAction, PolicyContext, PolicyRequest, VersionFacts

__all__ = [
    "LoadedPolicy",
    "PolicyFiles",
    "PolicyLoadError",
    "PolicySnapshot",
    "default_policy_files",
    "load_policy_set",
]

_NOT_WHAT_IS_SENT = "the schema does not describe what pkggov sends"
APPROVAL_ANNOTATION = "approval"
"""The annotation that makes a forbid an approval policy."""


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
class LoadedPolicy:
    """One loaded policy: its @id, effect and where it was read from."""

    id: str
    forbid: bool
    path: Path
    line: int
    approval: bool = False
    """A forbid annotated ``@approval``: what it forbids may be done once approved."""
    approval_note: str = ""
    """The ``@approval`` annotation's value ("" when it has none)."""


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """Everything one decision needs, parsed once and never changed."""

    policy_set: cedarpy.PolicySet
    base: cedarpy.Entities
    policies: tuple[LoadedPolicy, ...]
    by_cedar_id: Mapping[str, tuple[int, LoadedPolicy]]
    """Cedar's positional id (``policy0``, ...) -> (index, policy)."""
    groups: tuple[str, ...]
    members: Mapping[str, tuple[str, ...]]
    reads: Reads
    without_approvals: cedarpy.PolicySet | None = None
    """The set without its approval policies (None: it has none, or nothing else)."""
    persons: Mapping[str, str] = field(default_factory=dict)
    """Principal id -> its person, where the entities file names one other than the id."""

    approval_ids: frozenset[str] = frozenset()
    """The @ids of the approval policies."""


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


def load_policy_set(files: PolicyFiles, *, claim_groups: Iterable[str] = ()) -> PolicySnapshot:
    """Read, parse and validate a whole policy set; raise PolicyLoadError on the first fault.

    `claim_groups` are the groups the identity configuration may put a token's principal in:
    the entities file must define each of them.
    """
    schema_text = _read(files.schema)
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as err:
        message = str(err)
        line = locate_error(schema_text, message, cedarpy.Schema.from_str)
        raise PolicyLoadError(files.schema, line, message) from err
    statements: list[tuple[Path, Statement]] = []
    policies: list[LoadedPolicy] = []
    bodies: list[Any] = []
    first_use: dict[str, LoadedPolicy] = {}
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
    without_approvals = None
    others = [
        statement.text
        for (_, statement), policy in zip(statements, policies, strict=True)
        if not policy.approval
    ]
    if others and len(others) < len(policies):
        try:
            without_approvals = cedarpy.PolicySet.from_str("\n".join(others))
        except ValueError as err:  # (not expected: the whole set parsed)
            raise PolicyLoadError(files.policies, None, str(err)) from err
    entities_file = load_entities(files.entities)
    for group in claim_groups:
        if group not in entities_file.groups:
            known = ", ".join(entities_file.groups) or "none are defined"
            raise PolicyLoadError(
                files.entities,
                None,
                f"group {group!r} is not defined, but the identity configuration puts tokens in "
                f"it by their claims (groups: {known})",
            )
    try:
        base = cedarpy.Entities.from_json_str(entities_file.cedar_json(), schema)
    except ValueError as err:
        raise PolicyLoadError(
            files.entities, None, f"the groups do not conform to the schema: {err}"
        ) from err
    snapshot = PolicySnapshot(
        policy_set=policy_set,
        base=base,
        policies=tuple(policies),
        by_cedar_id={f"policy{index}": (index, p) for index, p in enumerate(policies)},
        groups=entities_file.groups,
        members=entities_file.members,
        reads=Reads.of(bodies),
        without_approvals=without_approvals,
        persons=entities_file.persons,
        approval_ids=frozenset(policy.id for policy in policies if policy.approval),
    )
    _probe(files.schema, schema, snapshot)
    return snapshot


def _parse_statement(path: Path, statement: Statement) -> tuple[LoadedPolicy, Any]:
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
    annotations = body.get("annotations", {})
    forbid = body.get("effect") == "forbid"
    approval = APPROVAL_ANNOTATION in annotations
    if approval and not forbid:
        raise PolicyLoadError(
            path,
            statement.line,
            f'policy "{policy_id}": @{APPROVAL_ANNOTATION} is only for forbid policies (a '
            "forbid that approval lifts); a permit cannot be one",
        )
    note = annotations.get(APPROVAL_ANNOTATION) if approval else None
    policy = LoadedPolicy(policy_id, forbid, path, statement.line, approval, note or "")
    return policy, body


def _validate(
    text: str,
    schema: cedarpy.Schema,
    statements: list[tuple[Path, Statement]],
    policies: list[LoadedPolicy],
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


def _probe(schema_path: Path, schema: cedarpy.Schema, snapshot: PolicySnapshot) -> None:
    """Check with the schema what `decide` sends (it then evaluates without the schema)."""
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    # A token with every claim attribute; one with none; a certificate (neither issuer nor
    # claims); and principals that are not the caller (archiver, requester): together, every
    # shape of Principal that is sent.
    token = Principal(
        "probe",
        AuthMethod.TOKEN,
        "ipv4:127.0.0.1:1",
        issuer="probe-issuer",
        attributes=dict.fromkeys(CLAIM_ATTRIBUTES, "probe"),
        claim_groups=snapshot.groups,
    )
    bare_token = Principal("probe", AuthMethod.TOKEN, "ipv4:127.0.0.1:1", issuer="probe-issuer")
    certificate = Principal("probe", AuthMethod.MTLS, "ipv4:127.0.0.1:1")
    request = PolicyRequest(
        principal=token,
        package=PackageRef("domain", "repository", PackageFormat.NPM, "package", "scope", "1"),
        versions=(
            VersionFacts("1.0.0", VersionStatus.PUBLISHED, True, moment),
            VersionFacts("1.0.0-rc.1", VersionStatus.UNLISTED, False, None),
        ),
        version_count=2,
        remaining_after_request=0,
        context=PolicyContext(
            "probe", True, 2, moment, "ipv4:127.0.0.1:1", True, True, 1, snapshot.groups
        ),
    )
    restore = PolicyRequest(
        principal=bare_token,
        package=request.package,
        versions=(  # archived by another (in every group), by the caller, not by the gateway
            VersionFacts("1.0.0", VersionStatus.ARCHIVED, False, moment, "probe-archiver"),
            VersionFacts("1.0.1", VersionStatus.ARCHIVED, False, None, "probe"),
            VersionFacts("1.0.2", VersionStatus.ARCHIVED, True, None, None),
        ),
        version_count=3,
        remaining_after_request=3,
        context=request.context,
        action=PolicyAction.RESTORE,
    )
    results = []
    members = {"probe-archiver": snapshot.groups, "probe-requester": snapshot.groups}
    for batch in (request, restore):
        probe = version_input(batch, snapshot.groups, ALL_READS, members=members)
        try:
            entities = snapshot.base.with_added_json_str(probe.entities, schema)
            results += cedarpy.is_authorized_batch(
                probe.requests, snapshot.policy_set, entities, schema
            )
        except ValueError as err:
            message = f"{_NOT_WHAT_IS_SENT}: {err} ({SENT})"
            raise PolicyLoadError(schema_path, None, message) from err
    single = [read_input(certificate, snapshot.groups, moment)]
    for requester in ("probe", "probe-requester"):  # the voter's own request, another's
        facts = RequestFacts("probe-request", requester, request.package, 2, True, True)
        single.append(
            approval_input(token, snapshot.groups, facts, moment, "probe", members=members)
        )
    for query, query_entities in single:
        try:
            entities = snapshot.base.with_added_json_str(query_entities, schema)
            results += cedarpy.is_authorized_batch([query], snapshot.policy_set, entities, schema)
        except ValueError as err:
            message = f"{_NOT_WHAT_IS_SENT}: {err} ({SENT})"
            raise PolicyLoadError(schema_path, None, message) from err
    for result in results:
        for error in result.diagnostics.errors:
            if "while evaluating policy" not in error:
                raise PolicyLoadError(schema_path, None, f"{_NOT_WHAT_IS_SENT}: {error} ({SENT})")
