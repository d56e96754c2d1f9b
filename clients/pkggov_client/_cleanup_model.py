"""Plain Python types for retention (CleanupService): rules, plans, jobs and their results.

A rule (`CleanupRule`), a plan with every version's decision (`CleanupPlan`,
`PackageCleanupPlan`, `VersionCleanupPlan`) and a page of it (`CleanupPlanPage`), a job applying
it (`CleanupJob`) and a page of the job's per-version results (`CleanupJobPage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Literal

from google.protobuf import timestamp_pb2

from pkggov.v1 import package_governance_pb2 as gov_pb2
from pkggov_client._model import (
    PackageFormat,
    PackageVersionStatus,
    _CaseInsensitiveStrEnum,
    ordered_keys,
    outcome_name,
    timestamp_to_datetime,
)

__all__ = [
    "CleanupAction",
    "CleanupClause",
    "CleanupJob",
    "CleanupJobPage",
    "CleanupJobState",
    "CleanupOrder",
    "CleanupPlan",
    "CleanupPlanPage",
    "CleanupResult",
    "CleanupRule",
    "PackageCleanupPlan",
    "PackageCleanupResult",
    "PrereleaseScope",
    "VersionCleanupPlan",
    "VersionCleanupResult",
]


def _time(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when it is not set."""
    return timestamp_to_datetime(stamp) if present else None


