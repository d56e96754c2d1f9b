"""Workload tokens through the real gateway over gRPC: TLS with tokens only (no client
certificate), mTLS with tokens accepted beside certificates (each precedence), development
mode beside the dev header. Every bad token is UNAUTHENTICATED with nothing read, evaluated
or forwarded (the emulator sees no call), and the audit record names issuer and token id."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.adapters.tokens import TokenAuthenticator
from pkggov_gateway.runtime import Gateway
from tests.certs import CertFiles, TestPKI, make_test_pki
from tests.e2e.audit_helpers import audit_event
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    gateway_settings,
    request,
    rich_error,
    running_gateway,
)
from tests.issuers import (
    AUDIENCE,
    JwksServer,
    SigningKey,
    claims,
    forge,
    issuer_entry,
    make_key,
    mint,
    write_issuers,
)

SUB = "repo:acme/widgets:ref:refs/heads/main"
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return make_key("gh-1", reuse=0)


@pytest.fixture(scope="module")
def k8s_key() -> SigningKey:
    return make_key("k8s-1", "ES256")


@pytest.fixture(scope="module")
def github(pki: TestPKI, k1: SigningKey) -> Iterator[JwksServer]:
    """The github issuer's JWKS endpoint (over HTTPS with the test CA)."""
    with JwksServer(pki, [k1]) as server:
        yield server


