"""mTLS over real sockets: grpc's handshake refuses bad certificates, the authenticators name
good ones, spoofed proxy and development headers are ignored, grpcurl works with a client cert.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from pkggov_gateway.adapters.identity import (
    DevAuthenticator,
    MtlsAuthenticator,
    ProxyAuthenticator,
    parse_trusted_proxies,
)
from pkggov_gateway.adapters.tls import server_credentials
from pkggov_gateway.config import IdentitySettings
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.ports import Authenticator
from tests.certs import ALICE_ID, CertFiles, TestPKI, issue_cert, make_test_pki

GRPCURL = Path(sys.executable).with_name("grpcurl")
REPO = Path(__file__).resolve().parents[2]
WHOAMI = "/pkggov.test.Whoami/Call"
HEALTH = "grpc.health.v1.Health"
SOURCES = ("spiffe", "dns", "cn")


@pytest.fixture(autouse=True)
def _fresh_emulator() -> None:
    """No emulator here: overrides the e2e conftest's autouse fixture, which would start one."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _authenticate(authenticator: Authenticator, context: grpc.ServicerContext) -> str:
    metadata = cast("Mapping[str, str | bytes]", dict(context.invocation_metadata()))
    auth_context = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
    try:
        principal = authenticator.authenticate(metadata, context.peer(), auth_context)
    except UnauthenticatedError as error:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, error.message)
    return f"{principal.method.value} {principal.id}"


def _handlers(authenticator: Authenticator) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """A raw-bytes Whoami/Call and a Health/Check (for grpcurl) that both authenticate."""

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return _authenticate(authenticator, context).encode()

    def check(request: Any, context: grpc.ServicerContext) -> Any:
        context.send_initial_metadata((("x-principal", _authenticate(authenticator, context)),))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    return [
        grpc.method_handlers_generic_handler(
            "pkggov.test.Whoami", {"Call": grpc.unary_unary_rpc_method_handler(whoami)}
        ),
        grpc.method_handlers_generic_handler(
            HEALTH,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check,
                    request_deserializer=health_pb2.HealthCheckRequest.FromString,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                )
            },
        ),
    ]


