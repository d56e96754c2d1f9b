"""Webhooks: deletion-request notifications POSTed, signed, to a configured URL.

Every change of a deletion request that approvers should hear about (created, approved,
rejected, expired, cancelled, executed) queues a `WebhookEvent` in the outbox of the audit
store's database, in the same transaction as the audit entry that explains it
(`ApprovalEffects.notify`). No call ever waits for a receiver: `WebhookSender.run_once`, run
by a background thread of each replica, leases the due events (`WebhookOutbox.claim_webhooks`:
one replica at a time per event), POSTs each, and records the outcome: delivered, or failed
and due again after a backoff that doubles per attempt (``retry_seconds * 2**attempts``, at
most ``retry_max_seconds``).

Delivery is *at least once*: a replica that dies after the receiver answered, or whose lease
ran out, lets another send the same event again. Receivers deduplicate on the event id (the
``X-Pkggov-Delivery`` header, or ``id`` in the body). Retries can reorder events; each carries
its ``time``, and a receiver that needs the current state should ask the gateway
(``GetDeletionRequest``).

The request
-----------
``POST <url>`` with the body the canonical JSON (sorted keys, no spaces, ASCII with ``\\u``
escapes, hence UTF-8) of::

    {"id": "<event id>", "kind": "created|approved|rejected|expired|cancelled|executed",
     "deletion_request_id": "<request id>", "time": "2025-01-31T12:00:00.000000Z",
     "data": {...}}

and the headers ``Content-Type: application/json``, ``User-Agent: pkggov-webhooks/<version>``,
``X-Pkggov-Event`` (the kind), ``X-Pkggov-Delivery`` (the event id, the same on every
attempt), ``X-Pkggov-Attempt`` (1 for the first), ``X-Pkggov-Timestamp`` (unix seconds when
sent) and ``X-Pkggov-Signature: sha256=<hex>``.

A 2xx answer means delivered. Anything else (another status, a redirect, which is never
followed, a timeout, a refused connection, a TLS failure) is a failed attempt, retried later.
Only http and https URLs are accepted; https verifies the receiver's certificate and name (the
system trust store, or the configured CA bundle); plain http is refused for any host but
loopback unless explicitly allowed (the body is signed, not encrypted). Proxy variables
(``HTTPS_PROXY``) are not used: the gateway connects to the receiver itself.

Verifying a delivery (receivers)
--------------------------------
The signature is ``HMAC-SHA256(secret, timestamp + "." + body)`` in lower-case hex, where
`secret` is the configured secret's UTF-8 bytes, `timestamp` the ``X-Pkggov-Timestamp``
header as sent and `body` the raw request body bytes (before any JSON parsing). A receiver:

1. reads the raw body and the two headers;
2. recomputes the HMAC with the shared secret and compares it with the header's value in
   constant time (``hmac.compare_digest``), never with ``==``;
3. rejects a timestamp more than a few minutes from its own clock (replays);
4. deduplicates on ``X-Pkggov-Delivery``;
5. answers 2xx quickly (queue the work), since a slow answer is a timeout and a retry.

`verify_signature` does 2 and 3; it needs only the standard library, so a receiver written in
Python can copy it. In full::

    import hashlib, hmac, time

    def verify(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
        if not (timestamp.isascii() and timestamp.isdecimal()):
            return False
        if abs(time.time() - int(timestamp)) > 300:
            return False
        mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
        expected = ("sha256=" + mac.hexdigest()).encode()
        return any(hmac.compare_digest(expected, v.strip().encode())
                   for v in header.split(",") if v.strip().isascii())

The header may carry several ``sha256=`` values separated by commas (room for a secret
rotation); any one matching is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util import Url, parse_url

from pkggov_gateway import __version__
from pkggov_gateway.domain.approvals import WebhookEvent
from pkggov_gateway.domain.audit import format_time
from pkggov_gateway.netaddr import is_loopback
from pkggov_gateway.ports import WebhookOutbox

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "MIN_SECRET_BYTES",
    "DeliveryObserver",
    "WebhookSender",
    "backoff_seconds",
    "encode_event",
    "sign",
    "verify_signature",
]

log = structlog.get_logger("pkggov.webhooks")

MIN_SECRET_BYTES: Final = 32
"""The shortest secret accepted (e.g. ``openssl rand -hex 32`` gives 64)."""

DEFAULT_TOLERANCE_SECONDS: Final = 300.0
"""How far a delivery's timestamp may be from the receiver's clock, by default."""

SIGNATURE_PREFIX: Final = "sha256="

_MAX_RESPONSE_BYTES = 64 * 1024
"""Read at most this much of an answer; a longer one costs its connection instead."""
_MAX_ERROR_CHARS = 500
_TOKEN = re.compile(r"[A-Za-z0-9._:~-]{1,200}")
"""An event id or kind as it may appear in a header."""
_MAX_SIGNATURES = 8

DeliveryObserver = Callable[[str, str, float], None]
"""Told of each attempt: (event kind, outcome, seconds). Outcomes: ``delivered``,
``http_status`` (a non-2xx answer, redirects included), ``timeout``, ``tls``, ``connection``,
``invalid`` (an event that cannot be sent as it is stored)."""


def encode_event(event: WebhookEvent) -> bytes:
    """The body POSTed for `event`: canonical JSON (sorted keys, no spaces, ASCII).

    Raises TypeError or ValueError when its payload is not JSON (e.g. NaN)."""
    body = {
        "id": event.event_id,
        "kind": event.kind,
        "deletion_request_id": event.request_id,
        "time": format_time(event.created_at),
        "data": event.payload,
    }
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Pkggov-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of timestamp.body."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str | None,
    body: bytes,
    header: str | None,
    *,
    now: datetime | float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when `header` (``X-Pkggov-Signature``) signs `body` at `timestamp`
    (``X-Pkggov-Timestamp``) with `secret`, and `timestamp` is within `tolerance` seconds of
    `now` (a datetime or unix seconds), either way.

    Compares in constant time. False for a missing, malformed or stale header or timestamp.
    """
    if not timestamp or not header or len(timestamp) > 12:
        return False
    if not (timestamp.isascii() and timestamp.isdecimal()):
        return False
    now_seconds = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_seconds - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode("ascii")
    matched = False
    for candidate in header.split(",")[:_MAX_SIGNATURES]:
        value = candidate.strip()
        if not value.isascii():
            continue
        # No early exit: every candidate is compared.
        matched |= hmac.compare_digest(expected, value.encode("ascii"))
    return matched


