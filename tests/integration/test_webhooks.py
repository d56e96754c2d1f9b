"""WebhookSender against real local HTTP(S) receivers, with an in-memory outbox.

The receiver is `http.server` in a thread (HTTP/1.1, keep-alive, TCP_NODELAY), optionally
behind TLS with the test PKI's server certificate; it answers from a script of replies.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pkggov_gateway.adapters.webhooks import (
    WebhookSender,
    backoff_seconds,
    encode_event,
    verify_signature,
)
from pkggov_gateway.domain.approvals import WebhookEvent
from pkggov_gateway.ports import WebhookOutbox
from tests.certs import TestPKI, issue_cert, make_test_pki
from tests.conftest import free_port

SECRET = b"s3cr3t-0123456789abcdef0123456789abcdef"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# --- an in-memory outbox ------------------------------------------------------------------


@dataclass
class _Row:
    event: WebhookEvent
    due: datetime
    attempts: int = 0
    lease_until: datetime | None = None
    delivered: bool = False
    errors: list[str] = field(default_factory=list)
    retry_at: list[datetime] = field(default_factory=list)


class FakeOutbox:
    """The WebhookOutbox protocol over a dict, leases included."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.claims = 0

    def add(self, event: WebhookEvent) -> WebhookEvent:
        self.rows[event.event_id] = _Row(event, due=event.created_at)
        return event

    def claim_webhooks(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookEvent, int]]:
        self.claims += 1
        due = [
            row
            for row in self.rows.values()
            if not row.delivered
            and row.due <= now
            and (row.lease_until is None or row.lease_until <= now)
        ]
        due.sort(key=lambda row: (row.event.created_at, row.event.event_id))
        for row in due[:limit]:
            row.lease_until = lease_until
        return [(row.event, row.attempts) for row in due[:limit]]

    def webhook_delivered(self, event_id: str) -> None:
        row = self.rows[event_id]
        assert row.lease_until is not None, "recorded without a lease"
        row.delivered, row.lease_until = True, None

    def webhook_failed(self, event_id: str, *, retry_at: datetime, error: str) -> None:
        row = self.rows[event_id]
        assert row.lease_until is not None, "recorded without a lease"
        row.attempts += 1
        row.errors.append(error)
        row.retry_at.append(retry_at)
        row.due, row.lease_until = retry_at, None


def _check_protocol(outbox: FakeOutbox) -> WebhookOutbox:
    return outbox  # mypy checks that FakeOutbox implements the port


class Clock:
    """An injected clock that moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_event(number: int = 1, kind: str = "created", **payload: Any) -> WebhookEvent:
    return WebhookEvent(
        event_id=f"evt-{number:04d}",
        kind=kind,
        request_id=f"dr-{number:04d}",
        payload=payload or {"package": "left-pad", "versions": ["1.0.0"], "note": "café"},
        created_at=T0 - timedelta(seconds=1) + timedelta(microseconds=number),
    )


# --- a local receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the sender drops connections on purpose (long answers, timeouts, TLS)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        receiver.record(Received(self.command, self.path, headers, body, self.client_address[1]))
        reply = receiver.next_reply()
        if reply.delay and receiver.released.wait(reply.delay):
            return
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class Receiver:
    """An HTTP(S) server on 127.0.0.1 recording requests, answering from `replies`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/hooks/pkggov?token=abc", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def next_reply(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else Reply()

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox() -> FakeOutbox:
    return FakeOutbox()


def make_sender(
    outbox: FakeOutbox, url: str, clock: Callable[[], datetime], **overrides: Any
) -> WebhookSender:
    options: dict[str, Any] = {
        "secret": SECRET,
        "timeout_seconds": 2.0,
        "lease_seconds": 60.0,
        "retry_seconds": 10.0,
        "retry_max_seconds": 600.0,
        "batch": 10,
        "clock": clock,
        **overrides,
    }
    return WebhookSender(_check_protocol(outbox), url=url, **options)


# --- the tests ------------------------------------------------------------------------------


