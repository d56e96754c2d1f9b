"""Benchmark the whole gateway against its floors: one gRPC hop and one boto3 call.

Run: ``make bench-gateway`` (part of ``make bench``; 9 to 11 minutes on a 2-CPU machine, up to 7 of
them the RSS soak), or
``.venv/bin/python scripts/bench_gateway.py [--quick] [--seconds S] [--scenarios ACE]
[--soak-requests N] [--py-spy]``. Asked for (issue 5): side by side, on this machine, with the
CodeArtifact emulator as upstream,

- A: a bare grpcio echo server (the floor of one gRPC hop);
- B: direct boto3 DeletePackageVersions calls to the emulator (the floor of the upstream call);
- H: B's process making, per call, the two upstream calls the gateway's allow path makes for one
  version (ListPackageVersions, then DeletePackageVersions with expectedStatus): C's upstream
  floor, the part of C no gateway work can remove while it decides on the package's state;
- C: the gateway's allow path (mTLS, policy, durable SQLite audit, forward);
- D: the gateway's deny path; E: a dry run; F: a 1,000-version request;
- G: C with a PostgreSQL audit store;
- W (issue 18): C on 2 worker processes: the gateway with ``PKGGOV_SERVER_WORKERS=2``, a
  supervisor whose workers share its port (SO_REUSEPORT), each a whole gateway on the same
  SQLite audit file;
- P (issue 18): G on two processes, a fleet: two gateways sharing one PostgreSQL schema (one
  audit chain), the concurrency-64 closed loop split between them, compared with G's;
- T, S, R: B, H and C with the emulator answering every call ``--upstream-latency-ms`` (20 ms)
  late, a typical in-region round trip to CodeArtifact;

each at concurrency 1 and 64 (P: its closed loop at 64 only): p50/p99 latency, requests/s,
server CPU ms per request and peak RSS; the ratios C/(A+B) and C/(A+H) for p50 latency and
CPU per request; the gateway's steady RSS after 100,000 requests; and a verdict per goal (the README
keeps the latest numbers). Issue 5: C p50 <= 1.3 x (A p50 + B p50) at concurrency 1; C
CPU/request <= 1.5 x (A + B); C at concurrency 64 >= 60 % of B's requests/s; steady RSS <= 150
MB after 100,000 requests. Each is also computed for A + H, the floor of C's design (no gateway
work at all), which says whether the gateway's own work or its two upstream calls stand between
C and the goal. Issue 18: C p50 <= 1.3 x (A + H) p50 and C CPU/request <= 1.4 x (A + H) at
concurrency 1; C (one process) and W (two workers) each >= 70 % of H's requests/s at 64; P >=
1.6 x G's requests/s at 64 with the chain verified and nothing lost (a failed check misses the
goal whatever the ratio; the machine's CPU in both cells is printed beside it, since on 2 CPUs
the machine itself may be the limit); F <= 25 us of gateway CPU per version; R p50 <= 1.05 x (A
+ S) p50 at concurrency 1; and ``make bench`` in under 15 minutes (the time since the ``make
bench`` that runs this script started, plus bench-cleanup's run time from its last JSON, as it
runs after this script; NOT MEASURED when run otherwise, or on a clean clone, where
bench-cleanup, the last to run, prints the verdict from the whole run's time).

Side by side. The goals compare concurrency-1 cells of different scenarios (C with A + H and
A + B, R with A + S), and this machine's speed moves by tens of per cent within minutes:
measured one after the other, C/(A+H) on one code ranged from 1.4 to 2.4 in an hour, as C and
its floor ran on a faster or a slower machine. So the concurrency-1 cells of A, B, H, C, T, S
and R are measured first, side by side: every one of these scenarios' processes is started (the
idle ones use no CPU), then each of 5 rounds measures one short window of each scenario in
turn (0.24 x ``--seconds`` after a fifth of ``--warmup``; T, S, R twice as long), in
alternating order. A row is its scenario's windows together; a goal's ratio is the median of
the rounds' own ratios (the lowest and highest are printed beside it), each from windows
seconds apart. The other cells are measured scenario by scenario.

Processes. Each scenario gets its own, so that a peak RSS and a CPU time belong to it alone:

- the emulator, ``pkggov-emulator --listen 127.0.0.1:0 --seed FILE``, with a seed written for
  the scenario (domain ``bench``, repository ``dev-bench``, npm packages ``pkg-NNNNN`` of 21
  versions ``1.0.0`` ... ``1.0.20``, so 20 that are not the latest may be deleted; 1,001 for
  F), reset to its seed (``POST /_emulator/reset``) before every cell or window, so that every
  delete removes a version that exists. Packages are small on purpose: the gateway reads the whole
  package state before deciding, and that read grows with the package.
- the server. A: this script with ``--role echo``, a grpcio server whose generic handler returns
  the request bytes, with the gateway's thread pool and RPC limit (``server.max_workers``, 32,
  and ``server.max_concurrent_rpcs``, 256, by default: taken from ``ServerSettings()``) and
  its mTLS server credentials (``adapters.tls.server_credentials``) with the same
  certificates: C pays for TLS, so a plaintext floor would flatter A. B: this script
  with ``--role boto``, the client ``bootstrap.build_codeartifact_client`` builds for the
  gateway (same botocore Config; its pool sized to the 64 calling threads, as the gateway sizes
  its pool to its threads) calling ``delete_package_versions``, one fresh version per call
  (H: ``list_package_versions`` of the package, then the delete).
  C-G: ``pkggov-gateway`` set up by ``PKGGOV_*`` variables: mTLS with certificates from
  ``scripts/dev_certs.py`` (made afresh in .run/bench_gateway/certs), the shipped policies,
  audit in a new SQLite file under .run/ (a real disk, not tmpfs) or, for G, a new schema of
  ``--postgres-url`` (ANALYZEd after the first cell, as autovacuum soon would on a live
  database; dropped afterwards), ``audit.log`` off, logging at warning, metrics on a free port.
  W: C's gateway with ``PKGGOV_SERVER_WORKERS=2``; its server CPU and peak RSS are those of
  the supervisor and every process under it (/proc/PID/task/*/children, recursively; the
  workers are spawned, not forked, so summing their RSS counts only shared libraries' pages
  more than once). A gateway that refuses
  the setting fails the scenario (the run goes on); one that ignores it (no child process) is
  measured and its rows say ONE PROCESS.
  P: two ``pkggov-gateway`` processes, each set up as G's with ``PKGGOV_AUDIT_REPLICA``
  bench-a and bench-b, on one new schema of ``--postgres-url`` and one emulator; warmed by 1 s
  of calls through both, then ANALYZEd. Its server CPU is the sum of both gateways', its peak
  MB the larger one's. When G did not run before it, bench-a alone is measured first on the
  same schema (a G row that says so), so that P is always compared within one run.
  The gateway paces its calls to CodeArtifact (``upstream.write_calls_per_second`` 90 and
  ``read_calls_per_second`` 180 by default: a protection of the real quota); B has no such
  limit, so both are set to 1,000,000 here (the output says so).
- the load generator: this process, grpc.aio on one event loop (a few percent of a core per
  100 calls/s), with requests serialized before they are timed; concurrency 64 is spread over
  4 channels, each its own connection (W: 16, so that SO_REUSEPORT spreads them evenly over
  its workers). Its CPU is reported: at 85 % of a core the row says GENERATOR-BOUND, and an
  open loop that sends late says so. B's calls are made by B's own process, 64 threads, which
  is also what B measures.

Calls. C, W, G and P: ``alice`` (group release-admins, whom the shipped set lets delete any
version that is neither the latest nor the last) deletes one version. D: the CI identity (group ci)
deletes a published release, which no shipped policy permits: PERMISSION_DENIED after the
package state was read, so the deny path does all but the intent and the forward. E: C with
``validate_only``. F: ``alice`` deletes 1,000 versions of a package of 1,001 (two list pages,
ten upstream calls of 100, four at a time). Every answer is checked (C, G: the version is in
``successful_versions``; D: PERMISSION_DENIED; E: the plan would delete it; F: 1,000 deleted);
a failed check counts as an error and is left out of the latencies.

P's checks, once every call was answered and before the gateways stop: the schema's audit chain
is verified by ``pkggov-admin audit verify --json`` (the project's verifier, reading the store);
with psycopg, the entries are counted by kind, the outcomes by decision and the intents by
replica; nothing is lost when every intent has its outcome, no reconciliation was needed, and
the successful calls the generator saw (all of P's calls, warm-up included) are as many as the
``allowed`` outcomes recorded. The chain lock: each gateway's ``/metrics`` (its banner names
the address) is scraped at the start and the end of the window, and its histograms
``pkggov_audit_chain_lock_wait_seconds`` (per group commit, the wait for the lock) and
``pkggov_audit_group_commit_seconds`` (the time it is held) give per process the group
commits/s, the mean wait, the mean hold and the lock's utilization (time held / window); "chain
lock metrics: not exported" when a gateway has neither. The concurrency-64 closed loops of G
(one gateway) and W (its supervisor serves all its workers' metrics, added up here) report the
lock too.

Load. Concurrency 1 is a closed loop, one call outstanding. Concurrency 64 runs twice: a closed
loop, 64 calls outstanding, gives the requests/s at saturation (its latencies are those of a
saturated server: queueing, by Little's law 64 / throughput); then an open loop at 80 % of that
throughput with at most 64 outstanding gives the latency a caller sees under a high but
sustainable load, each call timed from when it was *due*, so a slow answer delays nothing
else's clock (no coordinated omission). F's calls take 0.1-0.5 s, so a closed loop of 64 would
need minutes to reach a steady state: F at 64 is one wave of 64 calls sent at once (req/s = 64
/ time to the last answer), then the open loop. Each cell has a warm-up, then a window
(``--warmup`` 1 s, ``--seconds`` 2.5 s: short, so that ``make bench`` stays under 15 minutes; use
longer windows for decisions). In a window: latencies of the calls that ended in it (closed) or
were due in it (open); requests/s = calls ended in it / its length; server CPU per request =
the process's user + system time (/proc, every thread) over the window / those calls. Peak RSS
is the server's VmHWM after the cell. The emulator's CPU is left out of every "server CPU" (it
is shown as ``emu ms``), and so is the generator's; B's and H's server CPU is that of the
process making the boto3 calls: what the gateway pays to make them.

RSS soak. A fresh gateway (SQLite) gets ``--soak-requests`` (100,000) calls at concurrency 64,
a repeating mix of allow, deny and dry-run calls (``--soak-mix``, default 1:1:2) on their own
packages, time-boxed by ``--soak-max-seconds``; VmRSS is sampled every second and reported after
10 % of the calls, half way and at the end (the steady RSS of the goal). It is the long part of
the run (300-370 s at 270-330 calls/s on 2 CPUs; the 400 s box, which keeps ``make bench`` under
15 minutes, ends it short of 100,000 on a machine slower than 250 calls/s, and the RSS goal
is then NOT MEASURED); every call is a real gateway call.

Noise. This machine is small (2 CPUs shared by generator, server and emulator) and shared with
other work: every row shows the CPU other processes took during its window, and rows where it
is 10 % or more are marked NOISY. Results are written as JSON too (``--json``, default
.run/bench_gateway.json). ``--py-spy`` records a py-spy profile (``--gil``) of the server during
each concurrency-64 closed loop into .run/bench_gateway/ (py-spy is a development dependency;
``make bench`` passes the flag; 100 samples a second, without pausing the server) and
summarizes where the thread holding the GIL was, by part of the server. With it, C and R are
also profiled alone after their cells, at concurrency 1 and 1,000 samples a second (which
would disturb a measured cell): C by GIL time, the milliseconds of Python CPU per call by part;
R by the wall time of the thread serving each call (waiting for CodeArtifact, boto3, the
audit's COMMIT, Cedar, ...), where a caller's time goes against a slow upstream. py-spy misses
part of the wall time (R's parts add up to less than its latency): read them as shares.

Not a test: timings depend on the machine, and the script exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
import grpc.aio
from _bench_common import MAKE_BENCH_MINUTES, finite, make_bench_started, postgres_schema

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.config import IdentitySettings, ServerSettings, UpstreamSettings

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK = ROOT / ".run" / "bench_gateway"
DEFAULT_JSON = ROOT / ".run" / "bench_gateway.json"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
METHOD = "/pkggov.v1.PackageGovernanceService/DeletePackageVersions"
DOMAIN, REPOSITORY = "bench", "dev-bench"
SMALL_VERSIONS = 21  # versions per package: 20 deletable ones and the latest
BIG_VERSIONS = 1001  # F: 1,000 deletable ones and the latest
F_VERSIONS = BIG_VERSIONS - 1
HIGH = 64
SOAK_REQUESTS = 100_000  # the soak's default length, and what the RSS goal asks for
CHANNELS = 4  # connections the generator spreads concurrency 64 over
SPREAD_CHANNELS = 16
"""W's connections at concurrency 64: the kernel (SO_REUSEPORT) hashes each connection to a
worker, and with 4 it put 3 or all 4 on one worker in some runs (W measured 281 to 404/s over
runs of one code). C measured the same with 4 and 16 connections, so only W's spread changes."""
OPEN_FRACTION = 0.8
UNLIMITED_RATE = "1000000"
SCENARIOS = "ABHCWDEFGPTSR"  # the order they run and print in: H beside B, W after C, P after G
SLOW = {"T": "B", "S": "H", "R": "C"}
"""B, H and C again, with the emulator answering each call after --upstream-latency (20 ms, a
typical in-region round trip): what the gateway costs a caller against a real CodeArtifact."""
TITLES = {
    "A": "echo (grpcio, mTLS)",
    "B": "boto3 direct",
    "H": "boto3 List + Delete",
    "C": "allow (sqlite)",
    "D": "deny",
    "E": "dry run",
    "F": "1,000 versions",
    "G": "allow (postgres)",
    "P": "G on 2 processes",
    "W": "C on 2 workers",
    "T": "B, upstream +20 ms",
    "S": "H, upstream +20 ms",
    "R": "C, upstream +20 ms",
}
ASSUMED_MAX_RATE = 3000.0  # calls/s no cell should exceed; sizes the seeds
BOTO_SCENARIOS = "BHTS"  # made by this script's boto worker, which is also their "server"
GOAL_LATENCY, GOAL_CPU, GOAL_THROUGHPUT, GOAL_RSS_MB = 1.3, 1.5, 0.6, 150.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc ------------------------------------------------------------------------------


