"""Field rules for DeletePackageVersions, checked before anything is forwarded.

The limits and patterns are CodeArtifact's own, copied from botocore's service model
(a unit test fails if they drift from the installed model). Patterns are full matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pkggov_gateway.domain.cleanup import CleanupScope, PlanRequest
from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.model import (
    NAMESPACE_RULES,
    DeleteRequest,
    NamespaceRule,
    PackageFormat,
    PackageRef,
    VersionStatus,
)
from pkggov_gateway.domain.retention import rule_from_mapping

__all__ = [
    "CODEARTIFACT_MAX_VERSIONS_PER_CALL",
    "STRING_RULES",
    "RawDeleteRequest",
    "RawPlanRequest",
    "StringRule",
    "UnknownEnumValue",
    "justification_violations",
    "validate_delete_request",
    "validate_plan_request",
]

CODEARTIFACT_MAX_VERSIONS_PER_CALL = 100
"""The most versions CodeArtifact accepts in one DeletePackageVersions call."""


@dataclass(frozen=True, slots=True)
class StringRule:
    """A string constraint from the service model: length bounds and a full-match pattern."""

    shape: str
    min_length: int
    max_length: int
    pattern: str
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ASCII: CodeArtifact's patterns are Java regular expressions, whose \s, \w and \d
        # are ASCII-only (a no-break space is not \s there, so it may be in a version).
        object.__setattr__(self, "compiled", re.compile(self.pattern, re.ASCII))

    def check(self, field: str, value: str) -> FieldViolation | None:
        """Return the violation of this rule by `value`, or None when it holds."""
        if not self.min_length <= len(value) <= self.max_length:
            return FieldViolation(
                field,
                f"must be {self.min_length} to {self.max_length} characters long, got {len(value)}",
            )
        if not self.compiled.fullmatch(value):
            return FieldViolation(
                field, f"must match the pattern {self.pattern}, got {_shown(value)}"
            )
        return None


def _shown(value: str, limit: int = 40) -> str:
    """`value` quoted for a message, cut to `limit` characters so errors stay small."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


STRING_RULES: dict[str, StringRule] = {
    "domain": StringRule("DomainName", 2, 50, r"[a-z][a-z0-9\-]{0,48}[a-z0-9]"),
    "domain_owner": StringRule("AccountId", 12, 12, r"[0-9]{12}"),
    "repository": StringRule("RepositoryName", 2, 100, r"[A-Za-z0-9][A-Za-z0-9._\-]{1,99}"),
    "namespace": StringRule("PackageNamespace", 1, 255, r"[^#/\s]+"),
    "package": StringRule("PackageName", 1, 255, r"[^#/\s]+"),
    "versions": StringRule("PackageVersion", 1, 255, r"[^#/\s]+"),
}

MAX_JUSTIFICATION_LENGTH = 1024
"""The longest justification accepted (the gateway's own rule; CodeArtifact has no such field)."""
"""Request field (proto name) -> the model's constraint for it."""


@dataclass(frozen=True, slots=True)
class UnknownEnumValue:
    """An enum number the gateway's proto does not define (proto3 enums are open)."""

    number: int


@dataclass(frozen=True, slots=True)
class RawDeleteRequest:
    """A request as received, before any rule is checked; empty strings mean "not set"."""

    domain: str
    repository: str
    format: PackageFormat | UnknownEnumValue | None
    package: str
    versions: Sequence[str]
    namespace: str = ""
    domain_owner: str = ""
    expected_status: VersionStatus | UnknownEnumValue | None = None
    justification: str = ""
    validate_only: bool = False
    allow_partial: bool = False
    purge_now: bool = False


