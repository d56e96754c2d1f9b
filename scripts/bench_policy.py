"""Benchmark policy decisions (CedarPolicyEngine.decide): p50/p99 for 1 and 100 versions.

Run: ``make bench-policy`` (or ``.venv/bin/python scripts/bench_policy.py [--iterations N]``).
Goals (issue 3): one version p99 <= 0.2 ms; 100 versions p99 <= 2 ms, policies parsed once.

A decision costs one Cedar request per *kind* of version: versions that every policy sees
alike (the same status, latest flag and pre-release flag for the shipped set) share one.
So the scenarios are:

- 1 version;
- 100 versions of one kind (CI cleaning up unlisted pre-releases, the common case);
- 100 versions of every kind the shipped set can tell apart (its worst case);
- 100 versions under a set that also reads ``resource.version``, so that every version is a
  kind of its own: the cost of Cedar per version, reported without a goal verdict because no
  sharing is possible. For that case the parts of a decision are timed too (Python building
  the input, Cedar parsing the entities, Cedar's batch evaluation), to show where time goes.

Not a test: timings depend on the machine, and the script always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import cycle, islice, product
from pathlib import Path

import cedarpy
from _bench_common import p50_p99

from pkggov_gateway.adapters import cedar, cedar_input
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts

__all__ = ["main"]

GOALS_MS = {1: 0.2, 100: 2.0}
PUBLISHED = datetime(2024, 1, 1, tzinfo=UTC)
PER_VERSION_POLICY = """\
@id("keep-hotfixes")
forbid (principal, action == Pkggov::Action::"DeletePackageVersion", resource)
when { resource.version like "*-hotfix*" };
"""


def _request(versions: list[VersionFacts]) -> PolicyRequest:
    """A CI principal deleting `versions` of one npm package in a dev repository."""
    return PolicyRequest(
        principal=Principal("spiffe://pkggov.test/ci/builder", AuthMethod.MTLS, "ipv4:10.0.0.7:1"),
        package=PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets", "acme"),
        versions=tuple(versions),
        version_count=len(versions) + 10,
        remaining_after_request=10,
        context=PolicyContext("", False, len(versions), datetime.now(UTC), "ipv4:10.0.0.7:1"),
    )


def _alike(count: int) -> list[VersionFacts]:
    """`count` unlisted pre-releases: every policy is evaluated, and every one allows."""
    return [
        VersionFacts(f"1.{index}.0-rc.1", VersionStatus.UNLISTED, False, PUBLISHED)
        for index in range(count)
    ]


def _every_kind(count: int) -> list[VersionFacts]:
    """`count` versions cycling through status x latest x pre-release (24 kinds)."""
    kinds = cycle(product(VersionStatus, (False, True), ("", "-rc.1")))
    return [
        VersionFacts(f"1.{index}.0{suffix}", status, latest, PUBLISHED)
        for index, (status, latest, suffix) in enumerate(islice(kinds, count))
    ]


@dataclass(frozen=True)
class Scenario:
    name: str
    engine: cedar.CedarPolicyEngine
    request: PolicyRequest
    goal_ms: float | None
    parts: bool = False


def _percentiles(run: Callable[[], object], iterations: int) -> tuple[float, float]:
    for _ in range(min(50, iterations)):
        run()  # warm up
    gc.collect()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return p50_p99(samples)


def _parts(scenario: Scenario) -> dict[str, Callable[[], object]]:
    """The parts of one decision, timed on the same snapshot."""
    snapshot = scenario.engine._snapshot
    request = scenario.request
    batch = cedar_input.delete_input(request, ("ci",), snapshot.reads)
    entities = snapshot.base.with_added_json_str(batch.entities)
    return {
        "  python: Cedar input (requests, entity JSON)": lambda: cedar_input.delete_input(
            request, ("ci",), snapshot.reads
        ),
        "  cedar: parse the entities": lambda: snapshot.base.with_added_json_str(batch.entities),
        "  cedar: is_authorized_batch": lambda: cedarpy.is_authorized_batch(
            batch.requests, snapshot.policy_set, entities
        ),
    }


def _run(scenario: Scenario, iterations: int) -> None:
    size = len(scenario.request.versions)
    snapshot = scenario.engine._snapshot
    kinds = len(cedar_input.delete_input(scenario.request, ("ci",), snapshot.reads).requests)
    p50, p99 = _percentiles(lambda: scenario.engine.decide(scenario.request), iterations)
    verdict = ""
    if scenario.goal_ms is not None:
        met = "met" if p99 <= scenario.goal_ms else "NOT met"
        verdict = f"  goal p99 <= {scenario.goal_ms} ms: {met}"
    label = f"{scenario.name} ({size} versions, {kinds} Cedar requests)"
    print(f"{label:<62} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms{verdict}")
    if scenario.parts:
        for name, run in _parts(scenario).items():
            p50, p99 = _percentiles(run, iterations)
            print(f"{name:<62} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms")


def _per_version_engine(workdir: Path) -> cedar.CedarPolicyEngine:
    """The shipped set plus a policy reading resource.version."""
    shipped = cedar.default_policy_files()
    root = workdir / "set"
    shutil.copytree(shipped.schema.parent, root)
    (root / "policies" / "keep-hotfixes.cedar").write_text(PER_VERSION_POLICY)
    return cedar.CedarPolicyEngine(
        cedar.PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")
    )


def main(argv: list[str] | None = None) -> int:
    """Print p50/p99 in milliseconds per scenario; exit 0 (the goals are informative)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls per scenario")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    shipped = cedar.CedarPolicyEngine(cedar.default_policy_files())
    print(
        f"load: {(time.perf_counter() - start) * 1000:.1f} ms, "
        f"{len(shipped.policy_ids())} policies (parsed once)"
    )
    with tempfile.TemporaryDirectory() as workdir:
        per_version = _per_version_engine(Path(workdir))
        scenarios = [
            Scenario("one version", shipped, _request(_alike(1)), GOALS_MS[1]),
            Scenario("pre-releases alike", shipped, _request(_alike(100)), GOALS_MS[100]),
            Scenario("every kind of version", shipped, _request(_every_kind(100)), GOALS_MS[100]),
            Scenario(
                "a policy reads resource.version",
                per_version,
                _request(_alike(100)),
                None,
                parts=True,
            ),
        ]
        for scenario in scenarios:
            _run(scenario, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
