"""Helpers shared by the benchmark scripts (scripts/bench_*.py); not a script itself.

The scripts are run as ``.venv/bin/python scripts/bench_X.py``, so scripts/ is on sys.path and
they import this module as ``_bench_common``.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAKE_BENCH_MINUTES", "finite", "make_bench_started", "p50_p99", "postgres_schema"]

MAKE_BENCH_MINUTES = 15.0
"""Issue 18: `make bench` on a clean clone in under this many minutes."""


def p50_p99(samples: Sequence[float]) -> tuple[float, float]:
    """The median and the 99th percentile of `samples` (interpolating between the two nearest
    samples: ``statistics.quantiles(..., method="inclusive")``); NaN for no samples."""
    if not samples:
        return math.nan, math.nan
    if len(samples) == 1:
        return samples[0], samples[0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def finite(value: Any) -> Any:
    """`value` with NaN and infinities (no sample) as None, in dicts, lists and tuples at any
    depth (tuples become lists), so that ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@contextlib.contextmanager
def postgres_schema(url: str, prefix: str = "pkggov_bench") -> Iterator[str]:
    """A new schema in `url`'s database, dropped (with what it holds) afterwards; yields `url`
    with that schema as its search_path, for a store to make its tables in."""
    import psycopg  # noqa: PLC0415 - only the PostgreSQL runs need it

    schema = f"{prefix}_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        joiner = "&" if "?" in url else "?"
        yield f"{url}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def make_bench_started() -> float | None:
    """Seconds since the `make bench` running this script started (None: not run by it)."""
    pid = os.getppid()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    for _ in range(8):  # make -> its shell -> this script, at most a few levels
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = raw[raw.rindex(")") + 2 :].split()
        name = Path(argv[0].decode(errors="replace")).name
        if name in ("make", "gmake") and b"bench" in argv[1:]:
            return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        pid = int(fields[1])
        if pid <= 1:
            return None
    return None
