"""Workload tokens without a network: the issuers file's checks, every way a token is refused
(all UNAUTHENTICATED), the principal's namespace, claims and groups, which identity wins, and
the key set's cache, refresh, outage and rotation rules on a fake clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pkggov_gateway.adapters.identity import DevAuthenticator, MtlsAuthenticator
from pkggov_gateway.adapters.identity import build_authenticator as build
from pkggov_gateway.adapters.jwks import JwksError, KeySet, parse_jwk_set
from pkggov_gateway.adapters.tokens import (
    IssuerConfig,
    TokenAuthenticator,
    TokenVerifier,
    bearer_token,
    load_issuers,
    parse_issuers,
)
from pkggov_gateway.config import ConfigError, IdentitySettings, load_settings
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.ports import NullMetrics
from tests.certs import ALICE_ID, TestPKI, make_test_pki
from tests.issuers import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    forge,
    issuer_entry,
    jwk_set,
    make_key,
    mint,
    write_issuers,
)

PEER = "ipv4:127.0.0.1:5555"
OTHER_ISSUER = "https://kubernetes.default.svc"
NO_CONTEXT: Mapping[str, Sequence[bytes]] = {}


# --- fakes -----------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Source:
    """An issuer's key set in memory: `keys` as published, `down` to fail, `delay` to be slow;
    `fetches` counts the fetches."""

    description = "memory"

    def __init__(self, keys: Sequence[SigningKey] = ()) -> None:
        self.keys = list(keys)
        self.down = False
        self.delay = 0.0
        self.fetches = 0
        self._lock = threading.Lock()

    def fetch(self) -> Mapping[str, Any]:
        with self._lock:
            self.fetches += 1
        time.sleep(self.delay)
        if self.down:
            raise JwksError("HTTP 503 from memory")
        return jwk_set(self.keys)


class Recorded(NullMetrics):
    """Metrics that keep the token results and JWKS fetches."""

    def __init__(self) -> None:
        self.tokens: list[tuple[str, str]] = []
        self.fetches: list[tuple[str, bool, int]] = []

    def token_checked(self, issuer: str, result: str) -> None:
        self.tokens.append((issuer, result))

    def jwks_fetched(self, issuer: str, *, ok: bool, keys: int, usable_seconds: float) -> None:
        self.fetches.append((issuer, ok, keys))


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return make_key("k1", reuse=0)


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return make_key("k2", reuse=1)


@pytest.fixture(scope="module")
def es() -> SigningKey:
    return make_key("es1", "ES256")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    """The other issuer's key."""
    return make_key("other-1", reuse=2)


def issuer(name: str = "github", iss: str = ISSUER, **settings: Any) -> IssuerConfig:
    """One issuer parsed as from the file (keys by URL, never fetched here)."""
    entry = issuer_entry(iss, jwks_uri="https://keys.example/jwks", **settings)
    return parse_issuers({"issuers": {name: entry}})[0]


def verifier(
    configs: Sequence[IssuerConfig],
    sources: Mapping[str, Source],
    *,
    clock: Clock | None = None,
    metrics: Recorded | None = None,
    max_token_bytes: int = 8192,
) -> TokenVerifier:
    """A verifier whose key sets read `sources` (by issuer name) on `clock`."""
    key_sets = {
        config.name: KeySet(
            config.name,
            sources[config.name],
            cache_seconds=config.jwks_cache_seconds,
            refresh_seconds=config.jwks_refresh_seconds,
            metrics=metrics,
            monotonic=clock or time.monotonic,
        )
        for config in configs
    }
    return TokenVerifier(
        configs, key_sets=key_sets, metrics=metrics, max_token_bytes=max_token_bytes
    )


@pytest.fixture
def metrics() -> Recorded:
    return Recorded()


@pytest.fixture
def github(
    k1: SigningKey, es: SigningKey, other_key: SigningKey, metrics: Recorded
) -> TokenVerifier:
    """Two issuers: github (keys k1 and es1) and k8s (its own key)."""
    configs = [
        issuer(
            attributes=["repository", "ref", "repository_id"],
            groups=[
                {"group": "ci", "when": {"repository": "acme/widgets", "ref": "refs/heads/main"}},
                {"group": "releases", "when": {"ref": ["refs/tags/v1", "refs/tags/v2"]}},
            ],
        ),
        issuer("k8s", OTHER_ISSUER),
    ]
    return verifier(
        configs,
        {"github": Source([k1, es]), "k8s": Source([other_key])},
        metrics=metrics,
    )


def refused(verify: TokenVerifier, token: str) -> str:
    """The message of the UNAUTHENTICATED error verifying `token` must raise."""
    with pytest.raises(UnauthenticatedError) as caught:
        verify.verify(token, PEER)
    if len(token) > 8:
        assert token not in caught.value.message
    return caught.value.message


# --- good tokens -----------------------------------------------------------------------------


