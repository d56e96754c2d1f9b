"""Requests are parsed, validated and answered exactly as botocore's CodeArtifact model says."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import pytest

from pkggov_emulator._errors import ValidationError
from pkggov_emulator._model import (
    error_shape,
    error_status,
    find_operation,
    operation_model,
    parse_input,
    serialize_output,
    validate_input,
)
from pkggov_emulator._wire import Request


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("POST", "/v1/package/versions/delete", "DeletePackageVersions"),
        ("GET", "/v1/package", "DescribePackage"),
        ("POST", "/v1/package", "PutPackageOriginConfiguration"),
        ("DELETE", "/v1/package", "DeletePackage"),
        ("GET", "/v1/package/versions/delete", None),
        ("POST", "/v1/unknown", None),
    ],
)
def test_routing_by_method_and_path(method: str, path: str, operation: str | None) -> None:
    assert operation == find_operation(method, path)


def test_members_come_from_query_string_and_body() -> None:
    request = Request(
        method="POST",
        path="/v1/package/versions/delete",
        query="domain=demo&repository=dev-shared&format=npm&namespace=acme&package=widgets",
        body=json.dumps({"versions": ["2.0.0"], "expectedStatus": "Published"}).encode(),
    )
    params = parse_input(operation_model("DeletePackageVersions"), request)
    assert {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "npm",
        "namespace": "acme",
        "package": "widgets",
        "versions": ["2.0.0"],
        "expectedStatus": "Published",
    } == params


def test_query_string_types_and_percent_decoding() -> None:
    request = Request(
        method="POST",
        path="/v1/package/versions",
        query="domain=demo&repository=r1&format=npm&package=%40x%2By&max-results=25",
    )
    params = parse_input(operation_model("ListPackageVersions"), request)
    assert ("@x+y", 25) == (params["package"], params["maxResults"])


def test_streaming_blob_payload_and_header_member() -> None:
    request = Request(
        method="POST",
        path="/v1/package/version/publish",
        query="domain=d1&repository=r1&format=generic&namespace=n&package=p&version=1&"
        "asset=a.bin&unfinished=true",
        headers=(("X-Amz-Content-SHA256", "ab" * 32),),
        body=b"\x00binary",
    )
    params = parse_input(operation_model("PublishPackageVersion"), request)
    assert (b"\x00binary", "ab" * 32, True) == (
        params["assetContent"],
        params["assetSHA256"],
        params["unfinished"],
    )


def test_unparseable_body_is_cannot_parse() -> None:
    request = Request(method="POST", path="/v1/domains", body=b"{nope")
    with pytest.raises(ValidationError) as caught:
        parse_input(operation_model("ListDomains"), request)
    assert "CANNOT_PARSE" == caught.value.reason


def test_non_object_body_is_cannot_parse() -> None:
    request = Request(method="POST", path="/v1/domains", body=b"[1]")
    with pytest.raises(ValidationError) as caught:
        parse_input(operation_model("ListDomains"), request)
    assert "CANNOT_PARSE" == caught.value.reason


def _validation_message(operation: str, params: Mapping[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_input(operation_model(operation), params)
    assert "FIELD_VALIDATION_FAILED" == caught.value.reason
    return caught.value.message


def test_valid_input_passes() -> None:
    validate_input(operation_model("DescribeDomain"), {"domain": "demo"})


def test_one_error_message_wording() -> None:
    message = _validation_message("DescribeDomain", {"domain": "Demo"})
    assert (
        "1 validation error detected: Value 'Demo' at 'domain' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-z][a-z0-9\\-]{0,48}[a-z0-9]"
    ) == message


def test_each_broken_constraint_of_a_field_is_reported() -> None:
    message = _validation_message("DescribeDomain", {"domain": "X"})
    assert message.startswith("2 validation errors detected: ")
    assert "Member must have length greater than or equal to 2" in message


@pytest.mark.parametrize(
    ("operation", "params", "fragment"),
    [
        ("ListDomains", {"maxResults": 1001}, "Member must have value less than or equal to 1000"),
        ("ListDomains", {"maxResults": "ten"}, "Member must be of type integer"),
        ("ListDomains", {"maxResults": True}, "Member must be of type integer"),
        ("DescribeDomain", {"domain": "demo", "domainOwner": "12345"}, "length greater"),
        ("DescribeDomain", {}, "Value null at 'domain'"),
        (
            "CreateDomain",
            {"domain": "abc", "tags": [{"key": "k"}]},
            "Value null at 'tags.1.member.value'",
        ),
        (
            "UpdatePackageVersionsStatus",
            {
                "domain": "demo",
                "repository": "dev-shared",
                "format": "npm",
                "package": "p",
                "versions": ["1"],
                "targetStatus": "Gone",
            },
            "at 'targetStatus' failed to satisfy constraint: Member must satisfy enum value set: "
            "[Published, Unfinished, Unlisted, Archived, Disposed, Deleted]",
        ),
        (
            "DisposePackageVersions",
            {
                "domain": "demo",
                "repository": "dev-shared",
                "format": "npm",
                "package": "p",
                "versions": ["1"],
                "versionRevisions": {"1": ""},
            },
            "at 'versionRevisions.1.value' failed to satisfy constraint",
        ),
    ],
)
def test_constraint_kinds(operation: str, params: dict[str, object], fragment: str) -> None:
    assert fragment in _validation_message(operation, params)


def test_list_maximum_of_one_hundred_versions() -> None:
    params = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "npm",
        "package": "p",
        "versions": [str(i) for i in range(101)],
    }
    message = _validation_message("DeletePackageVersions", params)
    assert "at 'versions' failed to satisfy constraint: Member must have length less than or " in (
        message
    )
    params["versions"] = [str(i) for i in range(100)]
    validate_input(operation_model("DeletePackageVersions"), params)


def test_output_serialization_uses_epoch_seconds_and_skips_none() -> None:
    when = dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)
    headers, body = serialize_output(
        operation_model("DescribeDomain").output_shape,
        {"domain": {"name": "demo", "createdTime": when, "encryptionKey": None}},
    )
    assert ([], {"domain": {"name": "demo", "createdTime": when.timestamp()}}) == (
        headers,
        json.loads(body),
    )


def test_header_members_of_errors_become_headers() -> None:
    headers, body = serialize_output(
        error_shape("ThrottlingException"), {"message": "slow", "retryAfterSeconds": 3}
    )
    assert ([("Retry-After", "3")], {"message": "slow"}) == (headers, json.loads(body))


def test_unknown_output_member_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no member"):
        serialize_output(operation_model("ListDomains").output_shape, {"domainz": []})


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDeniedException", 403),
        ("ConflictException", 409),
        ("InternalServerException", 500),
        ("ResourceNotFoundException", 404),
        ("ServiceQuotaExceededException", 402),
        ("ThrottlingException", 429),
        ("ValidationException", 400),
        ("UnrecognizedClientException", None),
    ],
)
def test_error_status_comes_from_the_model(code: str, status: int | None) -> None:
    assert status == error_status(code)
