"""Idle or slow streams (reflection, Health/Watch), and unary calls that never send their request
message, in any number, do not delay other unary calls: streams are bounded, idle and old ones
are ended, calls slow to send their message are ended, and their threads are given back."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import (
    DELETE_METHOD,
    GatewayFactory,
    health_status,
    request,
    scrape,
    stub_for,
    wait_for,
)

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
WATCH = "/grpc.health.v1.Health/Watch"
CHECK = "/grpc.health.v1.Health/Check"
LIST = reflection_pb2.ServerReflectionRequest(list_services="")
SERVING = health_pb2.HealthCheckResponse.SERVING
LONG = 30.0
"""Client deadline of a stream: longer than the test, so that only the server ends it."""


class Streams:
    """Streams opened on one channel whose request iterators stay silent until `close()`."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._release = threading.Event()
        self._calls: list[Any] = []

    def _silent(self, *messages: Any) -> Iterator[Any]:
        yield from messages
        self._release.wait()

    def reflection(self, *messages: Any) -> Any:
        """A reflection stream sending `messages`, then nothing."""
        stub = reflection_pb2_grpc.ServerReflectionStub(self._channel)
        call = stub.ServerReflectionInfo(self._silent(*messages), timeout=LONG)
        self._calls.append(call)
        return call

    def watch(self) -> Any:
        """Health/Watch of the server, as a client sends it (its one request)."""
        call = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=LONG
        )
        self._calls.append(call)
        return call

    def without_message(self, method: str, response: Any) -> Any:
        """A call of `method` that sends its headers and never a message."""
        unsent = self._channel.stream_stream(method, None, response.FromString)
        call = unsent(self._silent(), timeout=LONG)
        self._calls.append(call)
        return call

    def unary_without_message(self, method: str) -> Any:
        """A call of unary `method` that sends its headers and never its message: a client
        streaming its requests, its iterator silent (a future of the raw response)."""
        unsent = self._channel.stream_unary(method, None, None)
        call = unsent.future(self._silent(), timeout=LONG)
        self._calls.append(call)
        return call

    def close(self) -> None:
        """Cancel every stream, let the request iterators end, close the channel."""
        for call in self._calls:
            call.cancel()
        self._release.set()
        self._channel.close()


def _streams(stack: ExitStack, gateway: Gateway) -> Streams:
    streams = Streams(gateway.address)
    stack.callback(streams.close)
    return streams


def _first(call: Any) -> Any:
    """The stream's first response, or the error that ended it."""
    try:
        return next(call)
    except grpc.RpcError as error:
        return error


def _ended(call: Any) -> grpc.RpcError:
    """The error that ends the stream (after any responses)."""
    with pytest.raises(grpc.RpcError) as raised:
        for _ in call:
            pass
    return raised.value


