"""server.workers = 2: the real `pkggov-gateway` as a supervisor of two worker processes on
one port, on SQLite and on PostgreSQL.

Over real gRPC: both workers serve (connections land on each, each records under its own
replica name), a request_id replayed on the other worker replays, two deletes of one package
arriving at different workers take turns (the cross-process package lock), SIGTERM drains both
and exits 0, and the audit chain the two wrote verifies. Then what the supervisor does when a
worker dies, fails to start, or SIGHUP arrives.

The PostgreSQL tests need PostgreSQL at postgresql://postgres@127.0.0.1:5432/test (trust
auth): skipped when it is unreachable, unless the CI environment variable is set (then they
fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.adapters.cedar import default_policy_files
from tests.conftest import pg_schema_url
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayProcess,
    external_upstream_env,
    inherited_environ,
    request,
    rich_error,
    wait_for,
)

REPLICA = "e2e"
WORKERS = {f"{REPLICA}-w0", f"{REPLICA}-w1"}

SEED = {
    "comment": "tests/e2e/test_workers.py",
    "domains": [
        {
            "name": "demo",
            "repositories": [
                {
                    "name": "dev-shared",
                    "packages": [
                        {
                            # Two versions, neither the latest (none is Published): deleting
                            # one leaves one, which never-delete-only-remaining-version keeps.
                            "format": "npm",
                            "name": "pair",
                            "versions": [
                                {"version": "1.0.0", "status": "Unlisted"},
                                {"version": "1.1.0", "status": "Unlisted"},
                            ],
                        },
                        {
                            "format": "npm",
                            "name": "left-pad",
                            "versions": [
                                {"version": v, "publishedTime": f"2025-0{i + 1}-01T00:00:00Z"}
                                for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0", "1.3.0"])
                            ],
                        },
                    ],
                }
            ],
        }
    ],
}


@dataclass
class Replica:
    """A running supervisor: its process, banner, workers' pids, and its stderr lines (read
    all along, so the pipe never fills)."""

    process: GatewayProcess
    pids: list[int]
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines read so far."""
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    """The emulator's seed file for these tests."""
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED))
    return path


def start_replica(stack: ExitStack, bin_dir: Path, **env: str) -> Replica:
    """`pkggov-gateway --dev` with two workers (and `env`), stopped when `stack` closes."""
    process = stack.enter_context(
        spawn_gateway(
            bin_dir,
            PKGGOV_SERVER_WORKERS="2",
            PKGGOV_AUDIT_REPLICA=REPLICA,
            PKGGOV_SERVER_HEALTH_LISTEN="127.0.0.1:0",
            **env,
        )
    )
    line = next(line for line in process.banner if "worker processes share it" in line)
    found = re.search(r"pids (\d+), (\d+); audit replicas (\S+), (\S+)\)", line)
    assert found, line
    assert (f"{REPLICA}-w0", f"{REPLICA}-w1") == found.group(3, 4)
    replica = Replica(process, [int(found.group(1)), int(found.group(2))])
    stderr = process.proc.stderr
    assert stderr is not None

    def read() -> None:
        try:
            for text in stderr:
                replica.lines.append(text.rstrip("\n"))
        except (OSError, ValueError):  # closed under it: the test ended first
            return

    replica._reader = threading.Thread(target=read, daemon=True)
    replica._reader.start()
    return replica


# --- calls ------------------------------------------------------------------------------------


def new_connection(address: str) -> grpc.Channel:
    """A channel with a connection of its own (grpc shares one between channels to one target
    by default), hence on whichever worker the kernel gives it."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def as_principal(principal: str) -> tuple[tuple[str, str]]:
    """The development identity metadata."""
    return ((PRINCIPAL_KEY, principal),)


def replica_of(address: str, event_id: str) -> str:
    """The audit replica that recorded `event_id` (AuditService, as an auditor)."""
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.AuditServiceStub(channel).GetAuditEvent(
            pb.GetAuditEventRequest(event_id=event_id), timeout=10, metadata=as_principal("carol")
        )
    return str(reply.event.entries[0].body.fields["replica"].string_value)


def outcome_of(address: str, event_id: str) -> dict[str, Any]:
    """The outcome entry's body of `event_id`."""
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.AuditServiceStub(channel).GetAuditEvent(
            pb.GetAuditEventRequest(event_id=event_id), timeout=10, metadata=as_principal("carol")
        )
    [outcome] = [e for e in reply.event.entries if e.kind == "outcome"]
    body: dict[str, Any] = MessageToDict(outcome.body)
    return body


