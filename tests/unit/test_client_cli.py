"""The pkggov CLI prints a table, a dry-run plan or JSON, reports RPC errors, and exits 0/3/1/2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from pkggov_client import pb
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, add_decision, plain_status, rich_status, serve

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
                "deniedVersions": [],
                "deniedOmitted": 0,
                "quotaViolations": [],
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
    assert fake.calls[0].request.validate_only
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


def test_dry_run_json_prints_the_decisions(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _plan(fake)

    status = main(_delete_args(target, "--dry-run", "--json", "1.3.0", "1.0.0", "9.9.9", "0.9.0"))

    out = capsys.readouterr().out
    assert status == 3
    assert ["1.3.0", "1.0.0", "9.9.9", "0.9.0"] == list(json.loads(out)["decisions"])
    assert json.loads(out) == {
        "decisions": {
            "1.3.0": {
                "outcome": "DENIED",
                "policyIds": ["never-delete-latest"],
                "message": "denied by never-delete-latest",
                "status": "Published",
                "isLatest": True,
            },
            "1.0.0": {
                "outcome": "WOULD_DELETE",
                "policyIds": ["ci-may-delete-prerelease"],
                "message": "allowed by ci-may-delete-prerelease",
                "status": "Unlisted",
                "isLatest": False,
            },
            "9.9.9": {
                "outcome": "NOT_FOUND",
                "policyIds": [],
                "message": "version 9.9.9 does not exist",
                "status": None,
                "isLatest": False,
            },
            "0.9.0": {
                "outcome": "STATUS_MISMATCH",
                "policyIds": [],
                "message": "status is Archived,\nnot Unlisted",
                "status": "Archived",
                "isLatest": False,
            },
        }
    }


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
    assert err == (
        "error: PERMISSION_DENIED POLICY_DENIED: policy denies 2 of 3 versions\n"
        "  denied 1.3.0: denied by never-delete-latest\n"
        "  denied 2.0.0: denied: no policy permits it\n"
        "  \u2026 and 12 more denied\n"
    )


def test_policy_denial_as_json_has_the_denied_versions(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = _POLICY_DENIED

    status = main(_delete_args(target, "--dry-run", "--json", "1.3.0"))

    details = json.loads(capsys.readouterr().out)["error"]["details"]
    assert status == 1
    assert (details["deniedVersions"], details["deniedOmitted"], details["quotaViolations"]) == (
        [
            {
                "version": "1.3.0",
                "policyIds": ["never-delete-latest"],
                "reason": "denied by never-delete-latest",
            },
            {"version": "2.0.0", "policyIds": [], "reason": "denied: no policy permits it"},
        ],
        12,
        [],
    )


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

    assert (status, capsys.readouterr().err) == (
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


def test_principal_is_sent_as_the_development_identity_header(
    fake: FakeGateway, target: str
) -> None:
    main(_delete_args(target, "--principal", "alice", "--header", "x-team=a", "1.0.0"))

    sent = fake.calls[0].metadata
    assert [("x-team", "a"), ("x-pkggov-principal", "alice")] == [
        pair for pair in sent if pair[0].startswith("x-")
    ]


def test_principal_key_comes_from_the_environment(fake: FakeGateway, target: str) -> None:
    main(
        _delete_args(target, "--principal", "alice", "1.0.0"),
        environ={"PKGGOV_DEV_PRINCIPAL_KEY": "X-Dev-User"},
    )

    assert [("x-dev-user", "alice")] == [
        pair for pair in fake.calls[0].metadata if pair[0].startswith("x-")
    ]


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--principal", "a", "--header", "x-pkggov-principal=b"], "use one"),
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
        environ={"PKGGOV_DEV_PRINCIPAL_KEY": "bad key"},
    )

    assert (status, fake.calls) == (2, [])
    assert "$PKGGOV_DEV_PRINCIPAL_KEY" in capsys.readouterr().err


def test_delete_help_documents_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", "--help"]) == 0

    text = " ".join(capsys.readouterr().out.split())
    for option in ("--dry-run", "--allow-partial", "--justification TEXT", "--principal NAME"):
        assert option in text
    assert "development mode only" in text


def test_policy_subcommands_are_wired_and_dispatched_through_func(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pkggov_client._policy_cli import run_test, run_validate
    from pkggov_client.cli import build_parser

    parser = build_parser({})

    assert run_validate is parser.parse_args(["policy", "validate"]).func
    assert run_test is parser.parse_args(["policy", "test", "cases.yaml"]).func
    assert main(["policy", "--help"]) == 0
    assert {"validate", "test"} <= set(capsys.readouterr().out.split())
    assert main(["policy"]) == 2
