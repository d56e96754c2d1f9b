"""Load and fault soak: thousands of calls at concurrency 64 against the real gateway binary
while the emulator throttles some, fails some with 500s, delays some past their deadline and
drops some connections (before and after applying the delete).

Then, from the callers' answers, the audit record and the emulator's state and call log:

* every call ended with a status the README documents (never UNKNOWN or INTERNAL);
* there is exactly one audit event per call, each closed by an outcome that says what the
  caller was told, and the hash chain verifies;
* every DeletePackageVersions the emulator received was announced by an intent that was
  committed before it (write-ahead), and every version that disappeared was announced;
* no version is reported deleted twice (an inference after a lost answer aside), none is
  reported deleted that still exists, and no deletion is hidden behind a clean failure;
* every committed entry was also copied to the audit log;
* the gateway's resident memory does not grow over the second half of the calls.

The bounded run (the default) makes 6,000 calls in 35 to 45 s on the reference machine
(2 cores, shared); ``PKGGOV_SOAK=1`` (`make soak`) makes 60,000, in about 9 minutes.

Why a spawned gateway (the real ``pkggov-gateway --dev`` binary, with the session emulator as
its upstream) rather than one in this process: its resident memory is the gateway's alone (in
this process it would include the emulator's call log and state, which grow with every call,
and the callers' 64 threads and answers), it does not share a GIL with the callers and the
emulator (so the load is the gateway's), and it is the binary operators run.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import (
    Emulator,
    FaultRule,
    RecordedCall,
)
from pkggov_gateway.tools.audit_verify import verify
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    DELETE_METHOD,
    SOAK,
    GatewayProcess,
    request,
    scrape,
    wait_for,
)
from tests.e2e.load_helpers import (
    CLEAN_CODES_EXCLUDED,
    DOMAIN,
    LATEST,
    LONG_DEADLINE,
    REPOSITORY,
    CallResult,
    Event,
    PlannedCall,
    StderrDrain,
    check_write_ahead,
    documented_statuses,
    in_flight,
    invoke,
    metrics_url,
    own_calls,
    read_record,
    upstream_env,
)

SOAK_CALLS = 60_000 if SOAK else 6_000
CONCURRENCY = 64
MEMORY_GROWTH_BOUND = 16 * 2**20
"""How much the gateway's RSS may grow over the second half of the calls. Its allocator's
high-water marks rise while it warms up, for longer and higher on a busy machine. Measured
here (2 cores): 6,000 calls grew 0.4 to 1.5 MiB over their second half; 60,000 calls reached
117 MiB after 15,000 and stayed there (+0.4 MiB over the second half); under a load average
of 15, 60,000 calls plateaued at 150-160 MiB after 12,000, the worst 3,000-call stretch of the
warm-up growing 9 MiB. A leak of 5.6 KB per call (a request, an audit body) exceeds the bound
in the bounded run, one of 560 bytes per call in the large one."""

PACKAGES = max(128, SOAK_CALLS // 24)
"""npm packages of demo/dev-shared the soak deletes from: about 60 versions each, so that a
ListPackageVersions costs the same whatever the size of the run."""
BULK_PACKAGES = max(4, SOAK_CALLS // 600)
"""npm packages the multi-chunk (more than 100 versions) calls delete from: about 900
versions each (one page of ListPackageVersions)."""
BULK_SIZE = 150

SHORT_DEADLINE = (0.5, 1.5)
"""Seconds: the deadline of a fifth of the calls, shorter than the slow fault's latency (the
others have LONG_DEADLINE)."""
SLOW = 1.6
"""Seconds an emulator latency fault holds a call: past every short deadline."""

SHAPES: tuple[tuple[str, int], ...] = (
    ("one", 30),  # alice deletes one fresh version
    ("several", 18),  # alice deletes 2-5 fresh versions
    ("with_missing", 10),  # ... plus versions that never existed (NOT_FOUND, not sent)
    ("dry_run", 8),  # validate_only: decided, nothing deleted
    ("ci_prerelease", 6),  # ci-bot deletes Unlisted pre-releases with expected_status
    ("partial", 5),  # allow_partial with the latest: the latest NOT_ALLOWED, the rest deleted
    ("denied_principal", 5),  # bob (no group): POLICY_DENIED, nothing deleted
    ("denied_latest", 4),  # alice names the latest: all-or-nothing POLICY_DENIED
    ("contended", 4),  # two concurrent calls name the same version
    ("invalid", 3),  # a field breaks a rule: INVALID_ARGUMENT, nothing read
    ("unauthenticated", 1),  # no identity
    ("bulk", 1),  # BULK_SIZE versions: two upstream chunks
)


def fault_rules() -> list[FaultRule]:
    """The soak's faults: on every read and delete, by probability (the first rule that
    fires decides a call; the emulator's RNG is seeded)."""
    rules: list[FaultRule] = []
    for operation, scale in (("DeletePackageVersions", 1.0), ("ListPackageVersions", 0.6)):
        rules += [
            FaultRule(
                operation=operation, kind="throttle", rate=0.05 * scale, retry_after_seconds=0
            ),
            FaultRule(
                operation=operation, kind="throttle", rate=0.01 * scale, retry_after_seconds=1
            ),
            FaultRule(operation=operation, kind="internal", rate=0.06 * scale),
            FaultRule(operation=operation, kind="latency", rate=0.04 * scale, latency_seconds=SLOW),
            FaultRule(operation=operation, kind="drop", rate=0.03 * scale),
            FaultRule(operation=operation, kind="drop_after_apply", rate=0.04 * scale),
        ]
    return rules


