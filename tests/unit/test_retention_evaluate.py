"""Retention evaluation decides each version by the first applicable clause, in documented order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pkggov_gateway.domain.errors import InvalidRequestError
from pkggov_gateway.domain.model import PackageFormat, VersionStatus
from pkggov_gateway.domain.retention import (
    AgeSplit,
    Clause,
    Order,
    PackageVersions,
    PrereleaseScope,
    RetentionDecision,
    RetentionRule,
    evaluate,
    rule_from_mapping,
)
from pkggov_gateway.domain.version_order import sort_key
from pkggov_gateway.domain.versions import is_prerelease

F = PackageFormat
C = Clause
S = VersionStatus
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

Age = float | timedelta | None
"""Days ago (or a timedelta ago); None: the publication time is unknown."""


class Published:
    """A fake DescribePackageVersion: each version's publication time, every read recorded."""

    def __init__(self, ages: Mapping[str, Age]) -> None:
        self.times: dict[str, datetime | None] = {v: _at(age) for v, age in ages.items()}
        self.calls: list[str] = []

    def __call__(self, version: str) -> datetime | None:
        self.calls.append(version)
        return self.times.get(version)


def _at(age: Age) -> datetime | None:
    if age is None:
        return None
    return NOW - (age if isinstance(age, timedelta) else timedelta(days=age))


def package(
    fmt: PackageFormat,
    newest_first: Sequence[tuple[str, Age]],
    latest: str | None = None,
    statuses: Mapping[str, VersionStatus] | None = None,
) -> tuple[PackageVersions, Published]:
    """A package whose versions were published in `newest_first` order, each `age` ago."""
    status_of = dict(statuses or {})
    versions = PackageVersions(
        fmt,
        {v: status_of.get(v, S.PUBLISHED) for v, _ in newest_first},
        [v for v, _ in newest_first],
        latest,
    )
    return versions, Published(dict(newest_first))


def decide(
    raw: Mapping[str, Any], versions: PackageVersions, published: Published
) -> list[RetentionDecision]:
    """Evaluate the rule given as a mapping."""
    return evaluate(rule_from_mapping(raw), versions, NOW, published)


def clauses(decisions: Sequence[RetentionDecision]) -> dict[str, Clause]:
    """Each version -> the clause that decided it."""
    return {d.version: d.clause for d in decisions}


def deleted(decisions: Sequence[RetentionDecision]) -> list[str]:
    """The versions the rule deletes, in output order."""
    return [d.version for d in decisions if d.delete]


def test_only_selected_versions_are_deleted() -> None:
    """A decision deletes exactly when its clause is SELECTED."""
    versions, published = package(F.NPM, [("3.0.0", 1), ("2.0.0", 90), ("1.0.0", 400)], "3.0.0")
    decisions = decide({"older_than_days": 30}, versions, published)
    assert [(d.version, d.delete) for d in decisions] == [
        (d.version, d.clause is C.SELECTED) for d in decisions
    ]
    assert ["2.0.0", "1.0.0"] == deleted(decisions)


# --- keep newest: version order vs publication order ----------------------------------------------

# An old branch got a patch release after the new major: 1.2.9 is published after 2.0.1.
BACKPORT: list[tuple[str, Age]] = [("1.2.9", 10), ("2.0.1", 40), ("2.0.0", 50), ("1.2.8", 100)]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        pytest.param(
            "version",
            {
                "2.0.1": C.LATEST,
                "2.0.0": C.KEEP_NEWEST,
                "1.2.9": C.SELECTED,
                "1.2.8": C.SELECTED,
            },
            id="version",
        ),
        pytest.param(
            "published",
            {
                "1.2.9": C.LATEST,  # the newest Published release by publication
                "2.0.1": C.LATEST,  # the package's latest version
                "2.0.0": C.SELECTED,
                "1.2.8": C.SELECTED,
            },
            id="published",
        ),
    ],
)
def test_keep_newest_ranks_by_the_rules_order(order: str, expected: dict[str, Clause]) -> None:
    """A backported patch is old by version but new by publication: the order decides."""
    versions, published = package(F.NPM, BACKPORT, latest="2.0.1")
    decisions = decide({"order": order, "keep_newest": 2}, versions, published)
    assert expected == clauses(decisions)
    assert list(expected) == [d.version for d in decisions]


