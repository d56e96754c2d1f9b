"""A test token issuer: signing keys made with `cryptography`, their JWK Set, tokens minted with
PyJWT, an issuers file, and a local HTTPS server publishing the keys (and an OpenID discovery
document) with a certificate from the test PKI (`tests.certs`).

Use it from any tier::

    key = make_key("k1")                        # RS256 (RSA 2048); "ES256", "EdDSA" too
    token = mint(key, claims(ISSUER, "https://pkggov.test", "repo:acme/widgets"))
    with JwksServer(pki, [key]) as server:      # https://127.0.0.1:PORT/jwks
        path = write_issuers(tmp_path, {"gh": issuer_entry(server.issuer, ca_file=...)})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.certs import TestPKI

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "JwksServer",
    "SigningKey",
    "b64url",
    "claims",
    "forge",
    "issuer_entry",
    "jwk_set",
    "make_key",
    "mint",
    "write_issuers",
]

ISSUER = "https://token.actions.githubusercontent.com"
AUDIENCE = "https://pkggov.test"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_RSA_KEYS: list[rsa.RSAPrivateKey] = []
"""RSA keys made so far: generating one takes tens of milliseconds, so tests that do not care
which key a kid has reuse them (by index)."""


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An issuer's signing key: its kid, algorithm, private key and public JWK."""

    kid: str
    alg: str
    private: PrivateKey
    jwk: dict[str, Any] = field(hash=False)


def _rsa(index: int | None) -> rsa.RSAPrivateKey:
    if index is None:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    while len(_RSA_KEYS) <= index:
        _RSA_KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA_KEYS[index]


def make_key(
    kid: str, alg: str = "RS256", *, reuse: int | None = None, with_alg: bool = True
) -> SigningKey:
    """A new key for `alg` (RS*/PS*: RSA 2048, ES256: P-256, EdDSA: Ed25519) named `kid`.
    `reuse` takes the n-th shared RSA key instead of a new one; `with_alg` puts ``alg`` in
    the JWK."""
    private: PrivateKey
    if alg.startswith(("RS", "PS")):
        private = _rsa(reuse)
        public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    else:
        raise ValueError(f"no test key for {alg}")
    public.update({"kid": kid, "use": "sig"})
    if with_alg:
        public["alg"] = alg
    return SigningKey(kid, alg, private, public)


def jwk_set(keys: Sequence[SigningKey]) -> dict[str, Any]:
    """The public JWK Set of `keys`."""
    return {"keys": [dict(key.jwk) for key in keys]}


def claims(
    iss: str = ISSUER,
    aud: str | list[str] | None = AUDIENCE,
    sub: str | None = "repo:acme/widgets:ref:refs/heads/main",
    *,
    lifetime: float = 300,
    issued: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Claims issued now (or at `issued`), expiring `lifetime` seconds later; a None value
    (aud, sub, or an `extra` one) leaves the claim out."""
    now = int(time.time() if issued is None else issued)
    values: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": now,
        "exp": now + lifetime,
        **extra,
    }
    return {name: value for name, value in values.items() if value is not None}


def mint(
    key: SigningKey,
    payload: Mapping[str, Any],
    *,
    alg: str | None = None,
    kid: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A token signed by `key` (header kid: `kid` or the key's)."""
    header = {"kid": kid or key.kid, **(headers or {})}
    return jwt.encode(dict(payload), key.private, algorithm=alg or key.alg, headers=header)


def forge(header: Mapping[str, Any], payload: Mapping[str, Any], secret: bytes | None) -> str:
    """A token built by hand: HS256-signed with `secret`, or with an empty signature (None),
    as an attacker would (PyJWT refuses to make some of these)."""
    signing_input = (
        f"{b64url(json.dumps(dict(header)).encode())}.{b64url(json.dumps(dict(payload)).encode())}"
    )
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def issuer_entry(issuer: str = ISSUER, **settings: Any) -> dict[str, Any]:
    """One issuer's settings for the issuers file: `issuer`, the test audience, RS256 and
    ES256, ``{sub}`` as principal, then `settings`."""
    return {
        "issuer": issuer,
        "audiences": [AUDIENCE],
        "algorithms": ["RS256", "ES256"],
        **settings,
    }


def write_issuers(directory: Path, issuers: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write an issuers file holding `issuers` (name -> settings) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": {k: dict(v) for k, v in issuers.items()}}))
    return path


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append(self.path)
        status, body, headers = owner.answer(self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: JwksServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that give up mid-answer are part of some tests."""


class JwksServer:
    """A local HTTPS server publishing `keys` at ``/jwks`` and an OpenID discovery document at
    ``/.well-known/openid-configuration`` (issuer: its own base URL), with the PKI's server
    certificate (127.0.0.1). Set `keys` to rotate, `down` to answer 503, `status` and
    `body` to answer otherwise; `requests` lists the paths asked for."""

    def __init__(self, pki: TestPKI, keys: Sequence[SigningKey] = ()) -> None:
        self.keys: list[SigningKey] = list(keys)
        self.down = False
        self.status: int | None = None
        self.body: bytes | None = None
        self.discovery_issuer: str | None = None
        self.requests: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server.cert, pki.server.key)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def issuer(self) -> str:
        """The base URL: what its discovery document names as issuer."""
        return f"https://127.0.0.1:{self._httpd.server_port}"

    @property
    def jwks_uri(self) -> str:
        """Where the keys are."""
        return f"{self.issuer}/jwks"

    def jwks_requests(self) -> int:
        """How many times the keys were asked for."""
        return sum(1 for path in self.requests if path == "/jwks")

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """The status, body and headers for a GET of `path`."""
        if self.down:
            return 503, b'{"error": "down"}', {}
        if self.status is not None:
            return self.status, self.body or b"{}", {"Location": f"{self.issuer}/elsewhere"}
        if path == "/.well-known/openid-configuration":
            document = {"issuer": self.discovery_issuer or self.issuer, "jwks_uri": self.jwks_uri}
            return 200, json.dumps(document).encode(), {}
        if path == "/jwks":
            return 200, self.body or json.dumps(jwk_set(self.keys)).encode(), {}
        return 404, b"{}", {}

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JwksServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def serving(pki: TestPKI, keys: Sequence[SigningKey] = ()) -> Iterator[JwksServer]:
    """A JwksServer for a fixture: ``yield from serving(pki, keys)``."""
    with JwksServer(pki, keys) as server:
        yield server
