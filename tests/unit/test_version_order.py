"""Version ordering follows each package format's own documented precedence rules."""

from __future__ import annotations

from typing import Any

import pytest

from pkggov_gateway.domain.model import PackageFormat
from pkggov_gateway.domain.version_order import has_version_order, sort_key

F = PackageFormat


def key(fmt: PackageFormat, version: str) -> Any:
    """The sort key of a version the format places (fails the test when it is not placed)."""
    placed = sort_key(fmt, version)
    assert placed is not None, f"{fmt} cannot place {version!r}"
    return placed


def sorted_by_format(fmt: PackageFormat, versions: list[str]) -> list[str]:
    """`versions` reversed, then sorted by the format's order (ties keep the reversed order)."""
    newest_first = list(reversed(versions))  # a stable sort leaves ties in this order
    return sorted(newest_first, key=lambda v: key(fmt, v))


def same_place(fmt: PackageFormat, first: str, second: str) -> bool:
    """Whether neither version precedes the other (equal precedence)."""
    a, b = key(fmt, first), key(fmt, second)
    return not a < b and not b < a


# Each list is in the format's documented ascending order, strictly: sorting the reversed list
# must give it back, so a tie between neighbours (which a stable sort leaves reversed) fails too.
ASCENDING = [
    pytest.param(
        F.NPM,
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-beta",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
        ],
        id="npm-brief",
    ),
    pytest.param(
        F.NPM,
        # The SemVer 2.0.0 specification's own precedence example (section 11).
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
            "10.0.0",
        ],
        id="npm-semver-spec",
    ),
    pytest.param(
        F.PYPI,
        ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.1"],
        id="pypi-brief",
    ),
    pytest.param(
        F.PYPI,
        # PEP 440's "summary of permitted suffixes and relative ordering" example.
        [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ],
        id="pypi-pep440-spec",
    ),
    pytest.param(F.PYPI, ["9.9", "10.0", "1!0.1", "1!1.0", "2!0.0.dev1"], id="pypi-epochs"),
    pytest.param(
        F.MAVEN,
        [
            "1.0-alpha-1",
            "1.0-beta",
            "1.0-milestone-1",
            "1.0-rc1",
            "1.0-SNAPSHOT",
            "1.0",
            "1.0-sp1",
            "1.0.1",
            "1.10",
        ],
        id="maven-brief",
    ),
    pytest.param(
        F.MAVEN,
        # Maven's ComparableVersionTest VERSIONS_QUALIFIER.
        [
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ],
        id="maven-comparableversiontest-qualifiers",
    ),
    pytest.param(
        F.MAVEN,
        # Maven's ComparableVersionTest VERSIONS_NUMBER.
        [
            "2.0",
            "2-1",
            "2.0.a",
            "2.0.0.a",
            "2.0.2",
            "2.0.123",
            "2.1.0",
            "2.1-a",
            "2.1b",
            "2.1-c",
            "2.1-1",
            "2.1.0.1",
            "2.2",
            "2.123",
            "11.a2",
            "11.a11",
            "11.b2",
            "11.b11",
            "11.m2",
            "11.m11",
            "11",
            "11.a",
            "11b",
            "11c",
            "11m",
        ],
        id="maven-comparableversiontest-numbers",
    ),
    pytest.param(
        F.RUBY,
        ["1.0.a", "1.0.b1", "1.0.pre", "1.0.rc1", "1.0", "1.0.1", "1.9", "1.10"],
        id="ruby",
    ),
    pytest.param(F.RUBY, ["1.0.a9", "1.0.a10", "1.0.b1"], id="ruby-numeric-segments"),
    pytest.param(
        F.NUGET,
        [
            "1.0.0-alpha",
            "1.0.0-alpha.2",
            "1.0.0-alpha.10",
            "1.0.0-beta",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.0.1",
            "1.0.0.10",
            "1.0.1",
            "1.10.0",
        ],
        id="nuget",
    ),
    pytest.param(
        F.CARGO,
        ["0.1.0", "0.9.0-beta.2", "0.9.0", "0.10.0", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0"],
        id="cargo",
    ),
    pytest.param(
        F.SWIFT,
        ["5.0.0-beta.1", "5.0.0-beta.2", "5.0.0", "5.0.1", "5.9.0", "5.10.0", "6.0.0-rc.1"],
        id="swift",
    ),
]


@pytest.mark.parametrize(("fmt", "ascending"), ASCENDING)
def test_versions_sort_in_the_formats_documented_order(
    fmt: PackageFormat, ascending: list[str]
) -> None:
    """Sorting by the key gives each format's documented ascending order, with no ties."""
    assert ascending == sorted_by_format(fmt, ascending)


