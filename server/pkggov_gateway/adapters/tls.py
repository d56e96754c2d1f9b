"""Server TLS for mTLS mode: credentials that require and verify client certificates (or,
with ``identity.tokens = only``, TLS with the server's certificate alone: callers identify
with bearer tokens and no client certificate is asked for).

The files are read and checked at start-up (PEM that parses, a key that matches the
certificate), so a bad path or file fails with the setting's name instead of an opaque grpc
error at the first handshake. grpc then refuses, during the handshake, every client without a
certificate, or with one that does not chain to ``identity.client_ca`` or is outside its
validity period; such calls fail with UNAVAILABLE before any handler runs.

With ``identity.tokens = accept`` client certificates stay required: grpcio's server
credentials can only require a verified client certificate or not ask for one at all (its
Python API has no "request, verify if sent"), so a caller with a token alone needs a gateway
with ``identity.tokens = only``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pkggov_gateway.config import IdentitySettings
from pkggov_gateway.netaddr import is_loopback

__all__ = ["is_loopback", "read_pem", "server_credentials"]


def read_pem(setting: str, path: str) -> bytes:
    """The bytes of the PEM file the setting `identity.<setting>` names.

    Raises ValueError when the setting is empty or the file holds no PEM block, OSError
    (naming the setting and the path) when the file cannot be read.
    """
    if not path.strip():
        raise ValueError(f"identity.{setting} is not set: mtls mode needs a PEM file path")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise OSError(
            error.errno, f"identity.{setting}: cannot read {path}: {error.strerror}"
        ) from error
    if b"-----BEGIN " not in data:
        raise ValueError(f"identity.{setting}: {path} holds no PEM data")
    return data


def _certificates(setting: str, path: str, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise ValueError(
            f"identity.{setting}: {path} holds no valid PEM certificate: {error}"
        ) from error


def server_credentials(settings: IdentitySettings) -> grpc.ServerCredentials:
    """TLS server credentials from ``server_cert``/``server_key``, requiring client
    certificates that chain to ``client_ca`` (with ``tokens = only``: asking for none, and
    ``client_ca`` not read).

    Raises ValueError or OSError naming the setting and file when one is missing, unreadable,
    not PEM, or when the key does not belong to the certificate.
    """
    cert_pem = read_pem("server_cert", settings.server_cert)
    key_pem = read_pem("server_key", settings.server_key)
    tokens_only = settings.tokens == "only"
    ca_pem = None if tokens_only else read_pem("client_ca", settings.client_ca)
    leaf = _certificates("server_cert", settings.server_cert, cert_pem)[0]
    if ca_pem is not None:
        _certificates("client_ca", settings.client_ca, ca_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:  # TypeError: the key is encrypted
        raise ValueError(
            f"identity.server_key: {settings.server_key} holds no usable unencrypted private "
            f"key: {error}"
        ) from error
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ValueError(
            f"identity.server_key: {settings.server_key} is not the key of the certificate in "
            f"identity.server_cert ({settings.server_cert})"
        )
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=not tokens_only
    )
