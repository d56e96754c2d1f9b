"""Retention in the typed client: the cleanup models and PkggovClient's CleanupService calls.

What the methods send, what they return and how they fail, against a scripted fake
CleanupService on a port-0 server.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.message import Message

from pkggov.v1 import package_governance_pb2 as gov_pb2
from pkggov.v1 import package_governance_pb2_grpc as gov_pb2_grpc
from pkggov_client import (
    CleanupAction,
    CleanupClause,
    CleanupJob,
    CleanupJobPage,
    CleanupJobState,
    CleanupOrder,
    CleanupPlanPage,
    CleanupResult,
    CleanupRule,
    PackageFormat,
    PackageVersionStatus,
    PkggovClient,
    PkggovError,
    PrereleaseScope,
)
from pkggov_client.testing import rich_status

_PLAN_ID = "6f1c2a7e-1d4b-4c8e-9f0a-6b5d2e1c7a90"
_JOB_ID = "0b9e4c1d-2a3f-4e5d-8c7b-1a2b3c4d5e6f"
_HASH = "ab" * 32
_CREATED = datetime(2099, 1, 5, 10, 0, tzinfo=UTC)


@dataclass
class FakeCleanup(gov_pb2_grpc.CleanupServiceServicer):
    """A CleanupService that records each request (method, request, metadata, seconds left)
    and answers with the scripted response of its method, or aborts with `error`."""

    responses: dict[str, Message] = field(default_factory=dict)
    calls: list[tuple[str, Message, dict[str, str], float | None]] = field(default_factory=list)
    error: grpc.Status | None = None

    def _answer(self, method: str, request: Message, context: grpc.ServicerContext) -> Message:
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        self.calls.append((method, request, metadata, context.time_remaining()))
        if self.error is not None:
            context.abort_with_status(self.error)
        return self.responses[method]

    def PlanCleanup(  # noqa: N802 - the generated method name
        self, request: gov_pb2.PlanCleanupRequest, context: grpc.ServicerContext
    ) -> gov_pb2.PlanCleanupResponse:
        answer = self._answer("PlanCleanup", request, context)
        assert isinstance(answer, gov_pb2.PlanCleanupResponse)
        return answer

    def GetCleanupPlan(  # noqa: N802 - the generated method name
        self, request: gov_pb2.GetCleanupPlanRequest, context: grpc.ServicerContext
    ) -> gov_pb2.GetCleanupPlanResponse:
        answer = self._answer("GetCleanupPlan", request, context)
        assert isinstance(answer, gov_pb2.GetCleanupPlanResponse)
        return answer

    def ApplyCleanup(  # noqa: N802 - the generated method name
        self, request: gov_pb2.ApplyCleanupRequest, context: grpc.ServicerContext
    ) -> gov_pb2.ApplyCleanupResponse:
        answer = self._answer("ApplyCleanup", request, context)
        assert isinstance(answer, gov_pb2.ApplyCleanupResponse)
        return answer

    def GetCleanupJob(  # noqa: N802 - the generated method name
        self, request: gov_pb2.GetCleanupJobRequest, context: grpc.ServicerContext
    ) -> gov_pb2.GetCleanupJobResponse:
        answer = self._answer("GetCleanupJob", request, context)
        assert isinstance(answer, gov_pb2.GetCleanupJobResponse)
        return answer

    def CancelCleanupJob(  # noqa: N802 - the generated method name
        self, request: gov_pb2.CancelCleanupJobRequest, context: grpc.ServicerContext
    ) -> gov_pb2.CancelCleanupJobResponse:
        answer = self._answer("CancelCleanupJob", request, context)
        assert isinstance(answer, gov_pb2.CancelCleanupJobResponse)
        return answer


@pytest.fixture
def fake() -> FakeCleanup:
    return FakeCleanup()


@pytest.fixture
def target(fake: FakeCleanup) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gov_pb2_grpc.add_CleanupServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def _plan_proto() -> gov_pb2.CleanupPlan:
    plan = gov_pb2.CleanupPlan(
        plan_id=_PLAN_ID,
        plan_hash=_HASH,
        requester="ci-bot",
        domain="demo",
        repository="dev-nightly",
        rule_name="dev-prereleases",
        rule=gov_pb2.CleanupRule(
            order=gov_pb2.CLEANUP_ORDER_VERSION,
            keep_newest_prereleases=2,
            older_than_days=30,
            statuses=[gov_pb2.PACKAGE_VERSION_STATUS_UNLISTED],
            prerelease=gov_pb2.PRERELEASE_SCOPE_ONLY,
        ),
        justification="nightly retention",
        package_count=1,
        version_count=3,
        delete_count=2,
        keep_count=1,
        allowed_count=1,
        denied_count=1,
        clause_counts={"CLEANUP_CLAUSE_SELECTED": 2, "CLEANUP_CLAUSE_LATEST": 1},
        warnings=["npm:acme/web-app: careful"],
        upstream_calls=4,
        audit_event_id="ev-plan",
    )
    plan.create_time.FromDatetime(_CREATED)
    return plan


def _package_proto() -> gov_pb2.PackageCleanupPlan:
    package = gov_pb2.PackageCleanupPlan(
        format=gov_pb2.PACKAGE_FORMAT_NPM, namespace="acme", package="web-app", latest_version="3"
    )
    package.versions.add(
        version="3",
        revision="R3",
        status=gov_pb2.PACKAGE_VERSION_STATUS_PUBLISHED,
        action=gov_pb2.CLEANUP_ACTION_KEEP,
        clause=gov_pb2.CLEANUP_CLAUSE_LATEST,
        reason="the package's latest version",
    )
    deleted = package.versions.add(
        version="2-nightly.1",
        revision="R2",
        status=gov_pb2.PACKAGE_VERSION_STATUS_UNLISTED,
        action=gov_pb2.CLEANUP_ACTION_DELETE,
        clause=gov_pb2.CLEANUP_CLAUSE_SELECTED,
        reason="pre-release",
        prerelease=True,
        policy_outcome=gov_pb2.VERSION_OUTCOME_WOULD_ARCHIVE,
        policy_ids=["ci-may-delete-dev-prereleases"],
        policy_message="allowed",
    )
    deleted.publish_time.FromDatetime(_CREATED)
    deleted.purge_time.FromDatetime(_CREATED)
    return package


def _job_proto(
    state: int = gov_pb2.CLEANUP_JOB_STATE_SUCCEEDED, cancel_reason: str = "", **counts: int
) -> gov_pb2.CleanupJob:
    job = gov_pb2.CleanupJob(
        job_id=_JOB_ID,
        plan_id=_PLAN_ID,
        plan_hash=_HASH,
        requester="ci-bot",
        state=state,  # type: ignore[arg-type]
        packages_total=1,
        packages_done=1,
        versions_planned=2,
        cancel_reason=cancel_reason,
    )
    for name, count in counts.items():
        setattr(job, name, count)
    return job


# --- models ----------------------------------------------------------------------------------


def test_every_enum_names_each_proto_value_and_reads_any_case() -> None:
    """Each cleanup enum has one member per proto value (UNSPECIFIED aside), reads its value in
    any case, and reads an unknown proto value as None."""
    pairs = (
        (CleanupOrder, gov_pb2.CleanupOrder, "CLEANUP_ORDER_"),
        (PrereleaseScope, gov_pb2.PrereleaseScope, "PRERELEASE_SCOPE_"),
        (CleanupClause, gov_pb2.CleanupClause, "CLEANUP_CLAUSE_"),
        (CleanupAction, gov_pb2.CleanupAction, "CLEANUP_ACTION_"),
        (CleanupJobState, gov_pb2.CleanupJobState, "CLEANUP_JOB_STATE_"),
        (CleanupResult, gov_pb2.CleanupResult, "CLEANUP_RESULT_"),
    )
    for kind, proto, prefix in pairs:
        names = [
            n.removeprefix(prefix)
            for n in proto.DESCRIPTOR.values_by_name
            if n != f"{prefix}UNSPECIFIED"
        ]
        assert names == [member.name for member in kind], kind
        for member in kind:
            assert member is kind.from_proto(proto.Value(prefix + member.name))
            assert member is kind(member.value.upper())
        assert None is kind.from_proto(0)
        assert None is kind.from_proto(99)
    assert [s.value for s in CleanupJobState if s.final] == ["succeeded", "cancelled", "failed"]


def test_a_rule_takes_spellings_and_round_trips_through_its_proto() -> None:
    """An inline rule reads enum spellings in any case, keeps unset counts unset in the proto,
    and comes back equal from it."""
    rule = CleanupRule(
        order="Published",  # type: ignore[arg-type]
        keep_newest=0,
        older_than_days=30,
        statuses=["unlisted", PackageVersionStatus.ARCHIVED],  # type: ignore[arg-type]
        include=["1.*"],  # type: ignore[arg-type]
        exclude_regex=r".*-keep",
        prerelease="ONLY",  # type: ignore[arg-type]
    )
    proto = rule.to_proto()

    assert (CleanupOrder.PUBLISHED, PrereleaseScope.ONLY) == (rule.order, rule.prerelease)
    assert (True, False) == (proto.HasField("keep_newest"), proto.HasField("max_deletions"))
    assert [gov_pb2.PACKAGE_VERSION_STATUS_UNLISTED, gov_pb2.PACKAGE_VERSION_STATUS_ARCHIVED] == (
        list(proto.statuses)
    )
    assert rule == CleanupRule.from_proto(proto)
    assert CleanupRule().empty
    assert not rule.empty


def test_a_rule_refuses_one_string_for_a_collection_and_an_unknown_spelling() -> None:
    """ "1.*" is not a list of patterns, and "newest" is not an order: both fail at once."""
    with pytest.raises(TypeError, match="include"):
        CleanupRule(keep_newest=1, include="1.*")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="newest"):
        CleanupRule(keep_newest=1, order="newest")  # type: ignore[arg-type]


def test_a_plan_page_maps_the_header_and_every_version() -> None:
    """The plan's header, its clause counts in clause order, and each version's decision with
    its policy outcome and times; kept versions have no outcome."""
    response = gov_pb2.PlanCleanupResponse(plan=_plan_proto(), packages=[_package_proto()])

    page = CleanupPlanPage.from_proto(response)

    plan = page.plan
    assert (plan.plan_id, plan.plan_hash, plan.rule_name, plan.domain_owner) == (
        _PLAN_ID,
        _HASH,
        "dev-prereleases",
        None,
    )
    assert (_CREATED, None) == (plan.create_time, plan.expire_time)
    assert {"LATEST": 1, "SELECTED": 2} == dict(plan.clause_counts)
    assert ["LATEST", "SELECTED"] == list(plan.clause_counts)
    assert (2, 1, 1, 0) == (
        plan.delete_count,
        plan.allowed_count,
        plan.denied_count,
        plan.needs_approval_count,
    )
    assert (
        CleanupRule(
            order=CleanupOrder.VERSION,
            keep_newest_prereleases=2,
            older_than_days=30,
            statuses=(PackageVersionStatus.UNLISTED,),
            prerelease=PrereleaseScope.ONLY,
        )
        == plan.rule
    )
    [package] = page.packages
    assert (PackageFormat.NPM, "acme", "web-app", "3", None) == (
        package.format,
        package.namespace,
        package.package,
        package.latest_version,
        package.error,
    )
    kept, deleted = package.versions
    assert (CleanupAction.KEEP, CleanupClause.LATEST, None, ()) == (
        kept.action,
        kept.clause,
        kept.policy_outcome,
        kept.policy_ids,
    )
    assert ("WOULD_ARCHIVE", ("ci-may-delete-dev-prereleases",), _CREATED, _CREATED) == (
        deleted.policy_outcome,
        deleted.policy_ids,
        deleted.publish_time,
        deleted.purge_time,
    )
    assert (deleted,) == package.deletions
    assert None is page.next_page_token


def test_a_job_counts_what_was_not_done() -> None:
    """versions_not_done adds plan changed, denied, awaiting approval and failed; all_done only
    for a job that succeeded without any."""
    denied = CleanupJob.from_proto(_job_proto(versions_deleted=1, versions_denied=1))
    clean = CleanupJob.from_proto(_job_proto(versions_deleted=1, versions_archived=1))
    running = CleanupJob.from_proto(_job_proto(gov_pb2.CLEANUP_JOB_STATE_RUNNING))
    unknown = CleanupJob.from_proto(_job_proto(42))

    assert (1, False, True) == (denied.versions_not_done, denied.all_done, denied.finished)
    assert (0, True) == (clean.versions_not_done, clean.all_done)
    assert (False, False) == (running.finished, running.all_done)
    assert (None, False) == (unknown.state, unknown.finished)
    assert (None, None, None) == (clean.last_error, clean.cancel_reason, clean.audit_event_id)


# --- PkggovClient ----------------------------------------------------------------------------


def test_plan_cleanup_sends_every_field_with_the_metadata_and_deadline(
    fake: FakeCleanup, target: str
) -> None:
    """plan_cleanup sends the scope, the inline rule, the justification and page size, with the
    client's metadata and default deadline, and returns the page."""
    fake.responses["PlanCleanup"] = gov_pb2.PlanCleanupResponse(
        plan=_plan_proto(), packages=[_package_proto()], next_page_token="t2"
    )
    rule = CleanupRule(keep_newest=5, prerelease=PrereleaseScope.EXCLUDE)

    with PkggovClient(target, metadata=[("x-pkggov-principal", "ci-bot")], timeout=7) as client:
        page = client.plan_cleanup(
            domain="demo",
            repository="dev-nightly",
            format="NPM",
            namespace="acme",
            package_pattern="web-*",
            rule=rule,
            justification="why",
            purge_now=True,
            page_size=10,
        )

    [(method, request, metadata, remaining)] = fake.calls
    assert "PlanCleanup" == method
    assert (
        gov_pb2.PlanCleanupRequest(
            domain="demo",
            repository="dev-nightly",
            format=gov_pb2.PACKAGE_FORMAT_NPM,
            namespace="acme",
            package_pattern="web-*",
            rule=rule.to_proto(),
            justification="why",
            purge_now=True,
            page_size=10,
        )
        == request
    )
    assert "ci-bot" == metadata["x-pkggov-principal"]
    assert 7 == round(remaining or 0.0)
    assert (_PLAN_ID, "t2", 1) == (page.plan.plan_id, page.next_page_token, len(page.packages))


