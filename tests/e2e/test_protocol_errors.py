"""Calls no servicer can answer — a method it does not implement, request bytes that are not a
request message — on every kind of method: UNIMPLEMENTED and INVALID_ARGUMENT with one
ErrorInfo, nothing logged at error level (no traceback), and the server keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
import structlog.testing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.interceptors import RpcEdgeInterceptor
from pkggov_gateway.api.server import (
    AUDIT_HEALTH_NAME,
    LIVENESS_HEALTH_NAME,
    POLICY_HEALTH_NAME,
    SERVICE_NAME,
)
from pkggov_gateway.api.stream_budget import StreamLimits
from pkggov_gateway.api.streams import StreamLimitInterceptor
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import (
    DELETE_METHOD,
    PRINCIPAL_KEY,
    GatewayFactory,
    health_status,
    request,
    rich_error,
    stub_for,
)

PKGGOV_METHODS = [
    f"/{service.full_name}/{method.name}"
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
"""Every method of every pkggov service, as the proto defines them (new ones included)."""
HEALTH = "/grpc.health.v1.Health"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVING = health_pb2.HealthCheckResponse.SERVING
GARBAGE = b"\xff\xff"
"""A truncated field tag: no message of any type parses from it."""


@contextmanager
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Assert that nothing is logged at error level (ours through structlog, grpcio's through
    the standard library) while the block runs."""
    with caplog.at_level(logging.WARNING), structlog.testing.capture_logs() as ours:
        yield
    ours_errors = [entry for entry in ours if entry["log_level"] in {"error", "critical"}]
    theirs = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert ([], []) == (ours_errors, theirs)


def _send_garbage(channel: grpc.Channel, method: str, kind: str) -> None:
    """Call `method` (its grpcio multicallable kind) with GARBAGE as its request bytes, and
    read every response."""
    call = getattr(channel, kind)(method, None, None)  # bytes sent and returned as they are
    if kind == "stream_stream":
        list(call(iter([GARBAGE]), timeout=5))
    elif kind == "unary_stream":
        list(call(GARBAGE, timeout=5))
    else:
        call(GARBAGE, timeout=5)


