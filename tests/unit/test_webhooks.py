"""Webhooks without a network: what WebhookSender refuses to be built with, the wire format
of the body and signature, `verify_signature` and the backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pkggov_gateway.adapters.webhooks import (
    MIN_SECRET_BYTES,
    WebhookSender,
    backoff_seconds,
    encode_event,
    sign,
    verify_signature,
)
from pkggov_gateway.domain.approvals import WebhookEvent

SECRET = b"k" * MIN_SECRET_BYTES
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp()))


class _UnusedOutbox:
    """A WebhookOutbox that building a sender must not touch."""

    def claim_webhooks(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookEvent, int]]:
        raise AssertionError("not to be called")

    def webhook_delivered(self, event_id: str) -> None:
        raise AssertionError("not to be called")

    def webhook_failed(self, event_id: str, *, retry_at: datetime, error: str) -> None:
        raise AssertionError("not to be called")


def build(url: str = "https://hooks.example.com/x", **overrides: Any) -> WebhookSender:
    options: dict[str, Any] = {"secret": SECRET, **overrides}
    return WebhookSender(_UnusedOutbox(), url=url, **options)


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/x", "must be http:// or https://"),
        ("file:///etc/passwd", "must be http:// or https://"),
        ("gopher://hooks.example.com/", "must be http:// or https://"),
        ("hooks.example.com/x", "must be http:// or https://"),
        ("", "must be http:// or https://"),
        ("https:///x", "has no host"),
        ("https://user:pass@hooks.example.com/x", "must not carry credentials"),
        ("https://hooks.example.com/x#frag", "must not have a #fragment"),
        ("http://hooks.example.com/x", "plain http"),
        ("http://10.0.0.7:8080/x", "plain http"),
        ("https://hooks.example.com:99999/x", "not a URL"),
    ],
)
def test_unusable_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build(url)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://hooks.example.com/services/T0/B0/XYZ", "https://hooks.example.com:443"),
        ("HTTPS://Hooks.Example.COM:8443/x?y=1", "https://hooks.example.com:8443"),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080"),
        ("http://localhost/hook", "http://localhost:80"),
        ("http://[::1]:9000/hook", "http://[::1]:9000"),
    ],
)
def test_usable_urls_and_their_target_without_the_path(url: str, target: str) -> None:
    sender = build(url)
    assert target == sender.target
    sender.close()


def test_plain_http_elsewhere_only_when_allowed() -> None:
    sender = build("http://ticket-bridge.internal:8080/hook", allow_plaintext=True)
    assert "http://ticket-bridge.internal:8080" == sender.target
    sender.close()


@pytest.mark.parametrize("secret", [b"", b"short", b"k" * (MIN_SECRET_BYTES - 1)])
def test_short_secrets_are_refused(secret: bytes) -> None:
    with pytest.raises(ValueError, match="secret"):
        build(secret=secret)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds must be a positive number"),
        ({"lease_seconds": -1}, "lease_seconds must be a positive number"),
        ({"retry_seconds": float("inf")}, "retry_seconds must be a positive number"),
        ({"timeout_seconds": 30, "lease_seconds": 30}, "must be less than lease_seconds"),
        ({"retry_seconds": 60, "retry_max_seconds": 30}, "must not exceed retry_max_seconds"),
        ({"batch": 0}, "batch must be at least 1"),
    ],
)
def test_unusable_timings_are_refused(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build(**overrides)


def test_a_ca_file_must_load_and_needs_https(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be loaded"):
        build(ca_file=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot be loaded"):
        build(ca_file=str(garbage))
    with pytest.raises(ValueError, match="only to an https URL"):
        build("http://127.0.0.1:8080/x", ca_file=str(garbage))


# --- the wire format -----------------------------------------------------------------------


def test_the_body_is_canonical_json() -> None:
    event = WebhookEvent(
        event_id="evt-1",
        kind="approved",
        request_id="dr-1",
        payload={"z": 1, "a": {"y": "é", "b": [1, 2]}},
        created_at=datetime(2025, 3, 1, 13, 0, 0, 5, tzinfo=UTC),
    )
    body = encode_event(event)
    assert (
        b'{"data":{"a":{"b":[1,2],"y":"\\u00e9"},"z":1},"deletion_request_id":"dr-1",'
        b'"id":"evt-1","kind":"approved","time":"2025-03-01T13:00:00.000005Z"}'
    ) == body
    assert "é" == json.loads(body)["data"]["a"]["y"]


def test_a_payload_that_is_not_json_is_refused() -> None:
    event = WebhookEvent("evt-1", "created", "dr-1", {"n": float("nan")}, NOW)
    with pytest.raises(ValueError, match="JSON"):
        encode_event(event)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"evt-1"}'
    expected = hmac.new(SECRET, f"{TS}.".encode() + body, hashlib.sha256).hexdigest()
    assert f"sha256={expected}" == sign(SECRET, TS, body)


# --- verify_signature ----------------------------------------------------------------------


BODY = b'{"data":{},"deletion_request_id":"dr-1","id":"evt-1","kind":"created","time":"t"}'
GOOD = sign(SECRET, TS, BODY)


def test_a_good_signature_verifies_at_any_moment_within_the_tolerance() -> None:
    assert verify_signature(SECRET, TS, BODY, GOOD, now=NOW)
    assert verify_signature(SECRET, TS, BODY, GOOD, now=NOW.timestamp() + 299)
    assert verify_signature(SECRET, TS, BODY, GOOD, now=NOW - timedelta(seconds=300))
    assert verify_signature(SECRET, TS, BODY, GOOD, now=NOW + timedelta(hours=1), tolerance=3600)


def test_a_tampered_body_is_rejected() -> None:
    tampered = BODY.replace(b'"created"', b'"approved"')
    assert not verify_signature(SECRET, TS, tampered, GOOD, now=NOW)
    assert not verify_signature(SECRET, TS, BODY + b" ", GOOD, now=NOW)


def test_an_old_or_future_timestamp_is_rejected() -> None:
    assert not verify_signature(SECRET, TS, BODY, GOOD, now=NOW + timedelta(seconds=301))
    assert not verify_signature(SECRET, TS, BODY, GOOD, now=NOW - timedelta(seconds=301))
    old = str(int(NOW.timestamp()) - 3600)  # signed then, honestly: still too old
    assert not verify_signature(SECRET, old, BODY, sign(SECRET, old, BODY), now=NOW)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    later = str(int(TS) + 1)
    assert not verify_signature(SECRET, later, BODY, GOOD, now=NOW)


def test_another_secret_is_rejected() -> None:
    assert not verify_signature(b"x" * MIN_SECRET_BYTES, TS, BODY, GOOD, now=NOW)


@pytest.mark.parametrize(
    ("timestamp", "header"),
    [
        (None, GOOD),
        (TS, None),
        ("", GOOD),
        (TS, ""),
        (TS, GOOD.removeprefix("sha256=")),
        (TS, GOOD.upper()),
        (TS, "sha1=" + GOOD.removeprefix("sha256=")),
        (TS, GOOD + "0"),
        (TS, GOOD + "é"),
        ("-" + TS, GOOD),
        (TS + ".0", GOOD),
        ("١٢٣", GOOD),  # Arabic-Indic digits: decimal, but not ASCII
        ("9" * 40, GOOD),
    ],
)
def test_malformed_headers_are_rejected(timestamp: str | None, header: str | None) -> None:
    assert not verify_signature(SECRET, timestamp, BODY, header, now=NOW)


def test_any_one_of_several_signatures_is_enough() -> None:
    other = sign(b"o" * MIN_SECRET_BYTES, TS, BODY)
    assert verify_signature(SECRET, TS, BODY, f"{other}, {GOOD}", now=NOW)
    assert verify_signature(SECRET, TS, BODY, f"{GOOD},{other}", now=NOW)
    assert not verify_signature(SECRET, TS, BODY, f"{other},{other}", now=NOW)


# --- backoff -------------------------------------------------------------------------------


def test_backoff_doubles_per_attempt_up_to_the_maximum() -> None:
    assert [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0] == [
        backoff_seconds(n, 30.0, 3600.0) for n in range(9)
    ]
    assert 3600.0 == backoff_seconds(10**6, 30.0, 3600.0)  # no overflow
    assert 30.0 == backoff_seconds(-1, 30.0, 3600.0)