def one_per_worker(address: str, stack: ExitStack) -> dict[str, grpc.Channel]:
    """A connection to each worker, by its replica name: new connections until each worker
    answered one (a dry run each, whose audit event names the worker that recorded it)."""
    found: dict[str, grpc.Channel] = {}
    for _ in range(60):
        channel = new_connection(address)
        stub = pb_grpc.PackageGovernanceServiceStub(channel)
        dry = stub.DeletePackageVersions(
            request(versions=["1.0.0"], validate_only=True),
            timeout=10,
            metadata=as_principal("alice"),
        )
        worker = replica_of(address, dry.audit_event_id)
        if worker in found:
            channel.close()
            continue
        found[worker] = channel
        stack.callback(channel.close)
        if len(found) == 2:
            return found
    raise AssertionError(f"60 connections reached only {sorted(found)}")


def emulator(process: GatewayProcess, path: str, body: Any = None, method: str = "GET") -> Any:
    """The emulator's control API (its faults, its call log)."""
    data = json.dumps(body).encode() if body is not None else None
    sent = urllib.request.Request(  # noqa: S310 - our loopback emulator
        f"{process.emulator_url}/_emulator/{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(sent, timeout=10) as answer:  # noqa: S310 - our loopback emulator
        return json.loads(answer.read() or b"null")


def calls_for(process: GatewayProcess, package: str) -> list[dict[str, Any]]:
    """The emulator's recorded calls about `package`, in the order received."""
    calls = emulator(process, "calls")["calls"]
    return [c for c in calls if c["params"].get("package") == package]


# --- the replica ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The audit store: a SQLite file, or a fresh schema of the tests' PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path}/audit.db"
    return pg_schema_url(request.getfixturevalue("pg_schema"))


@pytest.mark.slow
def test_two_workers_share_the_port_the_record_and_the_package_locks(
    bin_dir: Path, store: str, seed: Path
) -> None:
    """Both workers serve; a replay crosses workers; two deletes of one package at two
    workers take turns; SIGTERM drains and exits 0; the chain verifies."""
    with ExitStack() as stack:
        replica = start_replica(
            stack, bin_dir, PKGGOV_AUDIT_STORE=store, PKGGOV_EMULATOR_SEED=str(seed)
        )
        process = replica.process
        address = process.address
        assert len(set(replica.pids)) == 2
        for pid in replica.pids:
            os.kill(pid, 0)  # both alive
        workers = one_per_worker(address, stack)
        assert WORKERS == set(workers)
        w0, w1 = (pb_grpc.PackageGovernanceServiceStub(workers[w]) for w in sorted(workers))

        # A request_id first answered by worker 0, retried at worker 1: the recorded answer,
        # recorded as a replay by worker 1; CodeArtifact deleted once.
        retried = request(versions=["1.0.0"], request_id=str(uuid.uuid4()))
        first = w0.DeletePackageVersions(retried, timeout=10, metadata=as_principal("alice"))
        again, call = w1.DeletePackageVersions.with_call(
            retried, timeout=10, metadata=as_principal("alice")
        )
        assert first == again
        assert ["1.0.0"] == list(first.successful_versions)
        trailer = dict(call.trailing_metadata() or ())["x-pkggov-audit-event-id"]
        assert (f"{REPLICA}-w0", f"{REPLICA}-w1") == (
            replica_of(address, first.audit_event_id),
            replica_of(address, str(trailer)),
        )
        assert ("replayed", first.audit_event_id) == (
            outcome_of(address, str(trailer))["decision"],
            outcome_of(address, str(trailer))["replay_of"],
        )
        deletes = [c for c in calls_for(process, "left-pad") if c["operation"].startswith("Del")]
        assert 1 == len(deletes)

        # Two deletes of "pair" (two versions), one per worker, at once, each reading slowly:
        # under the lock the second reads after the first deleted, sees one version left, and
        # is denied by never-delete-only-remaining-version (without it both would delete).
        emulator(
            process,
            "faults",
            {
                "operation": "ListPackageVersions",
                "kind": "latency",
                "latency_seconds": 0.5,
                "count": 2,
            },
            method="POST",
        )
        results: dict[str, Any] = {}
        start = threading.Barrier(2)

        def delete(stub: pb_grpc.PackageGovernanceServiceStub, version: str) -> None:
            start.wait()
            try:
                results[version] = stub.DeletePackageVersions(
                    request(package="pair", versions=[version]),
                    timeout=20,
                    metadata=as_principal("alice"),
                )
            except grpc.RpcError as error:
                results[version] = rich_error(error)

        threads = [
            threading.Thread(target=delete, args=(w0, "1.0.0")),
            threading.Thread(target=delete, args=(w1, "1.1.0")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        deleted = [v for v, r in results.items() if isinstance(r, pb.DeletePackageVersionsResponse)]
        assert 1 == len(deleted), results
        [denied] = [r for v, r in results.items() if v not in deleted]
        assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (denied.code, denied.reason)
        assert "never-delete-only-remaining-version" in str(denied.details["PolicyDenial"])
        pair = [(c["operation"], c["receivedAt"]) for c in calls_for(process, "pair")]
        operations = [operation for operation, _ in pair]
        assert ["ListPackageVersions", "DeletePackageVersions", "ListPackageVersions"] == [
            o for o in operations if o in ("ListPackageVersions", "DeletePackageVersions")
        ], pair

        # SIGTERM while a delete is in flight at worker 0: it completes, both workers drain,
        # the supervisor exits 0.
        emulator(
            process,
            "faults",
            {
                "operation": "DeletePackageVersions",
                "kind": "latency",
                "latency_seconds": 1.5,
                "count": 1,
            },
            method="POST",
        )
        draining: dict[str, Any] = {}

        def slow_delete() -> None:
            try:
                draining["response"] = w0.DeletePackageVersions(
                    request(versions=["1.1.0"]),
                    timeout=20,
                    metadata=(*as_principal("alice"), ("x-request-id", "drain-w0")),
                )
            except grpc.RpcError as error:  # pragma: no cover - reported by the assertion
                draining["error"] = rich_error(error)

        def reads() -> int:  # the emulator records a call once it has answered it
            calls = calls_for(process, "left-pad")
            return sum(1 for c in calls if c["operation"] == "ListPackageVersions")

        before = reads()
        caller = threading.Thread(target=slow_delete)
        caller.start()
        assert wait_for(lambda: reads() > before)  # read: the (slow) delete follows at once
        time.sleep(0.3)  # the call is now waiting on the emulator's answer to its delete
        process.proc.send_signal(signal.SIGTERM)
        caller.join(20)
        assert "error" not in draining, draining.get("error")
        assert ["1.1.0"] == list(draining["response"].successful_versions)
        assert 0 == process.proc.wait(timeout=60)
        assert replica._reader is not None
        replica._reader.join(10)
    logs = replica.logs()
    served = {line.get("worker") for line in logs if line.get("event") == "rpc"}
    assert {0, 1} == served  # each worker's own log lines say it served
    events = [(line.get("event"), line.get("worker"), line.get("request_id")) for line in logs]
    [(_, drained_by, _)] = [e for e in events if e[2] == "drain-w0"]
    assert events.index(("gateway.stopping", drained_by, None)) < events.index(
        ("rpc", drained_by, "drain-w0")
    )  # its worker was draining when it answered
    assert 2 == sum(1 for line in logs if line.get("event") == "gateway.stopped")
    assert [True] == [line["clean"] for line in logs if line.get("event") == "workers.stopped"]
    verified = subprocess.run(
        [str(bin_dir / "pkggov-admin"), "audit", "verify", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == verified.returncode, verified.stdout + verified.stderr


def _health(channel: grpc.Channel, service: str) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return int(reply.status)


@pytest.mark.slow
def test_sighup_reaches_every_worker_and_a_dead_worker_stops_the_replica(
    bin_dir: Path, tmp_path: Path, seed: Path
) -> None:
    """SIGHUP to the supervisor: each worker reloads (a broken set turns pkggov.policy
    NOT_SERVING on both). A worker killed: the supervisor logs it, stops the other, exits 1."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    with ExitStack() as stack:
        replica = start_replica(
            stack, bin_dir, PKGGOV_POLICY_POLICIES=str(policies), PKGGOV_EMULATOR_SEED=str(seed)
        )
        process = replica.process
        workers = one_per_worker(process.address, stack)
        (policies / "zz-broken.cedar").write_text(
            '@id("broken")\nforbid(principal, action, resource) when { nope };\n'
        )
        process.proc.send_signal(signal.SIGHUP)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for name, channel in workers.items():

            def reloaded(channel: grpc.Channel = channel) -> bool:
                return bool(_health(channel, "pkggov.policy") == not_serving)

            assert wait_for(reloaded), name
        os.kill(replica.pids[1], signal.SIGKILL)
        assert 1 == process.proc.wait(timeout=60)
        assert replica._reader is not None
        replica._reader.join(10)
        with pytest.raises(ProcessLookupError):
            os.kill(replica.pids[0], 0)
    [died] = [line for line in replica.logs() if line.get("event") == "workers.worker_exited"]
    assert (1, replica.pids[1], -signal.SIGKILL) == (died["worker"], died["pid"], died["exit_code"])


def _entries(db: Path) -> list[dict[str, Any]]:
    """Every entry body of a SQLite store, in chain order (a plain read)."""
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        rows = conn.execute("SELECT body FROM audit_entries ORDER BY seq").fetchall()
    return [json.loads(body) for (body,) in rows]


@pytest.mark.slow
def test_only_the_first_worker_reconciles_another_replicas_orphan(
    bin_dir: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """A gateway killed with a delete in flight leaves an open intent under its replica name.
    Two workers start at once on its store, CodeArtifact answering reads slowly: the first
    reconciles the orphan, once, and both start (the second does not read CodeArtifact for an
    orphan the first closes)."""
    db = tmp_path / "audit.db"
    upstream = {"PKGGOV_AUDIT_STORE": f"sqlite:{db}", "PKGGOV_AUDIT_LOG": "off"}
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=30)
    )

    def intents() -> list[dict[str, Any]]:
        return [e for e in _entries(db) if e["kind"] == "intent"]

    old_env = external_upstream_env(emulator.endpoint_url, PKGGOV_AUDIT_REPLICA="gone", **upstream)
    with spawn_gateway(bin_dir, **old_env) as old:

        def doomed() -> None:
            with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(old.address) as ch:
                pb_grpc.PackageGovernanceServiceStub(ch).DeletePackageVersions(
                    request(versions=["1.0.0"]), timeout=5, metadata=as_principal("alice")
                )

        caller = threading.Thread(target=doomed)
        caller.start()
        assert wait_for(lambda: len(intents()) == 1)
        old.proc.kill()
        old.proc.wait(10)
        caller.join(10)
    [orphan] = intents()
    emulator.reset()
    emulator.add_fault(
        FaultRule(operation="ListPackageVersions", kind="latency", latency_seconds=1)
    )
    with ExitStack() as stack:
        start_replica(
            stack,
            bin_dir,
            **external_upstream_env(
                emulator.endpoint_url, PKGGOV_AUDIT_ORPHAN_AFTER_SECONDS="0.5", **upstream
            ),
        )
        closed = [
            e
            for e in _entries(db)
            if e["event_id"] == orphan["event_id"] and e["kind"] == "reconciliation"
        ]
        assert [f"{REPLICA}-w0"] == [e["replica"] for e in closed]


def _run(bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`pkggov-gateway --dev` with two workers, expected to fail at start-up."""
    return subprocess.run(
        [str(bin_dir / "pkggov-gateway"), "--dev"],
        capture_output=True,
        text=True,
        timeout=90,
        env={
            **inherited_environ(),
            "PKGGOV_SERVER_WORKERS": "2",
            "PKGGOV_SERVER_LISTEN": "127.0.0.1:0",
            "PKGGOV_EMULATOR_LISTEN": "127.0.0.1:0",
            "PKGGOV_METRICS_LISTEN": "127.0.0.1:0",
            "PKGGOV_AUDIT_STORE": f"sqlite:{env.pop('workdir')}/audit.db",
            "PKGGOV_AUDIT_LOG": "off",
            **env,
        },
        check=False,
    )


def test_a_worker_that_cannot_start_is_one_line_as_for_one_process(
    bin_dir: Path, tmp_path: Path
) -> None:
    """A broken policy: each worker fails; exit 2 with the one line naming file and line."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    broken = policies / "zz-broken.cedar"
    broken.write_text('@id("broken")\npermit(principal,\n  action resource);\n')
    result = _run(bin_dir, workdir=str(tmp_path), PKGGOV_POLICY_POLICIES=str(policies))
    assert 2 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"pkggov-gateway: policy.policies: {broken}:3: "
    )
    assert "listening on" not in result.stdout


def test_a_taken_port_is_refused_before_any_worker_starts(bin_dir: Path, tmp_path: Path) -> None:
    """Something listens on server.listen: exit 2 naming it, as for one process."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _run(bin_dir, workdir=str(tmp_path), PKGGOV_SERVER_LISTEN=listen)
    assert 2 == result.returncode, result.stderr
    assert (
        f"pkggov-gateway: server.listen {listen}: cannot listen: address already in use"
        == result.stderr.splitlines()[-1]
    )