def _cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid`, every thread (and ended ones) included."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`."""
    return sum(_cpu_times(pid))


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in kB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _descendants(pid: int) -> list[int]:
    """Every live descendant of process `pid` (children, theirs, ...), from
    /proc/PID/task/*/children; [] when `pid` is gone."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found


def _machine_times() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """CPU counters at one moment of a measurement window."""

    at: float
    cpu: dict[int, tuple[float, float]]
    generator: float
    machine: tuple[float, float]

    @classmethod
    def take(cls, pids: Sequence[int]) -> _Snapshot:
        """Now; a process of `pids` that has ended is left out (it used nothing after it)."""
        cpu: dict[int, tuple[float, float]] = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                cpu[pid] = _cpu_times(pid)
        return cls(time.monotonic(), cpu, time.process_time(), _machine_times())

    def used(self, later: _Snapshot, pid: int) -> tuple[float, float]:
        """(user, system) CPU seconds `pid` used from this snapshot to `later` (0 when it had
        ended by `later`; all of it when it started after this snapshot)."""
        if pid not in later.cpu:
            return (0.0, 0.0)
        before = self.cpu.get(pid, (0.0, 0.0))
        return (later.cpu[pid][0] - before[0], later.cpu[pid][1] - before[1])


# --- child roles: the echo server and the boto3 caller -----------------------------------


def _read_certs(certs: Path, client: str) -> tuple[bytes, bytes, bytes]:
    """The CA, key and certificate a client presents (made by scripts/dev_certs.py)."""
    return (
        (certs / "ca.pem").read_bytes(),
        (certs / f"{client}.key").read_bytes(),
        (certs / f"{client}.pem").read_bytes(),
    )


def _serve_echo(certs: Path) -> int:
    """A grpcio server that answers DeletePackageVersions with the request bytes (mTLS), with
    the gateway's default thread pool and RPC limit and its server credentials."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - child role only

    from pkggov_gateway.adapters.tls import server_credentials  # noqa: PLC0415 - child role

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "pkggov.v1.PackageGovernanceService",
        {"DeletePackageVersions": grpc.unary_unary_rpc_method_handler(echo)},
    )
    settings = ServerSettings()
    server = grpc.server(
        ThreadPoolExecutor(settings.max_workers, thread_name_prefix="echo"),
        handlers=[handler],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    credentials = server_credentials(
        IdentitySettings(
            mode="mtls",
            server_cert=str(certs / "server.pem"),
            server_key=str(certs / "server.key"),
            client_ca=str(certs / "ca.pem"),
        )
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.stop(0).wait()
    return 0


def _fresh_versions(packages: int, deletable: int) -> Iterator[tuple[str, str]]:
    """(package, version) pairs that exist after a reset, each once, spread over packages."""
    for version in range(deletable):
        for package in range(packages):
            yield f"pkg-{package:05d}", f"1.0.{version}"


_Call = tuple[float, float, float, str | None]
"""One call: (intended send time, actual send time, end time, error or None); monotonic."""


class _BotoCell:
    """One cell of B in the boto3 process: `concurrency` threads calling DeletePackageVersions,
    each the next call as soon as its previous one ends (closed loop, `rate` None) or the next
    call due at `start` + k / `rate`, timed from when it was due (open loop)."""

    def __init__(self, client: Any, command: dict[str, Any]) -> None:
        self._client = client
        self._pairs = _fresh_versions(command["packages"], command["deletable"])
        self._lock = threading.Lock()
        self._slots = itertools.count()
        self._start = float(command["start"])
        self._until = float(command["until"])
        self._rate: float | None = command["rate"]
        self._concurrency = int(command["concurrency"])
        self._read_first = bool(command.get("read_first"))
        self.calls: list[_Call] = []
        self.exhausted = threading.Event()

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self._lane) for _ in range(self._concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"calls": self.calls, "exhausted": self.exhausted.is_set()}

    def _lane(self) -> None:
        time.sleep(max(0.0, self._start - time.monotonic()))
        while not self.exhausted.is_set():
            if self._rate is None:
                intended = time.monotonic()
            else:
                with self._lock:
                    intended = self._start + next(self._slots) / self._rate
                time.sleep(max(0.0, intended - time.monotonic()))
            if intended >= self._until:
                return
            self.calls.append(self._one(intended))

    def _one(self, intended: float) -> _Call:
        with self._lock:
            pair = next(self._pairs, None)
        if pair is None:
            self.exhausted.set()
            return (intended, intended, intended, "out of fresh versions")
        sent = time.monotonic()
        error: str | None = None
        try:
            status: dict[str, str] = {}
            if self._read_first:  # H: what the gateway reads before deciding
                self._client.list_package_versions(
                    domain=DOMAIN, repository=REPOSITORY, format="npm", package=pair[0],
                    maxResults=1000,
                )  # fmt: skip
                status = {"expectedStatus": "Published"}
            answer = self._client.delete_package_versions(
                domain=DOMAIN, repository=REPOSITORY, format="npm", package=pair[0],
                versions=[pair[1]], **status,
            )  # fmt: skip
            if pair[1] not in answer.get("successfulVersions", {}):
                error = f"not deleted: {answer.get('failedVersions')}"
        except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
            error = f"{type(exc).__name__}: {exc}"
        return (intended, sent, time.monotonic(), error)


def _boto_worker(endpoint: str) -> int:
    """Read JSON commands on stdin, run each as a cell of boto3 deletes, answer the calls."""
    from pkggov_emulator import (  # noqa: PLC0415 - a development dependency
        DEMO_ACCESS_KEY_ID,
        DEMO_REGION,
        DEMO_SECRET_ACCESS_KEY,
    )
    from pkggov_gateway.bootstrap import build_codeartifact_client  # noqa: PLC0415

    upstream = UpstreamSettings(
        region=DEMO_REGION,
        endpoint_url=endpoint,
        access_key_id=DEMO_ACCESS_KEY_ID,
        secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )
    # A pool of one connection per calling thread, as the gateway sizes its own (its RPC
    # and chunk threads): a smaller pool would open and drop connections all the time.
    client = build_codeartifact_client(upstream, pool_size=HIGH)
    client.list_domains()  # connect, load the model's parsers: not part of any cell
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(_BotoCell(client, json.loads(line)).run()), flush=True)
    return 0


# --- managed processes ------------------------------------------------------------------


KEPT_LINES = 200
"""How many lines of a child's standard output `_Child.lines` keeps (all go to its log)."""


class _Child:
    """A process this script started; stdout and stderr go to a log file under WORK. With
    `tree`, its CPU and memory are those of it and every process it started (a supervisor
    and its workers)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        ready: str,
        stdin: bool = False,
        timeout: float = 60.0,
        tree: bool = False,
    ) -> None:
        self.name = name
        self.tree = tree
        self.lines: list[str] = []
        """Its standard output (the first KEPT_LINES lines; only up to the line `ready`
        matched when `stdin`: then what follows is read by `receive`)."""
        self._drain = not stdin
        self._log_lock = threading.Lock()
        self.log = WORK / f"{name}.log"
        self._log_file = self.log.open("w")
        self._proc = subprocess.Popen(  # noqa: S603 - our own executables, fixed arguments
            list(argv),
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env,
            text=True,
            cwd=ROOT,
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None  # noqa: S101 - PIPE was asked for
        self.stdout: IO[str] = self._proc.stdout
        self.match = self._wait_for(re.compile(ready), timeout)

    def _wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        found: list[re.Match[str]] = []
        done = threading.Event()

        def read() -> None:
            for line in self.stdout:
                with self._log_lock:
                    if not self._log_file.closed:
                        self._log_file.write(line)
                        self._log_file.flush()
                if len(self.lines) < KEPT_LINES:
                    self.lines.append(line.rstrip("\n"))
                if not found and (match := pattern.search(line)):
                    found.append(match)
                    done.set()
                    if not self._drain:
                        break
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        done.wait(timeout)
        if not found:
            self.stop()
            said = [line for line in self.log.read_text().splitlines() if line.strip()]
            last = f": {said[-1].strip()[:300]}" if said else ""
            raise RuntimeError(f"{self.name} did not start (see {self.log}){last}")
        return found[0]

    def send(self, line: str) -> None:
        assert self._proc.stdin is not None  # noqa: S101 - started with stdin=True
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def receive(self) -> str:
        return self.stdout.readline()

    def pids(self) -> list[int]:
        """Its process id, and with `tree` those of every process it started, now."""
        return [self.pid, *_descendants(self.pid)] if self.tree else [self.pid]

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM in kB; with `tree`, the sums over its processes (an upper bound:
        pages they share, such as those of shared libraries, count once per process)."""
        if not self.tree:
            return _memory_kb(self.pid)
        total: Counter[str] = Counter()
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total.update(_memory_kb(pid))
        return dict(total)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        with self._log_lock:
            self._log_file.close()


class _Server(Protocol):
    """What a cell measures as its server: one process, a process tree, or a fleet."""

    @property
    def pid(self) -> int: ...

    def pids(self) -> list[int]: ...

    def memory_kb(self) -> dict[str, int]: ...


class _Fleet:
    """Gateway processes measured as one server: their CPU summed, their memory the largest
    one's (each is a whole gateway)."""

    def __init__(self, members: Sequence[_Child]) -> None:
        self.members = list(members)

    @property
    def pid(self) -> int:
        return self.members[0].pid

    def pids(self) -> list[int]:
        return [pid for member in self.members for pid in member.pids()]

    def memory_kb(self) -> dict[str, int]:
        memories = [member.memory_kb() for member in self.members]
        return {key: max(m.get(key, 0) for m in memories) for key in ("VmRSS", "VmHWM")}


def _start_emulator(seed: Path, name: str) -> tuple[_Child, str]:
    child = _Child(
        name,
        [str(BIN / "pkggov-emulator"), "--listen", "127.0.0.1:0", "--seed", str(seed)],
        ready=r"listening on (http://\S+)",
    )
    return child, child.match.group(1)


def _reset(endpoint: str, latency: float = 0.0) -> None:
    """Back to the seed; with `latency`, every call then answered that many seconds late."""
    url = f"{endpoint}/_emulator/reset"  # the emulator's control API (http://127.0.0.1:port)
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        answer.read()
    if latency > 0:
        rule = json.dumps({"operation": "*", "kind": "latency", "latency_seconds": latency})
        request = urllib.request.Request(  # noqa: S310
            f"{endpoint}/_emulator/faults",
            data=rule.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            answer.read()


def _gateway_env(endpoint: str, certs: Path, store: str) -> dict[str, str]:
    from pkggov_emulator import (  # noqa: PLC0415 - a development dependency
        DEMO_ACCESS_KEY_ID,
        DEMO_REGION,
        DEMO_SECRET_ACCESS_KEY,
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGGOV_")}
    env.update(
        PKGGOV_SERVER_LISTEN="127.0.0.1:0",
        PKGGOV_EMULATOR_ENABLED="false",
        PKGGOV_UPSTREAM_ENDPOINT_URL=endpoint,
        PKGGOV_UPSTREAM_REGION=DEMO_REGION,
        PKGGOV_UPSTREAM_ACCESS_KEY_ID=DEMO_ACCESS_KEY_ID,
        PKGGOV_UPSTREAM_SECRET_ACCESS_KEY=DEMO_SECRET_ACCESS_KEY,
        PKGGOV_UPSTREAM_WRITE_CALLS_PER_SECOND=UNLIMITED_RATE,
        PKGGOV_UPSTREAM_READ_CALLS_PER_SECOND=UNLIMITED_RATE,
        PKGGOV_IDENTITY_MODE="mtls",
        PKGGOV_IDENTITY_SERVER_CERT=str(certs / "server.pem"),
        PKGGOV_IDENTITY_SERVER_KEY=str(certs / "server.key"),
        PKGGOV_IDENTITY_CLIENT_CA=str(certs / "ca.pem"),
        PKGGOV_AUDIT_STORE=store,
        PKGGOV_AUDIT_LOG="off",
        PKGGOV_LOGGING_LEVEL="warning",
        PKGGOV_LOGGING_FORMAT="json",
        PKGGOV_METRICS_LISTEN="127.0.0.1:0",
    )
    return env


LISTENING = re.compile(r"pkggov gateway listening on (\S+)")
METRICS_AT = re.compile(r"Prometheus metrics at http://(\S+)/metrics")


def _start_gateway(
    name: str,
    endpoint: str,
    certs: Path,
    store: str,
    *,
    extra: dict[str, str] | None = None,
    metrics: bool = False,
    tree: bool = False,
) -> tuple[_Child, str]:
    """A gateway and its gRPC address; `extra`: more PKGGOV_* settings; with `metrics`, it is
    ready once its banner names its metrics endpoint (`_metrics_address`)."""
    child = _Child(
        name,
        [str(BIN / "pkggov-gateway")],
        env=_gateway_env(endpoint, certs, store) | (extra or {}),
        ready=(METRICS_AT if metrics else LISTENING).pattern,
        tree=tree,
    )
    target = next((m.group(1) for line in child.lines if (m := LISTENING.search(line))), None)
    if target is None:
        child.stop()
        raise RuntimeError(f"{name}: no 'listening on' line (see {child.log})")
    return child, target


def _metrics_address(child: _Child, wait: float = 5.0) -> str | None:
    """HOST:PORT of a gateway's metrics endpoint, from its banner (None: not printed within
    `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        found = next((m.group(1) for line in child.lines if (m := METRICS_AT.search(line))), None)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


# --- seeds ------------------------------------------------------------------------------


def _write_seed(path: Path, packages: int, versions: int) -> Path:
    """A seed with `packages` npm packages of `versions` versions each (1.0.0 ...)."""
    path.write_text(
        json.dumps(
            {
                "comment": "written by scripts/bench_gateway.py",
                "domains": [
                    {
                        "name": DOMAIN,
                        "createdTime": "2025-01-06T09:00:00Z",
                        "repositories": [
                            {
                                "name": REPOSITORY,
                                "packages": [
                                    {
                                        "format": "npm",
                                        "name": f"pkg-{i:05d}",
                                        "versions": [
                                            {"version": f"1.0.{j}"} for j in range(versions)
                                        ],
                                    }
                                    for i in range(packages)
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    return path


# --- load generation --------------------------------------------------------------------

_Thunk = Callable[[], Awaitable[str | None]]
"""Makes one call; returns None when the answer is as expected, else what was wrong."""
_Maker = Callable[[], _Thunk | None]
"""The next call to make, or None when there is nothing left to send (fresh versions)."""


@dataclass(slots=True)
class _Run:
    calls: list[_Call] = field(default_factory=list)
    exhausted: bool = False

    async def send(self, make: _Maker, intended: float | None = None) -> bool:
        """Make the next call and record it, timed from `intended` (None: from when it is
        sent); False when there is nothing left to send."""
        thunk = make()
        if thunk is None:
            self.exhausted = True
            return False
        sent = time.monotonic()
        error = await thunk()
        self.calls.append((sent if intended is None else intended, sent, time.monotonic(), error))
        return True


async def _closed_loop(
    make: _Maker, concurrency: int, until: float, calls_per_lane: float = math.inf
) -> _Run:
    run = _Run()

    async def lane() -> None:
        made = 0
        while time.monotonic() < until and made < calls_per_lane:
            made += 1
            if not await run.send(make):
                return

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return run


async def _open_loop(make: _Maker, rate: float, lanes: int, start: float, until: float) -> _Run:
    """Calls due at `start` + k / `rate`; each of `lanes` lanes takes the next due call when it
    is free, so at most `lanes` are outstanding and a late call is timed from when it was due."""
    run = _Run()
    slots = itertools.count()

    async def lane() -> None:
        while True:
            intended = start + next(slots) / rate
            if intended >= until:
                return
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await run.send(make, intended):
                return

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return run


def _channel(target: str, certs: Path, client: str) -> grpc.aio.Channel:
    ca, key, cert = _read_certs(certs, client)
    return grpc.aio.secure_channel(
        target,
        grpc.ssl_channel_credentials(ca, key, cert),
        options=[("grpc.use_local_subchannel_pool", 1)],  # one connection per channel
    )


def _request(package: str, versions: Sequence[str], *, dry_run: bool = False) -> bytes:
    return pb.DeletePackageVersionsRequest(
        domain=DOMAIN,
        repository=REPOSITORY,
        format=pb.PACKAGE_FORMAT_NPM,
        package=package,
        versions=list(versions),
        validate_only=dry_run,
    ).SerializeToString()


_Multi = grpc.aio.UnaryUnaryMultiCallable[bytes, Any]


def _stubs(channels: Sequence[grpc.aio.Channel], *, raw: bool) -> Iterator[_Multi]:
    deserializer = None if raw else pb.DeletePackageVersionsResponse.FromString
    multis = [
        ch.unary_unary(METHOD, request_serializer=None, response_deserializer=deserializer)
        for ch in channels
    ]
    return itertools.cycle(multis)


def _error_text(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"


def _maker(kind: str, stubs: Iterator[_Multi], packages: range) -> _Maker:
    """The calls of one scenario: kind is echo, allow, deny, dry or bulk, on `packages` (their
    numbers). allow and bulk delete versions, each once; the others repeat calls on 1.0.0."""
    fresh: Iterator[tuple[str, str]]
    if kind == "allow":
        fresh = ((f"pkg-{i:05d}", f"1.0.{j}") for j in range(SMALL_VERSIONS - 1) for i in packages)
    elif kind == "bulk":
        fresh = ((f"pkg-{i:05d}", "") for i in packages)
    else:
        fresh = itertools.cycle([(f"pkg-{i:05d}", "1.0.0") for i in packages])
    bulk = [f"1.0.{j}" for j in range(F_VERSIONS)] if kind == "bulk" else []

    def make() -> _Thunk | None:
        pair = next(fresh, None)
        if pair is None:
            return None
        package, version = pair
        stub = next(stubs)
        if kind == "bulk":
            body = _request(package, bulk)
        else:
            body = _request(package, [version], dry_run=kind == "dry")

        async def call() -> str | None:
            try:
                answer = await stub(body, timeout=60)
            except grpc.aio.AioRpcError as error:
                if kind == "deny" and error.code() is grpc.StatusCode.PERMISSION_DENIED:
                    return None
                return _error_text(error)
            return _check(kind, answer, version)

        return call

    return make


def _check(kind: str, answer: Any, version: str) -> str | None:
    if kind == "echo":
        return None
    if kind == "deny":
        return "answered OK, expected PERMISSION_DENIED"
    if kind == "dry":
        decision = answer.decisions.get(version)
        if decision is None or decision.outcome != pb.VERSION_OUTCOME_WOULD_DELETE:
            return f"unexpected plan {decision}"
        return None
    if kind == "bulk":
        if len(answer.successful_versions) != F_VERSIONS:
            return f"{len(answer.successful_versions)} deleted, {len(answer.failed_versions)} not"
        return None
    if version not in answer.successful_versions:
        return f"not deleted: {dict(answer.failed_versions)}"
    return None


# --- cells ------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Row:
    """One cell: a scenario at one concurrency, closed or open loop."""

    scenario: str
    title: str
    concurrency: int
    loop: str  # "closed", "open" or "wave" (F: 64 calls sent at once)
    target_rate: float | None
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float
    server_sys_ms: float
    server_rss_mb: float
    server_peak_rss_mb: float
    emulator_cpu_ms: float | None
    generator_cpu_pct: float
    machine_busy_pct: float
    other_busy_pct: float
    lateness_p50_ms: float | None = None
    lateness_p99_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    chain_lock: dict[str, Any] | None = None
    """The audit chain lock per gateway process, from its metrics (`_LockProbe`)."""
    checks: dict[str, Any] | None = None
    """P: the audit chain's verification and the nothing-lost counts (`_fleet_checks`)."""
    rounds: list[dict[str, float]] | None = None
    """Measured side by side (`_side_by_side`): each round's window on its own (p50_ms,
    cpu_ms), in the order of the rounds; the row is all of them together."""

    @property
    def label(self) -> str:
        if self.loop == "open":
            return f"{self.concurrency} open@{self.target_rate:.0f}/s"
        if self.loop == "wave":
            return f"{self.concurrency} at once"
        return f"{self.concurrency}"


@dataclass(frozen=True)
class _Window:
    """One measurement window: the calls made around it, and the CPU counters at its ends."""

    run: _Run
    first: _Snapshot
    last: _Snapshot


def _summarize(
    scenario: str,
    windows: Sequence[_Window],
    *,
    concurrency: int,
    rate: float | None,
    server: _Server,
    emulator: _Child | None,
    generator_is_server: bool = False,
    loop: str | None = None,
    server_pids: Sequence[int] | None = None,
) -> Row:
    """The row of one cell, measured in one window or, side by side (`_side_by_side`), in
    several, taken together; `loop` "wave" for F's calls sent at once, else (None) "closed"
    or "open" by `rate`; the server's CPU is that of `server_pids` (default: its pid)."""
    seconds = generator = busy = ticks = others = server_user = server_sys = 0.0
    emulator_cpu = 0.0
    finished: list[_Call] = []
    counted: list[_Call] = []
    latencies: list[float] = []
    lateness: list[float] = []
    for window in windows:
        first, last = window.first, window.last
        start, end = first.at, last.at
        seconds += end - start
        done = [c for c in window.run.calls if start <= c[2] <= end]
        finished += done
        if rate is None:
            counted += done
            latencies += [(c[2] - c[1]) * 1000 for c in done if c[3] is None]
        else:
            due = [c for c in window.run.calls if start <= c[0] < end]
            counted += due
            latencies += [(c[2] - c[0]) * 1000 for c in due if c[3] is None]
            lateness += [(c[1] - c[0]) * 1000 for c in due]
        for pid in server_pids or [server.pid]:
            user, system = first.used(last, pid)
            server_user, server_sys = server_user + user, server_sys + system
        if emulator is not None:
            emulator_cpu += sum(first.used(last, emulator.pid))
        spent = last.generator - first.generator
        generator += 0.0 if generator_is_server else spent
        busy += last.machine[0] - first.machine[0]
        ticks += last.machine[1] - first.machine[1]
        ours = sum(sum(first.used(last, pid)) for pid in last.cpu) + spent
        others += (last.machine[0] - first.machine[0]) / CLK_TCK - ours
    errors = [c[3] for c in counted if c[3] is not None]
    n = max(1, len(finished))
    capacity = seconds * (os.cpu_count() or 1)
    memory = server.memory_kb()
    row = Row(
        scenario=scenario,
        title=TITLES[scenario],
        concurrency=concurrency,
        loop=loop or ("closed" if rate is None else "open"),
        target_rate=rate,
        seconds=seconds,
        requests=len(finished),
        errors=len(errors),
        rps=len(finished) / seconds,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        server_cpu_ms=(server_user + server_sys) * 1000 / n,
        server_sys_ms=server_sys * 1000 / n,
        server_rss_mb=memory.get("VmRSS", 0) / 1024,
        server_peak_rss_mb=memory.get("VmHWM", 0) / 1024,
        emulator_cpu_ms=emulator_cpu * 1000 / n if emulator else None,
        generator_cpu_pct=100 * generator / seconds,
        machine_busy_pct=100 * busy / max(1.0, ticks),
        other_busy_pct=max(0.0, 100 * others / capacity),
        lateness_p50_ms=_percentile(lateness, 0.5) if lateness else None,
        lateness_p99_ms=_percentile(lateness, 0.99) if lateness else None,
        error_samples=[str(e) for e, _ in Counter(errors).most_common(3)],
    )
    if any(window.run.exhausted for window in windows):
        row.notes.append("RAN OUT of fresh versions (raise ASSUMED_MAX_RATE)")
    if errors:
        row.notes.append(f"{len(errors)} ERRORS (see the JSON)")
    if row.other_busy_pct >= 10:
        row.notes.append("NOISY (other processes)")
    if not generator_is_server and row.generator_cpu_pct >= 85:
        row.notes.append("GENERATOR-BOUND (its CPU ~ a full core)")
    elif row.machine_busy_pct >= 95 and row.generator_cpu_pct >= 25:
        row.notes.append("machine CPU-bound, generator competing")
    if rate is not None and row.rps < 0.95 * rate:
        row.notes.append(f"only {row.rps:.0f}/s done")
    if (
        row.lateness_p99_ms is not None
        and row.lateness_p99_ms > max(2.0, 0.2 * row.p50_ms)
        and row.lateness_p50_ms is not None
    ):
        row.notes.append(
            f"sent late: p50 {row.lateness_p50_ms:.1f}, p99 {row.lateness_p99_ms:.1f} ms"
        )
    return row


# --- the audit chain lock, from the gateways' metrics -------------------------------------

LOCK_WAIT = "pkggov_audit_chain_lock_wait_seconds"
"""Histogram: per group commit, the time to get the chain lock."""
LOCK_HOLD = "pkggov_audit_group_commit_seconds"
"""Histogram: per group commit, the time the chain lock is held."""
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)")


def _scrape(address: str) -> dict[str, float]:
    """The sums and counts of the chain lock histograms at http://ADDRESS/metrics, every
    label set added up ({} when the gateway exports neither)."""
    url = f"http://{address}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    wanted = {f"{name}_{part}" for name in (LOCK_WAIT, LOCK_HOLD) for part in ("sum", "count")}
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in wanted:
            found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(2))
    return found


class _LockProbe:
    """The chain lock histograms of gateways (name -> metrics address), scraped at the start
    and the end of a measurement window."""

    def __init__(self, addresses: dict[str, str | None]) -> None:
        self.addresses = addresses
        self.samples: list[dict[str, dict[str, float] | str]] = []

    def take(self) -> None:
        sample: dict[str, dict[str, float] | str] = {}
        for name, address in self.addresses.items():
            if address is None:
                sample[name] = "no metrics endpoint in its banner"
                continue
            try:
                sample[name] = _scrape(address)
            except OSError as error:
                sample[name] = f"scrape failed: {error}"
        self.samples.append(sample)

    def report(self, seconds: float) -> tuple[list[str], dict[str, Any]]:
        """Per gateway over the window: group commits/s, mean wait for the lock, mean time
        held, and the lock's utilization (time held / window); notes for the row and the
        numbers for the JSON."""
        if len(self.samples) < 2:  # its start and its end
            return ["chain lock metrics: not scraped"], {}
        first, last = self.samples[0], self.samples[-1]
        data: dict[str, Any] = {}
        parts: list[str] = []
        held_total = 0.0
        for name in self.addresses:
            before, after = first.get(name), last.get(name)
            if not isinstance(before, dict) or not isinstance(after, dict):
                problem = before if isinstance(before, str) else after
                data[name] = {"error": str(problem)}
                parts.append(f"{name} {problem}")
                continue
            if f"{LOCK_HOLD}_count" not in after and f"{LOCK_WAIT}_count" not in after:
                data[name] = {"exported": False}
                parts.append(f"{name} not exported")
                continue

            def delta(key: str, b: dict[str, float] = before, a: dict[str, float] = after) -> float:
                return a.get(key, 0.0) - b.get(key, 0.0)

            commits = delta(f"{LOCK_HOLD}_count") or delta(f"{LOCK_WAIT}_count")
            waited, held = delta(f"{LOCK_WAIT}_sum"), delta(f"{LOCK_HOLD}_sum")
            held_total += held
            entry = {
                "exported": True,
                "group_commits": commits,
                "commits_per_second": commits / seconds,
                "mean_wait_ms": 1000 * waited / commits if commits else None,
                "mean_hold_ms": 1000 * held / commits if commits else None,
                "utilization": held / seconds,
            }
            data[name] = entry
            parts.append(
                f"{name} {entry['commits_per_second']:.0f} commits/s, wait "
                f"{_ms(entry['mean_wait_ms'])}, hold {_ms(entry['mean_hold_ms'])}, "
                f"held {100 * held / seconds:.0f} % of the window"
            )
        if data and all(entry.get("exported") is False for entry in data.values()):
            return ["chain lock metrics: not exported"], data
        if len(self.addresses) > 1:
            parts.append(f"lock held {100 * held_total / seconds:.0f} % of the window in all")
        data["utilization_total"] = held_total / seconds
        return ["chain lock: " + "; ".join(parts)], data


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


@dataclass
class _Plan:
    warmup: float
    seconds: float


async def _grpc_window(
    plan: _Plan,
    make: _Maker,
    pids: Sequence[int],
    *,
    concurrency: int,
    rate: float | None,
    wave: bool = False,
    probe: _LockProbe | None = None,
    begins: Callable[[float], None] | None = None,
) -> _Window:
    """A warm-up, then the measurement window (closed or open loop); or, with `wave`,
    `concurrency` calls sent at once, the window lasting until the last one ends. `probe`
    scrapes the gateways' metrics just after the window's first and last snapshot; `begins` is
    told when the window will begin."""
    loop_start = time.monotonic() + 0.05
    begin = loop_start + plan.warmup
    until = begin + plan.seconds
    snapshots: list[_Snapshot] = []

    async def snap(at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        snapshots.append(_Snapshot.take(pids))
        if probe is not None:
            await asyncio.to_thread(probe.take)

    if begins is not None:  # a wave is sent at once (no wait for loop_start and the warm-up)
        begins(time.monotonic() if wave else begin)
    if wave:
        snapshots.append(_Snapshot.take(pids))
        run = await _closed_loop(make, concurrency, until=math.inf, calls_per_lane=1)
        snapshots.append(_Snapshot.take(pids))
    else:
        snappers = [asyncio.create_task(snap(begin)), asyncio.create_task(snap(until))]
        if rate is None:
            await asyncio.sleep(max(0.0, loop_start - time.monotonic()))
            run = await _closed_loop(make, concurrency, until)
        else:
            run = await _open_loop(make, rate, concurrency, loop_start, until)
        await asyncio.gather(*snappers)
    return _Window(run, snapshots[0], snapshots[1])


async def _measure_grpc(
    scenario: str,
    plan: _Plan,
    *,
    concurrency: int,
    rate: float | None,
    make: _Maker,
    server: _Server,
    emulator: _Child | None,
    profile: bool = False,
    wave: bool = False,
    probe: _LockProbe | None = None,
) -> Row:
    """One cell in one window (`_grpc_window`), profiled with py-spy when `profile`."""
    server_pids = server.pids()
    spies: list[_Spy | None] = []

    def begins(at: float) -> None:
        spies.append(_start_py_spy(scenario, server, at, plan.seconds))

    window = await _grpc_window(
        plan, make, server_pids + ([emulator.pid] if emulator else []),
        concurrency=concurrency, rate=rate, wave=wave, probe=probe,
        begins=begins if profile else None,
    )  # fmt: skip
    row = _summarize(
        scenario, [window], concurrency=concurrency, rate=rate, server=server,
        emulator=emulator, loop="wave" if wave else None, server_pids=server_pids,
    )  # fmt: skip
    if probe is not None:
        notes, row.chain_lock = probe.report(row.seconds)
        row.notes += notes
    for spy in spies:
        if spy is not None:
            row.notes.append(f"py-spy: {_finish_py_spy(spy)}")
    return row


# --- py-spy (optional) ------------------------------------------------------------------


@dataclass
class _Spy:
    proc: subprocess.Popen[bytes]
    raw: Path


def _start_py_spy(scenario: str, server: _Server, begin: float, seconds: float) -> _Spy | None:
    exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if exe is None:
        print("  (py-spy not installed: .venv/bin/pip install py-spy)", flush=True)
        return None
    raw = WORK / f"py-spy-{scenario}.txt"
    delay = max(0.0, begin - time.monotonic())
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            "/bin/sh",
            "-c",
            f"sleep {delay:.3f}; exec {exe} record --pid {server.pid} --duration "
            f"{max(1, int(seconds))} --rate 100 --gil --nonblocking --subprocesses "
            f"--format raw --output {raw}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return _Spy(proc, raw)


def _finish_py_spy(spy: _Spy, top: int = 8) -> str:
    try:
        spy.proc.wait(60)
    except subprocess.TimeoutExpired:
        spy.proc.kill()
        return "timed out"
    if not spy.raw.exists():
        return "no profile written"
    return f"{_py_spy_summary(spy.raw, top)} ({spy.raw.name})"


_PROFILE_PARTS = (
    ("ListPackageVersions (boto3)", "BotoCodeArtifact.package_state"),
    ("DeletePackageVersions (boto3)", "BotoCodeArtifact.delete_package_versions"),
    ("policy (Cedar)", "adapters/cedar.py"),
    ("audit intent", "GovernedCall.before_forwarding"),
    ("audit outcome", "GovernedCall._finish"),
    ("audit store writer", "adapters/sql/"),
    ("audit, other", "service/audit.py"),
    ("messages to dicts", "_as_dict (pkggov_gateway"),
    ("use case, other", "service/delete_versions.py"),
    ("servicer, other", "api/servicer.py"),
    ("edge interceptor, other", "api/interceptors.py"),
    ("grpc server", "grpc/_server.py"),
)
"""Parts of the server a py-spy stack is counted in: the first whose marker it contains."""


def _py_spy_summary(raw: Path, top: int) -> str:
    """Where the thread holding the GIL was, by part of the server (% of samples)."""
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        part = next((name for name, marker in _PROFILE_PARTS if marker in stack), "other")
        parts[part] += int(count)
    if not total:
        return "no samples"
    shares = ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in parts.most_common(top))
    return f"{total} samples: {shares}"


SPY_RATE = 1000
"""Samples per second of the profiles taken alone (PROFILED_ALONE)."""

PROFILED_ALONE = {"C": "gil", "R": "idle"}
"""With --py-spy, after their cells (and not during them, as py-spy at 1,000 samples/s would
disturb their numbers): C at concurrency 1 profiled by GIL time (where the CPU of a call
goes), R at concurrency 1 by wall time of the thread serving each call (where a caller's time
goes against a slow upstream)."""

_WALL_PARTS = (
    ("CodeArtifact: waiting for the answer", ("readinto (socket.py", "_read_status (http")),
    ("CodeArtifact: boto3 (CPU)", ("BotoCodeArtifact",)),
    ("audit: COMMIT (the durable write)", ("<leaf>GroupCommitWriter._commit (",)),
    ("audit: intent (the entry, its hash, the insert)", ("before_forwarding",)),
    ("audit: outcome (the same, with the answer)", ("GovernedCall._finish",)),
    ("policy (Cedar)", ("adapters/cedar.py",)),
)
"""Parts of a call's wall time (R): the first part with a marker in the stack (``<leaf>``: in
the innermost frame) counts the sample; every other sample of a call is `other gateway work`."""


async def _profile_alone(scenario: str, plan: _Plan, make: _Maker, server: _Server) -> str:
    """Profile `scenario` at concurrency 1 for a few seconds (PROFILED_ALONE): per call, the
    milliseconds of each part, as one note."""
    mode = PROFILED_ALONE[scenario]
    exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if exe is None:
        return f"{scenario} alone: py-spy not installed"
    seconds = max(4, math.ceil(2 * plan.seconds))
    raw = WORK / f"py-spy-{scenario}-c1-{mode}.txt"
    spy = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(server.pid), "--duration", str(seconds),
        "--rate", str(SPY_RATE), f"--{mode}", "--nonblocking", "--format", "raw",
        "--output", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    run = await _closed_loop(make, 1, until=time.monotonic() + seconds)
    await spy.wait()
    calls = len(run.calls)
    if not raw.exists() or not calls:
        return f"{scenario} alone: no profile written"
    parts = _profile_parts(raw, mode)
    per_call = {name: samples * 1000 / SPY_RATE / calls for name, samples in parts.items()}
    what = "GIL time (CPU in Python code)" if mode == "gil" else "wall time of the serving thread"
    shares = ", ".join(f"{name} {per_call[name]:.2f}" for name, _ in parts.most_common())
    total = sum(per_call.values())
    return (
        f"{scenario} alone at concurrency 1, py-spy --{mode} at {SPY_RATE:,}/s for {seconds} s "
        f"({calls} calls, {raw.name}): {what} {total:.2f} ms per call: {shares} ms"
    )


def _profile_parts(raw: Path, mode: str) -> Counter[str]:
    """Samples of `raw` by part: GIL mode by `_PROFILE_PARTS`; idle mode, of the threads
    serving calls only, by `_WALL_PARTS`."""
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if mode == "gil":
            part = next((name for name, marker in _PROFILE_PARTS if marker in stack), "other")
        elif "_unary_response_in_pool" not in stack:
            continue
        else:
            leaf = "<leaf>" + stack.rpartition(";")[2]
            part = next(
                (
                    name
                    for name, markers in _WALL_PARTS
                    if any(m in (leaf if m.startswith("<leaf>") else stack) for m in markers)
                ),
                "other gateway work",
            )
        parts[part] += int(count)
    return parts


# --- scenarios --------------------------------------------------------------------------


@dataclass
class _Context:
    args: argparse.Namespace
    plan: _Plan
    certs: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    soak: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    side_by_side: set[tuple[str, int]] = field(default_factory=set)
    """(scenario, concurrency) of the cells `_side_by_side` measured."""


def _bulk_packages(ctx: _Context) -> int:
    """Packages of 1,001 versions F needs per reset: 64 at once, or a window at <= 30/s."""
    window = ctx.plan.warmup + ctx.plan.seconds * float(ctx.args.bulk_factor)
    return max(HIGH + 16, math.ceil(30 * window))


def _small_packages(plan: _Plan) -> int:
    needed = ASSUMED_MAX_RATE * (plan.warmup + plan.seconds + 1)
    return max(HIGH, math.ceil(needed / (SMALL_VERSIONS - 1)))


CELLS = ((1, False), (HIGH, False), (HIGH, True))
"""(concurrency, open loop) of each scenario's cells, in order: the open loop runs at
OPEN_FRACTION of the throughput of the closed loop just before it."""


def _nchannels(concurrency: int, scenario: str) -> int:
    if concurrency == 1:
        return 1
    return SPREAD_CHANNELS if scenario == "W" else CHANNELS


SIDE_BY_SIDE = "ABHCTSR"
"""The scenarios of the concurrency-1 cells that the goals compare (C with A + B and A + H, R
with A + S; T beside them): measured side by side before the other cells, every scenario's
processes up at once, in ROUNDS rounds of one short window each (`_side_by_side`)."""
ROUNDS = 5
"""Rounds of the side-by-side windows; each goal's ratio is the median of the rounds'."""


def _cells(ctx: _Context, scenario: str) -> list[tuple[int, bool]]:
    """The cells of `scenario` still to measure (CELLS without those measured side by side)."""
    return [cell for cell in CELLS if (scenario, cell[0]) not in ctx.side_by_side]


def _add_row(ctx: _Context, row: Row) -> None:
    ctx.rows.append(row)
    print(f"  {_format_row(row)}", flush=True)


async def _side_by_side(ctx: _Context) -> None:
    """The concurrency-1 cells of SIDE_BY_SIDE's scenarios, side by side: this machine's speed
    moves by tens of per cent within minutes, so scenarios measured one after the other can
    compare two different machines. Every scenario's processes run at once (the idle ones use
    no CPU); each of ROUNDS rounds measures one short window of each scenario, in turn, in
    alternating order; a row is its scenario's windows together, and a ratio (`_ratio`) the
    median of the rounds' ratios."""
    scenarios = [s for s in SIDE_BY_SIDE if s in ctx.args.scenarios]
    if not scenarios:
        return
    fast = _Plan(ctx.plan.warmup / 5, ctx.plan.seconds * 0.24)
    slow = _Plan(fast.warmup, 2 * fast.seconds)  # calls of 20-50 ms: longer windows
    with contextlib.ExitStack() as stack:
        parties: dict[str, _BotoParty | _GrpcParty] = {
            s: (_BotoParty if s in BOTO_SCENARIOS else _GrpcParty)(ctx, s, stack) for s in scenarios
        }
        windows: dict[str, list[_Window]] = {s: [] for s in scenarios}
        for index in range(ROUNDS):
            for scenario in scenarios if index % 2 == 0 else reversed(scenarios):
                plan = slow if scenario in SLOW else fast
                windows[scenario].append(await parties[scenario].window(plan, 1, None))
        rows = []
        for scenario in scenarios:
            party = parties[scenario]
            row = party.summarize(windows[scenario], 1, None)
            rounds = [party.summarize([w], 1, None) for w in windows[scenario]]
            row.rounds = [{"p50_ms": r.p50_ms, "cpu_ms": r.server_cpu_ms} for r in rounds]
            row.notes.append(f"side by side: {ROUNDS} rounds of {row.seconds / ROUNDS:.1f} s")
            rows.append(row)
    for row in rows:
        ctx.side_by_side.add((row.scenario, 1))
        _add_row(ctx, row)


def _ratio(row: Row, floors: Sequence[Row], attr: str) -> tuple[float, str]:
    """`row`'s `attr` over the sum of the `floors`' and how it was taken: rows measured side by
    side, the median of their rounds' ratios (each round's windows were minutes closer in time
    than the rows' ends); else the rows' own."""
    rows = [row, *floors]
    if all(r.rounds for r in rows) and len({len(r.rounds or ()) for r in rows}) == 1:
        key = attr.replace("server_", "")
        ratios = sorted(
            a[key] / sum(f[key] for f in rest)
            for a, *rest in zip(*(r.rounds or () for r in rows), strict=True)
        )
        median = ratios[len(ratios) // 2]
        return median, f"median of {len(ratios)} rounds, {ratios[0]:.2f} to {ratios[-1]:.2f}"
    return getattr(row, attr) / sum(getattr(f, attr) for f in floors), "one after the other"


async def _close(channels: Sequence[grpc.aio.Channel]) -> None:
    for channel in channels:
        await channel.close(None)


def _latency(ctx: _Context, scenario: str) -> float:
    """The upstream latency a scenario runs with (seconds; 0 for all but T, S and R)."""
    return float(ctx.args.upstream_latency_ms) / 1000 if scenario in SLOW else 0.0


class _BotoParty:
    """B, H, T or S: this script's boto worker making the boto3 calls (it is their "server",
    and its own load generator) to an emulator of its own."""

    def __init__(self, ctx: _Context, scenario: str, stack: contextlib.ExitStack) -> None:
        self.ctx, self.scenario = ctx, scenario
        self.packages = _small_packages(ctx.plan)
        seed = _write_seed(WORK / "seed-small.json", self.packages, SMALL_VERSIONS)
        self.emulator, self.endpoint = _start_emulator(seed, f"emulator-{scenario}")
        stack.callback(self.emulator.stop)
        self.server = _Child(
            f"boto-{scenario}",
            [sys.executable, __file__, "--role", "boto", "--endpoint", self.endpoint],
            ready=r"^ready",
            stdin=True,
        )
        stack.callback(self.server.stop)

    async def window(self, plan: _Plan, concurrency: int, rate: float | None) -> _Window:
        """One window of the worker's cell, from the seed (the emulator is reset first)."""
        await asyncio.to_thread(_reset, self.endpoint, _latency(self.ctx, self.scenario))
        loop_start = time.monotonic() + 0.1
        begin = loop_start + plan.warmup
        until = begin + plan.seconds
        command = {
            "concurrency": concurrency,
            "rate": rate,
            "start": loop_start,
            "until": until,
            "packages": self.packages,
            "deletable": SMALL_VERSIONS - 1,
            "read_first": self.scenario in ("H", "S"),
        }
        pids = [self.server.pid, self.emulator.pid]
        self.server.send(json.dumps(command))
        answer = asyncio.create_task(asyncio.to_thread(self.server.receive))
        await asyncio.sleep(max(0.0, begin - time.monotonic()))
        first = _Snapshot.take(pids)
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        last = _Snapshot.take(pids)
        result = json.loads(await answer)
        calls: list[_Call] = [(c[0], c[1], c[2], c[3]) for c in result["calls"]]
        return _Window(_Run(calls, result["exhausted"]), first, last)

    def summarize(self, windows: Sequence[_Window], concurrency: int, rate: float | None) -> Row:
        return _summarize(
            self.scenario, windows, concurrency=concurrency, rate=rate, server=self.server,
            emulator=self.emulator, generator_is_server=True,
        )  # fmt: skip

    async def cell(self, concurrency: int, rate: float | None) -> Row:
        """One cell of the table, in one window of ctx.plan."""
        window = await self.window(self.ctx.plan, concurrency, rate)
        return self.summarize([window], concurrency, rate)


async def _scenario_boto(ctx: _Context, scenario: str) -> None:
    """B or H (or T or S): boto3 calls from this script's boto worker to an emulator."""
    with contextlib.ExitStack() as stack:
        party = _BotoParty(ctx, scenario, stack)
        for concurrency, open_loop in _cells(ctx, scenario):
            rate = OPEN_FRACTION * ctx.rows[-1].rps if open_loop else None
            _add_row(ctx, await party.cell(concurrency, rate))


def _remove_sqlite(name: str) -> None:
    """Remove an SQLite database of WORK with its -wal and -shm files."""
    for path in WORK.glob(f"{name}*"):
        path.unlink()


def _analyze(store_url: str) -> None:
    """ANALYZE the gateway's tables (what autovacuum does soon on a live database), so that
    the plans its connections cache are not made for empty tables."""
    import psycopg  # noqa: PLC0415 - only for G

    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


KINDS = {
    "A": "echo",
    "C": "allow",
    "W": "allow",
    "D": "deny",
    "E": "dry",
    "F": "bulk",
    "G": "allow",
    "R": "allow",
}
WORKERS = 2
"""W: the gateway's worker processes (PKGGOV_SERVER_WORKERS), sharing its port."""
EXTRA_ENV = {"W": {"PKGGOV_SERVER_WORKERS": str(WORKERS)}}
"""Settings a scenario adds to the gateway's environment."""


def _workers_note(server: _Child) -> str:
    """W: the processes that serve, as the row's note."""
    children = _descendants(server.pid)
    if not children:
        return f"ONE PROCESS: PKGGOV_SERVER_WORKERS={WORKERS} was ignored"
    helpers = 0
    for pid in children:
        with contextlib.suppress(OSError):
            helpers += b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    workers = len(children) - helpers
    aside = f" and {helpers} multiprocessing helper" if helpers else ""
    return f"supervisor, {workers} workers{aside}: CPU and peak MB summed"


class _GrpcParty:
    """A (the echo server) or C-G, W, R (a gateway in front of an emulator of its own)."""

    def __init__(self, ctx: _Context, scenario: str, stack: contextlib.ExitStack) -> None:
        self.ctx, self.scenario = ctx, scenario
        self.kind = kind = KINDS[scenario]
        if kind == "bulk":
            self.packages = ctx.args.bulk_packages or _bulk_packages(ctx)
        else:
            self.packages = _small_packages(ctx.plan) if kind == "allow" else HIGH
        self.client = "ci" if kind == "deny" else "alice"
        self.store = ""
        self.emulator: _Child | None = None
        self.endpoint = ""
        self.server: _Child
        if scenario == "A":
            self.server = _Child(
                "echo",
                [sys.executable, __file__, "--role", "echo", "--certs", str(ctx.certs)],
                ready=r"listening on (\S+)",
            )
            stack.callback(self.server.stop)
            self.target = self.server.match.group(1)
            return
        if scenario == "G":
            self.store = stack.enter_context(
                postgres_schema(ctx.args.postgres_url, "pkggov_bench_gw")
            )
        else:
            _remove_sqlite(f"audit-{scenario}.db")
            stack.callback(_remove_sqlite, f"audit-{scenario}.db")  # after the gateway
            self.store = f"sqlite:{WORK / f'audit-{scenario}.db'}"
        versions = BIG_VERSIONS if kind == "bulk" else SMALL_VERSIONS
        seed = _write_seed(WORK / f"seed-{scenario}.json", self.packages, versions)
        self.emulator, self.endpoint = _start_emulator(seed, f"emulator-{scenario}")
        stack.callback(self.emulator.stop)
        self.server, self.target = _start_gateway(
            f"gateway-{scenario}", self.endpoint, ctx.certs, self.store,
            extra=EXTRA_ENV.get(scenario), metrics=scenario == "G", tree=scenario == "W",
        )  # fmt: skip
        stack.callback(self.server.stop)

    @contextlib.asynccontextmanager
    async def calls(self, concurrency: int) -> AsyncIterator[_Maker]:
        """The calls of a cell, on fresh connections, from the seed (the emulator is reset)."""
        if self.endpoint:
            await asyncio.to_thread(_reset, self.endpoint, _latency(self.ctx, self.scenario))
        channels = [
            _channel(self.target, self.ctx.certs, self.client)
            for _ in range(_nchannels(concurrency, self.scenario))
        ]
        try:
            yield _maker(self.kind, _stubs(channels, raw=self.kind == "echo"), range(self.packages))
        finally:
            await _close(channels)

    def _pids(self) -> list[int]:
        return self.server.pids() + ([self.emulator.pid] if self.emulator else [])

    async def window(self, plan: _Plan, concurrency: int, rate: float | None) -> _Window:
        """One window of a closed or open loop (side by side: no profile, no probe)."""
        async with self.calls(concurrency) as make:
            return await _grpc_window(plan, make, self._pids(), concurrency=concurrency, rate=rate)

    def summarize(self, windows: Sequence[_Window], concurrency: int, rate: float | None) -> Row:
        return _summarize(
            self.scenario, windows, concurrency=concurrency, rate=rate, server=self.server,
            emulator=self.emulator,
        )  # fmt: skip


async def _scenario_grpc(ctx: _Context, scenario: str) -> None:
    """A (the echo server) or C-G, W, R (a gateway in front of an emulator)."""
    with contextlib.ExitStack() as stack:
        party = _GrpcParty(ctx, scenario, stack)
        bulk = party.kind == "bulk"
        probe = None
        if scenario in ("G", "W"):  # W: the supervisor serves every worker's metrics
            probe = _LockProbe({scenario: await asyncio.to_thread(_metrics_address, party.server)})
        for index, (concurrency, open_loop) in enumerate(_cells(ctx, scenario)):
            rate = OPEN_FRACTION * ctx.rows[-1].rps if open_loop else None
            plan = ctx.plan
            if bulk:  # calls of 0.1-0.5 s: longer windows, and 64 at once
                plan = _Plan(plan.warmup, plan.seconds * ctx.args.bulk_factor)
            async with party.calls(concurrency) as make:
                row = await _measure_grpc(
                    scenario,
                    plan,
                    concurrency=concurrency,
                    rate=rate,
                    make=make,
                    server=party.server,
                    emulator=party.emulator,
                    profile=ctx.args.py_spy and concurrency > 1 and not open_loop,
                    wave=bulk and concurrency > 1 and not open_loop,
                    probe=probe if concurrency > 1 and not open_loop else None,
                )
            if scenario == "G" and index == 0:
                await asyncio.to_thread(_analyze, party.store)
                row.notes.append("tables ANALYZEd after this cell")
            if scenario == "W":
                row.notes.append(_workers_note(party.server))
            _add_row(ctx, row)
        if ctx.args.py_spy and scenario in PROFILED_ALONE:
            async with party.calls(1) as make:
                note = await _profile_alone(scenario, ctx.plan, make, party.server)
            ctx.notes.append(note)
            print(f"  {note}", flush=True)


# --- P: two gateway processes on one PostgreSQL ------------------------------------------

FLEET = ("bench-a", "bench-b")
"""P's gateways, by their PKGGOV_AUDIT_REPLICA."""


@dataclass
class _Tally:
    """The answers a generator saw from P's gateways, over every call made to them."""

    ok: int = 0
    failed: int = 0


def _tallied(make: _Maker, tally: _Tally) -> _Maker:
    """`make`, with each call's answer counted in `tally`."""

    def counted() -> _Thunk | None:
        thunk = make()
        if thunk is None:
            return None

        async def call() -> str | None:
            error = await thunk()
            if error is None:
                tally.ok += 1
            else:
                tally.failed += 1
            return error

        return call

    return counted


async def _fleet_cell(
    ctx: _Context,
    scenario: str,
    gateways: Sequence[tuple[_Child, str]],
    *,
    emulator: _Child,
    endpoint: str,
    packages: int,
    tally: _Tally,
) -> Row:
    """A closed loop of concurrency 64 over `gateways`, CHANNELS connections split evenly
    between them (each call goes to the next connection in turn), alice deleting one fresh
    version per call; the chain lock probed on each gateway."""
    await asyncio.to_thread(_reset, endpoint)
    per_gateway = max(1, CHANNELS // len(gateways))
    channels = [
        _channel(target, ctx.certs, "alice") for _ in range(per_gateway) for _, target in gateways
    ]
    probe = _LockProbe({child.name.removeprefix("gateway-"): _metrics_address(child)
                        for child, _ in gateways})  # fmt: skip
    try:
        make = _tallied(_maker("allow", _stubs(channels, raw=False), range(packages)), tally)
        return await _measure_grpc(
            scenario, ctx.plan, concurrency=HIGH, rate=None, make=make,
            server=_Fleet([child for child, _ in gateways]), emulator=emulator, probe=probe,
        )  # fmt: skip
    finally:
        await _close(channels)


def _verify_chain(store: str) -> dict[str, Any]:
    """`pkggov-admin audit verify --json` on the store: the project's own verifier."""
    done = subprocess.run(  # noqa: S603 - our own executable, fixed arguments
        [str(BIN / "pkggov-admin"), "audit", "verify", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        said = (done.stderr or done.stdout).strip().splitlines()
        report = {"ok": False, "error": said[-1] if said else f"exit status {done.returncode}"}
    report["exit_status"] = done.returncode
    return report


def _audit_counts(store: str) -> dict[str, Any]:
    """What the audit store of `store` holds: entries by kind, outcomes by decision, intents
    by replica, and intents without an outcome."""
    import psycopg  # noqa: PLC0415 - only for P

    def grouped(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> dict[str, int]:
        return {str(key): int(count) for key, count in conn.execute(sql)}

    with psycopg.connect(store, autocommit=True) as conn:
        kinds = grouped(conn, "SELECT kind, count(*) FROM audit_entries GROUP BY kind")
        decisions = grouped(
            conn,
            "SELECT coalesce(decision, ''), count(*) FROM audit_entries "
            "WHERE kind = 'outcome' GROUP BY 1",
        )
        replicas = grouped(
            conn,
            "SELECT coalesce(body::jsonb ->> 'replica', ''), count(*) FROM audit_entries "
            "WHERE kind = 'intent' GROUP BY 1",
        )
        row = conn.execute(
            "SELECT count(*) FROM audit_entries i WHERE i.kind = 'intent' AND NOT EXISTS ("
            "SELECT 1 FROM audit_entries o WHERE o.event_id = i.event_id AND o.kind = 'outcome')"
        ).fetchone()
    return {
        "entries_by_kind": kinds,
        "outcomes_by_decision": decisions,
        "intents_by_replica": replicas,
        "intents_without_outcome": int(row[0]) if row else -1,
    }


def _fleet_checks(store: str, tally: _Tally) -> dict[str, Any]:
    """After P's calls (every one answered): the chain verifies, every intent has its outcome,
    and the generator's successful calls are the allowed outcomes recorded."""
    chain = _verify_chain(store)
    counts = _audit_counts(store)
    allowed = counts["outcomes_by_decision"].get("allowed", 0)
    kinds = counts["entries_by_kind"]
    lost = {
        "intents_without_outcome": counts["intents_without_outcome"],
        "reconciliations": kinds.get("reconciliation", 0),
        "generator_successes": tally.ok,
        "generator_failures": tally.failed,
        "allowed_outcomes": allowed,
    }
    nothing_lost = (
        lost["intents_without_outcome"] == 0
        and lost["reconciliations"] == 0
        and tally.ok == allowed
    )
    return {
        "chain": chain,
        "chain_ok": bool(chain.get("ok")) and chain.get("exit_status") == 0,
        "counts": counts,
        "lost": lost,
        "nothing_lost": nothing_lost,
        "ok": bool(chain.get("ok")) and chain.get("exit_status") == 0 and nothing_lost,
    }


def _check_notes(checks: dict[str, Any]) -> list[str]:
    chain, counts, lost = checks["chain"], checks["counts"], checks["lost"]
    if checks["chain_ok"]:
        verified = f"chain verified ({chain.get('entries')} entries, intact)"
    else:
        problem = chain.get("first_problem") or {}
        verified = f"CHAIN NOT VERIFIED: {problem.get('message') or chain.get('error')}"
    kinds = counts["entries_by_kind"]
    replicas = ", ".join(f"{k} {v}" for k, v in sorted(counts["intents_by_replica"].items()))
    same = "=" if lost["generator_successes"] == lost["allowed_outcomes"] else "!="
    return [
        verified,
        f"entries: {kinds.get('intent', 0)} intents ({replicas}), {kinds.get('outcome', 0)} "
        f"outcomes, {kinds.get('reconciliation', 0)} reconciliations; "
        f"{lost['intents_without_outcome']} intents without outcome",
        f"{lost['generator_successes']} successful calls seen {same} "
        f"{lost['allowed_outcomes']} allowed outcomes recorded "
        f"({lost['generator_failures']} failed calls): "
        + ("nothing lost" if checks["nothing_lost"] else "SOMETHING LOST"),
    ]


async def _scenario_fleet(ctx: _Context) -> None:
    """P: two gateways (replicas bench-a and bench-b) on one fresh PostgreSQL schema and one
    emulator, concurrency 64 split between them; then the audit checks. Compared with G's
    concurrency-64 closed loop of this run; without one, bench-a alone is measured first."""
    packages = _small_packages(ctx.plan)
    seed = _write_seed(WORK / "seed-P.json", packages, SMALL_VERSIONS)
    tally = _Tally()
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(postgres_schema(ctx.args.postgres_url, "pkggov_bench_fleet"))
        emulator, endpoint = _start_emulator(seed, "emulator-P")
        stack.callback(emulator.stop)
        gateways: list[tuple[_Child, str]] = []
        for replica in FLEET:
            extra = {"PKGGOV_AUDIT_REPLICA": replica}
            child, target = _start_gateway(
                f"gateway-{replica}", endpoint, ctx.certs, store, extra=extra, metrics=True
            )
            stack.callback(child.stop)
            gateways.append((child, target))
        # As G's first cell does: calls through both, then ANALYZE the tables they filled.
        channels = [_channel(target, ctx.certs, "alice") for _, target in gateways]
        try:
            make = _tallied(_maker("allow", _stubs(channels, raw=False), range(packages)), tally)
            await _closed_loop(make, 2 * len(gateways), time.monotonic() + ctx.plan.warmup)
        finally:
            await _close(channels)
        await asyncio.to_thread(_analyze, store)
        cell = functools.partial(
            _fleet_cell, ctx, emulator=emulator, endpoint=endpoint, packages=packages, tally=tally
        )
        if _find(ctx.rows, "G", HIGH, "closed") is None:
            row = await cell("G", gateways[:1])
            row.notes.append(f"measured inside P ({FLEET[0]} alone, P's schema): G not run")
            _add_row(ctx, row)
        row = await cell("P", gateways)
        row.checks = await asyncio.to_thread(_fleet_checks, store, tally)
        row.notes += _check_notes(row.checks)
        _add_row(ctx, row)


# --- the RSS soak -----------------------------------------------------------------------


def _soak_mix(text: str) -> list[str]:
    """'allow=1,deny=2,dry=7' -> a repeating pattern of call kinds."""
    pattern: list[str] = []
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind.strip() not in ("allow", "deny", "dry"):
            raise argparse.ArgumentTypeError(f"unknown call kind {kind!r} in the soak mix")
        pattern += [kind.strip()] * int(weight or "1")
    return pattern


async def _soak(ctx: _Context) -> None:
    total = int(ctx.args.soak_requests)
    pattern = ctx.args.soak_mix
    allows = math.ceil(total * pattern.count("allow") / len(pattern))
    deleted = max(HIGH, math.ceil(allows / (SMALL_VERSIONS - 1)) + HIGH)
    packages = deleted + HIGH  # the last HIGH packages for deny and dry-run calls
    seed = _write_seed(WORK / "seed-soak.json", packages, SMALL_VERSIONS)
    _remove_sqlite("audit-soak.db")
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_sqlite, "audit-soak.db")
        emulator, endpoint = _start_emulator(seed, "emulator-soak")
        stack.callback(emulator.stop)
        gateway, target = _start_gateway(
            "gateway-soak", endpoint, ctx.certs, f"sqlite:{WORK / 'audit-soak.db'}"
        )
        stack.callback(gateway.stop)
        alice = [_channel(target, ctx.certs, "alice") for _ in range(CHANNELS)]
        ci = [_channel(target, ctx.certs, "ci") for _ in range(CHANNELS)]
        makers = {
            "allow": _maker("allow", _stubs(alice, raw=False), range(deleted)),
            "dry": _maker("dry", _stubs(alice, raw=False), range(deleted, packages)),
            "deny": _maker("deny", _stubs(ci, raw=False), range(deleted, packages)),
        }
        kinds = itertools.cycle(pattern)
        done = 0
        errors: Counter[str] = Counter()
        samples: list[tuple[float, int, int]] = []  # (seconds, requests, VmRSS kB)
        started = time.monotonic()
        cpu_start = _cpu_seconds(gateway.pid)
        deadline = started + float(ctx.args.soak_max_seconds)

        async def lane() -> None:
            nonlocal done
            while done < total and time.monotonic() < deadline:
                thunk = makers[next(kinds)]()
                if thunk is None:
                    errors["out of fresh versions"] += 1
                    return
                error = await thunk()
                done += 1
                if error is not None:
                    errors[error] += 1

        async def sample() -> None:
            reported = 0
            while True:
                now = time.monotonic() - started
                rss = gateway.memory_kb().get("VmRSS", 0)
                samples.append((now, done, rss))
                if done >= total or time.monotonic() >= deadline:
                    return
                if done >= reported + total // 5:
                    reported = done
                    print(
                        f"  {done:>7,} requests in {now:4.0f} s ({done / now:.0f}/s), VmRSS "
                        f"{rss / 1024:.0f} MB, {sum(errors.values())} errors",
                        flush=True,
                    )
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(lane() for _ in range(HIGH)))
        elapsed = time.monotonic() - started
        cpu = _cpu_seconds(gateway.pid) - cpu_start
        await sampler
        samples.append((elapsed, done, gateway.memory_kb().get("VmRSS", 0)))
        memory = gateway.memory_kb()
        await _close(alice + ci)

    def rss_at(fraction: float) -> float:
        goal = fraction * done
        for _, count, rss in samples:
            if count >= goal:
                return rss / 1024
        return samples[-1][2] / 1024

    ctx.soak = {
        "requests": done,
        "target": total,
        "seconds": elapsed,
        "rps": done / elapsed,
        "mix": dict(Counter(pattern)),
        "cpu_ms_per_request": cpu * 1000 / max(1, done),
        "rss_mb_after_warmup": rss_at(0.1),
        "rss_mb_half": rss_at(0.5),
        "rss_mb_end": memory.get("VmRSS", 0) / 1024,
        "peak_rss_mb": memory.get("VmHWM", 0) / 1024,
        "errors": sum(errors.values()),
        "error_samples": [e for e, _ in errors.most_common(3)],
        "samples": samples,
    }


# --- report -----------------------------------------------------------------------------

HEADER = (
    f"{'scenario':<22} {'concurrency':>14} {'calls':>6} {'req/s':>6} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'cpu ms':>7} {'sys ms':>6} {'peak MB':>7} {'emu ms':>6} {'gen %':>5} "
    f"{'mach %':>6} {'other %':>7}  notes"
)


def _format_row(row: Row) -> str:
    emu = "-" if row.emulator_cpu_ms is None else f"{row.emulator_cpu_ms:.2f}"
    gen = "-" if row.scenario in BOTO_SCENARIOS else f"{row.generator_cpu_pct:.0f}"
    return (
        f"{row.scenario + ' ' + row.title:<22} {row.label:>14} {row.requests:>6} "
        f"{row.rps:>6.0f} {row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.server_cpu_ms:>7.2f} "
        f"{row.server_sys_ms:>6.2f} {row.server_peak_rss_mb:>7.0f} {emu:>6} {gen:>5} "
        f"{row.machine_busy_pct:>6.0f} {row.other_busy_pct:>7.0f}  " + "; ".join(row.notes)
    )


def _row_order(row: Row) -> tuple[int, int]:
    """Rows by SCENARIOS' order, then in the order they were measured (the sort is stable)."""
    return (SCENARIOS.index(row.scenario), row.concurrency)


def _find(rows: Sequence[Row], scenario: str, concurrency: int, loop: str) -> Row | None:
    for row in rows:
        if (row.scenario, row.concurrency, row.loop) == (scenario, concurrency, loop):
            return row
    return None


@dataclass
class Goal:
    """One goal of issue 5 and this run's verdict."""

    name: str
    verdict: str  # MET, MISSED or NOT MEASURED
    detail: str
    floor: str = ""
    """The same goal for A + H, the floor of C's design: whether it is within reach at all."""


def _floor(what: str, *, reachable: bool) -> str:
    """How C's design floor (A + H: its two upstream calls and one gRPC hop) stands against a
    goal."""
    verdict = "within the goal" if reachable else "already outside the goal"
    return f"floor of the design (A + H, no gateway work): {what}: {verdict}"


def _ratio_line(cells: dict[str, Row | None], floor: str, concurrency: int) -> str | None:
    """C over A + `floor` in the closed loop at `concurrency`, as one line: B, the floors of a
    gRPC hop and of one boto3 call; H, C's design floor. None when a cell is missing."""
    a, f, c = cells["A"], cells[floor], cells["C"]
    if a is None or f is None or c is None:
        return None
    cpu_ratio, cpu_how = _ratio(c, [a, f], "server_cpu_ms")
    cpu = (
        f"CPU per request {c.server_cpu_ms:.2f} / ({a.server_cpu_ms:.2f} + "
        f"{f.server_cpu_ms:.2f}): {cpu_ratio:.2f} ({cpu_how})"
    )
    head = f"C/(A+{floor}) at concurrency {concurrency}"
    if concurrency == 1:
        aside = " (the gateway's own cost over its design floor)" if floor == "H" else ""
        ratio, how = _ratio(c, [a, f], "p50_ms")
        return (
            f"{head}{aside}: p50 latency {c.p50_ms:.2f} / ({a.p50_ms:.2f} + {f.p50_ms:.2f}): "
            f"{ratio:.2f} ({how}); {cpu}"
        )
    aside = (
        " (p50 at saturation is queueing: see the open-loop rows for latency under load)"
        if floor == "B"
        else ""
    )
    return (
        f"{head} (closed loop): {cpu}; requests/s C/{floor} = {c.rps:.0f} / {f.rps:.0f} = "
        f"{c.rps / f.rps:.2f}{aside}"
    )


def _ratios_and_goals(ctx: _Context) -> tuple[list[str], list[Goal]]:
    closed = {n: {s: _find(ctx.rows, s, n, "closed") for s in "ABHC"} for n in (1, HIGH)}
    lines = [
        line
        for floor in ("B", "H")
        for concurrency in (1, HIGH)
        if (line := _ratio_line(closed[concurrency], floor, concurrency)) is not None
    ]
    goals: list[Goal] = []

    name = f"C p50 <= {GOAL_LATENCY} x (A p50 + B p50) at concurrency 1"
    a, b, c, h = (closed[1][s] for s in "ABCH")
    if a and b and c:
        floor = a.p50_ms + b.p50_ms
        ratio, how = _ratio(c, [a, b], "p50_ms")
        design = ""
        if h:
            least = a.p50_ms + h.p50_ms
            design = _floor(
                f"{a.p50_ms:.2f} + {h.p50_ms:.2f} = {least:.2f} ms (ratio {least / floor:.2f})",
                reachable=least <= GOAL_LATENCY * floor,
            )
        goals.append(
            Goal(
                name,
                "MET" if ratio <= GOAL_LATENCY else "MISSED",
                f"{c.p50_ms:.2f} ms vs {GOAL_LATENCY * floor:.2f} ms (ratio {ratio:.2f}, {how})",
                design,
            )
        )
    else:
        goals.append(Goal(name, "NOT MEASURED", "needs A, B, C"))

    details, designs, all_ok, measured = [], [], True, False
    floor_ok, floor_measured = True, False
    for concurrency in (1, HIGH):
        a, b, c, h = (closed[concurrency][s] for s in "ABCH")
        if a and b and c:
            measured = True
            floor = a.server_cpu_ms + b.server_cpu_ms
            ratio, how = _ratio(c, [a, b], "server_cpu_ms")
            all_ok &= ratio <= GOAL_CPU
            details.append(
                f"c={concurrency}: {c.server_cpu_ms:.2f} vs {GOAL_CPU * floor:.2f} ms "
                f"(ratio {ratio:.2f}, {how})"
            )
            if h:
                floor_measured = True
                least = a.server_cpu_ms + h.server_cpu_ms
                floor_ok &= least <= GOAL_CPU * floor
                designs.append(f"c={concurrency}: {least:.2f} ms (ratio {least / floor:.2f})")
    goals.append(
        Goal(
            f"C CPU/request <= {GOAL_CPU} x (A + B CPU/request), at concurrency 1 and {HIGH}",
            ("MET" if all_ok else "MISSED") if measured else "NOT MEASURED",
            "; ".join(details) or "needs A, B, C",
            _floor("; ".join(designs), reachable=floor_ok) if floor_measured else "",
        )
    )

    name = f"C at concurrency {HIGH} >= {GOAL_THROUGHPUT:.0%} of B's requests/s"
    b, c, h = (closed[HIGH][s] for s in "BCH")
    if b and c:
        design = ""
        if h:
            design = _floor(
                f"H {h.rps:.0f}/s ({h.rps / b.rps:.0%} of B)",
                reachable=h.rps >= GOAL_THROUGHPUT * b.rps,
            )
        goals.append(
            Goal(
                name,
                "MET" if c.rps >= GOAL_THROUGHPUT * b.rps else "MISSED",
                f"C {c.rps:.0f}/s vs B {b.rps:.0f}/s ({c.rps / b.rps:.0%})",
                design,
            )
        )
    else:
        goals.append(Goal(name, "NOT MEASURED", "needs B, C"))

    name = f"steady RSS <= {GOAL_RSS_MB:.0f} MB after {SOAK_REQUESTS:,} requests"
    soak = ctx.soak
    if soak is not None:
        reached = soak["requests"] >= SOAK_REQUESTS
        ok = reached and soak["rss_mb_end"] <= GOAL_RSS_MB
        goals.append(
            Goal(
                name,
                ("MET" if ok else "MISSED") if reached else "NOT MEASURED",
                f"{soak['rss_mb_end']:.0f} MB after {soak['requests']:,} requests "
                f"({soak['rss_mb_after_warmup']:.0f} MB after 10 %, "
                f"{soak['rss_mb_half']:.0f} MB half way, peak {soak['peak_rss_mb']:.0f} MB; "
                f"{soak['rss_mb_end'] - soak['rss_mb_after_warmup']:+.1f} MB from 10 % to the end"
                f"{'; ' + str(soak['errors']) + ' ERRORS' if soak['errors'] else ''})",
            )
        )
    else:
        goals.append(Goal(name, "NOT MEASURED", ""))
    return lines, goals


GOAL18_LATENCY, GOAL18_CPU, GOAL18_THROUGHPUT = 1.3, 1.4, 0.7
GOAL18_BULK_US, GOAL18_SLOW, GOAL18_FLEET = 25.0, 1.05, 1.6
MACHINE_BOUND_PCT = 90.0
"""A cell whose machine was this busy (% of all CPUs) is bound by the machine's CPUs."""
CLEANUP_JSON = ROOT / ".run" / "bench_cleanup.json"
"""What bench-cleanup (run after this script by `make bench`) wrote last: its run time."""


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _issue18_goals(ctx: _Context) -> list[Goal]:
    """Issue 18's goals, each from rows of this run (NOT MEASURED when a row is missing)."""
    row = functools.partial(_find, ctx.rows)
    a1, h1, c1 = row("A", 1, "closed"), row("H", 1, "closed"), row("C", 1, "closed")
    h64 = row("H", HIGH, "closed")
    f1 = row("F", 1, "closed")
    r1, s1, t1 = row("R", 1, "closed"), row("S", 1, "closed"), row("T", 1, "closed")
    r64, s64 = row("R", HIGH, "closed"), row("S", HIGH, "closed")
    goals: list[Goal] = []
    for what, attr, limit in (
        ("p50", "p50_ms", GOAL18_LATENCY),
        ("CPU/request", "server_cpu_ms", GOAL18_CPU),
    ):
        name = f"C {what} <= {limit} x (A + H) at concurrency 1"
        if a1 and h1 and c1:
            floor = getattr(a1, attr) + getattr(h1, attr)
            ratio, how = _ratio(c1, [a1, h1], attr)
            detail = f"x {ratio:.2f} ({how}); {getattr(c1, attr):.2f} vs {floor:.2f} ms"
            goals.append(Goal(name, _verdict(ratio <= limit), detail))
        else:
            goals.append(Goal(name, "NOT MEASURED", "needs A, H, C"))
    for scenario, who in (("C", "C (one process)"), ("W", f"W (C on {WORKERS} worker processes)")):
        name = f"{who} >= {GOAL18_THROUGHPUT:.0%} of H's requests/s at concurrency {HIGH}"
        served = row(scenario, HIGH, "closed")
        if h64 and served:
            share = served.rps / h64.rps
            detail = f"{scenario} {served.rps:.0f}/s vs H {h64.rps:.0f}/s ({share:.0%})"
            lone = next((n for n in served.notes if n.startswith("ONE PROCESS")), None)
            if lone:
                detail += f"; {lone}"
            goals.append(Goal(name, _verdict(share >= GOAL18_THROUGHPUT), detail))
        else:
            goals.append(Goal(name, "NOT MEASURED", f"needs H, {scenario}"))
    name = f"1,000 versions at <= {GOAL18_BULK_US:.0f} us of gateway CPU per version"
    if f1:
        per_version = f1.server_cpu_ms / F_VERSIONS * 1000
        detail = f"{per_version:.1f} us ({f1.server_cpu_ms:.1f} ms for {F_VERSIONS:,})"
        goals.append(Goal(name, _verdict(per_version <= GOAL18_BULK_US), detail))
    else:
        goals.append(Goal(name, "NOT MEASURED", "needs F"))
    name = f"upstream +20 ms: C p50 <= {GOAL18_SLOW} x (A + H) p50 at concurrency 1"
    if a1 and r1 and s1:
        floor = a1.p50_ms + s1.p50_ms
        ratio, how = _ratio(r1, [a1, s1], "p50_ms")
        detail = f"x {ratio:.3f} ({how}); R {r1.p50_ms:.2f} vs A + S {floor:.2f} ms"
        if t1:
            detail += f"; B alone {t1.p50_ms:.2f} ms"
        if r64 and s64:
            detail += f"; at {HIGH}: R {r64.rps:.0f}/s, S {s64.rps:.0f}/s"
        goals.append(Goal(name, _verdict(ratio <= GOAL18_SLOW), detail))
    else:
        goals.append(Goal(name, "NOT MEASURED", "needs A, S, R"))
    goals.append(_fleet_goal(row("G", HIGH, "closed"), row("P", HIGH, "closed")))
    goals.append(_duration_goal(ctx))
    return goals


def _fleet_goal(one: Row | None, two: Row | None) -> Goal:
    """P >= 1.6 x G at concurrency 64, with the audit checks and the machine's CPU."""
    name = (
        f"two gateway processes on one PostgreSQL (P) >= {GOAL18_FLEET} x one (G) at "
        f"concurrency {HIGH}, chain verified, nothing lost"
    )
    if one is None or two is None:
        return Goal(name, "NOT MEASURED", "needs G, P")
    ratio = two.rps / one.rps
    checks = two.checks or {}
    parts = [f"P {two.rps:.0f}/s vs G {one.rps:.0f}/s (x {ratio:.2f})"]
    if not checks:
        parts.append("NO AUDIT CHECKS")
    else:
        chain = checks["chain"]
        parts.append(
            f"chain verified ({chain.get('entries')} entries)"
            if checks["chain_ok"]
            else "CHAIN NOT VERIFIED"
        )
        lost = checks["lost"]
        parts.append(
            f"nothing lost ({lost['generator_successes']} successful calls = "
            f"{lost['allowed_outcomes']} allowed outcomes, every intent with its outcome)"
            if checks["nothing_lost"]
            else f"SOMETHING LOST ({lost})"
        )
    machine = (
        f"machine CPU {one.machine_busy_pct:.0f} % in G's cell, {two.machine_busy_pct:.0f} % in P's"
    )
    if two.machine_busy_pct >= MACHINE_BOUND_PCT:
        machine += " (P is bound by the machine's CPUs)"
    parts.append(machine)
    for label, cell in (("G", one), ("P", two)):
        total = (cell.chain_lock or {}).get("utilization_total")
        if total is not None:
            parts.append(f"chain lock held {100 * total:.0f} % of {label}'s window")
    ok = ratio >= GOAL18_FLEET and bool(checks.get("ok"))
    return Goal(name, _verdict(ok), "; ".join(parts))


def _duration_goal(ctx: _Context) -> Goal:
    """`make bench` under 15 minutes: the time since `make bench` started (the parts before
    this script, and this script) plus bench-cleanup's last run time (it runs after)."""
    name = f"make bench in under {MAKE_BENCH_MINUTES:.0f} minutes"
    mine = time.monotonic() - ctx.started
    cleanup: float | None = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        cleanup = float(json.loads(CLEANUP_JSON.read_text())["run_seconds"])
    after = (
        f"bench-cleanup {cleanup:.0f} s in its last run ({CLEANUP_JSON.name})"
        if cleanup is not None
        else "bench-cleanup not known (no .run/bench_cleanup.json yet: it prints the verdict "
        "when it ends)"
    )
    since = make_bench_started()
    if since is None:
        return Goal(
            name,
            "NOT MEASURED",
            f"not run by `make bench`; this script {mine:.0f} s, {after}",
        )
    detail = f"{since:.0f} s so far (this script {mine:.0f} s) + {after}"
    if cleanup is None:
        return Goal(name, "NOT MEASURED", detail)
    total = since + cleanup
    detail += f" = about {total / 60:.1f} min"
    return Goal(name, _verdict(total <= 60 * MAKE_BENCH_MINUTES), detail)


def _generator_verdict(rows: Sequence[Row]) -> str:
    """Whether the load generator was the bottleneck anywhere, in one line."""
    bound = [f"{r.scenario} {r.label}" for r in rows if any("GENERATOR" in n for n in r.notes)]
    late = [f"{r.scenario} {r.label}" for r in rows if any("sent late" in n for n in r.notes)]
    peak = max((r.generator_cpu_pct for r in rows if r.scenario not in BOTO_SCENARIOS), default=0.0)
    text = (
        f"load generator: the bottleneck in {', '.join(bound)}"
        if bound
        else f"load generator: not the bottleneck (at most {peak:.0f} % of a core in a cell)"
    )
    if late:
        text += (
            f"; open loops sent late in {', '.join(late)} (the machine's CPUs were saturated; "
            "lateness counts in their latencies)"
        )
    return text


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    import boto3  # noqa: PLC0415 - only for the versions

    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "boto3": boto3.__version__,
        "load_average": os.getloadavg(),
    }


def _report(ctx: _Context, machine: dict[str, Any], elapsed: float) -> dict[str, Any]:
    ctx.rows.sort(key=_row_order)
    print()
    print(HEADER)
    for row in ctx.rows:
        print(_format_row(row))
    print()
    lines, goals = _ratios_and_goals(ctx)
    for line in lines:
        print(line)
    soak = ctx.soak
    if soak is not None:
        print(
            f"RSS soak: {soak['requests']:,} requests (mix {soak['mix']}) at concurrency "
            f"{HIGH} in {soak['seconds']:.0f} s ({soak['rps']:.0f}/s, "
            f"{soak['cpu_ms_per_request']:.2f} CPU ms/request, {soak['errors']} errors): VmRSS "
            f"{soak['rss_mb_after_warmup']:.0f} MB after 10 %, {soak['rss_mb_half']:.0f} MB "
            f"half way, {soak['rss_mb_end']:.0f} MB at the end; peak {soak['peak_rss_mb']:.0f} MB"
        )
    if ctx.rows:
        others = sorted(row.other_busy_pct for row in ctx.rows)
        noisy = sum(1 for row in ctx.rows if row.other_busy_pct >= 10)
        print(
            f"noise: other processes took {others[len(others) // 2]:.0f} % of the machine in the "
            f"median cell (max {others[-1]:.0f} %); {noisy} of {len(ctx.rows)} rows NOISY"
        )
        print(_generator_verdict(ctx.rows))
    print()
    print("Goals (issue 5):")
    for goal in goals:
        print(f"  {goal.verdict:<12} {goal.name}: {goal.detail}")
        if goal.floor:
            print(f"  {'':<12} {goal.floor}")
    floor_goals = _issue18_goals(ctx)
    print()
    print("Goals (issue 18: the gateway's own cost over its design floor A + H, and scaling):")
    for goal in floor_goals:
        print(f"  {goal.verdict:<12} {goal.name}: {goal.detail}")
    goals = goals + floor_goals
    print()
    for note in ctx.notes:
        print(f"note: {note}")
    print(
        f"machine: {machine['cpus']} CPUs ({machine['usable_cpus']} usable) "
        f"{machine['cpu_model']}, {machine['memory']}, {machine['platform']}, Python "
        f"{machine['python']}, grpcio {machine['grpcio']}, boto3 {machine['boto3']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average'])}"
    )
    print(f"run time: {elapsed:.0f} s")
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "seconds": ctx.plan.seconds,
            "warmup": ctx.plan.warmup,
            "high_concurrency": HIGH,
            "open_loop_fraction": OPEN_FRACTION,
            "gateway_rate_limits": UNLIMITED_RATE,
            "scenarios": ctx.args.scenarios,
        },
        "rows": [asdict(row) for row in ctx.rows],
        "ratios": lines,
        "goals": [asdict(goal) for goal in goals],
        "soak": ctx.soak,
        "notes": ctx.notes,
        "run_seconds": elapsed,
    }


# --- main -------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("bench", "echo", "boto"), default="bench",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    parser.add_argument("--seconds", type=float, help="measurement window per cell (2.5)")
    parser.add_argument("--warmup", type=float, help="warm-up per cell (1)")
    parser.add_argument(
        "--scenarios", default=SCENARIOS, help=f"which of {SCENARIOS} to run (default all)"
    )
    parser.add_argument(
        "--soak-requests",
        type=int,
        help=f"requests of the RSS soak ({SOAK_REQUESTS}; 0: no soak)",
    )
    parser.add_argument(
        "--soak-mix",
        type=_soak_mix,
        default="allow=1,deny=1,dry=2",
        help="the soak's calls, by weight (allow=1,deny=1,dry=2)",
    )
    parser.add_argument(
        "--soak-max-seconds", type=float, default=400.0, help="time box of the soak (400)"
    )
    parser.add_argument(
        "--bulk-factor", type=float, default=1.0, help="F's windows, as a multiple of --seconds"
    )
    parser.add_argument(
        "--bulk-packages", type=int, help="F's packages of 1,001 versions (default: enough)"
    )
    parser.add_argument(
        "--postgres-url", default=PG_URL, help=f"G: database to make a schema in ({PG_URL})"
    )
    parser.add_argument(
        "--upstream-latency-ms",
        type=float,
        default=20.0,
        help="T, S, R: what the emulator adds to each call (20 ms, an in-region round trip)",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile the server in the c=64 closed loops (use --seconds 10 or more)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = args.seconds or 1.5
        args.warmup = args.warmup or 0.5
        args.soak_requests = 5000 if args.soak_requests is None else args.soak_requests
    args.seconds = args.seconds or 2.5
    args.warmup = args.warmup or 1.0
    args.soak_requests = SOAK_REQUESTS if args.soak_requests is None else args.soak_requests
    args.scenarios = "".join(s for s in args.scenarios.upper() if s in SCENARIOS)
    return args


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    certs = WORK / "certs"
    subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "scripts" / "dev_certs.py"), "--out", str(certs)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    machine = _machine()
    ctx = _Context(args, _Plan(args.warmup, args.seconds), certs)
    upstream, server = UpstreamSettings(), ServerSettings()
    ctx.notes += [
        "the gateway's upstream rate limits (upstream.write_calls_per_second "
        f"{upstream.write_calls_per_second:g} and read_calls_per_second "
        f"{upstream.read_calls_per_second:g} by default) are set to {UNLIMITED_RATE} here: B "
        "has no such limit",
        "cpu ms / sys ms: the server process's CPU (all of it / the kernel's part) per request "
        "over the window: A the echo server, B the process making the boto3 calls, C-G the "
        f"gateway, W its supervisor and {WORKERS} workers, P both gateways; the emulator's CPU "
        "is excluded everywhere and shown as 'emu ms'",
        "concurrency 1: closed loop; 64: closed loop (64 outstanding) for req/s, then "
        f"'open@R/s', an open loop at {OPEN_FRACTION:.0%} of that rate with at most 64 "
        "outstanding, latency timed from the intended send time; F '64 at once': 64 "
        "1,000-version calls sent together, req/s = 64 / time to the last answer",
        "A's echo server uses mTLS with the same certificates, and "
        f"{server.max_workers} threads, like the gateway",
        "peak MB: the server's VmHWM at the end of the cell (fresh processes per scenario; "
        "W: the sum over its processes, P: the larger gateway's)",
        f"gen %: the load generator's CPU (of one core); mach %: the machine's ({machine['cpus']} "
        "CPUs) busy time; other %: the part of it used by processes other than the generator, "
        "server and emulator (NOISY from 10 %: numbers of such rows are less reliable)",
    ]
    print(
        f"bench-gateway: {args.warmup:g} s warm-up + {args.seconds:g} s per cell, scenarios "
        f"{args.scenarios}, soak {args.soak_requests:,} requests; logs in {WORK}",
        flush=True,
    )
    print(HEADER, flush=True)
    try:
        await _side_by_side(ctx)
    except Exception as error:  # noqa: BLE001 - reported; the cells are then measured in turn
        ctx.side_by_side.clear()  # (rows are added only once every window was measured)
        ctx.notes.append(f"side by side failed: {type(error).__name__}: {error}")
        print(f"  side by side: failed: {error}", flush=True)
    for scenario in args.scenarios:
        try:
            if scenario in BOTO_SCENARIOS:
                await _scenario_boto(ctx, scenario)
            elif scenario == "P":
                await _scenario_fleet(ctx)
            else:
                await _scenario_grpc(ctx, scenario)
        except Exception as error:  # noqa: BLE001 - one scenario's failure is reported
            ctx.notes.append(f"scenario {scenario} failed: {type(error).__name__}: {error}")
            print(f"  {scenario}: failed: {error}", flush=True)
    if args.soak_requests > 0:
        print(f"RSS soak: {args.soak_requests:,} requests at concurrency {HIGH} ...", flush=True)
        try:
            await _soak(ctx)
        except Exception as error:  # noqa: BLE001 - reported
            ctx.notes.append(f"soak failed: {type(error).__name__}: {error}")
    return _report(ctx, machine, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the role asked for; the default role runs the benchmark."""
    args = _parse(argv)
    if args.role == "echo":
        return _serve_echo(args.certs)
    if args.role == "boto":
        return _boto_worker(args.endpoint)
    result = asyncio.run(_bench(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite(result), indent=2, default=str, allow_nan=False)
    args.json.write_text(text + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
