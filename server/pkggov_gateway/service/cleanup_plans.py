"""The cleanup desk: PlanCleanup, GetCleanupPlan, ApplyCleanup, GetCleanupJob, CancelCleanupJob.

Planning reads CodeArtifact through the gateway's own port (its credentials, rate limits and
retries), one package at a time: its versions in publication order (one ListPackageVersions
per 1,000 versions), the publication times an age clause needs (a binary search, see
domain.retention), then the rule's decision for every version (domain.retention.evaluate) and,
for the versions it deletes, the policy's, made by the delete use case's own decision step on
the state just read (`DeletePackageVersions.plan_on`): the plan IS the dry run, no second
code path decides. The plan is stored whole, and its hash goes into the call's audit outcome.

Applying creates a job (domain.cleanup) that a replica's job runner (service.cleanup_jobs)
runs. Only the plan's requester applies it, before it expires, and only while the stored plan
still matches the hash its PlanCleanup call recorded.
"""

from __future__ import annotations

import fnmatch
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pkggov_gateway.domain.cleanup import (
    FINISHED,
    PLAN_ALLOWED,
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    CleanupScope,
    JobState,
    PackagePlan,
    PackageResult,
    PlannedEntry,
    PlanRequest,
    VersionResult,
    plan_hash,
    principal_json,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    CleanupJobFinishedError,
    CleanupJobNotFoundError,
    CleanupNotRequesterError,
    CleanupPlanExpiredError,
    CleanupPlanHashMismatchError,
    CleanupPlanNotFoundError,
    CleanupPlanTamperedError,
    CleanupRuleNotApplicableError,
    CleanupTooLargeError,
    DeniedVersion,
    PolicyDeniedError,
    UnknownCleanupRuleError,
    UpstreamNotFoundError,
    plan_limit,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteRequest,
    PackageFormat,
    PackageRef,
    PackageState,
    PlanOutcome,
)
from pkggov_gateway.domain.retention import (
    OUT_OF_SCOPE,
    Clause,
    Order,
    PackageVersions,
    RetentionRule,
    evaluate,
)
from pkggov_gateway.domain.version_order import has_version_order
from pkggov_gateway.ports import (
    AuditStore,
    CleanupStore,
    CodeArtifactPort,
    PolicyEngine,
    PolicyView,
)
from pkggov_gateway.service.delete_versions import DeletePackageVersions

__all__ = ["CleanupDesk", "CleanupLimits", "NamedRule", "recorded_plan_hash"]

_LIST_PAGE = 1000
"""Versions (and packages) per CodeArtifact list call, as the adapter asks for them."""


class Journal(Protocol):
    """The call's record, as the desk uses it (service.governed_call.GovernedCall)."""

    @property
    def event_id(self) -> str:
        """The call's audit event id."""
        ...

    def record(self, **facts: Any) -> None:
        """Facts the call's outcome records."""
        ...


@dataclass(frozen=True, slots=True)
class NamedRule:
    """A rule from the configuration, for the repositories its globs match."""

    name: str
    repositories: tuple[str, ...]
    """``DOMAIN/REPOSITORY`` globs (``REPOSITORY`` alone: any domain)."""
    rule: RetentionRule

    def applies_to(self, domain: str, repository: str) -> bool:
        """Whether the rule is for `domain`/`repository`."""
        for pattern in self.repositories:
            dom, _, repo = pattern.rpartition("/")
            if fnmatch.fnmatchcase(domain, dom or "*") and fnmatch.fnmatchcase(repository, repo):
                return True
        return False


@dataclass(frozen=True, slots=True)
class CleanupLimits:
    """How big a plan may be and how long it lives."""

    plan_ttl_seconds: float = 86_400.0
    max_packages: int = 1_000
    max_versions: int = 200_000
    max_open_plans: int = 20
    """Unexpired plans one principal may have (each is stored until pruned)."""


