"""The pkggov.v1.CleanupService servicer: proto in, CleanupDesk, proto out.

Errors are mapped by the edge (api.status); the desk enforces the rules
(service.cleanup_plans), the domain validates (domain.validation.validate_plan_request).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.convert import (
    FORMAT_NUMBERS,
    FORMATS,
    PLAN_OUTCOMES,
    STATUS_NUMBERS,
    STATUSES,
    stamp,
)
from pkggov_gateway.api.interceptors import governed_call
from pkggov_gateway.api.servicer import (
    DEFAULT_PAGE,
    MAX_PAGE,
    MAX_PAGE_BYTES,
    caller_deadline,
    check_request_id,
    checked_id,
    id_violations,
)
from pkggov_gateway.domain.cleanup import (
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    JobState,
    PackagePlan,
    PackageResult,
)
from pkggov_gateway.domain.deadline import DrainSignal
from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.page_token import PageTokens
from pkggov_gateway.domain.retention import (
    COUNT_FIELDS,
    Clause,
    Order,
    PrereleaseScope,
    RetentionRule,
)
from pkggov_gateway.domain.validation import (
    RawPlanRequest,
    UnknownEnumValue,
    validate_plan_request,
)
from pkggov_gateway.service.approvals import reason_violations
from pkggov_gateway.service.cleanup_plans import CleanupDesk

__all__ = ["CleanupServicer", "to_cleanup_job", "to_cleanup_rule"]

_ORDERS = {pb.CLEANUP_ORDER_VERSION: Order.VERSION, pb.CLEANUP_ORDER_PUBLISHED: Order.PUBLISHED}
_ORDER_NUMBERS = {order: number for number, order in _ORDERS.items()}
_SCOPES = {
    pb.PRERELEASE_SCOPE_ANY: PrereleaseScope.ANY,
    pb.PRERELEASE_SCOPE_ONLY: PrereleaseScope.ONLY,
    pb.PRERELEASE_SCOPE_EXCLUDE: PrereleaseScope.EXCLUDE,
}
_SCOPE_NUMBERS = {scope: number for number, scope in _SCOPES.items()}
_CLAUSE_NUMBERS = {clause: pb.CleanupClause.Value(f"CLEANUP_CLAUSE_{clause}") for clause in Clause}
_JOB_STATES = {
    state: pb.CleanupJobState.Value(f"CLEANUP_JOB_STATE_{state.name}") for state in JobState
}
_RESULTS = {
    result: pb.CleanupResult.Value(f"CLEANUP_RESULT_{result.name}") for result in CleanupResult
}
_HASH = re.compile(r"[0-9a-fA-F]{64}")


class CleanupServicer(pb_grpc.CleanupServiceServicer):
    """Serves pkggov.v1.CleanupService."""

    def __init__(
        self,
        desk: CleanupDesk,
        page_token_key: bytes,
        *,
        default_deadline: float,
        max_deadline: float,
        drain: DrainSignal,
    ) -> None:
        self._desk = desk
        self._tokens = PageTokens(page_token_key)
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline
        self._drain = drain

    def PlanCleanup(  # noqa: N802 - the generated method name
        self, request: pb.PlanCleanupRequest, context: grpc.ServicerContext
    ) -> pb.PlanCleanupResponse:
        """Plan, store, return the first page."""
        principal, call = governed_call(context)
        _check_page_size(request.page_size)
        planned = validate_plan_request(_raw_plan(request))
        deadline = caller_deadline(context, self._default_deadline, self._max_deadline, self._drain)
        plan, packages = self._desk.plan(principal, planned, deadline, call)
        page, token = self._page(plan, list(enumerate(packages)), request.page_size, 0)
        return pb.PlanCleanupResponse(
            plan=to_cleanup_plan(plan), packages=page, next_page_token=token
        )

    def GetCleanupPlan(  # noqa: N802 - the generated method name
        self, request: pb.GetCleanupPlanRequest, context: grpc.ServicerContext
    ) -> pb.GetCleanupPlanResponse:
        """The plan and one page of its packages."""
        principal, _ = governed_call(context)
        plan_id = _uuid("plan_id", request.plan_id)
        _check_page_size(request.page_size)
        seq, offset = -1, 0
        if request.page_token:
            cursor = self._tokens.read_after(request.page_token, f"plan:{plan_id}")
            seq, offset = _cursor(cursor)
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        after = seq - 1 if seq >= 0 else -1
        plan, found = self._desk.get_plan(principal, plan_id, after=after, limit=limit)
        page, token = self._page(plan, found, request.page_size, offset)
        return pb.GetCleanupPlanResponse(
            plan=to_cleanup_plan(plan), packages=page, next_page_token=token
        )

    def ApplyCleanup(  # noqa: N802 - the generated method name
        self, request: pb.ApplyCleanupRequest, context: grpc.ServicerContext
    ) -> pb.ApplyCleanupResponse:
        """Start the job (a retry with the same request_id gets the same job)."""
        principal, call = governed_call(context)
        violations = _uuid_violations("plan_id", request.plan_id)
        if request.plan_hash and _HASH.fullmatch(request.plan_hash) is None:
            violations.append(
                FieldViolation("plan_hash", "must be a SHA-256 in hex (64 characters), or empty")
            )
        if violations:
            raise InvalidRequestError(violations)
        if request.request_id:
            check_request_id(request.request_id)
            recorded = call.replayed()
            if recorded is not None:
                return json_format.ParseDict(dict(recorded), pb.ApplyCleanupResponse())
        job = self._desk.apply(principal, request.plan_id.lower(), request.plan_hash, call)
        return pb.ApplyCleanupResponse(job=to_cleanup_job(job))

    def GetCleanupJob(  # noqa: N802 - the generated method name
        self, request: pb.GetCleanupJobRequest, context: grpc.ServicerContext
    ) -> pb.GetCleanupJobResponse:
        """The job and, if asked, one page of its results."""
        principal, _ = governed_call(context)
        job_id = _uuid("job_id", request.job_id)
        _check_page_size(request.page_size)
        seq, offset = -1, 0
        if request.page_token:
            seq, offset = _cursor(self._tokens.read_after(request.page_token, f"job:{job_id}"))
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE) if request.include_results else 0
        after = seq - 1 if seq >= 0 else -1
        job, results = self._desk.get_job(principal, job_id, after=after, limit=limit)
        page, cursor = _fill([(r.seq, r) for r in results], limit, offset, _to_package_result)
        response = pb.GetCleanupJobResponse(job=to_cleanup_job(job), results=page)
        if cursor is None and results and len(results) == limit:
            cursor = (results[-1].seq + 1, 0)
        if cursor is not None:
            response.next_page_token = self._tokens.issue_after(
                (str(cursor[0]), str(cursor[1])), f"job:{job_id}"
            )
        return response

    def CancelCleanupJob(  # noqa: N802 - the generated method name
        self, request: pb.CancelCleanupJobRequest, context: grpc.ServicerContext
    ) -> pb.CancelCleanupJobResponse:
        """Cancel (the requester only)."""
        principal, call = governed_call(context)
        violations = _uuid_violations("job_id", request.job_id)
        violations += reason_violations(request.reason, required=False)
        if violations:
            raise InvalidRequestError(violations)
        job = self._desk.cancel(principal, request.job_id.lower(), request.reason, call)
        return pb.CancelCleanupJobResponse(job=to_cleanup_job(job))

    def _page(
        self,
        plan: CleanupPlan,
        found: Sequence[tuple[int, PackagePlan]],
        page_size: int,
        offset: int,
    ) -> tuple[list[pb.PackageCleanupPlan], str]:
        """At most page_size packages and MAX_PAGE_BYTES, starting at version `offset` of the
        first, and the next token (see `_fill`)."""
        limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        page, cursor = _fill(found, limit, offset, to_package_plan)
        if cursor is not None:
            return page, self._next(plan, *cursor)
        last = found[:limit][-1][0] if found else plan.package_count
        if page and last + 1 < plan.package_count:
            return page, self._next(plan, last + 1, 0)
        return page, ""

    def _next(self, plan: CleanupPlan, seq: int, offset: int) -> str:
        return self._tokens.issue_after((str(seq), str(offset)), f"plan:{plan.plan_id}")


def _cursor(cursor: tuple[str, str]) -> tuple[int, int]:
    """A plan page token's (package seq, version offset)."""
    try:
        seq, offset = int(cursor[0]), int(cursor[1])
    except ValueError:
        seq = offset = -1
    if seq < 0 or offset < 0:
        raise InvalidRequestError(
            [FieldViolation("page_token", "is not a page token of this plan")]
        )
    return seq, offset


