"""Server TLS settings: credentials from PEM files, errors naming the file, loopback listeners."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from pkggov_gateway.adapters.tls import is_loopback, server_credentials
from tests.certs import TestPKI, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_server_credentials_from_the_pki(pki: TestPKI) -> None:
    """Good files give grpc server credentials."""
    assert isinstance(server_credentials(pki.identity_settings()), grpc.ServerCredentials)


@pytest.mark.parametrize("setting", ["server_cert", "server_key", "client_ca"])
def test_unset_file_is_named(pki: TestPKI, setting: str) -> None:
    """An empty path fails with the setting's name."""
    settings = pki.identity_settings(**{setting: ""})
    with pytest.raises(ValueError, match=rf"identity\.{setting} is not set"):
        server_credentials(settings)


@pytest.mark.parametrize("setting", ["server_cert", "server_key", "client_ca"])
def test_missing_file_is_named(pki: TestPKI, tmp_path: Path, setting: str) -> None:
    """A path that cannot be read fails with an OSError naming the setting and the path."""
    missing = tmp_path / "nope.pem"
    settings = pki.identity_settings(**{setting: str(missing)})
    with pytest.raises(
        OSError, match=rf"identity\.{setting}: cannot read {re.escape(str(missing))}"
    ):
        server_credentials(settings)


@pytest.mark.parametrize("setting", ["server_cert", "server_key", "client_ca"])
def test_directory_instead_of_file_is_named(pki: TestPKI, tmp_path: Path, setting: str) -> None:
    """A directory is unreadable as a file: named too."""
    settings = pki.identity_settings(**{setting: str(tmp_path)})
    with pytest.raises(
        OSError, match=rf"identity\.{setting}: cannot read {re.escape(str(tmp_path))}"
    ):
        server_credentials(settings)


@pytest.mark.parametrize("setting", ["server_cert", "server_key", "client_ca"])
def test_non_pem_file_is_named(pki: TestPKI, tmp_path: Path, setting: str) -> None:
    """A file with no PEM in it fails naming the setting and the file."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    settings = pki.identity_settings(**{setting: str(junk)})
    with pytest.raises(ValueError, match=rf"identity\.{setting}: {re.escape(str(junk))} holds no"):
        server_credentials(settings)


@pytest.mark.parametrize("setting", ["server_cert", "client_ca"])
def test_corrupt_certificate_is_named(pki: TestPKI, tmp_path: Path, setting: str) -> None:
    """A PEM block that is not a certificate fails naming the setting and the file."""
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
    settings = pki.identity_settings(**{setting: str(bad)})
    with pytest.raises(
        ValueError, match=rf"identity\.{setting}: {re.escape(str(bad))} holds no valid PEM"
    ):
        server_credentials(settings)


def test_key_given_as_certificate_is_refused(pki: TestPKI) -> None:
    """Swapping the certificate and key paths is caught before grpc sees them."""
    settings = pki.identity_settings(server_key=str(pki.server.cert))
    with pytest.raises(ValueError, match=r"identity\.server_key: .* no usable unencrypted"):
        server_credentials(settings)


def test_key_of_another_certificate_is_refused(pki: TestPKI) -> None:
    """A key that does not belong to the server certificate is refused at start-up."""
    settings = pki.identity_settings(server_key=str(pki.alice.key))
    with pytest.raises(ValueError, match=r"is not the key of the certificate"):
        server_credentials(settings)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:50051", True),
        ("127.1.2.3:0", True),
        ("localhost:50051", True),
        ("LOCALHOST:1", True),
        ("[::1]:50051", True),
        ("::1:50051", True),
        ("[::ffff:127.0.0.1]:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.1:50051", False),
        ("gateway.internal:50051", False),
        ("127.0.0.1", False),
        ("unix:/tmp/pkggov.sock", False),
        ("", False),
    ],
)
def test_is_loopback(listen: str, expected: bool) -> None:
    """Only loopback addresses and localhost count; wildcards and names do not."""
    assert expected == is_loopback(listen)