def test_a_good_token_names_its_issuer_subject_claims_and_groups(
    github: TokenVerifier, k1: SigningKey, metrics: Recorded
) -> None:
    """id = issuer name + ":" + the rendered principal; the configured string claims become
    attributes (others are left out), matching groups are listed, jti is the token id."""
    payload = claims(
        repository="acme/widgets",
        ref="refs/heads/main",
        repository_id=12345,  # not a string: not copied
        environment="prod",  # not configured: not copied
        jti="run-1-attempt-1",
    )
    principal = github.verify(mint(k1, payload), PEER)
    expected = Principal(
        id="github:repo:acme/widgets:ref:refs/heads/main",
        method=AuthMethod.TOKEN,
        peer=PEER,
        issuer="github",
        token_id="run-1-attempt-1",
        attributes={"repository": "acme/widgets", "ref": "refs/heads/main"},
        claim_groups=("ci",),
    )
    assert expected == principal
    assert [("github", "ok")] == metrics.tokens


def test_group_values_may_be_a_list_and_all_conditions_must_hold(
    github: TokenVerifier, k1: SigningKey
) -> None:
    """A tag ref is in "releases"; another repository on main is not in "ci"."""
    tag = github.verify(mint(k1, claims(repository="acme/widgets", ref="refs/tags/v2")), PEER)
    assert ("releases",) == tag.claim_groups
    fork = github.verify(mint(k1, claims(repository="evil/widgets", ref="refs/heads/main")), PEER)
    assert () == fork.claim_groups


def test_without_jti_the_token_id_is_a_hash_never_the_token(
    github: TokenVerifier, k1: SigningKey
) -> None:
    token = mint(k1, claims())
    principal = github.verify(token, PEER)
    assert principal.token_id is not None
    assert principal.token_id.startswith("sha256:")
    assert 7 + 32 == len(principal.token_id)
    assert principal.token_id[7:] not in token


def test_es256_and_the_principal_template(es: SigningKey) -> None:
    """Any allowed algorithm; the template joins several string claims."""
    config = issuer(principal="{repository}@{ref}")
    verify = verifier([config], {"github": Source([es])})
    token = mint(es, claims(repository="acme/widgets", ref="refs/heads/main"))
    assert "github:acme/widgets@refs/heads/main" == verify.verify(token, PEER).id


def test_a_token_without_iat_is_measured_from_nbf(github: TokenVerifier, k1: SigningKey) -> None:
    now = int(time.time())
    payload = {**claims(), "nbf": now - 10}
    del payload["iat"]
    assert github.verify(mint(k1, payload), PEER).issuer == "github"


# --- bad tokens: every one UNAUTHENTICATED ---------------------------------------------------


def test_alg_none_is_refused(github: TokenVerifier) -> None:
    """Unsigned (empty signature), and with a signature part of some bytes."""
    unsigned = forge({"alg": "none", "typ": "JWT", "kid": "k1"}, claims(), None)
    assert "not a signed JWT" in refused(github, unsigned)
    padded = unsigned + "AAAA"
    assert "not 'none'" in refused(github, padded)


def test_hs256_signed_with_the_issuers_public_key_is_refused(
    github: TokenVerifier, k1: SigningKey
) -> None:
    """The classic algorithm confusion: the public key (as JWK JSON, or PEM) as HMAC secret."""
    from cryptography.hazmat.primitives import serialization

    pem = k1.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (json.dumps(k1.jwk).encode(), pem):
        token = forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(), secret)
        assert "must be signed with RS256, ES256, not 'HS256'" in refused(github, token)


def test_unknown_kid_and_missing_kid_are_refused(github: TokenVerifier, k1: SigningKey) -> None:
    assert "has no signing key 'nope'" in refused(github, mint(k1, claims(), kid="nope"))
    token = forge({"alg": "RS256"}, claims(), b"x")
    assert "names no key (kid)" in refused(github, token)


def test_a_known_kid_of_another_issuer_is_refused(
    github: TokenVerifier, other_key: SigningKey
) -> None:
    """The kid is looked up among the token's issuer's keys only."""
    token = mint(other_key, claims(iss=ISSUER))
    assert "issuer github has no signing key 'other-1'" in refused(github, token)


def test_a_kid_named_like_another_issuers_key_does_not_verify(
    github: TokenVerifier, other_key: SigningKey
) -> None:
    """The other issuer signs with its key under github's kid: github's k1 refuses it."""
    token = mint(other_key, claims(iss=ISSUER), kid="k1")
    assert "signature does not verify" in refused(github, token)


def test_a_token_of_one_issuer_cannot_claim_another(
    github: TokenVerifier, other_key: SigningKey
) -> None:
    """k8s's key signing a token that says it is github's: github's keys decide, and refuse."""
    token = mint(other_key, claims(iss=ISSUER, sub="system:serviceaccount:ci:builder"))
    assert "issuer github has no signing key" in refused(github, token)


def test_wrong_issuer_is_refused(github: TokenVerifier, k1: SigningKey) -> None:
    message = refused(github, mint(k1, claims(iss="https://evil.example")))
    assert "issuer ('https://evil.example') is not one this gateway trusts" in message
    no_iss = claims()
    del no_iss["iss"]
    assert "not one this gateway trusts" in refused(github, mint(k1, no_iss))


