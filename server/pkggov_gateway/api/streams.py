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

Every wrapper takes its request messages as bytes and decodes them itself: bytes that are not
a request message end the call INVALID_ARGUMENT (MALFORMED_REQUEST), as the unary edge answers
(`RpcEdgeInterceptor`, which decodes the main port's unary requests; the wrapper decodes the
others), where grpcio would answer INTERNAL and log a traceback. A streaming method its
servicer does not implement (the generated base class raises NotImplementedError) is answered
UNIMPLEMENTED, where grpcio would answer UNKNOWN and log a traceback. Both are logged at info.

The bookkeeping, without grpc, is `stream_budget.StreamBudget`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import structlog
from google.protobuf.message import DecodeError

from pkggov_gateway.api.interceptors import abort_status
from pkggov_gateway.api.status import rule_for, to_rpc_status
from pkggov_gateway.api.stream_budget import (
    IDLE,
    MAX_AGE,
    MESSAGE_BUDGET,
    MESSAGE_LATE,
    MESSAGE_PEER,
    Clock,
    Lease,
    StreamBudget,
    StreamLimits,
    StreamRefusedError,
    peer_host,
)
from pkggov_gateway.domain.errors import (
    MalformedRequestError,
    MethodNotImplementedError,
    PkggovError,
)
from pkggov_gateway.ports import Metrics, NullMetrics

__all__ = ["StreamLimitInterceptor"]

_MIN_TICK = 0.02
"""Shortest sleep of the sweeper (while calls wait for their message)."""

log = structlog.get_logger("pkggov.streams")

if TYPE_CHECKING:  # grpc-stubs make the base generic; at runtime it is not subscriptable
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


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


def _fail(context: grpc.ServicerContext, error: PkggovError) -> NoReturn:
    """End the call, from its handler's thread, with the status table's answer for `error`
    (a caller's mistake, or a method not served: logged at info, without a traceback)."""
    log.info("stream.error", reason=rule_for(error).reason, error=error.message)
    context.abort_with_status(abort_status(to_rpc_status(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpcio raises


def _unimplemented(context: grpc.ServicerContext, method: str) -> NoReturn:
    _fail(context, MethodNotImplementedError(f"{method} is not implemented by this gateway"))


class _Decoder:
    """A method's request deserializer, run by the wrapper rather than by grpcio: bytes that
    are not a request message end the call INVALID_ARGUMENT (MALFORMED_REQUEST). Without a
    deserializer (the unary edge decodes), the bytes pass as they are."""

    def __init__(self, deserialize: Callable[[bytes], Any] | None, method: str) -> None:
        self._deserialize = deserialize
        self._message_name = method.rpartition("/")[2]

    def __call__(self, raw: Any, context: grpc.ServicerContext) -> Any:
        if self._deserialize is None:
            return raw
        try:
            return self._deserialize(raw)
        except DecodeError:
            _fail(
                context,
                MalformedRequestError(
                    f"the request is not a valid {self._message_name} request message"
                ),
            )


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
        """The handler in its wrapper, which takes raw bytes (request_deserializer None) and
        decodes them itself (`_Decoder`)."""
        decode = _Decoder(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _UnaryRequest(self, handler.unary_unary, method, decode),
                None,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _StreamRequests(self, handler.stream_unary, method, decode),
                None,
                handler.response_serializer,
            )
        behaviour = handler.stream_stream or handler.unary_stream
        if behaviour is None:  # not a method grpcio can serve either
            return handler
        return grpc.stream_stream_rpc_method_handler(
            _StreamResponses(
                self, behaviour, method, decode, unary_request=handler.unary_stream is not None
            ),
            None,
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


def _requests(
    lease: Lease, requests: Iterator[Any], decode: _Decoder, context: grpc.ServicerContext
) -> Iterator[Any]:
    """`requests`, decoded, timing each wait for the next message as a wait on the client."""
    while True:
        lease.wait_begins()
        try:
            raw = next(requests)
        except StopIteration:
            return
        finally:
            lease.wait_ends()
        yield decode(raw, context)


class _UnaryRequest:
    """A unary-unary behaviour in stream-unary form: it takes the request message itself, its
    wait noted in the budget, and passes the first message to the behaviour."""

    def __init__(
        self,
        limiter: StreamLimitInterceptor,
        behaviour: Callable[..., Any],
        method: str,
        decode: _Decoder,
    ) -> None:
        self._limiter = limiter
        self._budget = limiter.budget
        self._behaviour = behaviour
        self._decode = decode
        self._missing = _missing_message(method)
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
        return self._behaviour(self._decode(request, context), context)


def _missing_message(method: str) -> str:
    """What grpcio answers (UNIMPLEMENTED) for a unary request that came without a message."""
    return f'"{method}" requires exactly one request message.'


class _Guarded:
    """A streaming behaviour under the limits: what both stream wrappers hold."""

    def __init__(
        self,
        limiter: StreamLimitInterceptor,
        behaviour: Callable[..., Any],
        method: str,
        decode: _Decoder,
    ) -> None:
        self._limiter = limiter
        self._behaviour = behaviour
        self._method = method
        self._decode = decode


class _StreamRequests(_Guarded):
    """A stream-unary behaviour under the limits."""

    def __call__(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        lease = self._limiter.admit(context)
        if lease is None:
            return None
        try:
            return self._behaviour(_requests(lease, requests, self._decode, context), context)
        except NotImplementedError:
            _unimplemented(context, self._method)
        finally:
            lease.release()


class _StreamResponses(_Guarded):
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
        decode: _Decoder,
        *,
        unary_request: bool,
    ) -> None:
        super().__init__(limiter, behaviour, method, decode)
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
        guarded = _requests(lease, requests, self._decode, context)
        if not self._unary_request:
            return guarded
        request = next(guarded, _MISSING)
        if request is _MISSING and lease.ended is None and context.is_active():
            # what grpcio answers for a unary request without a message
            context.abort(grpc.StatusCode.UNIMPLEMENTED, _missing_message(self._method))
        return request

    def _blocking(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        lease = self._limiter.admit(context)
        if lease is None:
            return
        try:
            argument = self._argument(lease, requests, context)
            if argument is _MISSING or not context.is_active():
                return
            try:
                responses = iter(self._behaviour(argument, context))
            except NotImplementedError:
                _unimplemented(context, self._method)
            for response in responses:
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

        try:
            self._behaviour(argument, context, guarded_send)
        except NotImplementedError:
            _unimplemented(context, self._method)