class CleanupOrder(_CaseInsensitiveStrEnum):
    """How a rule ranks versions from newest to oldest: by the format's own version ordering,
    or by publication time (spelled as in the gateway's ``[cleanup.rules.NAME]`` tables)."""

    VERSION = "version"
    PUBLISHED = "published"

    def to_proto(self) -> gov_pb2.CleanupOrder.ValueType:
        """Return the matching `pkggov.v1.CleanupOrder` value."""
        return gov_pb2.CleanupOrder.Value(f"CLEANUP_ORDER_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> CleanupOrder | None:
        """Return the order of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.CleanupOrder.Name(gov_pb2.CleanupOrder.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CLEANUP_ORDER_"))


class PrereleaseScope(_CaseInsensitiveStrEnum):
    """Whether a rule is about releases and pre-releases (any), pre-releases only (only) or
    releases only (exclude)."""

    ANY = "any"
    ONLY = "only"
    EXCLUDE = "exclude"

    def to_proto(self) -> gov_pb2.PrereleaseScope.ValueType:
        """Return the matching `pkggov.v1.PrereleaseScope` value."""
        return gov_pb2.PrereleaseScope.Value(f"PRERELEASE_SCOPE_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> PrereleaseScope | None:
        """Return the scope of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.PrereleaseScope.Name(gov_pb2.PrereleaseScope.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("PRERELEASE_SCOPE_"))


class CleanupClause(_CaseInsensitiveStrEnum):
    """The part of a rule that decided a version: a scope clause or a guard kept it, or it was
    SELECTED for deletion (clause order: the gateway's domain/retention.py)."""

    STATUS = "status"
    NOT_INCLUDED = "not_included"
    EXCLUDED = "excluded"
    PRERELEASE_SCOPE = "prerelease_scope"
    LATEST = "latest"
    UNORDERED = "unordered"
    KEEP_NEWEST = "keep_newest"
    KEEP_NEWEST_RELEASES = "keep_newest_releases"
    KEEP_NEWEST_PRERELEASES = "keep_newest_prereleases"
    KEEP_YOUNGER_THAN = "keep_younger_than"
    NOT_OLDER_THAN = "not_older_than"
    MAX_DELETIONS = "max_deletions"
    SELECTED = "selected"

    @classmethod
    def from_proto(cls, value: int) -> CleanupClause | None:
        """Return the clause of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.CleanupClause.Name(gov_pb2.CleanupClause.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CLEANUP_CLAUSE_"))


class CleanupAction(_CaseInsensitiveStrEnum):
    """What a plan does with a version."""

    KEEP = "keep"
    DELETE = "delete"

    @classmethod
    def from_proto(cls, value: int) -> CleanupAction | None:
        """Return the action of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.CleanupAction.Name(gov_pb2.CleanupAction.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CLEANUP_ACTION_"))


class CleanupJobState(_CaseInsensitiveStrEnum):
    """Where a cleanup job stands; SUCCEEDED, CANCELLED and FAILED are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """True for a state the job never leaves (succeeded, cancelled, failed)."""
        return self not in (CleanupJobState.QUEUED, CleanupJobState.RUNNING)

    @classmethod
    def from_proto(cls, value: int) -> CleanupJobState | None:
        """Return the state of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.CleanupJobState.Name(gov_pb2.CleanupJobState.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CLEANUP_JOB_STATE_"))


class CleanupResult(_CaseInsensitiveStrEnum):
    """What applying a plan did with one version it planned to delete."""

    PENDING = "pending"
    DELETED = "deleted"
    ARCHIVED = "archived"
    PLAN_CHANGED = "plan_changed"
    DENIED = "denied"
    AWAITING_APPROVAL = "awaiting_approval"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True when the planned deletion was done: the version was deleted or archived."""
        return self in (CleanupResult.DELETED, CleanupResult.ARCHIVED)

    @classmethod
    def from_proto(cls, value: int) -> CleanupResult | None:
        """Return the result of a proto value; None for UNSPECIFIED or a value unknown here."""
        try:
            name = gov_pb2.CleanupResult.Name(gov_pb2.CleanupResult.ValueType(value))
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CLEANUP_RESULT_"))


_RuleCount = Literal[
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
    "max_deletions",
]
_RULE_COUNTS: tuple[_RuleCount, ...] = (
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
    "max_deletions",
)


@dataclass(frozen=True)
class CleanupRule:
    """A retention rule given inline to `PkggovClient.plan_cleanup` (or as a plan applied it).

    A version is deleted only when it is in the rule's scope (`statuses`, default Published and
    Unlisted; the `include` and `exclude` globs, `include_regex`, `exclude_regex`; `prerelease`)
    and no guard keeps it: the package's latest version, the newest `keep_newest` (and per kind
    `keep_newest_releases`, `keep_newest_prereleases`, ranked by `order`), what was published
    less than `keep_younger_than_days` ago or not more than `older_than_days` ago, and
    `max_deletions` per package. A rule needs a count or an age guard; the gateway checks
    every field and names each bad one (``rule.keep_newest``). None and empty mean "not set".
    Enum fields also take their spellings in any case ("published", "only", "Unlisted"); a
    collection becomes a tuple.
    """

    order: CleanupOrder | None = None
    keep_newest: int | None = None
    keep_newest_releases: int | None = None
    keep_newest_prereleases: int | None = None
    older_than_days: int | None = None
    keep_younger_than_days: int | None = None
    statuses: tuple[PackageVersionStatus, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_regex: str = ""
    exclude_regex: str = ""
    prerelease: PrereleaseScope | None = None
    max_deletions: int | None = None

    def __post_init__(self) -> None:
        if self.order is not None:
            object.__setattr__(self, "order", CleanupOrder(self.order))
        if self.prerelease is not None:
            object.__setattr__(self, "prerelease", PrereleaseScope(self.prerelease))
        for name in ("include", "exclude", "statuses"):
            values: Iterable[str] = getattr(self, name)  # any collection, from a caller
            if isinstance(values, str):
                raise TypeError(f"{name} must be a collection of strings, not one string")
            object.__setattr__(self, name, tuple(values))
        object.__setattr__(
            self, "statuses", tuple(PackageVersionStatus(status) for status in self.statuses)
        )

    def to_proto(self) -> gov_pb2.CleanupRule:
        """Return the rule as a `pkggov.v1.CleanupRule` (fields left unset stay unset)."""
        rule = gov_pb2.CleanupRule(
            order=(
                gov_pb2.CleanupOrder.CLEANUP_ORDER_UNSPECIFIED
                if self.order is None
                else self.order.to_proto()
            ),
            statuses=[status.to_proto() for status in self.statuses],
            include=list(self.include),
            exclude=list(self.exclude),
            include_regex=self.include_regex,
            exclude_regex=self.exclude_regex,
            prerelease=(
                gov_pb2.PrereleaseScope.PRERELEASE_SCOPE_UNSPECIFIED
                if self.prerelease is None
                else self.prerelease.to_proto()
            ),
        )
        for name in _RULE_COUNTS:
            value = getattr(self, name)
            if value is not None:
                setattr(rule, name, value)
        return rule

    @classmethod
    def from_proto(cls, rule: gov_pb2.CleanupRule) -> CleanupRule:
        """Build a rule from its proto; a status this client does not know is left out."""
        counts: dict[str, int | None] = {
            name: getattr(rule, name) if rule.HasField(name) else None for name in _RULE_COUNTS
        }
        statuses = (PackageVersionStatus.from_proto(status) for status in rule.statuses)
        return cls(
            order=CleanupOrder.from_proto(rule.order),
            statuses=tuple(status for status in statuses if status is not None),
            include=tuple(rule.include),
            exclude=tuple(rule.exclude),
            include_regex=rule.include_regex,
            exclude_regex=rule.exclude_regex,
            prerelease=PrereleaseScope.from_proto(rule.prerelease),
            **counts,
        )

    @property
    def empty(self) -> bool:
        """True when no field is set (the gateway refuses such a rule: it has no guard)."""
        return self == CleanupRule()


def _outcome(value: int) -> str | None:
    """A policy outcome's name ("WOULD_DELETE"); None when the plan keeps the version."""
    return None if value == 0 else outcome_name(value)


@dataclass(frozen=True)
class VersionCleanupPlan:
    """The decision for one version of a plan.

    `revision` and `status` are what the plan saw (applying requires the same); `clause` is the
    part of the rule that decided it and `reason` says why in words; `publish_time` is set where
    the plan read it (an age clause needed it). For a version to delete, `policy_outcome` is
    what the governed delete would do ("WOULD_DELETE", "WOULD_ARCHIVE", "DENIED",
    "NEEDS_APPROVAL"), `policy_ids` the deciding policies, `policy_message` the decision in words
    and, for WOULD_ARCHIVE, `purge_time` when the archived version would be purged; for a kept
    version they are None or empty. `action` and `clause` are None for a value this client does
    not know.
    """

    version: str
    revision: str
    status: PackageVersionStatus | None
    action: CleanupAction | None
    clause: CleanupClause | None
    reason: str
    prerelease: bool
    publish_time: datetime | None
    policy_outcome: str | None
    policy_ids: tuple[str, ...]
    policy_message: str | None
    purge_time: datetime | None
    raw: gov_pb2.VersionCleanupPlan = field(repr=False)

    @classmethod
    def from_proto(cls, version: gov_pb2.VersionCleanupPlan) -> VersionCleanupPlan:
        """Build a version's decision from its proto."""
        return cls(
            version=version.version,
            revision=version.revision,
            status=PackageVersionStatus.from_proto(version.status),
            action=CleanupAction.from_proto(version.action),
            clause=CleanupClause.from_proto(version.clause),
            reason=version.reason,
            prerelease=version.prerelease,
            publish_time=_time(version.publish_time, version.HasField("publish_time")),
            policy_outcome=_outcome(version.policy_outcome),
            policy_ids=tuple(version.policy_ids),
            policy_message=version.policy_message or None,
            purge_time=_time(version.purge_time, version.HasField("purge_time")),
            raw=version,
        )

    @property
    def delete(self) -> bool:
        """True when the plan deletes the version (whatever policy will say)."""
        return self.action is CleanupAction.DELETE


@dataclass(frozen=True)
class PackageCleanupPlan:
    """One package's part of a plan: every version, newest first by the rule's order.

    `latest_version` is the package's latest version when planned (None when it had none);
    `error` says why the package could not be planned (None when it was; then none of its
    versions is deleted). `namespace` is None when the package has none; `format` is None for
    a value this client does not know.
    """

    format: PackageFormat | None
    namespace: str | None
    package: str
    latest_version: str | None
    versions: tuple[VersionCleanupPlan, ...]
    error: str | None
    raw: gov_pb2.PackageCleanupPlan = field(repr=False)

    @classmethod
    def from_proto(cls, package: gov_pb2.PackageCleanupPlan) -> PackageCleanupPlan:
        """Build a package's plan from its proto."""
        return cls(
            format=PackageFormat.from_proto(package.format),
            namespace=package.namespace or None,
            package=package.package,
            latest_version=package.latest_version or None,
            versions=tuple(VersionCleanupPlan.from_proto(v) for v in package.versions),
            error=package.error or None,
            raw=package,
        )

    @property
    def deletions(self) -> tuple[VersionCleanupPlan, ...]:
        """The versions the plan deletes, in plan order."""
        return tuple(version for version in self.versions if version.delete)

    @property
    def continues(self) -> bool:
        """Whether this part continues a package begun on the previous page (a package too
        large for one page is split between pages)."""
        return self.raw.version_offset > 0

    def joined(self, rest: PackageCleanupPlan) -> PackageCleanupPlan:
        """This package with `rest`, its continuation on the next page, appended."""
        merged = gov_pb2.PackageCleanupPlan()
        merged.CopyFrom(self.raw)
        merged.versions.extend(rest.raw.versions)
        return PackageCleanupPlan.from_proto(merged)


@dataclass(frozen=True)
class CleanupPlan:
    """A plan's header: what a cleanup would do, as the gateway keeps it; `raw` is the proto.

    Only `requester` may apply it (by `plan_id`, before `expire_time`); `plan_hash` is the
    SHA-256 of its canonical JSON, which `PkggovClient.apply_cleanup` may require. The counts
    cover the whole plan (every page): `delete_count` versions the rule deletes, of which policy
    allows `allowed_count` (to delete or archive), denies `denied_count` and lets
    `needs_approval_count` run only once approved. `clause_counts` maps each clause's name
    ("KEEP_NEWEST", "SELECTED", ...) to how many versions it decided, in the order clauses
    decide; `warnings` is what to look at before applying. Text fields the gateway left empty
    (`domain_owner`, `rule_name` for an inline rule, `justification`, `audit_event_id`) are
    None.
    """

    plan_id: str
    plan_hash: str
    requester: str
    create_time: datetime | None
    expire_time: datetime | None
    domain: str
    domain_owner: str | None
    repository: str
    rule_name: str | None
    rule: CleanupRule
    justification: str | None
    purge_now: bool
    package_count: int
    version_count: int
    delete_count: int
    keep_count: int
    allowed_count: int
    denied_count: int
    needs_approval_count: int
    clause_counts: Mapping[str, int]
    warnings: tuple[str, ...]
    upstream_calls: int
    audit_event_id: str | None
    raw: gov_pb2.CleanupPlan = field(repr=False)

    @classmethod
    def from_proto(cls, plan: gov_pb2.CleanupPlan) -> CleanupPlan:
        """Build a plan's header from its proto."""
        by_name = {
            name.removeprefix("CLEANUP_CLAUSE_"): count
            for name, count in plan.clause_counts.items()
        }
        counts = {name: by_name[name] for name in ordered_keys(by_name, CleanupClause.__members__)}
        return cls(
            plan_id=plan.plan_id,
            plan_hash=plan.plan_hash,
            requester=plan.requester,
            create_time=_time(plan.create_time, plan.HasField("create_time")),
            expire_time=_time(plan.expire_time, plan.HasField("expire_time")),
            domain=plan.domain,
            domain_owner=plan.domain_owner or None,
            repository=plan.repository,
            rule_name=plan.rule_name or None,
            rule=CleanupRule.from_proto(plan.rule),
            justification=plan.justification or None,
            purge_now=plan.purge_now,
            package_count=plan.package_count,
            version_count=plan.version_count,
            delete_count=plan.delete_count,
            keep_count=plan.keep_count,
            allowed_count=plan.allowed_count,
            denied_count=plan.denied_count,
            needs_approval_count=plan.needs_approval_count,
            clause_counts=MappingProxyType(counts),
            warnings=tuple(plan.warnings),
            upstream_calls=plan.upstream_calls,
            audit_event_id=plan.audit_event_id or None,
            raw=plan,
        )


@dataclass(frozen=True)
class CleanupPlanPage:
    """A plan and one page of its packages, in plan order (PlanCleanup's first page, or
    GetCleanupPlan's); `raw` is the response proto.

    `next_page_token` is None on the last page; pass it to `PkggovClient.get_cleanup_plan` as
    `page_token` for the next one.
    """

    plan: CleanupPlan
    packages: tuple[PackageCleanupPlan, ...]
    next_page_token: str | None
    raw: gov_pb2.PlanCleanupResponse | gov_pb2.GetCleanupPlanResponse = field(repr=False)

    @classmethod
    def from_proto(
        cls, response: gov_pb2.PlanCleanupResponse | gov_pb2.GetCleanupPlanResponse
    ) -> CleanupPlanPage:
        """Build a page from a PlanCleanup or GetCleanupPlan response."""
        return cls(
            plan=CleanupPlan.from_proto(response.plan),
            packages=tuple(PackageCleanupPlan.from_proto(p) for p in response.packages),
            next_page_token=response.next_page_token or None,
            raw=response,
        )


@dataclass(frozen=True)
class CleanupJob:
    """A plan being applied; `raw` is the proto.

    The counts: `packages_done` of the plan's `packages_total`; of the `versions_planned`
    deletions, how many were deleted, archived under a
    recovery window, not done because the version changed since planned (plan changed),
    denied by policy, left awaiting approval in a deletion request, or failed. `last_error`
    is the last error that stopped a package (retried) or the job; `cancel_reason` says why
    and by whom it was cancelled. Empty text fields are None; `state` is None for a value
    this client does not know.
    """

    job_id: str
    plan_id: str
    plan_hash: str
    requester: str
    state: CleanupJobState | None
    create_time: datetime | None
    update_time: datetime | None
    packages_total: int
    packages_done: int
    versions_planned: int
    versions_deleted: int
    versions_archived: int
    versions_plan_changed: int
    versions_denied: int
    versions_awaiting_approval: int
    versions_failed: int
    last_error: str | None
    audit_event_id: str | None
    cancel_reason: str | None
    raw: gov_pb2.CleanupJob = field(repr=False)

    @classmethod
    def from_proto(cls, job: gov_pb2.CleanupJob) -> CleanupJob:
        """Build a job from its proto."""
        return cls(
            job_id=job.job_id,
            plan_id=job.plan_id,
            plan_hash=job.plan_hash,
            requester=job.requester,
            state=CleanupJobState.from_proto(job.state),
            create_time=_time(job.create_time, job.HasField("create_time")),
            update_time=_time(job.update_time, job.HasField("update_time")),
            packages_total=job.packages_total,
            packages_done=job.packages_done,
            versions_planned=job.versions_planned,
            versions_deleted=job.versions_deleted,
            versions_archived=job.versions_archived,
            versions_plan_changed=job.versions_plan_changed,
            versions_denied=job.versions_denied,
            versions_awaiting_approval=job.versions_awaiting_approval,
            versions_failed=job.versions_failed,
            last_error=job.last_error or None,
            audit_event_id=job.audit_event_id or None,
            cancel_reason=job.cancel_reason or None,
            raw=job,
        )

    @property
    def finished(self) -> bool:
        """True once the job has ended (succeeded, cancelled or failed)."""
        return self.state is not None and self.state.final

    @property
    def versions_not_done(self) -> int:
        """Planned deletions that were not done: plan changed, denied, awaiting approval or
        failed (those of a cancelled job's packages not started are not counted)."""
        return (
            self.versions_plan_changed
            + self.versions_denied
            + self.versions_awaiting_approval
            + self.versions_failed
        )

    @property
    def all_done(self) -> bool:
        """True when the job succeeded and did every planned deletion (deleted or archived)."""
        return self.state is CleanupJobState.SUCCEEDED and self.versions_not_done == 0


@dataclass(frozen=True)
class VersionCleanupResult:
    """One planned deletion's result: what happened (`result`, None for a value this client
    does not know), why in words, and for ARCHIVED when the version will be purged."""

    version: str
    result: CleanupResult | None
    message: str
    purge_time: datetime | None

    @classmethod
    def from_proto(cls, version: gov_pb2.VersionCleanupResult) -> VersionCleanupResult:
        """Build a version's result from its proto."""
        return cls(
            version=version.version,
            result=CleanupResult.from_proto(version.result),
            message=version.message,
            purge_time=_time(version.purge_time, version.HasField("purge_time")),
        )


@dataclass(frozen=True)
class PackageCleanupResult:
    """One package's part of a job: each planned deletion's result, the audit events of the
    package's DeletePackageVersions calls and the deletion request recorded for the versions
    that need approval (None when none)."""

    format: PackageFormat | None
    namespace: str | None
    package: str
    versions: tuple[VersionCleanupResult, ...]
    audit_event_ids: tuple[str, ...]
    deletion_request_id: str | None
    raw: gov_pb2.PackageCleanupResult = field(repr=False)

    @classmethod
    def from_proto(cls, package: gov_pb2.PackageCleanupResult) -> PackageCleanupResult:
        """Build a package's results from its proto."""
        return cls(
            format=PackageFormat.from_proto(package.format),
            namespace=package.namespace or None,
            package=package.package,
            versions=tuple(VersionCleanupResult.from_proto(v) for v in package.versions),
            audit_event_ids=tuple(package.audit_event_ids),
            deletion_request_id=package.deletion_request_id or None,
            raw=package,
        )

    @property
    def continues(self) -> bool:
        """Whether this part continues a package begun on the previous page."""
        return self.raw.version_offset > 0

    def joined(self, rest: PackageCleanupResult) -> PackageCleanupResult:
        """This package with `rest`, its continuation on the next page, appended."""
        merged = gov_pb2.PackageCleanupResult()
        merged.CopyFrom(self.raw)
        merged.versions.extend(rest.raw.versions)
        return PackageCleanupResult.from_proto(merged)


@dataclass(frozen=True)
class CleanupJobPage:
    """A job and, when results were asked for, one page of its per-package results in plan
    order; `raw` is the response proto. `next_page_token` is None on the last page; pass it to
    `PkggovClient.get_cleanup_job` as `page_token` for the next one."""

    job: CleanupJob
    results: tuple[PackageCleanupResult, ...]
    next_page_token: str | None
    raw: gov_pb2.GetCleanupJobResponse = field(repr=False)

    @classmethod
    def from_proto(cls, response: gov_pb2.GetCleanupJobResponse) -> CleanupJobPage:
        """Build a page from a GetCleanupJob response."""
        return cls(
            job=CleanupJob.from_proto(response.job),
            results=tuple(PackageCleanupResult.from_proto(r) for r in response.results),
            next_page_token=response.next_page_token or None,
            raw=response,
        )
