"""Benchmark the audit path: the latency an RPC's audit adds (intent + outcome), and events/s.

Run: ``make bench-audit`` (or ``.venv/bin/python scripts/bench_audit.py [--seconds S] ...``).
Asked for: the added latency of the audit path (intent + outcome) for SQLite and PostgreSQL
at concurrency 1 and 64, and the audit events committed per second.

Each call is driven as the gateway drives it, through the governed call the RPC edge and the
delete use case use: `Auditor.begin`, `identified`, `received` (the request rendered as the
edge renders it), `replayed()` (the servicer's AIP-155 replay check: every request carries a
request_id unless ``--no-request-id``), `planned`, then `before_forwarding` (the *intent*:
committed durably, guarded by the request_id claim and the quota), `delivered` and
`succeeded` with the response as the edge records it for an OK call (the *outcome*).
The requests are typical DeletePackageVersions calls: 1 to 3
pre-release versions of one npm package by one of a few CI principals, every version allowed
by policy and deleted. Nothing else of an RPC runs (gRPC, policy, CodeArtifact): the numbers
are what the audit adds to one call.

Concurrency N is N threads issuing calls back to back (a closed loop), like N busy grpc
workers. Each cell (store x concurrency) gets a fresh store: SQLite in a new file in a
temporary directory under ``--dir`` (on the disk; the store sets WAL and synchronous=FULL),
PostgreSQL in a new schema of ``--postgres-url`` (dropped afterwards; its table is ANALYZEd
after the warm-up, as autovacuum does on a live database: otherwise the plans the store's
connections cache are made for an empty table, see ``--no-analyze``). Reported per cell:
p50/p99 in ms of the intent, the outcome, intent + outcome and the replay lookup of a call
(the intent's time includes `Auditor.begin` and the request's conversion, as the outcome's
includes the response's; the lookup is shown as "-" when no call made one);
events per second (an event is one call: its intent and its outcome); entries committed per
second (counted in the store); and the group commit: the store's transactions (each one
commit, so one WAL flush) per second and entries per transaction. The transactions are
counted by handing the store a wrapper of its own dialect (`SqlAuditStore` takes any
`Dialect`; `open_audit_store` builds the same store around the unwrapped one).

When PostgreSQL cannot be reached its rows are skipped, unless ``--require-postgres``.
The results are also written as JSON (``--json``, default .run/bench_audit.json).

Not a test: timings depend on the machine, and the script exits 0 (2 when
``--require-postgres`` is given and PostgreSQL cannot be reached).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from _bench_common import finite, p50_p99, postgres_schema

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.adapters.sql import (
    Dialect,
    PostgresDialect,
    SqlAuditStore,
    SqliteDialect,
)
from pkggov_gateway.api import convert
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import DeleteOutcome, PlannedVersion, PlanOutcome, VersionStatus
from pkggov_gateway.logs import configure_logging
from pkggov_gateway.service.audit import Auditor, QuotaLimits

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / ".run" / "bench_audit.json"
DEFAULT_DIR = ROOT / ".run"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
METHOD = "/pkggov.v1.PackageGovernanceService/DeletePackageVersions"
POLICY_ID = "ci-may-delete-dev-prereleases"
GROUPS = ("ci",)
PRINCIPALS = tuple(
    Principal(f"spiffe://pkggov.test/ci/{name}", AuthMethod.MTLS, f"ipv4:10.0.0.{i + 7}:4431")
    for i, name in enumerate(("builder", "release-train", "nightly", "renovate"))
)
PARTS = ("intent", "outcome", "intent+outcome", "lookup")


# --- the calls ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """One DeletePackageVersions call as the audit sees it: request, plan, response."""

    principal: Principal
    request: pb.DeletePackageVersionsRequest
    plan: dict[str, PlannedVersion]
    response: pb.DeletePackageVersionsResponse
    aws_request_id: str


def _call(n: int, with_request_id: bool) -> _Call:
    """Call number `n`: a CI principal deleting 1 to 3 unlisted pre-releases of one package."""
    versions = [f"2.{n % 40}.{n % 7 + i}-rc.{i + 1}" for i in range(n % 3 + 1)]
    request = pb.DeletePackageVersionsRequest(
        domain="acme",
        domain_owner="111122223333",
        repository="dev-shared",
        format=pb.PACKAGE_FORMAT_NPM,
        namespace="acme",
        package=f"widgets-{n % 50}",
        versions=versions,
        expected_status=pb.PACKAGE_VERSION_STATUS_UNLISTED,
        justification="CI cleanup of superseded release candidates",
        request_id=str(uuid.uuid4()) if with_request_id else "",
    )
    plan = {
        v: PlannedVersion(
            PlanOutcome.WOULD_DELETE,
            f"allowed by {POLICY_ID}",
            (POLICY_ID,),
            VersionStatus.UNLISTED,
            False,
        )
        for v in versions
    }
    response = pb.DeletePackageVersionsResponse()
    for v in versions:
        ok = response.successful_versions[v]
        ok.revision = f"REV{n:012d}{v}"
        ok.status = pb.PACKAGE_VERSION_STATUS_DELETED
    return _Call(PRINCIPALS[n % len(PRINCIPALS)], request, plan, response, str(uuid.uuid4()))


def _audit_one(auditor: Auditor, call: _Call) -> tuple[float | None, float, float]:
    """Audit `call` as the interceptor and the use case do; (lookup, intent, outcome) in ms,
    lookup None when the request has no request_id (no replay check is made)."""
    started = time.perf_counter()  # the intent: from begin, with the request's conversion
    audit = auditor.begin(METHOD, str(uuid.uuid4()), call.principal.peer)
    audit.identified(call.principal)
    audit.received(convert.render_request(call.request)[0])
    prepared = time.perf_counter()
    if audit.request_id is not None:
        audit.replayed()  # the servicer's replay check (a fresh id: nothing found)
    looked_up = time.perf_counter()
    audit.planned(call.plan)
    audit.before_forwarding(GROUPS, list(call.plan), Deadline.after(30.0))
    intended = time.perf_counter()
    audit.delivered(DeleteOutcome(aws_request_ids=(call.aws_request_id,)))
    # What the edge does for an OK call, calling succeeded itself so that a failed outcome
    # is counted as a failure instead of being logged and retried in the background.
    call.response.audit_event_id = audit.event_id
    audit.succeeded(convert.recorded_response(call.response))
    finished = time.perf_counter()
    return (
        (looked_up - prepared) * 1000 if audit.request_id is not None else None,
        ((prepared - started) + (intended - looked_up)) * 1000,
        (finished - intended) * 1000,
    )


# --- the stores -----------------------------------------------------------------------------


class _CountingDialect:
    """A store's dialect, counting the chain-locked transactions the store begins: one per
    group commit (or heartbeat), each ended by one commit."""

    def __init__(self, inner: Dialect) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.transactions = 0  # only the store's writer thread (and its migration) begins

    def connect(self) -> Any:
        return self.inner.connect()

    def sql(self, text: str) -> str:
        return self.inner.sql(text)

    def begin_locked(self, conn: Any) -> None:
        self.transactions += 1
        self.inner.begin_locked(conn)

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        return self.inner.pipeline(conn)

    def migrations(self) -> list[tuple[int, list[str]]]:
        return self.inner.migrations()

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        return self.inner.reader()

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True, slots=True)
class _Backend:
    name: str
    open: Callable[[], contextlib.AbstractContextManager[tuple[SqlAuditStore, _CountingDialect]]]
    analyze: bool = False
    """ANALYZE the table after the warm-up (PostgreSQL: what autovacuum does on a live one)."""


@contextlib.contextmanager
def _sqlite_store(folder: Path) -> Iterator[tuple[SqlAuditStore, _CountingDialect]]:
    """A fresh SQLite store in a new temporary directory under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-audit-", dir=folder) as workdir:
        dialect = _CountingDialect(SqliteDialect(Path(workdir) / "audit.db"))
        store = SqlAuditStore(dialect, replica="bench")
        try:
            yield store, dialect
        finally:
            store.close()


