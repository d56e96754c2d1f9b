"""PkggovClient sends well-formed requests with its metadata and maps replies and errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pkggov_client import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    PendingPurge,
    PkggovClient,
    PkggovError,
    RestoreResult,
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


# --- recoverable deletion: purge_now, restore, pending purges ---------------------------------

_PURGE_AT = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)
_RESTORE_METHOD = "pkggov.v1.PackageGovernanceService/RestorePackageVersions"


def test_purge_now_is_sent_only_when_asked(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client:
        _delete(client)
        _delete(client, purge_now=True)

    assert [False, True] == [call.request.purge_now for call in fake.calls]


def test_an_archived_version_comes_back_with_its_purge_time_and_restore_method(
    fake: FakeGateway, target: str
) -> None:
    archived = fake.response.successful_versions["1.0.0"]
    archived.revision = "REV1"
    archived.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_ARCHIVED
    archived.purge_time.FromDatetime(_PURGE_AT)
    archived.restore_method = _RESTORE_METHOD
    deleted = fake.response.successful_versions["0.9.0"]
    deleted.revision = "REV0"
    deleted.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED

    with PkggovClient(target) as client:
        result = _delete(client, versions=["1.0.0", "0.9.0"])

    assert {
        "1.0.0": SuccessfulVersion(
            "REV1", PackageVersionStatus.ARCHIVED, _PURGE_AT, _RESTORE_METHOD
        ),
        "0.9.0": SuccessfulVersion("REV0", PackageVersionStatus.DELETED, None, ""),
    } == result.successful
    assert ["1.0.0"] == list(result.archived)


def test_a_plan_to_archive_carries_the_purge_time_and_counts_as_deleting(
    fake: FakeGateway, target: str
) -> None:
    add_decision(fake.response, "1.0.0", "WOULD_ARCHIVE", status="Published", purge_time=_PURGE_AT)
    add_decision(fake.response, "1.0.1", "WOULD_DELETE", status="Unlisted")

    with PkggovClient(target) as client:
        result = _delete(client, versions=["1.0.0", "1.0.1"], validate_only=True)

    decision = result.decisions["1.0.0"]
    assert ("WOULD_ARCHIVE", _PURGE_AT, True, False) == (
        decision.outcome,
        decision.purge_time,
        decision.would_archive,
        decision.would_delete,
    )
    assert None is result.decisions["1.0.1"].purge_time
    assert result.all_would_delete


def test_restore_request_carries_every_field_as_proto_values(
    fake: FakeGateway, target: str
) -> None:
    with PkggovClient(target) as client:
        client.restore_package_versions(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format="Maven",
            namespace="com.acme",
            package="widgets",
            versions=("1.0.0", "1.0.1"),
            justification="restored: wrong version deleted",
            validate_only=True,
            request_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
        )

    assert [
        pb.RestorePackageVersionsRequest(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=pb.PackageFormat.PACKAGE_FORMAT_MAVEN,
            namespace="com.acme",
            package="widgets",
            versions=["1.0.0", "1.0.1"],
            justification="restored: wrong version deleted",
            validate_only=True,
            request_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
        )
    ] == [call.request for call in fake.restore_calls]
    assert [] == fake.calls


def _restore(client: PkggovClient, **overrides: object) -> RestoreResult:
    arguments: dict[str, object] = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "npm",
        "package": "widgets",
        "versions": ["1.0.0"],
    }
    arguments.update(overrides)
    return client.restore_package_versions(**arguments)  # type: ignore[arg-type]


def test_restore_leaves_omitted_fields_empty_and_sends_the_metadata_and_deadline(
    fake: FakeGateway, target: str
) -> None:
    with PkggovClient(target, metadata=[("x-dev-user", "alice")], timeout=7.0) as client:
        _restore(client)

    [call] = fake.restore_calls
    request = call.request
    assert ("", "", "", "", False) == (
        request.namespace,
        request.domain_owner,
        request.justification,
        request.request_id,
        request.validate_only,
    )
    assert ("x-dev-user", "alice") in call.metadata
    assert 7 == round(call.time_remaining or 0.0)


def test_restore_response_maps_into_a_restore_result(fake: FakeGateway, target: str) -> None:
    restored = fake.restore_response.successful_versions["1.0.0"]
    restored.revision = "REV2"
    restored.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_PUBLISHED
    failed = fake.restore_response.failed_versions["1.0.1"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_REVISION
    failed.error_message = "changed since it was archived"
    fake.restore_response.audit_event_id = "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"

    with PkggovClient(target) as client:
        result = _restore(client, versions=["1.0.1", "1.0.0"])

    assert isinstance(result, RestoreResult)
    assert {"1.0.0": SuccessfulVersion("REV2", PackageVersionStatus.PUBLISHED)} == result.successful
    assert {
        "1.0.1": FailedVersion("MISMATCHED_REVISION", "changed since it was archived")
    } == result.failed
    assert ["1.0.1", "1.0.0"] == [*result.failed, *result.successful]
    assert ("0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13", False) == (
        result.audit_event_id,
        result.all_restored,
    )
    assert fake.restore_response == result.raw


def test_restore_plan_decodes_in_request_order(fake: FakeGateway, target: str) -> None:
    add_decision(fake.restore_response, "1.0.0", "WOULD_RESTORE", status="Archived")
    add_decision(fake.restore_response, "0.1.0", "NOT_PENDING_PURGE", status="Published")

    with PkggovClient(target) as client:
        result = _restore(client, versions=["1.0.0", "0.1.0"], validate_only=True)

    assert ["1.0.0", "0.1.0"] == list(result.decisions)
    assert [True, False] == [d.would_restore for d in result.decisions.values()]
    assert not result.all_would_restore


def test_restore_errors_raise_pkggov_error_and_bad_input_is_refused_before_calling(
    fake: FakeGateway, target: str
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "policy denies 1 of 1 versions",
        reason="POLICY_DENIED",
        denied_versions=[("1.0.0", [], "denied: no policy permits it")],
    )

    with PkggovClient(target) as client:
        with pytest.raises(PkggovError) as raised:
            _restore(client)
        with pytest.raises(ValueError, match="'rpm'"):
            _restore(client, format="rpm")
        with pytest.raises(TypeError, match="versions"):
            _restore(client, versions="1.0.0")

    assert ("POLICY_DENIED", ["1.0.0"]) == (
        raised.value.reason,
        [denied.version for denied in raised.value.denied_versions],
    )
    assert 1 == len(fake.restore_calls)


def _pending(version: str, *, due: datetime, **fields: Any) -> pb.PendingPurge:
    purge = pb.PendingPurge(
        domain="demo",
        repository="dev-shared",
        format=pb.PackageFormat.PACKAGE_FORMAT_NPM,
        package="widgets",
        version=version,
        **fields,
    )
    purge.purge_time.FromDatetime(due)
    return purge


def test_list_pending_purges_sends_every_filter(fake: FakeGateway, target: str) -> None:
    due_before = datetime(2027, 1, 5, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    with PkggovClient(target) as client:
        client.list_pending_purges(
            domain="demo",
            repository="dev-shared",
            package="widgets",
            requester="alice",
            due_before=due_before,
            page_size=10,
            page_token="next",
        )
        client.list_pending_purges()

    stamp = Timestamp()
    stamp.FromJsonString("2027-01-05T10:00:00Z")
    assert [
        pb.ListPendingPurgesRequest(
            domain="demo",
            repository="dev-shared",
            package="widgets",
            requester="alice",
            due_before=stamp,
            page_size=10,
            page_token="next",
        ),
        pb.ListPendingPurgesRequest(),
    ] == [call.request for call in fake.pending_calls]
    assert not fake.pending_calls[1].request.HasField("due_before")


def test_list_pending_purges_maps_a_page(fake: FakeGateway, target: str) -> None:
    archived_at = datetime(2026, 12, 29, 10, 0, tzinfo=UTC)
    first = _pending(
        "1.0.0",
        due=_PURGE_AT,
        domain_owner="111122223333",
        namespace="acme",
        revision="REV1",
        previous_status=pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNLISTED,
        requester="alice",
        archive_event_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
        attempts=2,
        last_error="throttled",
    )
    first.archive_time.FromDatetime(archived_at)
    fake.pending_pages[""] = pb.ListPendingPurgesResponse(
        pending_purges=[first, _pending("0.9.0", due=_PURGE_AT)], next_page_token="page-2"
    )

    with PkggovClient(target) as client:
        page = client.list_pending_purges()
        last = client.list_pending_purges(page_token="page-2")

    assert (
        PendingPurge(
            domain="demo",
            domain_owner="111122223333",
            repository="dev-shared",
            format=PackageFormat.NPM,
            namespace="acme",
            package="widgets",
            version="1.0.0",
            revision="REV1",
            previous_status=PackageVersionStatus.UNLISTED,
            requester="alice",
            archive_event_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
            archive_time=archived_at,
            purge_time=_PURGE_AT,
            attempts=2,
            last_error="throttled",
        )
        == page.pending_purges[0]
    )
    second = page.pending_purges[1]
    assert (None, None, None, None, None) == (
        second.domain_owner,
        second.namespace,
        second.previous_status,
        second.archive_time,
        second.last_error,
    )
    assert ("page-2", None, ()) == (page.next_page_token, last.next_page_token, last.pending_purges)
    assert fake.pending_pages[""] == page.raw


def test_list_pending_purges_refuses_a_naive_time_before_calling(
    fake: FakeGateway, target: str
) -> None:
    with PkggovClient(target) as client, pytest.raises(ValueError, match="timezone-aware"):
        client.list_pending_purges(due_before=datetime(2027, 1, 5))

    assert [] == fake.pending_calls


def test_list_pending_purges_errors_raise_pkggov_error(fake: FakeGateway, target: str) -> None:
    fake.error = rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request breaks field rules",
        reason="INVALID_REQUEST",
        field_violations=[("page_token", "not a token of this listing")],
    )

    with PkggovClient(target) as client, pytest.raises(PkggovError) as raised:
        client.list_pending_purges(page_token="forged")

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (
        raised.value.code,
        raised.value.reason,
    )
