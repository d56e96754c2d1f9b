"""Whether a version string is a pre-release, by the rules of its package format.

A hyphen is not a portable test: PyPI writes ``1.0rc1`` and ``2.0.dev3``, Maven ``1.0.M2``,
RubyGems ``1.0.0.pre``. Each format's own rule is used, so a policy can say "pre-release"
once (``resource.prerelease``) and mean it for every format:

- npm, NuGet, Cargo, Swift and generic packages use SemVer: a ``-`` before any ``+build``.
- PyPI uses PEP 440 (the ``packaging`` library): alpha, beta, rc and dev releases.
- Maven uses the qualifiers Maven itself orders before a release: alpha, beta, milestone, rc,
  cr and snapshot, and the short forms a1, b1, m1.
- RubyGems counts any letter as a pre-release, as ``Gem::Version#prerelease?`` does.

A version its format cannot parse is not a pre-release: policies that permit deleting
pre-releases then do not apply to it, which is the safe side for a deletion gateway.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from pkggov_gateway.domain.model import PackageFormat

__all__ = ["is_prerelease"]

_MAVEN_PRERELEASE = re.compile(
    r"(?<![a-z])(?:(?:alpha|beta|milestone|rc|cr|snapshot)(?![a-z])|[abm](?=\d))"
)
_LETTER = re.compile(r"[A-Za-z]")


def is_prerelease(package_format: PackageFormat, version: str) -> bool:
    """True when `version` is a pre-release under `package_format`'s versioning rules."""
    if package_format is PackageFormat.PYPI:
        try:
            return Version(version).is_prerelease
        except InvalidVersion:
            return False
    if package_format is PackageFormat.MAVEN:
        return _MAVEN_PRERELEASE.search(version.lower()) is not None
    if package_format is PackageFormat.RUBY:
        return _LETTER.search(version) is not None
    # SemVer: npm, NuGet, Cargo, Swift, generic.
    return "-" in version.partition("+")[0]