def test_health_list_answers_every_status(
    gateway: Gateway, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Health/List (listed by reflection) answers every status Check answers on the main port;
    the health-only port serves Check alone, so List is UNIMPLEMENTED there."""
    with no_error_logged(caplog), grpc.insecure_channel(gateway.address) as channel:
        listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    names = {"", SERVICE_NAME, POLICY_HEALTH_NAME, AUDIT_HEALTH_NAME, LIVENESS_HEALTH_NAME}
    assert names <= set(listed.statuses)
    assert {SERVING} == {listed.statuses[name].status for name in names}
    assert {name: health_status(gateway.address, name) for name in listed.statuses} == {
        name: reply.status for name, reply in listed.statuses.items()
    }

    with make_gateway(server={"health_listen": "127.0.0.1:0"}) as gw:
        assert gw.server.health_address is not None
        with (
            no_error_logged(caplog),
            grpc.insecure_channel(gw.server.health_address) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert grpc.StatusCode.UNIMPLEMENTED == raised.value.code()


class _Anyone:
    """An authenticator that lets every caller in (the methods under test come after it)."""

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        return Principal("anyone", AuthMethod.DEV, peer)


@pytest.fixture
def unimplemented() -> Iterator[str]:
    """A server behind the gateway's interceptors serving the generated base servicers (every
    method raises NotImplementedError); its address."""
    server = grpc.server(
        ThreadPoolExecutor(4),
        interceptors=[
            StreamLimitInterceptor(
                StreamLimits(max_streams=2, max_per_peer=2, idle_seconds=5, max_seconds=30)
            ),
            RpcEdgeInterceptor(_Anyone()),
        ],
    )
    for name in pb.DESCRIPTOR.services_by_name:  # every pkggov service, new ones included
        base = getattr(pb_grpc, f"{name}Servicer")  # the generated base: implements nothing
        getattr(pb_grpc, f"add_{name}Servicer_to_server")(base(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_pb2_grpc.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def test_methods_a_servicer_does_not_implement_are_unimplemented(
    unimplemented: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A method the servicer leaves to its generated base class — unary (a pkggov method, health
    Check and List) or streaming (Watch) — answers UNIMPLEMENTED, reason UNIMPLEMENTED, naming
    the method, with no traceback logged."""
    with no_error_logged(caplog), grpc.insecure_channel(unimplemented) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        calls: dict[str, Callable[[], object]] = {
            DELETE_METHOD: lambda: pb_grpc.PackageGovernanceServiceStub(
                channel
            ).DeletePackageVersions(request(), timeout=5),
            f"{HEALTH}/Check": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
            f"{HEALTH}/List": lambda: health.List(health_pb2.HealthListRequest(), timeout=5),
            f"{HEALTH}/Watch": lambda: next(
                health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as raised:
                call()
            error = rich_error(raised.value)
            expected = (
                grpc.StatusCode.UNIMPLEMENTED,
                "UNIMPLEMENTED",
                f"{method} is not implemented by this gateway",
            )
            assert expected == (error.code, error.reason, error.message)


def test_garbage_request_bytes_are_invalid_argument_on_every_method(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not a request message, sent to a stream-stream method (reflection), a
    unary-stream one (Watch), a unary one (Check) and the health-only port's Check, answer
    INVALID_ARGUMENT / MALFORMED_REQUEST naming the method, as DeletePackageVersions does, with
    no traceback logged; reflection, Watch and deletes then work as before."""
    with make_gateway(server={"health_listen": "127.0.0.1:0"}) as gw:
        assert gw.server.health_address is not None
        targets = [
            (gw.address, REFLECTION, "stream_stream"),
            (gw.address, f"{HEALTH}/Watch", "unary_stream"),
            (gw.address, f"{HEALTH}/Check", "unary_unary"),
            (gw.server.health_address, f"{HEALTH}/Check", "unary_unary"),
        ]
        with no_error_logged(caplog):
            for address, method, kind in targets:
                with (
                    grpc.insecure_channel(address) as channel,
                    pytest.raises(grpc.RpcError) as raised,
                ):
                    _send_garbage(channel, method, kind)
                error = rich_error(raised.value)
                name = method.rpartition("/")[2]
                expected = (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "MALFORMED_REQUEST",
                    f"the request is not a valid {name} request message",
                )
                assert expected == (error.code, error.reason, error.message), (address, method)

            with grpc.insecure_channel(gw.address) as channel:
                listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
                services = {s.name for s in next(listing).list_services_response.service}
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert SERVING == next(watch).status
                watch.cancel()
            with stub_for(gw) as stub:
                deleted = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=5)
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        assert ["1.0.0"] == list(deleted.successful_versions)


def test_every_pkggov_method_a_servicer_does_not_implement_is_unimplemented(
    unimplemented: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each method of each pkggov service (enumerated from the proto), left to the generated
    base class, answers UNIMPLEMENTED naming it, with no traceback logged."""
    with no_error_logged(caplog), grpc.insecure_channel(unimplemented) as channel:
        for method in PKGGOV_METHODS:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(method, None, None)(b"", timeout=5)
            error = rich_error(raised.value)
            expected = (
                grpc.StatusCode.UNIMPLEMENTED,
                "UNIMPLEMENTED",
                f"{method} is not implemented by this gateway",
            )
            assert expected == (error.code, error.reason, error.message), method


def test_garbage_request_bytes_are_invalid_argument_on_every_pkggov_method(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not a request message, sent by an identified caller to every method of
    every pkggov service (enumerated from the proto; a gateway with a recovery window, so
    that every method is served): INVALID_ARGUMENT / MALFORMED_REQUEST naming the method's
    message, with its audit event id, no traceback logged; deletes then work as before."""
    recovery = {"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600.0}
    with make_gateway(recovery=recovery) as gw:
        with no_error_logged(caplog), grpc.insecure_channel(gw.address) as channel:
            for method in PKGGOV_METHODS:
                with pytest.raises(grpc.RpcError) as raised:
                    channel.unary_unary(method, None, None)(
                        GARBAGE, timeout=5, metadata=((PRINCIPAL_KEY, "alice"),)
                    )
                error = rich_error(raised.value)
                name = method.rpartition("/")[2]
                expected = (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "MALFORMED_REQUEST",
                    f"the request is not a valid {name} request message",
                )
                assert expected == (error.code, error.reason, error.message), method
                assert error.metadata.get("audit_event_id"), method
        with stub_for(gw) as stub:
            deleted = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=5)
    assert ["1.0.0"] == list(deleted.successful_versions)
