"""Every emulated CodeArtifact operation answers unmodified boto3 like AWS documents it."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from pkggov_emulator import DEMO_ACCOUNT_ID, Emulator

LEFT_PAD = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}
WIDGETS = {**LEFT_PAD, "namespace": "acme", "package": "widgets"}
REQUESTS_LITE = {**LEFT_PAD, "format": "pypi", "package": "requests-lite"}
BULK = {
    "domain": "sandbox",
    "repository": "scratch",
    "format": "generic",
    "namespace": "bulk",
    "package": "artifact",
}


def _versions(codeartifact: Any, **coordinates: Any) -> dict[str, str]:
    listing = codeartifact.list_package_versions(**coordinates)
    return {v["version"]: v["status"] for v in listing["versions"]}


def test_create_and_describe_domain(codeartifact: Any) -> None:
    created = codeartifact.create_domain(domain="team-x")["domain"]
    described = codeartifact.describe_domain(domain="team-x")["domain"]
    assert "team-x" == created["name"]
    assert DEMO_ACCOUNT_ID == created["owner"]
    assert "arn:aws:codeartifact:us-east-1:111122223333:domain/team-x" == created["arn"]
    assert "Active" == described["status"]
    assert 0 == described["repositoryCount"]
    assert isinstance(described["createdTime"], dt.datetime)


def test_list_domains(codeartifact: Any) -> None:
    domains = codeartifact.list_domains()["domains"]
    assert ["demo", "sandbox"] == [d["name"] for d in domains]


def test_create_describe_and_list_repositories(codeartifact: Any) -> None:
    created = codeartifact.create_repository(
        domain="demo",
        repository="team-cache",
        description="cache",
        upstreams=[{"repositoryName": "dev-shared"}],
    )["repository"]
    described = codeartifact.describe_repository(domain="demo", repository="team-cache")
    in_domain = codeartifact.list_repositories_in_domain(domain="demo")["repositories"]
    everywhere = codeartifact.list_repositories()["repositories"]
    assert (
        "arn:aws:codeartifact:us-east-1:111122223333:repository/demo/team-cache" == (created["arn"])
    )
    assert [{"repositoryName": "dev-shared"}] == described["repository"]["upstreams"]
    assert ["dev-nightly", "dev-shared", "prod-release", "team-cache"] == [
        r["name"] for r in in_domain
    ]
    assert [
        ("demo", "dev-nightly"),
        ("demo", "dev-shared"),
        ("demo", "prod-release"),
        ("demo", "team-cache"),
        ("sandbox", "scratch"),
    ] == [(r["domainName"], r["name"]) for r in everywhere]


def test_list_packages_of_the_demo_repository(codeartifact: Any) -> None:
    packages = codeartifact.list_packages(domain="demo", repository="dev-shared")["packages"]
    expected = [
        ("cargo", None, "acme-core"),
        ("generic", "tools", "cli"),
        ("maven", "com.acme", "core"),
        ("npm", None, "left-pad"),
        ("npm", "acme", "widgets"),
        ("nuget", None, "Acme.Logging"),
        ("pypi", None, "requests-lite"),
        ("ruby", None, "acme-rails"),
        ("swift", "acme", "SwiftKit"),
    ]
    assert expected == [(p["format"], p.get("namespace"), p["package"]) for p in packages]
    assert {"publish": "ALLOW", "upstream": "ALLOW"} == (
        packages[0]["originConfiguration"]["restrictions"]
    )


def test_list_packages_filters(codeartifact: Any) -> None:
    npm = codeartifact.list_packages(domain="demo", repository="dev-shared", format="npm")
    scoped = codeartifact.list_packages(domain="demo", repository="dev-shared", namespace="ac")
    prefixed = codeartifact.list_packages(
        domain="demo", repository="dev-shared", packagePrefix="acme-"
    )
    assert ["left-pad", "widgets"] == [p["package"] for p in npm["packages"]]
    assert ["widgets", "SwiftKit"] == [p["package"] for p in scoped["packages"]]
    assert ["acme-core", "acme-rails"] == [p["package"] for p in prefixed["packages"]]


def test_list_packages_paginates(codeartifact: Any) -> None:
    pages = codeartifact.get_paginator("list_packages").paginate(
        domain="demo", repository="dev-shared", PaginationConfig={"PageSize": 4}
    )
    sizes = [len(page["packages"]) for page in pages]
    assert [4, 4, 1] == sizes


def test_describe_package(codeartifact: Any) -> None:
    package = codeartifact.describe_package(**WIDGETS)["package"]
    assert {"format": "npm", "namespace": "acme", "name": "widgets"} == {
        key: package[key] for key in ("format", "namespace", "name")
    }


def test_list_package_versions_with_default_display_version(codeartifact: Any) -> None:
    listing = codeartifact.list_package_versions(**WIDGETS)
    assert "2.1.0" == listing["defaultDisplayVersion"]
    assert ("npm", "acme", "widgets") == (
        listing["format"],
        listing["namespace"],
        listing["package"],
    )
    assert {"2.0.0": "Published", "2.1.0": "Published", "2.1.0-beta.1": "Unlisted"} == {
        v["version"]: v["status"] for v in listing["versions"]
    }
    assert {"domainEntryPoint": {"repositoryName": "dev-shared"}, "originType": "INTERNAL"} == (
        listing["versions"][0]["origin"]
    )


def test_list_package_versions_filters_by_status(codeartifact: Any) -> None:
    archived = codeartifact.list_package_versions(**REQUESTS_LITE, status="Archived")
    assert ["0.2.0"] == [v["version"] for v in archived["versions"]]


def test_list_package_versions_sorts_numerically_and_by_published_time(codeartifact: Any) -> None:
    by_version = codeartifact.list_package_versions(**BULK, maxResults=12)
    by_time = codeartifact.list_package_versions(**BULK, maxResults=3, sortBy="PUBLISHED_TIME")
    assert [f"1.0.{i}" for i in range(12)] == [v["version"] for v in by_version["versions"]]
    assert ["1.0.299", "1.0.298", "1.0.297"] == [v["version"] for v in by_time["versions"]]


def test_list_package_versions_paginates_through_300_versions(codeartifact: Any) -> None:
    pages = list(
        codeartifact.get_paginator("list_package_versions").paginate(
            **BULK, PaginationConfig={"PageSize": 100}
        )
    )
    versions = [v["version"] for page in pages for v in page["versions"]]
    assert [100, 100, 100] == [len(page["versions"]) for page in pages]
    assert sorted(f"1.0.{i}" for i in range(300)) == sorted(versions)
    assert 300 == len(set(versions))


def test_pagination_survives_deletions_between_pages(codeartifact: Any) -> None:
    first = codeartifact.list_package_versions(**BULK, maxResults=50)
    codeartifact.delete_package_versions(**BULK, versions=[v["version"] for v in first["versions"]])
    second = codeartifact.list_package_versions(**BULK, maxResults=50, nextToken=first["nextToken"])
    assert [f"1.0.{i}" for i in range(50, 100)] == [v["version"] for v in second["versions"]]


def test_describe_package_version(codeartifact: Any) -> None:
    described = codeartifact.describe_package_version(**WIDGETS, packageVersion="2.1.0-beta.1")
    version = described["packageVersion"]
    assert "Unlisted" == version["status"]
    assert "@acme/widgets" == version["displayName"]
    assert dt.datetime(2025, 11, 5, 9, 15, tzinfo=dt.UTC) == version["publishedTime"]
    assert version["revision"]


def test_delete_package_versions_reports_each_version(
    codeartifact: Any, emulator: Emulator
) -> None:
    before = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="1.1.0")
    result = codeartifact.delete_package_versions(
        **LEFT_PAD, versions=["1.1.0", "9.9.9"], expectedStatus="Published"
    )
    assert {"1.1.0": {"revision": before["packageVersion"]["revision"], "status": "Deleted"}} == (
        result["successfulVersions"]
    )
    assert "NOT_FOUND" == result["failedVersions"]["9.9.9"]["errorCode"]
    assert emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.1.0") is None
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_delete_package_versions_mismatched_status(codeartifact: Any, emulator: Emulator) -> None:
    result = codeartifact.delete_package_versions(
        **REQUESTS_LITE, versions=["0.2.0", "0.3.0"], expectedStatus="Archived"
    )
    assert ["0.2.0"] == list(result["successfulVersions"])
    assert {"0.3.0": "MISMATCHED_STATUS"} == {
        version: error["errorCode"] for version, error in result["failedVersions"].items()
    }
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "pypi", None, "requests-lite", "0.3.0"
    )


def test_deleted_version_can_be_published_again(codeartifact: Any, emulator: Emulator) -> None:
    content = b"cli 1.0.0 rebuilt"
    codeartifact.delete_package_versions(
        **{**LEFT_PAD, "format": "generic", "namespace": "tools", "package": "cli"},
        versions=["1.0.0"],
    )
    published = codeartifact.publish_package_version(
        domain="demo",
        repository="dev-shared",
        format="generic",
        namespace="tools",
        package="cli",
        packageVersion="1.0.0",
        assetContent=content,
        assetName="cli-1.0.0.tar.gz",
        assetSHA256=hashlib.sha256(content).hexdigest(),
    )
    assert "Published" == published["status"]
    assert hashlib.sha256(content).hexdigest() == published["asset"]["hashes"]["SHA-256"]
    assert len(content) == published["asset"]["size"]
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "generic", "tools", "cli", "1.0.0"
    )


def test_publish_unfinished_then_final_asset(codeartifact: Any) -> None:
    coordinates = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "generic",
        "namespace": "tools",
        "package": "cli",
        "packageVersion": "2.0.0",
    }
    first = codeartifact.publish_package_version(
        **coordinates,
        assetContent=b"a",
        assetName="a.bin",
        assetSHA256=hashlib.sha256(b"a").hexdigest(),
        unfinished=True,
    )
    second = codeartifact.publish_package_version(
        **coordinates,
        assetContent=b"b",
        assetName="b.bin",
        assetSHA256=hashlib.sha256(b"b").hexdigest(),
    )
    assert ("Unfinished", "Published") == (first["status"], second["status"])
    assert first["versionRevision"] != second["versionRevision"]


def test_update_package_versions_status(codeartifact: Any, emulator: Emulator) -> None:
    before = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="1.2.0")
    result = codeartifact.update_package_versions_status(
        **LEFT_PAD, versions=["1.2.0"], targetStatus="Archived", expectedStatus="Published"
    )
    success = result["successfulVersions"]["1.2.0"]
    assert "Archived" == success["status"]
    assert before["packageVersion"]["revision"] != success["revision"]
    assert "Archived" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.2.0"
    )


def test_update_package_versions_status_guards(codeartifact: Any) -> None:
    codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.0.0"])
    result = codeartifact.update_package_versions_status(
        **LEFT_PAD,
        versions=["1.0.0", "1.1.0", "1.2.0", "7.7.7"],
        versionRevisions={"1.1.0": "not-the-revision"},
        targetStatus="Unlisted",
    )
    codes = {version: error["errorCode"] for version, error in result["failedVersions"].items()}
    assert {"1.0.0": "NOT_ALLOWED", "1.1.0": "MISMATCHED_REVISION", "7.7.7": "NOT_FOUND"} == codes
    assert ["1.2.0"] == list(result["successfulVersions"])


def test_dispose_package_versions(codeartifact: Any) -> None:
    described = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="1.3.0")
    revision = described["packageVersion"]["revision"]
    result = codeartifact.dispose_package_versions(
        **LEFT_PAD, versions=["1.3.0"], versionRevisions={"1.3.0": revision}
    )
    after = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="1.3.0")
    assert "Disposed" == result["successfulVersions"]["1.3.0"]["status"]
    assert "Disposed" == after["packageVersion"]["status"]
    assert {"Disposed"} == set(_versions(codeartifact, **LEFT_PAD, status="Disposed").values())


@pytest.mark.parametrize(
    ("coordinates", "version"),
    [
        ({**LEFT_PAD, "format": "maven", "namespace": "com.acme", "package": "core"}, "1.0.0"),
        ({**LEFT_PAD, "format": "nuget", "package": "Acme.Logging"}, "3.0.0"),
        ({**LEFT_PAD, "format": "ruby", "package": "acme-rails"}, "0.9.0"),
        ({**LEFT_PAD, "format": "cargo", "package": "acme-core"}, "0.2.0"),
        ({**LEFT_PAD, "format": "swift", "namespace": "acme", "package": "SwiftKit"}, "1.0.0"),
    ],
)
def test_delete_works_for_every_format(
    codeartifact: Any, coordinates: dict[str, str], version: str
) -> None:
    result = codeartifact.delete_package_versions(**coordinates, versions=[version])
    assert [version] == list(result["successfulVersions"])


def test_prod_release_repository_is_independent(codeartifact: Any) -> None:
    codeartifact.delete_package_versions(**LEFT_PAD, versions=["1.0.0"])
    prod = _versions(codeartifact, **{**LEFT_PAD, "repository": "prod-release"})
    assert {"1.0.0": "Published", "1.3.0": "Published"} == prod


def test_put_version_helper_sets_up_any_format(codeartifact: Any, emulator: Emulator) -> None:
    revision = emulator.put_version(
        "demo", "dev-shared", "npm", None, "left-pad", "2.0.0", status="Unlisted"
    )
    described = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="2.0.0")
    assert (revision, "Unlisted") == (
        described["packageVersion"]["revision"],
        described["packageVersion"]["status"],
    )
