"""The pkggov-gateway process: embedded defaults, banner, one log line per RPC, graceful SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.adapters.cedar import default_policy_files
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    GatewayProcess,
    health_status,
    inherited_environ,
    request,
    wait_for,
)


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


def _policy_health(address: str) -> int:
    return health_status(address, "pkggov.policy")


def test_sighup_reloads_policy_and_a_bad_set_keeps_the_old(bin_dir: Path, tmp_path: Path) -> None:
    """SIGHUP with a broken file: pkggov.policy NOT_SERVING, old set in force; fixed: SERVING."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    with spawn_gateway(bin_dir, PKGGOV_POLICY_POLICIES=str(policies)) as process:
        broken = policies / "zz-broken.cedar"
        broken.write_text('@id("broken")\nforbid(principal, action, resource) when { nope };\n')
        process.proc.send_signal(signal.SIGHUP)
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert wait_for(lambda: _policy_health(process.address) == not_serving)
        broken.unlink()
        process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _policy_health(process.address) == serving)
        process.proc.send_signal(signal.SIGTERM)
        assert 0 == process.proc.wait(timeout=20)


def test_sigterm_is_not_cancelled_by_a_following_sighup(bin_dir: Path) -> None:
    """SIGTERM then SIGHUP at once: the gateway still stops."""
    with spawn_gateway(bin_dir) as process:
        process.proc.send_signal(signal.SIGTERM)
        process.proc.send_signal(signal.SIGHUP)
        assert 0 == process.proc.wait(timeout=20)


def test_invalid_policy_at_start_exits_2_naming_file_and_line(
    bin_dir: Path, tmp_path: Path
) -> None:
    """A syntax error in a policy file: exit 2, one line 'policy.policies: <file>:<line>: ...'
    (more start-up failures in test_gateway_startup.py)."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    broken = policies / "zz-broken.cedar"
    broken.write_text('@id("broken")\npermit(principal,\n  action resource);\n')
    env = {
        **inherited_environ(),
        "PKGGOV_POLICY_POLICIES": str(policies),
        "PKGGOV_SERVER_LISTEN": "127.0.0.1:0",
    }
    result = subprocess.run(
        [str(bin_dir / "pkggov-gateway"), "--dev"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert 2 == result.returncode
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"pkggov-gateway: policy.policies: {broken}:3: "
    )