@pytest.fixture(scope="module")
def k8s(pki: TestPKI, k8s_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(pki, [k8s_key]) as server:
        yield server


def issuers_file(
    directory: Path, pki: TestPKI, github: JwksServer, k8s: JwksServer | None = None, **gh: Any
) -> str:
    """github (and k8s): each issuer is its JWKS server's URL; github's claims and groups."""
    entries = {
        "github": issuer_entry(
            github.issuer,
            **{
                "jwks_uri": github.jwks_uri,
                "ca_file": str(pki.ca_pem),
                "attributes": ["repository", "ref"],
                "groups": [{"group": "ci", "when": {"repository": "acme/widgets"}}],
                **gh,
            },
        )
    }
    if k8s is not None:
        entries["k8s"] = issuer_entry(
            k8s.issuer, jwks_uri=k8s.jwks_uri, ca_file=str(pki.ca_pem), principal="{sub}"
        )
    return str(write_issuers(directory, entries))


def only_identity(pki: TestPKI, issuers: str, **overrides: Any) -> dict[str, Any]:
    """identity.tokens = only: TLS with the server's certificate, no client CA."""
    identity = dataclasses.asdict(pki.identity_settings())
    identity.update(client_ca="", tokens="only", token_issuers=issuers, **overrides)
    return identity


@pytest.fixture(scope="module")
def only_gateway(
    emulator: Emulator,
    _logging: None,
    pki: TestPKI,
    github: JwksServer,
    k8s: JwksServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """tokens = only, issuers github and k8s, tokens of at most 2048 bytes, permit-all policy."""
    issuers = issuers_file(tmp_path_factory.mktemp("issuers"), pki, github, k8s)
    identity = only_identity(pki, issuers, max_token_bytes=2048)
    with running_gateway(gateway_settings(emulator.endpoint_url, identity=identity)) as gateway:
        yield gateway


def tls_stub(
    gateway: Gateway, pki: TestPKI, client: CertFiles | None = None
) -> pb_grpc.PackageGovernanceServiceStub:
    channel = grpc.secure_channel(gateway.address, pki.channel_credentials(client))
    return pb_grpc.PackageGovernanceServiceStub(channel)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def delete(stub: pb_grpc.PackageGovernanceServiceStub, metadata: Metadata) -> Any:
    return stub.DeletePackageVersions(request(), timeout=10, metadata=metadata)


def refused(stub: pb_grpc.PackageGovernanceServiceStub, metadata: Metadata) -> RichError:
    try:
        delete(stub, metadata)
    except grpc.RpcError as error:
        return rich_error(error)
    raise AssertionError("the call succeeded but was expected to fail")


def recorded_principal(gateway: Gateway, event_id: str) -> Any:
    entry = audit_event(gateway, event_id).head
    return entry.body["principal"]


# --- tokens only: TLS without client certificates --------------------------------------------


def test_a_good_token_deletes_and_the_audit_names_issuer_and_token(
    only_gateway: Gateway, pki: TestPKI, github: JwksServer, k1: SigningKey, emulator: Emulator
) -> None:
    token = mint(
        k1,
        claims(github.issuer, repository="acme/widgets", ref="refs/heads/main", jti="run-7"),
    )
    response = delete(tls_stub(only_gateway, pki), bearer(token))
    assert ["1.0.0"] == list(response.successful_versions)
    assert 1 == len(emulator.calls("DeletePackageVersions"))
    principal = recorded_principal(only_gateway, response.audit_event_id)
    assert {
        "id": f"github:{SUB}",
        "auth_method": "token",
        "issuer": "github",
        "token_id": "run-7",
        "claims": {"repository": "acme/widgets", "ref": "refs/heads/main"},
        "claim_groups": ["ci"],
    } == principal
    record = json.dumps(dict(audit_event(only_gateway, response.audit_event_id).head.body))
    assert token not in record


def test_a_client_certificate_is_not_asked_for_and_does_not_identify(
    only_gateway: Gateway, pki: TestPKI, emulator: Emulator
) -> None:
    """tokens = only asks for no certificate: alice's is not even sent, so no token: refused."""
    error = refused(tls_stub(only_gateway, pki, pki.alice), ())
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert "no bearer token" in error.message
    assert [] == emulator.calls()


def _attacks() -> dict[str, Callable[[SigningKey, SigningKey, str, str], Metadata]]:
    """Each bad call's metadata from (github's key, k8s's key, github's and k8s's issuer)."""
    hour = 3600

    def lifetime(key: SigningKey, iss: str, seconds: int) -> Metadata:
        return bearer(mint(key, claims(iss, lifetime=seconds)))

    def without(claim: str) -> Callable[[SigningKey, SigningKey, str, str], Metadata]:
        def make(gh: SigningKey, _: SigningKey, iss: str, __: str) -> Metadata:
            payload = claims(iss)
            del payload[claim]
            return bearer(mint(gh, payload))

        return make

    return {
        "alg none": lambda gh, _, iss, __: bearer(
            forge({"alg": "none", "kid": gh.kid}, claims(iss), None) + "AAAA"
        ),
        "HS256 with the public key as secret": lambda gh, _, iss, __: bearer(
            forge({"alg": "HS256", "kid": gh.kid}, claims(iss), json.dumps(gh.jwk).encode())
        ),
        "unknown kid": lambda gh, _, iss, __: bearer(mint(gh, claims(iss), kid="gh-999")),
        "a known kid of another issuer": lambda _, k8s, iss, __: bearer(
            mint(k8s, claims(iss), alg="ES256")
        ),
        "wrong issuer": lambda gh, _, __, ___: bearer(mint(gh, claims("https://evil.test"))),
        "an issuer not configured": lambda _, k8s, __, ___: bearer(
            mint(k8s, claims("https://gitlab.example"))
        ),
        "wrong audience": lambda gh, _, iss, __: bearer(mint(gh, claims(iss, aud="https://x"))),
        "missing audience": without("aud"),
        "missing exp": without("exp"),
        "expired": lambda gh, _, iss, __: bearer(
            mint(gh, claims(iss, issued=time.time() - 600, lifetime=300))
        ),
        "not yet valid": lambda gh, _, iss, __: bearer(
            mint(gh, claims(iss, nbf=int(time.time()) + 600))
        ),
        "lifetime above the maximum": lambda gh, _, iss, __: lifetime(gh, iss, 2 * hour),
        "the wrong metadata key": lambda gh, _, iss, __: (
            ("x-token", f"Bearer {mint(gh, claims(iss))}"),
        ),
        "a malformed Bearer prefix": lambda gh, _, iss, __: (
            ("authorization", f"bearer {mint(gh, claims(iss))}"),
        ),
        "no scheme": lambda gh, _, iss, __: (("authorization", mint(gh, claims(iss))),),
        "oversized": lambda gh, _, iss, __: bearer(mint(gh, claims(iss, pad="x" * 2100))),
        "two tokens": lambda gh, _, iss, __: (*bearer(mint(gh, claims(iss))),) * 2,
        "the dev header": lambda _, __, ___, ____: ((PRINCIPAL_KEY, "alice"),),
    }


ATTACKS = _attacks()
REASONS = {
    "alg none": "not 'none'",
    "HS256 with the public key as secret": "not 'HS256'",
    "unknown kid": "has no signing key 'gh-999'",
    "a known kid of another issuer": "issuer github has no signing key 'k8s-1'",
    "wrong issuer": "is not one this gateway trusts",
    "an issuer not configured": "is not one this gateway trusts",
    "wrong audience": "is not for this gateway",
    "missing audience": "has no aud claim",
    "missing exp": "has no exp claim",
    "expired": "has expired",
    "not yet valid": "is not valid yet",
    "lifetime above the maximum": "more than its max_lifetime_seconds",
    "the wrong metadata key": "no bearer token",
    "a malformed Bearer prefix": "exactly 'Bearer <token>'",
    "no scheme": "exactly 'Bearer <token>'",
    "oversized": "more than identity.max_token_bytes (2048)",
    "two tokens": "is repeated",
    "the dev header": "no bearer token",
}
"""What each attack's UNAUTHENTICATED message says."""


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_tokens_are_unauthenticated_and_nothing_is_read_or_sent(
    only_gateway: Gateway,
    pki: TestPKI,
    *,
    github: JwksServer,
    k8s: JwksServer,
    k1: SigningKey,
    k8s_key: SigningKey,
    emulator: Emulator,
    attack: str,
) -> None:
    metadata = ATTACKS[attack](k1, k8s_key, github.issuer, k8s.issuer)
    error = refused(tls_stub(only_gateway, pki), metadata)
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert REASONS[attack] in error.message
    assert [] == emulator.calls()  # not even the versions' lookup
    event = audit_event(only_gateway, error.metadata["audit_event_id"])
    assert ["outcome"] == [entry.kind.value for entry in event.entries]
    assert "unauthenticated" == event.head.body["decision"]
    assert event.head.body["principal"] is None
    for _, value in metadata:
        token = value.removeprefix("Bearer ")
        if len(token) > 20:
            assert token not in error.message
            assert token not in json.dumps(dict(event.head.body))


def test_the_jwks_down_at_start_up_then_up(
    make_gateway: GatewayFactory,
    pki: TestPKI,
    k1: SigningKey,
    emulator: Emulator,
    tmp_path: Path,
) -> None:
    """The gateway starts with its issuer's endpoint down; token calls fail closed; once the
    endpoint is up they succeed, without a restart."""
    with JwksServer(pki, [k1]) as jwks:
        jwks.down = True
        issuers = issuers_file(tmp_path, pki, jwks, jwks_refresh_seconds=0.3)
        with make_gateway(identity=only_identity(pki, issuers)) as gateway:
            stub = tls_stub(gateway, pki)
            token = bearer(mint(k1, claims(jwks.issuer)))
            error = refused(stub, token)
            assert grpc.StatusCode.UNAUTHENTICATED == error.code
            assert "signing keys are not available" in error.message
            assert [] == emulator.calls()
            jwks.down = False
            time.sleep(0.35)
            assert ["1.0.0"] == list(delete(stub, token).successful_versions)


# --- mTLS with tokens accepted beside certificates -------------------------------------------


@pytest.mark.parametrize("precedence", ["certificate", "token"])
def test_certificate_and_token_each_precedence(
    make_gateway: GatewayFactory,
    pki: TestPKI,
    *,
    github: JwksServer,
    k1: SigningKey,
    emulator: Emulator,
    tmp_path: Path,
    precedence: str,
) -> None:
    """alice's certificate (release-admins under the shipped policy) and a github token in no
    group: with certificate precedence alice deletes; with token precedence the token's
    principal is denied by policy (and is recorded as the caller)."""
    identity = dataclasses.asdict(pki.identity_settings())
    identity.update(
        tokens="accept",
        token_issuers=issuers_file(tmp_path, pki, github, groups=[]),
        token_precedence=precedence,
    )
    with make_gateway(identity=identity, policy={}) as gateway:
        stub = tls_stub(gateway, pki, pki.alice)
        token = bearer(mint(k1, claims(github.issuer)))
        if precedence == "certificate":
            response = delete(stub, token)
            assert ["1.0.0"] == list(response.successful_versions)
            assert pki.alice.principal == recorded_principal(gateway, response.audit_event_id)["id"]
        else:
            error = refused(stub, token)
            assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (
                error.code,
                error.reason,
            )
            principal = recorded_principal(gateway, error.metadata["audit_event_id"])
            assert (f"github:{SUB}", "token") == (principal["id"], principal["auth_method"])
            assert [] == emulator.calls("DeletePackageVersions")
        # a bad token fails the call whichever identity would win
        bad = refused(stub, bearer(mint(k1, claims(github.issuer, aud="https://x"))))
        assert grpc.StatusCode.UNAUTHENTICATED == bad.code
        garbage = refused(stub, (("authorization", "Bearer x.y.z"),))
        assert grpc.StatusCode.UNAUTHENTICATED == garbage.code


def test_mtls_with_tokens_still_requires_a_client_certificate(
    make_gateway: GatewayFactory,
    pki: TestPKI,
    *,
    github: JwksServer,
    k1: SigningKey,
    emulator: Emulator,
    tmp_path: Path,
) -> None:
    """grpcio can require a client certificate or not ask for one, nothing in between: in
    mTLS mode with tokens accepted, a caller without a certificate fails the handshake (a
    token-only caller needs identity.tokens = only)."""
    identity = dataclasses.asdict(pki.identity_settings())
    identity.update(tokens="accept", token_issuers=issuers_file(tmp_path, pki, github))
    with make_gateway(identity=identity) as gateway:
        with pytest.raises(grpc.RpcError) as caught:
            delete(tls_stub(gateway, pki), bearer(mint(k1, claims(github.issuer))))
        assert grpc.StatusCode.UNAVAILABLE == caught.value.code()
        assert [] == emulator.calls()
        response = delete(tls_stub(gateway, pki, pki.ci), ())
        assert pki.ci.principal == recorded_principal(gateway, response.audit_event_id)["id"]


# --- development: a token beside the dev header, plaintext on loopback -----------------------


def test_development_accepts_a_token_beside_the_dev_header(
    make_gateway: GatewayFactory,
    pki: TestPKI,
    *,
    github: JwksServer,
    k1: SigningKey,
    emulator: Emulator,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps({"keys": [k1.jwk]}))
    issuers = write_issuers(
        tmp_path, {"demo": issuer_entry("https://pkggov.demo", jwks_file="jwks.json")}
    )
    identity = {"tokens": "accept", "token_issuers": str(issuers)}
    with (
        make_gateway(identity=identity) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        stub = pb_grpc.PackageGovernanceServiceStub(channel)
        token = mint(k1, claims("https://pkggov.demo", sub="ci-bot", aud=AUDIENCE))
        response = delete(stub, bearer(token))
        principal = recorded_principal(gateway, response.audit_event_id)
        assert ("demo:ci-bot", "token", "demo") == (
            principal["id"],
            principal["auth_method"],
            principal["issuer"],
        )
        emulator.reset()
        both = ((PRINCIPAL_KEY, "alice"), *bearer(token))
        response = delete(stub, both)
        assert "alice" == recorded_principal(gateway, response.audit_event_id)["id"]
        bad = refused(stub, ((PRINCIPAL_KEY, "alice"), *bearer(token[:-4] + "AAAA")))
        assert grpc.StatusCode.UNAUTHENTICATED == bad.code
        assert "signature does not verify" in bad.message


def test_build_gateway_exposes_the_token_authenticator(
    emulator: Emulator, pki: TestPKI, github: JwksServer, tmp_path: Path
) -> None:
    """What health and the runtime can read: the issuers' key states (loaded at start-up)."""
    from pkggov_gateway.adapters.identity import build_authenticator
    from pkggov_gateway.config import IdentitySettings

    settings = IdentitySettings(**only_identity(pki, issuers_file(tmp_path, pki, github)))
    authenticator = build_authenticator(settings)
    assert isinstance(authenticator, TokenAuthenticator)
    authenticator.verifier.prefetch()
    deadline = time.monotonic() + 5
    while not authenticator.verifier.ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    (state,) = authenticator.verifier.key_states()
    assert ("github", True, ("gh-1",)) == (state.issuer, state.ready, state.kids)