def validate_delete_request(raw: RawDeleteRequest, *, max_versions: int) -> DeleteRequest:
    """Check every field rule; return the normalized request or raise InvalidRequestError.

    All violations are collected (not just the first). Duplicate versions collapse to their
    first occurrence; `max_versions` bounds the list as sent, duplicates included.
    """
    violations: list[FieldViolation] = []

    def check(field: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                violations.append(FieldViolation(field, "is required"))
            return
        found = STRING_RULES[field].check(field, value)
        if found is not None:
            violations.append(found)

    check("domain", raw.domain, required=True)
    check("domain_owner", raw.domain_owner, required=False)
    check("repository", raw.repository, required=True)
    check("package", raw.package, required=True)

    fmt: PackageFormat | None = None
    if raw.format is None:
        violations.append(FieldViolation("format", "is required"))
    elif isinstance(raw.format, UnknownEnumValue):
        violations.append(FieldViolation("format", f"unknown value {raw.format.number}"))
    else:
        fmt = raw.format

    check("namespace", raw.namespace, required=False)
    if fmt is not None:
        violations.extend(_namespace_violations(fmt, raw.namespace))

    if isinstance(raw.expected_status, UnknownEnumValue):
        violations.append(
            FieldViolation("expected_status", f"unknown value {raw.expected_status.number}")
        )

    if not raw.versions:
        violations.append(FieldViolation("versions", "must name at least one version"))
    elif len(raw.versions) > max_versions:
        violations.append(
            FieldViolation(
                "versions",
                f"names {len(raw.versions)} versions; at most {max_versions} are allowed per call",
            )
        )
    else:
        for index, version in enumerate(raw.versions):
            found = (
                FieldViolation(f"versions[{index}]", "must not be empty")
                if not version
                else STRING_RULES["versions"].check(f"versions[{index}]", version)
            )
            if found is not None:
                violations.append(found)

    justification = raw.justification.strip()
    violations.extend(justification_violations(justification))

    status = raw.expected_status
    if violations or fmt is None or isinstance(status, UnknownEnumValue):
        raise InvalidRequestError(violations)
    return DeleteRequest(
        package=PackageRef(
            domain=raw.domain,
            repository=raw.repository,
            format=fmt,
            package=raw.package,
            namespace=raw.namespace or None,
            domain_owner=raw.domain_owner or None,
        ),
        versions=tuple(dict.fromkeys(raw.versions)),
        expected_status=status,
        justification=justification,
        validate_only=raw.validate_only,
        allow_partial=raw.allow_partial,
        purge_now=raw.purge_now,
    )


def justification_violations(justification: str) -> list[FieldViolation]:
    """The broken rules of a (stripped) justification: its length, printable text."""
    if len(justification) > MAX_JUSTIFICATION_LENGTH:
        return [
            FieldViolation(
                "justification",
                f"must be at most {MAX_JUSTIFICATION_LENGTH} characters, got {len(justification)}",
            )
        ]
    if not justification.isprintable():
        return [
            FieldViolation(
                "justification",
                "must be printable text: no control, format or line-separator characters "
                "and no spaces other than the ASCII space",
            )
        ]
    return []


RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A configured cleanup rule's name."""


@dataclass(frozen=True, slots=True)
class RawPlanRequest:
    """A PlanCleanup request as received; empty strings mean "not set"."""

    domain: str
    repository: str
    format: PackageFormat | UnknownEnumValue | None = None
    namespace: str = ""
    package: str = ""
    package_pattern: str = ""
    domain_owner: str = ""
    rule_name: str = ""
    rule: Mapping[str, Any] | None = None
    """The inline rule's fields (None: not given)."""
    justification: str = ""
    purge_now: bool = False


def validate_plan_request(raw: RawPlanRequest) -> PlanRequest:
    """Check every field of a PlanCleanup request (the rule's as ``rule.<field>``); return the
    request or raise InvalidRequestError naming every bad field."""
    violations: list[FieldViolation] = []
    for name, required in (("domain", True), ("repository", True), ("domain_owner", False)):
        value = getattr(raw, name)
        if not value:
            if required:
                violations.append(FieldViolation(name, "is required"))
            continue
        found = STRING_RULES[name].check(name, value)
        if found is not None:
            violations.append(found)
    for name in ("namespace", "package"):
        value = getattr(raw, name)
        found = STRING_RULES[name].check(name, value) if value else None
        if found is not None:
            violations.append(found)
    fmt: PackageFormat | None = None
    if isinstance(raw.format, UnknownEnumValue):
        violations.append(FieldViolation("format", f"unknown value {raw.format.number}"))
    else:
        fmt = raw.format
    if raw.package:
        if raw.format is None:
            violations.append(FieldViolation("format", "is required with package"))
        if fmt is not None:
            violations.extend(_namespace_violations(fmt, raw.namespace))
        if raw.package_pattern:
            violations.append(
                FieldViolation("package_pattern", "must be empty when package names one package")
            )
    elif fmt is not None and NAMESPACE_RULES[fmt] is NamespaceRule.FORBIDDEN and raw.namespace:
        violations.extend(_namespace_violations(fmt, raw.namespace))
    if raw.package_pattern and (
        len(raw.package_pattern) > STRING_RULES["package"].max_length
        or not raw.package_pattern.isprintable()
    ):
        violations.append(
            FieldViolation("package_pattern", "must be a printable glob of at most 255 characters")
        )
    rule = None
    if bool(raw.rule_name) == (raw.rule is not None):
        violations.append(FieldViolation("rule_name", "set exactly one of rule_name and rule"))
    elif raw.rule_name and RULE_NAME.fullmatch(raw.rule_name) is None:
        violations.append(
            FieldViolation(
                "rule_name", f"must match {RULE_NAME.pattern}, got {_shown(raw.rule_name)}"
            )
        )
    elif raw.rule is not None:
        try:
            rule = rule_from_mapping(raw.rule)
        except InvalidRequestError as error:
            violations.extend(error.violations)
    justification = raw.justification.strip()
    violations.extend(justification_violations(justification))
    if violations:
        raise InvalidRequestError(violations)
    return PlanRequest(
        scope=CleanupScope(
            domain=raw.domain,
            repository=raw.repository,
            domain_owner=raw.domain_owner or None,
            format=fmt,
            namespace=raw.namespace or None,
            package=raw.package or None,
            package_pattern=raw.package_pattern or None,
        ),
        rule_name=raw.rule_name,
        rule=rule,
        justification=justification,
        purge_now=raw.purge_now,
    )


def _namespace_violations(fmt: PackageFormat, namespace: str) -> list[FieldViolation]:
    rule = NAMESPACE_RULES[fmt]
    if rule is NamespaceRule.REQUIRED and not namespace:
        return [FieldViolation("namespace", f"is required for {fmt} packages")]
    if rule is NamespaceRule.FORBIDDEN and namespace:
        return [FieldViolation("namespace", f"must be empty: {fmt} packages have no namespace")]
    if fmt is PackageFormat.NPM and namespace.startswith("@"):
        return [FieldViolation("namespace", "is the npm scope without the leading '@'")]
    return []
