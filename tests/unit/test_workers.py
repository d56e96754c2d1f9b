"""server.workers: the setting, each worker's settings, the reserved ports, the replica's
metrics and the supervisor's banner (the processes themselves: tests/e2e/test_workers.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pkggov_gateway import __main__ as entry
from pkggov_gateway.adapters.metrics import MetricsServer, PrometheusMetrics
from pkggov_gateway.config import ConfigError, Settings, load_settings, usable_cpus
from pkggov_gateway.startup import StartupError
from pkggov_gateway.workers import (
    WORKER_METRICS_LISTEN,
    Ready,
    Started,
    WorkerMetrics,
    reserve,
    worker_settings,
)

DEV = {"PKGGOV_IDENTITY_MODE": "dev"}


def _settings(**environ: str) -> Settings:
    return load_settings(None, {**DEV, **environ})


# --- the setting ---------------------------------------------------------------------------


def test_one_process_by_default_and_workers_from_the_environment() -> None:
    """Default 1 (this process serves); PKGGOV_SERVER_WORKERS sets it; 0 means one per CPU."""
    assert 1 == _settings().server.workers == _settings().server.worker_processes
    assert 4 == _settings(PKGGOV_SERVER_WORKERS="4").server.worker_processes
    automatic = _settings(PKGGOV_SERVER_WORKERS="0").server
    assert (0, usable_cpus()) == (automatic.workers, automatic.worker_processes)


def test_zero_workers_is_one_per_cpu_of_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPUs this process may run on (taskset, cpusets), not all the machine's."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 2, 5})
    assert 3 == _settings(PKGGOV_SERVER_WORKERS="0").server.worker_processes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "expected a positive integer"),
        ("two", "expected a positive integer"),
        ("1025", "must be at most 1,024"),
    ],
)
def test_bad_worker_counts_are_refused_by_name(value: str, message: str) -> None:
    """Negative, not a number, beyond the limit: refused naming server.workers."""
    with pytest.raises(ConfigError, match=rf"\$PKGGOV_SERVER_WORKERS: server\.workers: {message}"):
        _settings(PKGGOV_SERVER_WORKERS=value)


# --- each worker's settings ----------------------------------------------------------------


def test_each_worker_is_its_own_replica_with_its_share_of_the_pace() -> None:
    """Replica <name>-w<i>; write and read pace divided by the workers; the reserved ports;
    metrics on a loopback port of its own; no emulator of its own."""
    settings = _settings(
        PKGGOV_SERVER_WORKERS="4",
        PKGGOV_AUDIT_REPLICA="pod-a",
        PKGGOV_UPSTREAM_WRITE_CALLS_PER_SECOND="90",
        PKGGOV_UPSTREAM_READ_CALLS_PER_SECOND="180",
        PKGGOV_UPSTREAM_REPLICAS="2",
        PKGGOV_METRICS_LISTEN="0.0.0.0:9464",
        PKGGOV_EMULATOR_ENABLED="true",
    )
    upstream = {"endpoint_url": "http://127.0.0.1:1234", "region": "eu-west-1"}
    worker = worker_settings(
        settings, 3, 4, listen="0.0.0.0:50051", health_listen="", upstream=upstream
    )
    assert "pod-a-w3" == worker.audit.replica
    assert (22.5, 45.0, 2) == (
        worker.upstream.write_calls_per_second,
        worker.upstream.read_calls_per_second,
        worker.upstream.replicas,  # the fleet's share is still taken per pod
    )
    assert ("http://127.0.0.1:1234", "eu-west-1") == (
        worker.upstream.endpoint_url,
        worker.upstream.region,
    )
    assert ("0.0.0.0:50051", "", 4) == (
        worker.server.listen,
        worker.server.health_listen,
        worker.server.workers,
    )
    assert WORKER_METRICS_LISTEN == worker.metrics.listen
    assert not worker.emulator.enabled
    # everything else is the replica's
    assert settings.server.max_workers == worker.server.max_workers
    assert settings.identity == worker.identity


def test_the_host_name_names_the_workers_when_no_replica_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """audit.replica empty: the host name (the pod's), then -w<i>; metrics off stay off."""
    monkeypatch.setattr("socket.gethostname", lambda: "pkggov-7d9f")
    settings = _settings(PKGGOV_METRICS_LISTEN="")
    worker = worker_settings(settings, 0, 2, listen="127.0.0.1:5", health_listen="127.0.0.1:6")
    assert ("pkggov-7d9f-w0", "", "127.0.0.1:6") == (
        worker.audit.replica,
        worker.metrics.listen,
        worker.server.health_listen,
    )


# --- the reserved ports --------------------------------------------------------------------


def _grpc_server_on(address: str) -> grpc.Server:
    server = grpc.server(ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 1)])
    server.add_insecure_port(address)
    return server


