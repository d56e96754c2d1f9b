"""The bundled demo seed holds exactly the documented data; malformed seeds are refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pkggov_emulator import SeedError, load_demo_seed, load_seed_file
from pkggov_emulator._seed import build_store
from pkggov_emulator._state import PackageRef, Store, new_revision

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _store(seed: Any) -> Store:
    return build_store(
        seed,
        account_id="111122223333",
        region="us-east-1",
        clock=lambda: NOW,
        revisions=new_revision,
    )


def _statuses(store: Store, ref: PackageRef) -> dict[str, str]:
    return {v.version: v.status for v in store.package(ref).versions.values()}


@pytest.fixture(scope="module")
def demo() -> Store:
    return _store(load_demo_seed())


def test_domains_and_repositories(demo: Store) -> None:
    layout = {name: sorted(d.repositories) for name, d in demo.domains.items()}
    assert {"demo": ["dev-nightly", "dev-shared", "prod-release"], "sandbox": ["scratch"]} == layout


def test_dev_shared_packages(demo: Store) -> None:
    def ref(fmt: str, namespace: str | None, name: str) -> PackageRef:
        return PackageRef("demo", "dev-shared", fmt, namespace, name)

    expected = {
        ref("npm", None, "left-pad"): dict.fromkeys(
            ("1.0.0", "1.1.0", "1.2.0", "1.3.0"), "Published"
        ),
        ref("npm", "acme", "widgets"): {
            "2.0.0": "Published",
            "2.1.0-beta.1": "Unlisted",
            "2.1.0": "Published",
        },
        ref("pypi", None, "requests-lite"): {
            "0.1.0": "Published",
            "0.2.0": "Archived",
            "0.3.0": "Published",
            "0.4.0": "Published",
            "0.5.0": "Published",
        },
        ref("maven", "com.acme", "core"): {"1.0.0": "Published", "1.1.0-SNAPSHOT": "Unfinished"},
        ref("generic", "tools", "cli"): {"1.0.0": "Published", "1.1.0": "Published"},
        ref("nuget", None, "Acme.Logging"): {"3.0.0": "Published"},
        ref("ruby", None, "acme-rails"): {"0.9.0": "Published"},
        ref("cargo", None, "acme-core"): {"0.1.0": "Published", "0.2.0": "Published"},
        ref("swift", "acme", "SwiftKit"): {"1.0.0": "Published"},
    }
    assert expected == {r: _statuses(demo, r) for r in expected}
    assert len(expected) == len(demo.domains["demo"].repositories["dev-shared"].packages)


def test_prod_release_packages(demo: Store) -> None:
    left_pad = PackageRef("demo", "prod-release", "npm", None, "left-pad")
    requests_lite = PackageRef("demo", "prod-release", "pypi", None, "requests-lite")
    assert {"1.0.0": "Published", "1.3.0": "Published"} == _statuses(demo, left_pad)
    assert {"0.5.0": "Published"} == _statuses(demo, requests_lite)
    assert 2 == len(demo.domains["demo"].repositories["prod-release"].packages)


def test_dev_nightly_has_releases_and_nightly_prereleases(demo: Store) -> None:
    web_app = PackageRef("demo", "dev-nightly", "npm", "acme", "web-app")
    nightlies = {f"1.3.0-nightly.{n}": "Unlisted" for n in range(1, 8)}
    nightlies["1.3.0-nightly.2"] = nightlies["1.3.0-nightly.3"] = "Published"
    releases = dict.fromkeys(("1.0.0", "1.1.0", "1.2.0"), "Published")
    assert {**releases, **nightlies} == _statuses(demo, web_app)


def test_sandbox_has_300_published_versions(demo: Store) -> None:
    bulk = PackageRef("sandbox", "scratch", "generic", "bulk", "artifact")
    assert {f"1.0.{i}": "Published" for i in range(300)} == _statuses(demo, bulk)


def test_every_version_has_a_revision_and_a_time_in_2025_or_2026(demo: Store) -> None:
    versions = [
        version
        for domain in demo.domains.values()
        for repository in domain.repositories.values()
        for package in repository.packages.values()
        for version in package.versions.values()
    ]
    assert 334 == len(versions)
    assert all(version.revision for version in versions)
    assert {2025, 2026} == {version.published_time.year for version in versions}
    assert len(versions) == len({version.revision for version in versions})


def test_seeded_revisions_are_stable() -> None:
    ref = PackageRef("demo", "dev-shared", "npm", None, "left-pad")
    first = _store(load_demo_seed()).version(ref, "1.0.0").revision
    assert first == _store(load_demo_seed()).version(ref, "1.0.0").revision


def test_defaults_for_optional_fields() -> None:
    seed = {
        "domains": [
            {
                "name": "d1",
                "repositories": [
                    {
                        "name": "r1",
                        "packages": [
                            {"format": "npm", "name": "p", "versions": [{"version": "1"}]}
                        ],
                    }
                ],
            }
        ]
    }
    version = _store(seed).version(PackageRef("d1", "r1", "npm", None, "p"), "1")
    assert ("Published", NOW) == (version.status, version.published_time)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ({"domain": []}, "seed: unknown keys ['domain']"),
        ({"domains": [{}]}, "seed.domains[0]: missing keys ['name']"),
        ({"domains": [{"name": "d1"}, {"name": "d1"}]}, "seed.domains[1]: Domain 'd1' already"),
        (
            {"domains": [{"name": "d1", "createdTime": "yesterday"}]},
            "seed.domains[0].createdTime: not an ISO 8601 time",
        ),
        (
            {
                "domains": [
                    {
                        "name": "d1",
                        "repositories": [
                            {"name": "r1", "packages": [{"format": "maven", "name": "core"}]}
                        ],
                    }
                ]
            },
            "A namespace is required",
        ),
        (
            {
                "domains": [
                    {
                        "name": "d1",
                        "repositories": [
                            {
                                "name": "r1",
                                "packages": [
                                    {
                                        "format": "npm",
                                        "name": "p",
                                        "versions": [{"version": "1", "status": "Deleted"}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "versions[0].status: 'Deleted' is not one of",
        ),
    ],
)
def test_malformed_seeds(seed: Any, message: str) -> None:
    with pytest.raises(SeedError, match=message.replace("[", "\\[").replace("]", "\\]")):
        _store(seed)


def test_seed_files(tmp_path: Any) -> None:
    path = tmp_path / "seed.json"
    path.write_text('{"domains": []}')
    assert {"domains": []} == load_seed_file(path)
    path.write_text("[]")
    with pytest.raises(SeedError, match="must contain a JSON object"):
        load_seed_file(path)
    with pytest.raises(SeedError, match="cannot read seed"):
        load_seed_file(tmp_path / "missing.json")
