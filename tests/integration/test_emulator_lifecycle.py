"""Recoverable deletion's version lifecycle (archive, restore, dispose, delete, re-publish) as
unmodified boto3 and the AWS CLI see it, with the emulator's stated choices: a status change
issues a new revision and a no-op keeps it; unfiltered listings include every status; the
default display version is the newest Published one; Archived versions are described."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pkggov_emulator import Emulator

LEFT_PAD = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}
CLI_TOOL = {**LEFT_PAD, "format": "generic", "namespace": "tools", "package": "cli"}
SEED_REVISION = {
    "1.0.0": "QuRIg163sWPQbywhzq6TW6jWiJ3fnyGc+MM7RYE4rfw=",
    "1.1.0": "3bqiF2ipBlErHj3d6yViwSUHhyJpxfVdctZimwZHJC4=",
}
"""The demo seed's revisions of left-pad versions."""
LEFT_PAD_CLI = [
    "--domain",
    "demo",
    "--repository",
    "dev-shared",
    "--format",
    "npm",
    "--package",
    "left-pad",
]


def _described(codeartifact: Any, version: str, **coordinates: str) -> dict[str, Any]:
    package = coordinates or LEFT_PAD
    answer: dict[str, Any] = codeartifact.describe_package_version(
        **package, packageVersion=version
    )["packageVersion"]
    return answer


def _revision(codeartifact: Any, version: str, **coordinates: str) -> str:
    return str(_described(codeartifact, version, **coordinates)["revision"])


def _codes(result: dict[str, Any]) -> dict[str, str]:
    return {version: error["errorCode"] for version, error in result["failedVersions"].items()}


def _publish(codeartifact: Any, version: str, content: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = codeartifact.publish_package_version(
        **CLI_TOOL,
        packageVersion=version,
        assetContent=content,
        assetName=f"cli-{version}.tar.gz",
        assetSHA256=hashlib.sha256(content).hexdigest(),
    )
    return answer


# --- (a) revisions ------------------------------------------------------------------------------


def test_a_status_change_issues_a_new_revision_and_a_no_op_keeps_it(codeartifact: Any) -> None:
    """Archive: a new revision; the same "change" again: success with that revision kept;
    restore: another new revision. Listing and describing report the current one."""
    archived = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0"], targetStatus="Archived"
    )["successfulVersions"]["1.0.0"]
    again = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0"], targetStatus="Archived"
    )["successfulVersions"]["1.0.0"]
    listed = {
        v["version"]: v["revision"]
        for v in codeartifact.list_package_versions(**LEFT_PAD)["versions"]
    }
    restored = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0"], targetStatus="Published"
    )["successfulVersions"]["1.0.0"]

    assert "Archived" == archived["status"]
    assert SEED_REVISION["1.0.0"] != archived["revision"]
    assert archived == again
    assert archived["revision"] == listed["1.0.0"]
    assert ("Published", 3) == (
        restored["status"],
        len({SEED_REVISION["1.0.0"], archived["revision"], restored["revision"]}),
    )
    assert restored["revision"] == _revision(codeartifact, "1.0.0")


def test_a_restore_is_pinned_to_the_archived_revision(codeartifact: Any) -> None:
    """An archive pinned to the read revision; a restore pinned to the revision the archive
    reported succeeds, one pinned to the revision from before the archive does not."""
    archive = codeartifact.update_package_versions_status(
        **LEFT_PAD,
        versions=["1.0.0", "1.1.0"],
        versionRevisions=SEED_REVISION,
        expectedStatus="Published",
        targetStatus="Archived",
    )
    archived = archive["successfulVersions"]
    restore = codeartifact.update_package_versions_status(
        **LEFT_PAD,
        versions=["1.0.0", "1.1.0"],
        versionRevisions={
            "1.0.0": archived["1.0.0"]["revision"],
            "1.1.0": SEED_REVISION["1.1.0"],
        },
        expectedStatus="Archived",
        targetStatus="Published",
    )

    assert {"Archived"} == {v["status"] for v in archived.values()}
    assert ["1.0.0"] == list(restore["successfulVersions"])
    assert {"1.1.0": "MISMATCHED_REVISION"} == _codes(restore)
    assert ("Published", "Archived") == (
        _described(codeartifact, "1.0.0")["status"],
        _described(codeartifact, "1.1.0")["status"],
    )