_T = TypeVar("_T")
_M = TypeVar("_M", pb.PackageCleanupPlan, pb.PackageCleanupResult)
_VERSION_FRAME = 4
"""A repeated field's tag and length bytes, beside each version's own (an upper bound)."""


def _fill(
    found: Sequence[tuple[int, _T]],
    limit: int,
    offset: int,
    build: Callable[[_T, int, int], tuple[_M, bool]],
) -> tuple[list[_M], tuple[int, int] | None]:
    """A page of at most `limit` packages and MAX_PAGE_BYTES, the first from its version
    `offset`, each built by `build(item, offset, budget)` (which stops adding versions past
    the budget and says whether it added them all), and where the next page starts when this
    one was cut (None: after the last package shown). A package too large for what is left of
    a page starts the next page; one too large for a page of its own is split between pages,
    its parts carrying their `version_offset`. Only what is sent is built."""
    page: list[_M] = []
    size = 0
    for index, (seq, item) in enumerate(found[:limit]):
        start = offset if index == 0 else 0
        message, whole = build(item, start, MAX_PAGE_BYTES - size)
        if whole:
            page.append(message)
            size += message.ByteSize()
            continue
        if page:
            return page, (seq, 0)
        page.append(message)
        return page, (seq, start + len(message.versions))
    return page, None