def test_delivers_once_with_a_valid_signature(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(1, "created", package="left-pad", approvers=["bob"]))
    sender = make_sender(outbox, receiver.url(), clock)

    assert (1, 0) == sender.run_once()
    assert (0, 0) == sender.run_once()  # delivered: never sent again
    sender.close()

    assert 1 == len(receiver.requests)
    request = receiver.requests[0]
    assert "POST" == request.method
    assert "/hooks/pkggov?token=abc" == request.path
    assert encode_event(event) == request.body
    headers = request.headers
    assert "application/json" == headers["content-type"]
    assert "created" == headers["x-pkggov-event"]
    assert event.event_id == headers["x-pkggov-delivery"]
    assert "1" == headers["x-pkggov-attempt"]
    assert str(int(T0.timestamp())) == headers["x-pkggov-timestamp"]
    assert headers["user-agent"].startswith("pkggov-webhooks/")
    assert headers["x-pkggov-signature"].startswith("sha256=")
    assert verify_signature(
        SECRET,
        headers["x-pkggov-timestamp"],
        request.body,
        headers["x-pkggov-signature"],
        now=clock(),
    )
    assert not verify_signature(
        b"another-secret-0123456789abcdef0123",
        headers["x-pkggov-timestamp"],
        request.body,
        headers["x-pkggov-signature"],
        now=clock(),
    )
    body = json.loads(request.body)
    assert {
        "id": "evt-0001",
        "kind": "created",
        "deletion_request_id": "dr-0001",
        "time": "2025-03-01T11:59:59.000001Z",
        "data": {"package": "left-pad", "approvers": ["bob"]},
    } == body
    assert outbox.rows[event.event_id].delivered
    assert 0 == outbox.rows[event.event_id].attempts


def test_failures_are_retried_with_growing_delay_until_delivered(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(2, "approved"))
    receiver.replies.extend([Reply(500, body=b"boom"), Reply(503), Reply(204, body=b"")])
    seen: list[tuple[str, str]] = []
    sender = make_sender(
        outbox,
        receiver.url(),
        clock,
        metrics=lambda kind, outcome, _s: seen.append((kind, outcome)),
    )
    row = outbox.rows[event.event_id]

    assert (0, 1) == sender.run_once()
    assert [T0 + timedelta(seconds=10)] == row.retry_at
    assert row.errors[0].startswith("HTTP 500")
    assert "boom" in row.errors[0]

    clock.advance(9)
    assert (0, 0) == sender.run_once()  # not due yet
    clock.advance(1)
    assert (0, 1) == sender.run_once()
    assert clock() + timedelta(seconds=20) == row.retry_at[1]  # doubled

    clock.advance(19)
    assert (0, 0) == sender.run_once()
    clock.advance(1)
    assert (1, 0) == sender.run_once()
    sender.close()

    assert row.delivered
    assert 2 == row.attempts
    assert ["1", "2", "3"] == [r.headers["x-pkggov-attempt"] for r in receiver.requests]
    assert {event.event_id} == {r.headers["x-pkggov-delivery"] for r in receiver.requests}
    assert 1 == len({r.body for r in receiver.requests})  # the same body every time
    for request in receiver.requests:  # each attempt signed at its own time
        timestamp = request.headers["x-pkggov-timestamp"]
        signature = request.headers["x-pkggov-signature"]
        sent_at = datetime.fromtimestamp(int(timestamp), UTC)
        assert verify_signature(SECRET, timestamp, request.body, signature, now=sent_at)
    assert [
        ("approved", "http_status"),
        ("approved", "http_status"),
        ("approved", "delivered"),
    ] == seen


def test_backoff_stops_growing_at_the_maximum(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(3))
    receiver.replies.extend([Reply(500)] * 5)
    sender = make_sender(outbox, receiver.url(), clock, retry_seconds=10.0, retry_max_seconds=35.0)
    row = outbox.rows[event.event_id]
    for _ in range(5):
        assert (0, 1) == sender.run_once()
        clock.now = row.due
    sender.close()
    waits = [
        (retry_at - previous).total_seconds()
        for previous, retry_at in zip([T0, *row.retry_at], row.retry_at, strict=False)
    ]
    assert [10.0, 20.0, 35.0, 35.0, 35.0] == waits
    assert [backoff_seconds(n, 10.0, 35.0) for n in range(5)] == waits


