"""Pre-release detection follows each package format's own versioning rules."""

from __future__ import annotations

import pytest

from pkggov_gateway.domain.model import PackageFormat
from pkggov_gateway.domain.versions import is_prerelease

F = PackageFormat


@pytest.mark.parametrize(
    ("package_format", "version", "expected"),
    [
        # SemVer formats: a hyphen before any build metadata.
        (F.NPM, "1.0.0-rc.1", True),
        (F.NPM, "1.0.0", False),
        (F.NPM, "1.0.0+build-7", False),
        (F.NPM, "1.0.0-alpha+build.7", True),
        (F.NUGET, "2.1.0-preview.3", True),
        (F.NUGET, "2.1.0", False),
        (F.CARGO, "0.9.0-beta.2", True),
        (F.SWIFT, "5.0.0", False),
        (F.GENERIC, "2024.01.02-nightly", True),
        (F.GENERIC, "2024.01.02", False),
        # PEP 440: no hyphen needed; post releases are releases; unparsable is not.
        (F.PYPI, "1.2rc1", True),
        (F.PYPI, "1.2.0a3", True),
        (F.PYPI, "2.0.dev4", True),
        (F.PYPI, "1.0.0-rc.1", True),
        (F.PYPI, "1.2.post1", False),
        (F.PYPI, "1.2", False),
        (F.PYPI, "not a version", False),
        # Maven: the qualifiers Maven orders before the release.
        (F.MAVEN, "3.1.0-SNAPSHOT", True),
        (F.MAVEN, "3.1.M2", True),
        (F.MAVEN, "1.0-alpha-1", True),
        (F.MAVEN, "1.0.0.RC1", True),
        (F.MAVEN, "1.0b2", True),
        (F.MAVEN, "1.0-cr1", True),
        (F.MAVEN, "32.1.2-jre", False),
        (F.MAVEN, "2.0.0.Final", False),
        (F.MAVEN, "1.0-GA", False),
        (F.MAVEN, "1.0-sp1", False),
        (F.MAVEN, "5.3.30", False),
        # RubyGems: any letter.
        (F.RUBY, "1.0.0.pre", True),
        (F.RUBY, "2.0.0.rc1", True),
        (F.RUBY, "2.0.0", False),
    ],
)
def test_prerelease_by_format(package_format: PackageFormat, version: str, expected: bool) -> None:
    assert expected is is_prerelease(package_format, version)


def test_every_format_has_a_rule() -> None:
    """A new format cannot slip through unnoticed: each answers for a plain release."""
    for package_format in PackageFormat:
        assert is_prerelease(package_format, "1.0.0") is False
