"""The pkggov CLI prints a table or CodeArtifact JSON, reports RPC errors, and exits 0/3/1/2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from pkggov_client import pb
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, plain_status, rich_status, serve

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
    assert (status, err) == (0, "")
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


def test_json_uses_codeartifact_keys(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _succeed(fake, "1.0.0")
    _fail(fake, "9.9.9", "not found")

    status = main(_delete_args(target, "--json", "1.0.0", "9.9.9"))

    assert status == 3
    assert json.loads(capsys.readouterr().out) == {
        "successfulVersions": {"1.0.0": {"revision": "REV1", "status": "Deleted"}},
        "failedVersions": {"9.9.9": {"errorCode": "NOT_FOUND", "errorMessage": "not found"}},
    }


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


def test_target_defaults_to_the_environment(fake: FakeGateway, target: str) -> None:
    args = _delete_args(target, "1.0.0")
    del args[1:3]  # drop --target

    status = main(args, environ={"PKGGOV_TARGET": target})

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
    assert err == (
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
    assert capsys.readouterr().err == (
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
            "code": "NOT_FOUND",
            "reason": "UPSTREAM_NOT_FOUND",
            "domain": "pkggov.internal",
            "message": "package widgets not found",
            "details": {
                "metadata": {"aws_request_id": "req-1"},
                "fieldViolations": [],
                "resource": {
                    "resourceType": "package",
                    "resourceName": "widgets",
                    "description": "",
                },
                "retryDelaySeconds": None,
            },
        }
    }


def test_error_without_details_prints_one_line(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = plain_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large")

    status = main(_delete_args(target, "1.0.0"))

    assert (status, capsys.readouterr().err) == (
        1,
        "error: RESOURCE_EXHAUSTED: message too large\n",
    )


def test_unreachable_gateway_is_an_rpc_error(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(FakeGateway()) as target:
        pass  # The server is stopped again, so nothing listens on its port.

    status = main(_delete_args(target, "--timeout", "5", "1.0.0"))

    assert status == 1
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--format", "rpm", "1.0"], "invalid format 'rpm'"),
        (["--expected-status", "Gone", "1.0"], "invalid status 'Gone'"),
        (["--header", "novalue", "1.0"], "expected KEY=VALUE"),
        (["--header", "grpc-timeout=1", "1.0"], "invalid metadata key"),
        (["--timeout", "0", "1.0"], "invalid timeout"),
        ([], "required: VERSION"),
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
