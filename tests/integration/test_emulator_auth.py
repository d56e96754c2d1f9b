"""The emulator verifies SigV4 for real: unknown keys, wrong secrets and unsigned calls fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY, Emulator


def _error(call: Callable[..., Any], **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_unknown_access_key_is_unrecognized(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(access_key_id="AKIAUNKNOWNKEY000000")
    assert (403, "UnrecognizedClientException") == _error(client.list_domains)


def test_wrong_secret_is_an_invalid_signature(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(secret_access_key="not-the-secret")
    assert (403, "InvalidSignatureException") == _error(client.list_domains)


def test_wrong_region_in_scope_is_an_invalid_signature(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(region="eu-west-1")
    assert (403, "InvalidSignatureException") == _error(client.list_domains)


def test_rejected_calls_are_recorded_but_not_applied(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(secret_access_key="not-the-secret")
    _error(
        client.delete_package_versions,
        domain="demo",
        repository="dev-shared",
        format="npm",
        package="left-pad",
        versions=["1.0.0"],
    )
    [call] = emulator.calls("DeletePackageVersions")
    assert (False, 403, "InvalidSignatureException") == (
        call.applied,
        call.status,
        call.error_code,
    )
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_unsigned_request_is_missing_authentication(raw_request: Callable[..., Any]) -> None:
    response = raw_request("POST", "/v1/domains", body=b"{}", sign_with=None)
    assert (403, "MissingAuthenticationTokenException") == (
        response.status,
        response.headers["x-amzn-errortype"],
    )


def test_tampered_query_after_signing_is_rejected(raw_request: Callable[..., Any]) -> None:
    signed = raw_request("GET", "/v1/domain", query={"domain": "demo"})
    assert 200 == signed.status
    # Re-send the demo-signed headers for another query string: the signature no longer matches.

    request = AWSRequest(method="GET", url="http://h/v1/domain?domain=demo")
    SigV4Auth(
        Credentials(DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY), "codeartifact", DEMO_REGION
    ).add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    tampered = raw_request(
        "GET", "/v1/domain", query={"domain": "sandbox"}, headers=headers, sign_with=None
    )
    assert (403, "InvalidSignatureException") == (
        tampered.status,
        tampered.headers["x-amzn-errortype"],
    )


def test_several_access_keys(make_codeartifact: Callable[..., Any]) -> None:
    credentials = {DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY, "AKIASECONDKEY0000000": "second"}
    with Emulator(credentials=credentials) as other:
        client = make_codeartifact(
            other, access_key_id="AKIASECONDKEY0000000", secret_access_key="second"
        )
        assert [] == client.list_domains()["domains"]
        assert "AKIASECONDKEY0000000" == other.calls("ListDomains")[0].access_key_id
