"""The PolicyEngine port implemented with Cedar (cedarpy): decide on a loaded set, reload it.

The engine decides on one immutable snapshot of the policy set (`cedar_loading` reads and
validates the files into it; `cedar_input` builds what is sent to Cedar). `reload` builds a
new snapshot and swaps the reference; a bad new set leaves the old one in force.

Cedar decides everything: default deny, forbid beats permit. An evaluation error is a deny
here even where Cedar would let another policy allow (Cedar skips an erroring policy).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime

import cedarpy

from pkggov_gateway.adapters.cedar_input import (
    CONTEXT_ATTRIBUTES,
    DERIVED_RESOURCE_ATTRIBUTES,
    PRINCIPAL_TYPE,
    READ_AUDIT_ACTION,
    RESOURCE_ATTRIBUTES,
    RESOURCE_TYPE,
    read_input,
    version_input,
)
from pkggov_gateway.adapters.cedar_loading import (
    LoadedPolicy,
    PolicyFiles,
    PolicyLoadError,
    PolicySnapshot,
    default_policy_files,
    load_policy_set,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.policy import PolicyRequest, VersionDecision

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

_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")


class CedarPolicyEngine:
    """Decides deletions and restores with a Cedar policy set; reloadable without interrupting
    decisions.

    Raises PolicyLoadError from the constructor when the set cannot be loaded.
    """

    def __init__(self, files: PolicyFiles) -> None:
        self._files = files
        self._snapshot = load_policy_set(files)
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
                snapshot = load_policy_set(self._files)
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
        """Decide every version of `request` in one Cedar batch, in the request's order, for
        its action (DeletePackageVersion or RestorePackageVersion).

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

    def __init__(self, engine: CedarPolicyEngine, snapshot: PolicySnapshot) -> None:
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
    snapshot: PolicySnapshot, principal: Principal, now: datetime, groups: Sequence[str] | None
) -> VersionDecision:
    """Decide ReadAuditLog on the audit record for `principal`; an error is a deny."""
    if groups is None:
        groups = snapshot.members.get(principal.id, ())
    request, entities_json = read_input(principal, groups, now)
    try:
        entities = snapshot.base.with_added_json_str(entities_json)
        (result,) = cedarpy.is_authorized_batch([request], snapshot.policy_set, entities)
    except ValueError as err:
        return VersionDecision("audit", False, (), (f"policy evaluation failed: {err}",))
    return _decision(snapshot, "audit", result)


def _decide(
    snapshot: PolicySnapshot, request: PolicyRequest, groups: Sequence[str] | None
) -> list[VersionDecision]:
    """Decide every version of `request` with `snapshot` in one Cedar batch."""
    versions = request.versions
    if not versions:
        return []
    if groups is None:
        groups = snapshot.members.get(request.principal.id, ())
    cedar_input = version_input(request, groups, snapshot.reads, members=snapshot.members)
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
