"""The in-memory domain model applies CodeArtifact's rules for versions, statuses and revisions."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools

import pytest

from pkggov_emulator._errors import ConflictError, ResourceNotFoundError, ValidationError
from pkggov_emulator._state import PackageRef, Store, check_namespace, new_revision

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
REF = PackageRef(domain="d1", repository="r1", format="npm", namespace=None, package="p")


@pytest.fixture
def store() -> Store:
    counter = itertools.count(1)
    store = Store(
        account_id="111122223333",
        region="us-east-1",
        clock=lambda: NOW,
        revisions=lambda: f"rev-{next(counter)}",
    )
    store.create_domain("d1")
    store.create_repository("d1", "r1")
    for version, status in [("1", "Published"), ("2", "Archived"), ("3", "Disposed")]:
        store.put_version(REF, version, status=status)
    return store


def test_new_revisions_are_random_base64() -> None:
    first, second = new_revision(), new_revision()
    assert (44, True) == (len(first), first != second)


def test_delete_removes_and_reports_the_old_revision(store: Store) -> None:
    result = store.delete_versions(REF, ["1", "9"], expected_status=None)
    assert {"1": ("rev-1", "Deleted")} == result.successful
    assert "NOT_FOUND" == result.failed["9"][0]
    assert store.version_status(REF, "1") is None


def test_delete_of_disposed_versions_is_allowed(store: Store) -> None:
    result = store.delete_versions(REF, ["3"], expected_status="Disposed")
    assert {"3": ("rev-3", "Deleted")} == result.successful


def test_delete_checks_expected_status(store: Store) -> None:
    result = store.delete_versions(REF, ["1", "2"], expected_status="Archived")
    assert (["2"], {"1": "MISMATCHED_STATUS"}) == (
        list(result.successful),
        {version: code for version, (code, _) in result.failed.items()},
    )


def test_update_status_gives_a_new_revision(store: Store) -> None:
    result = store.update_versions_status(
        REF, ["2"], target_status="Published", expected_status="Archived", version_revisions=None
    )
    assert {"2": ("rev-4", "Published")} == result.successful


def test_update_to_the_current_status_keeps_the_revision(store: Store) -> None:
    result = store.update_versions_status(
        REF, ["1"], target_status="Published", expected_status=None, version_revisions=None
    )
    assert {"1": ("rev-1", "Published")} == result.successful


def test_update_status_guards(store: Store) -> None:
    result = store.update_versions_status(
        REF,
        ["1", "2", "3", "4"],
        target_status="Unlisted",
        expected_status=None,
        version_revisions={"1": "rev-1", "2": "stale"},
    )
    codes = {version: code for version, (code, _) in result.failed.items()}
    assert {"2": "MISMATCHED_REVISION", "3": "NOT_ALLOWED", "4": "NOT_FOUND"} == codes
    assert {"1": ("rev-4", "Unlisted")} == result.successful


@pytest.mark.parametrize("target", ["Disposed", "Deleted", "Unfinished"])
def test_update_status_targets(store: Store, target: str) -> None:
    with pytest.raises(ValidationError):
        store.update_versions_status(
            REF, ["1"], target_status=target, expected_status=None, version_revisions=None
        )


def test_dispose_sets_disposed_and_drops_assets(store: Store) -> None:
    result = store.dispose_versions(
        REF, ["1", "2"], expected_status=None, version_revisions={"2": "rev-2"}
    )
    assert {"1": ("rev-4", "Disposed"), "2": ("rev-5", "Disposed")} == result.successful
    assert {} == store.version(REF, "1").assets


def test_dispose_guards(store: Store) -> None:
    """Status, then revision, as for a status update; a missing version is NOT_FOUND."""
    result = store.dispose_versions(
        REF,
        ["1", "2", "9"],
        expected_status="Published",
        version_revisions={"1": "stale"},
    )
    codes = {version: code for version, (code, _) in result.failed.items()}
    assert {"1": "MISMATCHED_REVISION", "2": "MISMATCHED_STATUS", "9": "NOT_FOUND"} == codes
    assert ("Published", "Archived") == (
        store.version_status(REF, "1"),
        store.version_status(REF, "2"),
    )


def test_disposing_a_disposed_version_again_keeps_its_revision(store: Store) -> None:
    result = store.dispose_versions(
        REF, ["3"], expected_status="Disposed", version_revisions={"3": "rev-3"}
    )
    assert {"3": ("rev-3", "Disposed")} == result.successful


def test_archive_then_restore_pinned_to_the_archived_revision(store: Store) -> None:
    """The archive's new revision is what a restore pins to; the pre-archive one is stale."""
    archived = store.update_versions_status(
        REF,
        ["1"],
        target_status="Archived",
        expected_status="Published",
        version_revisions={"1": "rev-1"},
    )
    stale = store.update_versions_status(
        REF,
        ["1"],
        target_status="Published",
        expected_status="Archived",
        version_revisions={"1": "rev-1"},
    )
    restored = store.update_versions_status(
        REF,
        ["1"],
        target_status="Published",
        expected_status="Archived",
        version_revisions={"1": "rev-4"},
    )
    assert {"1": ("rev-4", "Archived")} == archived.successful
    assert "MISMATCHED_REVISION" == stale.failed["1"][0]
    assert {"1": ("rev-5", "Published")} == restored.successful


