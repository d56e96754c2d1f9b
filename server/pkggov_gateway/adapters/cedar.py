"""The PolicyEngine port implemented with Cedar (cedarpy): decide on a loaded set, reload it.

The engine decides on one immutable snapshot of the policy set (`cedar_loading` reads and
validates the files into it; `cedar_input` builds what is sent to Cedar). `reload` builds a
new snapshot and swaps the reference; a bad new set leaves the old one in force.

Cedar decides everything: default deny, forbid beats permit. An evaluation error is a deny
here even where Cedar would let another policy allow (Cedar skips an erroring policy).

Approval policies (forbids annotated ``@approval``, see `cedar_loading`): a version to delete
(DeletePackageVersion) that is denied only by approval policies, with no evaluation error, and
that the set without them allows, *needs approval*: its decision is denied, names the approval
policies and has `needs_approval`. Only such versions are decided again, by the set without
the approval policies (same input). An approval policy states what satisfies it in its
``unless`` (e.g. ``context.approver_groups.contains("release-admins")``), so that the same
set allows the version once the votes are in the context. In every other action, and in every
other case, an approval policy is an ordinary forbid.

The caller's groups are the entities file's for its id plus, for a workload token, its claim
groups (`Principal.claim_groups`, put by the identity configuration) that the entities file
defines; a claim group it does not define is ignored (and refused at load when it is among
the engine's `claim_groups`: see `cedar_loading`). `groups_for` answers the same groups, for
what else depends on them (version limits, quotas, a vote's groups). A principal that is not
the caller (``archived_by``, a request's requester, an approver) is in its entities-file
groups only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import cedarpy

from pkggov_gateway.adapters.cedar_input import (
    APPROVE_ACTION,
    CLAIM_ATTRIBUTES,
    CONTEXT_ATTRIBUTES,
    DERIVED_RESOURCE_ATTRIBUTES,
    PLAN_CLEANUP_ACTION,
    PRINCIPAL_TYPE,
    READ_AUDIT_ACTION,
    REQUEST_ATTRIBUTES,
    REQUEST_TYPE,
    RESOURCE_ATTRIBUTES,
    RESOURCE_TYPE,
    RequestFacts,
    approval_input,
    plan_input,
    read_input,
    version_input,
)
from pkggov_gateway.adapters.cedar_loading import (
    APPROVAL_ANNOTATION,
    LoadedPolicy,
    PolicyFiles,
    PolicyLoadError,
    PolicySnapshot,
    default_policy_files,
    load_policy_set,
)
from pkggov_gateway.domain.approvals import DeletionRequestRecord
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.policy import PolicyAction, PolicyRequest, VersionDecision

__all__ = [
    "APPROVAL_ANNOTATION",
    "APPROVE_ACTION",
    "CLAIM_ATTRIBUTES",
    "CONTEXT_ATTRIBUTES",
    "DERIVED_RESOURCE_ATTRIBUTES",
    "PLAN_CLEANUP_ACTION",
    "PRINCIPAL_TYPE",
    "READ_AUDIT_ACTION",
    "REQUEST_ATTRIBUTES",
    "REQUEST_TYPE",
    "RESOURCE_ATTRIBUTES",
    "RESOURCE_TYPE",
    "CedarPolicyEngine",
    "PolicyFiles",
    "PolicyLoadError",
    "RequestFacts",
    "default_policy_files",
]

_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")


class CedarPolicyEngine:
    """Decides deletions and restores with a Cedar policy set; reloadable without interrupting
    decisions.

    Raises PolicyLoadError from the constructor when the set cannot be loaded. `claim_groups`
    are the groups the identity configuration may put tokens in by their claims: every set
    loaded (at start and on reload) must define them.
    """

    def __init__(self, files: PolicyFiles, *, claim_groups: Iterable[str] = ()) -> None:
        self._files = files
        self._claim_groups = tuple(dict.fromkeys(claim_groups))
        self._snapshot = load_policy_set(files, claim_groups=self._claim_groups)
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
                snapshot = load_policy_set(self._files, claim_groups=self._claim_groups)
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

    def groups_for(self, principal: Principal) -> tuple[str, ...]:
        """The groups policy puts the caller `principal` in: the entities file's for its id,
        then its claim groups that the entities file defines (each once)."""
        return self.current().groups_for(principal)

    def person_of(self, principal_id: str) -> str:
        """Whom the entities file says `principal_id` belongs to (else the id itself)."""
        return self.current().person_of(principal_id)

    def approval_policy_ids(self) -> list[str]:
        """The @ids of the approval policies in force, in load order."""
        return [policy.id for policy in self._snapshot.policies if policy.approval]

    def uses_published_time(self) -> bool:
        """True when some policy reads ``published_at`` (the caller must then look it up)."""
        return self.current().uses_published_time()

    def decide(
        self, request: PolicyRequest, *, groups: Sequence[str] | None = None
    ) -> list[VersionDecision]:
        """Decide every version of `request` in one Cedar batch, in the request's order, for
        its action (DeletePackageVersion or RestorePackageVersion).

        `groups` replaces the principal's groups from the entities file (policy tests use
        it); its defined claim groups are added either way. Allowed decisions carry the
        permit policies that allowed; denied ones the forbid policies that denied (none: no
        policy permits), plus any policy that failed to evaluate, whose error is in `errors`.
        A deletion denied only by approval policies, and allowed without them, has
        `needs_approval` (see the module's doc).
        """
        return _decide(self._snapshot, request, groups)

    def authorize_read(
        self, principal: Principal, now: datetime, *, groups: Sequence[str] | None = None
    ) -> VersionDecision:
        """Decide whether `principal` may read the audit record (action ReadAuditLog)."""
        return _authorize_read(self._snapshot, principal, now, groups)

    def authorize_plan(
        self,
        principal: Principal,
        domain: str,
        repository: str,
        now: datetime,
        *,
        groups: Sequence[str] | None = None,
    ) -> VersionDecision:
        """Decide whether `principal` may plan a cleanup of `domain`/`repository` (action
        PlanCleanup)."""
        return _authorize_plan(self._snapshot, principal, (domain, repository), now, groups)

    def authorize_approval(
        self,
        principal: Principal,
        request: DeletionRequestRecord | RequestFacts,
        now: datetime,
        reason: str,
        *,
        groups: Sequence[str] | None = None,
    ) -> VersionDecision:
        """Decide whether `principal` may vote on a deletion request (action
        ApproveDeletionRequest, resource Pkggov::DeletionRequest named by the request id).

        `groups` replaces the principal's groups from the entities file (policy tests use
        it; its defined claim groups are added either way). The decision's `version` is the
        request id.
        """
        return _authorize_approval(self._snapshot, principal, request, now, reason, groups=groups)


class PinnedPolicy:
    """One snapshot of a CedarPolicyEngine's policy set, used for a whole request."""

    def __init__(self, engine: CedarPolicyEngine, snapshot: PolicySnapshot) -> None:
        self._engine = engine
        self._snapshot = snapshot

    def groups_of(self, principal_id: str) -> tuple[str, ...]:
        """The groups this set's entities put `principal_id` in."""
        return self._snapshot.members.get(principal_id, ())

    def groups_for(self, principal: Principal) -> tuple[str, ...]:
        """The groups this set puts the caller `principal` in (see CedarPolicyEngine)."""
        return _groups_for(self._snapshot, principal, None)

    def person_of(self, principal_id: str) -> str:
        """Whom this set's entities say `principal_id` belongs to (else the id itself)."""
        return self._snapshot.persons.get(principal_id, principal_id)

    def uses_published_time(self) -> bool:
        """True when a policy of this set reads ``published_at``."""
        return "published_at" in self._snapshot.reads.resource

    def decide(self, request: PolicyRequest) -> list[VersionDecision]:
        """Decide with this set (see CedarPolicyEngine.decide)."""
        return _decide(self._snapshot, request, None)

    def authorize_read(self, principal: Principal, now: datetime) -> VersionDecision:
        """Decide a read of the audit record with this set."""
        return _authorize_read(self._snapshot, principal, now, None)

    def authorize_plan(
        self, principal: Principal, domain: str, repository: str, now: datetime
    ) -> VersionDecision:
        """Decide a cleanup plan of a repository with this set."""
        return _authorize_plan(self._snapshot, principal, (domain, repository), now, None)

    def authorize_approval(
        self, principal: Principal, request: DeletionRequestRecord, now: datetime, reason: str
    ) -> VersionDecision:
        """Decide a vote on a deletion request with this set."""
        return _authorize_approval(self._snapshot, principal, request, now, reason, groups=None)


