"""Cleanup plans and the jobs that apply them.

A *plan* is a retention rule applied to one package or to a repository's packages: every
version with the rule's decision and, for the versions it would delete, the policy's decision
as a dry run of DeletePackageVersions makes it. The gateway keeps the plan (in the audit
store's database, one row per package) under a SHA-256 of its canonical JSON, which the
PlanCleanup call's audit outcome also records: a stored plan that no longer matches is refused
(PLAN_TAMPERED).

A *job* applies a plan, package by package, each deletion a governed DeletePackageVersions call
made as the plan's requester with a request_id derived from the job, the package and the chunk
(`step_request_id`): a job resumed after a crash repeats a call that was already made with the
same request_id, and the gateway answers it from the audit record instead of deleting again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, PlanOutcome, VersionStatus
from pkggov_gateway.domain.retention import Clause, RetentionRule, rule_from_mapping

__all__ = [
    "CLEANUP_JOB_METHOD",
    "PLAN_ALLOWED",
    "CleanupJob",
    "CleanupPlan",
    "CleanupResult",
    "CleanupScope",
    "JobState",
    "PackagePlan",
    "PackageResult",
    "PlanRequest",
    "PlannedEntry",
    "VersionResult",
    "package_from_json",
    "package_json",
    "plan_hash",
    "principal_from_json",
    "principal_json",
    "step_request_id",
]

CLEANUP_JOB_METHOD = "/pkggov.internal.CleanupJob/DeletePackageVersions"
"""The method a job's deletions are recorded under (each names its job)."""

PLAN_ALLOWED = frozenset({PlanOutcome.WOULD_DELETE, PlanOutcome.WOULD_ARCHIVE})
"""The planned policy outcomes a job sends as ordinary deletions."""

_STEPS = uuid.UUID("7c1f0f5e-3b0e-4f44-9a55-2f0c4d1e8a61")


def step_request_id(job_id: str, seq: int, part: str, chunk: int) -> str:
    """The request_id of one deletion call of a job: the same on every attempt."""
    return str(uuid.uuid5(_STEPS, f"{job_id}/{seq}/{part}/{chunk}"))


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def package_json(package: PackageRef) -> dict[str, Any]:
    """A package as a plan records it."""
    return {
        "domain": package.domain,
        "domain_owner": package.domain_owner or "",
        "repository": package.repository,
        "format": package.format.value,
        "namespace": package.namespace or "",
        "package": package.package,
    }


def package_from_json(raw: Mapping[str, Any]) -> PackageRef:
    """The inverse of `package_json`."""
    return PackageRef(
        domain=str(raw["domain"]),
        repository=str(raw["repository"]),
        format=PackageFormat(raw["format"]),
        package=str(raw["package"]),
        namespace=str(raw["namespace"]) or None,
        domain_owner=str(raw["domain_owner"]) or None,
    )


def principal_json(principal: Principal) -> dict[str, Any]:
    """Who planned or applied, as a job keeps it to act for them."""
    return {
        "id": principal.id,
        "method": principal.method.value,
        "peer": principal.peer,
        "issuer": principal.issuer,
        "token_id": principal.token_id,
        "attributes": dict(principal.attributes),
        "claim_groups": list(principal.claim_groups),
    }


def principal_from_json(raw: Mapping[str, Any]) -> Principal:
    """The principal a job acts for, as it applied the plan (its peer included)."""
    return Principal(
        id=str(raw["id"]),
        method=AuthMethod(raw["method"]),
        peer=str(raw.get("peer") or ""),
        issuer=raw.get("issuer"),
        token_id=raw.get("token_id"),
        attributes=dict(raw.get("attributes") or {}),
        claim_groups=tuple(raw.get("claim_groups") or ()),
    )


