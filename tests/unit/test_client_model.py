"""PackageFormat, PackageVersionStatus and DeleteResult convert to and from the pkggov.v1 protos."""

from __future__ import annotations

import pytest

from pkggov_client import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    SuccessfulVersion,
    pb,
)
from pkggov_client._model import error_code_name


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
