"""Limits on calls that wait on their clients, so that idle or slow callers cannot take the
threads that other calls need.

grpcio's synchronous server runs a call on a thread of the RPC pool, where it blocks while it
waits for its client. `StreamLimitInterceptor` puts every streaming method (server reflection,
Health/Watch, any other) under these limits:

- at most ``max_streams`` streams at once (fewer than the pool's threads, so unary calls always
  keep some), and at most ``max_per_peer`` from one peer host; beyond either, a stream is
  refused at once with RESOURCE_EXHAUSTED, which frees its thread;
- a stream that waits on its client (for a message, or for it to take a response) longer than
  ``idle_seconds`` is ended with DEADLINE_EXCEEDED; any stream older than ``max_seconds`` is
  ended with UNAVAILABLE (its client reconnects), whether or not it holds a thread;
- a unary-request method (Health/Watch) is served in its stream-request form, so that the wait
  for its one message, which grpcio would do before any handler runs, is under these limits.

A unary-unary call holds a thread too from the moment its headers arrive, while grpcio waits
for its request message; a client that never sends it (a slowloris) would hold it until its
deadline, or forever. So unary-unary methods are served in stream-unary form: the wrapper takes
the message itself, then calls the method's own behaviour with it (a second message, which no
unary client sends, is ignored, as grpcio ignores it). Such a call is never refused when it
starts (its message is nearly always there already, and an attacker filling a cap must not turn
legitimate calls away); its wait is only noted (a `Waiter`). A call still waiting after
``MESSAGE_GRACE`` (0.25 s) is slow, and slow calls share the caps with the streams: beyond
``max_per_peer`` streams and slow calls from one host, or ``max_streams`` in all, the newest
slow ones are ended at once with RESOURCE_EXHAUSTED; any call waiting longer than
``message_seconds`` is ended with DEADLINE_EXCEEDED. A call whose client closes without a
message is answered UNIMPLEMENTED, as grpcio answers it.

`StreamBudget` is the bookkeeping, without grpc.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
import structlog

from pkggov_gateway.ports import Metrics, NullMetrics

__all__ = [
    "BUDGET",
    "IDLE",
    "MAX_AGE",
    "MESSAGE_BUDGET",
    "MESSAGE_GRACE",
    "MESSAGE_LATE",
    "MESSAGE_PEER",
    "PEER",
    "Lease",
    "StreamBudget",
    "StreamLimitInterceptor",
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
_MIN_TICK = 0.02
"""Shortest sleep of the sweeper (while calls wait for their message)."""

log = structlog.get_logger("pkggov.streams")

Clock = Callable[[], float]

if TYPE_CHECKING:  # grpc-stubs make the base generic; at runtime it is not subscriptable
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


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


_ENDINGS = {
    IDLE: (grpc.StatusCode.DEADLINE_EXCEEDED, "no message to or from the client for {idle:g} s"),
    MAX_AGE: (grpc.StatusCode.UNAVAILABLE, "stream open for {age:g} s; reconnect"),
    MESSAGE_PEER: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many calls from {host} are waiting to send their request message",
    ),
    MESSAGE_BUDGET: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many calls are waiting to send their request message; try again later",
    ),
    MESSAGE_LATE: (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "no request message from the client within {message:g} s",
    ),
}
"""Status of a call the budget ends, by reason."""


def _end_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End the call now with this status, from any thread: that wakes its handler's thread
    wherever it waits on grpc (for a message, or for a response to be taken).

    grpcio's public API cannot do this: ``context.abort`` works only on the handler's own
    thread, which is blocked, and ``context.cancel()`` ends the call as CANCELLED. The call
    object's ``cancel(code, details)`` (grpc core's ``grpc_call_cancel_with_status``) sends the
    status; without it (another grpcio), CANCELLED is sent. tests/e2e/test_streams.py pins the
    status a client sees.
    """
    call: Any = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], details)
    except (AttributeError, TypeError):
        context.cancel()  # type: ignore[no-untyped-call] # grpc-stubs leaves it untyped


_MISSING = object()


