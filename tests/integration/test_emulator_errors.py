"""Errors reach boto3 shaped like AWS's: codes, statuses, modeled members and validation text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from pkggov_emulator import Emulator, FaultRule

LEFT_PAD = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}
UNVALIDATED = Config(retries={"total_max_attempts": 1}, parameter_validation=False)


def _error(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return dict(caught.value.response)


@pytest.mark.parametrize(
    ("kwargs", "resource_type", "resource_id"),
    [
        ({**LEFT_PAD, "domain": "nope"}, "domain", "nope"),
        ({**LEFT_PAD, "domainOwner": "444455556666"}, "domain", "demo"),
        ({**LEFT_PAD, "repository": "missing-repo"}, "repository", "missing-repo"),
        ({**LEFT_PAD, "package": "right-pad"}, "package", "right-pad"),
    ],
)
def test_resource_not_found_names_the_missing_resource(
    codeartifact: Any, kwargs: dict[str, str], resource_type: str, resource_id: str
) -> None:
    response = _error(codeartifact.delete_package_versions, **kwargs, versions=["1.0.0"])
    assert "ResourceNotFoundException" == response["Error"]["Code"]
    assert 404 == response["ResponseMetadata"]["HTTPStatusCode"]
    assert (resource_type, resource_id) == (response["resourceType"], response["resourceId"])


def test_missing_package_version_is_a_package_version_resource(codeartifact: Any) -> None:
    response = _error(codeartifact.describe_package_version, **LEFT_PAD, packageVersion="0.0.1")
    assert ("package-version", "0.0.1") == (response["resourceType"], response["resourceId"])


def test_resource_not_found_is_the_modeled_exception_class(codeartifact: Any) -> None:
    with pytest.raises(codeartifact.exceptions.ResourceNotFoundException):
        codeartifact.describe_domain(domain="nope")


def test_conflict_on_existing_domain(codeartifact: Any) -> None:
    response = _error(codeartifact.create_domain, domain="demo")
    assert ("ConflictException", 409) == (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )
    assert ("domain", "demo") == (response["resourceType"], response["resourceId"])


def test_conflict_on_publishing_an_existing_version(codeartifact: Any) -> None:
    response = _error(
        codeartifact.publish_package_version,
        domain="demo",
        repository="dev-shared",
        format="generic",
        namespace="tools",
        package="cli",
        packageVersion="1.0.0",
        assetContent=b"x",
        assetName="x",
        assetSHA256=hashlib.sha256(b"x").hexdigest(),
    )
    assert ("ConflictException", "package-version", "1.0.0") == (
        response["Error"]["Code"],
        response["resourceType"],
        response["resourceId"],
    )


def test_throttling_carries_retry_after_seconds(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="ListPackages", kind="throttle", retry_after_seconds=7))
    response = _error(codeartifact.list_packages, domain="demo", repository="dev-shared")
    assert ("ThrottlingException", 429, 7) == (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["retryAfterSeconds"],
    )
    assert "7" == response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]


def test_access_denied_names_the_action_and_resource(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="access_denied"))
    response = _error(codeartifact.delete_package_versions, **LEFT_PAD, versions=["1.0.0"])
    assert ("AccessDeniedException", 403) == (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )
    assert (
        "codeartifact:DeletePackageVersions on resource: "
        "arn:aws:codeartifact:us-east-1:111122223333:package/demo/dev-shared/npm//left-pad"
    ) in response["Error"]["Message"]


def test_internal_server_error(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(kind="internal", status_message="boom"))
    response = _error(codeartifact.list_domains)
    assert ("InternalServerException", 500, "boom") == (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def test_validation_pattern_is_a_full_match(codeartifact: Any) -> None:
    response = _error(codeartifact.describe_domain, domain="demo-")
    assert ("ValidationException", 400, "FIELD_VALIDATION_FAILED") == (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["reason"],
    )
    assert (
        "1 validation error detected: Value 'demo-' at 'domain' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-z][a-z0-9\\-]{0,48}[a-z0-9]"
    ) == response["Error"]["Message"]


def test_validation_reports_every_bad_field(make_codeartifact: Callable[..., Any]) -> None:
    client = make_codeartifact(config=UNVALIDATED)
    response = _error(
        client.delete_package_versions,
        domain="d" * 51,
        repository="dev-shared",
        format="tarball",
        package="has space",
        versions=[f"1.0.{i}" for i in range(101)],
    )
    message = response["Error"]["Message"]
    assert message.startswith("5 validation errors detected: ")
    assert "at 'domain' failed to satisfy constraint: Member must have length less than or " in (
        message
    )
    assert "at 'format' failed to satisfy constraint: Member must satisfy enum value set: [" in (
        message
    )
    assert "Value 'has space' at 'package' failed to satisfy constraint: Member must satisfy" in (
        message
    )
    assert "at 'versions' failed to satisfy constraint: Member must have length less than or " in (
        message
    )


def test_validation_of_required_members_and_integer_ranges(
    make_codeartifact: Callable[..., Any],
) -> None:
    client = make_codeartifact(config=UNVALIDATED)
    response = _error(
        client.list_package_versions,
        domain="demo",
        repository="dev-shared",
        format="npm",
        maxResults=0,
    )
    assert (
        "2 validation errors detected: "
        "Value null at 'package' failed to satisfy constraint: Member must not be null; "
        "Value '0' at 'maxResults' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    ) == response["Error"]["Message"]


def test_validation_of_minimum_length(make_codeartifact: Callable[..., Any]) -> None:
    client = make_codeartifact(config=UNVALIDATED)
    response = _error(client.describe_domain, domain="")
    assert "Member must have length greater than or equal to 2" in response["Error"]["Message"]


def test_validation_of_list_elements(make_codeartifact: Callable[..., Any]) -> None:
    client = make_codeartifact(config=UNVALIDATED)
    response = _error(client.delete_package_versions, **LEFT_PAD, versions=["1.0.0", "bad/one"])
    assert (
        "Value 'bad/one' at 'versions.2.member' failed to satisfy constraint"
        in (response["Error"]["Message"])
    )


def test_validation_of_unicode_class_patterns(codeartifact: Any) -> None:
    response = _error(
        codeartifact.create_repository,
        domain="demo",
        repository="with-bad-description",
        description="tab\tis fine but bell \x07 is not",
    )
    assert (
        "at 'description' failed to satisfy constraint: Member must satisfy regular "
        in (response["Error"]["Message"])
    )


@pytest.mark.parametrize(
    ("package_format", "namespace"),
    [
        ("maven", None),
        ("swift", None),
        ("generic", None),
        ("pypi", "acme"),
        ("nuget", "acme"),
        ("ruby", "acme"),
        ("cargo", "acme"),
    ],
)
def test_namespace_rules_per_format(
    codeartifact: Any, package_format: str, namespace: str | None
) -> None:
    kwargs = {**LEFT_PAD, "format": package_format}
    if namespace is not None:
        kwargs["namespace"] = namespace
    response = _error(codeartifact.delete_package_versions, **kwargs, versions=["1.0.0"])
    assert ("ValidationException", "FIELD_VALIDATION_FAILED") == (
        response["Error"]["Code"],
        response["reason"],
    )
    assert "namespace" in response["Error"]["Message"]


def test_npm_namespace_is_optional(codeartifact: Any) -> None:
    scoped = codeartifact.list_package_versions(
        **{**LEFT_PAD, "namespace": "acme", "package": "widgets"}
    )
    unscoped = codeartifact.list_package_versions(**LEFT_PAD)
    assert ("acme", None) == (scoped.get("namespace"), unscoped.get("namespace"))


@pytest.mark.parametrize("target", ["Disposed", "Deleted", "Unfinished"])
def test_update_status_target_must_be_archived_published_or_unlisted(
    codeartifact: Any, emulator: Emulator, target: str
) -> None:
    """A modeled status that is no target of UpdatePackageVersionsStatus is refused whole:
    ValidationException FIELD_VALIDATION_FAILED, nothing changed."""
    response = _error(
        codeartifact.update_package_versions_status,
        **LEFT_PAD,
        versions=["1.0.0"],
        targetStatus=target,
    )
    assert ("ValidationException", "FIELD_VALIDATION_FAILED", 400) == (
        response["Error"]["Code"],
        response["reason"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_update_status_target_outside_the_model_enum(codeartifact: Any) -> None:
    response = _error(
        codeartifact.update_package_versions_status,
        **LEFT_PAD,
        versions=["1.0.0"],
        targetStatus="Restored",
    )
    assert (
        "Value 'Restored' at 'targetStatus' failed to satisfy constraint: Member must satisfy "
        "enum value set: [Published, Unfinished, Unlisted, Archived, Disposed, Deleted]"
    ) in response["Error"]["Message"]


@pytest.mark.parametrize(
    "operation", ["update_package_versions_status", "dispose_package_versions"]
)
def test_version_revisions_and_versions_are_validated(
    make_codeartifact: Callable[..., Any], emulator: Emulator, operation: str
) -> None:
    """versionRevisions is a map of version (pattern) -> revision (at most 50 characters);
    versions at most 100: each breach is reported, and nothing is applied."""
    client = make_codeartifact(config=UNVALIDATED)
    target = {"targetStatus": "Archived"} if operation.startswith("update") else {}
    response = _error(
        getattr(client, operation),
        **LEFT_PAD,
        versions=[f"1.0.{i}" for i in range(101)],
        versionRevisions={"1.0.0": "r" * 51, "bad/one": "r"},
        **target,
    )
    message = response["Error"]["Message"]
    assert message.startswith("3 validation errors detected: "), message
    assert "at 'versionRevisions.1.value' failed to satisfy constraint: Member must have " in (
        message
    )
    assert "Value 'bad/one' at 'versionRevisions.2.key' failed to satisfy constraint" in message
    assert "at 'versions' failed to satisfy constraint: Member must have length less than or " in (
        message
    )
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_publish_only_generic(codeartifact: Any) -> None:
    response = _error(
        codeartifact.publish_package_version,
        **LEFT_PAD,
        packageVersion="9.0.0",
        assetContent=b"x",
        assetName="x.tgz",
        assetSHA256=hashlib.sha256(b"x").hexdigest(),
    )
    assert "ValidationException" == response["Error"]["Code"]


def test_publish_checks_the_asset_hash(codeartifact: Any) -> None:
    response = _error(
        codeartifact.publish_package_version,
        domain="demo",
        repository="dev-shared",
        format="generic",
        namespace="tools",
        package="cli",
        packageVersion="9.0.0",
        assetContent=b"x",
        assetName="x.tgz",
        assetSHA256=hashlib.sha256(b"y").hexdigest(),
    )
    assert ("ValidationException", "OTHER") == (response["Error"]["Code"], response["reason"])


def test_unparseable_json_body_is_cannot_parse(raw_request: Callable[..., Any]) -> None:
    query = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "npm",
        "package": "left-pad",
    }
    response = raw_request(
        "POST", "/v1/package/versions/delete", query=query, body=b'{"versions": ['
    )
    assert (400, "ValidationException", "CANNOT_PARSE") == (
        response.status,
        response.headers["x-amzn-errortype"],
        response.json()["reason"],
    )


def test_wrong_json_types_fail_validation(raw_request: Callable[..., Any]) -> None:
    query = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}
    body = json.dumps({"versions": "1.0.0"}).encode()
    response = raw_request("POST", "/v1/package/versions/delete", query=query, body=body)
    assert (400, "FIELD_VALIDATION_FAILED") == (response.status, response.json()["reason"])
    assert "Member must be of type list" in response.json()["message"]


def test_unknown_route_is_an_unknown_operation(raw_request: Callable[..., Any]) -> None:
    response = raw_request("GET", "/v1/no-such-thing")
    assert (400, "ValidationException", "UNKNOWN_OPERATION") == (
        response.status,
        response.headers["x-amzn-errortype"],
        response.json()["reason"],
    )


def test_unsupported_modeled_operation_is_an_unknown_operation(codeartifact: Any) -> None:
    response = _error(codeartifact.get_authorization_token, domain="demo")
    assert ("ValidationException", "UNKNOWN_OPERATION") == (
        response["Error"]["Code"],
        response["reason"],
    )


def test_bad_pagination_token(codeartifact: Any) -> None:
    response = _error(codeartifact.list_package_versions, **LEFT_PAD, nextToken="garbage")
    assert "ValidationException" == response["Error"]["Code"]
