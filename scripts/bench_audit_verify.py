"""Benchmark audit chain verification: entries per second of verify(store.iter_rows()).

Run: ``.venv/bin/python scripts/bench_audit_verify.py [--entries N]``.
Goal: at least 50,000 entries per second for realistic bodies (about 1.5 KB of JSON each),
reading from a SQLite store (the time includes reading the rows). Measured twice: checking
every row in this process (``workers=0``), and with `verify`'s default worker processes
(one per core up to 4, none on one core: they parse the bodies while this process reads and
links the rows; the number used is printed).

The store is filled directly with ``executemany`` (hashes and columns computed here, exactly
as the store's writer does): appending 100,000 entries one at a time through the store's
writer would take far longer than the verification being measured. The store is then opened
with `open_audit_store`, so the rows are read the way an operator's verification reads them.

Not a test: timings depend on the machine, and the script always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pkggov_gateway.adapters.sql import open_audit_store
from pkggov_gateway.domain.audit import (
    COLUMNS,
    GENESIS,
    canonical,
    chain_hash,
    column_values,
    format_time,
)
from pkggov_gateway.tools.audit_verify import verify

__all__ = ["main"]

GOAL_PER_SECOND = 50_000
START = datetime(2025, 1, 1, tzinfo=UTC)


def _body(n: int) -> dict[str, Any]:
    """An outcome of a CI cleanup deleting seven pre-releases: about 1.5 KB canonical."""
    versions = [f"2.{n % 97}.{i}-rc.{i}+build.{n}" for i in range(7)]
    return {
        "event_id": str(uuid.UUID(int=n)),
        "kind": "outcome",
        "time": format_time(START + timedelta(milliseconds=n)),
        "request_id": str(uuid.UUID(int=n + (1 << 64))),
        "principal": {
            "id": "spiffe://pkggov.example/ci/builder",
            "method": "mtls",
            "peer": f"ipv4:10.0.{n % 250}.7:{40000 + n % 20000}",
            "groups": ["ci", "release-engineering"],
        },
        "request": {
            "domain": "acme",
            "repository": "dev-shared",
            "format": "npm",
            "namespace": "acme",
            "package": f"widgets-{n % 400}",
            "versions": versions,
            "expected_status": "Unlisted",
            "allow_partial": False,
        },
        "policy": {"decision": "allow", "reasons": ["ci-cleans-prereleases"], "errors": []},
        "forward": versions,
        "upstream": {
            "request_id": str(uuid.UUID(int=n + (2 << 64))),
            "successful": {v: {"status": "Deleted", "revision": "r1"} for v in versions},
            "failed": {},
        },
        "decision": "allowed",
        "status": {"code": "OK", "message": f"deleted {len(versions)} versions"},
        "deleted": len(versions),
        "duration_ms": 41.7,
    }


def _rows(count: int) -> Iterator[tuple[Any, ...]]:
    prev = GENESIS
    for n in range(1, count + 1):
        body = _body(n)
        text = canonical(body)
        digest = chain_hash(prev, text)
        yield (n, *column_values(body), text, prev, digest)
        prev = digest


def _fill(path: Path, count: int) -> float:
    """Create the store's schema, then insert `count` chained rows; the mean body size."""
    open_audit_store(str(path)).close()  # the schema, by the store's own migrations
    names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
    marks = ", ".join("?" for _ in range(len(COLUMNS) + 4))
    total = 0
    conn = sqlite3.connect(path)
    try:
        batch: list[tuple[Any, ...]] = []
        for row in _rows(count):
            total += len(row[1 + len(COLUMNS)].encode())
            batch.append(row)
            if len(batch) == 10_000:
                conn.executemany(f"INSERT INTO audit_entries ({names}) VALUES ({marks})", batch)  # noqa: S608
                batch.clear()
        if batch:
            conn.executemany(f"INSERT INTO audit_entries ({names}) VALUES ({marks})", batch)  # noqa: S608
        conn.commit()
    finally:
        conn.close()
    return total / max(count, 1)


def _default_workers() -> int:
    """The worker processes `verify` starts when not told (its rule: one per core, at most 4;
    none with a single core)."""
    cores = os.cpu_count() or 1
    return min(cores, 4) if cores > 1 else 0


def _measure(path: Path, runs: int, workers: int | None) -> float:
    """The best of `runs` verifications of the store at `path`, in entries per second."""
    best = 0.0
    label = f"default ({_default_workers()})" if workers is None else str(workers)
    for run in range(1, runs + 1):
        store = open_audit_store(str(path))
        try:
            gc.collect()
            started = time.perf_counter()
            report = verify(store.iter_rows(), workers=workers)
            seconds = time.perf_counter() - started
        finally:
            store.close()
        rate = report.entries / seconds if seconds else float("inf")
        best = max(best, rate)
        print(
            f"workers={label} run {run}: {report.entries:,} entries in {seconds:.2f} s "
            f"= {rate:,.0f}/s (ok={report.ok})"
        )
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000, help="rows to verify")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (the best is reported)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pkggov-bench-") as folder:
        path = Path(folder) / "audit.db"
        started = time.perf_counter()
        size = _fill(path, args.entries)
        print(
            f"filled {args.entries:,} entries (mean body {size:,.0f} bytes) "
            f"in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs"
        )
        alone = _measure(path, args.runs, workers=0)
        best = _measure(path, args.runs, workers=None)
        verdict = "met" if best >= GOAL_PER_SECOND else "NOT met"
        print(f"best in this process alone (workers=0): {alone:,.0f} entries/s")
        print(f"best (default workers: {_default_workers()}): {best:,.0f} entries/s")
        print(f"goal >= {GOAL_PER_SECOND:,} entries/s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