def test_a_token_for_issuer_a_is_refused_where_only_b_is_configured(
    k1: SigningKey, other_key: SigningKey
) -> None:
    only_k8s = verifier([issuer("k8s", OTHER_ISSUER)], {"k8s": Source([other_key])})
    assert "not one this gateway trusts" in refused(only_k8s, mint(k1, claims()))


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ("https://other.example", "is not for this gateway"),
        (["https://a.example", "https://b.example"], "is not for this gateway"),
        (None, "has no aud claim"),
        ([], "has no aud claim"),
    ],
)
def test_wrong_or_missing_audience_is_refused(
    github: TokenVerifier, k1: SigningKey, audience: Any, expected: str
) -> None:
    payload = claims()
    if audience is None:
        del payload["aud"]
    else:
        payload["aud"] = audience
    assert expected in refused(github, mint(k1, payload))


def test_one_of_several_audiences_is_enough(github: TokenVerifier, k1: SigningKey) -> None:
    token = mint(k1, claims(aud=["https://other.example", AUDIENCE]))
    assert "github" == github.verify(token, PEER).issuer


def test_expired_is_refused_beyond_the_clock_skew(github: TokenVerifier, k1: SigningKey) -> None:
    now = time.time()
    assert "has expired" in refused(github, mint(k1, claims(issued=now - 400, lifetime=300)))
    # 20 s past exp, within the 30 s skew: still accepted
    assert github.verify(mint(k1, claims(issued=now - 320, lifetime=300)), PEER)


def test_not_yet_valid_is_refused(github: TokenVerifier, k1: SigningKey) -> None:
    now = int(time.time())
    assert "not valid yet" in refused(github, mint(k1, claims(nbf=now + 600)))
    assert "not valid yet" in refused(github, mint(k1, claims(issued=now + 600)))


def test_lifetime_above_the_maximum_is_refused(github: TokenVerifier, k1: SigningKey) -> None:
    message = refused(github, mint(k1, claims(lifetime=3601)))
    assert "lives 3601s, more than its max_lifetime_seconds (3600)" in message
    assert github.verify(mint(k1, claims(lifetime=3600)), PEER)


def test_missing_exp_sub_or_iat_and_nbf_is_refused(github: TokenVerifier, k1: SigningKey) -> None:
    no_exp = claims()
    del no_exp["exp"]
    assert "has no exp claim" in refused(github, mint(k1, no_exp))
    assert "has no sub claim" in refused(github, mint(k1, claims(sub=None)))
    no_start = claims()
    del no_start["iat"]
    assert "neither iat nor nbf" in refused(github, mint(k1, no_start))


def test_non_numeric_times_are_refused(github: TokenVerifier, k1: SigningKey) -> None:
    assert "invalid" in refused(github, mint(k1, claims(exp="soon")))


def test_a_principal_claim_that_is_missing_or_not_a_string_is_refused(k1: SigningKey) -> None:
    verify = verifier([issuer(principal="{repository}")], {"github": Source([k1])})
    assert "no string claim repository" in refused(verify, mint(k1, claims()))
    assert "no string claim repository" in refused(verify, mint(k1, claims(repository=7)))
    assert "printable" in refused(verify, mint(k1, claims(repository="a\nb")))


def test_an_oversized_token_is_refused_before_it_is_read(k1: SigningKey) -> None:
    verify = verifier([issuer()], {"github": Source([k1])}, max_token_bytes=1024)
    token = mint(k1, claims(padding="x" * 1000))
    assert f"is {len(token)} bytes, more than identity.max_token_bytes (1024)" in refused(
        verify, token
    )


def test_crit_headers_are_refused(github: TokenVerifier, k1: SigningKey) -> None:
    token = mint(k1, claims(), headers={"crit": ["exp"], "exp": 1})
    message = refused(github, token)
    assert "crit" in message or "readable" in message


@pytest.mark.parametrize("text", ["", "x", "a.b", "a.b.c.d", "a.b.", "ä.b.c", "a b.c.d"])
def test_garbage_is_refused(github: TokenVerifier, text: str) -> None:
    assert refused(github, text)