def backoff_seconds(attempts: int, retry_seconds: float, retry_max_seconds: float) -> float:
    """The wait before the next try after `attempts` earlier failed ones plus this one:
    ``retry_seconds * 2**attempts``, at most ``retry_max_seconds``."""
    return min(retry_seconds * 2.0 ** min(max(attempts, 0), 64), retry_max_seconds)


class _DeliveryError(Exception):
    """One failed attempt: its outcome (see DeliveryObserver) and what to record."""

    def __init__(self, outcome: str, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error
        self.status = status


class WebhookSender:
    """Delivers the outbox's due events to one URL (see the module docstring).

    Thread-compatible: one thread calls `run_once` at a time (`stop` and `close` may be
    called from another).
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        *,
        url: str,
        secret: bytes,
        timeout_seconds: float = 10.0,
        lease_seconds: float = 300.0,
        retry_seconds: float = 30.0,
        retry_max_seconds: float = 3600.0,
        batch: int = 50,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: DeliveryObserver | None = None,
        ca_file: str = "",
        allow_plaintext: bool = False,
    ) -> None:
        """Raises ValueError naming the problem when a parameter is unusable: a URL that is
        not http(s) with a host (or carries credentials or a fragment), plain http to a
        non-loopback host without `allow_plaintext`, a secret shorter than MIN_SECRET_BYTES,
        a `ca_file` that does not load, non-positive timings, a timeout not below the lease,
        retry_seconds above retry_max_seconds, a batch below 1."""
        self._outbox = outbox
        self._secret = bytes(secret)
        self._timeout = float(timeout_seconds)
        self._lease = float(lease_seconds)
        self._retry = float(retry_seconds)
        self._retry_max = float(retry_max_seconds)
        self._batch = int(batch)
        self._clock = clock
        self._observer = metrics
        self._stopping = threading.Event()
        self._check_numbers()
        if len(self._secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"webhook secret: {len(self._secret)} bytes, at least {MIN_SECRET_BYTES} needed "
                "(e.g. `openssl rand -hex 32`)"
            )
        parsed = _check_url(url, allow_plaintext=allow_plaintext)
        if ca_file and parsed.scheme != "https":
            raise ValueError("webhook ca_file applies only to an https URL")
        self._target = f"{parsed.scheme}://{parsed.netloc}"
        self._path = parsed.request_uri
        self._pool = self._make_pool(parsed, ca_file)

    def _check_numbers(self) -> None:
        for name, value in (
            ("timeout_seconds", self._timeout),
            ("lease_seconds", self._lease),
            ("retry_seconds", self._retry),
            ("retry_max_seconds", self._retry_max),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"webhook {name} must be a positive number, got {value!r}")
        if self._timeout >= self._lease:
            raise ValueError(
                f"webhook timeout_seconds ({self._timeout:g}) must be less than lease_seconds "
                f"({self._lease:g}): a delivery must end before its lease lets another replica "
                "send it too"
            )
        if self._retry > self._retry_max:
            raise ValueError("webhook retry_seconds must not exceed retry_max_seconds")
        if self._batch < 1:
            raise ValueError(f"webhook batch must be at least 1, got {self._batch}")

    def _make_pool(self, parsed: Url, ca_file: str) -> urllib3.HTTPConnectionPool:
        host, port = parsed.host or "", parsed.port
        timeout = urllib3.Timeout(total=self._timeout)
        headers = {"User-Agent": f"pkggov-webhooks/{__version__}"}
        if parsed.scheme == "http":
            return urllib3.HTTPConnectionPool(
                host, port, timeout=timeout, maxsize=1, retries=False, headers=headers
            )
        if ca_file:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"webhook ca_file {ca_file!r} cannot be loaded: {error}"
                ) from error
        return urllib3.HTTPSConnectionPool(
            host,
            port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            headers=headers,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file or None,
            ssl_minimum_version=ssl.TLSVersion.TLSv1_2,
        )

    @property
    def target(self) -> str:
        """Where events go, for logs: scheme, host and port, never the path (it may hold a
        token, as chat webhook URLs do)."""
        return self._target

    def run_once(self) -> tuple[int, int]:
        """Lease up to `batch` due events and send each once; returns (delivered, failed).

        An event that cannot be sent or recorded is logged and the pass goes on; only a
        failure to lease (the store is down) raises. The pass ends early, leaving the rest of
        the events leased (they come back when the lease ends, with no attempt counted), at
        `stop`, when too little of the lease is left for another attempt, and after a timeout:
        a receiver that hangs costs one timeout per pass, not one per event.
        """
        now = self._clock()
        lease_until = now + timedelta(seconds=self._lease)
        claimed = self._outbox.claim_webhooks(now, lease_until, self._batch)
        delivered = failed = 0
        for index, (event, attempts) in enumerate(claimed):
            left = len(claimed) - index
            if self._stopping.is_set():
                log.info("webhook.pass_stopped", unsent=left)
                break
            if self._clock() + timedelta(seconds=self._timeout) > lease_until:
                log.warning("webhook.lease_short", unsent=left, lease_seconds=self._lease)
                break
            try:
                outcome = self._deliver(event, attempts)
            except Exception:
                outcome = "error"
                log.exception(
                    "webhook.unexpected_error",
                    event_id=event.event_id,
                    kind=event.kind,
                    deletion_request_id=event.request_id,
                )
            if outcome == "delivered":
                delivered += 1
            else:
                failed += 1
            if outcome == "timeout" and left > 1:
                log.warning("webhook.pass_ended_on_timeout", unsent=left - 1, target=self._target)
                break
        return delivered, failed

    def stop(self) -> None:
        """Make a pass in progress end after the attempt in flight (at shutdown)."""
        self._stopping.set()

    def close(self) -> None:
        """Stop and close the connection pool."""
        self.stop()
        self._pool.close()

    def _deliver(self, event: WebhookEvent, attempts: int) -> str:
        """One attempt at `event`, recorded in the outbox; its outcome (DeliveryObserver)."""
        started = time.monotonic()
        try:
            status = self._post(event, attempts)
        except _DeliveryError as failure:
            self._failed(event, attempts, failure, time.monotonic() - started)
            return failure.outcome
        seconds = time.monotonic() - started
        self._observe(event.kind, "delivered", seconds)
        log.info(
            "webhook.delivered",
            event_id=event.event_id,
            kind=event.kind,
            deletion_request_id=event.request_id,
            target=self._target,
            attempt=attempts + 1,
            status=status,
            seconds=round(seconds, 4),
        )
        self._record(event, lambda: self._outbox.webhook_delivered(event.event_id))
        return "delivered"

    def _failed(
        self, event: WebhookEvent, attempts: int, failure: _DeliveryError, seconds: float
    ) -> None:
        """Record a failed attempt: due again after the backoff."""
        self._observe(event.kind, failure.outcome, seconds)
        retry_in = backoff_seconds(attempts, self._retry, self._retry_max)
        retry_at = self._clock() + timedelta(seconds=retry_in)
        log.warning(
            "webhook.failed",
            event_id=event.event_id,
            kind=event.kind,
            deletion_request_id=event.request_id,
            target=self._target,
            attempt=attempts + 1,
            outcome=failure.outcome,
            status=failure.status,
            error=failure.error,
            retry_in_s=retry_in,
            seconds=round(seconds, 4),
        )
        self._record(
            event,
            lambda: self._outbox.webhook_failed(
                event.event_id, retry_at=retry_at, error=failure.error
            ),
        )

    def _record(self, event: WebhookEvent, write: Callable[[], None]) -> None:
        """Write an outcome to the outbox; when that fails, the lease will run out and the
        event be sent again (at least once)."""
        try:
            write()
        except Exception:
            log.exception(
                "webhook.record_failed",
                event_id=event.event_id,
                kind=event.kind,
                deletion_request_id=event.request_id,
            )

    def _observe(self, kind: str, outcome: str, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(kind, outcome, seconds)
        except Exception:
            log.exception("webhook.metrics_failed")

    def _post(self, event: WebhookEvent, attempts: int) -> int:
        """POST `event`; its 2xx status, or raises _DeliveryError."""
        if not _TOKEN.fullmatch(event.event_id) or not _TOKEN.fullmatch(event.kind):
            raise _DeliveryError("invalid", "event id or kind is not a header-safe token")
        try:
            body = encode_event(event)
        except (TypeError, ValueError) as error:
            raise _DeliveryError("invalid", f"payload is not JSON: {error}") from error
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Pkggov-Event": event.kind,
            "X-Pkggov-Delivery": event.event_id,
            "X-Pkggov-Attempt": str(attempts + 1),
            "X-Pkggov-Timestamp": timestamp,
            "X-Pkggov-Signature": sign(self._secret, timestamp, body),
        }
        try:
            response = self._pool.urlopen(
                "POST",
                self._path,
                body=body,
                headers={**self._pool.headers, **headers},
                retries=False,
                redirect=False,
                assert_same_host=True,
                preload_content=False,
                decode_content=False,
            )
        except NewConnectionError as error:  # a ConnectTimeoutError subclass, for history
            message = f"cannot connect: {error}"
            raise _DeliveryError("connection", self._scrub(message)) from error
        except Urllib3TimeoutError as error:
            message = f"timeout after {self._timeout:g}s: {error}"
            raise _DeliveryError("timeout", self._scrub(message)) from error
        except SSLError as error:
            raise _DeliveryError("tls", self._scrub(f"TLS: {error}")) from error
        except (HTTPError, OSError) as error:
            raise _DeliveryError(
                "connection", self._scrub(f"{type(error).__name__}: {error}")
            ) from error
        status = response.status
        text = self._finish(response)
        if 200 <= status < 300:
            return status
        detail = f"HTTP {status}"
        if 300 <= status < 400:
            location = _printable(response.headers.get("Location", ""))
            detail += f" redirect (not followed) to {self._scrub(location)[:200]!r}"
        if text:
            detail += f": {text}"
        raise _DeliveryError("http_status", detail[:_MAX_ERROR_CHARS], status)

    def _finish(self, response: urllib3.BaseHTTPResponse) -> str:
        """Read (a bounded part of) the answer's body and release its connection; the start
        of the body, printable, for the error record."""
        try:
            data = response.read(_MAX_RESPONSE_BYTES, decode_content=False)
            complete = not response.read(1, decode_content=False)
        except (HTTPError, OSError):
            data, complete = b"", False
        if not complete:
            response.close()  # the rest is not worth reading: drop the connection instead
        response.release_conn()
        return _printable(data[:200].decode("utf-8", "replace"))

    def _scrub(self, text: str) -> str:
        """`text` without the URL's path (it may hold a token)."""
        if self._path not in ("", "/"):
            text = text.replace(self._path, "/***")
        return text[:_MAX_ERROR_CHARS]


def _printable(text: str) -> str:
    """`text` with control characters blanked (it goes into logs and the outbox)."""
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _check_url(url: str, *, allow_plaintext: bool) -> Url:
    """`url` parsed (scheme lower-case, port explicit), when it is a usable webhook URL;
    ValueError otherwise."""
    try:
        parsed = parse_url(url.strip())
    except ValueError as error:
        raise ValueError(f"webhook url is not a URL: {error}") from error
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"webhook url must be http:// or https://, got scheme {scheme!r}")
    if not parsed.host:
        raise ValueError("webhook url has no host")
    if parsed.auth:
        raise ValueError("webhook url must not carry credentials (the secret signs each event)")
    if parsed.fragment is not None:
        raise ValueError("webhook url must not have a #fragment")
    port = parsed.port or (443 if scheme == "https" else 80)
    if scheme == "http" and not allow_plaintext and not is_loopback(f"{parsed.host}:{port}"):
        raise ValueError(
            f"webhook url: plain http to {parsed.host!r} sends events unencrypted; use https "
            "(or allow plaintext explicitly)"
        )
    return parsed._replace(scheme=scheme, port=port)
