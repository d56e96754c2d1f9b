"""What the recoverable-deletion fault tests share: reading purges back from the audit record
and the emulator's call log, an SQLite store that stops taking writes, and a purge worker in a
child process that stops at a chosen point of its purge, to be killed there with SIGKILL.

The child (``python -m tests.e2e.recovery_helpers``) is the real purge worker on the real
store and adapter, on a clock fixed by its parent; only its CodeArtifact port is wrapped, so
that it stops right before or right after sending DeletePackageVersions and says so on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pkggov_emulator import Emulator
from pkggov_gateway.adapters.sql import SqlAuditStore, SqliteDialect
from pkggov_gateway.api.interceptors import recorded_status_of
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageFormat,
    PackageRef,
    PackageState,
    VersionStatus,
)
from pkggov_gateway.logs import configure_logging
from pkggov_gateway.ports import CodeArtifactPort
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.service.purge_worker import PURGE_METHOD, PurgeSettings, PurgeWorker
from tests.conftest import REPO
from tests.e2e.audit_helpers import row_body
from tests.e2e.harness import gateway_settings, inherited_environ

WINDOW_DAYS = 30.0
LEASE_SECONDS = 300.0
PURGE_DEADLINE_SECONDS = 60.0
RETRY_SECONDS = 30.0
RECOVERY: dict[str, Any] = {
    "windows": {"prod-*": WINDOW_DAYS},
    "worker_interval_seconds": 3600.0,  # the gateway's own pass runs at start-up only
    "lease_seconds": LEASE_SECONDS,
    "purge_deadline_seconds": PURGE_DEADLINE_SECONDS,
    "retry_seconds": RETRY_SECONDS,
}
"""recovery settings of every gateway of the fault tests (the tests run the passes)."""

STOP_POINTS = ("before_send", "after_send")
"""Where the child purge worker stops: its purge intent committed and DeletePackageVersions
not sent, or sent and applied by CodeArtifact with its answer not yet recorded."""
_MARK = "pkggov-purge-stopped"


def package_ref(package: str = "tool") -> PackageRef:
    """acme/`package`, generic, in demo/prod-release (the happy-path tests' package)."""
    return PackageRef("demo", "prod-release", PackageFormat.GENERIC, package, namespace="acme")


# --- reading the record and the call log ----------------------------------------------------


def bodies(store: SqlAuditStore) -> list[dict[str, Any]]:
    """Every entry body in chain order."""
    return [row_body(row) for row in store.iter_rows()]


def purge_entries(store: SqlAuditStore, kind: str = "outcome") -> list[dict[str, Any]]:
    """The purge worker's entries of `kind` (intent, outcome, reconciliation) in chain order."""
    purge_events = {b["event_id"] for b in bodies(store) if _method(b) == PURGE_METHOD}
    return [b for b in bodies(store) if b["event_id"] in purge_events and b["kind"] == kind]


def _method(body: Mapping[str, Any]) -> str:
    return str((body.get("rpc") or {}).get("method") or "")


def purged_in_record(store: SqlAuditStore) -> Counter[tuple[str, str]]:
    """(package, version) -> how many OK purge outcomes report it deleted."""
    counts: Counter[tuple[str, str]] = Counter()
    for body in purge_entries(store):
        if body["status"]["code"] != "OK":
            continue
        for version in (body.get("response") or {}).get("successful_versions") or {}:
            counts[(str(body["request"]["package"]), str(version))] += 1
    return counts


def deleted_upstream(emulator: Emulator) -> Counter[tuple[str, str]]:
    """(package, version) -> how many DeletePackageVersions calls CodeArtifact applied that
    named it (a call that was applied deleted the versions it could)."""
    counts: Counter[tuple[str, str]] = Counter()
    for call in emulator.calls("DeletePackageVersions"):
        if call.applied:
            for version in call.params["versions"]:
                counts[(str(call.params["package"]), str(version))] += 1
    return counts


# --- an SQLite store that stops taking writes -----------------------------------------------


@contextlib.contextmanager
def gateway_with_busy_timeout(
    emulator: Emulator, clock: Any, seconds: float, **overrides: Any
) -> Iterator[Gateway]:
    """A recoverable gateway on `clock` whose SQLite store gives up on a held lock after
    `seconds` (its default is 5 s); see test_audit.py's fail-closed tests."""
    settings = gateway_settings(emulator.endpoint_url, recovery=RECOVERY, **overrides)
    gateway = build_gateway(settings, clock=clock)
    dialect = gateway.audit_store.dialect
    assert isinstance(dialect, SqliteDialect)
    dialect.busy_timeout_seconds = seconds  # before any pooled or writer connection is opened
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(grace=2.0)


@contextlib.contextmanager
def write_locked(gateway: Gateway) -> Iterator[None]:
    """Another connection holds the SQLite store's write lock: the store takes no writes (a
    purge's lease, intent and outcome alike) until the block ends."""
    dialect = gateway.audit_store.dialect
    assert isinstance(dialect, SqliteDialect)
    blocker = sqlite3.connect(dialect.path, timeout=10, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()


def lease_owner(gateway: Gateway, purge_id: str) -> str | None:
    """Which replica holds the lease of `purge_id` (None: nobody), read straight from the
    SQLite file."""
    dialect = gateway.audit_store.dialect
    assert isinstance(dialect, SqliteDialect)
    with contextlib.closing(sqlite3.connect(dialect.path, timeout=5)) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM pending_purges WHERE purge_id = ?", (purge_id,)
        ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


# --- a purge worker killed in the middle of a purge -----------------------------------------


def crash_purge_worker(
    store: str, endpoint_url: str, *, now: datetime, stop: str, replica: str, log: Path
) -> str:
    """Run a purge pass in a child process on `store` at `now` (as replica `replica`), kill it
    with SIGKILL once it reaches `stop` (STOP_POINTS) and return the package it was purging.
    The child's stderr goes to `log`."""
    assert stop in STOP_POINTS
    command = [
        sys.executable,
        "-m",
        "tests.e2e.recovery_helpers",
        f"--store={store}",
        f"--endpoint={endpoint_url}",
        f"--now={now.isoformat()}",
        f"--stop={stop}",
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
            lines: list[str] = []
            while not (lines and lines[-1].startswith(_MARK)):
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the purge worker ended first: {lines} {log.read_text()}")
                lines.append(line.strip())
            proc.kill()
            assert -signal.SIGKILL == proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    words = lines[-1].split()
    assert words[1] == stop, lines
    return words[2]


class _StopsAtDelete:
    """The CodeArtifact port, but DeletePackageVersions stops the process's pass for good:
    before sending (`before_send`) or after CodeArtifact applied it (`after_send`)."""

    def __init__(self, upstream: CodeArtifactPort, stop: str) -> None:
        self._upstream = upstream
        self._stop = stop

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        if self._stop == "after_send":
            self._upstream.delete_package_versions(package, versions, expected_status, deadline)
        print(f"{_MARK} {self._stop} {package.package}", flush=True)
        threading.Event().wait()  # until the parent kills the process
        raise AssertionError("unreachable")

    def update_package_versions_status(
        self,
        package: PackageRef,
        versions: Sequence[str],
        target_status: VersionStatus,
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        return self._upstream.update_package_versions_status(
            package,
            versions,
            target_status,
            deadline,
            expected_status=expected_status,
            revisions=revisions,
        )

    def dispose_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        return self._upstream.dispose_package_versions(
            package, versions, deadline, expected_status=expected_status, revisions=revisions
        )

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
        by_published: bool = False,
    ) -> PackageState:
        return self._upstream.package_state(
            package, deadline, published_time_for=published_time_for, by_published=by_published
        )

    def published_time(
        self, package: PackageRef, version: str, deadline: Deadline
    ) -> datetime | None:
        return self._upstream.published_time(package, version, deadline)

    def list_packages(
        self, domain: str, repository: str, deadline: Deadline, **filters: Any
    ) -> list[PackageRef]:
        return self._upstream.list_packages(domain, repository, deadline, **filters)


def _main(argv: Sequence[str]) -> int:
    """The child of `crash_purge_worker`: one purge pass that stops at --stop."""
    parser = argparse.ArgumentParser()
    for name in ("store", "endpoint", "now", "stop", "replica"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    configure_logging("warning", "json")
    now = datetime.fromisoformat(args.now)

    def clock() -> datetime:
        return now

    settings = gateway_settings(
        args.endpoint, audit={"store": args.store, "replica": args.replica}, recovery=RECOVERY
    )
    gateway = build_gateway(settings, clock=clock)  # wired, not started: no server, no pass
    assert gateway.package_locks is not None
    worker = PurgeWorker(
        gateway.auditor,
        gateway.audit_store,
        _StopsAtDelete(gateway.upstream, args.stop),
        gateway.package_locks,
        PurgeSettings(lease_seconds=LEASE_SECONDS, deadline_seconds=PURGE_DEADLINE_SECONDS),
        status_of=recorded_status_of,
        clock=clock,
    )
    run = worker.run_once()
    print(f"pkggov-purge-finished {run}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
