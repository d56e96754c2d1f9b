"""The HTTP server keeps connections alive, answers fast, serves threads safely, stops cleanly."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY, Emulator

BULK = {
    "domain": "sandbox",
    "repository": "scratch",
    "format": "generic",
    "namespace": "bulk",
    "package": "artifact",
}


def _get(connection: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response


def test_endpoint_url_uses_the_bound_port() -> None:
    with Emulator(port=0) as emulator:
        assert f"http://127.0.0.1:{emulator.port}" == emulator.endpoint_url
        assert 0 != emulator.port


def test_keep_alive_with_content_length_and_request_ids(emulator: Emulator) -> None:
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    try:
        responses = [_get(connection, "/_emulator/health") for _ in range(3)]
        local_ports = {connection.sock.getsockname()[1]}
    finally:
        connection.close()
    assert [(200, 11)] * 3 == [(r.status, r.version) for r in responses]
    assert ["16"] * 3 == [r.getheader("Content-Length") for r in responses]
    assert [None] * 3 == [r.getheader("Connection") for r in responses]
    assert 1 == len(local_ports)
    ids = [uuid.UUID(r.getheader("x-amzn-RequestId") or "") for r in responses]
    assert [4, 4, 4] == [i.version for i in ids]
    assert 3 == len(set(ids))


def test_small_answers_are_not_delayed_by_nagle(emulator: Emulator) -> None:
    # Headers and body go out in two writes; without TCP_NODELAY each answer would wait for
    # the client's delayed ACK (~40 ms), so 50 round trips would take 2 s or more.
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    try:
        _get(connection, "/_emulator/health")
        started = time.monotonic()
        for _ in range(50):
            _get(connection, "/_emulator/health")
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert elapsed < 1.0


def test_stop_closes_idle_connections_and_restart_reuses_the_port() -> None:
    emulator = Emulator()
    emulator.start()
    port = emulator.port
    connection = http.client.HTTPConnection(emulator.host, port, timeout=5)
    try:
        assert 200 == _get(connection, "/_emulator/health").status
        emulator.stop()
        with pytest.raises((http.client.HTTPException, OSError)):
            _get(connection, "/_emulator/health")
        emulator.start()
        assert port == emulator.port
        connection.close()
        assert 200 == _get(connection, "/_emulator/health").status
    finally:
        connection.close()
        emulator.stop()


def test_concurrent_deletes_are_all_applied_once(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def delete(start: int) -> None:
        versions = [f"1.0.{i}" for i in range(start, start + 30)]
        result = client.delete_package_versions(**BULK, versions=versions)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=delete, args=(start,)) for start in range(0, 300, 30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deleted = [v for result in results for v in result["successfulVersions"]]
    assert 300 == len(set(deleted)) == len(deleted)
    assert [] == client.list_package_versions(**BULK)["versions"]


def test_chunked_request_bodies_are_read(emulator: Emulator) -> None:
    body = json.dumps({"versions": ["1.0.0"]}).encode()
    url = (
        f"{emulator.endpoint_url}/v1/package/versions/delete?domain=sandbox&repository=scratch"
        "&format=generic&namespace=bulk&package=artifact"
    )
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Transfer-Encoding": "chunked",
            "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
        },
    )
    SigV4Auth(
        Credentials(DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY), "codeartifact", DEMO_REGION
    ).add_auth(request)
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    try:
        connection.request(
            "POST",
            url.removeprefix(emulator.endpoint_url),
            body=iter([body[:5], body[5:]]),
            headers=dict(request.headers.items()),
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert 200 == response.status, answer
    assert ["1.0.0"] == list(answer["successfulVersions"])


def test_quiet_by_default(capfd: pytest.CaptureFixture[str], codeartifact: Any) -> None:
    codeartifact.list_domains()
    with pytest.raises(codeartifact.exceptions.ResourceNotFoundException):
        codeartifact.describe_domain(domain="nope")
    assert ("", "") == capfd.readouterr()


def test_malformed_http_gets_an_error_not_a_hang(emulator: Emulator) -> None:
    with socket.create_connection((emulator.host, emulator.port), timeout=5) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
