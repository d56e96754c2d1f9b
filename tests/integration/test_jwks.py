"""Issuers' keys over real HTTPS: a local JWKS server (keys the tests make, a certificate from the
test CA) behind the verifier, as the gateway builds it. The server down at start-up and after
the keys' cache ends, rotation under concurrent traffic, discovery, TLS and redirects."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pkggov_gateway.adapters.identity import build_authenticator
from pkggov_gateway.adapters.jwks import MAX_JWKS_BYTES, HttpsJwks, JwksError, parse_jwk_set
from pkggov_gateway.adapters.metrics import PrometheusMetrics
from pkggov_gateway.adapters.tokens import TokenAuthenticator, TokenVerifier, load_issuers
from pkggov_gateway.config import IdentitySettings
from pkggov_gateway.domain.errors import UnauthenticatedError
from tests.certs import TestPKI, make_test_pki
from tests.issuers import (
    JwksServer,
    SigningKey,
    claims,
    issuer_entry,
    make_key,
    mint,
    write_issuers,
)

PEER = "ipv4:127.0.0.1:5555"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return make_key("k1", reuse=0)


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return make_key("k2", reuse=1)


@pytest.fixture
def server(pki: TestPKI, k1: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(pki, [k1]) as jwks:
        yield jwks


def authenticator(
    tmp_path: Path,
    pki: TestPKI,
    server: JwksServer,
    metrics: PrometheusMetrics | None = None,
    **settings: Any,
) -> TokenAuthenticator:
    """tokens = only against `server` (its URL as issuer, the test CA for TLS), as the gateway
    builds it."""
    entry = issuer_entry(server.issuer, **{"ca_file": str(pki.ca_pem), **settings})
    if "discovery" not in settings:
        entry["jwks_uri"] = server.jwks_uri
    path = write_issuers(tmp_path, {"local": entry})
    identity = IdentitySettings(
        server_cert=str(pki.server.cert),
        server_key=str(pki.server.key),
        tokens="only",
        token_issuers=str(path),
    )
    built = build_authenticator(identity, metrics=metrics)
    assert isinstance(built, TokenAuthenticator)
    return built


def call(auth: TokenAuthenticator, token: str) -> str:
    """The principal id of a call carrying `token`, or "UNAUTHENTICATED: <message>"."""
    try:
        return auth.authenticate({"authorization": f"Bearer {token}"}, PEER, {}).id
    except UnauthenticatedError as error:
        return f"UNAUTHENTICATED: {error.message}"


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_keys_are_fetched_over_verified_https(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    auth = authenticator(tmp_path, pki, server)
    sub = claims()["sub"]
    assert f"local:{sub}" == call(auth, mint(k1, claims(iss=server.issuer)))
    assert 1 == server.jwks_requests()
    (state,) = auth.verifier.key_states()
    assert (True, ("k1",), server.jwks_uri) == (state.ready, state.kids, state.source)


def test_discovery_finds_the_keys(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    auth = authenticator(tmp_path, pki, server, discovery=True)
    assert call(auth, mint(k1, claims(iss=server.issuer))).startswith("local:")
    assert ["/.well-known/openid-configuration", "/jwks"] == server.requests


def test_discovery_naming_another_issuer_is_refused(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    server.discovery_issuer = "https://evil.example"
    auth = authenticator(tmp_path, pki, server, discovery=True)
    message = call(auth, mint(k1, claims(iss=server.issuer)))
    assert "UNAUTHENTICATED" in message
    assert "names another issuer" in message


def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    """ca_file is the other CA's: the fetch fails its TLS check, the token is refused."""
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.other_ca_authority.cert_pem)
    auth = authenticator(tmp_path, pki, server, ca_file=str(other))
    message = call(auth, mint(k1, claims(iss=server.issuer)))
    assert "keys are not available" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert 0 == server.jwks_requests()


def test_the_system_trust_store_does_not_trust_the_test_ca(
    server: JwksServer,
) -> None:
    with pytest.raises(JwksError, match="CERTIFICATE_VERIFY_FAILED"):
        HttpsJwks(jwks_uri=server.jwks_uri).fetch()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (302, b"{}", "HTTP 302 (a redirect, not followed)"),
        (500, b"{}", "HTTP 500"),
        (200, b"<html>", "is not JSON"),
        (200, b'{"keys": 1}', "not a JWK Set"),
        (200, b"[1]", "not a JSON object"),
        (200, b" " * (MAX_JWKS_BYTES + 1), "larger than"),
    ],
)
def test_bad_answers_fail_the_fetch(
    pki: TestPKI, server: JwksServer, status: int, body: bytes, message: str
) -> None:
    server.status, server.body = (None, body) if status == 200 else (status, body)
    source = HttpsJwks(jwks_uri=server.jwks_uri, ca_file=str(pki.ca_pem))
    with pytest.raises(JwksError, match=re.escape(message)):
        parse_jwk_set(source.fetch())
    if status == 302:
        assert ["/jwks"] == server.requests  # the redirect was not followed


