"""Several gateway processes on one address (server.workers > 1): the supervisor and its workers.

One Python process serves about one core (the GIL). With ``server.workers = N`` (0: one per
usable CPU), `pkggov-gateway` becomes a small supervisor that starts N worker processes, each a
whole gateway (`bootstrap.build_gateway`: its own gRPC server, threads, audit writer, background
tasks), all listening on the same address with SO_REUSEPORT, so that the kernel spreads new
connections over them. What the supervisor does, in order:

1. Reserves the listen addresses (`server.listen`, `server.health_listen`): it binds a
   SO_REUSEPORT socket to each, which resolves port 0 to one concrete port for every worker,
   and keeps it bound (never listening, so it takes no connection) until it exits. A port that
   anything else holds is refused first, as one process would refuse it.
2. Starts what exists once per replica: the embedded emulator (development) and the
   Prometheus endpoint on `metrics.listen`, which serves every worker's metrics at each scrape,
   labelled ``worker`` (`WorkerMetrics`: each worker serves its own on a loopback port).
3. Starts the workers with the "spawn" method (never fork: grpc forbids forking once it is
   in use), each with its settings (`worker_settings`): the concrete ports, the audit replica
   name ``<audit.replica>-w<i>`` (heartbeat, leases and reconciliation are per replica
   name), and 1/N of ``upstream.write_calls_per_second`` and ``read_calls_per_second``, so
   that together they keep to the pace the replica was configured with. Only worker 0
   reconciles other replicas' orphaned intents (`Gateway.sweeps_orphans`).
4. Prints the banner once every worker serves, then waits: SIGHUP is passed on to every
   worker (each reloads its policy), SIGTERM or SIGINT makes every worker drain as one process
   would (exit 0 when all did); a worker that exits unasked is logged, the others are stopped,
   and the supervisor exits 1 (the orchestrator restarts the replica: no restart loop here).

A worker that fails to start reports its one-line error through a pipe; the supervisor stops
the others and prints that line (exit 2 for a setting, 1 for anything else), as one process
would. A worker whose supervisor dies stops too (it notices a new parent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from structlog.typing import EventDict

from pkggov_gateway.adapters.metrics import MetricsServer
from pkggov_gateway.config import Settings
from pkggov_gateway.logs import LogFormat, configure_logging
from pkggov_gateway.service.audit import default_replica
from pkggov_gateway.serving import (
    SIGNAL_POLL_SECONDS,
    Signals,
    serve,
    start_failure,
    start_gateway,
)
from pkggov_gateway.startup import (
    StartupError,
    check_listen,
    naming,
    os_reason,
)

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from pkggov_emulator import Emulator

__all__ = [
    "Failed",
    "Ready",
    "Reserved",
    "Started",
    "Supervisor",
    "WorkerMetrics",
    "WorkerStartError",
    "describe_workers",
    "reserve",
    "run_worker",
    "supervise",
    "worker_settings",
]

log = structlog.get_logger("pkggov.workers")

STOP_MARGIN_SECONDS = 30.0
"""How long past server.grace_seconds the supervisor waits for a stopping worker before it
kills it: the audit store's final flush (at most 10 s), or a start-up still under way."""

WORKER_METRICS_LISTEN = "127.0.0.1:0"
"""Where each worker serves its own metrics (the supervisor reads them at each scrape)."""

_SCRAPE_TIMEOUT_SECONDS = 3.0


# --- what a worker runs with ----------------------------------------------------------------