def test_plan_cleanup_by_name_sends_no_rule_and_refuses_an_unknown_format(
    fake: FakeCleanup, target: str
) -> None:
    """A named rule leaves the rule message unset; an unknown format spelling raises
    ValueError before any call."""
    fake.responses["PlanCleanup"] = gov_pb2.PlanCleanupResponse(plan=_plan_proto())

    with PkggovClient(target) as client:
        client.plan_cleanup(
            domain="demo",
            repository="dev-nightly",
            format=PackageFormat.NPM,
            namespace="acme",
            package="web-app",
            rule_name="dev-prereleases",
        )
        with pytest.raises(ValueError, match="rpm"):
            client.plan_cleanup(domain="demo", repository="r", format="rpm", rule_name="x")

    [(_, request, _, _)] = fake.calls
    assert isinstance(request, gov_pb2.PlanCleanupRequest)
    assert ("dev-prereleases", False, "web-app") == (
        request.rule_name,
        request.HasField("rule"),
        request.package,
    )


def test_get_cleanup_plan_sends_the_page_token(fake: FakeCleanup, target: str) -> None:
    """get_cleanup_plan sends the id, page size and token, with the call's own deadline."""
    fake.responses["GetCleanupPlan"] = gov_pb2.GetCleanupPlanResponse(plan=_plan_proto())

    with PkggovClient(target) as client:
        page = client.get_cleanup_plan(_PLAN_ID, page_size=3, page_token="t2", timeout=4)

    [(_, request, _, remaining)] = fake.calls
    assert gov_pb2.GetCleanupPlanRequest(plan_id=_PLAN_ID, page_size=3, page_token="t2") == request
    assert 4 == round(remaining or 0.0)
    assert (_PLAN_ID, None) == (page.plan.plan_id, page.next_page_token)


