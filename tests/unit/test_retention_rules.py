"""Retention rule validation names every bad field and refuses rules without a guard."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from pkggov_gateway.domain.errors import InvalidRequestError
from pkggov_gateway.domain.model import PackageFormat, VersionStatus
from pkggov_gateway.domain.retention import (
    DEFAULT_STATUSES,
    Clause,
    Order,
    PackageVersions,
    PrereleaseScope,
    RetentionRule,
    evaluate,
    rule_from_mapping,
)

GUARD = {"keep_newest": 3}
"""A valid guard, so that a test about another field sees only that field's violation."""


def violations(raw: Mapping[str, Any], prefix: str = "rule") -> list[str]:
    """The fields `rule_from_mapping` names as bad, in the order it reports them."""
    with pytest.raises(InvalidRequestError) as caught:
        rule_from_mapping(raw, prefix=prefix)
    return [v.field for v in caught.value.violations]


def descriptions(raw: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each bad field -> its descriptions."""
    with pytest.raises(InvalidRequestError) as caught:
        rule_from_mapping(raw)
    out: dict[str, list[str]] = {}
    for violation in caught.value.violations:
        out.setdefault(violation.field, []).append(violation.description)
    return out


# --- valid rules -------------------------------------------------------------------------------


def test_the_issues_example_builds_the_expected_rule() -> None:
    """The documented pre-release cleanup rule parses into its fields, defaults elsewhere."""
    raw = {
        "prerelease": "only",
        "older_than_days": 30,
        "keep_newest_prereleases": 5,
        "keep_younger_than_days": 7,
    }
    expected = RetentionRule(
        order=Order.VERSION,
        keep_newest_prereleases=5,
        older_than_days=30,
        keep_younger_than_days=7,
        statuses=DEFAULT_STATUSES,
        prerelease=PrereleaseScope.ONLY,
    )
    assert expected == rule_from_mapping(raw)


def test_defaults_are_version_order_published_and_unlisted_any_kind() -> None:
    """A rule with only a count ranks by version, over Published and Unlisted, any kind."""
    rule = rule_from_mapping({"keep_newest": 10})
    assert (Order.VERSION, DEFAULT_STATUSES, PrereleaseScope.ANY) == (
        rule.order,
        rule.statuses,
        rule.prerelease,
    )
    assert (VersionStatus.PUBLISHED, VersionStatus.UNLISTED) == DEFAULT_STATUSES


def test_none_means_unset() -> None:
    """Fields given as None (unset proto fields) are treated as absent."""
    raw = {
        "keep_newest": 2,
        "order": None,
        "prerelease": None,
        "older_than_days": None,
        "statuses": None,
        "include": None,
        "exclude_regex": None,
        "max_deletions": None,
    }
    assert RetentionRule(keep_newest=2) == rule_from_mapping(raw)


def test_an_empty_status_list_means_the_default() -> None:
    """An empty statuses list (an unset repeated field) falls back to Published, Unlisted."""
    assert DEFAULT_STATUSES == rule_from_mapping({**GUARD, "statuses": []}).statuses


def test_statuses_are_deduplicated_in_order() -> None:
    """Repeated statuses are kept once, in the order first given."""
    rule = rule_from_mapping({**GUARD, "statuses": ["Archived", "Published", "Archived"]})
    assert (VersionStatus.ARCHIVED, VersionStatus.PUBLISHED) == rule.statuses


@pytest.mark.parametrize(
    ("guard", "scope"),
    [
        ("keep_newest", "any"),
        ("keep_newest_releases", "exclude"),
        ("keep_newest_prereleases", "only"),
        ("older_than_days", "any"),
        ("keep_younger_than_days", "any"),
    ],
)
def test_each_guard_alone_is_enough_for_what_it_guards(guard: str, scope: str) -> None:
    """Any one count or age guard above 0 makes a rule acceptable when it guards every kind of
    version in the rule's scope (a kind's count: when the scope is that kind only)."""
    assert 1 == getattr(rule_from_mapping({guard: 1, "prerelease": scope}), guard)


@pytest.mark.parametrize(
    ("given", "unguarded"),
    [
        ({"keep_newest_prereleases": 2}, "keep_newest_releases"),
        ({"keep_newest_releases": 10}, "keep_newest_prereleases"),
        ({"keep_newest_releases": 3, "max_deletions": 5}, "keep_newest_prereleases"),
    ],
)
def test_a_kind_in_scope_with_no_guard_is_refused(given: dict[str, int], unguarded: str) -> None:
    """A count of one kind does not guard the other: with both kinds in scope, the unguarded
    kind's count is named (keep_newest_prereleases = 2 alone would delete every release)."""
    with pytest.raises(InvalidRequestError) as raised:
        rule_from_mapping(given)
    assert [f"rule.{unguarded}"] == [v.field for v in raised.value.violations]