def test_keep_newest_counts_include_the_latest() -> None:
    """Keeping the newest 5 keeps 5 versions, the latest among them, not 6."""
    names = [f"1.{i}.0" for i in range(7, -1, -1)]
    versions, published = package(F.NPM, [(v, 100 + i) for i, v in enumerate(names)], "1.7.0")
    decisions = decide({"keep_newest": 5}, versions, published)
    assert {
        "1.7.0": C.LATEST,
        "1.6.0": C.KEEP_NEWEST,
        "1.5.0": C.KEEP_NEWEST,
        "1.4.0": C.KEEP_NEWEST,
        "1.3.0": C.KEEP_NEWEST,
        "1.2.0": C.SELECTED,
        "1.1.0": C.SELECTED,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


def test_keep_newest_counts_only_versions_in_scope() -> None:
    """Out-of-scope versions (here Archived) neither count nor are counted."""
    versions, published = package(
        F.NPM,
        [("4.0.0", 1), ("3.0.0", 2), ("2.0.0", 3), ("1.0.0", 4)],
        "4.0.0",
        {"3.0.0": S.ARCHIVED},
    )
    decisions = decide({"keep_newest": 2}, versions, published)
    assert {
        "4.0.0": C.LATEST,
        "3.0.0": C.STATUS,
        "2.0.0": C.KEEP_NEWEST,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


MIXED: list[tuple[str, Age]] = [
    ("2.0.0-rc.2", 5),
    ("2.0.0-rc.1", 10),
    ("1.2.0", 20),
    ("1.2.0-beta.1", 30),
    ("1.1.0", 40),
    ("1.0.0", 50),
]


def test_releases_and_prereleases_are_counted_separately() -> None:
    """keep_newest_releases and keep_newest_prereleases each rank their own kind."""
    versions, published = package(F.NPM, MIXED, "1.2.0")
    decisions = decide(
        {"keep_newest_releases": 2, "keep_newest_prereleases": 1}, versions, published
    )
    assert {
        "2.0.0-rc.2": C.KEEP_NEWEST_PRERELEASES,
        "2.0.0-rc.1": C.SELECTED,
        "1.2.0": C.LATEST,
        "1.2.0-beta.1": C.SELECTED,
        "1.1.0": C.KEEP_NEWEST_RELEASES,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)
    assert [True, True, False, True, False, False] == [d.prerelease for d in decisions]


def test_a_count_for_one_kind_does_not_guard_the_other() -> None:
    """With keep_newest_releases and no pre-releases kept (0), every pre-release outside the
    guards is deleted."""
    versions, published = package(F.NPM, MIXED, "1.2.0")
    decisions = decide(
        {"keep_newest_releases": 3, "keep_newest_prereleases": 0}, versions, published
    )
    assert {
        "2.0.0-rc.2": C.SELECTED,
        "2.0.0-rc.1": C.SELECTED,
        "1.2.0": C.LATEST,
        "1.2.0-beta.1": C.SELECTED,
        "1.1.0": C.KEEP_NEWEST_RELEASES,
        "1.0.0": C.KEEP_NEWEST_RELEASES,
    } == clauses(decisions)


def test_keep_newest_comes_before_the_per_kind_counts() -> None:
    """A version within keep_newest is KEEP_NEWEST even when its kind's count also covers it."""
    versions, published = package(F.NPM, MIXED, "1.2.0")
    decisions = decide({"keep_newest": 2, "keep_newest_releases": 2}, versions, published)
    assert {
        "2.0.0-rc.2": C.KEEP_NEWEST,
        "2.0.0-rc.1": C.KEEP_NEWEST,
        "1.2.0": C.LATEST,
        "1.2.0-beta.1": C.SELECTED,
        "1.1.0": C.KEEP_NEWEST_RELEASES,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


# --- LATEST ---------------------------------------------------------------------------------------


def test_latest_keeps_the_display_version_and_the_newest_release_whatever_their_age() -> None:
    """With no count and every version old, the latest and the newest release survive."""
    versions, published = package(
        F.NPM,
        [("3.0.0-rc.1", 300), ("2.0.0", 400), ("1.1.0", 500), ("1.0.0", 600)],
        latest="1.1.0",  # a dist-tag pinned to an older line
    )
    decisions = decide({"older_than_days": 1}, versions, published)
    assert {
        "3.0.0-rc.1": C.SELECTED,
        "2.0.0": C.LATEST,
        "1.1.0": C.LATEST,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)
    reasons = {d.version: d.reason for d in decisions}
    assert ("the package's newest release", "the package's latest version") == (
        reasons["2.0.0"],
        reasons["1.1.0"],
    )


def test_a_prerelease_latest_is_kept() -> None:
    """A pre-release that is the package's latest version is kept even by a pre-release rule."""
    versions, published = package(
        F.NPM, [("2.0.0-rc.2", 300), ("2.0.0-rc.1", 400), ("1.0.0", 500)], "2.0.0-rc.2"
    )
    decisions = decide({"prerelease": "only", "older_than_days": 1}, versions, published)
    assert {
        "2.0.0-rc.2": C.LATEST,
        "2.0.0-rc.1": C.SELECTED,
        "1.0.0": C.PRERELEASE_SCOPE,
    } == clauses(decisions)


def test_the_protected_release_is_the_newest_published_one() -> None:
    """An Unlisted newer release is not protected; the newest Published release is."""
    versions, published = package(
        F.NPM,
        [("3.0.0-rc.1", 300), ("2.0.0", 400), ("1.5.0", 500), ("1.0.0", 600)],
        statuses={"2.0.0": S.UNLISTED},
    )
    decisions = decide({"older_than_days": 1}, versions, published)
    assert {
        "3.0.0-rc.1": C.SELECTED,
        "2.0.0": C.SELECTED,
        "1.5.0": C.LATEST,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


def test_latest_guards_even_a_zero_count() -> None:
    """keep_newest 0 with an age guard still never deletes the latest."""
    versions, published = package(F.PYPI, [("2.0", 90), ("1.0", 100)], "2.0")
    decisions = decide({"keep_newest": 0, "older_than_days": 30}, versions, published)
    assert {"2.0": C.LATEST, "1.0": C.SELECTED} == clauses(decisions)


# --- pre-release detection per format -------------------------------------------------------------

FORMAT_CASES = [
    pytest.param(F.PYPI, "1.0", "0.9", "1.0rc1", id="pypi"),
    pytest.param(F.MAVEN, "1.0", "0.9", "1.0-SNAPSHOT", id="maven"),
    pytest.param(F.RUBY, "1.0.0", "0.9.0", "1.0.0.pre", id="ruby"),
    pytest.param(F.NPM, "1.0.0", "0.9.0", "1.0.0-rc.1", id="npm"),
    pytest.param(F.NUGET, "1.0.0", "0.9.0", "1.0.0-beta", id="nuget"),
    pytest.param(F.CARGO, "1.0.0", "0.9.0", "1.0.0-alpha.1", id="cargo"),
    pytest.param(F.SWIFT, "1.0.0", "0.9.0", "1.0.0-beta.1", id="swift"),
]


@pytest.mark.parametrize(("fmt", "newer", "older", "pre"), FORMAT_CASES)
def test_a_prerelease_only_rule_finds_each_formats_prereleases(
    fmt: PackageFormat, newer: str, older: str, pre: str
) -> None:
    """prerelease=only deletes the format's pre-release and leaves its releases out of scope."""
    versions, published = package(fmt, [(newer, 100), (pre, 200), (older, 300)], newer)
    decisions = decide({"prerelease": "only", "older_than_days": 30}, versions, published)
    assert [
        (newer, C.PRERELEASE_SCOPE, False),
        (pre, C.SELECTED, True),
        (older, C.PRERELEASE_SCOPE, False),
    ] == [(d.version, d.clause, d.prerelease) for d in decisions]


@pytest.mark.parametrize(("fmt", "newer", "older", "pre"), FORMAT_CASES)
def test_a_release_only_rule_leaves_each_formats_prereleases(
    fmt: PackageFormat, newer: str, older: str, pre: str
) -> None:
    """prerelease=exclude keeps the format's pre-release out of scope and ranks the releases."""
    versions, published = package(fmt, [(newer, 100), (pre, 200), (older, 300)], newer)
    decisions = decide({"prerelease": "exclude", "older_than_days": 30}, versions, published)
    assert [
        (newer, C.LATEST),
        (pre, C.PRERELEASE_SCOPE),
        (older, C.SELECTED),
    ] == [(d.version, d.clause) for d in decisions]


@pytest.mark.parametrize(
    ("fmt", "newest_first"),
    [
        pytest.param(F.NPM, ["1.10.0", "1.9.0", "1.9.0-rc.1", "1.2.0"], id="npm"),
        pytest.param(F.PYPI, ["1.10", "1.9.post1", "1.9", "1.9rc1", "1.9.dev1"], id="pypi"),
        pytest.param(F.MAVEN, ["1.0-sp1", "1.0", "1.0-SNAPSHOT", "1.0-rc1", "1.0-beta"], id="mvn"),
        pytest.param(F.RUBY, ["1.10", "1.9", "1.9.rc1", "1.9.pre", "1.9.a"], id="ruby"),
        pytest.param(F.NUGET, ["1.0.1", "1.0.0.1", "1.0.0", "1.0.0-beta"], id="nuget"),
    ],
)
def test_output_follows_each_formats_version_order(
    fmt: PackageFormat, newest_first: list[str]
) -> None:
    """Under order=version, decisions come newest first by the format's own ordering."""
    by_name = sorted(newest_first)  # publication order unrelated to version order
    versions, published = package(fmt, [(v, i + 1) for i, v in enumerate(by_name)])
    decisions = decide({"keep_newest": 1}, versions, published)
    assert newest_first == [d.version for d in decisions]


# --- ages -----------------------------------------------------------------------------------------

AGED: list[tuple[str, Age]] = [
    ("1.0.9", 1),
    ("1.0.8", 6),
    ("1.0.7", 8),
    ("1.0.6", 20),
    ("1.0.5", timedelta(days=30) - timedelta(seconds=1)),
    ("1.0.4", timedelta(days=30) + timedelta(seconds=1)),
    ("1.0.3", 45),
    ("1.0.2", 100),
    ("1.0.1", 200),
    ("1.0.0", 400),
]


def test_age_clauses_decide_by_publication_time() -> None:
    """Younger than 7 days: KEEP_YOUNGER_THAN; up to 30 days: NOT_OLDER_THAN; older: deleted."""
    versions, published = package(F.NPM, AGED, "1.0.9")
    decisions = decide({"older_than_days": 30, "keep_younger_than_days": 7}, versions, published)
    assert {
        "1.0.9": C.LATEST,
        "1.0.8": C.KEEP_YOUNGER_THAN,
        "1.0.7": C.NOT_OLDER_THAN,
        "1.0.6": C.NOT_OLDER_THAN,
        "1.0.5": C.NOT_OLDER_THAN,
        "1.0.4": C.SELECTED,
        "1.0.3": C.SELECTED,
        "1.0.2": C.SELECTED,
        "1.0.1": C.SELECTED,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


def test_a_version_exactly_older_than_days_old_is_kept() -> None:
    """A version published exactly 30 days ago is not older than 30 days: NOT_OLDER_THAN."""
    versions, published = package(
        F.NPM, [("1.0.4", 1), ("1.0.3", 10), ("1.0.2", 30), ("1.0.1", 31), ("1.0.0", 60)], "1.0.4"
    )
    decisions = decide({"older_than_days": 30}, versions, published)
    assert {
        "1.0.4": C.LATEST,
        "1.0.3": C.NOT_OLDER_THAN,
        "1.0.2": C.NOT_OLDER_THAN,
        "1.0.1": C.SELECTED,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


def test_keep_younger_than_alone_is_an_age_guard() -> None:
    """With only keep_younger_than_days, everything older (and not latest) is deleted."""
    versions, published = package(F.NPM, AGED, "1.0.9")
    decisions = decide({"keep_younger_than_days": 10}, versions, published)
    assert {"1.0.9": C.LATEST, "1.0.8": C.KEEP_YOUNGER_THAN, "1.0.7": C.KEEP_YOUNGER_THAN} == {
        v: c for v, c in clauses(decisions).items() if c is not C.SELECTED
    }


def test_a_count_guard_is_checked_before_an_age_guard() -> None:
    """A young version among the newest N is KEEP_NEWEST, not KEEP_YOUNGER_THAN."""
    versions, published = package(F.NPM, AGED, "1.0.9")
    decisions = decide(
        {"keep_newest": 3, "older_than_days": 30, "keep_younger_than_days": 7},
        versions,
        published,
    )
    assert [C.LATEST, C.KEEP_NEWEST, C.KEEP_NEWEST, C.NOT_OLDER_THAN] == [
        d.clause for d in decisions[:4]
    ]


def test_selected_reason_names_the_guards_it_passed() -> None:
    """A deleted version's reason says its kind, the counts and the age it is beyond."""
    versions, published = package(F.NPM, AGED, "1.0.9")
    decisions = decide(
        {"keep_newest": 2, "older_than_days": 30, "keep_younger_than_days": 7},
        versions,
        published,
    )
    reasons = {d.version: d.reason for d in decisions}
    assert (
        "release; not among the newest 2 versions; published more than 30 days ago"
        == (reasons["1.0.0"])
    )


def many_versions(count: int) -> list[tuple[str, Age]]:
    """`count` releases, newest first, one a day, each published half a day past the day."""
    return [
        (f"1.{i // 100}.{i % 100}", timedelta(days=count - i, hours=12))
        for i in range(count - 1, -1, -1)
    ]


def expected_by_age(newest_first: Sequence[tuple[str, Age]]) -> dict[str, Clause]:
    """What an older_than_days=30, keep_younger_than_days=7 rule does, from the true ages."""
    out: dict[str, Clause] = {}
    for index, (version, age) in enumerate(newest_first):
        assert isinstance(age, timedelta)
        if index == 0:
            out[version] = C.LATEST
        elif age < timedelta(days=7):
            out[version] = C.KEEP_YOUNGER_THAN
        elif age <= timedelta(days=30):
            out[version] = C.NOT_OLDER_THAN
        else:
            out[version] = C.SELECTED
    return out


@pytest.mark.parametrize("order", ["version", "published"])
def test_ages_of_a_thousand_versions_take_few_reads(order: str) -> None:
    """A binary search over publication order decides 1,000 versions with at most 40 reads."""
    listing = many_versions(1000)
    versions, published = package(F.NPM, listing, listing[0][0])
    decisions = decide(
        {"order": order, "older_than_days": 30, "keep_younger_than_days": 7}, versions, published
    )
    assert expected_by_age(listing) == clauses(decisions)
    assert len(published.calls) <= 40
    assert len(published.calls) == len(set(published.calls))  # each read at most once


def test_an_oldest_first_listing_is_oriented() -> None:
    """A listing that runs oldest first gives the same decisions, with as few reads."""
    listing = many_versions(1000)
    versions, _ = package(F.NPM, listing, listing[0][0])
    oldest_first = PackageVersions(
        F.NPM, versions.statuses, list(reversed(versions.published_order)), versions.latest
    )
    published = Published(dict(listing))
    decisions = evaluate(
        rule_from_mapping({"older_than_days": 30, "keep_younger_than_days": 7}),
        oldest_first,
        NOW,
        published,
    )
    assert expected_by_age(listing) == clauses(decisions)
    assert len(published.calls) <= 40


@pytest.mark.parametrize("reverse", [False, True], ids=["newest-first", "oldest-first"])
def test_age_split_answers_like_the_true_times(reverse: bool) -> None:
    """AgeSplit.older_than agrees with each version's real time, whichever way it is listed."""
    listing = many_versions(200)
    published = Published(dict(listing))
    order = [v for v, _ in listing]
    split = AgeSplit(list(reversed(order)) if reverse else order, published)
    cutoff = NOW - timedelta(days=30)
    expected = {v: (when := published.times[v]) is not None and when < cutoff for v in order}
    published.calls.clear()
    assert expected == {v: split.older_than(v, cutoff) for v in order}
    assert len(published.calls) <= 20


def test_age_split_reads_each_version_once_across_thresholds() -> None:
    """Two thresholds share the cache: no version is described twice."""
    listing = many_versions(300)
    published = Published(dict(listing))
    split = AgeSplit([v for v, _ in listing], published)
    for days in (7, 30, 90, 7, 30):
        for version, _ in listing:
            split.older_than(version, NOW - timedelta(days=days))
    assert len(published.calls) == len(set(published.calls))
    assert len(published.calls) <= 40


def test_a_version_with_unknown_time_is_kept() -> None:
    """published_at None (no time known) counts as young: an age guard keeps the version."""
    versions, published = package(
        F.NPM,
        [("1.0.4", 1), ("1.0.3", 100), ("1.0.2", 200), ("1.0.1", 300), ("1.0.0", None)],
        "1.0.4",
    )
    decisions = decide({"older_than_days": 30}, versions, published)
    assert {
        "1.0.4": C.LATEST,
        "1.0.3": C.SELECTED,
        "1.0.2": C.SELECTED,
        "1.0.1": C.SELECTED,
        "1.0.0": C.NOT_OLDER_THAN,
    } == clauses(decisions)


def test_a_version_with_unknown_time_is_kept_by_keep_younger_than() -> None:
    """With keep_younger_than_days, an unknown time is kept by that clause."""
    versions, published = package(F.NPM, [("2.0.0", 1), ("1.0.0", None)], "2.0.0")
    decisions = decide({"keep_younger_than_days": 7}, versions, published)
    assert {"2.0.0": C.LATEST, "1.0.0": C.KEEP_YOUNGER_THAN} == clauses(decisions)


def test_the_only_version_with_unknown_time_is_kept() -> None:
    """A single in-scope, non-latest version whose time is unknown is kept."""
    versions, published = package(F.NPM, [("1.0.0-rc.1", None), ("0.9.0", 400)], "0.9.0")
    decisions = decide({"older_than_days": 30}, versions, published)
    assert {"1.0.0-rc.1": C.NOT_OLDER_THAN, "0.9.0": C.LATEST} == clauses(decisions)


def test_age_rules_read_no_times_when_no_version_reaches_them() -> None:
    """Versions decided by scope and counts need no DescribePackageVersion."""
    versions, published = package(F.NPM, [("2.0.0", 1), ("1.0.0", 2)], "2.0.0")
    decide({"keep_newest": 2, "older_than_days": 30}, versions, published)
    assert [] == published.calls


def test_a_version_missing_from_the_publication_listing_does_not_break_an_age_rule() -> None:
    """A version with a status but no place in published_order is decided (kept), not a crash."""
    versions = PackageVersions(
        F.NPM,
        {"3.0.0": S.PUBLISHED, "2.0.0": S.PUBLISHED, "1.0.0": S.PUBLISHED},
        ["3.0.0", "2.0.0"],
        "3.0.0",
    )
    published = Published({"3.0.0": 1, "2.0.0": 50, "1.0.0": None})
    decisions = evaluate(rule_from_mapping({"older_than_days": 30}), versions, NOW, published)
    assert [("3.0.0", False), ("2.0.0", True), ("1.0.0", False)] == [
        (d.version, d.delete) for d in decisions
    ]


# --- scope: statuses, patterns --------------------------------------------------------------------


def test_default_scope_is_published_and_unlisted() -> None:
    """Archived, Unfinished and Disposed versions are kept as STATUS; Unlisted ones are in scope."""
    versions, published = package(
        F.NPM,
        [("5.0.0", 1), ("4.0.0", 400), ("3.0.0", 400), ("2.0.0", 400), ("1.0.0", 400)],
        "5.0.0",
        {
            "4.0.0": S.ARCHIVED,
            "3.0.0": S.UNFINISHED,
            "2.0.0": S.DISPOSED,
            "1.0.0": S.UNLISTED,
        },
    )
    decisions = decide({"older_than_days": 30}, versions, published)
    assert {
        "5.0.0": C.LATEST,
        "4.0.0": C.STATUS,
        "3.0.0": C.STATUS,
        "2.0.0": C.STATUS,
        "1.0.0": C.SELECTED,
    } == clauses(decisions)


def test_listed_statuses_bring_archived_into_scope() -> None:
    """statuses=[Archived] makes Archived versions deletable and keeps Published ones."""
    versions, published = package(
        F.NPM,
        [("3.0.0", 400), ("2.0.0", 400), ("1.0.0", 400)],
        "3.0.0",
        {"2.0.0": S.ARCHIVED, "1.0.0": S.ARCHIVED},
    )
    decisions = decide({"older_than_days": 30, "statuses": ["Archived"]}, versions, published)
    assert {"3.0.0": C.STATUS, "2.0.0": C.SELECTED, "1.0.0": C.SELECTED} == clauses(decisions)


PATTERNED: list[tuple[str, Age]] = [
    ("2.0.0", 300),
    ("2.0.0-rc.2", 310),
    ("2.0.0-RC.1", 320),
    ("1.1.0", 330),
    ("1.0.0", 340),
]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        pytest.param(
            {"include": ["1.*", "2.0.0-rc*"]},
            {
                "2.0.0": C.NOT_INCLUDED,
                "2.0.0-rc.2": C.SELECTED,
                "2.0.0-RC.1": C.NOT_INCLUDED,  # globs are case-sensitive
                "1.1.0": C.SELECTED,  # the newest release (2.0.0) is out of scope
                "1.0.0": C.SELECTED,
            },
            id="include-globs",
        ),
        pytest.param(
            {"exclude": ["*-RC*"]},
            {
                "2.0.0": C.LATEST,
                "2.0.0-rc.2": C.SELECTED,
                "2.0.0-RC.1": C.EXCLUDED,
                "1.1.0": C.SELECTED,
                "1.0.0": C.SELECTED,
            },
            id="exclude-glob-case-sensitive",
        ),
        pytest.param(
            {"include": ["1.*"], "exclude": ["1.0.*"]},
            {
                "2.0.0": C.NOT_INCLUDED,
                "2.0.0-rc.2": C.NOT_INCLUDED,
                "2.0.0-RC.1": C.NOT_INCLUDED,
                "1.1.0": C.SELECTED,
                "1.0.0": C.EXCLUDED,
            },
            id="include-then-exclude",
        ),
        pytest.param(
            {"include_regex": r"1\.0"},
            {
                "2.0.0": C.NOT_INCLUDED,
                "2.0.0-rc.2": C.NOT_INCLUDED,
                "2.0.0-RC.1": C.NOT_INCLUDED,
                "1.1.0": C.NOT_INCLUDED,
                "1.0.0": C.NOT_INCLUDED,  # a prefix match is not a match: fullmatch
            },
            id="include-regex-fullmatch",
        ),
        pytest.param(
            {"include_regex": r"1\..*"},
            {
                "2.0.0": C.NOT_INCLUDED,
                "2.0.0-rc.2": C.NOT_INCLUDED,
                "2.0.0-RC.1": C.NOT_INCLUDED,
                "1.1.0": C.SELECTED,
                "1.0.0": C.SELECTED,
            },
            id="include-regex",
        ),
        pytest.param(
            {"exclude_regex": "rc"},
            {
                "2.0.0": C.LATEST,
                "2.0.0-rc.2": C.SELECTED,  # "rc" occurs in it but does not fullmatch
                "2.0.0-RC.1": C.SELECTED,
                "1.1.0": C.SELECTED,
                "1.0.0": C.SELECTED,
            },
            id="exclude-regex-fullmatch",
        ),
        pytest.param(
            {"exclude_regex": r".*-(?i:rc)\..*"},
            {
                "2.0.0": C.LATEST,
                "2.0.0-rc.2": C.EXCLUDED,
                "2.0.0-RC.1": C.EXCLUDED,
                "1.1.0": C.SELECTED,
                "1.0.0": C.SELECTED,
            },
            id="exclude-regex",
        ),
    ],
)
def test_patterns_narrow_the_scope(patterns: dict[str, Any], expected: dict[str, Clause]) -> None:
    """Globs match case-sensitively, regexes must match the whole version."""
    versions, published = package(F.NPM, PATTERNED, "2.0.0")
    decisions = decide({"older_than_days": 30, **patterns}, versions, published)
    assert expected == clauses(decisions)


def test_status_is_checked_before_patterns() -> None:
    """An Archived version matching an exclude pattern is decided by STATUS, the first clause."""
    versions, published = package(
        F.NPM, [("2.0.0", 300), ("1.0.0", 400)], "2.0.0", {"1.0.0": S.ARCHIVED}
    )
    decisions = decide({"older_than_days": 30, "exclude": ["1.*"]}, versions, published)
    assert C.STATUS == clauses(decisions)["1.0.0"]


def test_exclude_is_checked_before_the_prerelease_scope() -> None:
    """A release matching exclude under prerelease=only is EXCLUDED, not PRERELEASE_SCOPE."""
    versions, published = package(F.NPM, [("2.0.0", 300), ("1.0.0", 400)], "2.0.0")
    decisions = decide(
        {"older_than_days": 30, "prerelease": "only", "exclude": ["1.*"]}, versions, published
    )
    assert {"2.0.0": C.PRERELEASE_SCOPE, "1.0.0": C.EXCLUDED} == clauses(decisions)


# --- max_deletions --------------------------------------------------------------------------------

TEN: list[tuple[str, Age]] = [(f"1.{i}.0", 400 + 10 * (9 - i)) for i in range(9, -1, -1)]


@pytest.mark.parametrize(
    ("cap", "expected_deleted"),
    [
        (3, ["1.2.0", "1.1.0", "1.0.0"]),
        (0, []),
        (9, [f"1.{i}.0" for i in range(8, -1, -1)]),
        (50, [f"1.{i}.0" for i in range(8, -1, -1)]),
    ],
)
def test_max_deletions_deletes_the_oldest_candidates(cap: int, expected_deleted: list[str]) -> None:
    """Over the cap, the newest candidates are kept as MAX_DELETIONS; the oldest are deleted."""
    versions, published = package(F.NPM, TEN, "1.9.0")
    decisions = decide({"older_than_days": 30, "max_deletions": cap}, versions, published)
    assert expected_deleted == deleted(decisions)
    capped = [d.version for d in decisions if d.clause is C.MAX_DELETIONS]
    assert [f"1.{i}.0" for i in range(8, -1, -1) if f"1.{i}.0" not in expected_deleted] == capped


def test_max_deletions_under_published_order_deletes_the_earliest_published() -> None:
    """By publication, "oldest" means published first, not lowest version."""
    versions, published = package(F.NPM, BACKPORT, "2.0.1")
    decisions = decide(
        {"order": "published", "older_than_days": 30, "max_deletions": 1}, versions, published
    )
    assert {
        "1.2.9": C.LATEST,
        "2.0.1": C.LATEST,
        "2.0.0": C.MAX_DELETIONS,
        "1.2.8": C.SELECTED,
    } == clauses(decisions)


# --- UNORDERED ------------------------------------------------------------------------------------

WITH_NIGHTLY: list[tuple[str, Age]] = [("2.0.0", 100), ("nightly", 200), ("1.0.0", 300)]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        pytest.param(
            "version",
            [("2.0.0", C.LATEST), ("1.0.0", C.KEEP_NEWEST), ("nightly", C.UNORDERED)],
            id="version",
        ),
        pytest.param(
            "published",
            [("2.0.0", C.LATEST), ("nightly", C.KEEP_NEWEST), ("1.0.0", C.SELECTED)],
            id="published",
        ),
    ],
)
def test_an_unparseable_version_is_kept_under_version_order(
    order: str, expected: list[tuple[str, Clause]]
) -> None:
    """npm cannot place "nightly": kept (and listed last) by version, ranked by publication."""
    versions, published = package(F.NPM, WITH_NIGHTLY, "2.0.0")
    decisions = decide({"order": order, "keep_newest": 2}, versions, published)
    assert expected == [(d.version, d.clause) for d in decisions]


GENERIC: list[tuple[str, Age]] = [("gamma", 100), ("alpha", 200), ("beta", 300), ("delta", 400)]


def test_a_generic_package_under_version_order_keeps_everything() -> None:
    """Generic versions have no order: all but the latest are UNORDERED, none deleted."""
    versions, published = package(F.GENERIC, GENERIC, "gamma")
    decisions = decide({"keep_newest": 1, "older_than_days": 1}, versions, published)
    assert [
        ("alpha", C.UNORDERED),
        ("beta", C.UNORDERED),
        ("delta", C.UNORDERED),
        ("gamma", C.LATEST),
    ] == [(d.version, d.clause) for d in decisions]
    assert [] == deleted(decisions)


def test_a_generic_package_under_published_order_is_ranked_by_publication() -> None:
    """order=published ranks generic versions by when they were published, not by name."""
    versions, published = package(F.GENERIC, GENERIC, "gamma")
    decisions = decide({"order": "published", "keep_newest": 2}, versions, published)
    assert [
        ("gamma", C.LATEST),
        ("alpha", C.KEEP_NEWEST),
        ("beta", C.SELECTED),
        ("delta", C.SELECTED),
    ] == [(d.version, d.clause) for d in decisions]


# --- the issue's example --------------------------------------------------------------------------

ISSUE_RULE = {
    "prerelease": "only",
    "older_than_days": 30,
    "keep_newest_prereleases": 5,
    "keep_younger_than_days": 7,
}
ISSUE_PACKAGE: list[tuple[str, Age]] = [  # newest published first: (version, days ago)
    ("3.0.0-rc.2", 2),
    ("2.4.2-rc.1", 3),
    ("3.0.0-rc.1", 5),
    ("2.4.1", 6),
    ("2.4.1-rc.1", 8),
    ("3.0.0-beta.3", 10),
    ("3.0.0-beta.2", 20),
    ("3.0.0-beta.1", 35),
    ("3.0.0-alpha.2", 40),
    ("2.4.0", 45),
    ("2.4.0-rc.1", 50),
    ("3.0.0-alpha.1", 60),
    ("2.3.0", 90),
    ("2.3.0-beta.1", 100),
    ("2.0.0-rc.1", 400),
]


def test_the_issues_example_by_version() -> None:
    """Pre-releases older than 30 days go, except the newest 5 and anything under 7 days."""
    versions, published = package(F.NPM, ISSUE_PACKAGE, "2.4.1")
    decisions = decide(ISSUE_RULE, versions, published)
    assert [
        ("3.0.0-rc.2", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-rc.1", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-beta.3", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-beta.2", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-beta.1", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-alpha.2", C.SELECTED, True),
        ("3.0.0-alpha.1", C.SELECTED, True),
        ("2.4.2-rc.1", C.KEEP_YOUNGER_THAN, False),
        ("2.4.1", C.PRERELEASE_SCOPE, False),
        ("2.4.1-rc.1", C.NOT_OLDER_THAN, False),
        ("2.4.0", C.PRERELEASE_SCOPE, False),
        ("2.4.0-rc.1", C.SELECTED, True),
        ("2.3.0", C.PRERELEASE_SCOPE, False),
        ("2.3.0-beta.1", C.SELECTED, True),
        ("2.0.0-rc.1", C.SELECTED, True),
    ] == [(d.version, d.clause, d.delete) for d in decisions]
    reasons = {d.version: d.reason for d in decisions}
    assert (
        "pre-release; not among the newest 5 pre-releases; published more than 30 days ago"
        == reasons["3.0.0-alpha.2"]
    )


def test_the_issues_example_by_publication() -> None:
    """The same rule by publication keeps the 5 most recently published pre-releases."""
    versions, published = package(F.NPM, ISSUE_PACKAGE, "2.4.1")
    decisions = decide({**ISSUE_RULE, "order": "published"}, versions, published)
    assert [
        ("3.0.0-rc.2", C.KEEP_NEWEST_PRERELEASES, False),
        ("2.4.2-rc.1", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-rc.1", C.KEEP_NEWEST_PRERELEASES, False),
        ("2.4.1", C.PRERELEASE_SCOPE, False),
        ("2.4.1-rc.1", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-beta.3", C.KEEP_NEWEST_PRERELEASES, False),
        ("3.0.0-beta.2", C.NOT_OLDER_THAN, False),
        ("3.0.0-beta.1", C.SELECTED, True),
        ("3.0.0-alpha.2", C.SELECTED, True),
        ("2.4.0", C.PRERELEASE_SCOPE, False),
        ("2.4.0-rc.1", C.SELECTED, True),
        ("3.0.0-alpha.1", C.SELECTED, True),
        ("2.3.0", C.PRERELEASE_SCOPE, False),
        ("2.3.0-beta.1", C.SELECTED, True),
        ("2.0.0-rc.1", C.SELECTED, True),
    ] == [(d.version, d.clause, d.delete) for d in decisions]


# --- output order, determinism --------------------------------------------------------------------


def test_output_is_newest_first_with_unplaceable_versions_last_by_name() -> None:
    """By version: the format's order descending, then versions it cannot place, by name."""
    versions, published = package(
        F.NPM,
        [("zeta", 1), ("1.0.0", 2), ("2.0.0-rc.1", 3), ("alpha", 4), ("1.10.0", 5), ("1.9.0", 6)],
    )
    decisions = decide({"keep_newest": 1}, versions, published)
    assert ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.0.0", "alpha", "zeta"] == [
        d.version for d in decisions
    ]


def test_ties_in_the_format_order_fall_back_to_publication() -> None:
    """1.0 and 1.0.0 are equal in PEP 440: the more recently published one ranks first."""
    versions, published = package(F.PYPI, [("1.0", 10), ("0.9", 20), ("1.0.0", 30)])
    decisions = decide({"keep_newest": 1}, versions, published)
    assert [("1.0", C.LATEST), ("1.0.0", C.SELECTED), ("0.9", C.SELECTED)] == [
        (d.version, d.clause) for d in decisions
    ]


def test_published_order_output_lists_unlisted_versions_last_by_name() -> None:
    """By publication, versions absent from the publication listing come last, by name."""
    versions = PackageVersions(
        F.NPM,
        {"1.0.0": S.PUBLISHED, "b-extra": S.PUBLISHED, "2.0.0": S.PUBLISHED, "a-extra": S.ARCHIVED},
        ["1.0.0", "2.0.0"],
    )
    decisions = evaluate(
        rule_from_mapping({"order": "published", "keep_newest": 5}), versions, NOW, Published({})
    )
    assert ["1.0.0", "2.0.0", "a-extra", "b-extra"] == [d.version for d in decisions]


def test_evaluation_is_deterministic() -> None:
    """Evaluating the same rule on the same package twice gives equal decisions."""
    rule = rule_from_mapping({**ISSUE_RULE, "max_deletions": 3, "exclude": ["2.3.*"]})
    versions, first = package(F.NPM, ISSUE_PACKAGE, "2.4.1")
    second = Published(dict(ISSUE_PACKAGE))
    assert evaluate(rule, versions, NOW, first) == evaluate(rule, versions, NOW, second)


# --- properties -----------------------------------------------------------------------------------

POOL = [
    f"{major}.{minor}.{patch}{pre}"
    for major in range(3)
    for minor in range(3)
    for patch in range(2)
    for pre in ("", "-alpha.1", "-rc.1")
] + ["nightly"]
"""npm versions with distinct precedence (no build metadata), and one npm cannot place."""

GUARD_LIMITS = {
    "keep_newest": 5,
    "keep_newest_releases": 4,
    "keep_newest_prereleases": 4,
    "older_than_days": 60,
    "keep_younger_than_days": 20,
}


@st.composite
def scenarios(
    draw: st.DrawFn, *, max_deletions: bool | None = None
) -> tuple[dict[str, Any], PackageVersions, dict[str, datetime | None]]:
    """A rule mapping (with at least one guard), an npm package and its publication times."""
    names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=24, unique=True))
    newest_first = draw(st.permutations(names))
    gaps = draw(st.lists(st.integers(0, 20), min_size=len(names), max_size=len(names)))
    times: dict[str, datetime | None] = {}
    elapsed = 0
    for version, gap in zip(newest_first, gaps, strict=True):
        elapsed += gap
        times[version] = NOW - timedelta(days=elapsed, hours=draw(st.integers(0, 23)))
    if draw(st.booleans()):
        times[newest_first[-1]] = None  # CodeArtifact lists an untimed version last
    mostly_published = [S.PUBLISHED] * 5 + [S.UNLISTED, S.ARCHIVED, S.UNFINISHED]
    statuses = {v: draw(st.sampled_from(mostly_published)) for v in names}
    latest = draw(st.one_of(st.none(), st.sampled_from(names)))
    raw: dict[str, Any] = {}
    for name, most in GUARD_LIMITS.items():
        if draw(st.integers(0, 3)) == 0:
            raw[name] = draw(st.integers(0, most))
    guard = draw(st.sampled_from(sorted(GUARD_LIMITS)))
    raw[guard] = draw(st.integers(1, GUARD_LIMITS[guard]))
    raw["order"] = draw(st.sampled_from(["version", "published"]))
    raw["prerelease"] = draw(st.sampled_from(["any", "only", "exclude"]))
    # A count that cannot apply in the rule's prerelease scope is refused by validation.
    raw.pop(
        {"only": "keep_newest_releases", "exclude": "keep_newest_prereleases"}.get(
            raw["prerelease"], ""
        ),
        None,
    )
    # Each kind in scope needs a guard: per-kind counts alone come for every kind in scope.
    shared = ("keep_newest", "older_than_days", "keep_younger_than_days")
    if not any(raw.get(name) for name in shared):
        for name, outside in (
            ("keep_newest_releases", "only"),
            ("keep_newest_prereleases", "exclude"),
        ):
            if raw["prerelease"] != outside:
                raw.setdefault(name, draw(st.integers(0, GUARD_LIMITS[name])))
    if not any(raw.get(name) for name in GUARD_LIMITS):
        raw["keep_newest"] = draw(st.integers(1, GUARD_LIMITS["keep_newest"]))
    if draw(st.integers(0, 3)) == 0:
        raw["statuses"] = draw(
            st.lists(st.sampled_from(["Published", "Unlisted", "Archived"]), min_size=1)
        )
    if max_deletions or (max_deletions is None and draw(st.booleans())):
        raw["max_deletions"] = draw(st.integers(0, 4))
    return raw, PackageVersions(F.NPM, statuses, newest_first, latest), times


def _reader(times: Mapping[str, datetime | None]) -> Callable[[str], datetime | None]:
    return times.get


def in_scope(rule: RetentionRule, versions: PackageVersions, version: str) -> bool:
    """Whether `version` is in the rule's scope, computed from the rule's definition."""
    pre = is_prerelease(F.NPM, version)
    return (
        versions.statuses[version] in rule.statuses
        and not (rule.prerelease is PrereleaseScope.ONLY and not pre)
        and not (rule.prerelease is PrereleaseScope.EXCLUDE and pre)
    )


def newer(rule: RetentionRule, versions: PackageVersions, a: str, b: str) -> bool:
    """Whether `a` ranks strictly newer than `b` by the rule's order (both placeable)."""
    if rule.order is Order.PUBLISHED:
        order = list(versions.published_order)
        return order.index(a) < order.index(b)
    key_a, key_b = sort_key(F.NPM, a), sort_key(F.NPM, b)
    assert key_a is not None
    assert key_b is not None
    return bool(key_b < key_a)


def placed(rule: RetentionRule, version: str) -> bool:
    """Whether the rule's order places `version`."""
    return rule.order is Order.PUBLISHED or sort_key(F.NPM, version) is not None


PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTY_SETTINGS
@given(scenarios())
def test_property_deleted_versions_are_never_guarded(
    scenario: tuple[dict[str, Any], PackageVersions, dict[str, datetime | None]],
) -> None:
    """A deleted version is in scope, placeable, not the latest, not the newest Published
    release, not among the newest N (of its kind) in scope, and older than both ages."""
    raw, versions, times = scenario
    rule = rule_from_mapping(raw)
    decisions = evaluate(rule, versions, NOW, _reader(times))
    releases = [
        v
        for v in versions.statuses
        if versions.statuses[v] is S.PUBLISHED and not is_prerelease(F.NPM, v) and placed(rule, v)
    ]
    newest_release = next(
        (r for r in releases if not any(newer(rule, versions, o, r) for o in releases)), None
    )
    for gone in deleted(decisions):
        assert in_scope(rule, versions, gone)
        assert placed(rule, gone)
        assert gone != versions.latest
        assert gone != newest_release
        scope = [
            v
            for v in versions.statuses
            if v != gone and in_scope(rule, versions, v) and placed(rule, v)
        ]
        ahead = [v for v in scope if newer(rule, versions, v, gone)]
        if rule.keep_newest is not None:
            assert len(ahead) >= rule.keep_newest
        pre = is_prerelease(F.NPM, gone)
        kind_count = rule.keep_newest_prereleases if pre else rule.keep_newest_releases
        if kind_count is not None:
            assert len([v for v in ahead if is_prerelease(F.NPM, v) == pre]) >= kind_count
        when = times[gone]
        for days in (rule.older_than_days, rule.keep_younger_than_days):
            if days:  # an age guard keeps unknown times and anything younger
                assert when is not None
                assert when < NOW - timedelta(days=days)


@PROPERTY_SETTINGS
@given(scenarios(max_deletions=True))
def test_property_max_deletions_caps_the_deletions(
    scenario: tuple[dict[str, Any], PackageVersions, dict[str, datetime | None]],
) -> None:
    """With max_deletions M, at most M versions are deleted, and any MAX_DELETIONS keep means
    exactly M are."""
    raw, versions, times = scenario
    decisions = evaluate(rule_from_mapping(raw), versions, NOW, _reader(times))
    count = len(deleted(decisions))
    assert count <= raw["max_deletions"]
    if any(d.clause is C.MAX_DELETIONS for d in decisions):
        assert raw["max_deletions"] == count


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(scenarios(), st.data())
def test_property_excluding_a_deleted_version_changes_only_that_version(
    scenario: tuple[dict[str, Any], PackageVersions, dict[str, datetime | None]],
    data: st.DataObject,
) -> None:
    """Adding exclude=[v] for a deleted v keeps v (EXCLUDED). Without max_deletions every other
    version's (delete, clause) is unchanged; with it, at most one other version changes, from
    MAX_DELETIONS (kept) to SELECTED (the freed slot of the cap)."""
    raw, versions, times = scenario
    before = evaluate(rule_from_mapping(raw), versions, NOW, _reader(times))
    doomed = deleted(before)
    assume(doomed)
    victim = data.draw(st.sampled_from(doomed))
    try:
        rule = rule_from_mapping({**raw, "exclude": [victim]})
    except InvalidRequestError:  # pragma: no cover - the pool's names are valid globs
        raise AssertionError(victim) from None
    after = evaluate(rule, versions, NOW, _reader(times))
    was = {d.version: (d.delete, d.clause) for d in before}
    now = {d.version: (d.delete, d.clause) for d in after}
    assert (False, C.EXCLUDED) == now.pop(victim)
    was.pop(victim)
    changed = {v: (was[v], now[v]) for v in was if was[v] != now[v]}
    if "max_deletions" not in raw:
        assert {} == changed
    else:
        assert len(changed) <= 1
        for old, new in changed.values():
            assert ((False, C.MAX_DELETIONS), (True, C.SELECTED)) == (old, new)