def test_port_zero_is_reserved_once_and_every_worker_binds_it() -> None:
    """The supervisor learns the port and keeps it; two servers with SO_REUSEPORT (as the
    workers' are) bind that same port; one without it cannot."""
    reserved = reserve("server.listen", "127.0.0.1:0")
    try:
        host, _, port = reserved.address.rpartition(":")
        assert ("127.0.0.1", True) == (host, int(port) > 0)
        first, second = _grpc_server_on(reserved.address), _grpc_server_on(reserved.address)
        first.start()
        second.start()
        plain = grpc.server(ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 0)])
        with pytest.raises(RuntimeError):
            plain.add_insecure_port(reserved.address)
        first.stop(0)
        second.stop(0)
    finally:
        reserved.close()


@pytest.fixture
def listening() -> Iterator[tuple[socket.socket, int]]:
    """A loopback socket listening on a port, as another program's would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock, int(sock.getsockname()[1])


def test_a_port_something_else_holds_is_refused_by_name(
    listening: tuple[socket.socket, int],
) -> None:
    """As one process refuses it: the setting, the value, the system's reason."""
    _, port = listening
    with pytest.raises(StartupError) as caught:
        reserve("server.health_listen", f"127.0.0.1:{port}")
    assert f"server.health_listen 127.0.0.1:{port}: cannot listen: address already in use" == str(
        caught.value
    )


def test_a_port_another_program_shares_is_not_joined() -> None:
    """Another program listening with SO_REUSEPORT would let the workers bind beside it and
    silently split its connections: refused too."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(StartupError, match="address already in use"):
            reserve("server.listen", f"127.0.0.1:{port}")


def test_an_unresolvable_host_is_refused_by_name() -> None:
    """The setting and the resolver's reason."""
    with pytest.raises(StartupError, match=r"^server\.listen no-such-host\.invalid:0: cannot"):
        reserve("server.listen", "no-such-host.invalid:0")


# --- the replica's metrics -----------------------------------------------------------------


def test_the_replica_serves_every_workers_metrics_labelled_by_worker() -> None:
    """Each family once, with each worker's samples labelled worker=<i> (counters, histograms
    and the process collectors included); pkggov_worker_up says whose could be read."""
    workers = [PrometheusMetrics(), PrometheusMetrics()]
    workers[0].rpc_finished("/m", "OK", 0.01)
    workers[1].rpc_finished("/m", "OK", 0.02)
    workers[1].rpc_finished("/m", "INTERNAL", 0.5)
    servers = [MetricsServer(m.registry, "127.0.0.1:0") for m in workers]
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))  # bound, not listening: refuses connections
    collector = WorkerMetrics(timeout_seconds=2)
    try:
        collector.watch([*(s.address for s in servers), f"127.0.0.1:{gone.getsockname()[1]}"])
        text = generate_latest(collector).decode()
    finally:
        collector.close()
        gone.close()
        for server in servers:
            server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["worker"]: s.value for s in families["pkggov_worker_up"].samples}
    assert {"0": 1.0, "1": 1.0, "2": 0.0} == up
    rpcs = {
        (s.labels["worker"], s.labels["code"]): s.value
        for s in families["pkggov_rpcs"].samples
        if s.name == "pkggov_rpcs_total"
    }
    assert {("0", "OK"): 1.0, ("1", "OK"): 1.0, ("1", "INTERNAL"): 1.0} == rpcs
    counts = {
        s.labels["worker"]: s.value
        for s in families["pkggov_rpc_duration_seconds"].samples
        if s.name == "pkggov_rpc_duration_seconds_count"
    }
    assert {"0": 1.0, "1": 2.0} == counts
    assert families["pkggov_rpc_duration_seconds"].type == "histogram"
    assert {"0", "1"} == {
        s.labels["worker"] for s in families["process_resident_memory_bytes"].samples
    }
    assert 1 == text.count("# TYPE pkggov_rpcs_total counter")


def test_no_workers_yet_is_an_empty_scrape() -> None:
    """Before the workers serve, the endpoint answers with nothing but is up."""
    assert b"" != generate_latest(WorkerMetrics())


# --- the banner ----------------------------------------------------------------------------


def test_the_supervisor_banner_names_the_shared_address_and_the_workers() -> None:
    """The "listening on" line first (what scripts wait for), once; the workers' pids and
    replicas; the replica's metrics endpoint; the same examples as one process."""
    settings = _settings()
    workers = (
        Ready(0, 101, "pod-w0", "127.0.0.1:7001", ("p1", "p2")),
        Ready(1, 102, "pod-w1", "127.0.0.1:7002", ("p1", "p2")),
    )
    text = entry.workers_banner(
        Started("127.0.0.1:5051", workers, None, "127.0.0.1:5060", "127.0.0.1:9464"),
        settings.identity,
    )
    lines = text.splitlines()
    assert "pkggov gateway listening on 127.0.0.1:5051 (identity: dev)" == lines[0]
    assert 1 == text.count("listening on")
    assert "2 worker processes share it (pids 101, 102; audit replicas pod-w0, pod-w1)" == lines[1]
    assert "policies: p1, p2" in lines
    assert "health checks (plaintext, Check only) at 127.0.0.1:5060" in lines
    assert (
        "Prometheus metrics at http://127.0.0.1:9464/metrics (every worker's, labelled worker)"
        in lines
    )
    assert "  grpcurl -plaintext 127.0.0.1:5051 list" in lines
    assert lines[-1].startswith("Reload policies with SIGHUP")
