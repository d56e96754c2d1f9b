"""Field rules: botocore's model constraints plus the gateway's own, all reported at once."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest

from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError
from pkggov_gateway.domain.model import (
    DeleteRequest,
    PackageFormat,
    PackageRef,
    VersionStatus,
    canonical_package,
)
from pkggov_gateway.domain.validation import (
    CODEARTIFACT_MAX_VERSIONS_PER_CALL,
    STRING_RULES,
    RawDeleteRequest,
    UnknownEnumValue,
    validate_delete_request,
)

_MODEL_MEMBERS = {
    "domain": "domain",
    "domain_owner": "domainOwner",
    "repository": "repository",
    "namespace": "namespace",
    "package": "package",
}


def _raw(**overrides: object) -> RawDeleteRequest:
    fields: dict[str, object] = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": PackageFormat.NPM,
        "package": "left-pad",
        "versions": ["1.0.0"],
    }
    fields.update(overrides)
    return RawDeleteRequest(**fields)  # type: ignore[arg-type]


def _violations(raw: RawDeleteRequest, max_versions: int = 1000) -> list[FieldViolation]:
    with pytest.raises(InvalidRequestError) as caught:
        validate_delete_request(raw, max_versions=max_versions)
    return list(caught.value.violations)


def test_rules_match_botocore_model() -> None:
    """The copied limits and patterns equal the installed botocore model's."""
    model = botocore.session.get_session().get_service_model("codeartifact")
    shape: Any = model.operation_model("DeletePackageVersions").input_shape
    for field, member in _MODEL_MEMBERS.items():
        meta = shape.members[member].metadata
        rule = STRING_RULES[field]
        assert (meta["min"], meta["max"], meta["pattern"]) == (
            rule.min_length,
            rule.max_length,
            rule.pattern,
        )
    versions: Any = shape.members["versions"]
    assert CODEARTIFACT_MAX_VERSIONS_PER_CALL == versions.metadata["max"]
    member_meta = versions.member.metadata
    rule = STRING_RULES["versions"]
    assert (member_meta["min"], member_meta["max"], member_meta["pattern"]) == (
        rule.min_length,
        rule.max_length,
        rule.pattern,
    )
    assert {f.value for f in PackageFormat} == set(shape.members["format"].enum)
    assert {s.value for s in VersionStatus} == set(shape.members["expectedStatus"].enum)
    assert {"domain", "repository", "format", "package", "versions"} == set(shape.required_members)


def test_valid_request_is_normalized_and_duplicates_collapse() -> None:
    """Duplicates collapse to their first occurrence, order kept; empty optionals become None."""
    request = validate_delete_request(
        _raw(versions=["1.0.0", "1.1.0", "1.0.0", "1.2.0", "1.1.0"]), max_versions=1000
    )
    assert (
        DeleteRequest(
            PackageRef("demo", "dev-shared", PackageFormat.NPM, "left-pad"),
            ("1.0.0", "1.1.0", "1.2.0"),
        )
        == request
    )


def test_every_bad_field_is_reported_at_once() -> None:
    """One violation per bad field, named by its proto field path."""
    raw = _raw(
        domain="Demo!",
        domain_owner="123",
        repository="x",
        format=UnknownEnumValue(42),
        package="bad/name",
        versions=["ok", "", "has space", "a#b"],
        expected_status=UnknownEnumValue(9),
    )
    assert [
        "domain",
        "domain_owner",
        "repository",
        "package",
        "format",
        "expected_status",
        "versions[1]",
        "versions[2]",
        "versions[3]",
    ] == [v.field for v in _violations(raw)]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("domain", "a", "must be 2 to 50 characters long, got 1"),
        ("domain", "a" * 51, "must be 2 to 50 characters long, got 51"),
        ("domain", "-demo", r"must match the pattern [a-z][a-z0-9\-]{0,48}[a-z0-9], got '-demo'"),
        ("domain", "demo-", r"must match the pattern [a-z][a-z0-9\-]{0,48}[a-z0-9], got 'demo-'"),
        ("domain_owner", "12345678901a", "must match the pattern [0-9]{12}, got '12345678901a'"),
        ("repository", "r" * 101, "must be 2 to 100 characters long, got 101"),
        (
            "repository",
            ".repo",
            r"must match the pattern [A-Za-z0-9][A-Za-z0-9._\-]{1,99}, got '.repo'",
        ),
        ("package", "p" * 256, "must be 1 to 255 characters long, got 256"),
        ("package", "left pad", r"must match the pattern [^#/\s]+, got 'left pad'"),
    ],
)
def test_string_rules(field: str, value: str, expected: str) -> None:
    """Lengths and full-match patterns come from the model."""
    assert [FieldViolation(field, expected)] == _violations(_raw(**{field: value}))


