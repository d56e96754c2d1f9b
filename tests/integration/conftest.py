"""Fixtures for the CodeArtifact emulator's integration tests: a seeded emulator, boto3, AWS CLI."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from pkggov_emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_REGION,
    DEMO_SECRET_ACCESS_KEY,
    Emulator,
    load_demo_seed,
)

AWS_CLI = Path(sys.executable).with_name("aws")
NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture(scope="session")
def _session_emulator() -> Iterator[Emulator]:
    with Emulator(seed=load_demo_seed()) as emulator:
        yield emulator


@pytest.fixture
def emulator(_session_emulator: Emulator) -> Emulator:
    """The demo-seeded emulator, reset to the seed (no faults, empty call log) for each test."""
    _session_emulator.reset()
    return _session_emulator


@pytest.fixture(scope="session")
def make_codeartifact(_session_emulator: Emulator) -> Iterator[Callable[..., Any]]:
    """Build boto3 CodeArtifact clients for an emulator (no retries unless a config is given)."""
    clients: list[Any] = []

    def make(
        emulator: Emulator | None = None,
        *,
        access_key_id: str = DEMO_ACCESS_KEY_ID,
        secret_access_key: str = DEMO_SECRET_ACCESS_KEY,
        region: str = DEMO_REGION,
        config: Config = NO_RETRIES,
    ) -> Any:
        client = boto3.session.Session().client(
            "codeartifact",
            endpoint_url=(emulator or _session_emulator).endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def _session_client(make_codeartifact: Callable[..., Any]) -> Any:
    return make_codeartifact()


@pytest.fixture
def codeartifact(emulator: Emulator, _session_client: Any) -> Any:
    """A boto3 CodeArtifact client for the demo emulator, with retries off."""
    return _session_client


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer read by ``raw_request``."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def send_raw(
    endpoint_url: str,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    sign_with: tuple[str, str] | None = (DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY),
    region: str = DEMO_REGION,
) -> RawResponse:
    """Send one HTTP request, SigV4-signed by botocore's signer unless ``sign_with`` is None."""
    url = endpoint_url + path + (f"?{urlencode(query)}" if query else "")
    all_headers = dict(headers or {})
    if sign_with is not None:
        request = AWSRequest(method=method, url=url, data=body, headers=all_headers)
        SigV4Auth(Credentials(*sign_with), "codeartifact", region).add_auth(request)
        all_headers = dict(request.headers.items())
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=all_headers)
        response = connection.getresponse()
        return RawResponse(
            status=response.status,
            headers={key.lower(): value for key, value in response.getheaders()},
            body=response.read(),
        )
    finally:
        connection.close()


@pytest.fixture
def raw_request(emulator: Emulator) -> Callable[..., RawResponse]:
    """Send a raw (by default demo-signed) HTTP request to the demo emulator."""

    def send(method: str, path: str, **kwargs: Any) -> RawResponse:
        return send_raw(emulator.endpoint_url, method, path, **kwargs)

    return send


@pytest.fixture
def run_aws(emulator: Emulator) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real AWS CLI against the demo emulator with demo credentials and no config."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env = {
            **inherited,
            "AWS_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DEMO_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": DEMO_REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_MAX_ATTEMPTS": "1",
        }
        return subprocess.run(
            [str(AWS_CLI), *args, "--endpoint-url", emulator.endpoint_url, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    return run
