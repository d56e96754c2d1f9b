"""The stream limits: the budget, the per-peer cap, idle and age ends, unary calls slow to send
their request message, and the interceptor's handling of each kind of method."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from pkggov_gateway.api.stream_budget import (
    BUDGET,
    IDLE,
    MAX_AGE,
    MESSAGE_BUDGET,
    MESSAGE_GRACE,
    MESSAGE_LATE,
    MESSAGE_PEER,
    PEER,
    StreamBudget,
    StreamLimits,
    StreamRefusedError,
    peer_host,
)
from pkggov_gateway.api.streams import StreamLimitInterceptor

LIMITS = StreamLimits(
    max_streams=3, max_per_peer=2, idle_seconds=10.0, max_seconds=300.0, message_seconds=5.0
)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def budget(clock: Clock) -> StreamBudget:
    return StreamBudget(LIMITS, clock)


def _nothing(reason: str) -> None:
    del reason


def test_admits_up_to_the_budget_and_the_peer_cap(budget: StreamBudget) -> None:
    """Two streams from one host, then that host is refused (PEER) while another host is
    admitted; at max_streams everyone is refused (BUDGET). A release frees a place once."""
    a1 = budget.admit("10.0.0.1", _nothing)
    budget.admit("10.0.0.1", _nothing)
    with pytest.raises(StreamRefusedError) as per_peer:
        budget.admit("10.0.0.1", _nothing)
    assert PEER == per_peer.value.reason
    assert "2 streaming calls are open from 10.0.0.1" in str(per_peer.value)
    budget.admit("10.0.0.2", _nothing)
    with pytest.raises(StreamRefusedError) as full:
        budget.admit("10.0.0.3", _nothing)
    assert BUDGET == full.value.reason
    assert 3 == budget.open
    a1.release()
    a1.release()
    assert 2 == budget.open
    budget.admit("10.0.0.1", _nothing)
    with pytest.raises(StreamRefusedError):
        budget.admit("10.0.0.3", _nothing)


def test_a_stream_waiting_on_its_client_is_ended_when_idle(
    budget: StreamBudget, clock: Clock
) -> None:
    """Only time spent waiting on the client counts (nested waits from the first), each
    stream is ended once, and it keeps its place until released."""
    ended: list[tuple[str, str]] = []
    waiting = budget.admit("a", lambda reason: ended.append(("waiting", reason)))
    busy = budget.admit("b", lambda reason: ended.append(("busy", reason)))
    waiting.wait_begins()
    clock.now += 6
    waiting.wait_begins()
    waiting.wait_ends()
    assert [] == budget.sweep()
    clock.now += 4
    assert [IDLE] == budget.sweep()
    assert [] == budget.sweep()
    assert [("waiting", IDLE)] == ended
    assert (IDLE, None) == (waiting.ended, busy.ended)
    assert 2 == budget.open
    waiting.release()
    assert 1 == budget.open
    busy.wait_begins()
    clock.now += 9
    busy.wait_ends()
    clock.now += 9
    assert [] == budget.sweep()


def test_any_stream_is_ended_at_its_maximum_age(budget: StreamBudget, clock: Clock) -> None:
    """A stream that never waits on its client is still ended at max_seconds; a failing
    end does not stop the others."""
    ended: list[str] = []

    def broken(reason: str) -> None:
        raise RuntimeError(reason)

    budget.admit("a", broken)
    budget.admit("b", ended.append)
    clock.now += 299
    assert [] == budget.sweep()
    clock.now += 1
    assert [MAX_AGE, MAX_AGE] == budget.sweep()
    assert [MAX_AGE] == ended


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.1:5678", "10.0.0.1"),
        ("ipv6:%5B::1%5D:5678", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("ipv6:%5B::ffff:10.0.0.1%5D:5678", "10.0.0.1"),
        ("unix:/run/pkggov.sock", "unix"),
        ("unix-abstract:pkggov", "unix-abstract"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    """The per-peer cap counts by host, whatever the port."""
    assert host == peer_host(peer)


class FakeContext:
    """The part of grpc.ServicerContext the interceptor uses."""

    def __init__(self, peer: str = "ipv4:10.0.0.1:1") -> None:
        self._peer = peer
        self.callbacks: list[Callable[[], None]] = []
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.cancelled = False

    def peer(self) -> str:
        return self._peer

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError(details)

    def cancel(self) -> None:
        self.cancelled = True


def _details(method: str) -> Any:
    class Details(grpc.HandlerCallDetails):
        pass

    details = Details()
    details.method = method
    details.invocation_metadata = ()
    return details


def _echo(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield from requests


def test_unary_unary_handlers_are_served_in_stream_unary_form() -> None:
    """A unary-unary method becomes stream-unary, its deserializer (None: raw bytes, as the
    edge interceptor takes them), serializer and thread pool kept, built once per method; an
    unknown method stays None."""
    pool = ThreadPoolExecutor(1)

    def echo(request: bytes, context: Any) -> bytes:
        return request

    echo.experimental_thread_pool = pool  # type: ignore[attr-defined]
    handler = grpc.unary_unary_rpc_method_handler(echo, None, bytes)
    interceptor = StreamLimitInterceptor(LIMITS)
    wrapped = interceptor.intercept_service(lambda _: handler, _details("/a.S/U"))
    assert wrapped is not None
    assert (True, False) == (wrapped.request_streaming, wrapped.response_streaming)
    assert (None, bytes) == (wrapped.request_deserializer, wrapped.response_serializer)
    assert wrapped.stream_unary is not None
    assert pool is wrapped.stream_unary.experimental_thread_pool  # type: ignore[attr-defined]
    assert wrapped is interceptor.intercept_service(lambda _: handler, _details("/a.S/U"))
    other = grpc.unary_unary_rpc_method_handler(echo)
    assert wrapped is not interceptor.intercept_service(lambda _: other, _details("/a.S/U"))
    assert None is interceptor.intercept_service(lambda _: None, _details("/a.S/None"))
    pool.shutdown()


def _unary(interceptor: StreamLimitInterceptor, behaviour: Callable[[Any, Any], Any]) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    wrapped = interceptor.intercept_service(lambda _: handler, _details("/a.S/U"))
    assert wrapped is not None
    return wrapped.stream_unary


def test_a_unary_call_is_served_its_first_message() -> None:
    """The behaviour gets the first message (a second is ignored) and its answer is returned;
    the wait is over once the message is there."""
    interceptor = StreamLimitInterceptor(LIMITS)
    seen: list[bytes] = []

    def behaviour(request: bytes, context: Any) -> bytes:
        seen.append(request)
        assert 0 == interceptor.budget.waiting
        return request + b"!"

    context: Any = FakeContext()
    assert b"a!" == _unary(interceptor, behaviour)(iter([b"a", b"b"]), context)
    assert [b"a"] == seen


def test_a_unary_call_without_a_message_is_unimplemented() -> None:
    """A client that closes without a message gets what grpcio answers a unary call without
    one, and the behaviour is not called."""
    interceptor = StreamLimitInterceptor(LIMITS)
    fake = FakeContext()
    context: Any = fake
    with pytest.raises(RuntimeError):
        _unary(interceptor, lambda request, context: pytest.fail("called"))(iter([]), context)
    expected = (grpc.StatusCode.UNIMPLEMENTED, '"/a.S/U" requires exactly one request message.')
    assert expected == fake.aborted
    assert 0 == interceptor.budget.waiting


def test_a_unary_call_ended_while_its_message_arrives_is_not_served(clock: Clock) -> None:
    """If the sweeper ends the call as its message comes, the behaviour is not called and the
    call is answered as the sweeper ended it."""
    interceptor = StreamLimitInterceptor(LIMITS, clock=clock)

    def late() -> Iterator[bytes]:
        clock.now += LIMITS.message_seconds
        assert [MESSAGE_LATE] == interceptor.budget.sweep()
        yield b"a"

    fake = FakeContext()
    context: Any = fake
    with pytest.raises(RuntimeError):
        _unary(interceptor, lambda request, context: pytest.fail("called"))(late(), context)
    expected = (grpc.StatusCode.DEADLINE_EXCEEDED, "no request message from the client within 5 s")
    assert (expected, True) == (fake.aborted, fake.cancelled)


def test_calls_waiting_briefly_for_their_message_are_never_ended(
    budget: StreamBudget, clock: Clock
) -> None:
    """However many calls wait, from however few hosts, none is ended within MESSAGE_GRACE,
    and none whose wait is over; their peers are not even asked."""
    ended: list[str] = []

    def unasked() -> str:
        raise AssertionError("peer asked")

    waiters = [budget.begin_wait(unasked, ended.append) for _ in range(20)]
    assert 20 == budget.waiting
    clock.now += MESSAGE_GRACE * 0.9
    assert [] == budget.sweep()
    assert pytest.approx(1000 + MESSAGE_GRACE) == budget.next_due
    for waiter in waiters:
        assert None is budget.end_wait(waiter)
    clock.now += 60
    assert [] == budget.sweep()
    assert (0, None, []) == (budget.waiting, budget.next_due, ended)


def test_slow_calls_share_the_caps_with_streams(budget: StreamBudget, clock: Clock) -> None:
    """Past MESSAGE_GRACE, the oldest waiting calls are kept while a host has fewer than
    max_per_peer streams and slow calls, and the server fewer than max_streams; the newer ones
    are ended at once (MESSAGE_PEER, then MESSAGE_BUDGET), each once."""
    ended: list[tuple[int, str]] = []

    def waiting(number: int, host: str) -> Any:
        clock.now += 0.001
        return budget.begin_wait(lambda: f"ipv4:{host}:1", lambda r: ended.append((number, r)))

    budget.admit("10.0.0.1", _nothing)
    calls = [waiting(n, "10.0.0.1") for n in range(3)] + [waiting(n, "10.0.0.2") for n in (3, 4)]
    clock.now += MESSAGE_GRACE
    reasons = budget.sweep()
    assert [MESSAGE_PEER, MESSAGE_PEER, MESSAGE_BUDGET] == reasons
    assert [(1, MESSAGE_PEER), (2, MESSAGE_PEER), (4, MESSAGE_BUDGET)] == ended
    assert [None, MESSAGE_PEER, MESSAGE_PEER, None, MESSAGE_BUDGET] == [c.ended for c in calls]
    assert [] == budget.sweep()
    assert MESSAGE_PEER == budget.end_wait(calls[1])
    assert 4 == budget.waiting
    assert pytest.approx(calls[0].since + LIMITS.message_seconds) == budget.next_due


def test_a_call_waiting_too_long_for_its_message_is_ended(
    budget: StreamBudget, clock: Clock
) -> None:
    """A slow call within the caps is kept until message_seconds, then ended (MESSAGE_LATE)."""
    ended: list[str] = []
    budget.begin_wait(lambda: "ipv4:10.0.0.1:1", ended.append)
    clock.now += LIMITS.message_seconds - 0.01
    assert [] == budget.sweep()
    clock.now += 0.01
    assert [MESSAGE_LATE] == budget.sweep()
    assert [MESSAGE_LATE] == ended
    assert None is budget.next_due


def test_a_crowd_of_waiting_calls_wakes_the_sweeper(budget: StreamBudget) -> None:
    """on_crowded is called once more calls wait (with the open streams) than the smaller cap
    allows: only then may one be due at MESSAGE_GRACE."""
    crowded: list[int] = []
    budget.on_crowded = lambda: crowded.append(budget.waiting)
    budget.begin_wait(lambda: "", _nothing)
    budget.begin_wait(lambda: "", _nothing)
    assert [] == crowded
    budget.admit("10.0.0.1", _nothing)
    budget.begin_wait(lambda: "", _nothing)
    assert [3] == crowded


def test_streaming_handlers_are_wrapped_once_per_method() -> None:
    """Stream-stream and unary-stream methods become stream-stream under the limits (their
    response serializer and grpcio's non-blocking flag kept; requests taken as bytes, which the
    wrapper decodes); stream-unary stays stream-unary."""
    interceptor = StreamLimitInterceptor(LIMITS)

    def watch(request: bytes, context: Any, send: Any = None) -> None:
        del request, context, send

    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    unary_stream = grpc.unary_stream_rpc_method_handler(watch, bytes, bytes)
    wrapped = interceptor.intercept_service(lambda _: unary_stream, _details("/a.S/Watch"))
    assert wrapped is not None
    assert (True, True) == (wrapped.request_streaming, wrapped.response_streaming)
    assert (None, bytes) == (wrapped.request_deserializer, wrapped.response_serializer)
    assert wrapped.stream_stream is not None
    assert wrapped.stream_stream.experimental_non_blocking  # type: ignore[attr-defined]
    again = interceptor.intercept_service(lambda _: unary_stream, _details("/a.S/Watch"))
    assert wrapped is again
    stream_unary = grpc.stream_unary_rpc_method_handler(lambda requests, context: b"")
    wrapped = interceptor.intercept_service(lambda _: stream_unary, _details("/a.S/Up"))
    assert wrapped is not None
    assert wrapped.stream_unary is not None


def test_a_blocking_stream_holds_its_place_until_it_ends() -> None:
    """Admitted, a stream counts until its handler finishes; beyond the budget the next is
    refused with RESOURCE_EXHAUSTED before its handler runs."""
    limits = StreamLimits(max_streams=1, max_per_peer=1, idle_seconds=10.0, max_seconds=300.0)
    interceptor = StreamLimitInterceptor(limits)
    handler = grpc.stream_stream_rpc_method_handler(_echo)
    wrapped = interceptor.intercept_service(lambda _: handler, _details("/a.S/Echo"))
    assert wrapped is not None
    assert wrapped.stream_stream is not None
    context: Any = FakeContext()
    responses = wrapped.stream_stream(iter([b"1", b"2"]), context)
    assert b"1" == next(responses)
    assert 1 == interceptor.budget.open
    refused = FakeContext()
    second: Any = refused
    with pytest.raises(RuntimeError):
        next(wrapped.stream_stream(iter([b"x"]), second))
    assert refused.aborted is not None
    assert grpc.StatusCode.RESOURCE_EXHAUSTED == refused.aborted[0]
    assert [b"2"] == list(responses)
    assert 0 == interceptor.budget.open


def test_a_stream_whose_client_takes_no_response_is_idle(clock: Clock) -> None:
    """While a response waits to be taken (the handler is suspended at it), the stream waits
    on its client: after idle_seconds it is ended (here, without grpcio's call object, by
    cancelling it); once the next response is asked for, it no longer waits."""
    interceptor = StreamLimitInterceptor(LIMITS, clock=clock)
    handler = grpc.unary_stream_rpc_method_handler(lambda request, context: iter([request] * 3))
    wrapped = interceptor.intercept_service(lambda _: handler, _details("/a.S/Many"))
    assert wrapped is not None
    assert wrapped.stream_stream is not None
    fake = FakeContext()
    context: Any = fake
    responses = wrapped.stream_stream(iter([b"r"]), context)
    assert b"r" == next(responses)
    clock.now += 9
    assert b"r" == next(responses)
    clock.now += 9
    assert [] == interceptor.budget.sweep()
    clock.now += 1
    assert [IDLE] == interceptor.budget.sweep()
    assert fake.cancelled