def test_a_small_rsa_key_is_refused(metrics: Recorded) -> None:
    """PyJWT's minimum key lengths are enforced (RSA 2048)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm
    from jwt.warnings import InsecureKeyLengthWarning

    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "kid": "small"}
    small = SigningKey("small", "RS256", private, jwk)
    verify = verifier([issuer()], {"github": Source([small])})
    with pytest.warns(InsecureKeyLengthWarning):
        token = mint(small, claims())
    assert "cannot be verified with its key" in refused(verify, token)


def test_refusals_are_counted_by_issuer_and_reason(
    github: TokenVerifier, k1: SigningKey, metrics: Recorded
) -> None:
    refused(github, mint(k1, claims(iss="https://evil.example")))
    refused(github, mint(k1, claims(lifetime=7200)))
    refused(github, mint(k1, claims(), kid="nope"))
    expected = [("-", "unknown_issuer"), ("github", "lifetime"), ("github", "unknown_key")]
    assert expected == metrics.tokens


# --- the namespace: a token never passes for a certificate or another issuer -----------------


@pytest.mark.parametrize("name", ["spiffe", "dns", "cn", "dev", "pkggov"])
def test_issuer_names_of_other_namespaces_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"issuer name '{name}' is reserved"):
        issuer(name)


def test_a_token_principal_never_equals_a_certificate_principal(k1: SigningKey) -> None:
    """A subject spelled like a SPIFFE ID, a DNS or CN principal stays in its issuer's
    namespace."""
    verify = verifier([issuer("spire")], {"spire": Source([k1])})
    for sub in (ALICE_ID, "dns:alice.pkggov.test", "cn:alice", "//pkggov.test/ops/alice"):
        principal = verify.verify(mint(k1, claims(sub=sub)), PEER)
        assert f"spire:{sub}" == principal.id
        assert principal.id not in {ALICE_ID, sub}
        assert not principal.id.startswith(("spiffe:", "dns:", "cn:", "pkggov:"))


# --- the bearer metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["bearer abc.def.ghi", "Bearer", "Bearerabc.def.ghi", "Token abc.def.ghi", "abc.def.ghi"],
)
def test_anything_but_exactly_bearer_is_refused(value: str) -> None:
    with pytest.raises(UnauthenticatedError, match="must be exactly 'Bearer <token>'"):
        bearer_token({"authorization": value}, "authorization")


def test_a_repeated_authorization_key_is_refused() -> None:
    with pytest.raises(UnauthenticatedError, match="repeated"):
        bearer_token({"authorization": "Bearer a.b.c, Bearer d.e.f"}, "authorization")


def test_bearer_token_reads_the_token() -> None:
    assert "a.b.c" == bearer_token({"authorization": "Bearer a.b.c"}, "authorization")
    assert bearer_token({"x-token": "Bearer a.b.c"}, "authorization") is None


# --- the authenticator: only, accept, precedence ---------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def only(verify: TokenVerifier) -> TokenAuthenticator:
    return TokenAuthenticator(verify)


def test_only_requires_a_token_in_the_configured_key(
    github: TokenVerifier, k1: SigningKey, metrics: Recorded
) -> None:
    """No token, or a token under another key (even a good one): UNAUTHENTICATED."""
    auth = only(github)
    token = mint(k1, claims())
    for metadata in ({}, {"x-token": f"Bearer {token}"}, {"x-pkggov-principal": "alice"}):
        with pytest.raises(UnauthenticatedError, match="no bearer token"):
            auth.authenticate(metadata, PEER, NO_CONTEXT)
    with pytest.raises(UnauthenticatedError, match="exactly 'Bearer <token>'"):
        auth.authenticate({"authorization": f"bearer {token}"}, PEER, NO_CONTEXT)
    principal = auth.authenticate({"authorization": f"Bearer {token}"}, PEER, NO_CONTEXT)
    assert AuthMethod.TOKEN == principal.method
    assert [("-", "missing")] * 3 + [("-", "malformed"), ("github", "ok")] == metrics.tokens


def test_a_custom_metadata_key(github: TokenVerifier, k1: SigningKey) -> None:
    auth = TokenAuthenticator(github, metadata_key="X-Workload-Token")
    token = mint(k1, claims())
    assert auth.authenticate({"x-workload-token": f"Bearer {token}"}, PEER, NO_CONTEXT)
    with pytest.raises(UnauthenticatedError, match="no bearer token"):
        auth.authenticate({"authorization": f"Bearer {token}"}, PEER, NO_CONTEXT)


@pytest.mark.parametrize("precedence", ["certificate", "token"])
def test_certificate_and_token_precedence(
    github: TokenVerifier, k1: SigningKey, pki: TestPKI, precedence: str
) -> None:
    """Both present: the precedence decides; either alone identifies the call."""
    mtls = MtlsAuthenticator(("spiffe", "dns", "cn"))
    auth = TokenAuthenticator(
        github, base=mtls, base_presented=mtls.presented, precedence=precedence
    )
    cert = {"x509_pem_cert": [pki.alice.cert_pem]}
    token = {"authorization": f"Bearer {mint(k1, claims())}"}
    both = auth.authenticate(token, PEER, cert)
    expected = ALICE_ID if precedence == "certificate" else "github:" + claims()["sub"]
    assert expected == both.id
    assert (AuthMethod.MTLS if precedence == "certificate" else AuthMethod.TOKEN) == both.method
    assert ALICE_ID == auth.authenticate({}, PEER, cert).id
    assert AuthMethod.TOKEN == auth.authenticate(token, PEER, NO_CONTEXT).method
    with pytest.raises(UnauthenticatedError, match="no client certificate"):
        auth.authenticate({}, PEER, NO_CONTEXT)


@pytest.mark.parametrize("precedence", ["certificate", "token"])
def test_a_bad_token_fails_the_call_whoever_would_win(
    github: TokenVerifier, k1: SigningKey, pki: TestPKI, precedence: str
) -> None:
    mtls = MtlsAuthenticator(("spiffe", "dns", "cn"))
    auth = TokenAuthenticator(
        github, base=mtls, base_presented=mtls.presented, precedence=precedence
    )
    cert = {"x509_pem_cert": [pki.alice.cert_pem]}
    for value in (f"Bearer {mint(k1, claims(lifetime=-100))}", "Basic YWxpY2U6eA=="):
        with pytest.raises(UnauthenticatedError):
            auth.authenticate({"authorization": value}, PEER, cert)


def test_dev_header_beside_a_token(github: TokenVerifier, k1: SigningKey) -> None:
    """Development mode with tokens = accept: the dev header is the mode's own identity."""
    dev = DevAuthenticator("x-pkggov-principal")
    auth = TokenAuthenticator(github, base=dev, base_presented=dev.presented)
    token = f"Bearer {mint(k1, claims())}"
    assert "alice" == auth.authenticate({"x-pkggov-principal": "alice"}, PEER, NO_CONTEXT).id
    both = {"x-pkggov-principal": "alice", "authorization": token}
    assert "alice" == auth.authenticate(both, PEER, NO_CONTEXT).id
    assert auth.authenticate({"authorization": token}, PEER, NO_CONTEXT).id.startswith("github:")