def test_an_explicit_zero_guards_a_kind_on_purpose() -> None:
    """keep_newest_prereleases = 0 beside a release count says: delete every pre-release."""
    rule = rule_from_mapping({"keep_newest_releases": 3, "keep_newest_prereleases": 0})
    assert (3, 0) == (rule.keep_newest_releases, rule.keep_newest_prereleases)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("keep_newest", 100_000),
        ("max_deletions", 100_000),
        ("older_than_days", 36_500),
        ("keep_younger_than_days", 36_500),
        ("max_deletions", 0),
    ],
)
def test_counts_at_their_bounds_are_accepted(name: str, value: int) -> None:
    """The largest allowed count (100000) and age (36500 days), and 0, are accepted."""
    assert value == getattr(rule_from_mapping({**GUARD, name: value}), name)


def test_patterns_at_their_limits_are_accepted() -> None:
    """50 patterns of 255 characters each are accepted."""
    patterns = [f"{i:03d}" + "x" * 252 for i in range(50)]
    rule = rule_from_mapping({**GUARD, "include": patterns, "exclude": patterns})
    assert (tuple(patterns), tuple(patterns)) == (rule.include, rule.exclude)


@pytest.mark.parametrize(
    ("scope", "count"),
    [("only", "keep_newest_releases"), ("exclude", "keep_newest_prereleases")],
)
def test_a_count_that_cannot_apply_is_refused(scope: str, count: str) -> None:
    """A kind's count in a rule about the other kind only is no guard: it is refused, named."""
    with pytest.raises(InvalidRequestError) as raised:
        rule_from_mapping({"prerelease": scope, count: 5})
    fields = [v.field for v in raised.value.violations]
    assert f"rule.{count}" in fields
    assert "rule.keep_newest" in fields  # and nothing else guards the rule


def test_to_json_round_trips() -> None:
    """A rule's recorded form parses back into an equal rule."""
    rule = rule_from_mapping(
        {
            "order": "published",
            "keep_newest": 4,
            "keep_newest_releases": 3,
            "keep_newest_prereleases": 2,
            "older_than_days": 90,
            "keep_younger_than_days": 7,
            "statuses": ["Published", "Archived"],
            "include": ["1.*"],
            "exclude": ["*-keep"],
            "include_regex": r"1\..*",
            "exclude_regex": r".*\+hotfix",
            "prerelease": "any",
            "max_deletions": 10,
        }
    )
    assert rule == rule_from_mapping(rule.to_json())


# --- bad fields --------------------------------------------------------------------------------


def test_unknown_fields_are_named() -> None:
    """Each field that is not a rule field is named (sorted)."""
    assert ["rule.colour", "rule.keep_oldest"] == violations(
        {**GUARD, "keep_oldest": 1, "colour": "red"}
    )


@pytest.mark.parametrize(
    "name",
    [
        "keep_newest",
        "keep_newest_releases",
        "keep_newest_prereleases",
        "older_than_days",
        "keep_younger_than_days",
        "max_deletions",
    ],
)
@pytest.mark.parametrize("value", [-1, True, False, 1.0, "5", [3]])
def test_counts_must_be_whole_numbers_from_zero(name: str, value: Any) -> None:
    """Negative numbers, booleans, floats, strings and lists are refused as counts."""
    assert f"rule.{name}" in violations({"older_than_days": 30, "keep_newest": 3, name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("keep_newest", 100_001),
        ("keep_newest_releases", 100_001),
        ("keep_newest_prereleases", 100_001),
        ("max_deletions", 100_001),
        ("older_than_days", 36_501),
        ("keep_younger_than_days", 36_501),
    ],
)
def test_oversized_counts_are_refused(name: str, value: int) -> None:
    """Counts above 100000 and ages above 36500 days are refused, naming the field."""
    raw = {"older_than_days": 30, "keep_newest": 3, name: value}
    assert [f"rule.{name}"] == violations(raw)


