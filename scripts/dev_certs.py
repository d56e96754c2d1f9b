"""Create a local test CA, a server certificate and client certificates for running with mTLS.

    python scripts/dev_certs.py [--out .run/certs] [--days 30]

Writes ``ca.pem``/``ca.key`` (the CA clients must chain to), ``server.pem``/``server.key``
(DNS ``localhost``, IP ``127.0.0.1`` and ``::1``) and client certificates ``alice.pem``/
``alice.key`` (``spiffe://pkggov.test/ops/alice``) and ``ci.pem``/``ci.key``
(``spiffe://pkggov.test/ci/builder``), then prints the settings and a grpcurl command that
use them. Every run makes a new CA: certificates from an earlier run stop being trusted.
For development and tests only: keys are unencrypted (mode 0600).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLIENTS", "TRUST_DOMAIN", "create", "main"]

ROOT = Path(__file__).resolve().parent.parent
TRUST_DOMAIN = "pkggov.test"
CLIENTS = {"alice": "ops/alice", "ci": "ci/builder"}  # file name -> SPIFFE path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Path:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    cn: str,
    names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def create(directory: Path, *, days: int = 30, trust_domain: str = TRUST_DOMAIN) -> dict[str, Path]:
    """Write the CA, server and client certificates into `directory`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pkggov development CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": _write(directory, "ca", ca_cert, ca_key)}
    server_key = _key()
    server_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server = _leaf(
        ca_cert,
        ca_key,
        server_key,
        cn="localhost",
        names=server_names,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )
    paths["server"] = _write(directory, "server", server, server_key)
    for name, spiffe_path in CLIENTS.items():
        key = _key()
        spiffe_id = f"spiffe://{trust_domain}/{spiffe_path}"
        cert = _leaf(
            ca_cert,
            ca_key,
            key,
            cn=name,
            names=[x509.UniformResourceIdentifier(spiffe_id)],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            days=days,
        )
        paths[name] = _write(directory, name, cert, key)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Create the certificates and print how to use them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".run" / "certs", help="directory (.run/certs)"
    )
    parser.add_argument("--days", type=int, default=30, help="validity in days (30)")
    parser.add_argument(
        "--trust-domain", default=TRUST_DOMAIN, help=f"SPIFFE trust domain ({TRUST_DOMAIN})"
    )
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error("--days must be positive")
    paths = create(args.out.resolve(), days=args.days, trust_domain=args.trust_domain)
    q = {name: shlex.quote(str(path)) for name, path in paths.items()}
    key = {name: shlex.quote(str(path.with_suffix(".key"))) for name, path in paths.items()}
    print(f"Wrote a development CA and certificates to {args.out.resolve()}:")
    for name, path in paths.items():
        print(f"  {name:<7} {path}  {path.with_suffix('.key')}")
    print("\nRun the gateway with mTLS (add --dev for the emulator and example policies):")
    print(
        f"  PKGGOV_IDENTITY_MODE=mtls PKGGOV_IDENTITY_SERVER_CERT={q['server']} "
        f"PKGGOV_IDENTITY_SERVER_KEY={key['server']} PKGGOV_IDENTITY_CLIENT_CA={q['ca']} "
        ".venv/bin/pkggov-gateway"
    )
    print(f"\nCall it as alice (spiffe://{args.trust_domain}/{CLIENTS['alice']}):")
    print(
        f"  grpcurl -cacert {q['ca']} -cert {q['alice']} -key {key['alice']} 127.0.0.1:50051 list"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