# --- build_authenticator and the settings ----------------------------------------------------


def test_build_authenticator_with_tokens(tmp_path: Path, k1: SigningKey, pki: TestPKI) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwk_set([k1])))
    path = write_issuers(tmp_path, {"demo": issuer_entry(jwks_file="jwks.json")})
    dev = IdentitySettings(mode="dev", tokens="accept", token_issuers=str(path))
    auth = build(dev)
    assert isinstance(auth, TokenAuthenticator)
    token = f"Bearer {mint(k1, claims())}"
    assert (
        "demo:" + claims()["sub"]
        == auth.authenticate({"authorization": token}, PEER, NO_CONTEXT).id
    )
    assert [issuer_state.issuer for issuer_state in auth.verifier.key_states()] == ["demo"]
    mtls = pki.identity_settings(tokens="accept", token_issuers=str(path))
    with pytest.raises(ValueError, match="jwks_file is for development only"):
        build(mtls)
    assert not isinstance(build(pki.identity_settings()), TokenAuthenticator)


MTLS = {
    "PKGGOV_IDENTITY_SERVER_CERT": "server.pem",
    "PKGGOV_IDENTITY_SERVER_KEY": "server.key",
    "PKGGOV_IDENTITY_CLIENT_CA": "ca.pem",
}


@pytest.mark.parametrize(
    ("environ", "dev", "message"),
    [
        ({**MTLS, "PKGGOV_IDENTITY_TOKENS": "accept"}, False, "needs identity.token_issuers"),
        ({**MTLS, "PKGGOV_IDENTITY_TOKENS": "yes"}, False, "identity.tokens: expected one of"),
        (
            {**MTLS, "PKGGOV_IDENTITY_TOKEN_PRECEDENCE": "newest"},
            False,
            "identity.token_precedence: expected one of",
        ),
        (
            {
                "PKGGOV_IDENTITY_MODE": "proxy",
                "PKGGOV_IDENTITY_TRUSTED_PROXIES": "10.0.0.1",
                "PKGGOV_IDENTITY_TOKENS": "accept",
                "PKGGOV_IDENTITY_TOKEN_ISSUERS": "i.yaml",
            },
            False,
            "not supported with identity.mode = proxy",
        ),
        (
            {"PKGGOV_IDENTITY_TOKENS": "only", "PKGGOV_IDENTITY_TOKEN_ISSUERS": "i.yaml"},
            True,
            "identity.tokens = only needs identity.mode = mtls",
        ),
        (
            {**MTLS, "PKGGOV_IDENTITY_TOKENS": "only", "PKGGOV_IDENTITY_TOKEN_ISSUERS": "i.yaml"},
            False,
            "identity.client_ca is not used with identity.tokens = only",
        ),
        (
            {
                **MTLS,
                "PKGGOV_IDENTITY_TOKENS": "accept",
                "PKGGOV_IDENTITY_TOKEN_ISSUERS": "i.yaml",
                "PKGGOV_IDENTITY_TOKEN_METADATA_KEY": "x-pkggov-principal",
            },
            False,
            "token_metadata_key must differ from identity.dev_metadata_key",
        ),
        (
            {**MTLS, "PKGGOV_IDENTITY_TOKEN_METADATA_KEY": "token-bin"},
            False,
            "identity.token_metadata_key: 'token-bin' names a binary value",
        ),
        ({**MTLS, "PKGGOV_IDENTITY_MAX_TOKEN_BYTES": "0"}, False, "expected a positive integer"),
        ({**MTLS, "PKGGOV_IDENTITY_MAX_TOKEN_BYTES": "70000"}, False, "at most 65,536"),
    ],
)
def test_token_settings_are_checked(environ: dict[str, str], dev: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, environ, dev=dev)