def test_many_idle_streams_do_not_delay_unary_calls(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With the default 32 workers (8 streams), streams opened without a message, Health/Watch
    streams and 40 reflection streams each sent one message, all left silent: 8 are admitted,
    the others are refused at once with RESOURCE_EXHAUSTED; meanwhile an allowed delete from
    another principal, a dry run and Health/Check answer OK within a 5 s deadline. Once the
    streams are closed their places are free again."""
    server = {"max_streams_per_peer": 8, "stream_idle_seconds": LONG}
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server=server))
        streams = _streams(stack, gw)
        streams.without_message(REFLECTION, reflection_pb2.ServerReflectionResponse)
        streams.without_message(WATCH, health_pb2.HealthCheckResponse)
        assert wait_for(lambda: gw.server.open_streams == 2)
        watches = [streams.watch() for _ in range(2)]
        assert [SERVING, SERVING] == [_first(watch).status for watch in watches]
        firsts = [_first(streams.reflection(LIST)) for _ in range(40)]
        refused = [first for first in firsts if isinstance(first, grpc.RpcError)]
        assert 4 == len(firsts) - len(refused)
        assert {grpc.StatusCode.RESOURCE_EXHAUSTED} == {error.code() for error in refused}
        assert "8 streaming calls are open (server.max_streams)" in str(refused[0].details())
        assert 8 == gw.server.open_streams

        with stub_for(gw, principal="bob") as stub:
            deleted = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=5)
            dry_run = stub.DeletePackageVersions(
                request(versions=["1.1.0"], validate_only=True), timeout=5
            )
        assert ["1.0.0"] == list(deleted.successful_versions)
        assert pb.PACKAGE_VERSION_STATUS_DELETED == deleted.successful_versions["1.0.0"].status
        assert pb.VERSION_OUTCOME_WOULD_DELETE == dry_run.decisions["1.1.0"].outcome
        assert SERVING == health_status(gw.address, "")
        assert "Published" == emulator.version_status(
            "demo", "dev-shared", "npm", None, "left-pad", "1.1.0"
        )

        streams.close()
        assert wait_for(lambda: gw.server.open_streams == 0)
        again = _streams(stack, gw)
        assert isinstance(_first(again.reflection(LIST)), reflection_pb2.ServerReflectionResponse)


def test_idle_and_old_streams_are_ended(make_gateway: GatewayFactory) -> None:
    """A stream waiting on its client longer than server.stream_idle_seconds (a reflection
    stream after its answer, streams opened without a message) ends DEADLINE_EXCEEDED; a
    Health/Watch, which waits on nobody, ends UNAVAILABLE at server.stream_max_seconds. Their
    places are then free, and the ends are counted."""
    server = {"max_streams_per_peer": 8, "stream_idle_seconds": 0.5, "stream_max_seconds": 2.0}
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server=server))
        streams = _streams(stack, gw)
        answered = streams.reflection(LIST)
        assert isinstance(_first(answered), reflection_pb2.ServerReflectionResponse)
        silent = [
            streams.without_message(REFLECTION, reflection_pb2.ServerReflectionResponse),
            streams.without_message(WATCH, health_pb2.HealthCheckResponse),
        ]
        watch = streams.watch()
        assert SERVING == _first(watch).status
        for call in (answered, *silent):
            error = _ended(call)
            assert grpc.StatusCode.DEADLINE_EXCEEDED == error.code()
            assert "no message to or from the client for 0.5 s" == error.details()
        error = _ended(watch)
        assert grpc.StatusCode.UNAVAILABLE == error.code()
        assert "stream open for 2 s; reconnect" == error.details()
        assert wait_for(lambda: gw.server.open_streams == 0)
        samples = scrape(f"http://{gw.metrics_address}/metrics")
        ended = {
            reason: samples[("pkggov_stream_limits_total", frozenset({("reason", reason)}))]
            for reason in ("idle", "max_age")
        }
        assert {"idle": 3, "max_age": 1} == ended
        assert isinstance(_first(streams.reflection(LIST)), reflection_pb2.ServerReflectionResponse)


def test_streams_from_one_peer_are_capped(make_gateway: GatewayFactory) -> None:
    """Beyond server.max_streams_per_peer streams from one host, the next is refused at once
    with RESOURCE_EXHAUSTED, though the server-wide budget has room."""
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server={"max_streams_per_peer": 2}))
        streams = _streams(stack, gw)
        admitted = [_first(streams.reflection(LIST)) for _ in range(2)]
        assert all(isinstance(a, reflection_pb2.ServerReflectionResponse) for a in admitted)
        refused = _first(streams.reflection(LIST))
        assert isinstance(refused, grpc.RpcError)
        assert grpc.StatusCode.RESOURCE_EXHAUSTED == refused.code()
        assert "2 streaming calls are open from 127.0.0.1" in str(refused.details())


def test_health_only_port_has_no_stream_to_hold(make_gateway: GatewayFactory) -> None:
    """On server.health_listen (two threads), Watch calls that never send their message are
    UNIMPLEMENTED at once, and Check still answers."""
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server={"health_listen": "127.0.0.1:0"}))
        assert gw.server.health_address is not None
        streams = Streams(gw.server.health_address)
        stack.callback(streams.close)
        watches = [streams.without_message(WATCH, health_pb2.HealthCheckResponse) for _ in range(4)]
        codes = {_ended(watch).code() for watch in watches}
        assert {grpc.StatusCode.UNIMPLEMENTED} == codes
        assert SERVING == health_status(gw.server.health_address, "")


def _codes(calls: list[Any]) -> Counter[tuple[grpc.StatusCode, str]]:
    """How the calls ended: (code, details) and how many ended so."""
    ended: Counter[tuple[grpc.StatusCode, str]] = Counter()
    for call in calls:
        error = call.exception(timeout=LONG)
        assert isinstance(error, grpc.RpcError)
        ended[(error.code(), error.details() or "")] += 1
    return ended


SLOW_PEER = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too many calls from 127.0.0.1 are waiting to send their request message",
)


def test_unary_calls_without_their_message_do_not_starve_the_server(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """40 unary calls (deletes and Health/Check) that send headers and never their message,
    more than the 32 workers: an allowed delete from another principal, a dry run and a
    Health/Check still answer OK within a 5 s deadline. The oldest 4 (max_streams_per_peer)
    are kept until server.request_message_seconds and end DEADLINE_EXCEEDED; the others end
    RESOURCE_EXHAUSTED once they have waited 0.25 s. Then no call waits and the ends are
    counted. A call closed without a message is answered as grpcio answers it."""
    server = {"request_message_seconds": 2.0}
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server=server))
        streams = _streams(stack, gw)
        started = time.monotonic()
        held = [streams.unary_without_message(DELETE_METHOD) for _ in range(36)]
        held += [streams.unary_without_message(CHECK) for _ in range(4)]

        with stub_for(gw, principal="bob") as stub:
            deleted = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=5)
            dry_run = stub.DeletePackageVersions(
                request(versions=["1.1.0"], validate_only=True), timeout=5
            )
        assert ["1.0.0"] == list(deleted.successful_versions)
        assert pb.VERSION_OUTCOME_WOULD_DELETE == dry_run.decisions["1.1.0"].outcome
        assert SERVING == health_status(gw.address, "")
        answered = time.monotonic() - started

        late = (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "no request message from the client within 2 s",
        )
        assert {SLOW_PEER: 36, late: 4} == _codes(held)
        assert answered < 2.0 <= time.monotonic() - started
        assert wait_for(lambda: gw.server.waiting_calls == 0)
        samples = scrape(f"http://{gw.metrics_address}/metrics")
        ended = {
            reason: samples[("pkggov_stream_limits_total", frozenset({("reason", reason)}))]
            for reason in ("message_peer", "message_late")
        }
        assert {"message_peer": 36, "message_late": 4} == ended
        assert "Published" == emulator.version_status(
            "demo", "dev-shared", "npm", None, "left-pad", "1.1.0"
        )

        with grpc.insecure_channel(gw.address) as channel, pytest.raises(grpc.RpcError) as missing:
            channel.stream_unary(DELETE_METHOD, None, None)(iter(()), timeout=5)
        assert grpc.StatusCode.UNIMPLEMENTED == missing.value.code()
        expected = f'"{DELETE_METHOD}" requires exactly one request message.'
        assert expected == missing.value.details()


def test_health_only_port_is_not_starved_by_calls_without_their_message(
    make_gateway: GatewayFactory,
) -> None:
    """On server.health_listen (two threads, eight calls at once), six Check calls that never
    send their message do not keep Check from answering within 5 s: that port keeps none, each
    ends RESOURCE_EXHAUSTED once it has waited 0.25 s."""
    with ExitStack() as stack:
        gw = stack.enter_context(make_gateway(server={"health_listen": "127.0.0.1:0"}))
        assert gw.server.health_address is not None
        streams = Streams(gw.server.health_address)
        stack.callback(streams.close)
        held = [streams.unary_without_message(CHECK) for _ in range(6)]
        assert SERVING == health_status(gw.server.health_address, "")
        assert {SLOW_PEER: 6} == _codes(held)
