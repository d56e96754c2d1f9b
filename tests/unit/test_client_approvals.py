"""Four-eyes deletion in the typed client: the deletion request models, the ApprovalService
methods of PkggovClient (what they send, what they return, how they fail) and the
APPROVAL_REQUIRED error's deletion request id."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest

from pkggov_client import (
    DeletionRequest,
    DeletionRequestExecution,
    DeletionRequestsPage,
    DeletionRequestState,
    DeletionVote,
    PackageFormat,
    PackageVersionStatus,
    PkggovClient,
    PkggovError,
    PlannedVersion,
    pb,
)
from pkggov_client.testing import FakeGateway, add_vote, deletion_request, rich_status, serve

_ID = "3f2c9a7e-1d4b-4c8e-9f0a-6b5d2e1c7a90"
_CREATED = datetime(2099, 1, 5, 10, 0, tzinfo=UTC)
_HASH = "5e" * 32


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _request(**overrides: object) -> pb.DeletionRequest:
    arguments: dict[str, object] = {
        "versions": [("1.0.0", "REV1", "Published", False), ("1.1.0", "REV2", "Unlisted", True)],
        "requested": ["1.1.0", "1.0.0", "9.9.9"],
        "plan_hash": _HASH,
        "approvals": 1,
        "audit_event_id": "ev-create",
        "justification": "CVE-2025-1234",
    }
    arguments.update(overrides)
    request = deletion_request(_ID, **arguments)  # type: ignore[arg-type]
    add_vote(request, "bob", groups=["release-admins"], reason="plan checked", audit_event_id="v1")
    add_vote(request, "carol", approve=False, reason="too many", audit_event_id="v2")
    return request


# --- models ----------------------------------------------------------------------------------


def test_every_state_round_trips_through_its_proto_value() -> None:
    for state in DeletionRequestState:
        assert state is DeletionRequestState.from_proto(state.to_proto())
    assert [state.value for state in DeletionRequestState] == [
        name.removeprefix("DELETION_REQUEST_STATE_").lower()
        for name in pb.DeletionRequestState.DESCRIPTOR.values_by_name
        if not name.endswith("UNSPECIFIED")
    ]


def test_state_reads_any_case_and_unknown_values_read_as_none() -> None:
    assert DeletionRequestState.PENDING is DeletionRequestState("Pending")
    with pytest.raises(ValueError, match="approved"):
        DeletionRequestState("approved")
    assert None is DeletionRequestState.from_proto(0)
    assert None is DeletionRequestState.from_proto(99)
    assert [s.value for s in DeletionRequestState if s.final] == [
        "executed",
        "rejected",
        "cancelled",
        "expired",
    ]


def test_a_deletion_request_maps_every_field() -> None:
    raw = _request(
        domain_owner="111122223333",
        namespace="acme",
        format="pypi",
        closed_reason="",
        created=_CREATED,
        expires_in=timedelta(hours=72),
    )
    raw.expected_status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_PUBLISHED
    raw.allow_partial = True
    raw.purge_now = True

    request = DeletionRequest.from_proto(raw)

    assert request == DeletionRequest(
        id=_ID,
        state=DeletionRequestState.PENDING,
        requester="alice",
        create_time=_CREATED,
        expire_time=_CREATED + timedelta(hours=72),
        domain="demo",
        domain_owner="111122223333",
        repository="prod-npm",
        format=PackageFormat.PYPI,
        namespace="acme",
        package="widgets",
        versions=(
            PlannedVersion("1.0.0", "REV1", PackageVersionStatus.PUBLISHED, False),
            PlannedVersion("1.1.0", "REV2", PackageVersionStatus.UNLISTED, True),
        ),
        requested_versions=("1.1.0", "1.0.0", "9.9.9"),
        latest_version="1.1.0",
        version_count=2,
        justification="CVE-2025-1234",
        expected_status=PackageVersionStatus.PUBLISHED,
        allow_partial=True,
        purge_now=True,
        plan_hash=_HASH,
        required_by=("prod-needs-release-admin",),
        votes=(
            DeletionVote(
                approver="bob",
                approve=True,
                groups=("release-admins",),
                reason="plan checked",
                time=_CREATED + timedelta(hours=1),
                counts=True,
                audit_event_id="v1",
            ),
            DeletionVote(
                approver="carol",
                approve=False,
                groups=(),
                reason="too many",
                time=_CREATED + timedelta(hours=1),
                counts=False,
                audit_event_id="v2",
            ),
        ),
        approvals=1,
        audit_event_id="ev-create",
        closed_reason=None,
        closed_audit_event_id=None,
        raw=raw,
    )
    assert request.raw is raw
    assert ("1.0.0", "1.1.0") == request.plan_versions
    assert ("bob",) == request.counted_approvers
    assert ["carol"] == [vote.approver for vote in request.rejections]


def test_what_the_gateway_left_empty_or_this_client_does_not_know_reads_as_none() -> None:
    raw = pb.DeletionRequest(id="x", state=99, format=99, expected_status=99)  # type: ignore[arg-type]
    raw.votes.add(approver="bob", approve=True)

    request = DeletionRequest.from_proto(raw)

    assert (None, None, None) == (request.state, request.format, request.expected_status)
    assert (None, None) == (request.create_time, request.expire_time)
    assert (None, None, None, None) == (
        request.domain_owner,
        request.namespace,
        request.justification,
        request.latest_version,
    )
    assert (None, None, None) == (
        request.audit_event_id,
        request.closed_reason,
        request.closed_audit_event_id,
    )
    assert (None, None) == (request.votes[0].time, request.votes[0].audit_event_id)
    assert not request.pending


def test_a_pending_request_past_its_expiry_is_expired_and_a_final_one_is_not() -> None:
    pending = DeletionRequest.from_proto(_request(created=_CREATED, expires_in=timedelta(hours=1)))
    executed = DeletionRequest.from_proto(_request(state="executed", created=_CREATED))
    expired = DeletionRequest.from_proto(_request(state="EXPIRED"))
    later = _CREATED + timedelta(hours=2)

    assert (True, False) == (pending.pending, pending.is_expired(_CREATED))
    assert pending.is_expired(later)
    assert pending.is_expired(_CREATED + timedelta(hours=1))  # the expiry itself is past it
    assert pending.is_expired(later.astimezone(timezone(timedelta(hours=-5))))
    assert not executed.is_expired(later + timedelta(days=9))
    assert expired.is_expired(_CREATED)
    assert not pending.is_expired()  # now: the request was created in 2099
    with pytest.raises(ValueError, match="timezone-aware"):
        pending.is_expired(datetime(2099, 1, 6))  # naive


def test_an_execution_holds_the_delete_result_in_plan_order_and_the_request() -> None:
    response = pb.ExecuteDeletionRequestResponse(
        deletion_request=_request(state="executed"),
        result=pb.DeletePackageVersionsResponse(audit_event_id="ev-exec"),
    )
    for version in ("1.1.0", "1.0.0"):
        done = response.result.successful_versions[version]
        done.revision = "R"
        done.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED

    execution = DeletionRequestExecution.from_proto(response)

    assert ["1.0.0", "1.1.0"] == list(execution.result.successful)
    assert (DeletionRequestState.EXECUTED, "ev-exec", True) == (
        execution.deletion_request.state,
        execution.audit_event_id,
        execution.result.all_deleted,
    )
    assert execution.raw is response


def test_a_page_of_requests_ends_with_no_token() -> None:
    page = DeletionRequestsPage.from_proto(
        pb.ListDeletionRequestsResponse(deletion_requests=[_request()])
    )

    assert ([_ID], None) == ([r.id for r in page.deletion_requests], page.next_page_token)


# --- PkggovClient ----------------------------------------------------------------------------


def test_get_sends_the_id_with_the_metadata_and_deadline_and_maps_the_request(
    fake: FakeGateway, target: str
) -> None:
    fake.deletion_requests[_ID] = _request()

    with PkggovClient(target, metadata=[("x-pkggov-principal", "bob")], timeout=7) as client:
        request = client.get_deletion_request(_ID)

    [call] = fake.approval_calls
    assert ("GetDeletionRequest", pb.GetDeletionRequestRequest(id=_ID)) == (
        call.method,
        call.request,
    )
    assert ("x-pkggov-principal", "bob") in call.metadata
    assert 7 == round(call.time_remaining or 0.0)  # the client's default timeout was sent
    assert DeletionRequest.from_proto(fake.deletion_requests[_ID]) == request


def test_list_sends_every_filter_and_maps_the_page(fake: FakeGateway, target: str) -> None:
    fake.deletion_request_pages["t1"] = pb.ListDeletionRequestsResponse(
        deletion_requests=[_request()], next_page_token="t2"
    )

    with PkggovClient(target) as client:
        page = client.list_deletion_requests(
            state="Pending",
            requester="alice",
            domain="demo",
            repository="prod-npm",
            package="widgets",
            page_size=10,
            page_token="t1",
        )
        client.list_deletion_requests(state=DeletionRequestState.EXPIRED)
        client.list_deletion_requests()

    assert [call.request for call in fake.approval_calls] == [
        pb.ListDeletionRequestsRequest(
            state=pb.DeletionRequestState.DELETION_REQUEST_STATE_PENDING,
            requester="alice",
            domain="demo",
            repository="prod-npm",
            package="widgets",
            page_size=10,
            page_token="t1",
        ),
        pb.ListDeletionRequestsRequest(
            state=pb.DeletionRequestState.DELETION_REQUEST_STATE_EXPIRED
        ),
        pb.ListDeletionRequestsRequest(),
    ]
    assert ([_ID], "t2") == ([r.id for r in page.deletion_requests], page.next_page_token)


def test_an_unknown_state_is_refused_before_calling(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client, pytest.raises(ValueError, match="approved"):
        client.list_deletion_requests(state="approved")

    assert [] == fake.approval_calls


def test_votes_and_cancel_send_the_id_and_reason_and_return_the_request(
    fake: FakeGateway, target: str
) -> None:
    fake.deletion_requests[_ID] = _request(approvals=1)

    with PkggovClient(target) as client:
        approved = client.approve_deletion_request(_ID, "plan checked")
        rejected = client.reject_deletion_request(_ID, reason="too many")
        cancelled = client.cancel_deletion_request(_ID)
        cancelled_why = client.cancel_deletion_request(_ID, "not needed")

    assert [(call.method, call.request) for call in fake.approval_calls] == [
        ("ApproveDeletionRequest", pb.ApproveDeletionRequestRequest(id=_ID, reason="plan checked")),
        ("RejectDeletionRequest", pb.RejectDeletionRequestRequest(id=_ID, reason="too many")),
        ("CancelDeletionRequest", pb.CancelDeletionRequestRequest(id=_ID)),
        ("CancelDeletionRequest", pb.CancelDeletionRequestRequest(id=_ID, reason="not needed")),
    ]
    assert {_ID} == {r.id for r in (approved, rejected, cancelled, cancelled_why)}
    assert 1 == approved.approvals


def test_execute_returns_the_delete_result_and_the_request(fake: FakeGateway, target: str) -> None:
    fake.deletion_requests[_ID] = _request(state="executed")
    failed = fake.execute_result.failed_versions["1.1.0"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_REVISION
    failed.error_message = "changed"
    fake.execute_result.successful_versions["1.0.0"].revision = "REV1"

    with PkggovClient(target) as client:
        execution = client.execute_deletion_request(_ID, timeout=3)

    [call] = fake.approval_calls
    assert pb.ExecuteDeletionRequestRequest(id=_ID) == call.request
    assert 3 == round(call.time_remaining or 0.0)  # the call's own timeout was sent
    assert (["1.0.0"], ["1.1.0"]) == (
        list(execution.result.successful),
        list(execution.result.failed),
    )
    assert "MISMATCHED_REVISION" == execution.result.failed["1.1.0"].error_code
    assert DeletionRequestState.EXECUTED is execution.deletion_request.state


def test_an_id_that_names_no_request_raises_not_found(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        client.approve_deletion_request("no-such-id", "x")

    error = raised.value
    assert (grpc.StatusCode.NOT_FOUND, "DELETION_REQUEST_NOT_FOUND") == (error.code, error.reason)
    assert error.resource is not None
    assert "no-such-id" == error.resource.name


@pytest.mark.parametrize(
    "call",
    ["get", "list", "approve", "reject", "cancel", "execute"],
)
def test_every_approval_call_raises_the_gateways_error(
    fake: FakeGateway, target: str, call: str
) -> None:
    fake.deletion_requests[_ID] = _request()
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "the requester cannot approve",
        reason="SELF_APPROVAL",
        metadata={"deletion_request_id": _ID, "audit_event_id": "ev-9"},
    )

    with PkggovClient(target) as client:
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: client.get_deletion_request(_ID),
            "list": client.list_deletion_requests,
            "approve": lambda: client.approve_deletion_request(_ID, "ok"),
            "reject": lambda: client.reject_deletion_request(_ID, "no"),
            "cancel": lambda: client.cancel_deletion_request(_ID),
            "execute": lambda: client.execute_deletion_request(_ID),
        }
        with pytest.raises(PkggovError) as raised:
            calls[call]()

    error = raised.value
    assert ("SELF_APPROVAL", _ID, "ev-9") == (
        error.reason,
        error.deletion_request_id,
        error.audit_event_id,
    )
    assert not error.approval_required


def test_a_delete_that_needs_approval_names_its_deletion_request(
    fake: FakeGateway, target: str
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "1 version(s) need approval (prod-needs-release-admin); nothing was deleted",
        reason="APPROVAL_REQUIRED",
        metadata={"deletion_request_id": _ID, "plan_hash": _HASH, "audit_event_id": "ev-1"},
    )

    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        client.delete_package_versions(
            domain="demo", repository="prod-npm", format="npm", package="w", versions=["1.0.0"]
        )

    error = raised.value
    assert (grpc.StatusCode.FAILED_PRECONDITION, True) == (error.code, error.approval_required)
    assert (_ID, _HASH) == (error.deletion_request_id, error.plan_hash)


def test_other_errors_name_no_deletion_request() -> None:
    error = PkggovError(grpc.StatusCode.UNAVAILABLE, "down")

    assert (None, None, False) == (
        error.deletion_request_id,
        error.plan_hash,
        error.approval_required,
    )