@contextmanager
def serving(
    authenticator: Authenticator,
    credentials: grpc.ServerCredentials | None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """A started server on `host` port 0 (TLS when `credentials`); yields ``host:port``."""
    server = grpc.server(ThreadPoolExecutor(4), handlers=_handlers(authenticator))
    reflection.enable_server_reflection((HEALTH, reflection.SERVICE_NAME), server)
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as error:
        pytest.skip(f"cannot listen on {listen}: {error}")
    server.start()
    try:
        yield listen.replace(":0", f":{port}")
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def mtls_server(pki: TestPKI) -> Iterator[str]:
    """An mTLS server (client certificates required) using the PKI's server cert and CA."""
    with serving(MtlsAuthenticator(SOURCES), server_credentials(pki.identity_settings())) as addr:
        yield addr


def whoami(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    metadata: Sequence[tuple[str, str]] = (),
) -> str:
    """Call Whoami once on a fresh channel; returns ``"<method> <principal>"``."""
    with (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    ) as channel:
        call = channel.unary_unary(WHOAMI, request_serializer=None, response_deserializer=None)
        return cast(bytes, call(b"", timeout=5, metadata=tuple(metadata))).decode()


# --- the transport: grpc's handshake with client auth required -------------------------------


@pytest.mark.parametrize("client", ["alice", "ci", "cn_only", "dns_only"])
def test_good_client_certificate_names_the_principal(
    pki: TestPKI, mtls_server: str, client: str
) -> None:
    """SPIFFE ID, else DNS SAN, else CN, read from the certificate grpc verified."""
    cert: CertFiles = getattr(pki, client)
    assert f"mtls {cert.principal}" == whoami(mtls_server, pki.channel_credentials(cert))


@pytest.mark.parametrize("client", [None, "other_ca", "expired", "not_yet_valid"])
def test_bad_client_certificate_fails_the_handshake(
    pki: TestPKI, mtls_server: str, client: str | None
) -> None:
    """No certificate, another CA, expired, not yet valid: refused before any handler runs."""
    credentials = pki.channel_credentials(None if client is None else getattr(pki, client))
    with pytest.raises(grpc.RpcError) as caught:
        whoami(mtls_server, credentials)
    assert grpc.StatusCode.UNAVAILABLE == cast(grpc.Call, caught.value).code()


@pytest.mark.parametrize(
    "uris", [["spiffe://evil.test/x", ALICE_ID], [ALICE_ID, "spiffe://evil.test/x"]]
)
def test_a_certificate_with_two_spiffe_ids_is_unauthenticated(
    pki: TestPKI, mtls_server: str, uris: list[str]
) -> None:
    """The handshake accepts it (the CA signed it), but an X.509-SVID has one SPIFFE ID: which
    SAN comes first must not choose the caller."""
    cert, key = issue_cert(pki.ca, uri_sans=uris, dns_sans=["alice.pkggov.test"])
    credentials = grpc.ssl_channel_credentials(pki.ca_pem.read_bytes(), key, cert)
    with pytest.raises(grpc.RpcError) as caught:
        whoami(mtls_server, credentials)
    call = cast(grpc.Call, caught.value)
    assert grpc.StatusCode.UNAUTHENTICATED == call.code()
    assert "2 SPIFFE URI SANs" in (call.details() or "")


def test_plaintext_client_fails_against_the_tls_port(mtls_server: str) -> None:
    """A client that does not speak TLS at all gets nowhere."""
    with pytest.raises(grpc.RpcError) as caught:
        whoami(mtls_server, None)
    assert grpc.StatusCode.UNAVAILABLE == cast(grpc.Call, caught.value).code()


def test_dev_and_proxy_headers_are_ignored_by_an_mtls_server(
    pki: TestPKI, mtls_server: str
) -> None:
    """A development header or a forged XFCC sent to a server in mTLS mode change nothing."""
    forged = (
        ("x-pkggov-principal", "root"),
        ("x-forwarded-client-cert", "URI=spiffe://pkggov.test/ops/root"),
    )
    actual = whoami(mtls_server, pki.channel_credentials(pki.alice), forged)
    assert f"mtls {ALICE_ID}" == actual


def test_mtls_authenticator_without_tls_is_unauthenticated() -> None:
    """Misconfigured without TLS, the mTLS authenticator finds no certificate and refuses."""
    with (
        serving(MtlsAuthenticator(SOURCES), None) as target,
        pytest.raises(grpc.RpcError) as caught,
    ):
        whoami(target, None, (("x-pkggov-principal", "alice"),))
    error = cast(grpc.Call, caught.value)
    assert grpc.StatusCode.UNAUTHENTICATED == error.code()
    assert "no client certificate" in (error.details() or "")


# --- trusted proxy and development mode over real peers --------------------------------------

SPOOFED = (("x-forwarded-client-cert", f"By=x;Hash=y;URI={ALICE_ID}"),)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_proxy_header_from_a_trusted_peer(host: str) -> None:
    """grpc's real peer strings (ipv4, percent-encoded ipv6) match the trusted networks."""
    proxy = ProxyAuthenticator(
        "x-forwarded-client-cert", parse_trusted_proxies("127.0.0.1, ::1"), SOURCES
    )
    with serving(proxy, None, host) as target:
        assert f"proxy {ALICE_ID}" == whoami(target, None, SPOOFED)


@pytest.mark.parametrize(
    "metadata",
    [SPOOFED, (("x-pkggov-principal", "alice"),)],
    ids=["spoofed-xfcc", "dev-header"],
)
def test_headers_from_an_untrusted_peer_are_unauthenticated(
    metadata: Sequence[tuple[str, str]],
) -> None:
    """A forged XFCC (or a dev header) from a peer that is not a trusted proxy is refused."""
    proxy = ProxyAuthenticator(
        "x-forwarded-client-cert", parse_trusted_proxies("10.0.0.0/8"), SOURCES
    )
    with serving(proxy, None) as target, pytest.raises(grpc.RpcError) as caught:
        whoami(target, None, metadata)
    assert grpc.StatusCode.UNAUTHENTICATED == cast(grpc.Call, caught.value).code()


def test_dev_mode_takes_the_header() -> None:
    """Only a development server reads the development header."""
    with serving(DevAuthenticator("x-pkggov-principal"), None) as target:
        assert "dev alice" == whoami(target, None, (("x-pkggov-principal", " alice "),))


# --- grpcurl with client certificates --------------------------------------------------------


def grpcurl(*args: str, connect_timeout: float = 5) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary; never raises on a non-zero exit."""
    return subprocess.run(
        [str(GRPCURL), "-max-time", "10", "-connect-timeout", str(connect_timeout), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def tls_flags(pki: TestPKI, client: CertFiles | None) -> list[str]:
    flags = ["-cacert", str(pki.ca_pem)]
    if client is not None:
        flags += ["-cert", str(client.cert), "-key", str(client.key)]
    return flags


def test_grpcurl_lists_services_with_a_client_certificate(pki: TestPKI, mtls_server: str) -> None:
    """Reflection over mTLS: grpcurl -cacert -cert -key ... list."""
    result = grpcurl(*tls_flags(pki, pki.alice), mtls_server, "list")
    assert 0 == result.returncode, result.stderr
    assert {HEALTH, reflection.SERVICE_NAME} <= set(result.stdout.split())


def test_grpcurl_call_is_authenticated_as_the_certificate(pki: TestPKI, mtls_server: str) -> None:
    """A grpcurl call reaches the authenticator with the certificate's SPIFFE ID."""
    result = grpcurl("-v", *tls_flags(pki, pki.ci), mtls_server, f"{HEALTH}/Check")
    assert 0 == result.returncode, result.stderr
    assert f"x-principal: mtls {pki.ci.principal}" in result.stdout
    assert '"status": "SERVING"' in result.stdout


@pytest.mark.parametrize("client", [None, "expired"])
def test_grpcurl_without_a_good_certificate_fails(
    pki: TestPKI, mtls_server: str, client: str | None
) -> None:
    """No certificate, or an expired one: grpcurl cannot even list services.

    With TLS 1.3 the server refuses the client's certificate after the client has finished
    its side of the handshake, so grpc-go may retry until its connect timeout: kept short.
    """
    cert = None if client is None else getattr(pki, client)
    result = grpcurl(*tls_flags(pki, cert), mtls_server, "list", connect_timeout=1)
    assert 0 != result.returncode
    assert "Failed to dial target host" in result.stderr
    assert HEALTH not in result.stdout


# --- scripts/dev_certs.py --------------------------------------------------------------------


def test_dev_certs_script_makes_a_working_pki(tmp_path: Path) -> None:
    """`make certs` output serves mTLS as printed: alice's SPIFFE ID, via grpcurl too."""
    out = tmp_path / "certs"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "dev_certs.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    expected = {f"{n}.{s}" for n in ("ca", "server", "alice", "ci") for s in ("pem", "key")}
    assert expected == {p.name for p in out.iterdir()}
    settings = dict(re.findall(r"PKGGOV_IDENTITY_(\w+)=(\S+)", done.stdout))
    assert {"MODE": "mtls"} | {
        "SERVER_CERT": str(out / "server.pem"),
        "SERVER_KEY": str(out / "server.key"),
        "CLIENT_CA": str(out / "ca.pem"),
    } == settings
    identity = IdentitySettings(
        mode="mtls",
        server_cert=settings["SERVER_CERT"],
        server_key=settings["SERVER_KEY"],
        client_ca=settings["CLIENT_CA"],
    )
    with serving(MtlsAuthenticator(SOURCES), server_credentials(identity)) as target:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(out / "ca.pem").read_bytes(),
            private_key=(out / "alice.key").read_bytes(),
            certificate_chain=(out / "alice.pem").read_bytes(),
        )
        assert "mtls spiffe://pkggov.test/ops/alice" == whoami(target, credentials)
        printed = re.search(r"grpcurl (.*) 127\.0\.0\.1:50051 list", done.stdout)
        assert printed, done.stdout
        result = grpcurl("-v", *printed.group(1).split(), target, f"{HEALTH}/Check")
        assert 0 == result.returncode, result.stderr
        assert "x-principal: mtls spiffe://pkggov.test/ci/builder" not in result.stdout
        assert "x-principal: mtls spiffe://pkggov.test/ops/alice" in result.stdout
