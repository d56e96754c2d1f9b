"""A test PKI built with `cryptography`: CAs, server and client certificates, grpc credentials.

Use it from any tier::

    pki = make_test_pki(tmp_path)               # or the session-scoped `pki` fixture below
    creds = pki.channel_credentials(pki.alice)  # an mTLS client as alice
    settings = pki.identity_settings()          # IdentitySettings for an mTLS server

Keys are P-256 (EC), so a whole PKI takes milliseconds to build.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pkggov_gateway.config import IdentitySettings

__all__ = [
    "CA",
    "CertFiles",
    "TestPKI",
    "issue_cert",
    "make_ca",
    "make_test_pki",
    "pki",
]

TRUST_DOMAIN = "pkggov.test"
ALICE_ID = f"spiffe://{TRUST_DOMAIN}/ops/alice"
CI_ID = f"spiffe://{TRUST_DOMAIN}/ci/builder"

_DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class CA:
    """A certificate authority: its name, certificate and key (P-256)."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str, *, not_before: dt.datetime | None = None, days: int = 30) -> CA:
    """A self-signed CA called `name`, valid from `not_before` (default: yesterday)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - _DAY
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(name, cert, key)


def issue_cert(
    ca: CA,
    *,
    cn: str | None = None,
    uri_sans: Iterable[str] = (),
    dns_sans: Iterable[str] = (),
    ip_sans: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_server: bool = False,
) -> tuple[bytes, bytes]:
    """Issue a leaf certificate signed by `ca`; returns ``(cert_pem, key_pem)``.

    Validity defaults to yesterday .. in 30 days. `is_server` sets the serverAuth usage (else
    clientAuth). With no `cn` the subject is empty, as SPIFFE X.509-SVIDs may have it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - _DAY
    end = not_after or _now() + 30 * _DAY
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
    names += [x509.DNSName(d) for d in dns_sans]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_sans]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if is_server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        # RFC 5280: the SAN extension is critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not cn)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its key written to files, with the principal it should yield."""

    cert: Path
    key: Path
    principal: str

    @property
    def cert_pem(self) -> bytes:
        """The certificate's PEM bytes."""
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        """The private key's PEM bytes."""
        return self.key.read_bytes()


@dataclass(frozen=True, slots=True)
class TestPKI:
    """A test CA, a server certificate for 127.0.0.1/localhost and clients good and bad.

    Good clients (issued by `ca`): `alice` (SPIFFE ``spiffe://pkggov.test/ops/alice`` plus a
    DNS SAN and CN), `ci` (SPIFFE ``spiffe://pkggov.test/ci/builder``), `cn_only` (CN
    ``legacy-client``), `dns_only` (DNS ``builder.pkggov.test``). Bad ones: `expired`,
    `not_yet_valid` (both otherwise like alice), `other_ca` (alice's names, issued by
    `other_ca_authority`, which the server does not trust).
    """

    __test__ = False  # not a test class, despite its name

    directory: Path
    ca: CA
    other_ca_authority: CA
    ca_pem: Path
    server: CertFiles
    alice: CertFiles
    ci: CertFiles
    cn_only: CertFiles
    dns_only: CertFiles
    expired: CertFiles
    not_yet_valid: CertFiles
    other_ca: CertFiles

    def identity_settings(self, **overrides: Any) -> IdentitySettings:
        """IdentitySettings for an mTLS server with this PKI's server certificate and CA."""
        values: dict[str, Any] = {
            "mode": "mtls",
            "server_cert": str(self.server.cert),
            "server_key": str(self.server.key),
            "client_ca": str(self.ca_pem),
            **overrides,
        }
        return IdentitySettings(**values)

    def channel_credentials(self, client: CertFiles | None) -> grpc.ChannelCredentials:
        """TLS channel credentials trusting this CA, presenting `client` (None: no cert)."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem.read_bytes())
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem.read_bytes(),
            private_key=client.key_pem,
            certificate_chain=client.cert_pem,
        )

    def clients(self) -> Iterator[tuple[str, CertFiles]]:
        """Every client certificate by attribute name, good and bad."""
        for name in (
            "alice",
            "ci",
            "cn_only",
            "dns_only",
            "expired",
            "not_yet_valid",
            "other_ca",
        ):
            yield name, getattr(self, name)


def _write(directory: Path, name: str, pems: tuple[bytes, bytes], principal: str) -> CertFiles:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(pems[0])
    key.write_bytes(pems[1])
    key.chmod(0o600)
    return CertFiles(cert, key, principal)


def make_test_pki(directory: Path) -> TestPKI:
    """Build a TestPKI and write its PEM files into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = make_ca("pkggov test CA"), make_ca("some other CA")
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca.cert_pem)
    (directory / "other-ca.pem").write_bytes(other.cert_pem)
    now = _now()

    def as_alice(
        authority: CA, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> tuple[bytes, bytes]:
        return issue_cert(
            authority,
            cn="alice",
            uri_sans=[ALICE_ID],
            dns_sans=["alice.pkggov.test"],
            not_before=start,
            not_after=end,
        )

    server = issue_cert(
        ca, cn="localhost", dns_sans=["localhost"], ip_sans=["127.0.0.1", "::1"], is_server=True
    )
    return TestPKI(
        directory=directory,
        ca=ca,
        other_ca_authority=other,
        ca_pem=ca_pem,
        server=_write(directory, "server", server, "localhost"),
        alice=_write(directory, "alice", as_alice(ca), ALICE_ID),
        ci=_write(directory, "ci", issue_cert(ca, uri_sans=[CI_ID]), CI_ID),
        cn_only=_write(
            directory, "cn-only", issue_cert(ca, cn="legacy-client"), "cn:legacy-client"
        ),
        dns_only=_write(
            directory,
            "dns-only",
            issue_cert(ca, dns_sans=["builder.pkggov.test"]),
            "dns:builder.pkggov.test",
        ),
        expired=_write(directory, "expired", as_alice(ca, now - 10 * _DAY, now - _DAY), ALICE_ID),
        not_yet_valid=_write(
            directory, "not-yet-valid", as_alice(ca, now + _DAY, now + 10 * _DAY), ALICE_ID
        ),
        other_ca=_write(directory, "other-ca-alice", as_alice(other), ALICE_ID),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """The session's test PKI (import into a conftest: ``from tests.certs import pki``)."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))
