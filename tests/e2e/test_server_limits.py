"""Server limits: concurrent RPCs and the default deadline (keepalive: tests/unit)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pkggov_emulator import Emulator, FaultRule
from tests.e2e.harness import GatewayFactory, request, stub_for, wait_for


def test_calls_beyond_the_concurrency_limit_are_resource_exhausted(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With max_concurrent_rpcs = 2 and two slow deletes in flight, a third call is refused
    at once with RESOURCE_EXHAUSTED and sends nothing; the two finish OK, and the gateway
    takes calls again afterwards."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.5, count=2)
    )
    with (
        make_gateway(server={"max_concurrent_rpcs": 2}) as gw,
        stub_for(gw) as stub,
        ThreadPoolExecutor(2) as pool,
    ):
        # two packages: calls on one package take turns (its lock), so they would not overlap
        slow = [
            pool.submit(stub.DeletePackageVersions, slow_request, timeout=10)
            for slow_request in (
                request(versions=["1.0.0"]),
                request(namespace="acme", package="widgets", versions=["2.0.0"]),
            )
        ]
        assert wait_for(lambda: len(gw.audit_store.open_intents()) == 2)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.DeletePackageVersions(request(versions=["1.2.0"]), timeout=10)
        assert time.monotonic() - started < 1.0
        assert grpc.StatusCode.RESOURCE_EXHAUSTED == refused.value.code()
        assert [1, 1] == [len(f.result(timeout=10).successful_versions) for f in slow]
        after = stub.DeletePackageVersions(request(versions=["1.2.0"]), timeout=10)
    assert ["1.2.0"] == list(after.successful_versions)
    deleted = [c.params["versions"] for c in emulator.calls("DeletePackageVersions")]
    assert sorted(deleted) == [["1.0.0"], ["1.2.0"], ["2.0.0"]]


def test_a_call_without_deadline_gets_the_default_one(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A caller that sets no deadline is bounded by server.default_deadline_seconds: with an
    upstream slower than that, the answer is DEADLINE_EXCEEDED after about that long."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=5.0, count=1)
    )
    with make_gateway(server={"default_deadline_seconds": 1.0}) as gw, stub_for(gw) as stub:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.DeletePackageVersions(request())  # no timeout
        elapsed = time.monotonic() - started
    assert grpc.StatusCode.DEADLINE_EXCEEDED == raised.value.code()
    assert 0.5 < elapsed < 3.0