@dataclass(frozen=True, slots=True)
class CleanupScope:
    """What a plan covers: one package, or a repository's packages that the filters match."""

    domain: str
    repository: str
    domain_owner: str | None = None
    format: PackageFormat | None = None
    namespace: str | None = None
    package: str | None = None
    package_pattern: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The scope as recorded."""
        return {
            "domain": self.domain,
            "domain_owner": self.domain_owner or "",
            "repository": self.repository,
            "format": self.format.value if self.format else "",
            "namespace": self.namespace or "",
            "package": self.package or "",
            "package_pattern": self.package_pattern or "",
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CleanupScope:
        """The inverse of `to_json` (an empty text is an unset field)."""
        return cls(
            domain=str(raw["domain"]),
            repository=str(raw["repository"]),
            domain_owner=str(raw.get("domain_owner") or "") or None,
            format=PackageFormat(raw["format"]) if raw.get("format") else None,
            namespace=str(raw.get("namespace") or "") or None,
            package=str(raw.get("package") or "") or None,
            package_pattern=str(raw.get("package_pattern") or "") or None,
        )


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """A validated PlanCleanup request: exactly one of `rule_name` and `rule`."""

    scope: CleanupScope
    rule_name: str = ""
    rule: RetentionRule | None = None
    justification: str = ""
    purge_now: bool = False


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    """One version of a package's plan."""

    version: str
    revision: str
    status: VersionStatus
    delete: bool
    clause: Clause
    reason: str
    prerelease: bool = False
    published_at: datetime | None = None
    policy: PlanOutcome | None = None
    """For a deletion: what the governed delete would do."""
    policy_ids: tuple[str, ...] = ()
    purge_at: datetime | None = None
    policy_message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The entry as the plan records (and hashes) it."""
        return {
            "version": self.version,
            "revision": self.revision,
            "status": self.status.value,
            "delete": self.delete,
            "clause": self.clause.value,
            "reason": self.reason,
            "prerelease": self.prerelease,
            "published_at": _time(self.published_at),
            "policy": self.policy.value if self.policy else None,
            "policy_ids": list(self.policy_ids),
            "purge_at": _time(self.purge_at),
            "policy_message": self.policy_message,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PlannedEntry:
        """The inverse of `to_json`."""
        return cls(
            version=str(raw["version"]),
            revision=str(raw["revision"]),
            status=VersionStatus(raw["status"]),
            delete=bool(raw["delete"]),
            clause=Clause(raw["clause"]),
            reason=str(raw["reason"]),
            prerelease=bool(raw.get("prerelease")),
            published_at=_parse_time(raw.get("published_at")),
            policy=PlanOutcome(raw["policy"]) if raw.get("policy") else None,
            policy_ids=tuple(raw.get("policy_ids") or ()),
            purge_at=_parse_time(raw.get("purge_at")),
            policy_message=str(raw.get("policy_message") or ""),
        )


@dataclass(frozen=True, slots=True)
class PackagePlan:
    """One package's part of a plan: every version, newest first by the rule's order."""

    package: PackageRef
    latest: str | None
    entries: tuple[PlannedEntry, ...]
    published_order: tuple[str, ...] = ()
    """Every version newest published first, as listed when planned (apply re-ranks by it)."""
    error: str = ""
    """Why the package could not be planned (then none of it is deleted)."""

    def deletions(self) -> list[PlannedEntry]:
        """The entries the rule deletes."""
        return [e for e in self.entries if e.delete]

    def to_json(self) -> dict[str, Any]:
        """The package's plan as recorded (and hashed)."""
        return {
            "package": package_json(self.package),
            "latest": self.latest,
            "entries": [e.to_json() for e in self.entries],
            "published_order": list(self.published_order),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PackagePlan:
        """The inverse of `to_json`."""
        return cls(
            package=package_from_json(raw["package"]),
            latest=raw.get("latest"),
            entries=tuple(PlannedEntry.from_json(e) for e in raw["entries"]),
            published_order=tuple(raw.get("published_order") or ()),
            error=str(raw.get("error") or ""),
        )


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    """A plan's header: who planned what by which rule, and its totals."""

    plan_id: str
    requester: Mapping[str, Any]
    """`principal_json` of the requester."""
    created_at: datetime
    expires_at: datetime
    scope: CleanupScope
    rule_name: str
    rule: RetentionRule
    justification: str
    purge_now: bool
    package_count: int
    totals: Mapping[str, int]
    """version_count, delete_count, keep_count, allowed_count, denied_count,
    needs_approval_count."""
    clause_counts: Mapping[str, int]
    warnings: tuple[str, ...]
    upstream_calls: int
    event_id: str
    """The audit event of the PlanCleanup call (which records plan_hash)."""
    plan_hash: str = ""

    @property
    def requester_id(self) -> str:
        """The requester's principal id."""
        return str(self.requester["id"])

    def header_json(self) -> dict[str, Any]:
        """The header as hashed (everything but the hash itself)."""
        return {
            "plan_id": self.plan_id,
            "requester": dict(self.requester),
            "created_at": _time(self.created_at),
            "expires_at": _time(self.expires_at),
            "scope": self.scope.to_json(),
            "rule_name": self.rule_name,
            "rule": self.rule.to_json(),
            "justification": self.justification,
            "purge_now": self.purge_now,
            "package_count": self.package_count,
            "totals": dict(self.totals),
            "clause_counts": dict(self.clause_counts),
            "warnings": list(self.warnings),
            "upstream_calls": self.upstream_calls,
            "event_id": self.event_id,
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any], plan_hash: str) -> CleanupPlan:
        """The inverse of `header_json`, with the plan's stored `plan_hash` (its times as the
        header records them, so the header hashes as it did). Raises KeyError, TypeError or
        ValueError (InvalidRequestError for its rule) for a header that is not one."""
        created_at = _parse_time(header["created_at"])
        expires_at = _parse_time(header["expires_at"])
        if created_at is None or expires_at is None:
            raise ValueError("a plan header needs created_at and expires_at")
        return cls(
            plan_id=str(header["plan_id"]),
            requester=dict(header["requester"]),
            created_at=created_at,
            expires_at=expires_at,
            scope=CleanupScope.from_json(header["scope"]),
            rule_name=str(header["rule_name"]),
            rule=rule_from_mapping(header["rule"]),
            justification=str(header["justification"]),
            purge_now=bool(header["purge_now"]),
            package_count=int(header["package_count"]),
            totals={str(k): int(v) for k, v in dict(header["totals"]).items()},
            clause_counts={str(k): int(v) for k, v in dict(header["clause_counts"]).items()},
            warnings=tuple(str(w) for w in header["warnings"]),
            upstream_calls=int(header["upstream_calls"]),
            event_id=str(header["event_id"]),
            plan_hash=plan_hash,
        )