class StreamLimitInterceptor(_ServerInterceptor):
    """Puts every method under a `StreamBudget`: streaming ones as streams, unary-unary ones
    in stream-unary form while they wait for their request message.

    Goes before `RpcEdgeInterceptor` (which wraps only unary-unary methods). `start()` starts
    the thread that ends idle and old streams and calls slow to send their message, `stop()`
    stops it.
    """

    def __init__(
        self,
        limits: StreamLimits,
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.budget = StreamBudget(limits, clock)
        self.budget.on_crowded = self._crowded
        self._metrics = metrics or NullMetrics()
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}
        shortest = min(limits.idle_seconds, limits.max_seconds, limits.message_seconds)
        self._tick = min(1.0, max(0.05, shortest / 4))
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._resting = False  # the sweeper sleeps a whole tick: no call waits for its message
        self._sweeper: threading.Thread | None = None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        """The method's handler under the limits (built once per method and handler)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def start(self) -> None:
        """Start ending idle and old streams (every quarter of the shortest limit, at most 1 s)
        and calls slow to send their message (as they fall due, while any waits)."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="pkggov-streams", daemon=True)
            self._sweeper.start()

    def stop(self) -> None:
        """Stop the sweeper thread."""
        self._stopping.set()
        self._wake.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)

    def _sweep(self) -> None:
        budget = self.budget
        while not self._stopping.is_set():
            self._wake.clear()
            self._resting = True  # from here on, a crowd of waiting calls wakes the sweeper
            budget.sweep()
            delay = self._tick
            if budget.next_due is not None:
                self._resting = False
                delay = min(delay, max(_MIN_TICK, budget.next_due - budget.now()))
            self._wake.wait(delay)

    def _crowded(self) -> None:
        if self._resting and not self._wake.is_set():
            self._wake.set()

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _UnaryRequest(self, handler.unary_unary, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _StreamRequests(self, handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        behaviour = handler.stream_stream or handler.unary_stream
        if behaviour is None:  # not a method grpcio can serve either
            return handler
        return grpc.stream_stream_rpc_method_handler(
            _StreamResponses(
                self, behaviour, method, unary_request=handler.unary_stream is not None
            ),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def admit(self, context: grpc.ServicerContext) -> Lease | None:
        """A lease for the call (released when it ends), or RESOURCE_EXHAUSTED at once; None
        when the call has already ended."""
        try:
            lease = self.budget.admit(
                peer_host(context.peer()), lambda reason: self._end(context, reason)
            )
        except StreamRefusedError as refused:
            self._metrics.stream_limited(refused.reason)
            log.debug("stream.refused", reason=refused.reason, peer=context.peer())
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refused))
        if not context.add_callback(lease.release):
            lease.release()
            return None
        return lease

    def _end(self, context: grpc.ServicerContext, reason: str) -> None:
        """End the call (a stream, or a unary call waiting for its message) for `reason`."""
        self._metrics.stream_limited(reason)
        log.debug("stream.ended", reason=reason, peer=context.peer())
        _end_call(context, *self.ending(context, reason))

    def ending(self, context: grpc.ServicerContext, reason: str) -> tuple[grpc.StatusCode, str]:
        """The status of a call the budget ends for `reason`."""
        limits = self.budget.limits
        code, details = _ENDINGS[reason]
        host = peer_host(context.peer()) if reason == MESSAGE_PEER else ""
        return code, details.format(
            idle=limits.idle_seconds,
            age=limits.max_seconds,
            message=limits.message_seconds,
            host=host,
        )


def _requests(lease: Lease, requests: Iterator[Any]) -> Iterator[Any]:
    """`requests`, timing each wait for the next message as a wait on the client."""
    while True:
        lease.wait_begins()
        try:
            message = next(requests)
        except StopIteration:
            return
        finally:
            lease.wait_ends()
        yield message


class _UnaryRequest:
    """A unary-unary behaviour in stream-unary form: it takes the request message itself, its
    wait noted in the budget, and passes the first message to the behaviour."""

    def __init__(
        self, limiter: StreamLimitInterceptor, behaviour: Callable[..., Any], method: str
    ) -> None:
        self._limiter = limiter
        self._budget = limiter.budget
        self._behaviour = behaviour
        self._missing = f'"{method}" requires exactly one request message.'  # grpcio's answer
        # grpcio reads this attribute from the behaviour it is given
        self.experimental_thread_pool = getattr(behaviour, "experimental_thread_pool", None)

    def __call__(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        budget = self._budget
        waiter = budget.begin_wait(context.peer, functools.partial(self._limiter._end, context))
        try:
            request = next(requests, _MISSING)  # raises grpc.RpcError if the client went away
        finally:
            ended = budget.end_wait(waiter)
        if ended is not None:  # the sweeper ends (or has ended) the call: not served
            context.abort(*self._limiter.ending(context, ended))
        if request is _MISSING:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, self._missing)
        return self._behaviour(request, context)


class _StreamRequests:
    """A stream-unary behaviour under the limits."""

    def __init__(self, limiter: StreamLimitInterceptor, behaviour: Callable[..., Any]) -> None:
        self._limiter = limiter
        self._behaviour = behaviour

    def __call__(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        lease = self._limiter.admit(context)
        if lease is None:
            return None
        try:
            return self._behaviour(_requests(lease, requests), context)
        finally:
            lease.release()


class _StreamResponses:
    """A stream-stream or unary-stream behaviour under the limits, in stream-stream form.

    Blocking behaviours hold their thread until the stream ends; non-blocking ones
    (grpcio's ``experimental_non_blocking``, as Health/Watch) return it after the first request,
    their responses sent from other threads. Either way the place is held until the call ends.
    """

    def __init__(
        self,
        limiter: StreamLimitInterceptor,
        behaviour: Callable[..., Any],
        method: str,
        *,
        unary_request: bool,
    ) -> None:
        self._limiter = limiter
        self._behaviour = behaviour
        self._method = method
        self._unary_request = unary_request
        # grpcio reads these attributes from the behaviour it is given
        self.experimental_non_blocking = bool(
            getattr(behaviour, "experimental_non_blocking", False)
        )
        self.experimental_thread_pool = getattr(behaviour, "experimental_thread_pool", None)

    def __call__(
        self,
        requests: Iterator[Any],
        context: grpc.ServicerContext,
        send: Callable[[Any], None] | None = None,
    ) -> Iterator[Any] | None:
        if send is None:
            return self._blocking(requests, context)
        self._non_blocking(requests, context, send)
        return None

    def _argument(
        self, lease: Lease, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Any:
        """What the behaviour takes: the guarded requests, or the one request (_MISSING when
        the stream ended without it)."""
        guarded = _requests(lease, requests)
        if not self._unary_request:
            return guarded
        request = next(guarded, _MISSING)
        if request is _MISSING and lease.ended is None and context.is_active():
            # what grpcio answers for a unary request without a message
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f'"{self._method}" requires exactly one request message.',
            )
        return request

    def _blocking(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        lease = self._limiter.admit(context)
        if lease is None:
            return
        try:
            argument = self._argument(lease, requests, context)
            if argument is _MISSING or not context.is_active():
                return
            for response in self._behaviour(argument, context):
                lease.wait_begins()  # until grpcio has sent it and asks for the next one
                try:
                    yield response
                finally:
                    lease.wait_ends()
        finally:
            lease.release()

    def _non_blocking(
        self, requests: Iterator[Any], context: grpc.ServicerContext, send: Callable[[Any], None]
    ) -> None:
        lease = self._limiter.admit(context)  # released when the call ends
        if lease is None:
            return
        argument = self._argument(lease, requests, context)
        # Health/Watch ignores add_callback's answer: called once the call has ended, it would
        # keep the dead call among its watchers for good
        if argument is _MISSING or not context.is_active():
            return

        def guarded_send(response: Any) -> None:
            lease.wait_begins()  # until the client has taken it
            try:
                send(response)
            finally:
                lease.wait_ends()

        self._behaviour(argument, context, guarded_send)
