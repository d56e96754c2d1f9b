"""The pkggov-gateway process: embedded defaults, banner, one log line per RPC, graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from tests.e2e.harness import GatewayProcess, request


def test_banner_prints_ready_to_paste_examples(gateway_process: GatewayProcess) -> None:
    """The banner names the address and gives grpcurl and CLI commands for it."""
    text = "\n".join(gateway_process.banner)
    assert f"grpcurl -plaintext {gateway_process.address} list" in text
    assert f"pkggov delete --target {gateway_process.address}" in text


def test_sigterm_drains_in_flight_calls_then_exits(gateway_process: GatewayProcess) -> None:
    """SIGTERM during a slow call: NOT_SERVING, the call completes OK, exit 0, logged."""
    fault = {"operation": "DeletePackageVersions", "kind": "latency", "latency_seconds": 2.0}
    post = urllib.request.Request(  # noqa: S310 - our loopback emulator
        f"{gateway_process.emulator_url}/_emulator/faults",
        data=json.dumps(fault).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=5) as answer:  # noqa: S310 - our loopback emulator
        assert 200 == answer.status
    outcome: dict[str, object] = {}
    with grpc.insecure_channel(gateway_process.address) as channel:
        stub = pb_grpc.PackageGovernanceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health_pb2.HealthCheckResponse.SERVING
            == health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        )

        def call() -> None:
            try:
                outcome["response"] = stub.DeletePackageVersions(
                    request(),
                    timeout=20,
                    metadata=(("x-request-id", "drain-1"), ("x-pkggov-principal", "alice")),
                )
            except grpc.RpcError as error:  # pragma: no cover - reported by the assertion
                outcome["error"] = error

        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=20)
        assert health_pb2.HealthCheckResponse.SERVING == next(watch).status
        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(0.7)  # the call is now waiting on the emulator
        gateway_process.proc.send_signal(signal.SIGTERM)
        assert health_pb2.HealthCheckResponse.NOT_SERVING == next(watch).status
        worker.join(timeout=15)
    assert "error" not in outcome, outcome.get("error")
    response = outcome["response"]
    assert ["1.0.0"] == list(response.successful_versions)  # type: ignore[attr-defined]
    assert 0 == gateway_process.proc.wait(timeout=15)
    assert gateway_process.proc.stderr is not None
    logs = [
        json.loads(line)
        for line in gateway_process.proc.stderr.read().splitlines()
        if line.startswith("{")
    ]
    rpc_lines = [
        entry
        for entry in logs
        if entry.get("event") == "rpc" and entry.get("request_id") == "drain-1"
    ]
    assert 1 == len(rpc_lines)
    line = rpc_lines[0]
    assert ("/pkggov.v1.PackageGovernanceService/DeletePackageVersions", "OK", "alice") == (
        line["method"],
        line["code"],
        line["principal"],
    )
    assert line["duration_ms"] >= 1500
    events = [entry["event"] for entry in logs]
    assert events.index("gateway.stopping") < events.index("gateway.stopped")