def test_a_bad_count_reports_its_bound() -> None:
    """The description says the allowed range and the value given."""
    assert ["must be a whole number from 0 to 36500, got 40000"] == descriptions(
        {**GUARD, "older_than_days": 40_000}
    )["rule.older_than_days"]


@pytest.mark.parametrize("value", ["date", "VERSION", 5, "newest"])
def test_order_must_be_version_or_published(value: Any) -> None:
    """Any order but version / published is refused."""
    assert ["rule.order"] == violations({**GUARD, "order": value})


@pytest.mark.parametrize("value", ["yes", "ONLY", "all", 1])
def test_prerelease_must_be_any_only_or_exclude(value: Any) -> None:
    """Any pre-release scope but any / only / exclude is refused."""
    assert ["rule.prerelease"] == violations({**GUARD, "prerelease": value})


@pytest.mark.parametrize("status", ["Deleted", "published", "Gone", 3, None])
def test_bad_statuses_are_named_by_index(status: Any) -> None:
    """A status that is not a CodeArtifact status, or is Deleted, is named by its index."""
    assert ["rule.statuses[1]"] == violations({**GUARD, "statuses": ["Published", status]})


def test_deleted_is_never_a_rule_status() -> None:
    """Deleted versions are gone: a rule cannot be about them; the others are listed."""
    described = descriptions({**GUARD, "statuses": ["Deleted"]})
    assert [
        "must be one of Archived, Disposed, Published, Unfinished, Unlisted, got 'Deleted'"
    ] == described["rule.statuses[0]"]


@pytest.mark.parametrize("name", ["statuses", "include", "exclude"])
def test_lists_must_be_lists(name: str) -> None:
    """A single string where a list is expected is refused, naming the field."""
    assert [f"rule.{name}"] == violations({**GUARD, name: "Published"})


@pytest.mark.parametrize("name", ["include", "exclude"])
@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 256, "must be at most 255 characters, got 256"),
        (7, "must be a string, got int"),
        (None, "must be a string, got NoneType"),
        ("1.*\n", "must be printable text"),
    ],
)
def test_bad_glob_patterns_are_named_by_index(name: str, pattern: Any, problem: str) -> None:
    """Empty, too long, non-string and non-printable globs are each refused at their index."""
    assert {f"rule.{name}[1]": [problem]} == descriptions({**GUARD, name: ["1.*", pattern]})


@pytest.mark.parametrize("name", ["include", "exclude"])
def test_too_many_patterns_are_refused(name: str) -> None:
    """More than 50 globs are refused as a whole."""
    assert {f"rule.{name}": ["has 51 patterns; at most 50 are allowed"]} == descriptions(
        {**GUARD, name: [f"{i}.*" for i in range(51)]}
    )


@pytest.mark.parametrize("name", ["include_regex", "exclude_regex"])
@pytest.mark.parametrize(
    "pattern",
    [
        "(?=x)",  # lookahead: RE2 has none
        "(?!x)",
        "(?<=x)y",
        r"(a)\1",  # backreference: RE2 has none
        "[",
        "a{2,1}",
        "(",
    ],
)
def test_regexes_that_re2_refuses_are_named(name: str, pattern: str) -> None:
    """Patterns RE2 cannot compile (lookarounds, backreferences, syntax errors) are refused."""
    described = descriptions({**GUARD, name: pattern})
    assert [name] == [field.removeprefix("rule.") for field in described]
    assert described[f"rule.{name}"][0].startswith("is not a valid RE2 regular expression: ")


@pytest.mark.parametrize("name", ["include_regex", "exclude_regex"])
@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("x" * 256, "must be at most 255 characters, got 256"),
        (5, "must be a string, got int"),
        ("1\t2", "must be printable text"),
    ],
)
def test_bad_regex_values_are_named(name: str, pattern: Any, problem: str) -> None:
    """Regexes that are too long, not strings or not printable are refused."""
    assert {f"rule.{name}": [problem]} == descriptions({**GUARD, name: pattern})