def worker_settings(
    settings: Settings,
    index: int,
    count: int,
    *,
    listen: str,
    health_listen: str,
    upstream: dict[str, Any] | None = None,
) -> Settings:
    """The settings worker `index` of `count` runs with: the reserved `listen` and
    `health_listen` (concrete ports), ``workers = count`` (which makes `build_gateway` share
    the port and, on SQLite, lock packages across processes), the audit replica name
    ``<audit.replica or the host name>-w<index>``, 1/count of the upstream pace, its metrics
    on a loopback port of its own (when metrics are on), no emulator of its own (`upstream`:
    the supervisor's emulator as the upstream, when it runs one)."""
    base = settings.audit.replica or default_replica()
    pace = settings.upstream
    return dataclasses.replace(
        settings,
        server=dataclasses.replace(
            settings.server, listen=listen, health_listen=health_listen, workers=count
        ),
        upstream=dataclasses.replace(
            pace,
            write_calls_per_second=pace.write_calls_per_second / count,
            read_calls_per_second=pace.read_calls_per_second / count,
            **(upstream or {}),
        ),
        emulator=dataclasses.replace(settings.emulator, enabled=False),
        audit=dataclasses.replace(settings.audit, replica=f"{base}-w{index}"),
        metrics=dataclasses.replace(
            settings.metrics, listen=WORKER_METRICS_LISTEN if settings.metrics.listen else ""
        ),
    )


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker serves: what it reports to the supervisor."""

    index: int
    pid: int
    replica: str
    metrics_address: str | None
    policy_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failed:
    """A worker could not start: its exit code (2: a setting; 1: anything else) and the one
    line `pkggov-gateway` prints (without the program's name)."""

    index: int
    exit_code: int
    message: str


_LINE_BUFFER_BYTES = 1 << 20
"""Room for a whole line of stdout or stderr (an audit entry's copy, a log line)."""


def _whole_lines(settings: Settings) -> None:
    """Make this process write each line of stdout and stderr in one system call, then
    configure logging on them.

    The workers and the supervisor share both streams. Unbuffered (PYTHONUNBUFFERED, which
    the image sets), Python writes a printed line and its line end in two calls, and another
    process's line lands between them: two JSON documents on one line. Buffered, with a
    flush at each line end, a line goes out whole (atomically into a pipe up to 4 KiB, into a
    file always: the kernel moves the shared offset once per write).
    """
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(
            io.BufferedWriter(raw, buffer_size=_LINE_BUFFER_BYTES),
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or "backslashreplace",
            line_buffering=True,
        )
        setattr(sys, name, stream)
    fmt: LogFormat = settings.logging.format  # type: ignore[assignment]  # checked by config
    configure_logging(settings.logging.level, fmt)


def _tag_logs(index: int) -> None:
    """Every structlog line of this process says which worker wrote it."""

    def add_worker(_: Any, __: str, event: EventDict) -> EventDict:
        event.setdefault("worker", index)
        return event

    structlog.configure(processors=[add_worker, *structlog.get_config()["processors"]])


def run_worker(settings: Settings, index: int, report: Connection) -> None:
    """A worker's life (the target of its process): start a gateway, report Ready (or Failed)
    on `report`, serve until SIGTERM (or until its supervisor is gone), drain, exit 0.

    SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and the supervisor
    passes it on as SIGTERM. SIGHUP reloads the policy.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _whole_lines(settings)
    _tag_logs(index)
    signals = Signals(stopping=(signal.SIGTERM,))
    parent = os.getppid()
    try:
        gateway = start_gateway(settings, sweeps_orphans=index == 0)
    except Exception as error:  # noqa: BLE001 - every start-up failure is one line
        code, line = start_failure(error)
        report.send(Failed(index, code, line))
        raise SystemExit(code) from None
    report.send(
        Ready(
            index,
            os.getpid(),
            gateway.audit_store.replica,
            gateway.metrics_address,
            tuple(gateway.policy.policy_ids()),
        )
    )
    report.close()
    serve(gateway, signals, orphaned=lambda: os.getppid() != parent)
    raise SystemExit(0)


# --- the supervisor's own parts ---------------------------------------------------------------


@dataclass
class Reserved:
    """A listen address held for the workers: bound with SO_REUSEPORT, never listening."""

    address: str
    """HOST:PORT with the concrete port."""
    sockets: list[socket.socket]

    def close(self) -> None:
        """Let the port go."""
        for sock in self.sockets:
            sock.close()


def reserve(setting: str, listen: str) -> Reserved:
    """Hold `listen` (``HOST:PORT``; port 0: a free one) for the workers, naming `setting` in
    the StartupError when it cannot be.

    A fixed port is first bound and listened on without SO_REUSEPORT, as one process binds it:
    something else holding it, even a socket with SO_REUSEPORT (which would otherwise share
    it with the workers without a word), makes that fail. Then every address the host
    resolves to is bound with SO_REUSEPORT on one port: the first one's, when 0 was asked for.
    """
    check_listen(setting, listen)
    host, _, port = listen.rpartition(":")
    name = host.removeprefix("[").removesuffix("]")
    try:
        found = socket.getaddrinfo(
            name or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        cause = f"cannot listen: cannot resolve {name}: {os_reason(error)}"
        raise StartupError(setting, cause, value=listen) from error
    sockets: list[socket.socket] = []
    chosen = int(port)
    try:
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address[0], chosen, *address[2:]))
            chosen = int(sock.getsockname()[1])
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise StartupError(setting, f"cannot listen: {os_reason(error)}", value=listen) from error
    return Reserved(f"{host}:{chosen}", sockets)


class WorkerMetrics(Collector):
    """The replica's metrics: at each scrape, every worker's own /metrics, read in parallel,
    each sample labelled ``worker`` (its index); ``pkggov_worker_up{worker}`` says whose could
    be read. Families keep their names, help and types, so sums over ``worker`` are the
    replica's."""

    def __init__(self, timeout_seconds: float = _SCRAPE_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout_seconds
        self._endpoints: tuple[str, ...] = ()
        self._pool: ThreadPoolExecutor | None = None

    def watch(self, endpoints: Sequence[str]) -> None:
        """Read these workers' endpoints (``HOST:PORT``, by worker index) from now on."""
        self._pool = ThreadPoolExecutor(max(1, len(endpoints)), thread_name_prefix="pkggov-scrape")
        self._endpoints = tuple(endpoints)

    def close(self) -> None:
        """Stop the readers' threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> list[Metric]:
        """Nothing to describe ahead (the families are the workers')."""
        return []

    def _read(self, address: str) -> list[Metric] | None:
        """The families a worker's endpoint serves now; None when it cannot be read whole."""
        try:
            url = f"http://{address}/metrics"  # a worker's loopback endpoint
            with urllib.request.urlopen(url, timeout=self._timeout) as answer:
                return list(text_string_to_metric_families(answer.read().decode()))
        except (OSError, ValueError):  # refused, timed out, cut short, not the text format
            return None

    def collect(self) -> Iterator[Metric]:
        """Every worker's families, merged by name, plus ``pkggov_worker_up``."""
        endpoints, pool = self._endpoints, self._pool
        read = list(pool.map(self._read, endpoints)) if pool is not None else []
        up = GaugeMetricFamily(
            "pkggov_worker_up",
            "1 when the worker's metrics were read at this scrape (server.workers > 1).",
            labels=["worker"],
        )
        merged: dict[str, Metric] = {}
        for index, families in enumerate(read):
            up.add_metric([str(index)], 0 if families is None else 1)
            for family in families or ():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    into.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield up
        yield from merged.values()


@dataclass(frozen=True, slots=True)
class Started:
    """What the supervisor's banner says: the shared address, the workers, the rest."""

    address: str
    workers: tuple[Ready, ...]
    emulator_url: str | None
    health_address: str | None
    metrics_address: str | None


class WorkerStartError(Exception):
    """A worker could not start (its Failed report, or a made-up one when it died silently)."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message)
        self.failed = failed


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    report: Connection
    ready: Ready | None = None


class Supervisor:
    """The workers of one replica and what they share (see the module docstring).

    `start` raises StartupError (a setting the supervisor uses) or WorkerStartError, having
    stopped and released everything; `stop` stops what runs and returns the exit status.
    """

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._reserved: list[Reserved] = []
        self._emulator: Emulator | None = None
        self._metrics = WorkerMetrics()
        self._metrics_server: MetricsServer | None = None
        self._workers: list[_Worker] = []

    def start(self, stop: threading.Event) -> Started | None:
        """Reserve, start the shared parts and the workers, and wait until every worker
        serves; None when `stop` was set meanwhile (the caller then calls `stop`)."""
        try:
            return self._start(stop)
        except BaseException:
            self._stop_workers()
            self._release()
            raise

    def _start(self, stop: threading.Event) -> Started | None:
        server = self.settings.server
        listen = reserve("server.listen", server.listen)
        self._reserved.append(listen)
        health = ""
        if server.health_listen:
            reserved = reserve("server.health_listen", server.health_listen)
            self._reserved.append(reserved)
            health = reserved.address
        metrics_address = self._serve_metrics()
        upstream: dict[str, Any] = {}
        if self.settings.emulator.enabled:
            from pkggov_gateway.bootstrap import (  # noqa: PLC0415 - development only
                _start_emulator,
            )

            self._emulator, upstream = _start_emulator(self.settings.emulator)
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            settings = worker_settings(
                self.settings,
                index,
                self.count,
                listen=listen.address,
                health_listen=health,
                upstream=upstream,
            )
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=run_worker,
                args=(settings, index, send),
                name=f"pkggov-worker-{index}",
                daemon=True,  # killed, should the supervisor itself fail
            )
            process.start()
            send.close()  # the worker's end: its death closes the pipe
            self._workers.append(_Worker(index, process, receive))
        if not self._wait_ready(stop):
            return None
        ready = tuple(worker.ready for worker in self._workers if worker.ready is not None)
        self._metrics.watch([r.metrics_address for r in ready if r.metrics_address is not None])
        log.info(
            "workers.started",
            address=listen.address,
            workers=[{"index": r.index, "pid": r.pid, "replica": r.replica} for r in ready],
        )
        return Started(
            listen.address,
            ready,
            self._emulator.endpoint_url if self._emulator is not None else None,
            health or None,
            metrics_address,
        )

    def _serve_metrics(self) -> str | None:
        listen = self.settings.metrics.listen
        if not listen:
            return None
        with naming("metrics.listen", listen, doing="cannot listen"):
            self._metrics_server = MetricsServer(self._metrics, listen)
        return self._metrics_server.address

    def _wait_ready(self, stop: threading.Event) -> bool:
        """Until every worker reported Ready (True) or `stop` is set (False); raises
        WorkerStartError for the first that fails."""
        waiting = {worker.report: worker for worker in self._workers}
        while waiting:
            if stop.is_set():
                return False
            for report in wait(list(waiting), timeout=SIGNAL_POLL_SECONDS):
                worker = waiting.pop(report)  # type: ignore[call-overload]
                try:
                    message = worker.report.recv()
                except EOFError:  # died without a word (killed, or a crash in the runtime)
                    worker.process.join(timeout=5)
                    message = Failed(
                        worker.index,
                        1,
                        f"worker {worker.index} (pid {worker.process.pid}) exited with "
                        f"{worker.process.exitcode} during start-up",
                    )
                if isinstance(message, Failed):
                    raise WorkerStartError(message)
                worker.ready = message
                worker.report.close()
        return True

    def exited(self, timeout: float) -> list[_Worker]:
        """The workers that exited, waiting up to `timeout` seconds for one to."""
        sentinels = {w.process.sentinel: w for w in self._workers}
        exited = [sentinels[s] for s in wait(list(sentinels), timeout=timeout)]  # type: ignore[index]
        for worker in exited:
            worker.process.join(timeout=5)  # reaps it: its exit code is known from now on
        return exited

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every worker still running."""
        for worker in self._workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(worker.process.pid, signum)

    def stop(self) -> int:
        """SIGTERM every worker, wait for each to drain (server.grace_seconds, plus
        STOP_MARGIN_SECONDS), kill one that does not end by then, release the shared parts.
        0 when every worker exited 0 (or was stopped before it could set up its handlers)."""
        log.info("workers.stopping", grace_s=self.settings.server.grace_seconds)
        clean = self._stop_workers()
        self._release()
        log.info("workers.stopped", clean=clean)
        return 0 if clean else 1

    def _stop_workers(self) -> bool:
        self.signal_all(signal.SIGTERM)
        until = time.monotonic() + self.settings.server.grace_seconds + STOP_MARGIN_SECONDS
        clean = True
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, until - time.monotonic()))
            if worker.process.is_alive():
                log.error("workers.kill", worker=worker.index, pid=worker.process.pid)
                worker.process.kill()
                worker.process.join()
            code = worker.process.exitcode
            if code not in (0, -signal.SIGTERM):
                clean = False
        return clean

    def _release(self) -> None:
        for worker in self._workers:
            worker.report.close()
        self._metrics.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None
        for reserved in self._reserved:
            reserved.close()
        self._reserved.clear()


def supervise(settings: Settings, count: int, banner: Callable[[Started], str]) -> int:
    """`pkggov-gateway` with `count` workers: start them, print `banner` once all serve, pass
    SIGHUP on, drain them all on SIGTERM/SIGINT (exit 0), stop them all and exit 1 when one
    exits unasked. Start-up failures are one line on stderr, as for one process (exit 2 for a
    setting, 1 for anything else)."""
    _whole_lines(settings)
    signals = Signals()
    supervisor = Supervisor(settings, count)
    try:
        started = supervisor.start(signals.stop)
    except WorkerStartError as error:
        print(f"pkggov-gateway: {error.failed.message}", file=sys.stderr)
        return error.failed.exit_code
    except Exception as error:  # noqa: BLE001 - every start-up failure is one line
        code, line = start_failure(error)
        print(f"pkggov-gateway: {line}", file=sys.stderr)
        return code
    signals.log_received()
    if started is None:  # stopped while starting
        return supervisor.stop()
    print(banner(started), flush=True)
    while not signals.stop.is_set():
        exited = supervisor.exited(SIGNAL_POLL_SECONDS)
        signals.log_received()
        if exited and not signals.stop.is_set():
            for worker in exited:
                log.error(
                    "workers.worker_exited",
                    worker=worker.index,
                    pid=worker.process.pid,
                    exit_code=worker.process.exitcode,
                    note="stopping the other workers; the replica exits 1",
                )
            supervisor.stop()
            return 1
        if signals.reload_asked():
            supervisor.signal_all(signal.SIGHUP)
    signals.log_received()
    return supervisor.stop()


def describe_workers(workers: Iterable[Ready]) -> str:
    """One banner line: how many workers, their pids and audit replica names."""
    ready = list(workers)
    pids = ", ".join(str(r.pid) for r in ready)
    replicas = ", ".join(r.replica for r in ready)
    return f"{len(ready)} worker processes share it (pids {pids}; audit replicas {replicas})"