def test_a_version_published_again_does_not_match_the_archived_pin(codeartifact: Any) -> None:
    """Archived, deleted and published again under the same version string: the new version
    has a new revision, so neither a restore nor a disposal pinned to the archived revision
    touches it."""
    archived = codeartifact.update_package_versions_status(
        **CLI_TOOL, versions=["1.0.0"], targetStatus="Archived"
    )["successfulVersions"]["1.0.0"]["revision"]
    codeartifact.delete_package_versions(**CLI_TOOL, versions=["1.0.0"], expectedStatus="Archived")
    republished = _publish(codeartifact, "1.0.0", b"different content")["versionRevision"]
    pin = {"versionRevisions": {"1.0.0": archived}, "versions": ["1.0.0"]}

    restore = codeartifact.update_package_versions_status(
        **CLI_TOOL, **pin, targetStatus="Published"
    )
    dispose = codeartifact.dispose_package_versions(**CLI_TOOL, **pin)

    assert republished != archived
    assert {"1.0.0": "MISMATCHED_REVISION"} == _codes(restore) == _codes(dispose)
    assert ("Published", republished) == (
        _described(codeartifact, "1.0.0", **CLI_TOOL)["status"],
        _revision(codeartifact, "1.0.0", **CLI_TOOL),
    )


# --- (b) listings and the default display version ----------------------------------------------


def test_an_unfiltered_listing_includes_every_status(codeartifact: Any) -> None:
    """Without a status filter ListPackageVersions returns Published, Unlisted, Archived and
    Disposed versions alike; the filter still selects one status."""
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.1.0"], targetStatus="Unlisted"
    )
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.2.0"], targetStatus="Archived"
    )
    codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.3.0"])

    listing = codeartifact.list_package_versions(**LEFT_PAD)
    archived = codeartifact.list_package_versions(**LEFT_PAD, status="Archived")

    assert {
        "1.0.0": "Published",
        "1.1.0": "Unlisted",
        "1.2.0": "Archived",
        "1.3.0": "Disposed",
    } == {v["version"]: v["status"] for v in listing["versions"]}
    assert ["1.2.0"] == [v["version"] for v in archived["versions"]]


def test_the_default_display_version_is_the_newest_published_one(codeartifact: Any) -> None:
    """Archiving the newest version moves the default display version to the newest version
    still Published (an Unlisted one is passed over); restoring it moves it back; with no
    Published version there is none."""
    default = codeartifact.list_package_versions(**LEFT_PAD)["defaultDisplayVersion"]
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.3.0"], targetStatus="Archived"
    )
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.2.0"], targetStatus="Unlisted"
    )
    after_archive = codeartifact.list_package_versions(**LEFT_PAD)["defaultDisplayVersion"]
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.3.0"], targetStatus="Published"
    )
    after_restore = codeartifact.list_package_versions(**LEFT_PAD)["defaultDisplayVersion"]
    codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0", "1.1.0", "1.2.0", "1.3.0"], targetStatus="Archived"
    )
    none_published = codeartifact.list_package_versions(**LEFT_PAD)

    assert ("1.3.0", "1.1.0", "1.3.0") == (default, after_archive, after_restore)
    assert "defaultDisplayVersion" not in none_published
    assert 4 == len(none_published["versions"])


# --- (c) describing ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["Archived", "Unlisted"])
def test_an_archived_or_unlisted_version_is_described(codeartifact: Any, target: str) -> None:
    """DescribePackageVersion answers for a version moved out of Published, with its new
    status and revision and its original publication time."""
    before = _described(codeartifact, "1.0.0")
    moved = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0"], targetStatus=target
    )["successfulVersions"]["1.0.0"]

    after = _described(codeartifact, "1.0.0")

    assert (target, moved["revision"]) == (after["status"], after["revision"])
    assert before["publishedTime"] == after["publishedTime"]


