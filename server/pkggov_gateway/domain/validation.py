"""Field rules for DeletePackageVersions, checked before anything is forwarded.

The limits and patterns are CodeArtifact's own, copied from botocore's service model
(a unit test fails if they drift from the installed model). Patterns are full matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.model import (
    NAMESPACE_RULES,
    DeleteRequest,
    NamespaceRule,
    PackageFormat,
    PackageRef,
    VersionStatus,
)

__all__ = [
    "CODEARTIFACT_MAX_VERSIONS_PER_CALL",
    "STRING_RULES",
    "RawDeleteRequest",
    "StringRule",
    "UnknownEnumValue",
    "validate_delete_request",
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
    if len(justification) > MAX_JUSTIFICATION_LENGTH:
        violations.append(
            FieldViolation(
                "justification",
                f"must be at most {MAX_JUSTIFICATION_LENGTH} characters, got {len(justification)}",
            )
        )
    elif not justification.isprintable():
        violations.append(
            FieldViolation(
                "justification",
                "must be printable text: no control, format or line-separator characters "
                "and no spaces other than the ASCII space",
            )
        )

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


def _namespace_violations(fmt: PackageFormat, namespace: str) -> list[FieldViolation]:
    rule = NAMESPACE_RULES[fmt]
    if rule is NamespaceRule.REQUIRED and not namespace:
        return [FieldViolation("namespace", f"is required for {fmt} packages")]
    if rule is NamespaceRule.FORBIDDEN and namespace:
        return [FieldViolation("namespace", f"must be empty: {fmt} packages have no namespace")]
    if fmt is PackageFormat.NPM and namespace.startswith("@"):
        return [FieldViolation("namespace", "is the npm scope without the leading '@'")]
    return []