def _groups_for(
    snapshot: PolicySnapshot, principal: Principal, groups: Sequence[str] | None
) -> tuple[str, ...]:
    """The caller's groups: `groups` (default: the entities file's for its id), then its
    claim groups that the entities file defines, each once."""
    listed = snapshot.members.get(principal.id, ()) if groups is None else tuple(groups)
    claimed = principal.claim_groups
    if not claimed:
        return listed
    defined = snapshot.groups
    return tuple(dict.fromkeys((*listed, *(group for group in claimed if group in defined))))


def _authorize_approval(
    snapshot: PolicySnapshot,
    principal: Principal,
    request: DeletionRequestRecord | RequestFacts,
    now: datetime,
    reason: str,
    *,
    groups: Sequence[str] | None,
) -> VersionDecision:
    """Decide ApproveDeletionRequest on `request` for `principal`; an error is a deny."""
    facts = request if isinstance(request, RequestFacts) else RequestFacts.of(request)
    groups = _groups_for(snapshot, principal, groups)
    query, entities_json = approval_input(
        principal, groups, facts, now, reason, members=snapshot.members
    )
    try:
        entities = snapshot.base.with_added_json_str(entities_json)
        (result,) = cedarpy.is_authorized_batch([query], snapshot.policy_set, entities)
    except ValueError as err:
        failure = (f"policy evaluation failed: {err}",)
        return VersionDecision(facts.request_id, False, (), failure)
    return _decision(snapshot, facts.request_id, result)


