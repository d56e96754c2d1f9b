"""Retention rules: which versions of a package to keep and which to delete, and why.

A rule is evaluated on one package's versions as CodeArtifact lists them. Each version is
decided by the first of these clauses that applies, in this order, and the plan names it:

Scope (a version outside it is kept):

1. ``STATUS``: its status is not among the rule's ``statuses`` (default Published, Unlisted).
2. ``NOT_INCLUDED``: ``include`` globs are given and it matches none, or ``include_regex`` is
   given and does not match it.
3. ``EXCLUDED``: it matches an ``exclude`` glob or ``exclude_regex``.
4. ``PRERELEASE_SCOPE``: the rule is about pre-releases only and it is a release, or about
   releases only and it is a pre-release (by `domain.versions.is_prerelease`, the test the
   policy's ``resource.prerelease`` uses).

Guards (a version in scope that one of them covers is kept):

5. ``LATEST``: it is the package's latest version (CodeArtifact's default display version) or
   its newest Published release (by the rule's order).
6. ``UNORDERED``: the rule ranks by version and the format's ordering cannot place it (a
   generic package has no version ordering: rank it by publication).
7. ``KEEP_NEWEST`` / ``KEEP_NEWEST_RELEASES`` / ``KEEP_NEWEST_PRERELEASES``: it is among the
   newest N versions in scope (of its kind), by the rule's order. The counts are taken over the
   versions in scope, the latest included: "keep the newest 5" keeps 5, not 6.
8. ``KEEP_YOUNGER_THAN``: it was published within the last ``keep_younger_than_days`` (exactly
   that long ago counts as within).
9. ``NOT_OLDER_THAN``: it was published not more than ``older_than_days`` ago.
10. ``MAX_DELETIONS``: ``max_deletions`` older versions of the package are deleted already
    (the oldest go first).

Anything else is deleted (``SELECTED``). So "delete pre-releases older than 30 days, but keep
the newest 5 of them and never anything younger than 7 days" is ``prerelease = only``,
``older_than_days = 30``, ``keep_newest_prereleases = 5``, ``keep_younger_than_days = 7``.

A rule needs a count or an age guard for every kind of version in its scope: patterns narrow a
rule, they never guard it (a single negative pattern is the most reported source of cleanup
accidents), and a count of one kind guards only that kind (``keep_newest_prereleases = 5``
alone, with releases in scope, would delete every release but the latest: refused; an explicit
``keep_newest_releases = 0`` says so on purpose). A count that cannot apply
(keep_newest_releases in a rule about pre-releases only, keep_newest_prereleases in one about
releases only) is refused rather than counted as a guard.

Ages. Publication times are not in CodeArtifact's version list, only in DescribePackageVersion,
one call per version. But the list can be ordered by publication time, and an age threshold
splits that order in two: the planner finds the split with a binary search (`AgeSplit`), a
few describes per threshold instead of one per version.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import re2

from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.model import PackageFormat, VersionStatus
from pkggov_gateway.domain.version_order import sort_key
from pkggov_gateway.domain.versions import is_prerelease

__all__ = [
    "COUNT_FIELDS",
    "DEFAULT_STATUSES",
    "OUT_OF_SCOPE",
    "AgeSplit",
    "Clause",
    "Order",
    "PackageVersions",
    "PrereleaseScope",
    "RetentionDecision",
    "RetentionRule",
    "evaluate",
    "rule_from_mapping",
]

MAX_COUNT = 100_000
MAX_DAYS = 36_500
MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 255

DEFAULT_STATUSES = (VersionStatus.PUBLISHED, VersionStatus.UNLISTED)
_RULE_STATUSES = frozenset(VersionStatus) - {VersionStatus.DELETED}


class Order(StrEnum):
    """How a rule ranks versions from newest to oldest."""

    VERSION = "version"
    PUBLISHED = "published"


class PrereleaseScope(StrEnum):
    """Which kind of version a rule is about."""

    ANY = "any"
    ONLY = "only"
    EXCLUDE = "exclude"


class Clause(StrEnum):
    """The part of a rule that decided a version (see the module docstring)."""

    STATUS = "STATUS"
    NOT_INCLUDED = "NOT_INCLUDED"
    EXCLUDED = "EXCLUDED"
    PRERELEASE_SCOPE = "PRERELEASE_SCOPE"
    LATEST = "LATEST"
    UNORDERED = "UNORDERED"
    KEEP_NEWEST = "KEEP_NEWEST"
    KEEP_NEWEST_RELEASES = "KEEP_NEWEST_RELEASES"
    KEEP_NEWEST_PRERELEASES = "KEEP_NEWEST_PRERELEASES"
    KEEP_YOUNGER_THAN = "KEEP_YOUNGER_THAN"
    NOT_OLDER_THAN = "NOT_OLDER_THAN"
    MAX_DELETIONS = "MAX_DELETIONS"
    SELECTED = "SELECTED"


OUT_OF_SCOPE = frozenset(
    {Clause.STATUS, Clause.NOT_INCLUDED, Clause.EXCLUDED, Clause.PRERELEASE_SCOPE}
)
"""The clauses that keep a version because it is outside the rule's scope."""


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # an invalid pattern is the caller's error, not a log line
    return options