def plan_hash(header: Mapping[str, Any], packages: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 (hex) of a plan's canonical JSON: its header and its packages in order."""
    digest = hashlib.sha256()
    for part in (header, *packages):
        digest.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class JobState(StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED})


class CleanupResult(StrEnum):
    """What applying did with one planned deletion."""

    PENDING = "pending"
    DELETED = "deleted"
    ARCHIVED = "archived"
    PLAN_CHANGED = "plan_changed"
    DENIED = "denied"
    AWAITING_APPROVAL = "awaiting_approval"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class VersionResult:
    """One planned deletion's result."""

    version: str
    result: CleanupResult
    message: str = ""
    purge_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """As stored."""
        return {
            "version": self.version,
            "result": self.result.value,
            "message": self.message,
            "purge_at": _time(self.purge_at),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VersionResult:
        """The inverse of `to_json`."""
        return cls(
            str(raw["version"]),
            CleanupResult(raw["result"]),
            str(raw.get("message") or ""),
            _parse_time(raw.get("purge_at")),
        )


@dataclass(frozen=True, slots=True)
class PackageResult:
    """One package's part of a job, once processed."""

    seq: int
    package: PackageRef
    versions: tuple[VersionResult, ...]
    audit_event_ids: tuple[str, ...] = ()
    deletion_request_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """As stored."""
        return {
            "seq": self.seq,
            "package": package_json(self.package),
            "versions": [v.to_json() for v in self.versions],
            "audit_event_ids": list(self.audit_event_ids),
            "deletion_request_id": self.deletion_request_id,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PackageResult:
        """The inverse of `to_json`."""
        return cls(
            seq=int(raw["seq"]),
            package=package_from_json(raw["package"]),
            versions=tuple(VersionResult.from_json(v) for v in raw["versions"]),
            audit_event_ids=tuple(raw.get("audit_event_ids") or ()),
            deletion_request_id=str(raw.get("deletion_request_id") or ""),
        )


@dataclass(frozen=True, slots=True)
class CleanupJob:
    """A plan being applied, with its progress."""

    job_id: str
    plan_id: str
    plan_hash: str
    requester: Mapping[str, Any]
    """`principal_json` of the requester as they applied the plan (the plan's requester):
    the deletions are made as them, with that identity."""
    state: JobState
    created_at: datetime
    updated_at: datetime
    event_id: str
    """The audit event of the ApplyCleanup call."""
    packages_total: int
    versions_planned: int
    next_seq: int = 0
    """The plan position (package seq) the job continues from."""
    packages_done: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    """Per CleanupResult value: how many versions ended so."""
    last_error: str = ""
    cancel_requested: bool = False
    cancel_reason: str = ""
    attempts: int = 0
    """Failed runs of the current package, retried with backoff."""

    @property
    def requester_id(self) -> str:
        """The requester's principal id."""
        return str(self.requester["id"])
