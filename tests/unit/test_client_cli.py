"""The pkggov CLI prints a table, a dry-run plan or JSON, reports RPC errors, and exits 0/3/1/2."""

from __future__ import annotations

import argparse
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov_client import pb
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, add_decision, plain_status, rich_status, serve

_REQUEST_ID_LINE = re.compile(
    r"request id ([0-9a-f-]{36}) \(to retry this call safely: --request-id \1\)"
)


def _after_request_id(err: str) -> str:
    """stderr without its first line, which must name the generated request id."""
    first, _, rest = err.partition("\n")
    assert _REQUEST_ID_LINE.fullmatch(first), err
    return rest


_DELETED = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED
_NOT_FOUND = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _delete_args(target: str, *extra: str) -> list[str]:
    return [
        "delete",
        "--target",
        target,
        "--domain",
        "demo",
        "--repository",
        "dev-shared",
        "--format",
        "npm",
        "--package",
        "widgets",
        *extra,
    ]


def _succeed(fake: FakeGateway, *versions: str) -> None:
    for number, version in enumerate(versions, start=1):
        deleted = fake.response.successful_versions[version]
        deleted.revision = f"REV{number}"
        deleted.status = _DELETED


def _fail(fake: FakeGateway, version: str, message: str) -> None:
    failed = fake.response.failed_versions[version]
    failed.error_code = _NOT_FOUND
    failed.error_message = message


