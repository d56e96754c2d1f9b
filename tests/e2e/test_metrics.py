"""The Prometheus endpoint: scraped over HTTP from a real gateway after real calls."""

from __future__ import annotations

import grpc
import pytest

from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import DELETE_METHOD, GatewayFactory, Samples, request, scrape, stub_for


def metrics(gateway: Gateway) -> Samples:
    """Every sample of `gateway`'s /metrics, by name and labels."""
    assert gateway.metrics_address is not None
    return scrape(f"http://{gateway.metrics_address}/metrics")


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_calls_decisions_upstream_and_audit_are_counted(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Two deletes (one throttled once upstream, then retried) and one bad request: RPCs by
    code, decisions by outcome, upstream attempts by outcome with latency, rate-limit waits,
    audit commits and in-flight calls all show on /metrics."""
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="throttle", count=1))
    with make_gateway() as gw, stub_for(gw) as stub:
        stub.DeletePackageVersions(request(versions=["1.0.0", "9.9.9"]), timeout=10)
        stub.DeletePackageVersions(request(versions=["1.1.0"]), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.DeletePackageVersions(request(domain="Bad Domain"), timeout=10)
        samples = metrics(gw)
    assert 2 == value(samples, "pkggov_rpcs_total", method=DELETE_METHOD, code="OK")
    assert 1 == value(samples, "pkggov_rpcs_total", method=DELETE_METHOD, code="INVALID_ARGUMENT")
    assert 3 == value(samples, "pkggov_rpc_duration_seconds_count", method=DELETE_METHOD)
    assert 0 == value(samples, "pkggov_rpcs_in_flight", method=DELETE_METHOD)
    assert 2 == value(samples, "pkggov_decisions_total", outcome="allowed")
    assert 1 == value(samples, "pkggov_decisions_total", outcome="not_found")
    delete_op = "DeletePackageVersions"
    assert 1 == value(
        samples, "pkggov_upstream_calls_total", operation=delete_op, outcome="throttled"
    )
    assert 2 == value(samples, "pkggov_upstream_calls_total", operation=delete_op, outcome="ok")
    assert 3 == value(samples, "pkggov_upstream_call_duration_seconds_count", operation=delete_op)
    assert 2 == value(
        samples, "pkggov_upstream_calls_total", operation="ListPackageVersions", outcome="ok"
    )
    assert 3 == value(samples, "pkggov_rate_limit_wait_seconds_count", kind="write")
    assert 2 == value(samples, "pkggov_rate_limit_wait_seconds_count", kind="read")
    assert 2 == value(samples, "pkggov_audit_commit_duration_seconds_count", kind="intent")
    assert 3 == value(samples, "pkggov_audit_commit_duration_seconds_count", kind="outcome")
    assert 0 == value(samples, "pkggov_audit_commit_failures_total", kind="intent")
    assert 1 == value(samples, "pkggov_audit_store_up")
    assert value(samples, "process_resident_memory_bytes") > 0


def test_policy_reloads_are_counted_by_result(make_gateway: GatewayFactory) -> None:
    """Reloads start at 0 for both results and count each reload."""
    with make_gateway() as gw:
        before = metrics(gw)
        assert gw.reload_policy()
        after = metrics(gw)
    assert (0, 0) == (
        value(before, "pkggov_policy_reloads_total", result="ok"),
        value(before, "pkggov_policy_reloads_total", result="failed"),
    )
    assert 1 == value(after, "pkggov_policy_reloads_total", result="ok")


def test_metrics_can_be_switched_off(make_gateway: GatewayFactory) -> None:
    """metrics.listen = "" serves no endpoint."""
    with make_gateway(metrics={"listen": ""}) as gw:
        assert gw.metrics_address is None
