"""The bookkeeping behind the stream limits, without grpc: which streams are admitted, which
unary calls wait for their request message, and which of either are due to end.

`streams.StreamLimitInterceptor` puts grpc's calls under a `StreamBudget`; the limits and the
reasons a call is refused or ended are described there.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import structlog

__all__ = [
    "BUDGET",
    "IDLE",
    "MAX_AGE",
    "MESSAGE_BUDGET",
    "MESSAGE_GRACE",
    "MESSAGE_LATE",
    "MESSAGE_PEER",
    "PEER",
    "Clock",
    "Lease",
    "StreamBudget",
    "StreamLimits",
    "StreamRefusedError",
    "Waiter",
    "peer_host",
]

BUDGET = "budget"
"""Refusal reason: server.max_streams streams are open."""
PEER = "peer"
"""Refusal reason: server.max_streams_per_peer streams are open from the caller's host."""
IDLE = "idle"
"""End reason: the stream waited on its client longer than server.stream_idle_seconds."""
MAX_AGE = "max_age"
"""End reason: the stream was open longer than server.stream_max_seconds."""
MESSAGE_PEER = "message_peer"
"""End reason: a unary call is slow to send its request message, and max_streams_per_peer
streams and slow calls are open from its host."""
MESSAGE_BUDGET = "message_budget"
"""End reason: a unary call is slow to send its request message, and max_streams streams and
slow calls are open."""
MESSAGE_LATE = "message_late"
"""End reason: a unary call waited for its request message longer than
server.request_message_seconds."""

MESSAGE_GRACE = 0.25
"""Seconds a unary call may wait for its request message before it counts as slow."""

log = structlog.get_logger("pkggov.streams")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The settings: server.max_streams, max_streams_per_peer, stream_idle_seconds,
    stream_max_seconds and request_message_seconds."""

    max_streams: int
    max_per_peer: int
    idle_seconds: float
    max_seconds: float
    message_seconds: float = 5.0


class StreamRefusedError(Exception):
    """Raised by `StreamBudget.admit` when all streams, or the peer's share, are in use."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Lease:
    """One admitted stream: its peer host, when it began, whether it now waits on its client.

    Released exactly once (later calls do nothing); ended at most once by `StreamBudget.sweep`.
    """

    __slots__ = (
        "_budget",
        "_ended",
        "_on_end",
        "_released",
        "_waiting_since",
        "_waits",
        "peer",
        "started",
    )

    def __init__(self, budget: StreamBudget, peer: str, on_end: Callable[[str], None]) -> None:
        self._budget = budget
        self.peer = peer
        self.started = budget.now()
        self._on_end = on_end
        self._waits = 0
        self._waiting_since: float | None = None
        self._ended: str | None = None
        self._released = False

    @property
    def ended(self) -> str | None:
        """Why the budget ended this stream (IDLE, MAX_AGE), or None."""
        return self._ended

    def wait_begins(self) -> None:
        """The stream starts waiting on its client (for a message, or to take a response)."""
        with self._budget.lock:
            if self._waits == 0:
                self._waiting_since = self._budget.now()
            self._waits += 1

    def wait_ends(self) -> None:
        """The wait that began last is over."""
        with self._budget.lock:
            self._waits -= 1
            if self._waits == 0:
                self._waiting_since = None

    def release(self) -> None:
        """Give the stream's place back (idempotent)."""
        self._budget.release(self)

    def due(self, now: float, limits: StreamLimits) -> str | None:
        """Why the stream must end at `now` (MAX_AGE, IDLE), or None. Caller holds the lock."""
        if now - self.started >= limits.max_seconds:
            return MAX_AGE
        since = self._waiting_since
        if since is not None and now - since >= limits.idle_seconds:
            return IDLE
        return None


class Waiter:
    """One unary call waiting for its request message: since when, and (asked only once it is
    slow) from which host. Ended at most once by `StreamBudget.sweep`."""

    __slots__ = ("_on_end", "_peer", "ended", "host", "since")

    def __init__(
        self, since: float, peer: Callable[[], str], on_end: Callable[[str], None]
    ) -> None:
        self.since = since
        self._peer = peer
        self._on_end = on_end
        self.host: str | None = None
        self.ended: str | None = None
        """Why the budget ended the call (MESSAGE_PEER, MESSAGE_BUDGET, MESSAGE_LATE), or None."""