def test_apply_get_and_cancel_send_their_fields_and_return_the_job(
    fake: FakeCleanup, target: str
) -> None:
    """apply_cleanup, get_cleanup_job (with results) and cancel_cleanup_job send what they
    are given and return the job; the results map each version's outcome."""
    queued = _job_proto(gov_pb2.CLEANUP_JOB_STATE_QUEUED)
    fake.responses["ApplyCleanup"] = gov_pb2.ApplyCleanupResponse(job=queued)
    results = gov_pb2.GetCleanupJobResponse(job=_job_proto(versions_deleted=1, versions_denied=1))
    package = results.results.add(
        format=gov_pb2.PACKAGE_FORMAT_NPM,
        namespace="acme",
        package="web-app",
        audit_event_ids=["ev-delete"],
    )
    package.versions.add(version="2", result=gov_pb2.CLEANUP_RESULT_DELETED, message="deleted")
    package.versions.add(version="1", result=gov_pb2.CLEANUP_RESULT_DENIED, message="denied")
    fake.responses["GetCleanupJob"] = results
    fake.responses["CancelCleanupJob"] = gov_pb2.CancelCleanupJobResponse(
        job=_job_proto(gov_pb2.CLEANUP_JOB_STATE_CANCELLED, cancel_reason="cancelled by ci-bot")
    )
    request_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

    with PkggovClient(target) as client:
        job = client.apply_cleanup(_PLAN_ID, plan_hash=_HASH, request_id=request_id)
        page = client.get_cleanup_job(_JOB_ID, include_results=True, page_size=5)
        cancelled = client.cancel_cleanup_job(_JOB_ID, "not now")

    assert [(method, request) for method, request, _, _ in fake.calls] == [
        (
            "ApplyCleanup",
            gov_pb2.ApplyCleanupRequest(plan_id=_PLAN_ID, plan_hash=_HASH, request_id=request_id),
        ),
        (
            "GetCleanupJob",
            gov_pb2.GetCleanupJobRequest(job_id=_JOB_ID, include_results=True, page_size=5),
        ),
        ("CancelCleanupJob", gov_pb2.CancelCleanupJobRequest(job_id=_JOB_ID, reason="not now")),
    ]
    assert (CleanupJobState.QUEUED, _JOB_ID) == (job.state, job.job_id)
    assert isinstance(page, CleanupJobPage)
    [result] = page.results
    assert [(CleanupResult.DELETED, True), (CleanupResult.DENIED, False)] == [
        (version.result, version.result is not None and version.result.done)
        for version in result.versions
    ]
    assert (("ev-delete",), None) == (result.audit_event_ids, result.deletion_request_id)
    assert (CleanupJobState.CANCELLED, "cancelled by ci-bot") == (
        cancelled.state,
        cancelled.cancel_reason,
    )


def test_a_refusal_becomes_a_pkggov_error_with_its_reason(fake: FakeCleanup, target: str) -> None:
    """A FAILED_PRECONDITION with ErrorInfo CLEANUP_JOB_FINISHED comes back as PkggovError with
    that code, reason and metadata."""
    fake.error = rich_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "cleanup job has succeeded: there is nothing to cancel",
        reason="CLEANUP_JOB_FINISHED",
        metadata={"cleanup_job_id": _JOB_ID},
    )

    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        client.cancel_cleanup_job(_JOB_ID)

    error = raised.value
    assert (grpc.StatusCode.FAILED_PRECONDITION, "CLEANUP_JOB_FINISHED", _JOB_ID) == (
        error.code,
        error.reason,
        error.metadata["cleanup_job_id"],
    )
