"""Each format's own version ordering (for retention's keep-newest counts).

The orderings come from libraries made for them: python-semver for SemVer, univers (made for
comparing versions across ecosystems) for the others:

* npm, Cargo, Swift: SemVer 2, strictly (``1.2``, ``v1.2.3`` or ``1.2.3.4`` are not SemVer, and
  their registries refuse them; univers would coerce them, so it is not used here).
* PyPI: PEP 440, by ``packaging``.
* Maven: Maven's ComparableVersion (``sp`` and unknown qualifiers sort after the release).
* RubyGems: Gem::Version.
* NuGet: SemVer 2 with an optional fourth part.
* generic: none. A generic version is free text, so only publication time orders it.

Whether a version is a pre-release is `domain.versions.is_prerelease`, the same test the policy
uses (``resource.prerelease``): a rule and a policy never disagree about it.

A version the format's ordering cannot parse has no place in the order (`sort_key` returns
None): retention keeps it rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import semver
from univers import versions as uv

from pkggov_gateway.domain.model import PackageFormat

__all__ = ["has_version_order", "sort_key"]

_PARSERS: dict[PackageFormat, Callable[[str], Any]] = {
    PackageFormat.NPM: semver.Version.parse,
    PackageFormat.CARGO: semver.Version.parse,
    PackageFormat.SWIFT: semver.Version.parse,
    PackageFormat.PYPI: uv.PypiVersion,
    PackageFormat.MAVEN: uv.MavenVersion,
    PackageFormat.RUBY: uv.RubygemsVersion,
    PackageFormat.NUGET: uv.NugetVersion,
}


_PROBES = {fmt: parser("1.0.0") for fmt, parser in _PARSERS.items()}
"""A well-formed version of each format, to check that a key compares."""


def has_version_order(fmt: PackageFormat) -> bool:
    """Whether `fmt`'s versions have an ordering of their own (generic's do not)."""
    return fmt in _PARSERS


def sort_key(fmt: PackageFormat, version: str) -> Any | None:
    """`version` as a key of `fmt`'s ordering (ascending: oldest first), or None when it cannot
    be placed (or `fmt` has no ordering)."""
    parser = _PARSERS.get(fmt)
    if parser is None:
        return None
    try:
        key = parser(version)
        # univers parses some strings ("v" as a NuGet version) into keys that cannot compare.
        _ = sorted((key, _PROBES[fmt]))
    except Exception:  # noqa: BLE001 - the libraries raise many kinds for unparseable input
        return None
    return key