def test_a_disposed_version_is_described_and_cannot_change_status(codeartifact: Any) -> None:
    """Disposed keeps the record (described) but no status update moves it: NOT_ALLOWED."""
    codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.0.0"])
    results = [
        codeartifact.update_package_versions_status(
            **LEFT_PAD, versions=["1.0.0"], targetStatus=target
        )
        for target in ("Published", "Unlisted", "Archived")
    ]

    assert [{"1.0.0": "NOT_ALLOWED"}] * 3 == [_codes(result) for result in results]
    assert "Disposed" == _described(codeartifact, "1.0.0")["status"]


# --- (d) deleting and publishing again ---------------------------------------------------------


def test_delete_with_expected_status_archived(codeartifact: Any, emulator: Emulator) -> None:
    """expectedStatus Archived deletes an Archived version (reporting its archived revision)
    and leaves a Published one: MISMATCHED_STATUS."""
    archived = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.0.0"], targetStatus="Archived"
    )["successfulVersions"]["1.0.0"]["revision"]

    result = codeartifact.delete_package_versions(
        **LEFT_PAD, versions=["1.0.0", "1.1.0"], expectedStatus="Archived"
    )

    assert {"1.0.0": {"revision": archived, "status": "Deleted"}} == result["successfulVersions"]
    assert {"1.1.0": "MISMATCHED_STATUS"} == _codes(result)
    assert emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0") is None


def test_a_deleted_version_published_again_gets_a_new_revision(codeartifact: Any) -> None:
    """Archive, delete (expectedStatus Archived), then PublishPackageVersion of the same
    version string: a new Published version with a revision unlike either before."""
    original = _revision(codeartifact, "1.0.0", **CLI_TOOL)
    archived = codeartifact.update_package_versions_status(
        **CLI_TOOL, versions=["1.0.0"], targetStatus="Archived"
    )["successfulVersions"]["1.0.0"]["revision"]
    codeartifact.delete_package_versions(**CLI_TOOL, versions=["1.0.0"], expectedStatus="Archived")

    published = _publish(codeartifact, "1.0.0", b"rebuilt")

    assert "Published" == published["status"]
    assert 3 == len({original, archived, published["versionRevision"]})
    assert published["versionRevision"] == _revision(codeartifact, "1.0.0", **CLI_TOOL)


@pytest.mark.parametrize("operation", ["archive", "dispose"])
def test_an_archived_or_disposed_version_cannot_be_published_again(
    codeartifact: Any, operation: str
) -> None:
    """The record of an Archived or Disposed version stays: publishing its version string is a
    ConflictException naming the version (only a delete frees it)."""
    if operation == "archive":
        codeartifact.update_package_versions_status(
            **CLI_TOOL, versions=["1.0.0"], targetStatus="Archived"
        )
    else:
        codeartifact.dispose_package_versions(**CLI_TOOL, versions=["1.0.0"])

    with pytest.raises(ClientError) as caught:
        _publish(codeartifact, "1.0.0", b"again")

    response: dict[str, Any] = dict(caught.value.response)
    assert ("ConflictException", "package-version", "1.0.0") == (
        response["Error"]["Code"],
        response["resourceType"],
        response["resourceId"],
    )


# --- DisposePackageVersions guards -------------------------------------------------------------


def test_dispose_guards_and_a_repeated_disposal(codeartifact: Any) -> None:
    """A stale pin: MISMATCHED_REVISION; another status than expected: MISMATCHED_STATUS; a
    missing version: NOT_FOUND; disposing a Disposed version again succeeds with its
    revision unchanged."""
    first = codeartifact.dispose_package_versions(
        **LEFT_PAD,
        versions=["1.0.0", "1.1.0", "1.2.0", "9.9.9"],
        versionRevisions={"1.0.0": SEED_REVISION["1.0.0"], "1.1.0": "stale"},
        expectedStatus="Published",
    )
    mismatched = codeartifact.dispose_package_versions(
        **LEFT_PAD, versions=["1.3.0"], expectedStatus="Archived"
    )
    again = codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.0.0"])

    assert ["1.0.0", "1.2.0"] == sorted(first["successfulVersions"])
    assert {"1.1.0": "MISMATCHED_REVISION", "9.9.9": "NOT_FOUND"} == _codes(first)
    assert {"1.3.0": "MISMATCHED_STATUS"} == _codes(mismatched)
    assert first["successfulVersions"]["1.0.0"] == again["successfulVersions"]["1.0.0"]


