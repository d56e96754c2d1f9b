"""What the cleanup (retention) end-to-end tests share: packages seeded in the emulator, boto3
reads of what CodeArtifact holds, a CleanupService caller, the emulator's record of deletions,
and a gateway in a child process that stops at its Nth DeletePackageVersions, to be killed
there with SIGKILL.

The child (``python -m tests.e2e.cleanup_helpers``) is a real gateway (build_gateway, started:
its gRPC server and its cleanup runner thread) on the store and clock its parent names; only
its CodeArtifact adapter's DeletePackageVersions is wrapped, so that the Nth call stops right
before it is sent or right after CodeArtifact applied it, and says so on stdout.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY, Emulator
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.model import DeleteOutcome, PackageRef, VersionStatus
from pkggov_gateway.logs import configure_logging
from tests.conftest import REPO
from tests.e2e.harness import (
    Reachable,
    RichError,
    cleanup_stub_for,
    gateway_settings,
    inherited_environ,
    rich_error,
)

DOMAIN = "demo"
REPOSITORY = "dev-x"
"""The repository the tests make their packages in (created per test; dev-* for the shipped
policy's rules)."""

FORMATS: dict[str, int] = {
    "npm": pb.PACKAGE_FORMAT_NPM,
    "pypi": pb.PACKAGE_FORMAT_PYPI,
    "maven": pb.PACKAGE_FORMAT_MAVEN,
    "nuget": pb.PACKAGE_FORMAT_NUGET,
    "generic": pb.PACKAGE_FORMAT_GENERIC,
    "ruby": pb.PACKAGE_FORMAT_RUBY,
    "swift": pb.PACKAGE_FORMAT_SWIFT,
    "cargo": pb.PACKAGE_FORMAT_CARGO,
}
"""CodeArtifact's format names -> the proto's numbers."""
FORMAT_NAMES = {number: name for name, number in FORMATS.items()}

FINISHED = frozenset(
    {
        pb.CLEANUP_JOB_STATE_SUCCEEDED,
        pb.CLEANUP_JOB_STATE_CANCELLED,
        pb.CLEANUP_JOB_STATE_FAILED,
    }
)
ALLOWED = frozenset({pb.VERSION_OUTCOME_WOULD_DELETE, pb.VERSION_OUTCOME_WOULD_ARCHIVE})
"""The planned policy outcomes a job sends as ordinary deletions."""

RUNNER: dict[str, float] = {"interval_seconds": 0.1, "retry_seconds": 0.0}
"""cleanup settings of a gateway whose job runner the tests let run: it looks for work every
0.1 s, and a job it put back (a runner may take a job in the moment between ApplyCleanup
storing it and recording its outcome; it waits for the record) is due again at once: on a
test clock that does not move, any later retry would never come."""

Key = tuple[str, str, str]
"""A package: (format name, namespace or "", name)."""


@dataclass(frozen=True, slots=True)
class Package:
    """A package of the tests' repository."""

    format: str
    namespace: str
    name: str
    repository: str = REPOSITORY
    domain: str = DOMAIN

    @property
    def key(self) -> Key:
        return (self.format, self.namespace, self.name)

    def fields(self) -> dict[str, Any]:
        """PlanCleanupRequest / DeletePackageVersionsRequest fields naming it."""
        return {
            "domain": self.domain,
            "repository": self.repository,
            "format": FORMATS[self.format],
            "namespace": self.namespace,
            "package": self.name,
        }

    def boto(self) -> dict[str, Any]:
        """boto3 parameters naming it."""
        params = {
            "domain": self.domain,
            "repository": self.repository,
            "format": self.format,
            "package": self.name,
        }
        if self.namespace:
            params["namespace"] = self.namespace
        return params


# --- the emulator, as CodeArtifact ------------------------------------------------------------


def codeartifact_client(emulator: Emulator) -> Any:
    """Unmodified boto3 on the emulator, as an operator would look at CodeArtifact."""
    return boto3.client(
        "codeartifact",
        endpoint_url=emulator.endpoint_url,
        region_name=DEMO_REGION,
        aws_access_key_id=DEMO_ACCESS_KEY_ID,
        aws_secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )


def create_repository(client: Any, repository: str = REPOSITORY, domain: str = DOMAIN) -> None:
    """CreateRepository through boto3 (the emulator's reset removes it again)."""
    client.create_repository(domain=domain, repository=repository)


def seed(
    emulator: Emulator, package: Package, versions: Sequence[tuple[str, str, datetime]]
) -> dict[str, str]:
    """Put (version, status, published time) of `package` straight into the emulator's state
    (test set-up: CodeArtifact publishes only generic packages through its API); each
    version's revision."""
    return {
        version: emulator.put_version(
            package.domain,
            package.repository,
            package.format,
            package.namespace or None,
            package.name,
            version,
            status=status,
            published_time=when,
        )
        for version, status, when in versions
    }


def upstream_versions(client: Any, package: Package) -> dict[str, str]:
    """Every version of `package` CodeArtifact lists (boto3, every page) -> its status; {} when
    the package is gone."""
    found: dict[str, str] = {}
    token: str | None = None
    while True:
        params = {**package.boto(), "maxResults": 1000, **({"nextToken": token} if token else {})}
        try:
            page = client.list_package_versions(**params)
        except client.exceptions.ResourceNotFoundException:
            return found
        for summary in page.get("versions", []):
            found[str(summary["version"])] = str(summary["status"])
        token = page.get("nextToken")
        if not token:
            return found


def applied_deletions(emulator: Emulator) -> Counter[tuple[str, str, str, str]]:
    """(format, namespace, package, version) -> how many DeletePackageVersions calls that
    CodeArtifact applied named it."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for call in emulator.calls("DeletePackageVersions"):
        if call.applied:
            params = call.params
            for version in params["versions"]:
                counts[
                    (
                        str(params["format"]),
                        str(params.get("namespace") or ""),
                        str(params["package"]),
                        str(version),
                    )
                ] += 1
    return counts


# --- CleanupService ---------------------------------------------------------------------------


def failure(call: Callable[[], object]) -> RichError:
    """Run `call`, which must fail, and decode its rich status."""
    try:
        call()
    except grpc.RpcError as error:
        return rich_error(error)
    raise AssertionError("the call succeeded but was expected to fail")


class Cleanup:
    """CleanupService as `principal` (None: anonymous), each call on a fresh channel."""

    def __init__(self, gateway: Reachable, principal: str | None = "alice") -> None:
        self.gateway = gateway
        self.principal = principal

    def call(self, method: str, request: Any, timeout: float = 30.0) -> Any:
        """`method` of CleanupService with `request` (a message)."""
        with cleanup_stub_for(self.gateway, principal=self.principal) as stub:
            return getattr(stub, method)(request, timeout=timeout)

    def plan(self, rule: pb.CleanupRule | None = None, **fields: Any) -> pb.PlanCleanupResponse:
        """PlanCleanup (justification "retention" unless given)."""
        fields.setdefault("justification", "retention")
        if rule is not None:
            fields["rule"] = rule
        response: pb.PlanCleanupResponse = self.call("PlanCleanup", pb.PlanCleanupRequest(**fields))
        return response

    def get_plan(self, plan_id: str, **fields: Any) -> pb.GetCleanupPlanResponse:
        response: pb.GetCleanupPlanResponse = self.call(
            "GetCleanupPlan", pb.GetCleanupPlanRequest(plan_id=plan_id, **fields)
        )
        return response

    def packages(self, plan_id: str) -> list[pb.PackageCleanupPlan]:
        """Every package of the plan, reading every page (GetCleanupPlan)."""
        found: list[pb.PackageCleanupPlan] = []
        token = ""
        for _ in range(1000):
            page = self.get_plan(plan_id, page_size=500, page_token=token)
            found.extend(page.packages)
            token = page.next_page_token
            if not token:
                return found
        raise AssertionError("GetCleanupPlan never reached its last page")

    def apply(self, plan: pb.CleanupPlan | str, **fields: Any) -> pb.CleanupJob:
        """ApplyCleanup of `plan` (with its hash, when given the plan)."""
        if isinstance(plan, str):
            request = pb.ApplyCleanupRequest(plan_id=plan, **fields)
        else:
            fields.setdefault("plan_hash", plan.plan_hash)
            request = pb.ApplyCleanupRequest(plan_id=plan.plan_id, **fields)
        response: pb.ApplyCleanupResponse = self.call("ApplyCleanup", request)
        return response.job

    def job(self, job_id: str) -> pb.CleanupJob:
        response: pb.GetCleanupJobResponse = self.call(
            "GetCleanupJob", pb.GetCleanupJobRequest(job_id=job_id)
        )
        return response.job

    def get_job(self, job_id: str, **fields: Any) -> pb.GetCleanupJobResponse:
        response: pb.GetCleanupJobResponse = self.call(
            "GetCleanupJob", pb.GetCleanupJobRequest(job_id=job_id, **fields)
        )
        return response

    def results(self, job_id: str) -> list[pb.PackageCleanupResult]:
        """Every package result of the job, reading every page."""
        found: list[pb.PackageCleanupResult] = []
        token = ""
        for _ in range(1000):
            page = self.get_job(job_id, include_results=True, page_size=500, page_token=token)
            found.extend(page.results)
            token = page.next_page_token
            if not token:
                return found
        raise AssertionError("GetCleanupJob never reached its last page")

    def cancel(self, job_id: str, reason: str = "") -> pb.CleanupJob:
        response: pb.CancelCleanupJobResponse = self.call(
            "CancelCleanupJob", pb.CancelCleanupJobRequest(job_id=job_id, reason=reason)
        )
        return response.job

    def wait(self, job_id: str, timeout: float = 30.0) -> pb.CleanupJob:
        """The job once finished (polled; fails after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")
            time.sleep(0.05)


def package_key(message: pb.PackageCleanupPlan | pb.PackageCleanupResult) -> Key:
    return (FORMAT_NAMES[message.format], message.namespace, message.package)


def entries(
    packages: Sequence[pb.PackageCleanupPlan],
) -> dict[tuple[Key, str], pb.VersionCleanupPlan]:
    """(package, version) -> the plan's decision."""
    return {(package_key(p), v.version): v for p in packages for v in p.versions}


def planned_deletions(packages: Sequence[pb.PackageCleanupPlan]) -> set[tuple[Key, str]]:
    """The plan's DELETE entries whose policy outcome a job sends (WOULD_DELETE/ARCHIVE)."""
    return {
        key
        for key, entry in entries(packages).items()
        if entry.action == pb.CLEANUP_ACTION_DELETE and entry.policy_outcome in ALLOWED
    }


def kept(packages: Sequence[pb.PackageCleanupPlan]) -> set[tuple[Key, str]]:
    """The plan's KEEP entries."""
    return {
        key for key, entry in entries(packages).items() if entry.action == pb.CLEANUP_ACTION_KEEP
    }


def result_map(results: Sequence[pb.PackageCleanupResult]) -> dict[tuple[Key, str], int]:
    """(package, version) -> its CleanupResult."""
    return {(package_key(r), v.version): v.result for r in results for v in r.versions}


def as_deleted(found: Counter[tuple[str, str, str, str]]) -> Counter[tuple[Key, str]]:
    """`applied_deletions` keyed as `entries` is."""
    return Counter({((f, n, p), v): count for (f, n, p, v), count in found.items()})


# --- a gateway in a child process, killed at a DeletePackageVersions ---------------------------

STOP_POINTS = ("before_send", "after_send")
"""Where the child stops its Nth DeletePackageVersions: not sent, or applied by CodeArtifact
with its answer never read."""
_READY = "pkggov-cleanup-child"
_STOPPED = "pkggov-cleanup-stopped"


@dataclass
class Child:
    """A child gateway: its process and gRPC address."""

    proc: subprocess.Popen[str]
    address: str

    def wait_stopped(self, timeout: float = 60.0) -> tuple[str, int]:
        """Read stdout until the child says it stopped: (package, call number)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("the child gateway ended before it stopped")
            if line.startswith(_STOPPED):
                words = line.split()
                return words[2], int(words[3])
        raise AssertionError("the child gateway did not stop in time")

    def kill(self) -> None:
        """SIGKILL, and check that it died of it."""
        self.proc.kill()
        assert -signal.SIGKILL == self.proc.wait(timeout=10)


@contextmanager
def child_gateway(
    store: str,
    endpoint_url: str,
    *,
    now: datetime,
    stop: str,
    at: int,
    replica: str,
    log: Path,
) -> Iterator[Child]:
    """A gateway in a child process on `store` at the fixed time `now` (as `replica`) whose
    `at`th DeletePackageVersions stops at `stop` (STOP_POINTS); killed on exit if still
    running. Its stderr goes to `log`."""
    assert stop in STOP_POINTS
    command = [
        sys.executable,
        "-m",
        "tests.e2e.cleanup_helpers",
        f"--store={store}",
        f"--endpoint={endpoint_url}",
        f"--now={now.isoformat()}",
        f"--stop={stop}",
        f"--at={at}",
        f"--replica={replica}",
    ]
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=inherited_environ(),
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            if not line.startswith(_READY):
                raise AssertionError(f"the child gateway did not start: {line!r} {log.read_text()}")
            yield Child(proc, line.split()[1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _main(argv: Sequence[str]) -> int:
    """The child of `child_gateway`: a started gateway whose --at'th DeletePackageVersions
    stops at --stop for good."""
    parser = argparse.ArgumentParser()
    for name in ("store", "endpoint", "now", "stop", "at", "replica"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    configure_logging("warning", "json")
    now = datetime.fromisoformat(args.now)
    at = int(args.at)

    def clock() -> datetime:
        return now

    settings = gateway_settings(
        args.endpoint,
        policy={},
        audit={"store": args.store, "replica": args.replica},
        cleanup=RUNNER,
    )
    gateway = build_gateway(settings, clock=clock)
    adapter = gateway.upstream
    send = adapter.delete_package_versions
    calls = [0]
    lock = threading.Lock()

    def stopping(
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        with lock:
            calls[0] += 1
            number = calls[0]
        if number < at:
            return send(package, versions, expected_status, deadline)
        if args.stop == "after_send":
            send(package, versions, expected_status, deadline)
        print(f"{_STOPPED} {args.stop} {package.package} {number}", flush=True)
        threading.Event().wait()  # until the parent kills the process
        raise AssertionError("unreachable")

    adapter.delete_package_versions = stopping  # type: ignore[method-assign]
    gateway.start()
    print(f"{_READY} {gateway.address}", flush=True)
    threading.Event().wait()
    return 1


def results_by_version(results: Sequence[pb.PackageCleanupResult]) -> Mapping[str, int]:
    """version -> result, for a job over one package."""
    return {v.version: v.result for r in results for v in r.versions}


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
