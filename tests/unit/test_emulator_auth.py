"""SigV4 verification accepts what botocore signs and rejects every kind of bad signature."""

from __future__ import annotations

import datetime as dt
import hashlib
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pkggov_emulator._auth import SigV4Verifier
from pkggov_emulator._errors import (
    AuthError,
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationTokenError,
    UnrecognizedClientError,
)
from pkggov_emulator._wire import Request

KEY_ID = "AKIAUNITTEST00000001"
SECRET = "unit-test-secret"
VERIFIER = SigV4Verifier(credentials={KEY_ID: SECRET}, service="codeartifact", region="us-east-1")
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
URL = "http://127.0.0.1:9/v1/package/versions/delete?domain=demo&repository=dev-shared&format=npm&package=%40a%2Bb"
BODY = b'{"versions": ["1.0.0"]}'


def _signed(
    *,
    url: str = URL,
    body: bytes = BODY,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    region: str = "us-east-1",
    service: str = "codeartifact",
    when: dt.datetime = NOW,
    headers: dict[str, str] | None = None,
) -> Request:
    aws_request = AWSRequest(method="POST", url=url, data=body, headers=headers or {})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        SigV4Auth(Credentials(key_id, secret), service, region).add_auth(aws_request)
    parts = urlsplit(url)
    return Request(
        method="POST",
        path=parts.path,
        query=parts.query,
        headers=(("Host", parts.netloc), *aws_request.headers.items()),
        body=body,
    )


def _replace(request: Request, **changes: object) -> Request:
    values = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body,
    }
    return Request(**{**values, **changes})  # type: ignore[arg-type]


def test_botocore_signature_is_accepted() -> None:
    assert KEY_ID == VERIFIER.verify(_signed(), now=NOW, check_payload_hash=True)


def test_any_region_when_the_verifier_has_none() -> None:
    verifier = SigV4Verifier(credentials={KEY_ID: SECRET}, service="codeartifact", region=None)
    request = _signed(region="ap-south-1")
    assert KEY_ID == verifier.verify(request, now=NOW, check_payload_hash=True)


def test_query_parameter_order_does_not_matter() -> None:
    request = _signed()
    reordered = "&".join(reversed(request.query.split("&")))
    assert KEY_ID == VERIFIER.verify(
        _replace(request, query=reordered), now=NOW, check_payload_hash=True
    )


def test_unsigned_payload_is_accepted() -> None:
    request = _signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert KEY_ID == VERIFIER.verify(request, now=NOW, check_payload_hash=True)


def _rejection(request: Request, *, check_payload_hash: bool = True) -> AuthError:
    with pytest.raises(AuthError) as caught:
        VERIFIER.verify(request, now=NOW, check_payload_hash=check_payload_hash)
    return caught.value


@pytest.mark.parametrize(
    ("request_", "error_type", "fragment"),
    [
        (
            _replace(_signed(), headers=(("Host", "127.0.0.1:9"),)),
            MissingAuthenticationTokenError,
            "Missing Authentication Token",
        ),
        (_signed(key_id="AKIAUNKNOWN000000000"), UnrecognizedClientError, "security token"),
        (_signed(secret="wrong"), InvalidSignatureError, "does not match"),
        (_signed(region="eu-west-1"), InvalidSignatureError, "valid region"),
        (_signed(service="s3"), InvalidSignatureError, "correct service"),
        (_signed(when=NOW - dt.timedelta(minutes=16)), InvalidSignatureError, "expired"),
        (_signed(when=NOW + dt.timedelta(minutes=16)), InvalidSignatureError, "not yet current"),
        (_replace(_signed(), body=b'{"versions": ["2.0.0"]}'), InvalidSignatureError, "match"),
        (_replace(_signed(), query="domain=other"), InvalidSignatureError, "does not match"),
        (_replace(_signed(), method="PUT"), InvalidSignatureError, "does not match"),
    ],
)
def test_rejections(request_: Request, error_type: type[AuthError], fragment: str) -> None:
    error = _rejection(request_)
    assert error_type is type(error)
    assert fragment in error.message


def test_malformed_authorization_header() -> None:
    request = _signed()
    headers = tuple(
        (name, "AWS4-HMAC-SHA256 Credential=x") if name.lower() == "authorization" else (name, v)
        for name, v in request.headers
    )
    assert IncompleteSignatureError is type(_rejection(_replace(request, headers=headers)))


def test_other_algorithm_is_incomplete() -> None:
    request = _signed()
    headers = tuple(
        (name, "AWS key:sig") if name.lower() == "authorization" else (name, v)
        for name, v in request.headers
    )
    assert IncompleteSignatureError is type(_rejection(_replace(request, headers=headers)))


def test_claimed_payload_hash_must_match_the_body() -> None:
    claimed = hashlib.sha256(b"something else").hexdigest()
    request = _signed(headers={"X-Amz-Content-SHA256": claimed})
    assert InvalidSignatureError is type(_rejection(request))
    # Where the header is a modeled input (PublishPackageVersion), the operation checks it.
    assert KEY_ID == VERIFIER.verify(request, now=NOW, check_payload_hash=False)