class StreamBudget:
    """Which streams are admitted, which unary calls wait for their message, and which of
    either are due to end; the clock is injected."""

    def __init__(self, limits: StreamLimits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.now = clock
        self.lock = threading.Lock()
        self._leases: set[Lease] = set()
        self._per_peer: Counter[str] = Counter()
        self._waiting: dict[Waiter, None] = {}  # in the order they began: oldest first
        self._crowd = min(limits.max_per_peer, limits.max_streams)
        self.on_crowded: Callable[[], None] | None = None
        """Called (outside the lock) when a call begins waiting for its message while more than
        the smaller cap are waiting or streaming: some may soon be due to end."""
        self.next_due: float | None = None
        """After `sweep`: when a waiting call may next be due to end (None: none waits)."""

    @property
    def open(self) -> int:
        """Streams admitted and not yet released."""
        with self.lock:
            return len(self._leases)

    @property
    def waiting(self) -> int:
        """Unary calls now waiting for their request message."""
        with self.lock:
            return len(self._waiting)

    def begin_wait(self, peer: Callable[[], str], on_end: Callable[[str], None]) -> Waiter:
        """Note a unary call that starts waiting for its request message; `peer()` is its grpc
        peer (asked only if it waits long), `on_end(reason)` ends it. Never refuses."""
        with self.lock:
            waiter = Waiter(self.now(), peer, on_end)
            waiting = self._waiting
            waiting[waiter] = None
            crowded = len(waiting) + len(self._leases) > self._crowd
        if crowded and self.on_crowded is not None:
            self.on_crowded()
        return waiter

    def end_wait(self, waiter: Waiter) -> str | None:
        """The call's wait is over (message or not); why the budget ended it, or None. After
        this the budget no longer ends it, so a None here is final."""
        with self.lock:
            self._waiting.pop(waiter, None)
            return waiter.ended

    def admit(self, peer: str, on_end: Callable[[str], None]) -> Lease:
        """A lease for a new stream from `peer` (a host); `on_end(reason)` ends the stream.

        Raises StreamRefusedError when max_streams are open, or max_per_peer from `peer`.
        """
        limits = self.limits
        with self.lock:
            if len(self._leases) >= limits.max_streams:
                raise StreamRefusedError(
                    BUDGET,
                    f"{limits.max_streams} streaming calls are open (server.max_streams); "
                    "try again later",
                )
            if self._per_peer[peer] >= limits.max_per_peer:
                raise StreamRefusedError(
                    PEER,
                    f"{limits.max_per_peer} streaming calls are open from {peer} "
                    "(server.max_streams_per_peer); close one first",
                )
            lease = Lease(self, peer, on_end)
            self._leases.add(lease)
            self._per_peer[peer] += 1
        return lease

    def release(self, lease: Lease) -> None:
        """Give `lease`'s place back; nothing if already released."""
        with self.lock:
            if lease._released:
                return
            lease._released = True
            self._leases.discard(lease)
            self._per_peer[lease.peer] -= 1
            if not self._per_peer[lease.peer]:
                del self._per_peer[lease.peer]

    def sweep(self) -> list[str]:
        """End every stream and waiting call that is due now (each once); the reasons, one
        per call ended, streams first.

        A stream keeps its place until it is released (its handler has finished). Of the slow
        waiting calls, the oldest are kept while the caps allow, counting the open streams.
        """
        now = self.now()
        limits = self.limits
        with self.lock:
            due = [(lease, lease.due(now, limits)) for lease in self._leases]
            streams = [(lease, reason) for lease, reason in due if reason and not lease.ended]
            for lease, reason in streams:
                lease._ended = reason
            waiters = list(self._waiting)
        slow = [w for w in waiters if now - w.since >= MESSAGE_GRACE and w.ended is None]
        for waiter in slow:  # outside the lock: it asks grpc
            if waiter.host is None:
                try:
                    waiter.host = peer_host(waiter._peer())
                except Exception:  # the sweeper must outlive one bad call
                    log.exception("stream.peer_failed")
                    waiter.host = ""
        with self.lock:
            next_due = [w.since + MESSAGE_GRACE for w in waiters if now - w.since < MESSAGE_GRACE]
            per_peer = Counter(self._per_peer)
            total = len(self._leases)
            calls: list[tuple[Waiter, str]] = []
            for waiter in slow:
                if waiter not in self._waiting:  # its wait is over
                    continue
                host = waiter.host or ""
                if now - waiter.since >= limits.message_seconds:
                    reason = MESSAGE_LATE
                elif per_peer[host] >= limits.max_per_peer:
                    reason = MESSAGE_PEER
                elif total >= limits.max_streams:
                    reason = MESSAGE_BUDGET
                else:
                    per_peer[host] += 1
                    total += 1
                    next_due.append(waiter.since + limits.message_seconds)
                    continue
                waiter.ended = reason
                calls.append((waiter, reason))
        self.next_due = min(next_due, default=None)
        ending: list[tuple[Callable[[str], None], str, str | None]]
        ending = [(lease._on_end, reason, lease.peer) for lease, reason in streams]
        ending += [(waiter._on_end, reason, waiter.host) for waiter, reason in calls]
        for on_end, reason, peer in ending:
            try:
                on_end(reason)
            except Exception:  # the sweeper must outlive one bad call
                log.exception("stream.end_failed", reason=reason, peer=peer)
        return [reason for _, reason, _ in ending]


def peer_host(peer: str) -> str:
    """The host of a grpc peer string: ``ipv4:10.0.0.1:5678`` -> ``10.0.0.1``,
    ``ipv6:%5B::1%5D:5678`` (or ``ipv6:[::1]:5678``) -> ``::1``, an IPv4-mapped address as its
    IPv4 address; other schemes (``unix:...``, ``unix-abstract:...``) are one local host each."""
    scheme, _, rest = peer.partition(":")
    if scheme not in {"ipv4", "ipv6"}:
        return scheme
    host = unquote(rest).rpartition(":")[0].removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
