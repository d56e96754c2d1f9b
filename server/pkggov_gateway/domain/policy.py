"""Policy decisions: the facts a per-version decision is made on, and the decision itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import PackageRef, VersionStatus

__all__ = ["PolicyAction", "PolicyContext", "PolicyRequest", "VersionDecision", "VersionFacts"]


class PolicyAction(StrEnum):
    """The Cedar action a per-version decision is about (its id in Pkggov::Action)."""

    DELETE = "DeletePackageVersion"
    """Deleting a version, or archiving it under a recovery window (the same rules)."""
    RESTORE = "RestorePackageVersion"
    """Restoring a version archived under a recovery window."""


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """One existing version's current state, read from CodeArtifact before deciding."""

    version: str
    status: VersionStatus
    is_latest: bool
    published_at: datetime | None = None
    archived_by: str | None = None
    """For a restore: the principal whose request archived the version (its pending purge's
    requester); None otherwise."""


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """The request-wide facts policies may use."""

    justification: str
    dry_run: bool
    request_size: int
    now: datetime
    peer: str
    purge_now: bool = False
    """The caller asked to delete at once where a recovery window would archive."""
    recovery_window: bool = False
    """A recovery window applies to the package's repository."""
    approvals: int = 0
    """Approving votes that count (distinct people other than the requester) on the deletion
    request being executed; 0 for a call that is not one."""
    approver_groups: tuple[str, ...] = ()
    """The groups of those approvers (each group once)."""


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """Everything one batch decision needs: who, which package, which existing versions."""

    principal: Principal
    package: PackageRef
    versions: tuple[VersionFacts, ...]
    version_count: int
    """How many versions the package has now (every status)."""
    remaining_after_request: int
    """How many would remain if every existing requested version were deleted."""
    context: PolicyContext
    action: PolicyAction = PolicyAction.DELETE


@dataclass(frozen=True, slots=True)
class VersionDecision:
    """The decision for one version: allowed or not, and the @ids of the deciding policies.

    Denied with no policy ids means no policy permits it; `errors` holds evaluation errors
    (each one is a deny, as in Cedar).
    """

    version: str
    allowed: bool
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    needs_approval: bool = False
    """Denied only by approval policies (forbids annotated ``@approval``, named in
    `policy_ids`), and allowed without them: the version may be deleted once approved."""