def test_every_bad_field_is_named_at_once() -> None:
    """One call reports every bad field, not just the first."""
    raw = {
        "order": "date",
        "prerelease": "maybe",
        "keep_newest": -1,
        "keep_newest_releases": True,
        "max_deletions": 100_001,
        "older_than_days": 30,
        "statuses": ["Published", "Deleted"],
        "include": ["", "1.*"],
        "exclude": [3],
        "include_regex": "(?=x)",
        "exclude_regex": "[",
        "extra": 1,
    }
    expected = {
        "rule.extra",
        "rule.order",
        "rule.prerelease",
        "rule.keep_newest",
        "rule.keep_newest_releases",
        "rule.max_deletions",
        "rule.statuses[1]",
        "rule.include[0]",
        "rule.exclude[0]",
        "rule.include_regex",
        "rule.exclude_regex",
    }
    assert expected == set(violations(raw))


def test_the_prefix_names_fields_in_a_configuration_file() -> None:
    """With a prefix, fields are named from it (a rule in a list of cleanup rules)."""
    assert [
        "cleanup.rules[2].keep_newest",
        "cleanup.rules[2].statuses[0]",
        "cleanup.rules[2].include[1]",
    ] == violations(
        {"keep_newest": -5, "older_than_days": 30, "statuses": ["Deleted"], "include": ["a", ""]},
        prefix="cleanup.rules[2]",
    )


def test_the_prefix_names_the_guard_violation() -> None:
    """A rule without a guard is refused under the prefix, at its keep_newest field."""
    assert ["cleanup.rules[2].keep_newest"] == violations(
        {"include": ["1.*"]}, prefix="cleanup.rules[2]"
    )


# --- the guard requirement -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({}, id="empty"),
        pytest.param({"include": ["1.*"]}, id="include-only"),
        pytest.param({"exclude": ["*-keep"]}, id="exclude-only"),
        pytest.param({"include_regex": r"1\..*", "exclude_regex": "x.*"}, id="regexes-only"),
        pytest.param({"prerelease": "only", "statuses": ["Archived"]}, id="scope-only"),
        pytest.param({"max_deletions": 10}, id="max-deletions-only"),
        pytest.param(
            {
                "keep_newest": 0,
                "keep_newest_releases": 0,
                "keep_newest_prereleases": 0,
                "older_than_days": 0,
                "keep_younger_than_days": 0,
            },
            id="all-zeros",
        ),
    ],
)
def test_a_rule_without_a_guard_is_refused(raw: Mapping[str, Any]) -> None:
    """Patterns, scope, a deletion cap or zero guards alone never make a rule."""
    described = descriptions(raw)
    assert ["rule.keep_newest"] == list(described)
    assert "a rule needs a count or an age guard" in described["rule.keep_newest"][0]


def test_an_invalid_guard_is_no_guard() -> None:
    """A rule whose only guard is invalid is refused for both reasons on that field."""
    described = descriptions({"keep_newest": -3, "include": ["1.*"]})
    assert ["rule.keep_newest"] == list(described)
    assert 2 == len(described["rule.keep_newest"])


# --- RE2 -----------------------------------------------------------------------------------------


def test_a_catastrophic_pattern_compiles_and_matches_in_linear_time() -> None:
    """RE2 takes ``(a+)+$`` and decides a 5000-character version (backtracking would hang)."""
    rule = rule_from_mapping({"order": "published", "keep_newest": 1, "include_regex": "(a+)+$"})
    near_miss = "a" * 4999 + "!"
    matching = "a" * 5000
    package = PackageVersions(
        PackageFormat.GENERIC,
        {near_miss: VersionStatus.PUBLISHED, matching: VersionStatus.PUBLISHED},
        [near_miss, matching],
    )
    decided = {
        d.version: d.clause
        for d in evaluate(rule, package, datetime(2025, 1, 1, tzinfo=UTC), lambda _: None)
    }
    assert Clause.NOT_INCLUDED == decided[near_miss]
    assert Clause.NOT_INCLUDED != decided[matching]
