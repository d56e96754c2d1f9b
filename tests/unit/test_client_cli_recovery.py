"""The pkggov CLI for recoverable deletion: `delete --purge-now`, an archived version's purge time
and restore command, `pkggov restore` (as `pkggov delete`) and `pkggov pending list` (as
`pkggov audit list`), with their exit statuses 0/3/1/2."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from pkggov_client import pb
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, add_decision, plain_status, rich_status, serve

_REQUEST_ID_LINE = re.compile(
    r"request id ([0-9a-f-]{36}) \(to retry this call safely: --request-id \1\)"
)
_PURGE_AT = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)
_RESTORE_METHOD = "pkggov.v1.PackageGovernanceService/RestorePackageVersions"
_EVENT = "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"
_ARCHIVED = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_ARCHIVED
_DELETED = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED
_PUBLISHED = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_PUBLISHED


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


_PACKAGE = ("--domain", "demo", "--repository", "dev-shared", "--format", "npm")


def _args(command: str, target: str, *extra: str) -> list[str]:
    return [command, "--target", target, *_PACKAGE, "--package", "widgets", *extra]


def _after_request_id(err: str) -> str:
    """stderr without its first line, which must name the generated request id."""
    first, _, rest = err.partition("\n")
    assert _REQUEST_ID_LINE.fullmatch(first), err
    return rest


def _archive(response: pb.DeletePackageVersionsResponse, version: str, revision: str) -> None:
    info = response.successful_versions[version]
    info.revision = revision
    info.status = _ARCHIVED
    info.purge_time.FromDatetime(_PURGE_AT)
    info.restore_method = _RESTORE_METHOD


# --- pkggov delete: --purge-now and archived versions ----------------------------------------


def test_purge_now_reaches_the_request_and_is_off_by_default(
    fake: FakeGateway, target: str
) -> None:
    assert 0 == main(_args("delete", target, "1.0.0"))
    assert 0 == main(_args("delete", target, "--purge-now", "1.0.0"))
    add_decision(fake.response, "1.0.0", "WOULD_DELETE")
    assert 0 == main(_args("delete", target, "--purge-now", "--dry-run", "1.0.0"))

    assert [(False, False), (True, False), (True, True)] == [
        (call.request.purge_now, call.request.validate_only) for call in fake.calls
    ]


def test_archived_versions_show_their_purge_time_and_how_to_restore_them(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _archive(fake.response, "1.0.0", "REV1")
    _archive(fake.response, "1.1.0", "REV3")
    deleted = fake.response.successful_versions["0.9.0"]
    deleted.revision = "REV0"
    deleted.status = _DELETED

    status = main(_args("delete", target, "--namespace", "acme", "1.1.0", "0.9.0", "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, _after_request_id(err)) == (0, "")
    assert out == (
        "VERSION  RESULT    STATUS/ERROR  REVISION/MESSAGE\n"
        "1.1.0    archived  Archived      REV3; purged at 2027-01-05T10:00:00Z unless restored\n"
        "0.9.0    deleted   Deleted       REV0\n"
        "1.0.0    archived  Archived      REV1; purged at 2027-01-05T10:00:00Z unless restored\n"
        "1 deleted, 2 archived, 0 failed\n"
        "to restore before the purge (with the same connection options): pkggov restore "
        "--domain demo --repository dev-shared --format npm --namespace acme --package widgets "
        "1.1.0 1.0.0\n"
    )


def test_the_restore_command_is_quoted_for_the_shell_and_escaped(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _archive(fake.response, "1.0 beta", "REV1")
    _archive(fake.response, "2.0\x1b[2J", "REV2")

    main(["delete", "--target", target, *_PACKAGE, "--package", "it's", "1.0 beta", "2.0\x1b[2J"])

    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith("--package 'it'\"'\"'s' '1.0 beta' '2.0\\x1b[2J'")
    assert "\x1b" not in last


def test_many_archived_versions_are_not_all_named_in_the_restore_command(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = [f"1.0.{n}" for n in range(21)]
    for version in versions:
        _archive(fake.response, version, "R")

    assert 0 == main(_args("delete", target, *versions))

    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith(
        "--package widgets VERSION... (name the versions, or list them in --versions-from FILE)"
    )


def test_archived_versions_in_json_carry_purge_time_and_restore_method(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _archive(fake.response, "1.0.0", "REV1")

    status = main(_args("delete", target, "--json", "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert {
        "1.0.0": {
            "revision": "REV1",
            "status": "PACKAGE_VERSION_STATUS_ARCHIVED",
            "purgeTime": "2027-01-05T10:00:00Z",
            "restoreMethod": _RESTORE_METHOD,
        }
    } == json.loads(out)["successfulVersions"]


def test_a_dry_run_that_would_archive_shows_when_and_exits_0(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(
        fake.response,
        "1.0.0",
        "WOULD_ARCHIVE",
        policy_ids=["release-admins-may-delete"],
        status="Published",
        purge_time=_PURGE_AT,
    )
    add_decision(fake.response, "0.9.0", "WOULD_ARCHIVE", status="Unlisted", purge_time=_PURGE_AT)

    status = main(_args("delete", target, "--dry-run", "1.0.0", "0.9.0"))

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out == (
        "VERSION  DECISION       STATUS     LATEST  POLICIES / MESSAGE\n"
        "1.0.0    would archive  Published  no      release-admins-may-delete; "
        "would be purged at 2027-01-05T10:00:00Z unless restored\n"
        "0.9.0    would archive  Unlisted   no      "
        "would be purged at 2027-01-05T10:00:00Z unless restored\n"
        "dry run: 2 would be archived; nothing was deleted or archived\n"
    )


def test_a_dry_run_plan_counts_deletes_and_archives(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_ARCHIVE", purge_time=_PURGE_AT)
    add_decision(fake.response, "1.0.1", "WOULD_DELETE")
    add_decision(fake.response, "9.9.9", "NOT_FOUND")

    status = main(_args("delete", target, "--dry-run", "1.0.0", "1.0.1", "9.9.9"))

    assert 3 == status
    assert capsys.readouterr().out.splitlines()[-1] == (
        "dry run: 1 would be deleted, 1 would be archived, 1 not found; "
        "nothing was deleted or archived"
    )


# --- pkggov restore --------------------------------------------------------------------------


def _restored(fake: FakeGateway, version: str, revision: str) -> None:
    info = fake.restore_response.successful_versions[version]
    info.revision = revision
    info.status = _PUBLISHED


def test_restore_sends_every_option_and_prints_a_table(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _restored(fake, "1.0.0", "REV5")
    fake.restore_response.audit_event_id = _EVENT

    status = main(
        [
            "restore",
            "--target",
            target,
            "--as",
            "alice",
            *("--domain", "demo", "--domain-owner", "111122223333", "--repository", "dev-shared"),
            *("--format", "Maven", "--namespace", "com.acme", "--package", "widgets"),
            *("--justification", "deleted by mistake", "1.0.0"),
        ]
    )

    out, err = capsys.readouterr()
    [call] = fake.restore_calls
    assert (status, _after_request_id(err)) == (0, f"audit event {_EVENT}\n")
    assert (
        pb.RestorePackageVersionsRequest(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=pb.PackageFormat.PACKAGE_FORMAT_MAVEN,
            namespace="com.acme",
            package="widgets",
            versions=["1.0.0"],
            justification="deleted by mistake",
            validate_only=False,
            request_id=_REQUEST_ID_LINE.match(err).group(1),  # type: ignore[union-attr]
        )
        == call.request
    )
    assert ("x-pkggov-principal", "alice") in call.metadata
    assert out == (
        "VERSION  RESULT    STATUS/ERROR  REVISION/MESSAGE\n"
        "1.0.0    restored  Published     REV5\n"
        "1 restored, 0 failed\n"
    )
    assert [] == fake.calls


def test_restore_with_failed_versions_exits_3_in_request_order(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _restored(fake, "1.0.0", "REV5")
    failed = fake.restore_response.failed_versions["1.1.0"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS
    failed.error_message = "not archived:\nPublished"

    status = main(_args("restore", target, "1.1.0", "1.0.0"))

    assert 3 == status
    assert capsys.readouterr().out == (
        "VERSION  RESULT    STATUS/ERROR       REVISION/MESSAGE\n"
        "1.1.0    failed    MISMATCHED_STATUS  not archived: Published\n"
        "1.0.0    restored  Published          REV5\n"
        "1 restored, 1 failed\n"
    )


def test_restore_json_is_the_response_with_the_request_id(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _restored(fake, "1.0.0", "REV5")
    request_id = "0F8E6A1C-3B1E-4D2A-9C61-5D2F7E9A0B13"

    status = main(_args("restore", target, "--json", "--request-id", request_id, "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert {
        "successfulVersions": {
            "1.0.0": {
                "revision": "REV5",
                "status": "PACKAGE_VERSION_STATUS_PUBLISHED",
                "restoreMethod": "",
            }
        },
        "failedVersions": {},
        "decisions": {},
        "auditEventId": "",
        "requestId": request_id,
    } == json.loads(out)
    assert request_id == fake.restore_calls[0].request.request_id


def test_restore_error_is_reported_as_for_delete_and_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "policy denies 1 of 1 version(s); nothing was restored",
        reason="POLICY_DENIED",
        denied_versions=[("1.0.0", ["only-the-requester-restores"], "denied")],
    )

    text = main(_args("restore", target, "1.0.0"))
    text_out, text_err = capsys.readouterr()
    as_json = main(_args("restore", target, "--json", "1.0.0"))
    json_out = json.loads(capsys.readouterr().out)

    assert (1, 1, "") == (text, as_json, text_out)
    assert _after_request_id(text_err).startswith(
        "error: PERMISSION_DENIED POLICY_DENIED: policy denies 1 of 1 version(s); "
        "nothing was restored\n"
    )
    assert "  denied 1.0.0: denied\n" in text_err
    assert ("POLICY_DENIED", fake.restore_calls[1].request.request_id) == (
        json_out["error"]["reason"],
        json_out["requestId"],
    )


def test_restore_dry_run_prints_the_plan_and_exits_0_or_3(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.restore_response, "1.0.0", "WOULD_RESTORE", status="Archived")

    every = main(_args("restore", target, "--dry-run", "1.0.0"))
    every_out = capsys.readouterr().out
    add_decision(
        fake.restore_response, "1.1.0", "NOT_PENDING_PURGE", status="Published", message="none"
    )
    add_decision(fake.restore_response, "1.2.0", "REVISION_MISMATCH", status="Archived")
    some = main(_args("restore", target, "--dry-run", "1.0.0", "1.1.0", "1.2.0"))
    some_out, some_err = capsys.readouterr()

    assert (0, 3, "") == (every, some, some_err)
    assert [True, True] == [call.request.validate_only for call in fake.restore_calls]
    assert ["", ""] == [call.request.request_id for call in fake.restore_calls]
    assert every_out.splitlines()[-1] == "dry run: 1 would be restored; nothing was restored"
    assert some_out == (
        "VERSION  DECISION           STATUS     LATEST  POLICIES / MESSAGE\n"
        "1.0.0    would restore      Archived   no      -\n"
        "1.1.0    not pending purge  Published  no      none\n"
        "1.2.0    revision mismatch  Archived   no      -\n"
        "dry run: 1 would be restored, 1 not pending purge, 1 revision mismatch; "
        "nothing was restored\n"
    )


def test_restore_dry_run_with_a_denied_version_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.restore_response, "1.0.0", "WOULD_RESTORE", status="Archived")
    add_decision(fake.restore_response, "1.1.0", "DENIED", status="Archived", message="denied")

    status = main(_args("restore", target, "--dry-run", "1.0.0", "1.1.0"))

    assert 1 == status
    assert capsys.readouterr().err == (
        "error: the real call would fail with PERMISSION_DENIED (POLICY_DENIED): policy denies "
        "1 of 2 version(s) (1.1.0)\n"
    )


def test_restore_dry_run_without_a_plan_back_is_an_error(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _restored(fake, "1.0.0", "REV5")  # as a gateway would that ignores validate_only

    assert 1 == main(_args("restore", target, "--dry-run", "1.0.0"))
    assert capsys.readouterr().err == (
        "error: the gateway returned no dry-run plan; it RESTORED 1 version(s) "
        "(it may be too old to support --dry-run)\n"
    )


def test_restore_reads_versions_from_a_file_and_refuses_none(
    fake: FakeGateway,
    target: str,
    tmp_path: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed = tmp_path / "versions.txt"  # type: ignore[operator]
    listed.write_text("1.0.0\n# a comment\n1.1.0\n")

    from_file = main(_args("restore", target, "--versions-from", str(listed), "0.9.0"))
    without = main(_args("restore", target))

    assert (0, 2) == (from_file, without)
    assert ["0.9.0", "1.0.0", "1.1.0"] == list(fake.restore_calls[0].request.versions)
    assert "pkggov restore: error: no versions given" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--allow-partial", "1.0.0"], "unknown option --allow-partial"),
        (["--expected-status", "Archived", "1.0.0"], "unknown option --expected-status"),
        (["--request-id", "retry-1", "1.0.0"], "invalid request id 'retry-1'"),
        (["--format", "rpm", "1.0.0"], "invalid format 'rpm'"),
        (["1.0\udcff"], "argument VERSION: not UTF-8 text: '1.0\\xff'"),
    ],
)
def test_restore_usage_errors_exit_2_before_calling(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    complaint: str,
) -> None:
    status = main(_args("restore", target, *extra))

    assert (2, []) == (status, fake.restore_calls)
    assert complaint in capsys.readouterr().err


# --- pkggov pending list ---------------------------------------------------------------------


def _pending(version: str, **fields: Any) -> pb.PendingPurge:
    values: dict[str, Any] = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": pb.PackageFormat.PACKAGE_FORMAT_NPM,
        "package": "widgets",
        "version": version,
        "revision": f"REV-{version}",
        "previous_status": _PUBLISHED,
        "requester": "alice",
        "archive_event_id": _EVENT,
    }
    purge = pb.PendingPurge(**(values | fields))
    purge.purge_time.FromDatetime(_PURGE_AT)
    purge.archive_time.FromDatetime(datetime(2026, 12, 29, 10, 0, tzinfo=UTC))
    return purge


def test_pending_list_sends_the_filters_and_the_page_size(fake: FakeGateway, target: str) -> None:
    status = main(
        [
            "pending",
            "list",
            "--target",
            target,
            "--as",
            "carol",
            *("--domain", "demo", "--repository", "dev-shared", "--package", "widgets"),
            *("--requester", "alice", "--due-before", "2027-01-05T12:00:00+02:00"),
            *("--page-size", "7", "--page-token", "t-1"),
        ]
    )

    [call] = fake.pending_calls
    assert 0 == status
    assert ("demo", "dev-shared", "widgets", "alice", 7, "t-1") == (
        call.request.domain,
        call.request.repository,
        call.request.package,
        call.request.requester,
        call.request.page_size,
        call.request.page_token,
    )
    assert "2027-01-05T10:00:00Z" == call.request.due_before.ToJsonString()
    assert ("x-pkggov-principal", "carol") in call.metadata


def test_pending_list_asks_for_20_by_default_and_sends_no_filter_not_given(
    fake: FakeGateway, target: str
) -> None:
    assert 0 == main(["pending", "list", "--target", target])

    assert pb.ListPendingPurgesRequest(page_size=20) == fake.pending_calls[0].request


def test_pending_list_due_before_without_an_offset_is_local_time(
    fake: FakeGateway, target: str
) -> None:
    assert 0 == main(["pending", "list", "--target", target, "--due-before", "2027-01-05T10:00"])

    expected = datetime(2027, 1, 5, 10, 0).astimezone()  # local time, as documented
    sent = fake.pending_calls[0].request.due_before.ToDatetime(tzinfo=UTC)
    assert expected == sent


def test_pending_list_prints_a_table_and_the_next_page_token(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(
        pending_purges=[
            _pending("1.0.0", namespace="acme", attempts=2, last_error="throttled,\nretrying"),
            _pending("0.9.0", domain_owner="111122223333"),
        ],
        next_page_token="t-2",
    )

    status = main(["pending", "list", "--target", target])

    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out == (
        "PURGE AT              FORMAT  PACKAGE                               VERSION  "
        "RESTORES TO  REQUESTER  ARCHIVED AT           ATTEMPTS  LAST ERROR\n"
        "2027-01-05T10:00:00Z  npm     demo/dev-shared/acme/widgets          1.0.0    "
        "Published    alice      2026-12-29T10:00:00Z  2         throttled, retrying\n"
        "2027-01-05T10:00:00Z  npm     demo@111122223333/dev-shared/widgets  0.9.0    "
        "Published    alice      2026-12-29T10:00:00Z  0         -\n"
        "more: --page-token t-2\n"
    )


def test_pending_list_escapes_every_recorded_value(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(
        pending_purges=[_pending("1.0\x1b[2J", requester="eve\u202e", last_error="\x07")],
        next_page_token="t\x1b",
    )

    assert 0 == main(["pending", "list", "--target", target])

    out = capsys.readouterr().out
    assert [] == [char for char in ("\x1b", "\u202e", "\x07") if char in out]
    for shown in ("1.0\\x1b[2J", "eve\\u202e", "\\x07", "more: --page-token t\\x1b"):
        assert shown in out


def test_pending_list_all_follows_the_page_tokens_into_one_table(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(
        pending_purges=[_pending("1.0.0")], next_page_token="t-2"
    )
    fake.pending_pages["t-2"] = pb.ListPendingPurgesResponse(
        pending_purges=[_pending("1.1.0")], next_page_token="t-3"
    )
    fake.pending_pages["t-3"] = pb.ListPendingPurgesResponse(pending_purges=[_pending("1.2.0")])

    status = main(["pending", "list", "--target", target, "--all", "--requester", "alice"])

    lines = capsys.readouterr().out.splitlines()
    assert 0 == status
    assert ["1.0.0", "1.1.0", "1.2.0"] == [line.split()[3] for line in lines[1:]]
    assert [("", 500), ("t-2", 500), ("t-3", 500)] == [
        (call.request.page_token, call.request.page_size) for call in fake.pending_calls
    ]
    assert {"alice"} == {call.request.requester for call in fake.pending_calls}


def test_pending_list_all_as_json_is_one_response_with_every_purge(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pending_pages["t-1"] = pb.ListPendingPurgesResponse(
        pending_purges=[_pending("1.0.0")], next_page_token="t-2"
    )
    fake.pending_pages["t-2"] = pb.ListPendingPurgesResponse(pending_purges=[_pending("1.1.0")])

    status = main(
        [
            *("pending", "list", "--target", target, "--all", "--json"),
            *("--page-size", "1", "--page-token", "t-1"),
        ]
    )

    page = json.loads(capsys.readouterr().out)
    assert 0 == status
    assert [("t-1", 1), ("t-2", 1)] == [
        (call.request.page_token, call.request.page_size) for call in fake.pending_calls
    ]
    assert "" == page["nextPageToken"]
    assert ["1.0.0", "1.1.0"] == [purge["version"] for purge in page["pendingPurges"]]
    assert {
        "domain": "demo",
        "domainOwner": "",
        "repository": "dev-shared",
        "format": "PACKAGE_FORMAT_NPM",
        "namespace": "",
        "package": "widgets",
        "version": "1.0.0",
        "revision": "REV-1.0.0",
        "previousStatus": "PACKAGE_VERSION_STATUS_PUBLISHED",
        "requester": "alice",
        "archiveEventId": _EVENT,
        "archiveTime": "2026-12-29T10:00:00Z",
        "purgeTime": "2027-01-05T10:00:00Z",
        "attempts": 0,
        "lastError": "",
    } == page["pendingPurges"][0]


def test_pending_list_all_stops_on_a_page_token_seen_before(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(next_page_token="t-1")
    fake.pending_pages["t-1"] = pb.ListPendingPurgesResponse(next_page_token="t-1")

    status = main(["pending", "list", "--target", target, "--all"])

    out, err = capsys.readouterr()
    assert (1, "", 2) == (status, out, len(fake.pending_calls))
    assert "returned a page token it had returned before" in err


def test_pending_list_error_is_reported_and_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "no policy permits reading the audit record",
        reason="POLICY_DENIED",
    )

    text = main(["pending", "list", "--target", target, "--as", "bob"])
    text_out, text_err = capsys.readouterr()
    as_json = main(["pending", "list", "--target", target, "--json"])
    json_out = json.loads(capsys.readouterr().out)

    assert (1, 1, "") == (text, as_json, text_out)
    assert text_err.startswith(
        "error: PERMISSION_DENIED POLICY_DENIED: no policy permits reading the audit record"
    )
    assert ("PERMISSION_DENIED", "POLICY_DENIED") == (
        json_out["error"]["status"],
        json_out["error"]["reason"],
    )


def test_pending_list_all_fails_when_a_later_page_fails(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listing cut short by an error is not printed as if whole."""
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(
        pending_purges=[_pending("1.0.0")], next_page_token="t-2"
    )

    class _FailSecond(FakeGateway):
        def ListPendingPurges(  # noqa: N802 - the generated servicer's name
            self, request: pb.ListPendingPurgesRequest, context: grpc.ServicerContext
        ) -> pb.ListPendingPurgesResponse:
            if request.page_token:
                context.abort_with_status(plain_status(grpc.StatusCode.UNAVAILABLE, "gone"))
            return super().ListPendingPurges(request, context)

    failing = _FailSecond(pending_pages=fake.pending_pages)
    with serve(failing) as address:
        status = main(["pending", "list", "--target", address, "--all"])

    out, err = capsys.readouterr()
    assert (1, "") == (status, out)
    assert "UNAVAILABLE" in err


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--page-size", "0"], "invalid page size '0': expected a whole number from 1 to 500"),
        (["--page-size", "501"], "invalid page size '501'"),
        (["--page-size", "ten"], "invalid page size 'ten'"),
        (["--due-before", "next week"], "not an ISO 8601 time: 'next week'"),
        (["--requester", "a\udcff"], "argument --requester: not UTF-8 text"),
        (["--limit", "5"], "unknown option --limit"),
    ],
)
def test_pending_list_usage_errors_exit_2_before_calling(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    complaint: str,
) -> None:
    status = main(["pending", "list", "--target", target, *extra])

    assert (2, []) == (status, fake.pending_calls)
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["restore", "--version"], ["pending", "--version"], ["pending", "list", "--version"]],
)
def test_the_new_commands_print_the_client_version(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pkggov_client._cli_base import client_version

    assert 0 == main(argv)
    assert f"{client_version()}\n" == capsys.readouterr().out


def test_help_documents_the_new_commands_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert 0 == main(["delete", "--help"])
    delete = " ".join(capsys.readouterr().out.split())
    assert 0 == main(["restore", "--help"])
    restore = " ".join(capsys.readouterr().out.split())
    assert 0 == main(["pending", "list", "--help"])
    pending = " ".join(capsys.readouterr().out.split())

    for command in ("restore", "pending"):
        assert command in top
    for text in ("--purge-now", "pkggov restore"):
        assert text in delete
    for option in ("--justification TEXT", "--dry-run", "--request-id UUID", "--json", "--as NAME"):
        assert option in restore
    for option in ("--requester PRINCIPAL", "--due-before TIME", "--page-size N", "--all"):
        assert option in pending