def test_down_at_start_up_then_up(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    """The JWKS endpoint is down when the gateway starts: the prefetch fails, token calls fail
    closed (retrying at most once per refresh interval); once it is up, calls succeed."""
    server.down = True
    metrics = PrometheusMetrics()
    auth = authenticator(tmp_path, pki, server, metrics, jwks_refresh_seconds=0.5)
    auth.verifier.prefetch()
    assert wait_until(lambda: server.jwks_requests() == 1)
    assert wait_until(lambda: auth.verifier.key_states()[0].last_failure is not None)
    token = mint(k1, claims(iss=server.issuer))
    for _ in range(5):
        assert "UNAUTHENTICATED" in call(auth, token)
    assert server.jwks_requests() <= 2
    assert not auth.verifier.ready()
    server.down = False
    time.sleep(0.5)
    assert call(auth, token).startswith("local:")
    assert auth.verifier.ready()
    samples = {
        (s.name, s.labels.get("result")): s.value
        for family in text_string_to_metric_families(_scrape(metrics))
        for s in family.samples
        if s.labels.get("issuer") == "local"
    }
    assert 1 == samples[("pkggov_jwks_keys", None)]
    assert samples[("pkggov_jwks_fetches_total", "failed")] >= 1
    assert 1 == samples[("pkggov_jwks_fetches_total", "ok")]
    assert samples[("pkggov_token_verifications_total", "no_keys")] == 5
    assert 1 == samples[("pkggov_token_verifications_total", "ok")]


def test_refresh_due_retries_a_failed_start(
    tmp_path: Path, pki: TestPKI, server: JwksServer
) -> None:
    """A periodic task can load the keys without a call."""
    server.down = True
    auth = authenticator(tmp_path, pki, server, jwks_refresh_seconds=0.2)
    assert not auth.verifier.refresh_due()
    server.down = False
    time.sleep(0.2)
    assert auth.verifier.refresh_due()


def _scrape(metrics: PrometheusMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_keys_expire_through_an_outage_and_then_fail_closed(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey
) -> None:
    """Loaded, then the endpoint goes down: tokens still verify until the cache ends, and are
    refused after; the keys come back with the endpoint."""
    auth = authenticator(tmp_path, pki, server, jwks_cache_seconds=1.0, jwks_refresh_seconds=0.2)
    token = mint(k1, claims(iss=server.issuer))
    assert call(auth, token).startswith("local:")
    server.down = True
    assert call(auth, token).startswith("local:")
    time.sleep(1.1)
    assert "keys are not available" in call(auth, token)
    server.down = False
    time.sleep(0.2)
    assert call(auth, token).startswith("local:")


def test_rotation_mid_traffic_fails_no_call(
    tmp_path: Path, pki: TestPKI, server: JwksServer, k1: SigningKey, k2: SigningKey
) -> None:
    """Eight threads call without pause; the issuer publishes k2 beside k1 and signs with k2
    from then on: every correctly signed token is accepted, and the rotation costs one fetch."""
    auth = authenticator(tmp_path, pki, server, jwks_refresh_seconds=0.3)
    old = mint(k1, claims(iss=server.issuer))
    new = mint(k2, claims(iss=server.issuer))
    assert call(auth, old).startswith("local:")
    time.sleep(0.3)
    rotated, stop = threading.Event(), threading.Event()
    results: list[tuple[bool, str]] = []

    def traffic(_: int) -> None:
        while not stop.is_set():
            signed_by_new = rotated.is_set()
            results.append((signed_by_new, call(auth, new if signed_by_new else old)))

    with ThreadPoolExecutor(8) as pool:
        running = [pool.submit(traffic, n) for n in range(8)]
        time.sleep(0.2)
        server.keys = [k1, k2]
        rotated.set()
        time.sleep(0.3)
        stop.set()
        for future in running:
            future.result()
    failures = [r for _, r in results if r.startswith("UNAUTHENTICATED")]
    assert [] == failures
    assert sum(1 for by_new, _ in results if by_new) > 8
    assert sum(1 for by_new, _ in results if not by_new) > 8
    assert 2 == server.jwks_requests()
    assert {"k1", "k2"} == set(auth.verifier.key_states()[0].kids)


def test_an_issuer_only_ever_uses_its_own_keys(
    tmp_path: Path, pki: TestPKI, k1: SigningKey, k2: SigningKey
) -> None:
    """Two issuers, each its own JWKS server: a token of one, signed by the other's key under
    that key's kid, is refused (the kid is looked up among its issuer's keys only)."""
    with JwksServer(pki, [k1]) as one, JwksServer(pki, [k2]) as two:
        path = write_issuers(
            tmp_path,
            {
                "one": issuer_entry(one.issuer, jwks_uri=one.jwks_uri, ca_file=str(pki.ca_pem)),
                "two": issuer_entry(two.issuer, jwks_uri=two.jwks_uri, ca_file=str(pki.ca_pem)),
            },
        )
        verifier = TokenVerifier(load_issuers(path))
        assert verifier.verify(mint(k1, claims(iss=one.issuer)), PEER).id.startswith("one:")
        assert verifier.verify(mint(k2, claims(iss=two.issuer)), PEER).id.startswith("two:")
        with pytest.raises(UnauthenticatedError, match="issuer one has no signing key 'k2'"):
            verifier.verify(mint(k2, claims(iss=one.issuer)), PEER)
        assert 1 == one.jwks_requests()  # the refetch for k2 waits for jwks_refresh_seconds


def test_a_jwks_trickled_a_byte_at_a_time_is_cut_off_at_the_fetch_timeout(pki: TestPKI) -> None:
    """urllib3's timeout bounds each read, not the whole: a server that sends the body one
    byte at a time, each within the timeout, must still end the fetch at its timeout (it holds
    every call waiting for that issuer's keys)."""
    import socket
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            tls.sendall(b"Content-Length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    tls.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    source = HttpsJwks(
        jwks_uri=f"https://localhost:{port}/jwks", ca_file=str(pki.ca_pem), timeout_seconds=1.0
    )
    try:
        with pytest.raises(JwksError, match="did not arrive within 1 s"):
            source.fetch()
    finally:
        stop.set()
        source.close()
        listener.close()