_WHAT = {"plan_id": "a cleanup plan id", "job_id": "a cleanup job id"}


def _uuid_violations(field: str, text: str) -> list[FieldViolation]:
    return id_violations(field, text, _WHAT[field])


def _uuid(field: str, text: str) -> str:
    return checked_id(field, text, _WHAT[field])


def _check_page_size(page_size: int) -> None:
    if page_size < 0:
        raise InvalidRequestError([FieldViolation("page_size", "must not be negative")])


def _enum(number: int, table: dict[int, Any]) -> Any:
    if number == 0:
        return None
    return table.get(number, UnknownEnumValue(number))


def _raw_plan(request: pb.PlanCleanupRequest) -> RawPlanRequest:
    return RawPlanRequest(
        domain=request.domain,
        repository=request.repository,
        format=_enum(request.format, FORMATS),
        namespace=request.namespace,
        package=request.package,
        package_pattern=request.package_pattern,
        domain_owner=request.domain_owner,
        rule_name=request.rule_name,
        rule=_rule_fields(request.rule) if request.HasField("rule") else None,
        justification=request.justification,
        purge_now=request.purge_now,
    )


def _rule_fields(rule: pb.CleanupRule) -> dict[str, Any]:
    """The proto rule as the mapping domain.retention.rule_from_mapping checks; an enum value
    the proto does not define becomes a string that names it (and fails there)."""
    fields: dict[str, Any] = {}
    if rule.order:
        order = _ORDERS.get(rule.order)
        fields["order"] = order.value if order else f"<enum {rule.order}>"
    if rule.prerelease:
        scope = _SCOPES.get(rule.prerelease)
        fields["prerelease"] = scope.value if scope else f"<enum {rule.prerelease}>"
    for name in COUNT_FIELDS:
        if rule.HasField(name):  # type: ignore[arg-type]  # one of COUNT_FIELDS, all optional
            fields[name] = getattr(rule, name)
    if rule.statuses:
        fields["statuses"] = [
            status.value if (status := STATUSES.get(n)) else f"<enum {n}>" for n in rule.statuses
        ]
    for name in ("include", "exclude"):
        if getattr(rule, name):
            fields[name] = list(getattr(rule, name))
    for name in ("include_regex", "exclude_regex"):
        if getattr(rule, name):
            fields[name] = getattr(rule, name)
    return fields


def to_cleanup_rule(rule: RetentionRule) -> pb.CleanupRule:
    """A rule as the proto message."""
    message = pb.CleanupRule(
        order=_ORDER_NUMBERS[rule.order],
        statuses=[STATUS_NUMBERS[s] for s in rule.statuses],  # type: ignore[misc]
        include=list(rule.include),
        exclude=list(rule.exclude),
        include_regex=rule.include_regex,
        exclude_regex=rule.exclude_regex,
        prerelease=_SCOPE_NUMBERS[rule.prerelease],
    )
    for name in COUNT_FIELDS:
        value = getattr(rule, name)
        if value is not None:
            setattr(message, name, value)
    return message


def to_cleanup_plan(plan: CleanupPlan) -> pb.CleanupPlan:
    """A plan's header as the proto message."""
    scope = plan.scope
    totals = plan.totals
    return pb.CleanupPlan(
        plan_id=plan.plan_id,
        plan_hash=plan.plan_hash,
        requester=plan.requester_id,
        create_time=stamp(plan.created_at),
        expire_time=stamp(plan.expires_at),
        domain=scope.domain,
        domain_owner=scope.domain_owner or "",
        repository=scope.repository,
        rule_name=plan.rule_name,
        rule=to_cleanup_rule(plan.rule),
        justification=plan.justification,
        purge_now=plan.purge_now,
        package_count=plan.package_count,
        version_count=totals.get("version_count", 0),
        delete_count=totals.get("delete_count", 0),
        keep_count=totals.get("keep_count", 0),
        allowed_count=totals.get("allowed_count", 0),
        denied_count=totals.get("denied_count", 0),
        needs_approval_count=totals.get("needs_approval_count", 0),
        clause_counts={f"CLEANUP_CLAUSE_{k}": v for k, v in plan.clause_counts.items()},
        warnings=list(plan.warnings),
        upstream_calls=plan.upstream_calls,
        audit_event_id=plan.event_id,
    )