def test_tokens_only_needs_no_client_ca_and_dev_may_accept() -> None:
    only_env = {
        "PKGGOV_IDENTITY_SERVER_CERT": "server.pem",
        "PKGGOV_IDENTITY_SERVER_KEY": "server.key",
        "PKGGOV_IDENTITY_TOKENS": "only",
        "PKGGOV_IDENTITY_TOKEN_ISSUERS": "issuers.yaml",
    }
    assert "only" == load_settings(None, only_env).identity.tokens
    dev_env = {"PKGGOV_IDENTITY_TOKENS": "accept", "PKGGOV_IDENTITY_TOKEN_ISSUERS": "i.yaml"}
    identity = load_settings(None, dev_env, dev=True).identity
    assert ("dev", "accept", "certificate") == (
        identity.mode,
        identity.tokens,
        identity.token_precedence,
    )


# --- the issuers file ------------------------------------------------------------------------


def test_defaults_of_an_issuer() -> None:
    config = issuer()
    assert (
        ("RS256", "ES256"),
        30.0,
        3600.0,
        "{sub}",
        (),
        (),
        300.0,
        30.0,
    ) == (
        config.algorithms,
        config.clock_skew_seconds,
        config.max_lifetime_seconds,
        config.principal,
        config.attributes,
        config.groups,
        config.jwks_cache_seconds,
        config.jwks_refresh_seconds,
    )
    bare = parse_issuers(
        {"issuers": {"x": {"issuer": ISSUER, "discovery": True, "audiences": [AUDIENCE]}}}
    )[0]
    assert ("RS256",) == bare.algorithms


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = issuer_entry(jwks_uri="https://keys.example/jwks")
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping with one key, 'issuers'"),
        ({"issuers": {}, "extra": 1}, "expected a mapping with one key, 'issuers'"),
        ({"issuers": {}}, "at least one issuer"),
        ({"issuers": {"GitHub": _entry()}}, "issuer name 'GitHub' must be"),
        ({"issuers": {"a:b": _entry()}}, "issuer name 'a:b' must be"),
        ({"issuers": {"gh": "x"}}, "issuer gh: expected a mapping"),
        ({"issuers": {"gh": _entry(audience=["x"])}}, "issuer gh: unknown key"),
        ({"issuers": {"gh": _entry(issuer=None)}}, "issuer gh: issuer .* is required"),
        ({"issuers": {"gh": _entry(issuer=7)}}, "issuer gh: issuer must be a string"),
        ({"issuers": {"gh": _entry(jwks_uri=None)}}, "issuer gh: give exactly one of"),
        (
            {"issuers": {"gh": _entry(discovery=True)}},
            r"give exactly one of .* \(got jwks_uri, discovery\)",
        ),
        ({"issuers": {"gh": _entry(discovery="yes")}}, "discovery must be true or false"),
        ({"issuers": {"gh": _entry(jwks_uri="http://keys/jwks")}}, "must be an https:// URL"),
        (
            {"issuers": {"gh": _entry(jwks_uri=None, issuer="http://x", discovery=True)}},
            "discovery needs an https:// issuer",
        ),
        (
            {"issuers": {"gh": _entry(jwks_uri=None, jwks_file="keys.json")}},
            "jwks_file is for development only",
        ),
        ({"issuers": {"gh": _entry(ca_file="nowhere.pem")}}, "ca_file .* is not a readable file"),
        ({"issuers": {"gh": _entry(audiences=None)}}, "audiences must name at least one"),
        ({"issuers": {"gh": _entry(audiences="x")}}, "audiences must be a list"),
        ({"issuers": {"gh": _entry(audiences=["a", "a"])}}, "audiences lists a value twice"),
        ({"issuers": {"gh": _entry(algorithms=[])}}, "algorithms must name at least one"),
        ({"issuers": {"gh": _entry(algorithms=["HS256"])}}, "'HS256' is not allowed .symmetric"),
        ({"issuers": {"gh": _entry(algorithms=["none"])}}, "'none' is not allowed .symmetric"),
        ({"issuers": {"gh": _entry(algorithms=["RS1"])}}, "'RS1' is not allowed; expected"),
        ({"issuers": {"gh": _entry(principal="sub")}}, "names no claim"),
        ({"issuers": {"gh": _entry(principal="{sub")}}, "unmatched brace"),
        ({"issuers": {"gh": _entry(principal="{a.b}")}}, "is not a claim name"),
        ({"issuers": {"gh": _entry(principal="{sub.__class__}")}}, "is not a claim name"),
        ({"issuers": {"gh": _entry(attributes=["kubernetes.io"])}}, "is not a claim name"),
        ({"issuers": {"gh": _entry(groups={"ci": {}})}}, "groups must be a list"),
        ({"issuers": {"gh": _entry(groups=[{"group": "ci"}])}}, r"groups\[0\]: expected exactly"),
        (
            {"issuers": {"gh": _entry(groups=[{"group": "c i", "when": {"a": "b"}}])}},
            "is not a group name",
        ),
        ({"issuers": {"gh": _entry(groups=[{"group": "ci", "when": {}}])}}, "at least one claim"),
        (
            {"issuers": {"gh": _entry(groups=[{"group": "ci", "when": {"ref": 1}}])}},
            r"when\.ref must be a string or a list of strings",
        ),
        ({"issuers": {"gh": _entry(clock_skew_seconds=-1)}}, "clock_skew_seconds must be from 0"),
        ({"issuers": {"gh": _entry(clock_skew_seconds=301)}}, "at most 300"),
        ({"issuers": {"gh": _entry(max_lifetime_seconds=0)}}, "max_lifetime_seconds must be"),
        ({"issuers": {"gh": _entry(max_lifetime_seconds="1h")}}, "must be a number"),
        ({"issuers": {"gh": _entry(jwks_cache_seconds=True)}}, "must be a number"),
        (
            {"issuers": {"gh": _entry(jwks_cache_seconds=10, jwks_refresh_seconds=20)}},
            r"jwks_refresh_seconds \(20\) must not exceed jwks_cache_seconds \(10\)",
        ),
        (
            {"issuers": {"a": _entry(), "b": _entry()}},
            "issuers a and b have the same issuer",
        ),
    ],
)
def test_bad_issuers_files_are_refused_naming_issuer_and_key(document: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_issuers(document)
    assert str(caught.value).startswith("identity.token_issuers: ")


def test_the_shipped_example_loads() -> None:
    """examples/token-issuers.yaml: GitHub Actions, Kubernetes and SPIFFE."""
    example = Path(__file__).resolve().parents[2] / "examples" / "token-issuers.yaml"
    github, k8s, spire = load_issuers(example)
    assert ("github", "k8s", "spire") == (github.name, k8s.name, spire.name)
    assert "https://token.actions.githubusercontent.com" == github.issuer
    assert "repository_id" in github.attributes
    assert ("ci",) == tuple(group.group for group in github.groups)
    assert (True, True) == (k8s.discovery, spire.discovery)


def test_the_file_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "issuers.yaml"
    with pytest.raises(ValueError, match="cannot read"):
        load_issuers(path)
    path.write_text("issuers:\n  gh: {issuer: a, issuer: b}\n")
    with pytest.raises(ValueError, match=r"invalid YAML \(line 2\): .*duplicate key 'issuer'"):
        load_issuers(path)
    path.write_text("issuers: [\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_issuers(path)
    path.write_text("issuers:\n  gh: !!python/object:os.system {}\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_issuers(path)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, pki: TestPKI) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ca.pem").write_bytes(pki.ca_pem.read_bytes())
    (tmp_path / "conf" / "keys.json").write_text('{"keys": []}')
    path = write_issuers(
        tmp_path / "conf",
        {
            "gh": _entry(ca_file="ca.pem"),
            "local": issuer_entry("https://local", jwks_file="keys.json"),
        },
    )
    gh, local = load_issuers(path, allow_files=True)
    assert str(tmp_path / "conf" / "ca.pem") == gh.ca_file
    assert tmp_path / "conf" / "keys.json" == local.jwks_file
    with pytest.raises(ValueError, match="ca_file applies to HTTPS fetches"):
        parse_issuers(
            {"issuers": {"x": issuer_entry(jwks_file="keys.json", ca_file="ca.pem")}},
            base=tmp_path / "conf",
            allow_files=True,
        )


# --- the key set: cache, outage, refresh, rotation -------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


def key_set(source: Source, clock: Clock, metrics: Recorded | None = None) -> KeySet:
    return KeySet(
        "github", source, cache_seconds=300, refresh_seconds=30, metrics=metrics, monotonic=clock
    )


def test_down_at_start_fails_closed_then_loads(clock: Clock, k1: SigningKey) -> None:
    """No keys yet: the call tries a fetch (once per refresh interval) and is refused; once
    the endpoint is up and the interval has passed, the next call loads the keys."""
    source = Source([k1])
    source.down = True
    keys = key_set(source, clock)
    for _ in range(3):
        with pytest.raises(UnauthenticatedError, match=r"keys are not available.*HTTP 503"):
            keys.key("k1", "RS256")
    assert 1 == source.fetches
    assert not keys.state().ready
    assert "HTTP 503 from memory" == keys.state().last_error
    source.down = False
    clock.advance(30)
    assert keys.key("k1", "RS256")
    assert 2 == source.fetches
    assert keys.state().ready


def test_an_outage_keeps_the_keys_for_their_cache_lifetime_then_fails_closed(
    clock: Clock, k1: SigningKey, metrics: Recorded
) -> None:
    source = Source([k1])
    keys = key_set(source, clock, metrics)
    keys.key("k1", "RS256")
    source.down = True
    clock.advance(299)
    assert keys.refresh_due()  # the refresh fails, the keys are still usable
    assert keys.key("k1", "RS256")
    state = keys.state()
    assert (1, "HTTP 503 from memory") == (state.keys, state.last_error)
    assert state.last_failure is not None
    clock.advance(1)
    with pytest.raises(UnauthenticatedError, match="not available"):
        keys.key("k1", "RS256")
    assert (0, 0.0) == (keys.state().keys, keys.state().expires_in_seconds)
    assert ("github", True, 1) == metrics.fetches[0]
    assert ("github", False, 1) == metrics.fetches[1]


def test_unknown_kids_refetch_at_most_once_per_interval(clock: Clock, k1: SigningKey) -> None:
    source = Source([k1])
    keys = key_set(source, clock)
    keys.key("k1", "RS256")
    for index in range(20):  # the first load was less than refresh_seconds ago
        with pytest.raises(UnauthenticatedError, match="no signing key"):
            keys.key(f"made-up-{index}", "RS256")
    assert 1 == source.fetches
    clock.advance(30)
    for index in range(20):
        with pytest.raises(UnauthenticatedError, match="no signing key"):
            keys.key(f"made-up-{index}", "RS256")
    assert 2 == source.fetches


def test_a_rotation_costs_no_call(clock: Clock, k1: SigningKey, k2: SigningKey) -> None:
    """A new kid signs from now on: its first call fetches the set and succeeds; the old key,
    no longer published, is refused after that fetch."""
    source = Source([k1])
    keys = key_set(source, clock)
    keys.key("k1", "RS256")
    clock.advance(31)
    source.keys = [k2]
    assert keys.key("k2", "RS256")
    with pytest.raises(UnauthenticatedError, match="no signing key 'k1'"):
        keys.key("k1", "RS256")


def test_callers_wait_for_a_fetch_under_way(k1: SigningKey, k2: SigningKey) -> None:
    """Twenty calls with a new kid arriving during one slow fetch all succeed, with one fetch."""
    source = Source([k1, k2])
    source.delay = 0.3
    keys = KeySet("github", source, cache_seconds=300, refresh_seconds=30)
    results: list[object] = []

    def call() -> None:
        try:
            results.append(keys.key("k2", "RS256"))
        except UnauthenticatedError as error:
            results.append(error)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, Exception)]
    assert 1 == source.fetches


