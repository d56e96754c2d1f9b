"""PkggovClient sends well-formed requests with its metadata and maps replies and errors."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from pkggov_client import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    PkggovClient,
    PkggovError,
    SuccessfulVersion,
    VersionDecision,
    pb,
)
from pkggov_client._errors import DeniedVersion
from pkggov_client.testing import FakeGateway, add_decision, rich_status, serve


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _delete(client: PkggovClient, **overrides: object) -> DeleteResult:
    arguments: dict[str, object] = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "npm",
        "package": "widgets",
        "versions": ["1.0.0"],
    }
    arguments.update(overrides)
    return client.delete_package_versions(**arguments)  # type: ignore[arg-type]


def test_request_carries_every_field_as_proto_values(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client:
        client.delete_package_versions(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=PackageFormat.MAVEN,
            namespace="com.acme",
            package="widgets",
            versions=("1.0.0", "1.0.1"),
            expected_status=PackageVersionStatus.UNLISTED,
            justification="CVE-2025-1234 clean-up",
            validate_only=True,
            allow_partial=True,
        )

    assert [
        pb.DeletePackageVersionsRequest(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=pb.PackageFormat.PACKAGE_FORMAT_MAVEN,
            namespace="com.acme",
            package="widgets",
            versions=["1.0.0", "1.0.1"],
            expected_status=pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNLISTED,
            justification="CVE-2025-1234 clean-up",
            validate_only=True,
            allow_partial=True,
        )
    ] == [call.request for call in fake.calls]


def test_strings_convert_to_enums_and_omitted_fields_stay_empty(
    fake: FakeGateway, target: str
) -> None:
    with PkggovClient(target) as client:
        _delete(client, format="PyPI", expected_status="published")

    request = fake.calls[0].request
    assert request.format == pb.PackageFormat.PACKAGE_FORMAT_PYPI
    assert request.expected_status == pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_PUBLISHED
    assert (request.namespace, request.domain_owner, request.justification) == ("", "", "")
    assert (request.validate_only, request.allow_partial) == (False, False)


def test_no_expected_status_sends_unspecified(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client:
        _delete(client)

    assert (
        fake.calls[0].request.expected_status
        == pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNSPECIFIED
    )


def test_response_maps_into_delete_result(fake: FakeGateway, target: str) -> None:
    deleted = fake.response.successful_versions["1.0.0"]
    deleted.revision = "REV1"
    deleted.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED
    failed = fake.response.failed_versions["0.9.0"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS
    failed.error_message = "status is Archived"

    with PkggovClient(target) as client:
        result = _delete(client, versions=["1.0.0", "0.9.0"])

    assert {"1.0.0": SuccessfulVersion("REV1", PackageVersionStatus.DELETED)} == result.successful
    assert {"0.9.0": FailedVersion("MISMATCHED_STATUS", "status is Archived")} == result.failed
    assert fake.response == result.raw


def test_dry_run_decisions_decode_in_request_order(fake: FakeGateway, target: str) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_DELETE", policy_ids=["ci"], status="Unlisted")
    add_decision(
        fake.response,
        "2.0.0",
        "DENIED",
        policy_ids=["never-delete-latest", "prod-admins"],
        message="denied by never-delete-latest, prod-admins",
        status="Published",
        is_latest=True,
    )
    add_decision(fake.response, "0.1.0", "NOT_FOUND", message="no such version")

    with PkggovClient(target) as client:
        result = _delete(client, versions=["2.0.0", "0.1.0", "1.0.0"], validate_only=True)

    assert ["2.0.0", "0.1.0", "1.0.0"] == list(result.decisions)
    assert {
        "2.0.0": VersionDecision(
            outcome="DENIED",
            policy_ids=("never-delete-latest", "prod-admins"),
            message="denied by never-delete-latest, prod-admins",
            status=PackageVersionStatus.PUBLISHED,
            is_latest=True,
        ),
        "0.1.0": VersionDecision("NOT_FOUND", (), "no such version", None, False),
        "1.0.0": VersionDecision("WOULD_DELETE", ("ci",), "", PackageVersionStatus.UNLISTED, False),
    } == result.decisions
    assert ({}, {}, False) == (result.successful, result.failed, result.all_would_delete)


def test_policy_denial_raises_with_the_denied_versions(fake: FakeGateway, target: str) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "policy denies 1 of 2 versions",
        reason="POLICY_DENIED",
        denied_versions=[("2.0.0", ["never-delete-latest"], "denied by never-delete-latest")],
    )

    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        _delete(client, versions=["1.0.0", "2.0.0"], validate_only=True)

    assert [
        DeniedVersion("2.0.0", ("never-delete-latest",), "denied by never-delete-latest")
    ] == raised.value.denied_versions
    assert raised.value.reason == "POLICY_DENIED"


def test_metadata_is_sent_with_every_call(fake: FakeGateway, target: str) -> None:
    metadata = [("x-dev-user", "alice"), ("x-request-id", "r-1")]
    with PkggovClient(target, metadata=metadata) as client:
        _delete(client)
        _delete(client)

    assert [set(metadata) <= set(call.metadata) for call in fake.calls] == [True, True]


def test_default_deadline_applies_unless_a_call_sets_its_own(
    fake: FakeGateway, target: str
) -> None:
    with PkggovClient(target, timeout=7.0) as client:
        _delete(client)
        _delete(client, timeout=3.0)

    assert [round(call.time_remaining or 0.0) for call in fake.calls] == [7, 3]


def test_error_status_raises_pkggov_error(fake: FakeGateway, target: str) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED, "not allowed", reason="UPSTREAM_ACCESS_DENIED"
    )

    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        _delete(client)

    assert (
        raised.value.code,
        raised.value.reason,
    ) == (grpc.StatusCode.PERMISSION_DENIED, "UPSTREAM_ACCESS_DENIED")
    assert isinstance(raised.value.__cause__, grpc.RpcError)


def test_bad_format_is_refused_before_calling(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client, pytest.raises(ValueError, match="'rpm'"):
        _delete(client, format="rpm")

    assert fake.calls == []


def test_a_single_version_string_is_refused(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client, pytest.raises(TypeError, match="versions"):
        _delete(client, versions="1.0.0")

    assert fake.calls == []


@pytest.mark.parametrize(
    "pair",
    [("X-Dev-User", "alice"), ("grpc-timeout", "1"), ("trace-bin", "x"), ("x-dev", "a\nb")],
)
def test_metadata_grpc_would_refuse_is_refused_up_front(pair: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid metadata"):
        PkggovClient("127.0.0.1:1", metadata=[pair])


def test_closed_client_refuses_calls(target: str) -> None:
    with PkggovClient(target) as client:
        pass

    with pytest.raises(ValueError, match="closed channel"):
        _delete(client)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PkggovClient("127.0.0.1:1", timeout=0)