# --- the plan: which calls to make ------------------------------------------------------------


@dataclass
class Plan:
    """The calls, and the versions to create in the emulator first."""

    calls: list[PlannedCall] = field(default_factory=list)
    published: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unlisted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _package(index: int) -> str:
    return f"soak-{index:03d}"


def _bulk_package(index: int) -> str:
    return f"soak-bulk-{index}"


def make_plan(calls: int, seed: int = 20260601) -> Plan:
    """`calls` calls (about: a contended shape is two calls), shapes drawn by weight, each
    naming fresh versions no other call names (except the contended pairs)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible test plan
    plan = Plan()
    names, weights = zip(*SHAPES, strict=True)
    missing = iter(range(10**9))

    def fresh(package: str, count: int) -> list[str]:
        versions = plan.published[package]
        start = len(versions)
        versions += [f"1.{n // 1000}.{n % 1000}" for n in range(start, start + count)]
        return versions[start:]

    def prerelease(package: str, count: int) -> list[str]:
        versions = plan.unlisted[package]
        start = len(versions)
        versions += [f"2.{n}.0-rc.1" for n in range(start, start + count)]
        return versions[start:]

    def add(shape: str, principal: str | None, short: bool, **fields: Any) -> None:
        timeout = rng.uniform(*SHORT_DEADLINE) if short else LONG_DEADLINE
        rpc_id = f"soak-{len(plan.calls):06d}-{shape}"
        plan.calls.append(PlannedCall(rpc_id, shape, principal, request(**fields), timeout))

    bulk = 0
    while len(plan.calls) < calls:
        shape = rng.choices(names, weights)[0]
        package = _package(rng.randrange(PACKAGES))
        short = rng.random() < 0.2
        if shape == "one":
            add(shape, "alice", short, package=package, versions=fresh(package, 1))
        elif shape == "several":
            add(shape, "alice", short, package=package, versions=fresh(package, rng.randint(2, 5)))
        elif shape == "with_missing":
            versions = fresh(package, rng.randint(1, 3))
            versions += [f"404.0.{next(missing)}" for _ in range(rng.randint(1, 2))]
            rng.shuffle(versions)
            add(shape, "alice", short, package=package, versions=versions)
        elif shape == "dry_run":
            versions = fresh(package, rng.randint(1, 3))
            add(shape, "alice", short, package=package, versions=versions, validate_only=True)
        elif shape == "ci_prerelease":
            add(
                shape,
                "ci-bot",
                short,
                package=package,
                versions=prerelease(package, rng.randint(1, 2)),
                expected_status=pb.PACKAGE_VERSION_STATUS_UNLISTED,
            )
        elif shape == "partial":
            versions = [*fresh(package, rng.randint(1, 2)), LATEST]
            add(shape, "alice", short, package=package, versions=versions, allow_partial=True)
        elif shape == "denied_principal":
            add(shape, "bob", short, package=package, versions=fresh(package, 1))
        elif shape == "denied_latest":
            add(shape, "alice", short, package=package, versions=[LATEST, *fresh(package, 1)])
        elif shape == "contended":
            shared = fresh(package, 1)
            add(shape, "alice", short, package=package, versions=[*shared, *fresh(package, 1)])
            add(shape, "alice", short, package=package, versions=[*fresh(package, 1), *shared])
        elif shape == "invalid":
            add(shape, "alice", short, package=package, domain="Bad Domain", versions=["1.0.0"])
        elif shape == "unauthenticated":
            add(shape, None, short, package=package, versions=fresh(package, 1))
        else:
            package = _bulk_package(bulk % BULK_PACKAGES)
            bulk += 1
            add(shape, "alice", False, package=package, versions=fresh(package, BULK_SIZE))
    return plan


def populate(emulator: Emulator, plan: Plan) -> None:
    """Create the plan's versions (Published, and Unlisted pre-releases), and each package's
    latest version, published last."""
    base = datetime.now(UTC) - timedelta(days=1)
    packages = [_package(i) for i in range(PACKAGES)] + [
        _bulk_package(i) for i in range(BULK_PACKAGES)
    ]
    for package in packages:
        for n, version in enumerate(plan.published.get(package, ())):
            when = base + timedelta(seconds=n)
            emulator.put_version(
                DOMAIN, REPOSITORY, "npm", None, package, version, published_time=when
            )
        for version in plan.unlisted.get(package, ()):
            emulator.put_version(
                DOMAIN,
                REPOSITORY,
                "npm",
                None,
                package,
                version,
                status="Unlisted",
                published_time=base,
            )
        emulator.put_version(
            DOMAIN,
            REPOSITORY,
            "npm",
            None,
            package,
            LATEST,
            published_time=base + timedelta(days=2),
        )


# --- making the calls -------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (Linux /proc; psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class RssSampler:
    """Samples a process's RSS with the number of calls completed so far."""

    pid: int
    completed: list[int] = field(default_factory=lambda: [0])
    samples: list[tuple[int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> int:
        """Record one sample now; return the RSS."""
        rss = rss_bytes(self.pid)
        self.samples.append((self.completed[0], rss))
        return rss

    def run(self) -> None:
        """Sample every 0.25 s until stopped."""
        while not self._stop.wait(0.25):
            self.sample()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()

    def at(self, completed: int) -> int:
        """The first RSS sampled once `completed` calls had completed."""
        return next(rss for done, rss in self.samples if done >= completed)


def run_load(
    process: GatewayProcess, calls: Sequence[PlannedCall], sampler: RssSampler
) -> list[CallResult]:
    """Every call, CONCURRENCY at a time, on one channel."""
    lock = threading.Lock()

    def one(stub: pb_grpc.PackageGovernanceServiceStub, call: PlannedCall) -> CallResult:
        result = invoke(stub, call)
        with lock:
            sampler.completed[0] += 1
        return result

    with (
        grpc.insecure_channel(process.address) as channel,
        ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="soak-caller") as pool,
    ):
        stub = pb_grpc.PackageGovernanceServiceStub(channel)
        futures = [pool.submit(one, stub, call) for call in calls]
        return [future.result() for future in futures]


# --- the checks -------------------------------------------------------------------------------


@dataclass
class SoakRun:
    """Everything a soak leaves behind to be checked."""

    plan: Plan
    results: list[CallResult]
    events: dict[str, Event]
    rows: list[tuple[Any, ...]]
    deletes: list[RecordedCall]
    reads: list[RecordedCall]
    handled: float
    """DeletePackageVersions calls the gateway counted (pkggov_rpcs_total)."""
    rss: RssSampler
    final_rss: int
    log: StderrDrain
    load_seconds: float

    @property
    def reached(self) -> list[CallResult]:
        """The calls that reached the gateway's code (it holds an event with their rpc id)."""
        ids = {event.rpc_id for event in self.events.values()}
        return [r for r in self.results if r.call.rpc_id in ids]

    def summary(self) -> str:
        """What the run did, for the test output (pytest -s or -rP)."""
        statuses = Counter((r.code, r.reason) for r in self.results)
        inferred = sum(sum(e.claims.values()) for e in self.events.values())
        halfway = self.rss.at(len(self.results) // 2)
        curve = [
            f"{done}: {rss / 2**20:.1f}"
            for done, rss in self.rss.samples[:: max(1, len(self.rss.samples) // 10)]
        ]
        return (
            f"soak: {len(self.results)} calls in {self.load_seconds:.1f} s "
            f"({len(self.results) / self.load_seconds:.0f}/s), "
            f"{len(self.results) - len(self.reached)} never reached the gateway; "
            f"upstream {len(self.deletes)} deletes, {len(self.reads)} reads; "
            f"{inferred} deletions inferred after a lost answer\n"
            f"statuses: {sorted(statuses.items(), key=lambda kv: -kv[1])}\n"
            f"rss MiB: halfway {halfway / 2**20:.1f}, final {self.final_rss / 2**20:.1f}; "
            f"calls done: MiB {curve}\n"
            f"gateway log: {self.log.events.most_common(6)}"
        )


def check_statuses(run: SoakRun) -> None:
    """Every call ended with a documented (code, reason), never UNKNOWN or INTERNAL; grpc's
    own status (no details) only for a short deadline that passed before the answer."""
    documented = documented_statuses()
    for result in run.results:
        shape = result.call.shape
        if result.reason is None:
            assert ("DEADLINE_EXCEEDED", True) == (result.code, result.call.short), result
            continue
        assert result.code not in CLEAN_CODES_EXCLUDED, result
        assert result.code == "OK" or (result.code, result.reason) in documented, result
        if shape == "invalid":
            assert ("INVALID_ARGUMENT", "INVALID_REQUEST") == (result.code, result.reason)
        elif shape == "unauthenticated":
            assert ("UNAUTHENTICATED", "UNAUTHENTICATED") == (result.code, result.reason)
        elif shape.startswith("denied"):
            assert result.code != "OK", result
        elif shape == "partial" and result.response is not None:
            refused = result.response.failed_versions[LATEST].error_code
            assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED == refused
        elif shape == "dry_run" and result.response is not None:
            assert not result.response.successful_versions


def check_one_event_per_call(run: SoakRun) -> None:
    """Every call that reached the gateway is exactly one audit event, closed by an outcome
    that records what the caller was told, under the id the caller was told; the others were
    cancelled by grpc while queued for a server thread (their deadline passed), so the gateway
    never saw them; the gateway's own count agrees; the hash chain verifies."""
    by_rpc = {event.rpc_id: event for event in run.events.values()}
    assert len(by_rpc) == len(run.events), "two events for one call"
    assert len(run.events) == len(run.reached) == run.handled
    for result in run.results:
        event = by_rpc.get(result.call.rpc_id)
        if event is None:
            assert (None, "DEADLINE_EXCEEDED") == (result.reason, result.code), result
            continue
        outcome = event.outcome
        if result.reason is None:
            continue  # the caller gave up; the gateway finished the call and recorded it
        assert event.event_id == result.event_id == result.trailer_event_id, result
        assert (result.code, result.reason) == event.status, (result, outcome["status"])
        if result.response is not None:
            recorded = outcome["response"] or {}
            assert set(result.response.successful_versions) == set(
                recorded.get("successful_versions") or {}
            )
            assert set(result.response.failed_versions) == set(
                recorded.get("failed_versions") or {}
            )
    report = verify(iter(run.rows))
    assert report.ok, report.first_problem
    assert report.entries == sum(len(e.entries) for e in run.events.values())


def check_audit_copy(run: SoakRun, copy: Path) -> None:
    """Every committed entry was also copied, as one JSON line, to the audit log (the
    gateway's logging level is warning: the copy is the record's, not a log line)."""
    stored = {int(row[0]): str(row[-1]) for row in run.rows}  # seq -> hash
    copied: dict[int, str] = {}
    with copy.open(encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            copied[int(entry["seq"])] = str(entry["hash"])
    assert stored == copied


def check_deletions(
    run: SoakRun, emulator: Emulator, forwarded_by: Mapping[tuple[str, str], list[Event]]
) -> None:
    """Against what the emulator holds at the end:

    * a version no intent announced still exists (nothing disappears without an intent);
    * a version that exists was reported deleted by no call;
    * a version that is gone was reported deleted, or its deletion left open (outcome
      unknown), by a call that announced it: no deletion hides behind a clean failure;
    * at most one call reports a version deleted from CodeArtifact's own answer; a second
      report can only be an inference after a lost answer (two contending calls).
    """

    def exists(package: str, version: str) -> bool:
        return (
            emulator.version_status(DOMAIN, REPOSITORY, "npm", None, package, version) is not None
        )

    for package, versions in (*run.plan.published.items(), *run.plan.unlisted.items()):
        assert exists(package, LATEST)
        for version in versions:
            if (package, version) not in forwarded_by:
                assert exists(package, version), f"{package} {version} went without an intent"
    for (package, version), events in forwarded_by.items():
        claims = [event.claims[version] for event in events if version in event.claims]
        if exists(package, version):
            assert [] == claims, f"{package} {version} exists but was reported deleted"
            continue
        assert claims or any(event.unknown(version) for event in events), (
            f"{package} {version} is gone, but every call that sent it reported a clean "
            f"failure: {[event.outcome['status'] for event in events]}"
        )
        assert sum(not inferred for inferred in claims) <= 1, (package, version, claims)


def check_memory(run: SoakRun) -> None:
    """The gateway's RSS grows less than MEMORY_GROWTH_BOUND from when half the calls were
    done to the end (every call finished)."""
    halfway = run.rss.at(len(run.results) // 2)
    assert run.final_rss - halfway < MEMORY_GROWTH_BOUND, run.summary()


def check_faults_exercised(run: SoakRun) -> None:
    """The soak did what it says: each fault kind hit both operations, and the gateway hit
    each failure it maps them to; nothing was logged at error level."""
    kinds = {(call.operation, call.fault) for call in (*run.deletes, *run.reads) if call.fault}
    for operation in ("DeletePackageVersions", "ListPackageVersions"):
        for kind in ("throttle", "internal", "latency", "drop", "drop_after_apply"):
            assert (operation, kind) in kinds
    statuses = {(r.code, r.reason) for r in run.results}
    for expected in (
        ("OK", ""),
        ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT"),
        ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),
        ("RESOURCE_EXHAUSTED", "UPSTREAM_THROTTLED"),
        ("PERMISSION_DENIED", "POLICY_DENIED"),
    ):
        assert expected in statuses, expected
    assert any(any(e.claims.values()) for e in run.events.values()), "no inferred deletion"
    assert [] == run.log.errors


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(3600 if SOAK else 300)
def test_soak_under_faults(bin_dir: Path, emulator: Emulator) -> None:
    """SOAK_CALLS calls of every shape at concurrency 64 under every fault kind: documented
    statuses, one audit event per call, write-ahead intents, no double or hidden deletion,
    no memory growth (see the module docstring)."""
    plan = make_plan(SOAK_CALLS)
    populate(emulator, plan)
    for rule in fault_rules():
        emulator.add_fault(rule)
    with spawn_gateway(bin_dir, **upstream_env(emulator.endpoint_url)) as process:
        assert process.proc.stderr is not None
        log = StderrDrain(process.proc.stderr)
        log.start()
        url = metrics_url(process)
        sampler = RssSampler(process.proc.pid)
        watcher = threading.Thread(target=sampler.run, name="soak-rss", daemon=True)
        watcher.start()
        started = time.monotonic()
        results = run_load(process, plan.calls, sampler)
        load_seconds = time.monotonic() - started
        # The gateway may still be finishing calls whose callers gave up.
        assert wait_for(lambda: in_flight(url) == 0, timeout=30)
        sampler.stop()
        watcher.join()
        final_rss = sampler.sample()
        handled = sum(
            value
            for (name, labels), value in scrape(url).items()
            if name == "pkggov_rpcs_total" and ("method", DELETE_METHOD) in labels
        )
        process.proc.send_signal(signal.SIGTERM)
        assert 0 == process.proc.wait(timeout=30)
        log.join(timeout=10)
        events, rows = read_record(process.audit_store)
        workdir = Path(process.audit_store.removeprefix("sqlite:")).parent
    run = SoakRun(
        plan,
        results,
        events,
        rows,
        own_calls(emulator, "DeletePackageVersions", "soak-"),
        own_calls(emulator, "ListPackageVersions", "soak-"),
        handled,
        sampler,
        final_rss,
        log,
        load_seconds,
    )
    print(run.summary())
    check_statuses(run)
    check_one_event_per_call(run)
    forwarded_by = check_write_ahead(run.events, run.deletes)
    check_deletions(run, emulator, forwarded_by)
    check_audit_copy(run, workdir / "audit.jsonl")
    check_faults_exercised(run)
    check_memory(run)
    shutil.rmtree(workdir)  # kept when a check fails; the store of a large soak is big