def to_package_plan(
    plan: PackagePlan, offset: int = 0, budget: int | None = None
) -> tuple[pb.PackageCleanupPlan, bool]:
    """One package's plan as the proto message, from its version `offset` on, with as many
    versions as fit in `budget` bytes (at least one; None: all); and whether it has all."""
    package = plan.package
    message = pb.PackageCleanupPlan(
        format=FORMAT_NUMBERS[package.format],  # type: ignore[arg-type]
        namespace=package.namespace or "",
        package=package.package,
        latest_version=plan.latest or "",
        error=plan.error,
        version_offset=offset,
    )
    size = message.ByteSize()
    for entry in plan.entries[offset:]:
        version = pb.VersionCleanupPlan(
            version=entry.version,
            revision=entry.revision,
            status=STATUS_NUMBERS.get(entry.status, 0),  # type: ignore[arg-type]
            action=pb.CLEANUP_ACTION_DELETE if entry.delete else pb.CLEANUP_ACTION_KEEP,
            clause=_CLAUSE_NUMBERS[entry.clause],
            reason=entry.reason,
            prerelease=entry.prerelease,
            policy_ids=list(entry.policy_ids),
            policy_message=entry.policy_message,
        )
        if entry.published_at is not None:
            version.publish_time.CopyFrom(stamp(entry.published_at))
        if entry.policy is not None:
            version.policy_outcome = PLAN_OUTCOMES[entry.policy]  # type: ignore[assignment]
        if entry.purge_at is not None:
            version.purge_time.CopyFrom(stamp(entry.purge_at))
        size += version.ByteSize() + _VERSION_FRAME
        if budget is not None and size > budget and message.versions:
            return message, False
        message.versions.append(version)
    return message, True


def to_cleanup_job(job: CleanupJob) -> pb.CleanupJob:
    """A job as the proto message."""
    counts = job.counts
    return pb.CleanupJob(
        job_id=job.job_id,
        plan_id=job.plan_id,
        plan_hash=job.plan_hash,
        requester=job.requester_id,
        state=_JOB_STATES[job.state],
        create_time=stamp(job.created_at),
        update_time=stamp(job.updated_at),
        packages_total=job.packages_total,
        packages_done=job.packages_done,
        versions_planned=job.versions_planned,
        versions_deleted=counts.get(CleanupResult.DELETED.value, 0),
        versions_archived=counts.get(CleanupResult.ARCHIVED.value, 0),
        versions_plan_changed=counts.get(CleanupResult.PLAN_CHANGED.value, 0),
        versions_denied=counts.get(CleanupResult.DENIED.value, 0),
        versions_awaiting_approval=counts.get(CleanupResult.AWAITING_APPROVAL.value, 0),
        versions_failed=counts.get(CleanupResult.FAILED.value, 0),
        last_error=job.last_error,
        audit_event_id=job.event_id,
        cancel_reason=job.cancel_reason,
    )


def _to_package_result(
    result: PackageResult, offset: int, budget: int
) -> tuple[pb.PackageCleanupResult, bool]:
    """One package's results from its version `offset` on, as many as fit in `budget` bytes
    (at least one), and whether they all did."""
    package = result.package
    message = pb.PackageCleanupResult(
        format=FORMAT_NUMBERS[package.format],  # type: ignore[arg-type]
        namespace=package.namespace or "",
        package=package.package,
        audit_event_ids=list(result.audit_event_ids),
        deletion_request_id=result.deletion_request_id,
        version_offset=offset,
    )
    size = message.ByteSize()
    for item in result.versions[offset:]:
        version = pb.VersionCleanupResult(
            version=item.version,
            result=_RESULTS[item.result],
            message=item.message,
        )
        if item.purge_at is not None:
            version.purge_time.CopyFrom(stamp(item.purge_at))
        size += version.ByteSize() + _VERSION_FRAME
        if size > budget and message.versions:
            return message, False
        message.versions.append(version)
    return message, True