_OPTIONS = _re2_options()


def _compile(pattern: str) -> Any:
    return re2.compile(pattern, options=_OPTIONS)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """A validated rule (build it with `rule_from_mapping`)."""

    order: Order = Order.VERSION
    keep_newest: int | None = None
    keep_newest_releases: int | None = None
    keep_newest_prereleases: int | None = None
    older_than_days: int | None = None
    keep_younger_than_days: int | None = None
    statuses: tuple[VersionStatus, ...] = DEFAULT_STATUSES
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_regex: str = ""
    exclude_regex: str = ""
    prerelease: PrereleaseScope = PrereleaseScope.ANY
    max_deletions: int | None = None
    _include_re: Any = field(default=None, compare=False, repr=False)
    _exclude_re: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.include_regex and self._include_re is None:
            object.__setattr__(self, "_include_re", _compile(self.include_regex))
        if self.exclude_regex and self._exclude_re is None:
            object.__setattr__(self, "_exclude_re", _compile(self.exclude_regex))

    def to_json(self) -> dict[str, Any]:
        """The rule as recorded (set fields only, in a fixed order)."""
        out: dict[str, Any] = {"order": self.order.value}
        for name in COUNT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["statuses"] = [s.value for s in self.statuses]
        for name in ("include", "exclude"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        for name in ("include_regex", "exclude_regex"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        out["prerelease"] = self.prerelease.value
        return out


COUNT_FIELDS = (
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
    "max_deletions",
)
_GUARDS = (
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
)
_KNOWN_FIELDS = frozenset(
    (*COUNT_FIELDS, "order", "statuses", "include", "exclude", "include_regex", "exclude_regex")
) | {"prerelease"}


def rule_from_mapping(raw: Mapping[str, Any], *, prefix: str = "rule") -> RetentionRule:
    """Check a rule given as a mapping (from the configuration file, or from the proto's
    fields) and build it; raise InvalidRequestError naming every bad field as
    ``<prefix>.<field>``. Unset fields are absent or None."""
    violations: list[FieldViolation] = []

    def bad(name: str, description: str) -> None:
        violations.append(FieldViolation(f"{prefix}.{name}", description))

    for name in sorted(set(raw) - _KNOWN_FIELDS):
        bad(name, "is not a rule field")
    values: dict[str, Any] = {}
    order = raw.get("order") or Order.VERSION.value
    try:
        values["order"] = Order(order)
    except ValueError:
        bad("order", f"must be one of {', '.join(o.value for o in Order)}, got {order!r}")
    scope = raw.get("prerelease") or PrereleaseScope.ANY.value
    try:
        values["prerelease"] = PrereleaseScope(scope)
    except ValueError:
        bad(
            "prerelease",
            f"must be one of {', '.join(p.value for p in PrereleaseScope)}, got {scope!r}",
        )
    for name in COUNT_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        most = MAX_DAYS if name.endswith("_days") else MAX_COUNT
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            bad(name, f"must be a whole number from 0 to {most}, got {value!r}")
        else:
            values[name] = value
    statuses = raw.get("statuses") or [s.value for s in DEFAULT_STATUSES]
    parsed_statuses: list[VersionStatus] = []
    for index, status in enumerate(_as_list(statuses, "statuses", bad)):
        try:
            parsed = VersionStatus(status)
        except ValueError:
            parsed = None
        if parsed is None or parsed not in _RULE_STATUSES:
            allowed = ", ".join(sorted(s.value for s in _RULE_STATUSES))
            bad(f"statuses[{index}]", f"must be one of {allowed}, got {status!r}")
        else:
            parsed_statuses.append(parsed)
    values["statuses"] = tuple(dict.fromkeys(parsed_statuses))
    for name in ("include", "exclude"):
        patterns = _as_list(raw.get(name) or [], name, bad)
        if len(patterns) > MAX_PATTERNS:
            bad(name, f"has {len(patterns)} patterns; at most {MAX_PATTERNS} are allowed")
            continue
        for index, pattern in enumerate(patterns):
            problem = _pattern_problem(pattern)
            if problem:
                bad(f"{name}[{index}]", problem)
        values[name] = tuple(p for p in patterns if isinstance(p, str))
    for name in ("include_regex", "exclude_regex"):
        pattern = raw.get(name) or ""
        problem = _pattern_problem(pattern) if pattern else None
        if problem is None and pattern:
            try:
                _compile(pattern)
            except re2.error as error:
                problem = f"is not a valid RE2 regular expression: {_text(error)}"
        if problem:
            bad(name, problem)
        else:
            values[name] = pattern
    scope = values.get("prerelease")
    for name, never in (
        ("keep_newest_releases", PrereleaseScope.ONLY),
        ("keep_newest_prereleases", PrereleaseScope.EXCLUDE),
    ):
        if scope is never and values.get(name) is not None:
            bad(name, f"cannot apply: the rule's prerelease scope is {never.value!r}")
            values.pop(name)
    shared = any(
        values.get(n) for n in ("keep_newest", "older_than_days", "keep_younger_than_days")
    )
    if not any(values.get(name) for name in _GUARDS):
        bad(
            "keep_newest",
            "a rule needs a count or an age guard (keep_newest, keep_newest_releases, "
            "keep_newest_prereleases, older_than_days or keep_younger_than_days, above 0): "
            "patterns narrow a rule, they never guard it",
        )
    elif not shared:  # only per-kind counts: each kind in scope needs its own
        for kind, count, outside in (
            ("releases", "keep_newest_releases", PrereleaseScope.ONLY),
            ("pre-releases", "keep_newest_prereleases", PrereleaseScope.EXCLUDE),
        ):
            if scope is not outside and values.get(count) is None:
                bad(
                    count,
                    f"the rule's scope includes {kind}, and nothing guards them: give "
                    f"{count} (0 deletes all but the latest), keep_newest or an age guard, "
                    f"or leave {kind} out of scope (prerelease)",
                )
    if violations:
        raise InvalidRequestError(violations)
    return RetentionRule(**values)


def _as_list(value: Any, name: str, bad: Callable[[str, str], None]) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    bad(name, f"must be a list, got {type(value).__name__}")
    return []


def _pattern_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return f"must be a string, got {type(pattern).__name__}"
    if not pattern:
        return "must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters, got {len(pattern)}"
    if not pattern.isprintable():
        return "must be printable text"
    return None


def _text(error: BaseException) -> str:
    detail = error.args[0] if error.args else error
    return detail.decode() if isinstance(detail, bytes) else str(detail)


# --- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageVersions:
    """One package's versions as the planner read them."""

    format: PackageFormat
    statuses: Mapping[str, VersionStatus]
    """Every version -> its status."""
    published_order: Sequence[str]
    """Every version, newest published first."""
    latest: str | None = None
    """CodeArtifact's default display version."""


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """What the rule does with one version, and why."""

    version: str
    delete: bool
    clause: Clause
    reason: str
    prerelease: bool = False
    published_at: datetime | None = None
    """When it was published, where the evaluation read it."""


class AgeSplit:
    """Where an age threshold splits a package's versions, found by binary search.

    `published_at(version)` reads one publication time (DescribePackageVersion); results are
    cached, so each version is read at most once across thresholds. Versions whose time is
    unknown count as young: an age guard keeps them.
    """

    def __init__(
        self, newest_first: Sequence[str], published_at: Callable[[str], datetime | None]
    ) -> None:
        self._order = list(newest_first)
        self._read = published_at
        self.read: dict[str, datetime | None] = {}
        self._position = {version: index for index, version in enumerate(self._order)}
        self._exact = False
        self._oriented = False
        self._splits: dict[datetime, int | None] = {}

    def time(self, version: str) -> datetime | None:
        """The publication time of `version` (read once)."""
        if version not in self.read:
            self.read[version] = self._read(version)
        return self.read[version]

    def older_than(self, version: str, cutoff: datetime) -> bool:
        """Whether `version` was published before `cutoff`."""
        if self._exact or version not in self._position:  # not listed: read it
            when = self.time(version)
            return when is not None and when < cutoff
        if cutoff not in self._splits:
            self._splits[cutoff] = self._first_older(cutoff)
        first_old = self._splits[cutoff]
        if first_old is None:
            when = self.time(version)  # the order did not hold: read it
            return when is not None and when < cutoff
        return self._position[version] >= first_old

    def _first_older(self, cutoff: datetime) -> int | None:
        """The index of the newest version published before `cutoff` (len: none is), or None
        when a time is unknown or the order is not monotone (then each is read)."""
        self._orient()
        if self._exact:
            return None
        low, high = 0, len(self._order)
        while low < high:
            middle = (low + high) // 2
            when = self.time(self._order[middle])
            if when is None:
                self._exact = True
                return None
            if when < cutoff:
                high = middle
            else:
                low = middle + 1
        return low

    def _orient(self) -> None:
        """Newest first, whichever way the listing ran: compare its two ends."""
        if self._oriented or len(self._order) < 2:
            self._oriented = True
            return
        self._oriented = True
        first, last = self.time(self._order[0]), self.time(self._order[-1])
        if first is None or last is None:
            self._exact = True
        elif first < last:
            self._order.reverse()
            self._position = {version: index for index, version in enumerate(self._order)}


def evaluate(
    rule: RetentionRule,
    package: PackageVersions,
    now: datetime,
    published_at: Callable[[str], datetime | None],
) -> list[RetentionDecision]:
    """Decide every version of `package` by `rule` at `now` (see the module docstring); in the
    rule's order, newest first, versions the order cannot place last (by name)."""
    return _Evaluation(rule, package, now, published_at).run()


class _Evaluation:
    def __init__(
        self,
        rule: RetentionRule,
        package: PackageVersions,
        now: datetime,
        published_at: Callable[[str], datetime | None],
    ) -> None:
        self.rule = rule
        self.package = package
        self.now = now
        self.ages = AgeSplit(package.published_order, published_at)
        self.keys: dict[str, Any | None] = (
            {v: sort_key(package.format, v) for v in package.statuses}
            if rule.order is Order.VERSION
            else {}
        )
        self.ordered = self._ordered()

    def _ordered(self) -> list[str]:
        """Every version newest first by the rule's order; unplaceable ones last, by name."""
        listed = [v for v in self.package.published_order if v in self.package.statuses]
        known = set(listed)
        listed += sorted(v for v in self.package.statuses if v not in known)
        if self.rule.order is Order.PUBLISHED:
            return listed
        placed = [v for v in listed if self.keys[v] is not None]
        # Ties in the format's order (1.0 and 1.0.0) fall back to publication order.
        placed.sort(key=lambda v: cast("Any", self.keys[v]), reverse=True)
        return placed + sorted(v for v in listed if self.keys[v] is None)

    def placed(self, version: str) -> bool:
        """Whether the rule's order places `version`."""
        return self.rule.order is Order.PUBLISHED or self.keys[version] is not None

    def prerelease(self, version: str) -> bool:
        return is_prerelease(self.package.format, version)

    def run(self) -> list[RetentionDecision]:
        decisions: dict[str, RetentionDecision] = {}
        in_scope: list[str] = []
        for version in self.ordered:
            kept = self._out_of_scope(version)
            if kept is not None:
                decisions[version] = kept
            else:
                in_scope.append(version)
        latest = self._latest()
        counts = self._ranks(in_scope)
        candidates: list[str] = []
        for version in in_scope:
            kept = self._guarded(version, latest, counts)
            if kept is not None:
                decisions[version] = kept
            else:
                candidates.append(version)
        cap = self.rule.max_deletions
        over = len(candidates) - cap if cap is not None and len(candidates) > cap else 0
        for index, version in enumerate(candidates):  # newest first: the oldest go first
            if index < over:
                decisions[version] = self._keep(
                    version,
                    Clause.MAX_DELETIONS,
                    f"the rule deletes at most {cap} versions of a package, the oldest first",
                )
            else:
                decisions[version] = self._selected(version)
        return [decisions[v] for v in self.ordered]

    # --- clauses ------------------------------------------------------------------------

    def _keep(self, version: str, clause: Clause, reason: str) -> RetentionDecision:
        return RetentionDecision(
            version,
            False,
            clause,
            reason,
            self.prerelease(version),
            self.ages.read.get(version),
        )

    def _out_of_scope(self, version: str) -> RetentionDecision | None:
        rule = self.rule
        status = self.package.statuses[version]
        if status not in rule.statuses:
            shown = ", ".join(s.value for s in rule.statuses)
            return self._keep(version, Clause.STATUS, f"{status} is not among {shown}")
        if rule.include and not any(fnmatch.fnmatchcase(version, p) for p in rule.include):
            return self._keep(version, Clause.NOT_INCLUDED, "matches none of the include patterns")
        if rule._include_re is not None and not rule._include_re.fullmatch(version):
            return self._keep(version, Clause.NOT_INCLUDED, "include_regex does not match it")
        for pattern in rule.exclude:
            if fnmatch.fnmatchcase(version, pattern):
                return self._keep(version, Clause.EXCLUDED, f"matches exclude {pattern!r}")
        if rule._exclude_re is not None and rule._exclude_re.fullmatch(version):
            return self._keep(version, Clause.EXCLUDED, "matches exclude_regex")
        pre = self.prerelease(version)
        if rule.prerelease is PrereleaseScope.ONLY and not pre:
            return self._keep(
                version, Clause.PRERELEASE_SCOPE, "a release; the rule is about pre-releases"
            )
        if rule.prerelease is PrereleaseScope.EXCLUDE and pre:
            return self._keep(
                version, Clause.PRERELEASE_SCOPE, "a pre-release; the rule is about releases"
            )
        return None

    def _latest(self) -> set[str]:
        """The package's latest version and its newest Published release."""
        protected = {self.package.latest} if self.package.latest else set()
        for version in self.ordered:
            if (
                self.placed(version)
                and self.package.statuses[version] is VersionStatus.PUBLISHED
                and not self.prerelease(version)
            ):
                protected.add(version)
                break
        return protected

    def _ranks(self, in_scope: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Each placeable version in scope -> (its rank among all, among its kind), from 1."""
        ranks: dict[str, tuple[int, int]] = {}
        overall = 0
        by_kind = {True: 0, False: 0}
        for version in in_scope:
            if not self.placed(version):
                continue
            overall += 1
            kind = self.prerelease(version)
            by_kind[kind] += 1
            ranks[version] = (overall, by_kind[kind])
        return ranks

    def _guarded(
        self, version: str, latest: set[str], ranks: Mapping[str, tuple[int, int]]
    ) -> RetentionDecision | None:
        rule = self.rule
        if version in latest:
            which = (
                "the package's latest version"
                if version == self.package.latest
                else "the package's newest release"
            )
            return self._keep(version, Clause.LATEST, which)
        if version not in ranks:
            return self._keep(
                version,
                Clause.UNORDERED,
                f"{self.package.format} version ordering cannot place it",
            )
        overall, of_kind = ranks[version]
        pre = self.prerelease(version)
        if rule.keep_newest is not None and overall <= rule.keep_newest:
            return self._keep(
                version, Clause.KEEP_NEWEST, f"among the newest {rule.keep_newest} ({overall})"
            )
        count = rule.keep_newest_prereleases if pre else rule.keep_newest_releases
        if count is not None and of_kind <= count:
            kind = "pre-releases" if pre else "releases"
            clause = Clause.KEEP_NEWEST_PRERELEASES if pre else Clause.KEEP_NEWEST_RELEASES
            return self._keep(version, clause, f"among the newest {count} {kind} ({of_kind})")
        young = rule.keep_younger_than_days
        if young and not self.ages.older_than(version, self.now - timedelta(days=young)):
            return self._keep(
                version, Clause.KEEP_YOUNGER_THAN, f"published within the last {young} days"
            )
        old = rule.older_than_days
        if old and not self.ages.older_than(version, self.now - timedelta(days=old)):
            return self._keep(
                version, Clause.NOT_OLDER_THAN, f"published not more than {old} days ago"
            )
        return None

    def _selected(self, version: str) -> RetentionDecision:
        rule = self.rule
        pre = self.prerelease(version)
        kind = "pre-releases" if pre else "releases"
        parts = ["pre-release" if pre else "release"]
        counts = [
            f"newest {n} {label}"
            for n, label in (
                (rule.keep_newest, "versions"),
                (rule.keep_newest_prereleases if pre else rule.keep_newest_releases, kind),
            )
            if n is not None
        ]
        if counts:
            parts.append("not among the " + " or ".join(counts))
        days = max(rule.keep_younger_than_days or 0, rule.older_than_days or 0)
        if days:
            parts.append(f"published more than {days} days ago")
        return replace(
            self._keep(version, Clause.SELECTED, "; ".join(parts)),
            delete=True,
        )
