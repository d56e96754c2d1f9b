"""A policy engine with simple rules, and package locks that record their holds."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from pkggov_gateway.adapters.package_locks import LocalPackageLocks, describe_package
from pkggov_gateway.domain.approvals import DeletionRequestRecord
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import PackageBusyError
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import PackageRef
from pkggov_gateway.domain.policy import PolicyAction, PolicyRequest, VersionDecision, VersionFacts

__all__ = ["FakePackageLocks", "FakePolicy"]


@dataclass
class FakePolicy:
    """A PolicyEngine that is its own PolicyView: everything is allowed (by policy
    ``permit``) except the versions in `deny` and every call, read or vote of
    `deny_principals` (denied by ``deny-listed``), whatever the action (delete or restore).
    Two rules of the shipped policy can be added: `deny_purge_now` and
    `archiver_restores_only`; and four eyes: `approval_required` (deletes that need
    approval) and `approvers` (who may vote). Change the fields between calls to "reload"
    it."""

    ALLOW: ClassVar[str] = "permit"
    DENY: ClassVar[str] = "deny-listed"
    PURGE_NOW_DENIED: ClassVar[str] = "purge-now-denied"
    NOT_THE_ARCHIVER: ClassVar[str] = "not-the-archiver"
    APPROVAL: ClassVar[str] = "approval-required"
    NOT_AN_APPROVER: ClassVar[str] = "not-an-approver"

    deny: frozenset[str] = frozenset()
    deny_principals: frozenset[str] = frozenset()
    deny_purge_now: frozenset[str] = frozenset()
    """Principals whose delete with purge_now under a recovery window is denied (by
    ``purge-now-denied``): without either, their delete is decided as any other."""
    archiver_restores_only: bool = False
    """When True, a restore is allowed only to the principal that archived the version (its
    `archived_by`) or to a member of a `restore_groups` group; others are denied (by
    ``not-the-archiver``). When False, restores are decided as deletes."""
    restore_groups: frozenset[str] = frozenset({"release-admins"})
    approval_required: frozenset[str] = frozenset()
    """Repositories, and versions, whose delete (not otherwise denied) needs approval: it is
    denied by the approval policy ``approval-required`` with `needs_approval`, unless the
    context has at least `approvals_needed` approvals (and, with `approval_group`, that group
    among the approver groups); then it is allowed."""
    approvals_needed: int = 1
    approval_group: str | None = None
    approvers: frozenset[str] | None = None
    """Who may vote on a deletion request (`authorize_approval`): these principal ids (others
    denied by ``not-an-approver``); None: anyone. `deny_principals` are denied either way."""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Principal id -> its groups."""
    defined_groups: frozenset[str] | None = None
    """The groups that exist, as the entities file defines them: a principal's claim groups
    count (`groups_for`) only when among them; None: every claim group counts."""
    persons: Mapping[str, str] = field(default_factory=dict)
    """Principal id -> its person (`person_of`; default: the id itself)."""
    published_time: bool = False
    """What `uses_published_time` answers."""
    requests: list[PolicyRequest] = field(default_factory=list)
    """Every batch `decide` was asked, in order."""
    reads: list[Principal] = field(default_factory=list)
    """Every principal `authorize_read` was asked about, in order."""
    votes: list[tuple[Principal, str, str]] = field(default_factory=list)
    """Every (principal, request id, reason) `authorize_approval` was asked about, in order."""

    def current(self) -> FakePolicy:
        return self

    def groups_of(self, principal_id: str) -> tuple[str, ...]:
        return tuple(self.groups.get(principal_id, ()))

    def groups_for(self, principal: Principal) -> tuple[str, ...]:
        """`groups_of` its id, then its claim groups (those in `defined_groups`), each once."""
        defined = self.defined_groups
        claimed = (g for g in principal.claim_groups if defined is None or g in defined)
        return tuple(dict.fromkeys((*self.groups_of(principal.id), *claimed)))

    def person_of(self, principal_id: str) -> str:
        return self.persons.get(principal_id, principal_id)

    def uses_published_time(self) -> bool:
        return self.published_time

    def decide(self, request: PolicyRequest) -> list[VersionDecision]:
        self.requests.append(request)
        decisions = []
        for facts in request.versions:
            rule = self._denied_by(request, facts)
            if rule is None and self._needs_approval(request, facts):
                decisions.append(
                    VersionDecision(facts.version, False, (self.APPROVAL,), needs_approval=True)
                )
                continue
            decisions.append(VersionDecision(facts.version, rule is None, (rule or self.ALLOW,)))
        return decisions

    def _needs_approval(self, request: PolicyRequest, facts: VersionFacts) -> bool:
        """True when `facts`' delete needs approval that the context does not carry."""
        if request.action is not PolicyAction.DELETE:
            return False
        wanted = self.approval_required
        if request.package.repository not in wanted and facts.version not in wanted:
            return False
        context = request.context
        approved = context.approvals >= self.approvals_needed and (
            self.approval_group is None or self.approval_group in context.approver_groups
        )
        return not approved

    def _denied_by(self, request: PolicyRequest, facts: VersionFacts) -> str | None:
        """The rule denying `facts`' version in `request`, or None when it is allowed."""
        principal = request.principal.id
        if principal in self.deny_principals or facts.version in self.deny:
            return self.DENY
        context = request.context
        if request.action is PolicyAction.DELETE:
            skips_window = context.purge_now and context.recovery_window
            return (
                self.PURGE_NOW_DENIED if skips_window and principal in self.deny_purge_now else None
            )
        restorer = facts.archived_by == principal or bool(
            self.restore_groups.intersection(self.groups_for(request.principal))
        )
        return None if restorer or not self.archiver_restores_only else self.NOT_THE_ARCHIVER

    def authorize_read(self, principal: Principal, now: datetime) -> VersionDecision:
        self.reads.append(principal)
        return self._decision("audit", principal.id in self.deny_principals)

    def authorize_plan(
        self, principal: Principal, domain: str, repository: str, now: datetime
    ) -> VersionDecision:
        return self._decision(f"{domain}/{repository}", principal.id in self.deny_principals)

    def authorize_approval(
        self, principal: Principal, request: DeletionRequestRecord, now: datetime, reason: str
    ) -> VersionDecision:
        self.votes.append((principal, request.request_id, reason))
        if principal.id in self.deny_principals:
            return self._decision(request.request_id, True)
        if self.approvers is not None and principal.id not in self.approvers:
            return VersionDecision(request.request_id, False, (self.NOT_AN_APPROVER,))
        return self._decision(request.request_id, False)

    def _decision(self, subject: str, denied: bool) -> VersionDecision:
        return VersionDecision(subject, not denied, (self.DENY if denied else self.ALLOW,))


class FakePackageLocks:
    """PackageLocks that take turns for real (`LocalPackageLocks`) and record each hold in
    `held` (package, wait deadline) and `log` ("lock", "unlock"); while `busy`, every hold
    fails with PackageBusyError at once."""

    def __init__(self, *, busy: bool = False) -> None:
        self.busy = busy
        self.held: list[tuple[PackageRef, Deadline]] = []
        self.log: list[str] = []
        self._locks = LocalPackageLocks()
        self._holding = 0
        self._count = threading.Lock()

    @property
    def holding(self) -> bool:
        """Whether some call holds a package now."""
        return self._holding > 0

    @contextlib.contextmanager
    def hold(self, package: PackageRef, deadline: Deadline) -> Iterator[None]:
        """Hold `package` for the block (see the PackageLocks port)."""
        if self.busy:
            raise PackageBusyError(describe_package(package), deadline.remaining())
        with self._locks.hold(package, deadline):
            with self._count:
                self.held.append((package, deadline))
                self.log.append("lock")
                self._holding += 1
            try:
                yield
            finally:
                with self._count:
                    self._holding -= 1
                    self.log.append("unlock")
