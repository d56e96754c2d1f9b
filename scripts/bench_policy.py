"""Benchmark CedarPolicyEngine.decide on the shipped policy set: p50/p99 for 1 and 100 versions.

Run: ``.venv/bin/python scripts/bench_policy.py [--iterations N]``. Besides the whole
decision it times its parts (building the request dicts and entity JSON in Python, Cedar
parsing the entity delta, Cedar's batch evaluation), to show where the time goes.
Goals (issue 3): 100 versions p99 <= 2 ms, 1 version p99 <= 0.2 ms. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import cedarpy

from pkggov_gateway.adapters import cedar
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts

__all__ = ["main"]

GOALS_MS = {1: 0.2, 100: 2.0}


def _request(count: int) -> PolicyRequest:
    """A CI principal deleting `count` unlisted pre-releases (every policy is evaluated)."""
    published = datetime(2024, 1, 1, tzinfo=UTC)
    return PolicyRequest(
        principal=Principal("spiffe://pkggov.test/ci/builder", AuthMethod.MTLS, "ipv4:10.0.0.7:1"),
        package=PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets", "acme"),
        versions=tuple(
            VersionFacts(f"1.{index}.0-rc.1", VersionStatus.UNLISTED, False, published)
            for index in range(count)
        ),
        version_count=count + 10,
        remaining_after_request=10,
        context=PolicyContext("", False, count, datetime.now(UTC), "ipv4:10.0.0.7:1"),
    )


def _percentiles(run: Callable[[], object], iterations: int) -> tuple[float, float]:
    for _ in range(min(50, iterations)):
        run()  # warm up
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def _bench(engine: cedar.CedarPolicyEngine, size: int, iterations: int) -> None:
    """Time decide() for `size` versions, and its parts on the same snapshot."""
    request = _request(size)
    snapshot = engine._snapshot
    reads = snapshot.reads
    requests, delta = cedar._cedar_input(request, ("ci",), reads)
    entities = snapshot.base.with_added_json_str(delta)
    parts: dict[str, Callable[[], object]] = {
        "decide (total)": lambda: engine.decide(request),
        "  python: request dicts + entity JSON": lambda: cedar._cedar_input(
            request, ("ci",), reads
        ),
        "  cedar: parse entity delta": lambda: snapshot.base.with_added_json_str(delta),
        "  cedar: is_authorized_batch": lambda: cedarpy.is_authorized_batch(
            requests, snapshot.policy_set, entities
        ),
        "  (without pruning) decide": lambda: _decide_unpruned(engine, request),
    }
    goal = GOALS_MS.get(size)
    print(
        f"\n{size} version(s), {iterations} iterations"
        + (f", goal p99 <= {goal} ms" if goal else "")
    )
    for name, run in parts.items():
        gc.collect()
        p50, p99 = _percentiles(run, iterations)
        verdict = ""
        if name.startswith("decide") and goal is not None:
            verdict = "  (goal met)" if p99 <= goal else "  (goal NOT met)"
        print(f"  {name:<40} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms{verdict}")


def _decide_unpruned(engine: cedar.CedarPolicyEngine, request: PolicyRequest) -> object:
    """What decide() would cost if every attribute were sent (for comparison)."""
    snapshot = engine._snapshot
    requests, delta = cedar._cedar_input(request, ("ci",), cedar._ALL)
    entities = snapshot.base.with_added_json_str(delta)
    return cedarpy.is_authorized_batch(requests, snapshot.policy_set, entities)


def main(argv: list[str] | None = None) -> int:
    """Print p50/p99 in milliseconds per request size; exit 0 (the goals are informative)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="versions")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    engine = cedar.CedarPolicyEngine(cedar.default_policy_files())
    print(
        f"load: {(time.perf_counter() - start) * 1000:.1f} ms, {len(engine.policy_ids())} policies"
    )
    for size in args.sizes:
        _bench(engine, size, max(50, args.iterations // max(1, size // 10)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
