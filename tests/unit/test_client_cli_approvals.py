"""The pkggov CLI for four-eyes deletion: `pkggov approvals list|show|approve|reject|cancel|
execute` (as `pkggov audit` and `pkggov pending`: connection options, --as, --json, tables,
exit statuses 0/1/2, and 3 for an execution in which some versions failed), and what
`pkggov delete` says when the deletion needs approval."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from pkggov_client import DeletionRequest, pb
from pkggov_client._approvals_cli import render_deletion_request
from pkggov_client.cli import main
from pkggov_client.testing import (
    FakeGateway,
    add_decision,
    add_vote,
    deletion_request,
    rich_status,
    serve,
)

_ID = "3f2c9a7e-1d4b-4c8e-9f0a-6b5d2e1c7a90"
_OTHER = "7d1e0b2a-5c3f-4e8d-a1b2-c3d4e5f60718"
_HASH = "5e" * 32
_CREATED = datetime(2099, 1, 5, 10, 0, tzinfo=UTC)
_REQUEST_ID_LINE = re.compile(r"request id [0-9a-f-]{36} \(to retry this call safely: .*\)")


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _request(request_id: str = _ID, **overrides: object) -> pb.DeletionRequest:
    """alice's request to delete two versions of demo/prod-npm/widgets, approved by bob (who
    counts) and by alice herself (who does not)."""
    arguments: dict[str, object] = {
        "versions": [("1.0.0", "REV1", "Published", False), ("1.1.0", "REV2", "Published", True)],
        "requested": ["1.0.0", "1.1.0"],
        "plan_hash": _HASH,
        "approvals": 1,
        "audit_event_id": "ev-create",
        "justification": "CVE-2025-1234 clean-up",
        "created": _CREATED,
    }
    arguments.update(overrides)
    request = deletion_request(request_id, **arguments)  # type: ignore[arg-type]
    add_vote(
        request,
        "bob",
        groups=["release-admins", "dev"],
        reason="plan matches the ticket",
        audit_event_id="ev-vote-1",
    )
    add_vote(request, "alice", counts=False, reason="mine", audit_event_id="ev-vote-2")
    return request


def _run(target: str, command: str, *extra: str) -> int:
    return main(["approvals", command, "--target", target, *extra])


# --- list ------------------------------------------------------------------------------------


def test_list_sends_the_filters_and_asks_for_20_by_default(fake: FakeGateway, target: str) -> None:
    assert 0 == _run(target, "list")
    assert 0 == _run(
        target,
        "list",
        "--state",
        "Pending",
        "--requester",
        "spiffe://acme/ci",
        "--domain",
        "demo",
        "--repository",
        "prod-npm",
        "--package",
        "widgets",
        "--page-size",
        "5",
        "--page-token",
        "t1",
        "--as",
        "carol",
    )

    first, second = fake.approval_calls
    assert pb.ListDeletionRequestsRequest(page_size=20) == first.request
    assert (
        pb.ListDeletionRequestsRequest(
            state=pb.DeletionRequestState.DELETION_REQUEST_STATE_PENDING,
            requester="spiffe://acme/ci",
            domain="demo",
            repository="prod-npm",
            package="widgets",
            page_size=5,
            page_token="t1",
        )
        == second.request
    )
    assert ("x-pkggov-principal", "carol") in second.metadata


def test_list_prints_a_table_and_the_next_page_token(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    executed = deletion_request(
        _OTHER,
        state="executed",
        requester="bob",
        domain_owner="111122223333",
        namespace="acme",
        versions=[(f"2.0.{n}", "R", "Unlisted", False) for n in range(5)],
        created=_CREATED - timedelta(days=1),
    )
    fake.deletion_request_pages[""] = pb.ListDeletionRequestsResponse(
        deletion_requests=[_request(), executed], next_page_token="t2"
    )

    status = _run(target, "list")

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out == (
        "CREATED               ID                                    STATE     REQUESTER  "
        "FORMAT  PACKAGE                                  VERSIONS                  APPROVALS  "
        "EXPIRES\n"
        f"2099-01-05T10:00:00Z  {_ID}  pending   alice      npm     "
        "demo/prod-npm/widgets                    1.0.0, 1.1.0              1          "
        "2099-01-08T10:00:00Z\n"
        f"2099-01-04T10:00:00Z  {_OTHER}  executed  bob        npm     "
        "demo@111122223333/prod-npm/acme/widgets  2.0.0, 2.0.1, 2.0.2 (+2)  0          "
        "2099-01-07T10:00:00Z\n"
        "more: --page-token t2\n"
    )


def test_list_all_follows_the_page_tokens_into_one_json_response(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_request_pages[""] = pb.ListDeletionRequestsResponse(
        deletion_requests=[_request()], next_page_token="t2"
    )
    fake.deletion_request_pages["t2"] = pb.ListDeletionRequestsResponse(
        deletion_requests=[_request(_OTHER)]
    )

    status = _run(target, "list", "--all", "--json")

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    listed = json.loads(out)
    assert [_ID, _OTHER] == [r["id"] for r in listed["deletionRequests"]]
    assert "" == listed["nextPageToken"]
    assert [500, 500] == [call.request.page_size for call in fake.approval_calls]  # type: ignore[attr-defined]
    assert "DELETION_REQUEST_STATE_PENDING" == listed["deletionRequests"][0]["state"]


def test_list_all_stops_on_a_page_token_seen_before(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_request_pages[""] = pb.ListDeletionRequestsResponse(next_page_token="t2")
    fake.deletion_request_pages["t2"] = pb.ListDeletionRequestsResponse(next_page_token="t2")

    assert 1 == _run(target, "list", "--all")
    assert "returned a page token it had returned before" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--state", "approved"], "invalid state 'approved' (choose from pending, executing,"),
        (["--page-size", "0"], "invalid page size '0'"),
        (["--page-size", "501"], "expected a whole number from 1 to 500"),
        (["--principal", "bob"], "unknown option --principal"),
    ],
)
def test_list_usage_errors_exit_2_before_calling(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    complaint: str,
) -> None:
    assert 2 == _run(target, "list", *extra)
    assert [] == fake.approval_calls
    assert complaint in capsys.readouterr().err


# --- show ------------------------------------------------------------------------------------


def test_show_prints_the_whole_story_of_a_pending_request(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_requests[_ID] = _request()

    status = _run(target, "show", _ID, "--as", "bob")

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out == (
        f"deletion request  {_ID}\n"
        "state             pending\n"
        "requester         alice\n"
        "created           2099-01-05T10:00:00Z (audit event ev-create)\n"
        "expires           2099-01-08T10:00:00Z\n"
        "package           npm demo/prod-npm/widgets\n"
        "requested         1.0.0, 1.1.0\n"
        "justification     CVE-2025-1234 clean-up\n"
        "options           none\n"
        "package facts     latest 1.1.0, 2 versions when decided\n"
        f"plan sha256       {_HASH}\n"
        "required by       prod-needs-release-admin\n"
        "approvals         1 (bob)\n"
        "\n"
        "plan: 2 versions\n"
        "VERSION  REVISION  STATUS     LATEST\n"
        "1.0.0    REV1      Published  no\n"
        "1.1.0    REV2      Published  yes\n"
        "\n"
        "votes: 2\n"
        "TIME                  APPROVER  VOTE     COUNTS  GROUPS              EVENT      REASON\n"
        "2099-01-05T11:00:00Z  bob       approve  yes     release-admins,dev  ev-vote-1  "
        "plan matches the ticket\n"
        "2099-01-05T11:00:00Z  alice     approve  no      -                   ev-vote-2  mine\n"
        "\n"
        f"next: an approver runs: pkggov approvals approve {_ID} --reason TEXT; "
        f"then the requester: pkggov approvals execute {_ID}\n"
    )
    [call] = fake.approval_calls
    assert pb.GetDeletionRequestRequest(id=_ID) == call.request
    assert ("x-pkggov-principal", "bob") in call.metadata


def test_show_of_an_executed_request_says_how_it_ended_and_suggests_nothing(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request(
        state="executed",
        closed_reason="executed by alice",
        closed_audit_event_id="ev-exec",
        namespace="acme",
    )
    request.expected_status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_PUBLISHED
    request.allow_partial = True
    request.purge_now = True
    fake.deletion_requests[_ID] = request

    assert 0 == _run(target, "show", _ID)

    out = capsys.readouterr().out
    assert "state             executed\n" in out
    assert "package           npm demo/prod-npm/acme/widgets\n" in out
    assert "options           expected status Published, allow partial, purge now\n" in out
    assert "closed            executed by alice (audit event ev-exec)\n" in out
    assert "next:" not in out


def test_show_marks_a_pending_request_whose_expiry_has_passed() -> None:
    request = DeletionRequest.from_proto(_request(created=datetime(2027, 1, 5, tzinfo=UTC)))

    text = render_deletion_request(request, now=datetime(2027, 2, 1, tzinfo=UTC))

    assert "expires           2027-01-08T00:00:00Z (passed: it can no longer run)\n" in text
    assert "next:" not in text


def test_show_of_a_request_without_votes_or_plan(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_requests[_ID] = deletion_request(_ID, versions=[], required_by=())

    assert 0 == _run(target, "show", _ID)

    out = capsys.readouterr().out
    assert "\nplan: 0 versions\n\nvotes: none\n" in out
    assert "required by       -\n" in out


def test_show_escapes_every_recorded_value(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request(justification="ok\x1b]0;pwned\x07", requester="mallory\x1b[2J")
    add_vote(request, "eve\u202e", reason="line\nbreak", groups=["g\x1b"])
    fake.deletion_requests[_ID] = request

    assert 0 == _run(target, "show", _ID)

    out = capsys.readouterr().out
    assert not {"\x1b", "\u202e", "\x07"} & set(out)
    assert "mallory\\x1b[2J" in out
    assert "ok\\x1b]0;pwned\\x07" in out
    assert "eve\\u202e" in out
    assert "line break" in out  # a reason is shown on one line


def test_show_json_is_the_response_in_proto3_json(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_requests[_ID] = _request()

    assert 0 == _run(target, "show", _ID, "--json")

    shown = json.loads(capsys.readouterr().out)["deletionRequest"]
    assert (_ID, _HASH, 1) == (shown["id"], shown["planHash"], shown["approvals"])
    assert {
        "version": "1.1.0",
        "revision": "REV2",
        "status": "PACKAGE_VERSION_STATUS_PUBLISHED",
        "isLatest": True,
    } == shown["versions"][1]
    assert {
        "approver": "bob",
        "approve": True,
        "groups": ["release-admins", "dev"],
        "reason": "plan matches the ticket",
        "time": "2099-01-05T11:00:00Z",
        "counts": True,
        "auditEventId": "ev-vote-1",
    } == shown["votes"][0]
    assert "" == shown["closedReason"]


def test_show_of_an_unknown_id_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _run(target, "show", "nope")

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err == (
        "error: NOT_FOUND DELETION_REQUEST_NOT_FOUND: no deletion request has id 'nope'\n"
        "  resource: pkggov.v1.DeletionRequest nope\n"
    )


# --- approve, reject, cancel -----------------------------------------------------------------


def test_approve_sends_the_reason_and_says_what_counts_and_what_comes_next(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_requests[_ID] = _request()

    status = _run(target, "approve", _ID, "--reason", "plan matches the ticket", "--as", "bob")

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out == (
        f"approved deletion request {_ID} (plan sha256 {_HASH}): 1 approval counts; "
        "state pending\n"
        f"once the approvals satisfy policy, the requester runs: pkggov approvals execute {_ID}\n"
    )
    [call] = fake.approval_calls
    assert ("ApproveDeletionRequest", "plan matches the ticket") == (
        call.method,
        call.request.reason,  # type: ignore[attr-defined]
    )
    assert ("x-pkggov-principal", "bob") in call.metadata


def test_reject_and_cancel_say_where_the_request_stands(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.deletion_requests[_ID] = _request(state="rejected")

    assert 0 == _run(target, "reject", _ID, "--reason", "too many at once")
    assert f"rejected deletion request {_ID}; state rejected\n" == capsys.readouterr().out
    fake.deletion_requests[_ID] = _request(state="cancelled")
    assert 0 == _run(target, "cancel", _ID)
    assert 0 == _run(target, "cancel", _ID, "--reason", "wrong package")
    assert f"cancelled deletion request {_ID}; state cancelled\n" * 2 == capsys.readouterr().out

    assert [(call.method, call.request) for call in fake.approval_calls] == [
        (
            "RejectDeletionRequest",
            pb.RejectDeletionRequestRequest(id=_ID, reason="too many at once"),
        ),
        ("CancelDeletionRequest", pb.CancelDeletionRequestRequest(id=_ID)),
        ("CancelDeletionRequest", pb.CancelDeletionRequestRequest(id=_ID, reason="wrong package")),
    ]


@pytest.mark.parametrize(
    ("command", "response"),
    [
        ("approve", "ApproveDeletionRequestResponse"),
        ("reject", "RejectDeletionRequestResponse"),
        ("cancel", "CancelDeletionRequestResponse"),
    ],
)
def test_a_vote_as_json_is_the_response(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    command: str,
    response: str,
) -> None:
    fake.deletion_requests[_ID] = _request()

    assert 0 == _run(target, command, _ID, "--reason", "why", "--json")

    out = json.loads(capsys.readouterr().out)
    assert [_ID] == [out["deletionRequest"]["id"]]
    assert list(out) == [f.camelcase_name for f in getattr(pb, response).DESCRIPTOR.fields]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["approve", _ID], "the following arguments are required: --reason"),
        (["reject", _ID], "the following arguments are required: --reason"),
        (["approve", _ID, "--reason", "  "], "argument --reason: a reason is required"),
        (["approve", "--reason", "ok"], "the following arguments are required: ID"),
        (["approve", _ID, "--reason", "1.0\udcff"], "argument --reason: not UTF-8 text"),
        (["show", "1.0\udcff"], "argument ID: not UTF-8 text"),
        (["execute", _ID, "--reason", "x"], "unknown option --reason"),
        (["show", _ID, "--cert", "c.pem"], "--cert and --key need --cacert (TLS)"),
    ],
)
def test_usage_errors_exit_2_before_calling(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    complaint: str,
) -> None:
    fake.deletion_requests[_ID] = _request()

    assert 2 == _run(target, *argv)
    assert [] == fake.approval_calls
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "reason", "hint"),
    [
        ("approve", "SELF_APPROVAL", "the requester never approves their own request"),
        ("approve", "ALREADY_VOTED", "one person votes once on a request"),
        ("reject", "REQUEST_EXPIRED", "an expired request never runs"),
        ("cancel", "NOT_REQUESTER", "only the request's requester may cancel or execute it"),
        ("approve", "REQUEST_NOT_PENDING", f"see pkggov approvals show {_ID}"),
    ],
)
def test_a_refused_vote_exits_1_and_says_why(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    *,
    command: str,
    reason: str,
    hint: str,
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "refused",
        reason=reason,
        metadata={"deletion_request_id": _ID},
    )

    status = _run(target, command, _ID, "--reason", "why")

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err.startswith(f"error: PERMISSION_DENIED {reason}: refused\n")
    last = err.splitlines()[-1]
    assert last.startswith("  "), err
    assert hint in last, err


def test_a_refused_vote_as_json_is_the_error_alone(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "refused",
        reason="SELF_APPROVAL",
        metadata={"deletion_request_id": _ID},
    )

    status = _run(target, "approve", _ID, "--reason", "mine", "--json")

    out, err = capsys.readouterr()
    assert (status, err) == (1, "")
    error = json.loads(out)["error"]
    assert ("SELF_APPROVAL", {"deletion_request_id": _ID}) == (
        error["reason"],
        error["details"][0]["metadata"],
    )


# --- execute ---------------------------------------------------------------------------------


def _executed(fake: FakeGateway) -> None:
    fake.deletion_requests[_ID] = _request(state="executed")
    result = fake.execute_result
    result.audit_event_id = "ev-exec"
    archived = result.successful_versions["1.1.0"]
    archived.revision = "REV2"
    archived.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_ARCHIVED
    archived.purge_time.FromDatetime(datetime(2099, 1, 12, tzinfo=UTC))
    deleted = result.successful_versions["1.0.0"]
    deleted.revision = "REV1"
    deleted.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED


def test_execute_prints_the_result_per_version_as_delete_does(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _executed(fake)

    status = _run(target, "execute", _ID, "--as", "alice")

    out, err = capsys.readouterr()
    assert (status, err) == (0, "audit event ev-exec\n")
    assert out == (
        "VERSION  RESULT    STATUS/ERROR  REVISION/MESSAGE\n"
        "1.0.0    deleted   Deleted       REV1\n"
        "1.1.0    archived  Archived      REV2; purged at 2099-01-12T00:00:00Z unless restored\n"
        "1 deleted, 1 archived, 0 failed\n"
        f"deletion request {_ID} executed (plan sha256 {_HASH}; approved by bob)\n"
        "to restore before the purge (with the same connection options): pkggov restore "
        "--domain demo --repository prod-npm --format npm --package widgets 1.1.0\n"
    )
    [call] = fake.approval_calls
    assert pb.ExecuteDeletionRequestRequest(id=_ID) == call.request
    assert ("x-pkggov-principal", "alice") in call.metadata


def test_execute_with_failed_versions_exits_3(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _executed(fake)
    failed = fake.execute_result.failed_versions["1.0.0"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND
    failed.error_message = "gone"
    del fake.execute_result.successful_versions["1.0.0"]

    assert 3 == _run(target, "execute", _ID)
    assert "1.0.0    failed    NOT_FOUND     gone\n" in capsys.readouterr().out


def test_execute_json_is_the_response(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _executed(fake)

    assert 0 == _run(target, "execute", _ID, "--json")

    out, err = capsys.readouterr()
    response = json.loads(out)
    assert (err, ["result", "deletionRequest"]) == ("", list(response))
    assert (
        "PACKAGE_VERSION_STATUS_ARCHIVED"
        == (response["result"]["successfulVersions"]["1.1.0"]["status"])
    )
    assert ("ev-exec", "DELETION_REQUEST_STATE_EXECUTED") == (
        response["result"]["auditEventId"],
        response["deletionRequest"]["state"],
    )


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("PLAN_CHANGED", "nothing was deleted: the package changed since the plan was approved"),
        (
            "APPROVAL_REQUIRED",
            f"not approved yet: the approvals do not satisfy policy; see "
            f"the votes with pkggov approvals show {_ID}",
        ),
        ("PLAN_TAMPERED", "the stored plan no longer matches its hash"),
    ],
)
def test_an_execution_refused_exits_1_and_says_why(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    reason: str,
    hint: str,
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the plan no longer holds: 1.1.0: revision REV2 is now REV3",
        reason=reason,
        metadata={"deletion_request_id": _ID},
    )

    status = _run(target, "execute", _ID)

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err.startswith(
        f"error: FAILED_PRECONDITION {reason}: the plan no longer holds: 1.1.0: revision REV2 "
        "is now REV3\n"
    )
    last = err.splitlines()[-1]
    assert last.startswith("  "), err
    assert hint in last, err


# --- pkggov delete when the deletion needs approval ------------------------------------------


_DELETE = ("delete", "--domain", "demo", "--repository", "prod-npm", "--format", "npm")


def _approval_required(fake: FakeGateway, **metadata: str) -> None:
    fake.error = rich_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "2 version(s) need approval (prod-needs-release-admin); nothing was deleted",
        reason="APPROVAL_REQUIRED",
        metadata={"audit_event_id": "ev-1", **metadata},
    )


def test_a_delete_that_needs_approval_says_how_to_proceed(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _approval_required(fake, deletion_request_id=_ID, plan_hash=_HASH)

    status = main([*_DELETE, "--target", target, "--package", "widgets", "1.0.0", "1.1.0"])

    out, err = capsys.readouterr()
    first, *rest = err.splitlines()
    assert (status, out) == (1, "")
    assert _REQUEST_ID_LINE.fullmatch(first)
    assert rest == [
        "error: FAILED_PRECONDITION APPROVAL_REQUIRED: 2 version(s) need approval "
        "(prod-needs-release-admin); nothing was deleted",
        f"  metadata: audit_event_id=ev-1, deletion_request_id={_ID}, plan_hash={_HASH}",
        f"approval required: deletion request {_ID} (plan sha256 {_HASH}); an approver runs: "
        f"pkggov approvals approve {_ID} --reason TEXT; then: pkggov approvals execute {_ID}",
    ]


def test_an_approval_required_error_without_a_request_says_none_was_recorded(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _approval_required(fake, plan_hash=_HASH)

    assert 1 == main([*_DELETE, "--target", target, "--package", "widgets", "1.0.0"])

    assert capsys.readouterr().err.endswith(
        f"approval required (plan sha256 {_HASH}): a real call records a deletion request for "
        "approvers\n"
    )


def test_a_delete_that_needs_approval_as_json_carries_the_request_in_the_error(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _approval_required(fake, deletion_request_id=_ID, plan_hash=_HASH)

    status = main([*_DELETE, "--target", target, "--package", "w", "--json", "1.0.0"])

    out, err = capsys.readouterr()
    assert (status, err) == (1, "")
    error = json.loads(out)["error"]
    assert ("APPROVAL_REQUIRED", _ID) == (
        error["reason"],
        error["details"][0]["metadata"]["deletion_request_id"],
    )


def test_a_dry_run_with_versions_that_need_approval_shows_them_and_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_DELETE", policy_ids=["ci"], status="Published")
    add_decision(
        fake.response,
        "1.1.0",
        "NEEDS_APPROVAL",
        policy_ids=["prod-needs-release-admin"],
        status="Published",
        is_latest=True,
    )

    status = main([*_DELETE, "--target", target, "--package", "w", "--dry-run", "1.0.0", "1.1.0"])

    out, err = capsys.readouterr()
    assert status == 1
    assert out == (
        "VERSION  DECISION        STATUS     LATEST  POLICIES / MESSAGE\n"
        "1.0.0    would delete    Published  no      ci\n"
        "1.1.0    needs approval  Published  yes     prod-needs-release-admin\n"
        "dry run: 1 would be deleted, 1 need approval; nothing was deleted\n"
    )
    assert err == (
        "error: the real call would fail with FAILED_PRECONDITION (APPROVAL_REQUIRED): policy "
        "allows 1 of 2 version(s) only once approved (1.1.0); it would delete nothing and record "
        "a deletion request for approvers to vote on (see pkggov approvals)\n"
    )


# --- help and version ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["list", "show", "approve", "reject", "cancel", "execute", None]
)
def test_every_approvals_command_prints_the_client_version(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    from pkggov_client._cli_base import client_version

    assert 0 == main(["approvals", *([command] if command else []), "--version"])
    assert f"{client_version()}\n" == capsys.readouterr().out


def test_help_documents_the_approvals_commands(capsys: pytest.CaptureFixture[str]) -> None:
    def help_of(*argv: str) -> str:
        assert 0 == main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert "approvals" in help_of()
    top = help_of("approvals")
    for command in ("list", "show", "approve", "reject", "cancel", "execute"):
        assert command in top
    listing = help_of("approvals", "list")
    for option in ("--state", "--requester PRINCIPAL", "--page-size N", "--all", "--as NAME"):
        assert option in listing
    assert "--reason TEXT [--plan-hash SHA256] ID" in help_of("approvals", "approve")
    assert "why (required" in help_of("approvals", "reject")
    assert "why (optional" in help_of("approvals", "cancel")
    assert "3 some not" in help_of("approvals", "execute")
    assert "--json" in help_of("approvals", "show")


def test_approve_sends_the_plan_hash_reviewed(fake: FakeGateway, target: str) -> None:
    fake.deletion_requests[_ID] = _request()
    assert 0 == _run(target, "approve", _ID, "--reason", "ok", "--plan-hash", _HASH.upper())
    sent = fake.approval_calls[-1].request
    assert isinstance(sent, pb.ApproveDeletionRequestRequest)
    assert _HASH == sent.plan_hash
    assert 2 == _run(target, "approve", _ID, "--reason", "ok", "--plan-hash", "abc")