# --- the AWS CLI -------------------------------------------------------------------------------


def _cli(result: Any) -> dict[str, Any]:
    assert 0 == result.returncode, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_aws_cli_archives_and_restores_pinned_to_revisions(
    run_aws: Callable[..., Any], emulator: Emulator
) -> None:
    """`aws codeartifact update-package-versions-status` with --version-revisions (a JSON map)
    archives; the unfiltered listing shows the version Archived; a restore pinned to the
    archived revision publishes it again."""
    archive = _cli(
        run_aws(
            "codeartifact",
            "update-package-versions-status",
            *LEFT_PAD_CLI,
            "--versions",
            "1.0.0",
            "1.1.0",
            "--version-revisions",
            json.dumps({"1.0.0": SEED_REVISION["1.0.0"], "1.1.0": "stale"}),
            "--expected-status",
            "Published",
            "--target-status",
            "Archived",
        )
    )
    archived = archive["successfulVersions"]["1.0.0"]
    listing = _cli(run_aws("codeartifact", "list-package-versions", *LEFT_PAD_CLI))
    restore = _cli(
        run_aws(
            "codeartifact",
            "update-package-versions-status",
            *LEFT_PAD_CLI,
            "--versions",
            "1.0.0",
            "--version-revisions",
            json.dumps({"1.0.0": archived["revision"]}),
            "--expected-status",
            "Archived",
            "--target-status",
            "Published",
        )
    )

    assert "Archived" == archived["status"]
    assert "MISMATCHED_REVISION" == archive["failedVersions"]["1.1.0"]["errorCode"]
    assert "Archived" == {v["version"]: v["status"] for v in listing["versions"]}["1.0.0"]
    assert "Published" == restore["successfulVersions"]["1.0.0"]["status"]
    assert archived["revision"] != restore["successfulVersions"]["1.0.0"]["revision"]
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_aws_cli_disposes_and_lists_by_status(run_aws: Callable[..., Any]) -> None:
    """`aws codeartifact dispose-package-versions` with --expected-status; then
    `list-package-versions --status Disposed` shows it."""
    disposed = _cli(
        run_aws(
            "codeartifact",
            "dispose-package-versions",
            *LEFT_PAD_CLI,
            "--versions",
            "1.0.0",
            "1.1.0",
            "--expected-status",
            "Published",
            "--version-revisions",
            json.dumps({"1.0.0": SEED_REVISION["1.0.0"]}),
        )
    )
    listing = _cli(
        run_aws("codeartifact", "list-package-versions", *LEFT_PAD_CLI, "--status", "Disposed")
    )

    assert {"1.0.0": "Disposed", "1.1.0": "Disposed"} == {
        version: info["status"] for version, info in disposed["successfulVersions"].items()
    }
    assert ["1.0.0", "1.1.0"] == [v["version"] for v in listing["versions"]]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Disposed", "use DisposePackageVersions or DeletePackageVersions"),
        ("Bogus", "Member must satisfy enum value set"),
    ],
)
def test_aws_cli_reports_an_invalid_target_status(
    run_aws: Callable[..., Any], target: str, message: str
) -> None:
    """A target other than Archived, Published or Unlisted is a ValidationException."""
    result = run_aws(
        "codeartifact",
        "update-package-versions-status",
        *LEFT_PAD_CLI,
        "--versions",
        "1.0.0",
        "--target-status",
        target,
    )

    assert 255 == result.returncode
    assert (
        "(ValidationException) when calling the UpdatePackageVersionsStatus operation"
        in result.stderr
    )
    assert message in result.stderr
