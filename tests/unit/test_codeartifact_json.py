"""The adapter decodes the listing's and the per-version writes' answers itself (one json.loads):
what it reads is what botocore's modeled parse would have given it.

Answers are served by a `before-send` hook (no network), to two real boto3 clients: one with
the adapter's `before-parse` hook, one with it removed (botocore's modeled parse); the
adapter's results must be equal, whatever the answer holds (members the model does not know,
nulls, unknown statuses and error codes, pages).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.model import Shape

from pkggov_gateway.adapters.codeartifact import (
    PLAIN_JSON_OPERATIONS,
    BotoCodeArtifact,
    RetryPolicy,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus

PACKAGE = PackageRef("demo", "dev", PackageFormat.NPM, "widgets", "acme")
RETRY = RetryPolicy(
    max_attempts=1,
    base_delay_seconds=0.01,
    read_timeout_seconds=5.0,
    deadline_margin_seconds=0.05,
    min_attempt_seconds=0.1,
)


def _strings_only(shape: Shape, path: str) -> list[str]:
    """Where `shape` holds anything but strings in structures, lists and maps, or names a
    member in the JSON otherwise than the model, or puts one in a header."""
    faults = []
    if shape.type_name == "structure":
        if shape.metadata.get("union") or shape.metadata.get("document"):
            faults.append(f"{path}: a union or document")
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            serialization = member.serialization
            if serialization.get("name", name) != name or serialization.get("location"):
                faults.append(f"{path}.{name}: named or located otherwise")
            faults += _strings_only(member, f"{path}.{name}")
    elif shape.type_name == "list":
        faults += _strings_only(shape.member, f"{path}[]")  # type: ignore[attr-defined]
    elif shape.type_name == "map":
        faults += _strings_only(shape.key, f"{path}{{key}}")  # type: ignore[attr-defined]
        faults += _strings_only(shape.value, f"{path}{{}}")  # type: ignore[attr-defined]
    elif shape.type_name != "string":
        faults.append(f"{path}: {shape.type_name}")
    return faults


@pytest.mark.parametrize("operation", PLAIN_JSON_OPERATIONS)
def test_the_operations_decoded_as_json_output_strings_only(operation: str) -> None:
    """botocore's parse of these outputs only copies values (no timestamps, numbers, blobs,
    unions, renamed or header members): a JSON body is already the output."""
    model = botocore.session.get_session().get_service_model("codeartifact")
    output = model.operation_model(operation).output_shape
    assert output is not None
    assert [] == _strings_only(output, operation)


class _Stream:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _client(answers: Callable[[str], tuple[int, Any]], *, parse_hook: bool) -> BotoCodeArtifact:
    """The adapter over a boto3 client answered by `answers` (operation -> status, body)."""
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    client = session.client(
        "codeartifact",
        endpoint_url="http://codeartifact.invalid",
        config=Config(retries={"total_max_attempts": 1}),
    )

    def serve(request: Any, **kwargs: Any) -> AWSResponse:
        operation = kwargs["event_name"].rpartition(".")[2]
        status, body = answers(operation)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = HTTPHeaders()
        headers["x-amzn-RequestId"] = f"req-{operation}"
        headers["Content-Type"] = "application/json"
        return AWSResponse(request.url, status, headers, _Stream(raw))

    client.meta.events.register("before-send.codeartifact.*", serve)  # type: ignore[arg-type]
    adapter = BotoCodeArtifact(client, RETRY)
    if not parse_hook:
        for operation in PLAIN_JSON_OPERATIONS:
            client.meta.events.unregister(
                f"before-parse.codeartifact.{operation}",
                unique_id=f"pkggov-plain-json-{operation}",
            )
    return adapter


def _both(answers: Callable[[str], tuple[int, Any]]) -> tuple[BotoCodeArtifact, BotoCodeArtifact]:
    return _client(answers, parse_hook=True), _client(answers, parse_hook=False)


ODD_SUMMARIES = [
    {"version": "1.0.0", "revision": "r0", "status": "Published", "origin": {"x": 1}},
    {"version": "1.0.1", "revision": None, "status": "Unlisted", "unknownMember": [1, 2]},
    {"version": "1.0.2", "status": None},
    {"version": "1.0.3", "revision": "", "status": "Frozen"},
    {"version": "1.0.4", "revision": "r4", "status": "Archived", "origin": None},
]


@pytest.mark.parametrize(
    "pages",
    [
        [{"versions": ODD_SUMMARIES, "defaultDisplayVersion": "1.0.4"}],
        [
            {"versions": ODD_SUMMARIES[:2], "nextToken": "t1", "defaultDisplayVersion": None},
            {"versions": None, "nextToken": "t2", "extra": {"a": None}},
            {"versions": ODD_SUMMARIES[2:], "nextToken": None, "defaultDisplayVersion": "1.0.3"},
        ],
        [{"versions": [], "format": "npm", "package": "widgets", "namespace": None}],
    ],
)
def test_the_listing_reads_as_botocore_parses_it(pages: list[dict[str, Any]]) -> None:
    """Statuses (an unknown or missing one read as Published), revisions (null and empty
    ones left out), the default display version, every page."""

    def serving() -> Callable[[str], tuple[int, Any]]:
        served = itertools.cycle(pages)
        return lambda _: (200, next(served))

    fast = _client(serving(), parse_hook=True)
    modeled = _client(serving(), parse_hook=False)
    state = fast.package_state(PACKAGE, Deadline.after(5))
    assert modeled.package_state(PACKAGE, Deadline.after(5)) == state


def test_the_hook_hands_over_the_json_body() -> None:
    """With the hook, the adapter gets the answer's JSON (a member the model does not know
    included) and botocore's ResponseMetadata; without it, botocore's modeled output."""
    summary = {
        "version": "1.0.0",
        "revision": "r0",
        "status": "Published",
        "origin": {"domainEntryPoint": {"repositoryName": "dev"}, "originType": "INTERNAL"},
    }
    page = {"versions": [summary], "unknownMember": {"a": None}}
    fast, modeled = _both(lambda _: (200, page))
    params = {"domain": "demo", "repository": "dev", "format": "npm", "package": "widgets"}
    decoded = fast._client.list_package_versions(**params)  # type: ignore[arg-type]
    parsed = modeled._client.list_package_versions(**params)  # type: ignore[arg-type]
    assert {"a": None} == decoded.get("unknownMember")
    assert "unknownMember" not in parsed
    assert parsed["ResponseMetadata"]["RequestId"] == decoded["ResponseMetadata"]["RequestId"]
    assert [summary] == parsed["versions"] == decoded["versions"]


@pytest.mark.parametrize("operation", ["DeletePackageVersions", "UpdatePackageVersionsStatus"])
def test_a_write_reads_as_botocore_parses_it(operation: str) -> None:
    """Successful and failed versions, nulls, unknown statuses and error codes, members the
    model does not know; the request id from the headers."""
    body = {
        "successfulVersions": {
            "1.0.0": {"revision": "r0", "status": "Deleted"},
            "1.0.1": {"revision": None, "status": "Archived", "more": {"a": 1}},
            "1.0.2": {"status": "Gone"},
            "1.0.3": {},
        },
        "failedVersions": {
            "2.0.0": {"errorCode": "MISMATCHED_STATUS", "errorMessage": "it is Unlisted"},
            "2.0.1": {"errorCode": "NEW_CODE", "errorMessage": "what"},
            "2.0.2": {"errorCode": None, "errorMessage": None},
            "2.0.3": {},
        },
        "somethingNew": [1],
    }
    fast, modeled = _both(lambda _: (200, body))
    versions = ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "2.0.0", "2.0.1", "2.0.2", "2.0.3"]
    if operation == "DeletePackageVersions":
        outcome = fast.delete_package_versions(PACKAGE, versions, None, Deadline.after(5))
        expected = modeled.delete_package_versions(PACKAGE, versions, None, Deadline.after(5))
    else:
        outcome = fast.update_package_versions_status(
            PACKAGE, versions, VersionStatus.ARCHIVED, Deadline.after(5)
        )
        expected = modeled.update_package_versions_status(
            PACKAGE, versions, VersionStatus.ARCHIVED, Deadline.after(5)
        )
    assert expected == outcome
    assert (f"req-{operation}",) == outcome.aws_request_ids


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b"\xff\xfe not json", b'{"versions": '])
def test_a_body_that_is_not_a_json_object_is_left_to_botocore(body: bytes) -> None:
    """An empty body, a JSON array, bytes that are not UTF-8 or not JSON: botocore's parser
    gets them, and the adapter reads (or fails on) its result as it always did."""
    fast, modeled = _both(lambda _: (200, body))
    try:
        expected: Any = modeled.package_state(PACKAGE, Deadline.after(5))
    except Exception as error:  # noqa: BLE001 - whichever error botocore raises
        with pytest.raises(type(error)):
            fast.package_state(PACKAGE, Deadline.after(5))
    else:
        assert expected == fast.package_state(PACKAGE, Deadline.after(5))


def test_an_error_answer_is_left_to_botocore() -> None:
    """A 4xx answer is parsed by botocore, and becomes the same domain error."""
    error = {"message": "no such package", "resourceType": "package", "resourceId": "x"}

    def answers(_: str) -> tuple[int, Any]:
        return 404, error

    fast, modeled = _both(answers)
    with pytest.raises(Exception) as expected:  # noqa: PT011 - compared below
        modeled.package_state(PACKAGE, Deadline.after(5))
    with pytest.raises(type(expected.value)) as raised:
        fast.package_state(PACKAGE, Deadline.after(5))
    assert str(expected.value) == str(raised.value)