def test_update_status_ignores_revisions_of_versions_not_requested(store: Store) -> None:
    result = store.update_versions_status(
        REF,
        ["1"],
        target_status="Unlisted",
        expected_status=None,
        version_revisions={"2": "stale"},
    )
    assert {"1": ("rev-4", "Unlisted")} == result.successful


def test_a_deleted_version_published_again_gets_a_new_revision(store: Store) -> None:
    ref = PackageRef("d1", "r1", "generic", "ns", "tool")
    content = b"payload"
    digest = hashlib.sha256(content).hexdigest()
    first, _ = store.publish(
        ref, "1.0", asset_name="a", content=content, sha256=digest, unfinished=False
    )
    first_revision = first.revision
    store.update_versions_status(
        ref, ["1.0"], target_status="Archived", expected_status=None, version_revisions=None
    )
    with pytest.raises(ConflictError):
        store.publish(ref, "1.0", asset_name="a", content=content, sha256=digest, unfinished=False)
    deleted = store.delete_versions(ref, ["1.0"], expected_status="Archived")
    again, _ = store.publish(
        ref, "1.0", asset_name="a", content=content, sha256=digest, unfinished=False
    )
    assert 3 == len({first_revision, deleted.successful["1.0"][0], again.revision})
    assert "Published" == again.status


@pytest.mark.parametrize(
    ("ref", "resource_type", "resource_id"),
    [
        (PackageRef("nope", "r1", "npm", None, "p"), "domain", "nope"),
        (PackageRef("d1", "r1", "npm", None, "p", domain_owner="999988887777"), "domain", "d1"),
        (PackageRef("d1", "nope", "npm", None, "p"), "repository", "nope"),
        (PackageRef("d1", "r1", "npm", None, "nope"), "package", "nope"),
        (PackageRef("d1", "r1", "npm", "scope", "p"), "package", "p"),
    ],
)
def test_missing_resources(
    store: Store, ref: PackageRef, resource_type: str, resource_id: str
) -> None:
    with pytest.raises(ResourceNotFoundError) as caught:
        store.delete_versions(ref, ["1"], expected_status=None)
    assert (resource_type, resource_id) == (caught.value.resource_type, caught.value.resource_id)


def test_package_survives_deleting_all_versions(store: Store) -> None:
    store.delete_versions(REF, ["1", "2", "3"], expected_status=None)
    assert {} == store.package(REF).versions


def test_duplicates_conflict(store: Store) -> None:
    with pytest.raises(ConflictError):
        store.create_domain("d1")
    with pytest.raises(ConflictError):
        store.create_repository("d1", "r1")


def test_missing_upstream_is_not_found(store: Store) -> None:
    with pytest.raises(ResourceNotFoundError):
        store.create_repository("d1", "r2", upstreams=["ghost"])


def test_publish_generic(store: Store) -> None:
    ref = PackageRef("d1", "r1", "generic", "ns", "tool")
    content = b"payload"
    record, asset = store.publish(
        ref,
        "1.0",
        asset_name="tool.bin",
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        unfinished=False,
    )
    assert ("Published", NOW, 7) == (record.status, record.published_time, asset.size)


@pytest.mark.parametrize(
    ("package_format", "namespace", "allowed"),
    [
        ("maven", "com.acme", True),
        ("maven", None, False),
        ("swift", None, False),
        ("generic", None, False),
        ("npm", None, True),
        ("npm", "acme", True),
        ("pypi", None, True),
        ("pypi", "x", False),
        ("nuget", "x", False),
        ("ruby", "x", False),
        ("cargo", "x", False),
    ],
)
def test_namespace_rule(package_format: str, namespace: str | None, allowed: bool) -> None:
    if allowed:
        check_namespace(package_format, namespace)
    else:
        with pytest.raises(ValidationError):
            check_namespace(package_format, namespace)