def test_past_half_life_a_call_refreshes_in_the_background(clock: Clock, k1: SigningKey) -> None:
    source = Source([k1])
    keys = key_set(source, clock)
    keys.key("k1", "RS256")
    clock.advance(150)
    assert keys.key("k1", "RS256")  # served from the cache at once
    deadline = time.monotonic() + 5
    while source.fetches < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 2 == source.fetches
    assert keys.key("k1", "RS256")
    assert 2 == source.fetches  # refreshed: not again before another half-life


def test_a_key_is_bound_to_one_algorithm(clock: Clock, k1: SigningKey, es: SigningKey) -> None:
    """The JWK's own alg must be the token's; an RSA key cannot verify ES256 and vice versa."""
    bare = make_key("bare", reuse=0, with_alg=False)
    keys = key_set(Source([k1, es, bare]), clock)
    with pytest.raises(UnauthenticatedError, match="is for RS256, not for the token's"):
        keys.key("k1", "PS256")
    with pytest.raises(UnauthenticatedError, match="cannot verify ES256"):
        keys.key("bare", "ES256")
    assert "PS256" == keys.key("bare", "PS256").algorithm_name


def test_only_asymmetric_signing_keys_with_a_kid_are_kept(k1: SigningKey) -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {**k1.jwk, "kid": "enc", "use": "enc"},
            {**k1.jwk, "kid": "ops", "key_ops": ["encrypt"]},
            {key: value for key, value in k1.jwk.items() if key != "kid"},
            {**k1.jwk, "kid": "private", "d": "AAAA"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "junk",
            k1.jwk,
            {**k1.jwk, "n": "AQAB"},  # k1 again: the first one counts
        ]
    }
    keys, skipped = parse_jwk_set(document)
    assert ["k1"] == list(keys)
    assert 8 == len(skipped)
    with pytest.raises(JwksError, match="no usable signing key in 1 entries"):
        parse_jwk_set({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]})
    with pytest.raises(JwksError, match="not a JWK Set"):
        parse_jwk_set({"keys": {}})


def test_a_fetch_without_usable_keys_keeps_the_old_ones(clock: Clock, k1: SigningKey) -> None:
    source = Source([k1])
    keys = key_set(source, clock)
    keys.key("k1", "RS256")
    source.keys = []
    clock.advance(31)
    with pytest.raises(UnauthenticatedError, match="no signing key 'k2'"):
        keys.key("k2", "RS256")
    assert keys.key("k1", "RS256")
    assert "no usable signing key" in (keys.state().last_error or "")


@pytest.fixture
def _no_threads_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)


@pytest.mark.usefixtures("_no_threads_left")
def test_prefetch_loads_in_the_background(k1: SigningKey) -> None:
    source = Source([k1])
    verify = verifier([issuer()], {"github": source})
    assert not verify.ready()
    verify.prefetch()
    deadline = time.monotonic() + 5
    while not verify.ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert verify.ready()
    (state,) = verify.key_states()
    assert ("github", ("k1",), True) == (state.issuer, state.kids, state.as_dict()["ready"])