class _Counted:
    """The CodeArtifact port, counting the calls a plan makes."""

    def __init__(self, upstream: CodeArtifactPort) -> None:
        self.upstream = upstream
        self.calls = 0

    def packages(self, scope: CleanupScope, deadline: Deadline) -> list[PackageRef]:
        pattern = scope.package_pattern or ""
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]  # what every match starts with
        found = self.upstream.list_packages(
            scope.domain,
            scope.repository,
            deadline,
            domain_owner=scope.domain_owner,
            format=scope.format,
            namespace=scope.namespace,
            prefix=prefix or None,
        )
        self.calls += max(1, math.ceil(len(found) / _LIST_PAGE))
        return found

    def state(self, package: PackageRef, deadline: Deadline) -> PackageState:
        state = self.upstream.package_state(package, deadline, by_published=True)
        self.calls += max(1, math.ceil(len(state.statuses) / _LIST_PAGE))
        return state

    def published_at(self, package: PackageRef, deadline: Deadline) -> Callable[[str], Any]:
        def read(version: str) -> datetime | None:
            self.calls += 1
            try:
                return self.upstream.published_time(package, version, deadline)
            except UpstreamNotFoundError:
                return None  # deleted since it was listed: no age, so an age guard keeps it

        return read


class CleanupDesk:
    """Plans cleanups and starts, reads and cancels their jobs (see the module docstring)."""

    def __init__(
        self,
        upstream: CodeArtifactPort,
        delete: DeletePackageVersions,
        policy: PolicyEngine,
        store: CleanupStore,
        audit: AuditStore,
        *,
        rules: Sequence[NamedRule] = (),
        limits: CleanupLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._upstream = upstream
        self._delete = delete
        self._policy = policy
        self._store = store
        self._audit = audit
        self._rules = {rule.name: rule for rule in rules}
        self._limits = limits or CleanupLimits()
        self._clock = clock

    # --- planning -----------------------------------------------------------------------------

    def rule_for(self, request: PlanRequest) -> RetentionRule:
        """The request's rule: inline, or the named one, which must apply to the repository."""
        if request.rule is not None:
            return request.rule
        named = self._rules.get(request.rule_name)
        if named is None:
            known = ", ".join(sorted(self._rules)) or "none are configured"
            raise UnknownCleanupRuleError(
                f"no cleanup rule is named {request.rule_name!r} (configured: {known})"
            )
        scope = request.scope
        if not named.applies_to(scope.domain, scope.repository):
            raise CleanupRuleNotApplicableError(
                f"cleanup rule {named.name!r} is for {', '.join(named.repositories)}, "
                f"not {scope.domain}/{scope.repository}"
            )
        return named.rule

    def plan(
        self, principal: Principal, request: PlanRequest, deadline: Deadline, journal: Journal
    ) -> tuple[CleanupPlan, list[PackagePlan]]:
        """Plan `request` for `principal` (see the module docstring), store it, and have the
        call's outcome record its id and hash."""
        rule = self.rule_for(request)
        view = self._policy.current()  # one policy set for the whole plan
        now = self._clock()
        scope = request.scope
        allowed = view.authorize_plan(principal, scope.domain, scope.repository, now)
        if not allowed.allowed:
            reason = "; ".join(allowed.errors) or (
                f"denied by {', '.join(allowed.policy_ids)}"
                if allowed.policy_ids
                else "no policy permits PlanCleanup"
            )
            raise PolicyDeniedError(
                [DeniedVersion(f"{scope.domain}/{scope.repository}", allowed.policy_ids, reason)],
                1,
                message=f"policy does not let {principal.id} plan a cleanup of "
                f"{scope.domain}/{scope.repository}: {reason}",
            )
        most = self._limits.max_open_plans
        if self._store.open_plans(principal.id, now) >= most:  # before any work; saving checks
            raise plan_limit(principal.id, most)  # it again, atomically
        upstream = _Counted(self._upstream)
        packages = self._packages(request.scope, upstream, deadline)
        plans: list[PackagePlan] = []
        read = 0
        for package in packages:
            plans.append(
                self._plan_package(
                    principal,
                    request,
                    package,
                    rule=rule,
                    view=view,
                    upstream=upstream,
                    deadline=deadline,
                    already=read,
                )
            )
            read += len(plans[-1].entries)
        header = CleanupPlan(
            plan_id=str(uuid.uuid4()),
            requester=principal_json(principal),
            created_at=now,
            expires_at=now + timedelta(seconds=self._limits.plan_ttl_seconds),
            scope=request.scope,
            rule_name=request.rule_name,
            rule=rule,
            justification=request.justification,
            purge_now=request.purge_now,
            package_count=len(plans),
            totals=_totals(plans),
            clause_counts=dict(
                sorted(Counter(e.clause.value for p in plans for e in p.entries).items())
            ),
            warnings=tuple(_warnings(rule, plans)),
            upstream_calls=upstream.calls,
            event_id=journal.event_id,
        )
        header = replace(header, plan_hash=plan_hash(header.header_json(), _jsons(plans)))
        self._store.save_plan(header, plans, max_open=most)
        journal.record(cleanup_plan={"id": header.plan_id, "hash": header.plan_hash})
        return header, plans

    def _packages(
        self, scope: CleanupScope, upstream: _Counted, deadline: Deadline
    ) -> list[PackageRef]:
        if scope.package is not None and scope.format is not None:
            return [
                PackageRef(
                    domain=scope.domain,
                    repository=scope.repository,
                    format=scope.format,
                    package=scope.package,
                    namespace=scope.namespace,
                    domain_owner=scope.domain_owner,
                )
            ]
        found = [
            p
            for p in upstream.packages(scope, deadline)
            if scope.package_pattern is None
            or fnmatch.fnmatchcase(p.package, scope.package_pattern)
        ]
        if len(found) > self._limits.max_packages:
            raise CleanupTooLargeError(
                f"{len(found)} packages match; a plan covers at most "
                f"{self._limits.max_packages} (cleanup.max_packages): narrow it with format, "
                "namespace or package_pattern"
            )
        return found

    def _plan_package(
        self,
        principal: Principal,
        request: PlanRequest,
        package: PackageRef,
        *,
        rule: RetentionRule,
        view: PolicyView,
        upstream: _Counted,
        deadline: Deadline,
        already: int,
    ) -> PackagePlan:
        try:
            state = upstream.state(package, deadline)
        except UpstreamNotFoundError as error:
            if request.scope.package is not None:
                raise  # the one package asked for does not exist: NOT_FOUND
            return PackagePlan(package, None, (), error=f"not planned: {error.message}")
        if already + len(state.statuses) > self._limits.max_versions:  # before any more work
            raise CleanupTooLargeError(
                f"the plan would cover more than {self._limits.max_versions} versions "
                "(cleanup.max_versions): narrow it with package or package_pattern"
            )
        order = tuple(state.statuses)  # newest published first (by_published)
        published_at = upstream.published_at(package, deadline)
        decisions = evaluate(
            rule,
            PackageVersions(package.format, state.statuses, order, state.latest),
            self._clock(),
            published_at,
        )
        doomed = tuple(d.version for d in decisions if d.delete)
        if doomed and view.uses_published_time():  # the policy reads them: as its dry run does
            read = {d.version: d.published_at for d in decisions if d.published_at is not None}
            times = {v: read[v] if v in read else published_at(v) for v in doomed}
            state = replace(state, published_at={v: t for v, t in times.items() if t is not None})
        policy = (
            self._delete.plan_on(
                DeleteRequest(
                    package,
                    doomed,
                    justification=request.justification,
                    validate_only=True,
                    allow_partial=True,
                    purge_now=request.purge_now,
                ),
                principal,
                state,
                view,
            )
            if doomed
            else {}
        )
        entries = []
        for decision in decisions:
            planned = policy.get(decision.version)
            entries.append(
                PlannedEntry(
                    version=decision.version,
                    revision=state.revisions.get(decision.version, ""),
                    status=state.statuses[decision.version],
                    delete=decision.delete,
                    clause=decision.clause,
                    reason=decision.reason,
                    prerelease=decision.prerelease,
                    published_at=decision.published_at,
                    policy=planned.outcome if planned else None,
                    policy_ids=planned.policy_ids if planned else (),
                    purge_at=planned.purge_at if planned else None,
                    policy_message=planned.message if planned else "",
                )
            )
        return PackagePlan(package, state.latest, tuple(entries), order)

    # --- reading and applying -----------------------------------------------------------------

    def get_plan(
        self,
        principal: Principal,
        plan_id: str,
        *,
        after: int,
        limit: int,
    ) -> tuple[CleanupPlan, list[tuple[int, PackagePlan]]]:
        """A plan and the page of its packages after seq `after`: for its requester, or for a
        principal policy lets read the audit record."""
        plan = self._plan(plan_id)
        if plan.requester_id != principal.id and not self._reads_audit(principal):
            raise CleanupNotRequesterError(
                f"cleanup plan {plan_id} is {plan.requester_id}'s; reading another's plan "
                "needs permission to read the audit record",
                plan_id=plan_id,
            )
        return plan, self._store.plan_packages(plan_id, after, limit)

    def apply(
        self, principal: Principal, plan_id: str, reviewed_hash: str, journal: Journal
    ) -> CleanupJob:
        """Start a job that runs the plan (its requester only, before it expires, while the
        stored plan matches its recorded hash)."""
        plan = self._plan(plan_id)
        if plan.requester_id != principal.id:
            raise CleanupNotRequesterError(
                f"only {plan.requester_id}, who made cleanup plan {plan_id}, may apply it: the "
                "policy decisions in it are theirs",
                plan_id=plan_id,
            )
        now = self._clock()
        if now >= plan.expires_at:
            raise CleanupPlanExpiredError(
                f"cleanup plan {plan_id} expired at {plan.expires_at.isoformat()}; plan again",
                plan_id=plan_id,
            )
        if reviewed_hash and reviewed_hash.lower() != plan.plan_hash:
            raise CleanupPlanHashMismatchError(
                f"cleanup plan {plan_id} has hash {plan.plan_hash}, not the {reviewed_hash} "
                "reviewed",
                plan_id=plan_id,
            )
        packages = self.verified_packages(plan)
        for earlier in self._store.plan_jobs(plan_id):
            # One run of a plan: a job running it or that ran it is the answer (a cancelled or
            # failed one may be applied again: what it deleted is PLAN_CHANGED now).
            if earlier.state not in (JobState.CANCELLED, JobState.FAILED):
                journal.record(cleanup_job={"id": earlier.job_id, "existing": True})
                return earlier
        job = CleanupJob(
            job_id=str(uuid.uuid4()),
            plan_id=plan_id,
            plan_hash=plan.plan_hash,
            requester=principal_json(principal),  # as it applies: its identity, its peer
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
            event_id=journal.event_id,
            packages_total=len(packages),
            versions_planned=int(plan.totals.get("delete_count", 0)),
        )
        self._store.create_job(job)
        journal.record(
            cleanup_job={"id": job.job_id, "plan_id": plan_id, "plan_hash": plan.plan_hash}
        )
        return job

    def verified_packages(self, plan: CleanupPlan) -> list[PackagePlan]:
        """Every package of `plan`, checked against the hash the plan's PlanCleanup call
        recorded in the audit chain (CleanupPlanTamperedError otherwise)."""
        packages = [p for _, p in self._all_packages(plan.plan_id)]
        computed = plan_hash(plan.header_json(), _jsons(packages))
        recorded = recorded_plan_hash(self._audit, plan.event_id, plan.plan_id)
        if computed != plan.plan_hash or recorded != plan.plan_hash:
            raise CleanupPlanTamperedError(
                f"cleanup plan {plan.plan_id} no longer matches the hash its PlanCleanup call "
                "recorded; it is not applied",
                plan_id=plan.plan_id,
            )
        return packages

    def _all_packages(self, plan_id: str) -> Iterator[tuple[int, PackagePlan]]:
        after = -1
        while True:
            page = self._store.plan_packages(plan_id, after, 200)
            yield from page
            if len(page) < 200:
                return
            after = page[-1][0]

    def get_job(
        self,
        principal: Principal,
        job_id: str,
        *,
        after: int,
        limit: int,
    ) -> tuple[CleanupJob, list[PackageResult]]:
        """A job and the page of its results after seq `after` (limit 0: none): the packages
        done, then those not done, each planned deletion PENDING (the job is queued or
        running), CANCELLED (it was cancelled) or FAILED (it failed first)."""
        job = self._job(job_id)
        if job.requester_id != principal.id and not self._reads_audit(principal):
            raise CleanupNotRequesterError(
                f"cleanup job {job_id} is {job.requester_id}'s; reading another's job needs "
                "permission to read the audit record",
                job_id=job_id,
            )
        results = self._store.job_results(job_id, after, limit) if limit else []
        if len(results) < limit and job.state is not JobState.SUCCEEDED:
            start = max(after, results[-1].seq if results else -1, job.next_seq - 1)
            left = self._store.plan_packages(job.plan_id, start, limit - len(results))
            results += [_not_done(job, seq, package) for seq, package in left]
        return job, results

    def cancel(
        self, principal: Principal, job_id: str, reason: str, journal: Journal
    ) -> CleanupJob:
        """Stop a job (its requester only): no package not yet started is deleted."""
        job = self._job(job_id)
        if job.requester_id != principal.id:
            raise CleanupNotRequesterError(
                f"only {job.requester_id}, who applied it, may cancel cleanup job {job_id}",
                job_id=job_id,
            )
        if job.state in FINISHED:
            raise CleanupJobFinishedError(
                f"cleanup job {job_id} has {job.state.value}: there is nothing to cancel",
                job_id=job_id,
            )
        text = f"cancelled by {principal.id}" + (f": {reason}" if reason else "")
        cancelled = self._store.cancel_job(job_id, text, self._clock())
        journal.record(cleanup_job={"id": job_id, "cancel": text})
        return cancelled or job

    def _reads_audit(self, principal: Principal) -> bool:
        return self._policy.current().authorize_read(principal, self._clock()).allowed

    def _plan(self, plan_id: str) -> CleanupPlan:
        plan = self._store.cleanup_plan(plan_id)
        if plan is None:
            raise CleanupPlanNotFoundError(f"no cleanup plan has id {plan_id}", plan_id=plan_id)
        return plan

    def _job(self, job_id: str) -> CleanupJob:
        job = self._store.cleanup_job(job_id)
        if job is None:
            raise CleanupJobNotFoundError(f"no cleanup job has id {job_id}", job_id=job_id)
        return job


_NOT_DONE = {
    JobState.QUEUED: (CleanupResult.PENDING, "not processed yet"),
    JobState.RUNNING: (CleanupResult.PENDING, "not processed yet"),
    JobState.CANCELLED: (CleanupResult.CANCELLED, "not deleted: the job was cancelled first"),
    JobState.FAILED: (CleanupResult.FAILED, "not attempted: the job failed first"),
}


def _not_done(job: CleanupJob, seq: int, package: PackagePlan) -> PackageResult:
    """A package the job has not processed: each planned deletion as the job's state says."""
    result, message = _NOT_DONE[job.state]
    return PackageResult(
        seq,
        package.package,
        tuple(VersionResult(e.version, result, message) for e in package.deletions()),
    )


def recorded_plan_hash(audit: AuditStore, event_id: str, plan_id: str) -> str | None:
    """The plan hash the PlanCleanup call `event_id` recorded for `plan_id` (None: none)."""
    event = audit.event(event_id)
    if event is None:
        return None
    for entry in event.entries:
        recorded = entry.body.get("cleanup_plan")
        if isinstance(recorded, Mapping) and recorded.get("id") == plan_id:
            value = recorded.get("hash")
            return str(value) if value else None
    return None


def _jsons(plans: Sequence[PackagePlan]) -> list[dict[str, Any]]:
    return [p.to_json() for p in plans]


def _totals(plans: Sequence[PackagePlan]) -> dict[str, int]:
    entries = [e for p in plans for e in p.entries]
    doomed = [e for e in entries if e.delete]
    return {
        "version_count": len(entries),
        "delete_count": len(doomed),
        "keep_count": len(entries) - len(doomed),
        "allowed_count": sum(e.policy in PLAN_ALLOWED for e in doomed),
        "denied_count": sum(e.policy is PlanOutcome.DENIED for e in doomed),
        "needs_approval_count": sum(e.policy is PlanOutcome.NEEDS_APPROVAL for e in doomed),
    }


def _warnings(rule: RetentionRule, plans: Sequence[PackagePlan]) -> Iterator[str]:
    """What to look at before applying."""
    if not plans:
        yield "no package matched: the plan deletes nothing"
    versions = [e.version for p in plans for e in p.entries]
    for name in ("include", "exclude"):
        for pattern in getattr(rule, name):
            if versions and not any(fnmatch.fnmatchcase(v, pattern) for v in versions):
                yield f"{name} pattern {pattern!r} matched no version"
    for plan in plans:
        name = _name(plan.package)
        if plan.error:
            yield f"{name}: {plan.error}"
        unordered = sum(e.clause is Clause.UNORDERED for e in plan.entries)
        if unordered and rule.order is Order.VERSION:
            if not has_version_order(plan.package.format):
                yield (
                    f"{name}: {plan.package.format} versions have no ordering of their own, so "
                    "every version is kept; rank them by publication (order = published)"
                )
            else:
                yield (
                    f"{name}: {unordered} version(s) the {plan.package.format} ordering cannot "
                    "place are kept"
                )
        doomed = [e for e in plan.entries if e.delete]
        in_scope = [e for e in plan.entries if e.clause not in OUT_OF_SCOPE]
        if doomed and len(doomed) >= len(in_scope) - 1 and len(doomed) > 1:
            yield f"{name}: the rule deletes {len(doomed)} of its {len(in_scope)} versions in scope"


def _name(package: PackageRef) -> str:
    namespace = f"{package.namespace}/" if package.namespace else ""
    fmt: PackageFormat = package.format
    return f"{fmt}:{namespace}{package.package}"