def test_a_timeout_fails_the_attempt_and_it_is_retried(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(4, "expired"))
    receiver.replies.append(Reply(200, delay=5.0))
    seen: list[str] = []
    sender = make_sender(
        outbox, receiver.url(), clock, timeout_seconds=0.3, metrics=lambda _k, o, _s: seen.append(o)
    )
    started = time.monotonic()
    assert (0, 1) == sender.run_once()
    assert time.monotonic() - started < 2.0
    row = outbox.rows[event.event_id]
    assert row.errors[0].startswith("timeout after 0.3s")
    assert "token=abc" not in row.errors[0]
    assert [T0 + timedelta(seconds=10)] == row.retry_at

    clock.advance(10)
    assert (1, 0) == sender.run_once()  # the next reply is immediate
    sender.close()
    assert row.delivered
    assert ["timeout", "delivered"] == seen


def test_a_timeout_ends_the_pass_and_leaves_the_rest_leased(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    outbox.add(make_event(1))
    outbox.add(make_event(2))
    receiver.replies.append(Reply(200, delay=5.0))
    sender = make_sender(outbox, receiver.url(), clock, timeout_seconds=0.3)
    assert (0, 1) == sender.run_once()
    assert ["evt-0001"] == [r.headers["x-pkggov-delivery"] for r in receiver.requests]
    second = outbox.rows["evt-0002"]
    assert (0, T0 + timedelta(seconds=60)) == (second.attempts, second.lease_until)

    clock.advance(10)  # the first is due again; the second is still leased
    assert (1, 0) == sender.run_once()
    clock.advance(50)  # the lease ended
    assert (1, 0) == sender.run_once()
    sender.close()
    assert ["evt-0001", "evt-0001", "evt-0002"] == [
        r.headers["x-pkggov-delivery"] for r in receiver.requests
    ]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(
    status: int, receiver: Receiver, other_receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(5))
    elsewhere = other_receiver.url("/stolen")
    receiver.replies.append(Reply(status, headers=(("Location", elsewhere),)))
    sender = make_sender(outbox, receiver.url(), clock)

    assert (0, 1) == sender.run_once()
    sender.close()

    assert ["/hooks/pkggov?token=abc"] == [r.path for r in receiver.requests]
    assert [] == other_receiver.requests
    row = outbox.rows[event.event_id]
    assert not row.delivered
    assert row.errors[0].startswith(f"HTTP {status} redirect (not followed)")
    assert 1 == row.attempts


def test_a_receiver_that_is_not_listening_is_a_failed_attempt(
    outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(6))
    seen: list[str] = []
    sender = make_sender(
        outbox,
        f"http://127.0.0.1:{free_port()}/hook",
        clock,
        metrics=lambda _k, o, _s: seen.append(o),
    )
    assert (0, 1) == sender.run_once()
    sender.close()
    assert ["connection"] == seen
    assert outbox.rows[event.event_id].errors[0].startswith("cannot connect: ")


def test_one_connection_serves_a_batch_and_a_long_answer_costs_only_its_connection(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    for number in range(1, 5):
        outbox.add(make_event(number))
    receiver.replies.extend(
        [Reply(), Reply(), Reply(200, body=b"x" * 200_000), Reply(500, body=b"y" * 200_000)]
    )
    outbox.add(make_event(5))
    sender = make_sender(outbox, receiver.url(), clock)
    assert (4, 1) == sender.run_once()
    sender.close()
    ports = [r.client_port for r in receiver.requests]
    assert 5 == len(ports)
    assert ports[0] == ports[1] == ports[2]  # kept alive and reused
    assert ports[3] != ports[2]  # the long answer's connection was dropped
    assert ports[4] != ports[3]
    assert receiver.requests[4].body == encode_event(outbox.rows["evt-0005"].event)
    assert outbox.rows["evt-0004"].errors[0].startswith("HTTP 500: yyy")


class _BrokenOutbox(FakeOutbox):
    def webhook_delivered(self, event_id: str) -> None:
        if event_id == "evt-0001":
            raise RuntimeError("database is gone")
        super().webhook_delivered(event_id)


def test_one_bad_event_does_not_end_the_pass(receiver: Receiver, clock: Clock) -> None:
    outbox = _BrokenOutbox()
    outbox.add(make_event(1))  # delivered, but recording that fails
    outbox.add(make_event(2, nan=float("nan")))  # not JSON
    outbox.add(make_event(3, kind="bad\r\nX-Injected: 1"))  # not a header-safe kind
    outbox.add(make_event(4))
    seen: list[str] = []

    def flaky_metrics(kind: str, outcome: str, seconds: float) -> None:
        seen.append(outcome)
        raise RuntimeError("metrics are broken too")

    sender = make_sender(outbox, receiver.url(), clock, metrics=flaky_metrics)
    assert (2, 2) == sender.run_once()
    sender.close()

    assert ["evt-0001", "evt-0004"] == [r.headers["x-pkggov-delivery"] for r in receiver.requests]
    assert ["delivered", "invalid", "invalid", "delivered"] == seen
    assert outbox.rows["evt-0002"].errors[0].startswith("payload is not JSON")
    assert outbox.rows["evt-0003"].errors[0] == "event id or kind is not a header-safe token"
    assert not outbox.rows["evt-0001"].delivered  # its lease will run out: sent again later
    assert outbox.rows["evt-0004"].delivered


def test_stop_leaves_the_rest_leased_without_an_attempt(
    receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    outbox.add(make_event(1))
    sender = make_sender(outbox, receiver.url(), clock)
    sender.stop()
    assert (0, 0) == sender.run_once()
    sender.close()
    row = outbox.rows["evt-0001"]
    assert (0, T0 + timedelta(seconds=60)) == (row.attempts, row.lease_until)
    assert [] == receiver.requests


def test_too_little_lease_left_ends_the_pass(receiver: Receiver, outbox: FakeOutbox) -> None:
    outbox.add(make_event(1))
    outbox.add(make_event(2))
    calls: list[None] = []

    def late_clock() -> datetime:  # lease at the first call; the 4th is before the 2nd event
        calls.append(None)
        return T0 if len(calls) < 4 else T0 + timedelta(seconds=55)

    sender = make_sender(outbox, receiver.url(), late_clock, timeout_seconds=10.0)
    assert (1, 0) == sender.run_once()
    sender.close()
    assert ["evt-0001"] == [r.headers["x-pkggov-delivery"] for r in receiver.requests]
    assert outbox.rows["evt-0002"].lease_until == T0 + timedelta(seconds=60)
    assert 0 == outbox.rows["evt-0002"].attempts


# --- https -----------------------------------------------------------------------------------


def _tls_receiver(cert: Path, key: Path) -> Receiver:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return Receiver(tls=context)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture
def tls_receiver(pki: TestPKI) -> Iterator[Receiver]:
    server = _tls_receiver(pki.server.cert, pki.server.key)
    yield server
    server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_with_the_ca_bundle_delivers(
    host: str, pki: TestPKI, tls_receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(7))
    sender = make_sender(outbox, tls_receiver.url(host=host), clock, ca_file=str(pki.ca_pem))
    assert (1, 0) == sender.run_once()
    sender.close()
    request = tls_receiver.requests[0]
    assert encode_event(event) == request.body
    assert verify_signature(
        SECRET,
        request.headers["x-pkggov-timestamp"],
        request.body,
        request.headers["x-pkggov-signature"],
        now=clock(),
    )


def test_https_refuses_an_untrusted_certificate(
    tls_receiver: Receiver, outbox: FakeOutbox, clock: Clock
) -> None:
    event = outbox.add(make_event(8))
    seen: list[str] = []
    sender = make_sender(  # the system trust store: the test CA is not in it
        outbox, tls_receiver.url(), clock, metrics=lambda _k, o, _s: seen.append(o)
    )
    assert (0, 1) == sender.run_once()
    sender.close()
    assert ["tls"] == seen
    assert [] == tls_receiver.requests
    assert outbox.rows[event.event_id].errors[0].startswith("TLS: ")


def test_https_refuses_a_certificate_for_another_name(
    pki: TestPKI, tmp_path: Path, outbox: FakeOutbox, clock: Clock
) -> None:
    cert_pem, key_pem = issue_cert(
        pki.ca, cn="elsewhere", dns_sans=["elsewhere.test"], is_server=True
    )
    cert, key = tmp_path / "elsewhere.pem", tmp_path / "elsewhere.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    server = _tls_receiver(cert, key)
    try:
        outbox.add(make_event(9))
        seen: list[str] = []
        sender = make_sender(
            outbox,
            server.url(),
            clock,
            ca_file=str(pki.ca_pem),
            metrics=lambda _k, o, _s: seen.append(o),
        )
        assert (0, 1) == sender.run_once()
        sender.close()
        assert ["tls"] == seen
        assert [] == server.requests
    finally:
        server.close()