def test_required_fields() -> None:
    """Missing required fields are each named."""
    raw = RawDeleteRequest(domain="", repository="", format=None, package="", versions=[])
    assert [
        FieldViolation("domain", "is required"),
        FieldViolation("repository", "is required"),
        FieldViolation("package", "is required"),
        FieldViolation("format", "is required"),
        FieldViolation("versions", "must name at least one version"),
    ] == _violations(raw)


def test_version_count_limit_applies_to_the_list_as_sent() -> None:
    """More versions than the configured maximum is one violation on `versions`."""
    raw = _raw(versions=[f"1.0.{i}" for i in range(11)])
    assert [
        FieldViolation("versions", "names 11 versions; at most 10 are allowed per call")
    ] == _violations(raw, max_versions=10)
    at_limit = validate_delete_request(_raw(versions=["1"] * 10), max_versions=10)
    assert ("1",) == at_limit.versions


def test_version_length_limit() -> None:
    """A version longer than 255 characters is refused."""
    assert [FieldViolation("versions[0]", "must be 1 to 255 characters long, got 256")] == (
        _violations(_raw(versions=["v" * 256]))
    )


@pytest.mark.parametrize(
    ("fmt", "namespace", "expected"),
    [
        (PackageFormat.MAVEN, "", "is required for maven packages"),
        (PackageFormat.SWIFT, "", "is required for swift packages"),
        (PackageFormat.GENERIC, "", "is required for generic packages"),
        (PackageFormat.PYPI, "acme", "must be empty: pypi packages have no namespace"),
        (PackageFormat.NUGET, "acme", "must be empty: nuget packages have no namespace"),
        (PackageFormat.RUBY, "acme", "must be empty: ruby packages have no namespace"),
        (PackageFormat.CARGO, "acme", "must be empty: cargo packages have no namespace"),
        (PackageFormat.NPM, "@acme", "is the npm scope without the leading '@'"),
    ],
)
def test_namespace_rule_per_format(fmt: PackageFormat, namespace: str, expected: str) -> None:
    """Namespace is required, optional or forbidden by format."""
    assert [FieldViolation("namespace", expected)] == _violations(
        _raw(format=fmt, namespace=namespace)
    )


@pytest.mark.parametrize(
    ("fmt", "namespace"),
    [
        (PackageFormat.NPM, ""),
        (PackageFormat.NPM, "acme"),
        (PackageFormat.MAVEN, "com.acme"),
        (PackageFormat.PYPI, ""),
    ],
)
def test_namespace_accepted(fmt: PackageFormat, namespace: str) -> None:
    """Allowed namespace combinations validate."""
    request = validate_delete_request(_raw(format=fmt, namespace=namespace), max_versions=10)
    assert (namespace or None) == request.package.namespace


@pytest.mark.parametrize(
    ("fmt", "namespace", "name", "expected"),
    [
        (PackageFormat.PYPI, None, "Requests_Lite", (None, "requests-lite")),
        (PackageFormat.PYPI, None, "zope.interface", (None, "zope-interface")),
        (PackageFormat.PYPI, None, "a-_.b", (None, "a-b")),
        (PackageFormat.SWIFT, "Acme", "SwiftKit", ("acme", "swiftkit")),
        (PackageFormat.MAVEN, "com.Acme", "Core", ("com.Acme", "Core")),
        (PackageFormat.NPM, "acme", "Widgets", ("acme", "Widgets")),
    ],
)
def test_policy_sees_the_canonical_package_name(
    fmt: PackageFormat, namespace: str | None, name: str, expected: tuple[str | None, str]
) -> None:
    """Python names are PEP 503-normalized and Swift names lower-cased before deciding."""
    canonical = canonical_package(PackageRef("demo", "dev", fmt, name, namespace))
    assert expected == (canonical.namespace, canonical.package)