@contextlib.contextmanager
def _postgres_store(url: str) -> Iterator[tuple[SqlAuditStore, _CountingDialect]]:
    """A fresh PostgreSQL store in a new schema of `url`'s database, dropped afterwards."""
    with postgres_schema(url, "pkggov_bench") as store_url:
        dialect = _CountingDialect(PostgresDialect(store_url))
        store = SqlAuditStore(dialect, replica="bench")
        try:
            yield store, dialect
        finally:
            store.close()


def _rows(store: SqlAuditStore) -> int:
    with store.dialect.reader() as conn:
        return int(conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0])


def _postgres_version(url: str) -> str | None:
    """The server's version, or None (printed why) when it cannot be reached."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()
                for name in ("synchronous_commit", "fsync", "commit_delay")
            }
    except psycopg.Error as error:
        print(f"PostgreSQL is not reachable at {url}: {str(error).strip()}")
        return None
    extra = ", ".join(f"{k}={v[0] if v else '?'}" for k, v in settings.items())
    return f"{row[0] if row else '?'} ({extra})"


def _filesystem(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts; "?" elsewhere): that of
    the longest mount point that is `path` or one of its parents."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            point = parts[1]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


# --- one cell -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Samples:
    lookup: list[float] = field(default_factory=list)
    intent: list[float] = field(default_factory=list)
    outcome: list[float] = field(default_factory=list)
    failures: int = 0
    first_failure: str = ""


@dataclass(slots=True)
class Cell:
    """The results of one store at one concurrency (times in ms, rates per second)."""

    store: str
    concurrency: int
    calls: int
    failures: int
    seconds: float
    events_per_second: float
    entries_per_second: float
    transactions_per_second: float
    entries_per_transaction: float
    p50: dict[str, float]
    p99: dict[str, float]
    first_failure: str = ""


def _run_cell(
    backend: _Backend,
    concurrency: int,
    *,
    seconds: float,
    calls: int | None,
    warmup: int,
    quota: QuotaLimits,
    with_request_id: bool,
) -> Cell:
    """Run `concurrency` threads in a closed loop on a fresh store; return the cell."""
    with backend.open() as (store, dialect):
        auditor = Auditor(store, quotas=quota)
        numbers = itertools.count()  # next() on it is atomic under the GIL
        stop = threading.Event()
        before: dict[str, int] = {}

        def mark() -> None:  # every thread has warmed up, none has started timing
            if backend.analyze:
                with store.dialect.reader() as conn:
                    conn.execute("ANALYZE audit_entries")
            before["rows"] = _rows(store)
            before["transactions"] = dialect.transactions

        start = threading.Barrier(concurrency + 1, action=mark)
        samples = [_Samples() for _ in range(concurrency)]

        warmup_calls = max(1, warmup // concurrency) * concurrency

        def attempt(mine: _Samples, timed: bool) -> bool:
            """One call; False when the closed loop is over."""
            n = next(numbers)
            if timed and calls is not None and n >= warmup_calls + calls:
                return False
            try:
                lookup, intent, outcome = _audit_one(auditor, _call(n, with_request_id))
            except Exception as error:  # noqa: BLE001 - counted and reported, not fatal
                mine.failures += 1
                mine.first_failure = mine.first_failure or f"{type(error).__name__}: {error}"
                return True
            if timed:
                if lookup is not None:  # a lookup ran (the request has a request_id)
                    mine.lookup.append(lookup)
                mine.intent.append(intent)
                mine.outcome.append(outcome)
            return True

        def work(mine: _Samples) -> None:
            for _ in range(warmup_calls // concurrency):
                attempt(mine, timed=False)
            start.wait()
            while not stop.is_set() and attempt(mine, timed=True):
                pass

        threads = [
            threading.Thread(target=work, args=(s,), name=f"bench-{i}", daemon=True)
            for i, s in enumerate(samples)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        if calls is None:
            stop.wait(seconds)
            stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        entries = _rows(store) - before["rows"]
        transactions = dialect.transactions - before["transactions"]

    intent = [x for s in samples for x in s.intent]
    outcome = [x for s in samples for x in s.outcome]
    both = [x + y for s in samples for x, y in zip(s.intent, s.outcome, strict=True)]
    lookup = [x for s in samples for x in s.lookup]
    cuts = {
        name: p50_p99(values)
        for name, values in zip(PARTS, (intent, outcome, both, lookup), strict=True)
    }
    return Cell(
        store=backend.name,
        concurrency=concurrency,
        calls=len(both),
        failures=sum(s.failures for s in samples),
        seconds=elapsed,
        events_per_second=len(both) / elapsed,
        entries_per_second=entries / elapsed,
        transactions_per_second=transactions / elapsed,
        entries_per_transaction=entries / transactions if transactions else math.nan,
        p50={name: cut[0] for name, cut in cuts.items()},
        p99={name: cut[1] for name, cut in cuts.items()},
        first_failure=next((s.first_failure for s in samples if s.first_failure), ""),
    )


# --- output ---------------------------------------------------------------------------------


def _print_table(cells: list[Cell]) -> None:
    """Latency per call, then throughput and group commit, one row per cell."""
    head = f"{'store':<10} {'conc':>4} {'calls':>7}"
    print()
    print("latency added per call, ms (p50 / p99)")
    print(head + "".join(f" {name:>19}" for name in PARTS))
    for c in cells:
        row = f"{c.store:<10} {c.concurrency:>4} {c.calls:>7}"
        for name in PARTS:
            row += f" {_ms(c.p50[name], 8)} / {_ms(c.p99[name], 7)}"
        print(row)
    print("intent, outcome: from the call to the store until its entry is committed (with the")
    print("body's making); lookup: the servicer's replay check (a read, not in intent+outcome)")
    print()
    print("throughput (an event = one call's intent + outcome = 2 entries)")
    print(
        f"{head} {'events/s':>9} {'entries/s':>10} {'commits/s':>10} "
        f"{'entries/commit':>15} {'failed':>7}"  # failed: calls that raised, warm-up included
    )
    for c in cells:
        print(
            f"{c.store:<10} {c.concurrency:>4} {c.calls:>7} {c.events_per_second:>9,.0f} "
            f"{c.entries_per_second:>10,.0f} {c.transactions_per_second:>10,.0f} "
            f"{c.entries_per_transaction:>15.2f} {c.failures:>7}"
        )
    print("commits: the store's transactions (one WAL flush each); entries/commit: group commit")
    for c in cells:
        if c.failures:
            print(f"{c.store} x {c.concurrency}: first failure: {c.first_failure}")


def _ms(value: float, width: int) -> str:
    """`value` with two decimals in `width` characters; "-" when there was no sample (NaN)."""
    return f"{value:>{width}.2f}" if math.isfinite(value) else f"{'-':>{width}}"


def _positive_ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def main(argv: list[str] | None = None) -> int:
    """Print the tables and write the JSON; exit 0 (2: PostgreSQL required but unreachable)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="timed seconds per cell (default 15)"
    )
    parser.add_argument(
        "--calls", type=int, help="timed calls per cell instead of --seconds (all threads)"
    )
    parser.add_argument(
        "--warmup", type=int, default=64, help="untimed calls per cell first (default 64)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_ints,
        default=[1, 64],
        help="threads issuing calls back to back, comma-separated (default 1,64)",
    )
    parser.add_argument(
        "--stores",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default both)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="where the SQLite stores' temporary directories are made: on a disk, not tmpfs "
        f"(default {DEFAULT_DIR.relative_to(ROOT)}/ of the repository)",
    )
    parser.add_argument(
        "--postgres-url", default=PG_URL, help=f"a database to make schemas in (default {PG_URL})"
    )
    parser.add_argument(
        "--require-postgres",
        action="store_true",
        help="exit 2 when PostgreSQL cannot be reached (default: skip its rows)",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="PostgreSQL: do not ANALYZE the new table after the warm-up, so that the plans "
        "the connections cache are made for an empty table (as in a new database's first "
        "minute, before autovacuum analyzes it)",
    )
    parser.add_argument(
        "--no-request-id",
        action="store_true",
        help="send requests without a request_id: no replay lookup, no claim check",
    )
    parser.add_argument(
        "--quota",
        type=int,
        default=0,
        help="versions per hour for the ci group, checked with each intent (default 0: "
        "unlimited, the gateway's default, so no quota query); large enough never to refuse",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where the results are written (default {DEFAULT_JSON.relative_to(ROOT)} "
        "in the repository)",
    )
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(stores) - {"sqlite", "postgresql"})
    if unknown:
        parser.error(f"unknown store(s): {', '.join(unknown)}")
    quota = QuotaLimits(by_group={"ci": args.quota}) if args.quota > 0 else QuotaLimits()

    configure_logging("warning")  # the store's errors still show (on stderr)
    started = time.perf_counter()
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(
        f"machine: {cpus} CPUs ({usable} usable), {platform.platform()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print("note: p50/p99 and rates are from one run on a noisy (shared, virtual) machine")
    backends: list[_Backend] = []
    skipped = ""
    postgres = None
    filesystem = _filesystem(args.dir)
    if "sqlite" in stores:
        folder: Path = args.dir
        print(f"sqlite: stores under {folder} ({filesystem}), WAL, synchronous=FULL")
        backends.append(_Backend("sqlite", lambda: _sqlite_store(folder)))
    if "postgresql" in stores:
        postgres = _postgres_version(args.postgres_url)
        if postgres is None:
            if args.require_postgres:
                print("PostgreSQL is required (--require-postgres): stopping")
                return 2
            skipped = f"PostgreSQL not reachable at {args.postgres_url}"
            print("postgresql: rows skipped (not reachable; not an error)")
        else:
            url = args.postgres_url
            print(
                f"postgresql: {postgres}, a new schema per cell in {url}, "
                f"{'not analyzed' if args.no_analyze else 'ANALYZEd after the warm-up'}"
            )
            analyze = not args.no_analyze
            backends.append(_Backend("postgresql", lambda: _postgres_store(url), analyze))
    mode = f"{args.calls} calls" if args.calls is not None else f"{args.seconds:g} s"
    print(
        f"per cell: {mode} timed after {args.warmup} warm-up calls; request_id "
        f"{'off' if args.no_request_id else 'on'}; quota "
        f"{args.quota if args.quota > 0 else 'unlimited'}"
    )

    cells: list[Cell] = []
    for backend in backends:
        for concurrency in args.concurrency:
            cell = _run_cell(
                backend,
                concurrency,
                seconds=args.seconds,
                calls=args.calls,
                warmup=args.warmup,
                quota=quota,
                with_request_id=not args.no_request_id,
            )
            cells.append(cell)
            print(
                f"  {cell.store} x {concurrency}: {cell.calls} calls in {cell.seconds:.1f} s, "
                f"intent+outcome p50 {cell.p50['intent+outcome']:.2f} ms"
            )
    _print_table(cells)
    if skipped:
        print(f"\npostgresql rows skipped: {skipped}")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.1f} s")

    report = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": cpus,
            "usable_cpus": usable,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "postgresql": postgres,
            "sqlite_dir": str(args.dir),
            "sqlite_filesystem": filesystem,
        },
        "note": "one run on a noisy machine; latencies in ms, rates per second",
        "settings": {
            "seconds": None if args.calls is not None else args.seconds,
            "calls": args.calls,
            "warmup": args.warmup,
            "request_id": not args.no_request_id,
            "quota": args.quota,
            "postgresql_analyzed": not args.no_analyze,
        },
        "skipped": skipped or None,
        "cells": [asdict(cell) for cell in cells],
        "total_seconds": total,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