def test_all_deleted_prints_table_and_exits_0(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _succeed(fake, "1.0.0", "1.0.1")

    status = main(_delete_args(target, "1.0.1", "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, _after_request_id(err)) == (0, "")
    assert out == (
        "VERSION  RESULT   STATUS/ERROR  REVISION/MESSAGE\n"
        "1.0.1    deleted  Deleted       REV2\n"
        "1.0.0    deleted  Deleted       REV1\n"
        "2 deleted, 0 failed\n"
    )


def test_partial_failure_lists_failures_in_request_order_and_exits_3(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _succeed(fake, "1.0.0", "2.0.0")
    _fail(fake, "9.9.9", "Version 9.9.9 was\nnot found")

    status = main(_delete_args(target, "2.0.0", "9.9.9", "1.0.0"))

    assert status == 3
    assert capsys.readouterr().out == (
        "VERSION  RESULT   STATUS/ERROR  REVISION/MESSAGE\n"
        "2.0.0    deleted  Deleted       REV2\n"
        "9.9.9    failed   NOT_FOUND     Version 9.9.9 was not found\n"
        "1.0.0    deleted  Deleted       REV1\n"
        "2 deleted, 1 failed\n"
    )


def test_json_is_the_response_in_proto3_json_with_the_request_id(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: every response field in the proto3 JSON mapping (lowerCamelCase, enum names,
    empty maps too), the audit event id, and the request id sent; nothing on stderr."""
    _succeed(fake, "1.0.0")
    _fail(fake, "9.9.9", "not found")
    fake.response.audit_event_id = "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"

    status = main(_delete_args(target, "--json", "1.0.0", "9.9.9"))

    out, err = capsys.readouterr()
    assert (status, err) == (3, "")
    assert json.loads(out) == {
        "successfulVersions": {
            "1.0.0": {
                "revision": "REV1",
                "status": "PACKAGE_VERSION_STATUS_DELETED",
                "restoreMethod": "",
            }
        },
        "failedVersions": {
            "9.9.9": {
                "errorCode": "PACKAGE_VERSION_ERROR_CODE_NOT_FOUND",
                "errorMessage": "not found",
            }
        },
        "decisions": {},
        "auditEventId": "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
        "requestId": fake.calls[0].request.request_id,
    }


def test_text_output_names_the_audit_event_on_stderr(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _succeed(fake, "1.0.0")
    fake.response.audit_event_id = "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"

    assert 0 == main(_delete_args(target, "1.0.0"))

    err = _after_request_id(capsys.readouterr().err)
    assert "audit event 0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13\n" == err


def test_a_request_id_is_made_printed_first_and_sent(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --request-id: a new UUID4 for each call, printed on stderr before the call."""
    main(_delete_args(target, "1.0.0"))
    main(_delete_args(target, "1.0.0"))

    printed = [match.group(1) for match in _REQUEST_ID_LINE.finditer(capsys.readouterr().err)]
    sent = [call.request.request_id for call in fake.calls]
    assert sent == printed
    assert sent[0] != sent[1]
    assert all(uuid.UUID(request_id).version == 4 for request_id in sent)


def test_a_given_request_id_is_sent_as_is_and_not_printed(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = "0F8E6A1C-3B1E-4D2A-9C61-5D2F7E9A0B13"

    status = main(_delete_args(target, "--request-id", request_id, "1.0.0"))

    assert (status, capsys.readouterr().err) == (0, "")
    assert request_id == fake.calls[0].request.request_id


def test_a_request_id_that_is_no_uuid_is_a_usage_error(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(_delete_args(target, "--request-id", "retry-1", "1.0.0"))

    assert (status, fake.calls) == (2, [])
    assert "invalid request id 'retry-1': expected a UUID" in capsys.readouterr().err


def test_the_request_id_of_a_failed_call_is_in_its_json(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A call that failed (a deadline, say) is the one to retry: --json names its id."""
    fake.error = plain_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    status = main(_delete_args(target, "--json", "1.0.0"))

    assert status == 1
    assert fake.calls[0].request.request_id == json.loads(capsys.readouterr().out)["requestId"]


def test_every_option_reaches_the_request(fake: FakeGateway, target: str) -> None:
    status = main(
        [
            *_delete_args(target, "--namespace", "acme", "--domain-owner", "111122223333"),
            "--format",
            "PyPI",
            "--expected-status",
            "unlisted",
            "1.0.0",
            "1.0.1",
        ]
    )

    assert status == 0
    assert [call.request for call in fake.calls] == [
        pb.DeletePackageVersionsRequest(
            request_id=fake.calls[0].request.request_id,
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=pb.PackageFormat.PACKAGE_FORMAT_PYPI,
            namespace="acme",
            package="widgets",
            versions=["1.0.0", "1.0.1"],
            expected_status=pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNLISTED,
        )
    ]


def test_headers_are_sent_as_call_metadata(fake: FakeGateway, target: str) -> None:
    main(_delete_args(target, "--header", "X-Dev-User=alice", "--header", "x-team=a=b", "1.0"))

    sent = fake.calls[0].metadata
    assert [pair for pair in sent if pair[0].startswith("x-")] == [
        ("x-dev-user", "alice"),
        ("x-team", "a=b"),
    ]


@pytest.mark.parametrize("variable", ["PKGGOV_CLI_TARGET", "PKGGOV_TARGET"])
def test_target_defaults_to_the_environment(fake: FakeGateway, target: str, variable: str) -> None:
    args = _delete_args(target, "1.0.0")
    del args[1:3]  # drop --target

    status = main(args, environ={variable: target})

    assert (status, len(fake.calls)) == (0, 1)


def test_pkggov_cli_target_wins_over_the_older_name(fake: FakeGateway, target: str) -> None:
    args = _delete_args(target, "1.0.0")
    del args[1:3]  # drop --target

    status = main(args, environ={"PKGGOV_CLI_TARGET": target, "PKGGOV_TARGET": "127.0.0.1:1"})

    assert (status, len(fake.calls)) == (0, 1)


def test_rpc_error_prints_code_reason_message_and_details(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request breaks field rules",
        reason="INVALID_REQUEST",
        field_violations=[("domain", "must be 2 to 50 characters"), ("versions[0]", "empty")],
        metadata={"aws_request_id": "req-1"},
    )

    status = main(_delete_args(target, "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert _after_request_id(err) == (
        "error: INVALID_ARGUMENT INVALID_REQUEST: the request breaks field rules\n"
        "  domain: must be 2 to 50 characters\n"
        "  versions[0]: empty\n"
        "  metadata: aws_request_id=req-1\n"
    )


def test_rpc_error_with_resource_and_retry_lines(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "CodeArtifact keeps throttling",
        reason="UPSTREAM_THROTTLED",
        resource=("repository", "dev-shared", "in domain demo"),
        retry_after=2.5,
    )

    status = main(_delete_args(target, "1.0.0"))

    assert status == 1
    assert _after_request_id(capsys.readouterr().err) == (
        "error: RESOURCE_EXHAUSTED UPSTREAM_THROTTLED: CodeArtifact keeps throttling\n"
        "  resource: repository dev-shared: in domain demo\n"
        "  retry after: 2.5s\n"
    )


def test_rpc_error_as_json_goes_to_stdout(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.NOT_FOUND,
        "package widgets not found",
        reason="UPSTREAM_NOT_FOUND",
        metadata={"aws_request_id": "req-1"},
        resource=("package", "widgets", ""),
    )

    status = main(_delete_args(target, "--json", "1.0.0"))

    out, err = capsys.readouterr()
    assert (status, err) == (1, "")
    assert json.loads(out) == {
        "error": {
            "code": 5,
            "status": "NOT_FOUND",
            "message": "package widgets not found",
            "reason": "UPSTREAM_NOT_FOUND",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "UPSTREAM_NOT_FOUND",
                    "domain": "pkggov.internal",
                    "metadata": {"aws_request_id": "req-1"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                    "resourceType": "package",
                    "resourceName": "widgets",
                    "owner": "",
                    "description": "",
                },
            ],
        },
        "requestId": fake.calls[0].request.request_id,
    }


def test_error_json_keeps_a_detail_of_a_type_it_does_not_know(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.protobuf import any_pb2
    from google.rpc import status_pb2
    from grpc_status import rpc_status

    status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="odd")
    status.details.append(any_pb2.Any(type_url="type.example.com/acme.Unknown", value=b"\x08\x01"))
    fake.error = rpc_status.to_status(status)

    assert 1 == main(_delete_args(target, "--json", "1.0.0"))

    error = json.loads(capsys.readouterr().out)["error"]
    assert [{"@type": "type.example.com/acme.Unknown", "value": "CAE="}] == error["details"]


def test_error_without_details_prints_one_line(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = plain_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large")

    status = main(_delete_args(target, "1.0.0"))

    assert (status, _after_request_id(capsys.readouterr().err)) == (
        1,
        "error: RESOURCE_EXHAUSTED: message too large\n",
    )


def test_unreachable_gateway_is_an_rpc_error(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(FakeGateway()) as target:
        pass  # The server is stopped again, so nothing listens on its port.

    status = main(_delete_args(target, "--timeout", "5", "1.0.0"))

    err = _after_request_id(capsys.readouterr().err)
    assert status == 1
    assert err.startswith(
        "error: nothing accepts connections at --target: is the gateway running there?\n"
        "  UNAVAILABLE: "
    ), err


def test_unreachable_gateway_as_json_has_the_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(FakeGateway()) as target:
        pass  # The server is stopped again, so nothing listens on its port.

    status = main(_delete_args(target, "--timeout", "5", "--json", "1.0.0"))

    error = json.loads(capsys.readouterr().out)["error"]
    assert (status, error["code"], error["status"], error["reason"], error["details"]) == (
        1,
        14,
        "UNAVAILABLE",
        None,
        [],
    )
    assert (
        "nothing accepts connections at --target: is the gateway running there?" == (error["hint"])
    )


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--format", "rpm", "1.0"], "invalid format 'rpm'"),
        (["--expected-status", "Gone", "1.0"], "invalid status 'Gone'"),
        (["--header", "novalue", "1.0"], "expected KEY=VALUE"),
        (["--header", "grpc-timeout=1", "1.0"], "invalid metadata key"),
        (["--timeout", "0", "1.0"], "invalid timeout"),
        (["--timeout", "1e300", "1.0"], "argument --timeout: invalid timeout '1e300'"),
        (["--timeout", "86401", "1.0"], "at most 86400 (a day)"),
        (["--timeout", "nan", "1.0"], "invalid timeout 'nan'"),
        (["--timeout", "inf", "1.0"], "invalid timeout 'inf'"),
        ([], "no versions given: name them as arguments or with --versions-from"),
        (["-"], "use --versions-from - to read versions from standard input"),
        (["--versions-from", "/nonexistent/versions"], "cannot read /nonexistent/versions"),
        (["--dryrun", "1.0"], "error: unknown option --dryrun; did you mean --dry-run?"),
        (["--dry", "1.0"], "error: unknown option --dry; did you mean --dry-run?"),
        (["--dry-run=1", "--jsn", "1.0"], "unknown option --jsn; did you mean --json?"),
        (["--zzz", "1.0"], "error: unknown option --zzz (see pkggov delete --help)"),
    ],
)
def test_bad_input_is_a_usage_error(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    complaint: str,
) -> None:
    status = main(_delete_args(target, *extra))

    err = capsys.readouterr().err
    assert (status, fake.calls) == (2, [])
    assert complaint in err
    assert "Traceback" not in err


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", "--help"]) == 0
    assert "--expected-status" in capsys.readouterr().out


def _plan(fake: FakeGateway) -> None:
    """Script a dry-run plan with one version of each outcome."""
    add_decision(
        fake.response,
        "1.0.0",
        "WOULD_DELETE",
        policy_ids=["ci-may-delete-prerelease"],
        message="allowed by ci-may-delete-prerelease",
        status="Unlisted",
    )
    add_decision(
        fake.response,
        "1.3.0",
        "DENIED",
        policy_ids=["never-delete-latest"],
        message="denied by never-delete-latest",
        status="Published",
        is_latest=True,
    )
    add_decision(fake.response, "9.9.9", "NOT_FOUND", message="version 9.9.9 does not exist")
    add_decision(
        fake.response,
        "0.9.0",
        "STATUS_MISMATCH",
        message="status is Archived,\nnot Unlisted",
        status="Archived",
    )


def test_dry_run_sends_validate_only_and_prints_the_plan_and_exits_3(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _plan(fake)

    status = main(
        _delete_args(target, "--dry-run", "--allow-partial", "1.3.0", "1.0.0", "9.9.9", "0.9.0")
    )

    out, err = capsys.readouterr()
    assert (status, err) == (3, "")
    assert (True, True, "") == (
        fake.calls[0].request.validate_only,
        fake.calls[0].request.allow_partial,
        fake.calls[0].request.request_id,
    )
    assert out == (
        "VERSION  DECISION         STATUS     LATEST  POLICIES / MESSAGE\n"
        "1.3.0    denied           Published  yes     denied by never-delete-latest\n"
        "1.0.0    would delete     Unlisted   no      allowed by ci-may-delete-prerelease\n"
        "9.9.9    not found        -          no      version 9.9.9 does not exist\n"
        "0.9.0    status mismatch  Archived   no      status is Archived, not Unlisted\n"
        "dry run: 1 would be deleted, 1 denied, 1 not found, 1 status mismatch; "
        "nothing was deleted\n"
    )


def test_dry_run_where_every_version_would_be_deleted_exits_0(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_DELETE", policy_ids=["a"], status="Archived")
    add_decision(fake.response, "1.0.1", "WOULD_DELETE", policy_ids=["a", "b"], message="ok by b")

    status = main(_delete_args(target, "--dry-run", "1.0.0", "1.0.1"))

    assert status == 0
    assert capsys.readouterr().out == (
        "VERSION  DECISION      STATUS    LATEST  POLICIES / MESSAGE\n"
        "1.0.0    would delete  Archived  no      a\n"
        "1.0.1    would delete  -         no      a: ok by b\n"
        "dry run: 2 would be deleted; nothing was deleted\n"
    )


def test_dry_run_with_a_denied_version_prints_the_whole_plan_and_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --allow-partial the real call would fail on 1.3.0: the plan still shows every
    version (the dry run is sent with allow_partial), stderr says why, and the exit is 1."""
    _plan(fake)

    status = main(_delete_args(target, "--dry-run", "1.3.0", "1.0.0", "9.9.9", "0.9.0"))

    out, err = capsys.readouterr()
    assert status == 1
    assert fake.calls[0].request.allow_partial
    assert 4 + 2 == len(out.splitlines())
    assert out.splitlines()[1].split()[:2] == ["1.3.0", "denied"]
    assert err == (
        "error: the real call would fail with PERMISSION_DENIED (POLICY_DENIED): policy denies "
        "1 of 4 version(s) (1.3.0); with --allow-partial it would delete the allowed ones and "
        "report these NOT_ALLOWED\n"
    )


def test_dry_run_json_prints_the_decisions(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan in proto3 JSON, in request order; exit 1 as 1.3.0 is denied."""
    _plan(fake)

    status = main(_delete_args(target, "--dry-run", "--json", "1.3.0", "1.0.0", "9.9.9", "0.9.0"))

    out, err = capsys.readouterr()
    assert (status, err) == (1, "")
    assert ["1.3.0", "1.0.0", "9.9.9", "0.9.0"] == list(json.loads(out)["decisions"])
    assert json.loads(out) == {
        "successfulVersions": {},
        "failedVersions": {},
        "auditEventId": "",
        "decisions": {
            "1.3.0": {
                "outcome": "VERSION_OUTCOME_DENIED",
                "policyIds": ["never-delete-latest"],
                "message": "denied by never-delete-latest",
                "status": "PACKAGE_VERSION_STATUS_PUBLISHED",
                "isLatest": True,
            },
            "1.0.0": {
                "outcome": "VERSION_OUTCOME_WOULD_DELETE",
                "policyIds": ["ci-may-delete-prerelease"],
                "message": "allowed by ci-may-delete-prerelease",
                "status": "PACKAGE_VERSION_STATUS_UNLISTED",
                "isLatest": False,
            },
            "9.9.9": {
                "outcome": "VERSION_OUTCOME_NOT_FOUND",
                "policyIds": [],
                "message": "version 9.9.9 does not exist",
                "status": "PACKAGE_VERSION_STATUS_UNSPECIFIED",
                "isLatest": False,
            },
            "0.9.0": {
                "outcome": "VERSION_OUTCOME_STATUS_MISMATCH",
                "policyIds": [],
                "message": "status is Archived,\nnot Unlisted",
                "status": "PACKAGE_VERSION_STATUS_ARCHIVED",
                "isLatest": False,
            },
        },
    }


def test_dry_run_with_a_request_id_sends_and_prints_it(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run makes no request id of its own (it changes nothing), but sends a given one."""
    add_decision(fake.response, "1.0.0", "WOULD_DELETE")
    request_id = str(uuid.uuid4())

    status = main(_delete_args(target, "--dry-run", "--json", "--request-id", request_id, "1"))

    assert (status, fake.calls[0].request.request_id) == (0, request_id)
    assert request_id == json.loads(capsys.readouterr().out)["requestId"]


def test_dry_run_json_where_every_version_would_be_deleted_exits_0(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_DELETE")

    status = main(_delete_args(target, "--dry-run", "--json", "1.0.0"))

    assert status == 0
    assert ["1.0.0"] == list(json.loads(capsys.readouterr().out)["decisions"])


_POLICY_DENIED = rich_status(
    grpc.StatusCode.PERMISSION_DENIED,
    "policy denies 2 of 3 versions",
    reason="POLICY_DENIED",
    denied_versions=[
        ("1.3.0", ["never-delete-latest"], "denied by never-delete-latest"),
        ("2.0.0", [], "denied: no policy permits it"),
    ],
    denied_omitted=12,
)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["real", "dry-run"])
def test_policy_denial_lists_the_denied_versions_and_exits_1(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str], dry_run: list[str]
) -> None:
    fake.error = _POLICY_DENIED

    status = main(_delete_args(target, *dry_run, "1.0.0", "1.3.0", "2.0.0"))

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert (err if dry_run else _after_request_id(err)) == (
        "error: PERMISSION_DENIED POLICY_DENIED: policy denies 2 of 3 versions\n"
        "  denied 1.3.0: denied by never-delete-latest\n"
        "  denied 2.0.0: denied: no policy permits it\n"
        "  \u2026 and 12 more denied\n"
    )


def test_policy_denial_as_json_has_the_denied_versions(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = _POLICY_DENIED

    status = main(_delete_args(target, "--json", "1.3.0"))

    error = json.loads(capsys.readouterr().out)["error"]
    assert (status, error["status"], error["reason"]) == (1, "PERMISSION_DENIED", "POLICY_DENIED")
    assert error["details"][1] == {
        "@type": "type.googleapis.com/pkggov.v1.PolicyDenial",
        "deniedVersions": [
            {
                "version": "1.3.0",
                "policyIds": ["never-delete-latest"],
                "reason": "denied by never-delete-latest",
            },
            {"version": "2.0.0", "policyIds": [], "reason": "denied: no policy permits it"},
        ],
        "omittedCount": 12,
    }


def test_version_limit_prints_the_quota_violation(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "3 versions requested, at most 2 allowed",
        reason="VERSION_LIMIT_EXCEEDED",
        quota_violations=[("versions per call for groups: ci", "at most 2 versions per call")],
    )

    status = main(_delete_args(target, "1", "2", "3"))

    assert (status, _after_request_id(capsys.readouterr().err)) == (
        1,
        "error: PERMISSION_DENIED VERSION_LIMIT_EXCEEDED: 3 versions requested, at most 2 "
        "allowed\n"
        "  quota: versions per call for groups: ci: at most 2 versions per call\n",
    )


def test_dry_run_that_gets_no_plan_back_is_an_error(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _succeed(fake, "1.0.0")  # as a gateway would that ignores validate_only

    status = main(_delete_args(target, "--dry-run", "1.0.0"))

    out, err = capsys.readouterr()
    assert status == 1
    assert err == (
        "error: the gateway returned no dry-run plan; it DELETED 1 version(s) "
        "(it may be too old to support --dry-run)\n"
    )
    assert out.splitlines()[1:] == ["1.0.0    deleted  Deleted       REV1", "1 deleted, 0 failed"]


def test_justification_and_allow_partial_reach_the_request(fake: FakeGateway, target: str) -> None:
    status = main(
        _delete_args(target, "--justification", "CVE-2025-1234 clean-up", "--allow-partial", "1")
    )

    request = fake.calls[0].request
    assert status == 0
    assert ("CVE-2025-1234 clean-up", True, False) == (
        request.justification,
        request.allow_partial,
        request.validate_only,
    )


def test_new_request_fields_default_to_unset(fake: FakeGateway, target: str) -> None:
    main(_delete_args(target, "1.0.0"))

    request = fake.calls[0].request
    assert ("", False, False) == (
        request.justification,
        request.allow_partial,
        request.validate_only,
    )


@pytest.mark.parametrize("flag", ["--as", "--principal"])
def test_principal_is_sent_as_the_development_identity_header(
    fake: FakeGateway, target: str, flag: str
) -> None:
    """--as NAME (and on delete its older spelling --principal NAME) sends the dev header."""
    main(_delete_args(target, flag, "alice", "--header", "x-team=a", "1.0.0"))

    sent = fake.calls[0].metadata
    assert [("x-team", "a"), ("x-pkggov-principal", "alice")] == [
        pair for pair in sent if pair[0].startswith("x-")
    ]


def test_principal_key_comes_from_the_environment(fake: FakeGateway, target: str) -> None:
    main(
        _delete_args(target, "--principal", "alice", "1.0.0"),
        environ={"PKGGOV_CLI_PRINCIPAL_KEY": "X-Dev-User"},
    )

    assert [("x-dev-user", "alice")] == [
        pair for pair in fake.calls[0].metadata if pair[0].startswith("x-")
    ]


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--principal", "a", "--header", "x-pkggov-principal=b"], "use one"),
        (["--as", "a", "--header", "x-pkggov-principal=b"], "use one"),
        (["--principal", ""], "invalid principal"),
        (["--principal", "a\tb"], "invalid metadata value"),
    ],
)
def test_bad_principal_is_a_usage_error(
    fake: FakeGateway,
    target: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    complaint: str,
) -> None:
    status = main(_delete_args(target, *extra, "1.0.0"))

    assert (status, fake.calls) == (2, [])
    assert complaint in capsys.readouterr().err


def test_bad_principal_key_in_the_environment_is_a_usage_error(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        _delete_args(target, "--principal", "alice", "1.0.0"),
        environ={"PKGGOV_CLI_PRINCIPAL_KEY": "bad key"},
    )

    assert (status, fake.calls) == (2, [])
    assert "$PKGGOV_CLI_PRINCIPAL_KEY" in capsys.readouterr().err


def test_delete_help_documents_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", "--help"]) == 0

    text = " ".join(capsys.readouterr().out.split())
    for option in (
        "--dry-run",
        "--allow-partial",
        "--justification TEXT",
        "--as NAME",
        "--principal NAME",
        "--request-id UUID",
        "--versions-from FILE",
        "$PKGGOV_CLI_TARGET",
        "$PKGGOV_CLI_PRINCIPAL_KEY",
    ):
        assert option in text
    assert "development mode only" in text


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["policy"], "policy"),
        (["policy", "--policies", "p", "test", "cases.yaml"], "policy"),
        (["policy", "--help"], "policy"),
        (["audit", "verify", "--store", "sqlite:a.db", "--json"], "audit verify"),
    ],
)
def test_operator_commands_say_they_moved_to_pkggov_admin(
    capsys: pytest.CaptureFixture[str], argv: list[str], command: str
) -> None:
    """`pkggov policy ...` and `pkggov audit verify ...` (now `pkggov-admin`, installed with the
    gateway): exit 2 and one line on stderr naming the new command, whatever the arguments."""
    assert 2 == main(argv)
    output = capsys.readouterr()
    moved = (
        f"pkggov {command}: moved to `pkggov-admin {command}`, which is installed with the "
        "gateway (the pkggov distribution), not with pkggov-client"
    )
    assert ("", [moved]) == (output.out, output.err.splitlines())


def test_versions_come_from_arguments_then_files_then_standard_input(
    fake: FakeGateway,
    target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--versions-from FILE and --versions-from - (standard input) add to the VERSION
    arguments, in order; blank lines and text after # are left out."""
    listed = tmp_path / "versions.txt"
    listed.write_text("# stale pre-releases\n2.0.0-rc.1\n\n  2.0.0-rc.2  # the last rc\r\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("3.0.0\n#3.0.1\n"))

    status = main(
        _delete_args(target, "1.0.0", "--versions-from", str(listed), "--versions-from", "-")
    )

    assert status == 0
    assert ["1.0.0", "2.0.0-rc.1", "2.0.0-rc.2", "3.0.0"] == list(fake.calls[0].request.versions)


def test_versions_from_standard_input_alone(
    fake: FakeGateway, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("1.0.0\n1.0.1"))

    assert 0 == main(_delete_args(target, "--versions-from", "-"))
    assert ["1.0.0", "1.0.1"] == list(fake.calls[0].request.versions)


@pytest.mark.parametrize(
    ("text", "versions"),
    [
        ("1.0.0\n\n1.0.1\n", ["1.0.0", "1.0.1"]),
        ("  1.0.0\t\r\n# all\n#\n", ["1.0.0"]),
        ("1.0.0#comment\n", ["1.0.0"]),
        ("-\n", ["-"]),  # a version named "-" (CodeArtifact allows it) from a file
        ("1.0\u00a0beta\n", ["1.0\u00a0beta"]),  # not ASCII whitespace: part of the version
        ("1.0\u2028\n", ["1.0\u2028"]),  # not a line break here: only \n ends a line
        ("", []),
    ],
)
def test_parse_versions_reads_one_version_per_line(text: str, versions: list[str]) -> None:
    from pkggov_client.cli import parse_versions

    assert versions == parse_versions(text, "f")


def test_parse_versions_refuses_two_words_on_a_line() -> None:
    from pkggov_client._cli_base import UsageError
    from pkggov_client.cli import parse_versions

    with pytest.raises(UsageError, match=r"^f:2: expected one version per line, got '1.0 2.0'$"):
        parse_versions("0.9\n1.0 2.0\n", "f")


def test_a_versions_file_with_two_words_on_a_line_is_a_usage_error(
    fake: FakeGateway, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = tmp_path / "v.txt"
    listed.write_text("1.0 2.0\n")

    status = main(_delete_args(target, "--versions-from", str(listed)))

    assert (status, fake.calls) == (2, [])
    assert f"{listed}:1: expected one version per line" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["delete", "--version"],
        ["audit", "--version"],
        ["audit", "list", "--version"],
        ["audit", "show", "--version"],
    ],
)
def test_every_command_prints_the_client_version(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pkggov_client._cli_base import client_version

    assert 0 == main(argv)
    assert f"{client_version()}\n" == capsys.readouterr().out
    assert re.fullmatch(r"pkggov(-client)? \d+\.\d+\.\d+\S*", client_version())


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["audit", "list", "--limt", "5"], "unknown option --limt; did you mean --limit?"),
        (["audit", "list", "--principal", "carol"], "--principal is ambiguous in `pkggov audit`"),
        (["audit", "show", "--principal", "carol", "x"], "use --as NAME to call as NAME"),
        (["audit", "list", "--caller", "bob"], "--caller is now --by PRINCIPAL"),
        (["audit", "list", "--version", "1.0.0"], None),  # --version: the client's, exit 0
        (["--dryrun"], "unknown option --dryrun (see pkggov --help)"),
    ],
)
def test_audit_flags_that_could_be_confused_are_refused(
    argv: list[str], complaint: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(argv)

    assert (0 if complaint is None else 2) == status
    assert complaint is None or complaint in capsys.readouterr().err


class _BrokenPipe(io.StringIO):
    """A stdout whose reader has gone: every write fails with EPIPE."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["table", "json"])
def test_a_reader_that_went_away_does_not_change_the_exit_status(
    fake: FakeGateway, target: str, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    """`pkggov delete ... | head -0`: the call's own status (3 here), not a failure."""
    _succeed(fake, "1.0.0")
    _fail(fake, "9.9.9", "not found")
    monkeypatch.setattr("sys.stdout", _BrokenPipe())

    assert 3 == main(_delete_args(target, *extra, "1.0.0", "9.9.9"))
    assert 1 == len(fake.calls)


_UNAVAILABLE = "failed to connect to all addresses; last error: "


@pytest.mark.parametrize(
    ("message", "tls", "client_certificate", "hint"),
    [
        (
            _UNAVAILABLE + "UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE)"
            ": SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
            "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK",
            True,
            True,
            "we do not trust the gateway's certificate (unable to get local issuer certificate): "
            "--cacert must hold the CA that issued it",
        ),
        (
            _UNAVAILABLE + "UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            True,
            True,
            "the gateway closed the connection after the TLS handshake: it most likely refused "
            "our client certificate (expired, not yet valid, or not issued by a CA it trusts)",
        ),
        (
            _UNAVAILABLE + "UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            True,
            False,
            "the gateway closed the connection after the TLS handshake: it most likely "
            "requires a client certificate (--cert, --key)",
        ),
        (
            _UNAVAILABLE + "UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            False,
            False,
            "the gateway closed the connection before answering: if it serves TLS, pass "
            "--cacert (and --cert, --key for mTLS)",
        ),
        (
            "Ssl handshake failed: SSL_ERROR_SSL: error:10000410:SSL routines:"
            "OPENSSL_internal:SSLV3_ALERT_HANDSHAKE_FAILURE: tlsv13 alert certificate required",
            True,
            False,
            "the gateway refused the connection: it requires a client certificate (--cert, --key)",
        ),
        (
            "Ssl handshake failed: SSL_ERROR_SSL: error:10000415: sslv3 alert certificate expired",
            True,
            True,
            "the gateway refused our client certificate (certificate expired)",
        ),
        (
            _UNAVAILABLE + "UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE)"
            ": SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER",
            True,
            False,
            "the gateway did not answer in TLS: it probably serves plaintext (drop --cacert)",
        ),
        (
            _UNAVAILABLE + "UNKNOWN: ipv4:127.0.0.1:1: Custom verification check failed with "
            "error: UNAUTHENTICATED: Hostname Verification Check failed.",
            True,
            False,
            "the gateway's certificate does not name the host in --target: connect by a name or "
            "address the certificate lists",
        ),
        (
            _UNAVAILABLE + "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: "
            "Connection refused",
            False,
            False,
            "nothing accepts connections at --target: is the gateway running there?",
        ),
        ("the gateway is draining", False, False, None),
    ],
)
def test_connection_hint_says_which_side_refused_and_why(
    message: str, tls: bool, client_certificate: bool, hint: str | None
) -> None:
    from pkggov_client import PkggovError
    from pkggov_client._cli_base import connection_hint

    error = PkggovError(grpc.StatusCode.UNAVAILABLE, message)

    assert hint == connection_hint(error, tls=tls, client_certificate=client_certificate)


def test_connection_hint_leaves_gateway_errors_alone() -> None:
    """An UNAVAILABLE the gateway sent (it has a reason) is not a failed connection."""
    from pkggov_client import PkggovError
    from pkggov_client._cli_base import connection_hint

    error = PkggovError(grpc.StatusCode.UNAVAILABLE, "Socket closed", reason="AUDIT_UNAVAILABLE")

    assert None is connection_hint(error, tls=True, client_certificate=True)


class _FakeAudit(pb.AuditServiceServicer):
    """An AuditService that answers one scripted event and records the list requests."""

    def __init__(self) -> None:
        self.requests: list[pb.ListAuditEventsRequest] = []
        self.metadata: list[tuple[tuple[str, str | bytes], ...]] = []
        self.event = pb.AuditEvent(
            event_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
            principal="alice",
            method="/pkggov.v1.PackageGovernanceService/DeletePackageVersions",
            decision="allowed",
            status_code="OK",
        )
        entry = self.event.entries.add(seq=3, kind="outcome", hash="ab", prev_hash="cd")
        entry.body.update({"versions_deleted": 3, "duration_ms": 12.5, "nested": {"count": [1]}})

    def ListAuditEvents(  # noqa: N802 - the generated servicer's name
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        self.requests.append(request)
        self.metadata.append(tuple(context.invocation_metadata()))
        return pb.ListAuditEventsResponse(events=[self.event], next_page_token="")

    def GetAuditEvent(  # noqa: N802 - the generated servicer's name
        self, request: pb.GetAuditEventRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditEventResponse:
        return pb.GetAuditEventResponse(event=self.event)


@pytest.fixture
def audit() -> Iterator[tuple[_FakeAudit, str]]:
    from concurrent import futures

    fake = _FakeAudit()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb.add_AuditServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def test_audit_list_calls_as_one_principal_and_filters_by_another(
    audit: tuple[_FakeAudit, str],
) -> None:
    """--as carol is who calls (the development header); --by bob whose events are listed."""
    fake, address = audit

    status = main(["audit", "list", "--target", address, "--as", "carol", "--by", "bob"])

    assert status == 0
    assert "bob" == fake.requests[0].principal
    assert ("x-pkggov-principal", "carol") in fake.metadata[0]


def test_audit_list_json_is_proto3_json(
    audit: tuple[_FakeAudit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = audit

    assert 0 == main(["audit", "list", "--target", address, "--json"])

    page = json.loads(capsys.readouterr().out)
    assert "" == page["nextPageToken"]
    event = page["events"][0]
    assert ("0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13", "OK") == (event["eventId"], event["statusCode"])
    assert {"versions_deleted": 3, "duration_ms": 12.5, "nested": {"count": [1]}} == (
        event["entries"][0]["body"]
    )


def test_audit_show_prints_integers_as_integers(
    audit: tuple[_FakeAudit, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A Struct holds every number as a double: 3 is shown as 3, not 3.0; 12.5 stays."""
    _, address = audit

    assert 0 == main(["audit", "show", "--target", address, "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"])

    out = capsys.readouterr().out
    assert '"versions_deleted": 3\n' in out
    assert '"duration_ms": 12.5,' in out
    assert '"count": [\n      1\n    ]' in out
    assert ".0" not in out


# --- input that is not UTF-8, and TLS files that cannot work ---------------------------------


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _commands(command)


def test_every_argument_that_takes_text_has_a_type_that_checks_it() -> None:
    """Without a type, argparse takes any argument, and protobuf fails on one that is not
    UTF-8 with a traceback; a Path (a local file's name) may hold any bytes."""
    from pkggov_client._cli_base import text_arg
    from pkggov_client.cli import build_parser

    untyped = [
        f"{command.prog} {action.dest}"
        for command in _commands(build_parser({}))
        for action in command._actions
        if action.nargs != 0
        and action.type in (None, str)
        and not isinstance(action, argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS  # refused options
        and action.dest != "versions_from"  # a local file's name, which may hold any bytes
    ]
    assert [] == untyped
    assert "1.0-\u03b2" == text_arg("1.0-\u03b2")


_NOT_UTF8 = "1.0\udcff"
"""An argument holding the byte 0xff, as Python hands over argv (surrogateescape)."""


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["delete", "--domain", "demo", _NOT_UTF8], "argument VERSION: not UTF-8 text: '1.0\\xff'"),
        (["delete", "--domain", _NOT_UTF8, "1.0"], "argument --domain: not UTF-8 text"),
        (["delete", "--domain", "d", "--justification", _NOT_UTF8, "1.0"], "--justification"),
        (["audit", "list", "--by", _NOT_UTF8], "argument --by: not UTF-8 text: '1.0\\xff'"),
        (["audit", "list", "--page-token", _NOT_UTF8], "argument --page-token: not UTF-8"),
        (["audit", "show", _NOT_UTF8], "argument EVENT_ID: not UTF-8 text"),
        (["audit", "show", "--target", _NOT_UTF8, "e"], "argument --target: not UTF-8 text"),
    ],
    ids=["version", "domain", "justification", "by", "page-token", "event-id", "target"],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error_naming_it(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "delete":
        argv = [*argv[:1], "--repository", "r", "--format", "npm", "--package", "p", *argv[1:]]

    status = main(argv, environ={"PKGGOV_CLI_TARGET": "127.0.0.1:1"})

    err = capsys.readouterr().err
    assert 2 == status, err
    assert complaint in err
    assert "Traceback" not in err


def test_a_versions_file_that_is_not_utf8_is_a_usage_error_naming_the_line(
    fake: FakeGateway,
    target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed = tmp_path / "v.txt"
    listed.write_bytes(b"1.0\n# caf\xc3\xa9\n2.0\xff\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"1.0\n\xff\xfe\n")))

    from_file = main(_delete_args(target, "--versions-from", str(listed)))
    from_file_err = capsys.readouterr().err
    from_stdin = main(_delete_args(target, "--versions-from", "-"))
    from_stdin_err = capsys.readouterr().err

    assert (from_file, from_stdin, fake.calls) == (2, 2, [])
    assert f"{listed}:3: not UTF-8 text: '2.0\\xff'" in from_file_err
    assert "<stdin>:2: not UTF-8 text: '\\xff\\xfe'" in from_stdin_err


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.certs import make_test_pki

    directory = tmp_path_factory.mktemp("pki")
    (directory / "garbage.pem").write_text("not a certificate\n")
    return make_test_pki(directory)


@pytest.mark.parametrize(
    ("tls", "complaint"),
    [
        (["--cacert", "garbage.pem"], "--cacert {dir}/garbage.pem holds no certificate (PEM)"),
        (["--cacert", "alice.key"], "--cacert {dir}/alice.key holds no certificate (PEM)"),
        (["--cacert", "missing.pem"], "cannot read {dir}/missing.pem: No such file or directory"),
        (
            ["--cacert", "ca.pem", "--cert", "garbage.pem", "--key", "alice.key"],
            "--cert {dir}/garbage.pem holds no certificate (PEM)",
        ),
        (
            ["--cacert", "ca.pem", "--cert", "alice.pem", "--key", "expired.key"],
            "--key {dir}/expired.key is not the key of --cert {dir}/alice.pem",
        ),
        (
            ["--cacert", "ca.pem", "--cert", "alice.pem", "--key", "alice.pem"],
            "--key {dir}/alice.pem holds no private key (PEM)",
        ),
    ],
    ids=["garbage-ca", "key-as-ca", "missing-ca", "garbage-cert", "mismatch", "cert-as-key"],
)
def test_tls_files_that_cannot_work_are_a_usage_error_before_connecting(
    fake: FakeGateway,
    target: str,
    pki: Any,
    capsys: pytest.CaptureFixture[str],
    *,
    tls: list[str],
    complaint: str,
) -> None:
    """gRPC itself would only log "Failed to create security handshaker" and fail the call."""
    files = [str(pki.directory / arg) if not arg.startswith("--") else arg for arg in tls]

    deleting = main(_delete_args(target, *files, "1.0"))
    delete_err = capsys.readouterr().err
    showing = main(["audit", "show", "--target", target, *files, "e"])
    show_err = capsys.readouterr().err

    assert (deleting, showing, fake.calls) == (2, 2, [])
    expected = complaint.format(dir=pki.directory)
    assert f"pkggov delete: error: {expected}\n" == delete_err
    assert f"pkggov audit show: error: {expected}\n" == show_err


def test_an_encrypted_key_is_refused_before_it_is_asked_for(
    fake: FakeGateway, target: str, pki: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.alice.key_pem, password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    tls = ["--cacert", str(pki.ca_pem), "--cert", str(pki.alice.cert), "--key", str(encrypted)]

    assert 2 == main(_delete_args(target, *tls, "1.0"))
    assert f"--key {encrypted} is encrypted" in capsys.readouterr().err
