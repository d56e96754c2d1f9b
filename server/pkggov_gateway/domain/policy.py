"""Policy decisions: the facts a per-version decision is made on, and the decision itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import PackageRef, VersionStatus

__all__ = ["PolicyContext", "PolicyRequest", "VersionDecision", "VersionFacts"]


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """One existing version's current state, read from CodeArtifact before deciding."""

    version: str
    status: VersionStatus
    is_latest: bool
    published_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """The request-wide facts policies may use."""

    justification: str
    dry_run: bool
    request_size: int
    now: datetime
    peer: str


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