def _authorize_read(
    snapshot: PolicySnapshot, principal: Principal, now: datetime, groups: Sequence[str] | None
) -> VersionDecision:
    """Decide ReadAuditLog on the audit record for `principal`; an error is a deny."""
    groups = _groups_for(snapshot, principal, groups)
    request, entities_json = read_input(principal, groups, now)
    try:
        entities = snapshot.base.with_added_json_str(entities_json)
        (result,) = cedarpy.is_authorized_batch([request], snapshot.policy_set, entities)
    except ValueError as err:
        return VersionDecision("audit", False, (), (f"policy evaluation failed: {err}",))
    return _decision(snapshot, "audit", result)


def _authorize_plan(
    snapshot: PolicySnapshot,
    principal: Principal,
    repository: tuple[str, str],
    now: datetime,
    groups: Sequence[str] | None,
) -> VersionDecision:
    """Decide PlanCleanup on `domain`/`repository` for `principal`; an error is a deny."""
    groups = _groups_for(snapshot, principal, groups)
    domain, name_only = repository
    request, entities_json = plan_input(principal, groups, domain, name_only, now)
    name = f"{domain}/{name_only}"
    try:
        entities = snapshot.base.with_added_json_str(entities_json)
        (result,) = cedarpy.is_authorized_batch([request], snapshot.policy_set, entities)
    except ValueError as err:
        return VersionDecision(name, False, (), (f"policy evaluation failed: {err}",))
    return _decision(snapshot, name, result)


def _decide(
    snapshot: PolicySnapshot, request: PolicyRequest, groups: Sequence[str] | None
) -> list[VersionDecision]:
    """Decide every version of `request` with `snapshot` in one Cedar batch."""
    versions = request.versions
    if not versions:
        return []
    groups = _groups_for(snapshot, request.principal, groups)
    cedar_input = version_input(request, groups, snapshot.reads, members=snapshot.members)
    try:
        entities = snapshot.base.with_added_json_str(cedar_input.entities)
        results = cedarpy.is_authorized_batch(cedar_input.requests, snapshot.policy_set, entities)
        # One decision per Cedar request, named by the version that made it; the others
        # alike get a copy under their own name.
        decided = [
            _decision(snapshot, str(query["resource"]["id"]), result)
            for query, result in zip(cedar_input.requests, results, strict=True)
        ]
        if request.action is PolicyAction.DELETE and snapshot.without_approvals is not None:
            decided = _with_approvals(snapshot, cedar_input.requests, entities, decided)
    except ValueError as err:
        failure = (f"policy evaluation failed: {err}",)
        return [VersionDecision(facts.version, False, (), failure) for facts in versions]
    return [
        decision
        if (decision := decided[slot]).version == facts.version
        else _renamed(decision, facts.version)
        for facts, slot in zip(versions, cedar_input.slots, strict=True)
    ]


def _renamed(decision: VersionDecision, version: str) -> VersionDecision:
    """`decision` for `version`, a version alike that its Cedar request decided: what
    `dataclasses.replace` makes, without its look-up of every field (one copy per version)."""
    return VersionDecision(
        version, decision.allowed, decision.policy_ids, decision.errors, decision.needs_approval
    )


def _with_approvals(
    snapshot: PolicySnapshot,
    requests: list[dict[str, Any]],
    entities: cedarpy.Entities,
    decided: list[VersionDecision],
) -> list[VersionDecision]:
    """`decided` with `needs_approval` on the decisions denied only by approval policies that
    the set without them allows (only those are decided again, in one batch)."""
    approval_ids = snapshot.approval_ids
    pending = [
        index
        for index, decision in enumerate(decided)
        if not decision.allowed
        and not decision.errors
        and decision.policy_ids
        and approval_ids.issuperset(decision.policy_ids)
    ]
    if not pending or snapshot.without_approvals is None:
        return decided
    again = cedarpy.is_authorized_batch(
        [requests[index] for index in pending], snapshot.without_approvals, entities
    )
    decided = list(decided)
    for index, result in zip(pending, again, strict=True):
        if result.allowed and not result.diagnostics.errors:
            decided[index] = replace(decided[index], needs_approval=True)
    return decided


def _decision(
    snapshot: PolicySnapshot, version: str, result: cedarpy.AuthzResult
) -> VersionDecision:
    diagnostics = result.diagnostics
    errors = diagnostics.errors
    allowed = result.allowed and not errors
    deciding: list[tuple[int, LoadedPolicy]] = []
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


def _ids(deciding: list[tuple[int, LoadedPolicy]]) -> tuple[str, ...]:
    if len(deciding) <= 1:
        return tuple(policy.id for _, policy in deciding)
    return tuple(dict.fromkeys(policy.id for _, policy in sorted(deciding, key=lambda p: p[0])))
