"""PackageFormat, PackageVersionStatus, DeleteResult, RestoreResult, VersionDecision and the pending
purges convert from pkggov.v1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pkggov_client import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    PendingPurgesPage,
    RestoreResult,
    SuccessfulVersion,
    VersionDecision,
    pb,
)
from pkggov_client._model import error_code_name, format_time, outcome_name
from pkggov_client.testing import add_decision


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("npm", PackageFormat.NPM),
        ("PyPI", PackageFormat.PYPI),
        ("MAVEN", PackageFormat.MAVEN),
        ("NuGet", PackageFormat.NUGET),
        ("generic", PackageFormat.GENERIC),
        ("Ruby", PackageFormat.RUBY),
        ("swift", PackageFormat.SWIFT),
        ("Cargo", PackageFormat.CARGO),
    ],
)
def test_format_reads_codeartifact_spellings_in_any_case(
    text: str, expected: PackageFormat
) -> None:
    assert expected == PackageFormat(text)


def test_every_format_maps_to_its_proto_value() -> None:
    expected = {
        member: pb.PackageFormat.Value(f"PACKAGE_FORMAT_{member.value.upper()}")
        for member in PackageFormat
    }
    assert expected == {member: member.to_proto() for member in PackageFormat}
    assert len(pb.PackageFormat.keys()) - 1 == len(PackageFormat)


def test_every_status_round_trips_through_its_proto_value() -> None:
    assert list(PackageVersionStatus) == [
        PackageVersionStatus.from_proto(member.to_proto()) for member in PackageVersionStatus
    ]
    assert len(pb.PackageVersionStatus.keys()) - 1 == len(PackageVersionStatus)


def test_status_reads_any_case_and_keeps_codeartifact_spelling() -> None:
    assert PackageVersionStatus("PUBLISHED").value == "Published"
    assert str(PackageVersionStatus("unlisted")) == "Unlisted"


def test_unknown_spellings_are_refused() -> None:
    with pytest.raises(ValueError, match="'rpm'"):
        PackageFormat("rpm")
    with pytest.raises(ValueError, match="'Gone'"):
        PackageVersionStatus("Gone")


def test_unspecified_and_unknown_proto_statuses_read_as_none() -> None:
    assert PackageVersionStatus.from_proto(0) is None
    assert PackageVersionStatus.from_proto(99) is None


def test_error_codes_use_codeartifact_spelling_and_keep_unknown_numbers() -> None:
    assert (
        error_code_name(pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS)
        == "MISMATCHED_STATUS"
    )
    assert error_code_name(42) == "42"


def _response() -> pb.DeletePackageVersionsResponse:
    response = pb.DeletePackageVersionsResponse()
    for version, revision in [("2.0.0", "REV2"), ("1.0.0", "REV1")]:
        deleted = response.successful_versions[version]
        deleted.revision = revision
        deleted.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_DELETED
    failed = response.failed_versions["3.0.0"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND
    failed.error_message = "not found"
    return response


def test_result_maps_every_version_and_keeps_the_raw_response() -> None:
    response = _response()

    result = DeleteResult.from_proto(response)

    assert {
        "1.0.0": SuccessfulVersion("REV1", PackageVersionStatus.DELETED),
        "2.0.0": SuccessfulVersion("REV2", PackageVersionStatus.DELETED),
    } == result.successful
    assert {"3.0.0": FailedVersion("NOT_FOUND", "not found")} == result.failed
    assert response == result.raw
    assert not result.all_deleted


def test_result_iterates_in_request_order_then_sorted() -> None:
    result = DeleteResult.from_proto(_response(), order=["2.0.0", "3.0.0"])

    assert list(result.successful) == ["2.0.0", "1.0.0"]


def test_result_mappings_are_read_only() -> None:
    result = DeleteResult.from_proto(_response())

    with pytest.raises(TypeError):
        result.failed["4.0.0"] = FailedVersion("SKIPPED", "")  # type: ignore[index]


def test_result_renders_as_codeartifact_json() -> None:
    result = DeleteResult.from_proto(_response(), order=["1.0.0"])

    assert result.to_codeartifact_dict() == {
        "successfulVersions": {
            "1.0.0": {"revision": "REV1", "status": "Deleted"},
            "2.0.0": {"revision": "REV2", "status": "Deleted"},
        },
        "failedVersions": {"3.0.0": {"errorCode": "NOT_FOUND", "errorMessage": "not found"}},
    }


def test_outcomes_use_short_names_and_keep_unknown_numbers() -> None:
    assert [outcome_name(value) for value in pb.VersionOutcome.values()] == [
        "UNSPECIFIED",
        "WOULD_DELETE",
        "DENIED",
        "NOT_FOUND",
        "STATUS_MISMATCH",
        "WOULD_ARCHIVE",
        "WOULD_RESTORE",
        "NOT_PENDING_PURGE",
        "REVISION_MISMATCH",
        "NEEDS_APPROVAL",
        "PLAN_CHANGED",
    ]
    assert outcome_name(42) == "42"


def _plan() -> pb.DeletePackageVersionsResponse:
    response = pb.DeletePackageVersionsResponse()
    add_decision(response, "3.0.0", "NOT_FOUND", message="no such version")
    add_decision(
        response,
        "2.0.0",
        "DENIED",
        policy_ids=["never-delete-latest"],
        message="denied by never-delete-latest",
        status="published",
        is_latest=True,
    )
    add_decision(response, "1.0.0", "WOULD_DELETE", policy_ids=["ci"], status="Unlisted")
    return response


def test_plan_maps_every_decision_in_request_order_then_sorted() -> None:
    result = DeleteResult.from_proto(_plan(), order=["2.0.0"])

    assert ["2.0.0", "1.0.0", "3.0.0"] == list(result.decisions)
    assert (
        VersionDecision(
            "DENIED",
            ("never-delete-latest",),
            "denied by never-delete-latest",
            PackageVersionStatus.PUBLISHED,
            is_latest=True,
        )
        == result.decisions["2.0.0"]
    )
    assert [False, True, False] == [d.would_delete for d in result.decisions.values()]
    assert not result.all_would_delete


def test_plan_where_every_version_would_be_deleted() -> None:
    response = pb.DeletePackageVersionsResponse()
    add_decision(response, "1.0.0", "WOULD_DELETE")

    assert DeleteResult.from_proto(response).all_would_delete
    assert not DeleteResult.from_proto(_response()).all_would_delete


def test_unknown_outcome_is_kept_as_its_number() -> None:
    response = pb.DeletePackageVersionsResponse()
    response.decisions["1.0.0"].outcome = 99  # type: ignore[assignment]

    assert DeleteResult.from_proto(response).decisions["1.0.0"].outcome == "99"


def test_decisions_are_read_only_and_empty_after_a_real_call() -> None:
    result = DeleteResult.from_proto(_plan())

    with pytest.raises(TypeError):
        result.decisions["4.0.0"] = result.decisions["1.0.0"]  # type: ignore[index]
    assert {} == DeleteResult.from_proto(_response()).decisions
    assert {} == DeleteResult(successful={}, failed={}, raw=_response()).decisions


def test_plan_renders_as_json() -> None:
    result = DeleteResult.from_proto(_plan(), order=["1.0.0", "2.0.0", "3.0.0"])

    assert result.to_plan_dict() == {
        "decisions": {
            "1.0.0": {
                "outcome": "WOULD_DELETE",
                "policyIds": ["ci"],
                "message": "",
                "status": "Unlisted",
                "isLatest": False,
                "purgeTime": None,
            },
            "2.0.0": {
                "outcome": "DENIED",
                "policyIds": ["never-delete-latest"],
                "message": "denied by never-delete-latest",
                "status": "Published",
                "isLatest": True,
                "purgeTime": None,
            },
            "3.0.0": {
                "outcome": "NOT_FOUND",
                "policyIds": [],
                "message": "no such version",
                "status": None,
                "isLatest": False,
                "purgeTime": None,
            },
        }
    }


def test_result_names_the_audit_event_or_none() -> None:
    response = pb.DeletePackageVersionsResponse(
        audit_event_id="0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13"
    )

    assert (
        "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13" == DeleteResult.from_proto(response).audit_event_id
    )
    assert None is DeleteResult.from_proto(pb.DeletePackageVersionsResponse()).audit_event_id


# --- recoverable deletion ---------------------------------------------------------------------


def test_every_format_round_trips_through_its_proto_value() -> None:
    assert list(PackageFormat) == [
        PackageFormat.from_proto(member.to_proto()) for member in PackageFormat
    ]
    assert (None, None) == (PackageFormat.from_proto(0), PackageFormat.from_proto(99))


def test_an_archived_version_and_its_purge_time_decode_and_render_as_json() -> None:
    response = _response()
    archived = response.successful_versions["4.0.0"]
    archived.revision = "REV4"
    archived.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_ARCHIVED
    archived.purge_time.FromJsonString("2027-01-05T10:00:00.250Z")
    archived.restore_method = "pkggov.v1.PackageGovernanceService/RestorePackageVersions"

    result = DeleteResult.from_proto(response, order=["4.0.0"])

    info = result.successful["4.0.0"]
    assert (True, datetime(2027, 1, 5, 10, 0, 0, 250000, tzinfo=UTC)) == (
        info.archived,
        info.purge_time,
    )
    assert {"4.0.0": info} == result.archived
    assert not result.successful["1.0.0"].archived
    assert {"revision": "REV4", "status": "Archived"} == (
        result.to_codeartifact_dict()["successfulVersions"]["4.0.0"]
    )


def test_a_plan_to_archive_renders_its_purge_time_in_rfc3339() -> None:
    response = pb.DeletePackageVersionsResponse()
    add_decision(
        response,
        "1.0.0",
        "WOULD_ARCHIVE",
        status="Published",
        purge_time=datetime(2027, 1, 5, 11, 0, tzinfo=timezone(timedelta(hours=1))),
    )

    result = DeleteResult.from_proto(response)

    assert "2027-01-05T10:00:00Z" == result.to_plan_dict()["decisions"]["1.0.0"]["purgeTime"]
    assert result.all_would_delete
    assert None is format_time(None)


def _restore_plan() -> pb.RestorePackageVersionsResponse:
    response = pb.RestorePackageVersionsResponse()
    add_decision(response, "1.0.0", "WOULD_RESTORE", status="Archived")
    add_decision(response, "1.0.1", "REVISION_MISMATCH", status="Archived", message="changed")
    return response


def test_a_restore_result_maps_its_plan_and_its_outcome() -> None:
    plan = RestoreResult.from_proto(_restore_plan(), order=["1.0.1"])
    every = pb.RestorePackageVersionsResponse()
    add_decision(every, "1.0.0", "WOULD_RESTORE")
    done = pb.RestorePackageVersionsResponse(audit_event_id="e-1")
    restored = done.successful_versions["1.0.0"]
    restored.revision = "REV5"
    restored.status = pb.PackageVersionStatus.PACKAGE_VERSION_STATUS_UNLISTED

    outcome = RestoreResult.from_proto(done)

    assert ["1.0.1", "1.0.0"] == list(plan.decisions)
    assert (False, True) == (
        plan.all_would_restore,
        RestoreResult.from_proto(every).all_would_restore,
    )
    assert "REVISION_MISMATCH" == plan.to_plan_dict()["decisions"]["1.0.1"]["outcome"]
    assert ("e-1", True, {}) == (outcome.audit_event_id, outcome.all_restored, outcome.decisions)
    assert {
        "successfulVersions": {"1.0.0": {"revision": "REV5", "status": "Unlisted"}},
        "failedVersions": {},
    } == outcome.to_codeartifact_dict()


def test_a_page_of_pending_purges_keeps_what_it_does_not_know_as_none() -> None:
    response = pb.ListPendingPurgesResponse(
        pending_purges=[
            pb.PendingPurge(
                domain="demo",
                repository="r",
                format=99,  # type: ignore[arg-type]
                package="p",
                version="1",
                previous_status=99,  # type: ignore[arg-type]
            )
        ]
    )

    page = PendingPurgesPage.from_proto(response)

    [purge] = page.pending_purges
    assert (None, None, None, None) == (
        purge.format,
        purge.previous_status,
        purge.purge_time,
        page.next_page_token,
    )