@pytest.mark.parametrize(
    ("fmt", "first", "second"),
    [
        # SemVer: build metadata does not take part in precedence.
        (F.NPM, "1.0.0+build.1", "1.0.0+build.2"),
        (F.NPM, "1.0.0+build.1", "1.0.0"),
        (F.CARGO, "1.2.3+git.abc", "1.2.3"),
        (F.SWIFT, "5.0.0+b1", "5.0.0+b2"),
        # PEP 440 normalization.
        (F.PYPI, "1.0", "1.0.0"),
        (F.PYPI, "1.0rc1", "1.0.0-rc.1"),
        (F.PYPI, "1.0rc1", "1.0.RC1"),
        # Maven: trailing zeros and the release aliases ga / final, any case.
        (F.MAVEN, "1.0", "1.0.0"),
        (F.MAVEN, "1.0", "1.0-ga"),
        (F.MAVEN, "1.0", "1.0-final"),
        (F.MAVEN, "1.0", "1.0.Final"),
        (F.MAVEN, "1.0", "1.0-GA"),
        (F.MAVEN, "1.0-alpha1", "1.0-a1"),
        (F.MAVEN, "1.0-beta1", "1.0-b1"),
        (F.MAVEN, "1.0-milestone1", "1.0-m1"),
        (F.MAVEN, "1.0-cr1", "1.0-rc1"),
        (F.MAVEN, "1.0-alpha1", "1.0-ALPHA1"),
        # RubyGems: trailing zeros.
        (F.RUBY, "1.0", "1.0.0"),
        # NuGet: normalized parts, case-insensitive labels, metadata ignored.
        (F.NUGET, "1.0", "1.0.0"),
        (F.NUGET, "1.0.0", "1.0.0.0"),
        (F.NUGET, "1.0.0-RC.1", "1.0.0-rc.1"),
        (F.NUGET, "1.0.0+abc", "1.0.0"),
    ],
)
def test_equivalent_spellings_take_the_same_place(
    fmt: PackageFormat, first: str, second: str
) -> None:
    """Versions the format calls equal in precedence: neither sorts before the other."""
    assert same_place(fmt, first, second) is True


@pytest.mark.parametrize(
    ("fmt", "older", "newer"),
    [
        (F.NPM, "1.0.0-rc.1+build.9", "1.0.0+build.1"),
        (F.NPM, "1.0.0+build.9", "1.0.1+build.1"),
        (F.CARGO, "1.0.0-alpha+001", "1.0.0+20130313144700"),
    ],
)
def test_build_metadata_does_not_override_precedence(
    fmt: PackageFormat, older: str, newer: str
) -> None:
    """A pre-release or lower version stays older whatever its build metadata says."""
    assert [older, newer] == sorted_by_format(fmt, [older, newer])


def test_maven_unknown_qualifiers_sort_after_sp() -> None:
    """Maven: sp follows the release, unknown qualifiers follow sp (alphabetically)."""
    ascending = ["1.0", "1.0-sp1", "1.0-foo", "1.0-jre", "1.0.1"]
    assert ascending == sorted_by_format(F.MAVEN, ascending)


def test_maven_places_any_text_before_numbers() -> None:
    """Maven's ComparableVersion parses any string: free text sorts before numeric versions."""
    assert ["latest", "0.1", "1.0"] == sorted_by_format(F.MAVEN, ["latest", "0.1", "1.0"])


def test_pypi_local_versions_follow_their_public_version() -> None:
    """PEP 440: a local version sorts after its public version and before the next one."""
    ascending = ["1.0", "1.0+ubuntu.1", "1.0+ubuntu.2", "1.0.post1", "1.1"]
    assert ascending == sorted_by_format(F.PYPI, ascending)


def test_pypi_epoch_outranks_release_numbers() -> None:
    """PEP 440: any version with epoch 1 is newer than every epoch-0 version."""
    assert ["2024.1", "1!0.1"] == sorted_by_format(F.PYPI, ["2024.1", "1!0.1"])


@pytest.mark.parametrize(
    ("fmt", "version"),
    [
        (F.NPM, "latest"),
        (F.NPM, "not a version"),
        (F.NPM, "1..0"),
        (F.NPM, ""),
        (F.NPM, "1.0.0-rc..1"),
        (F.CARGO, "v"),
        (F.CARGO, "nightly"),
        (F.SWIFT, "main"),
        (F.PYPI, "latest"),
        (F.PYPI, "1.0-SNAPSHOT"),
        (F.PYPI, "1.0.0-"),
        (F.RUBY, "latest"),
        (F.RUBY, "1.0.0-"),
        (F.RUBY, "1..0"),
        (F.NUGET, "latest"),
        (F.NUGET, "1.0.0-"),
        (F.NUGET, "1.0.0-beta..1"),
        (F.NUGET, "1.0.0.0.0"),
        (F.NUGET, "v"),  # univers parses it into a key that cannot be compared
        (F.NUGET, " "),
        (F.GENERIC, "1.0.0"),
        (F.GENERIC, "2024-06-01"),
    ],
)
def test_unparseable_versions_have_no_place(fmt: PackageFormat, version: str) -> None:
    """A version the format's ordering cannot parse (or any generic version) gets no key."""
    assert sort_key(fmt, version) is None


@pytest.mark.parametrize("fmt", [F.NPM, F.CARGO, F.SWIFT])
@pytest.mark.parametrize("version", ["1.0.0-", "1.0.0+", "1.2.3.4"])
def test_semver_formats_do_not_place_malformed_semver(fmt: PackageFormat, version: str) -> None:
    """A string SemVer's grammar rejects (empty pre-release/build, four parts) has no place."""
    assert sort_key(fmt, version) is None


@pytest.mark.parametrize("fmt", list(PackageFormat))
def test_every_format_but_generic_has_an_order(fmt: PackageFormat) -> None:
    """Only generic packages lack a version ordering of their own."""
    assert (fmt is not F.GENERIC) == has_version_order(fmt)


@pytest.mark.parametrize("fmt", [f for f in PackageFormat if f is not F.GENERIC])
def test_a_plain_release_is_placed_by_every_ordered_format(fmt: PackageFormat) -> None:
    """Every format with an order places 1.0.0 below 1.0.1 below 2.0.0."""
    assert ["1.0.0", "1.0.1", "2.0.0"] == sorted_by_format(fmt, ["1.0.0", "1.0.1", "2.0.0"])
