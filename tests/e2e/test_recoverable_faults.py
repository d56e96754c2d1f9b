"""Recoverable deletion under faults: crashes around an archive and a purge, replicas racing for
the same purges, a restore racing a purge, versions changed outside the gateway, CodeArtifact
failing and the audit store down while purges are due.

Each test reads what happened where it is observable: CodeArtifact (boto3 on the emulator,
and its call log), the pending purges (ListPendingPurges, the store's `pending_for` and
`purge_state`) and the audit record (its entries, GetAuditEvent, the chain verifier). Time
moves only with the test clock (tests.e2e.test_recoverable_delete.Clock): purges are made due,
and leases and retry delays run out, by moving it; nothing sleeps for a window.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, FaultKind, FaultRule
from pkggov_gateway.domain.audit import EntryKind, parse_time
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.domain.recovery import PendingPurge, PurgeQuery, PurgeState
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.service.purge_worker import PURGE_METHOD, PurgeRun, PurgeWorker
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.e2e import test_recoverable_delete as happy_path
from tests.e2e.audit_helpers import kinds, reopened_store
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    PERMIT_ALL,
    PRINCIPAL_KEY,
    GatewayFactory,
    external_upstream_env,
    stub_for,
    wait_for,
)
from tests.e2e.recovery_helpers import (
    LEASE_SECONDS,
    RECOVERY,
    RETRY_SECONDS,
    STOP_POINTS,
    crash_purge_worker,
    deleted_upstream,
    gateway_with_busy_timeout,
    lease_owner,
    package_ref,
    purge_entries,
    purged_in_record,
    write_locked,
)
from tests.e2e.test_recoverable_delete import (
    DAY,
    GENERIC,
    Clock,
    delete,
    pending,
    publish,
    restore,
    status_of,
)

clock = happy_path.clock
codeartifact = happy_path.codeartifact
"""The happy-path tests' fixtures, shared: the test clock, and boto3 on the emulator."""

WINDOW = timedelta(days=RECOVERY["windows"]["prod-*"])
SECOND = timedelta(seconds=1)
NOTHING = (0, 0, 0)
"""(purged, cancelled, failed) of a pass that found nothing to do."""


def _counts(run: PurgeRun) -> tuple[int, int, int]:
    return run.purged, run.cancelled, run.failed


def _worker(gateway: Gateway) -> PurgeWorker:
    worker = gateway.purge_worker
    assert worker is not None
    return worker


def _pending_purge(gateway: Gateway, version: str, package: str = "tool") -> PendingPurge:
    found = gateway.audit_store.pending_for(package_ref(package), [version])
    assert version in found, f"{package} {version} has no pending purge"
    return found[version]


def _state(gateway: Gateway, purge: PendingPurge) -> tuple[PurgeState, str, str]:
    """(state, reason, closing event) of a purge."""
    record = gateway.audit_store.purge_state(purge.purge_id)
    assert record is not None
    return record.state, record.closed_reason or "", record.closed_event_id or ""


def _revision(client: Any, version: str, package: str = "tool") -> str:
    found = client.describe_package_version(
        domain="demo",
        repository="prod-release",
        format="generic",
        namespace="acme",
        package=package,
        packageVersion=version,
    )
    return str(found["packageVersion"]["revision"])


def _verified(gateway: Gateway) -> None:
    """No intent left open, and the hash chain verifies."""
    assert [] == gateway.audit_store.open_intents()
    report = verify(gateway.audit_store.iter_rows())
    assert report.ok, report.first_problem


def _audit_event(gateway: Gateway, event_id: str) -> pb.AuditEvent:
    """GetAuditEvent, as an operator reads it."""
    with grpc.insecure_channel(gateway.address) as channel:
        answer = pb_grpc.AuditServiceStub(channel).GetAuditEvent(
            pb.GetAuditEventRequest(event_id=event_id),
            timeout=10,
            metadata=((PRINCIPAL_KEY, "alice"),),
        )
    return answer.event


# --- 1. a crash after archiving, before the purge is recorded -------------------------------

CALL_SECONDS = 3.0
REPLICA = "recoverable-crash"


def test_a_crash_after_archiving_leaves_a_purge_for_the_successor(
    *,
    bin_dir: Path,
    tmp_path: Path,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    make_gateway: GatewayFactory,
) -> None:
    """The real gateway is killed (SIGKILL) while CodeArtifact is archiving the version: the
    archive lands, the intent is committed, no outcome and no pending purge. A successor on
    the same store and replica name reconciles the intent (its call's deadline passed) into a
    pending purge pinned to the archived revision, which its worker purges once due."""
    url = f"sqlite:{tmp_path}/audit.db"
    publish(codeartifact, "1.0.0", "1.1.0")
    emulator.add_fault(
        FaultRule(
            operation="UpdatePackageVersionsStatus", kind="latency", latency_seconds=0.5, count=1
        )
    )
    env = external_upstream_env(
        emulator.endpoint_url,
        PKGGOV_POLICY_POLICIES=str(PERMIT_ALL),
        PKGGOV_AUDIT_STORE=url,
        PKGGOV_AUDIT_REPLICA=REPLICA,
        PKGGOV_RECOVERY_WINDOWS="prod-*=30",
        PKGGOV_RECOVERY_WORKER_INTERVAL_SECONDS="3600",
    )
    archive: dict[str, Any] = {**GENERIC, "versions": ["1.0.0"], "justification": "cleanup"}
    with spawn_gateway(bin_dir, **env) as process, stub_for(process) as stub:
        call = stub.DeletePackageVersions.future(
            pb.DeletePackageVersionsRequest(**archive),
            timeout=CALL_SECONDS,
        )
        assert wait_for(lambda: not emulator.faults())  # the archive is inside CodeArtifact
        assert not call.done()
        process.proc.kill()
        assert -signal.SIGKILL == process.proc.wait(timeout=10)
        with pytest.raises(grpc.RpcError):
            call.result(timeout=10)
    assert wait_for(lambda: any(c.applied for c in emulator.calls("UpdatePackageVersionsStatus")))
    assert "Archived" == status_of(codeartifact, "1.0.0")
    archived_revision = _revision(codeartifact, "1.0.0")
    with reopened_store(url, "reader") as store:
        [open_event] = store.open_intents()
        intent = open_event.entries[0].body
        assert ["1.0.0"] == intent["forward"]
        assert "WOULD_ARCHIVE" == intent["decisions"]["1.0.0"]["outcome"]
        assert {} == store.pending_for(package_ref(), ["1.0.0"])  # the crash lost the purge

    # The successor's clock is past the killed call's deadline (the intent records it in
    # real time), so it reconciles the intent at start-up.
    past_deadline = datetime.now(UTC) + timedelta(seconds=CALL_SECONDS + 5)
    clock.advance(max(timedelta(0), past_deadline - clock()))
    audit = {"store": url, "replica": REPLICA, "reconcile_settle_seconds": 0.1}
    with make_gateway(clock=clock, audit=audit, recovery=RECOVERY) as successor:
        event = successor.audit_store.event(open_event.event_id)
        assert event is not None
        assert ["intent", "reconciliation"] == kinds(event)
        assert {"1.0.0": "archived"} == event.entries[1].body["versions"]
        [listed] = pending(successor, package="tool")
        assert ("1.0.0", archived_revision) == (listed.version, listed.revision)
        assert ("alice", open_event.event_id) == (listed.requester, listed.archive_event_id)
        assert pb.PACKAGE_VERSION_STATUS_PUBLISHED == listed.previous_status
        purge = _pending_purge(successor, "1.0.0")
        assert parse_time(str(intent["decisions"]["1.0.0"]["purge_at"])) == purge.due_at

        worker = _worker(successor)
        clock.advance(purge.due_at - clock() - SECOND)
        assert NOTHING == _counts(worker.run_once())
        assert "Archived" == status_of(codeartifact, "1.0.0")
        clock.advance(SECOND)
        assert (1, 0, 0) == _counts(worker.run_once())
        assert status_of(codeartifact, "1.0.0") is None
        assert [] == pending(successor)
        assert PurgeState.PURGED == _state(successor, purge)[0]
        assert Counter({("tool", "1.0.0"): 1}) == purged_in_record(successor.audit_store)
        _verified(successor)
    verified = subprocess.run(
        [str(bin_dir / "pkggov-admin"), "audit", "verify", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == verified.returncode, verified.stdout + verified.stderr
    assert (True, None) == (
        json.loads(verified.stdout)["ok"],
        json.loads(verified.stdout)["first_problem"],
    )


# --- 2. a crash in the middle of a purge ----------------------------------------------------


@pytest.mark.parametrize("stop", STOP_POINTS)
def test_a_crash_mid_purge_neither_loses_nor_repeats_a_purge(
    *,
    stop: str,
    tmp_path: Path,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    make_gateway: GatewayFactory,
) -> None:
    """A purge worker (another replica, in a child process) is killed with SIGKILL in its
    purge of `first`, after its intent, before or after DeletePackageVersions was sent; it had
    leased `second` too. The surviving replica leaves both alone while the lease lasts; then
    it re-reads each: a version already gone is closed as purged (not deleted again), one
    still archived is purged. Each version is deleted exactly once."""
    url = f"sqlite:{tmp_path}/audit.db"
    for package in ("first", "second"):
        publish(codeartifact, "1.0.0", "9.0.0", package=package)
    audit = {"store": url, "replica": "survivor"}
    with make_gateway(clock=clock, audit=audit, recovery=RECOVERY) as survivor:
        delete(survivor, "1.0.0", package="first")
        clock.advance(timedelta(minutes=1))  # `second` falls due after `first`
        delete(survivor, "1.0.0", package="second")
        first = _pending_purge(survivor, "1.0.0", "first")
        second = _pending_purge(survivor, "1.0.0", "second")
        clock.advance(WINDOW + timedelta(minutes=5))

        stopped_in = crash_purge_worker(
            url,
            emulator.endpoint_url,
            now=clock(),
            stop=stop,
            replica="crashed",
            log=tmp_path / "worker.log",
        )
        assert "first" == stopped_in
        sent = stop == "after_send"
        assert Counter({("first", "1.0.0"): 1} if sent else {}) == deleted_upstream(emulator)
        assert (None if sent else "Archived") == status_of(codeartifact, "1.0.0", "first")
        assert "Archived" == status_of(codeartifact, "1.0.0", "second")
        [dead] = survivor.audit_store.open_intents()
        assert (PURGE_METHOD, ["1.0.0"]) == (
            dead.entries[0].body["rpc"]["method"],
            dead.entries[0].body["forward"],
        )
        assert {"first", "second"} == {p.package for p in pending(survivor)}

        worker = _worker(survivor)
        assert NOTHING == _counts(worker.run_once())  # both are leased to the dead replica
        assert "Archived" == status_of(codeartifact, "1.0.0", "second")
        clock.advance(timedelta(seconds=LEASE_SECONDS) + SECOND)
        run = worker.run_once()
        assert (0, []) == (run.failed, run.errors)

        assert status_of(codeartifact, "1.0.0", "first") is None
        assert status_of(codeartifact, "1.0.0", "second") is None
        assert "Published" == status_of(codeartifact, "9.0.0", "first")
        assert Counter({("first", "1.0.0"): 1, ("second", "1.0.0"): 1}) == deleted_upstream(
            emulator
        )
        assert [] == pending(survivor)
        assert PurgeState.PURGED == _state(survivor, second)[0]
        state, reason, _ = _state(survivor, first)
        assert PurgeState.PURGED == state, (
            f"the version the crashed purge deleted was closed as {state}: {reason!r}"
        )

        # The dead replica's intent is reconciled with what CodeArtifact holds.
        survivor.auditor.reconcile(survivor.upstream, replica="crashed", settle_seconds=0)
        event = survivor.audit_store.event(dead.event_id)
        assert event is not None
        assert ["intent", "reconciliation"] == kinds(event)
        assert {"1.0.0": "deleted"} == event.entries[1].body["versions"]
        _verified(survivor)


# --- 3. two replicas on one PostgreSQL racing for the same due purges -----------------------

PACKAGES = ("alpha", "beta", "gamma")
VERSIONS = tuple(f"1.0.{i}" for i in range(10))


def test_two_replicas_on_postgres_purge_each_version_exactly_once(
    pg_schema: str,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    make_gateway: GatewayFactory,
) -> None:
    """Two replicas on one PostgreSQL store (their own replica names, advisory package locks)
    run purge passes at once, small batches each, over 30 due purges in three packages until
    neither finds work: every version is deleted once, the record holds one successful purge
    per version and no failure, the chain verifies."""
    url = pg_schema_url(pg_schema)
    for package in PACKAGES:
        publish(codeartifact, *VERSIONS, "9.9.9", package=package)
    recovery = {**RECOVERY, "worker_batch": 4}
    with (
        make_gateway(clock=clock, audit={"store": url, "replica": "a"}, recovery=recovery) as a,
        make_gateway(clock=clock, audit={"store": url, "replica": "b"}, recovery=recovery) as b,
    ):
        for index, package in enumerate(PACKAGES):
            delete(a if index % 2 else b, *VERSIONS, package=package)
        assert 30 == len(a.audit_store.pending_purges(PurgeQuery(limit=100)).purges)
        clock.advance(WINDOW + DAY)
        start = threading.Barrier(2)

        def drain(gateway: Gateway) -> list[PurgeRun]:
            start.wait(timeout=10)
            runs = []
            for _ in range(30):
                run = _worker(gateway).run_once()
                runs.append(run)
                if run.purged + run.cancelled + run.failed == 0:
                    break
            return runs

        with ThreadPoolExecutor(2) as pool:
            by_replica = list(pool.map(drain, (a, b)))
        runs = [run for passes in by_replica for run in passes]
        assert 30 == sum(run.purged for run in runs)
        assert all(sum(run.purged for run in passes) for passes in by_replica)  # both took part
        assert (0, 0, []) == (
            sum(run.cancelled for run in runs),
            sum(run.failed for run in runs),
            [error for run in runs for error in run.errors],
        )
        expected = Counter({(p, v): 1 for p in PACKAGES for v in VERSIONS})
        assert expected == deleted_upstream(emulator)
        assert expected == purged_in_record(a.audit_store)
        for outcome in purge_entries(a.audit_store):
            assert ("OK", {}) == (
                outcome["status"]["code"],
                outcome["response"]["failed_versions"],
            )
        assert {"a", "b"} == {o["replica"] for o in purge_entries(a.audit_store)}
        for package in PACKAGES:
            assert "Published" == status_of(codeartifact, "9.9.9", package)
            for version in VERSIONS:
                assert status_of(codeartifact, version, package) is None
        assert [] == pending(b)
        _verified(b)


# --- 4. a restore racing a purge ------------------------------------------------------------


@pytest.mark.parametrize("first", ["purge", "restore"])
def test_a_restore_racing_a_purge_one_wins_cleanly(
    first: str,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
    make_gateway: GatewayFactory,
) -> None:
    """A restore and the worker's pass run at once on a due purge; `first` reaches
    CodeArtifact first (held there by a latency fault) and holds the package's lock. The purge
    winning: the version is gone and the restore fails NOT_FOUND for it. The restore winning:
    the version is Published, the worker (which had leased the purge) deletes and records
    nothing, and the purge is closed as restored by the restore's event."""
    publish(codeartifact, "1.0.0", "1.1.0")
    with make_gateway(clock=clock, recovery=RECOVERY) as gateway:
        delete(gateway, "1.0.0")
        purge = _pending_purge(gateway, "1.0.0")
        clock.advance(WINDOW + DAY)
        held = "DeletePackageVersions" if first == "purge" else "UpdatePackageVersionsStatus"
        emulator.add_fault(FaultRule(operation=held, kind="latency", latency_seconds=1.0, count=1))
        with ThreadPoolExecutor(2) as pool:
            if first == "purge":
                purging = pool.submit(_worker(gateway).run_once)
                assert wait_for(lambda: not emulator.faults())
                restoring = pool.submit(restore, gateway, "1.0.0")
            else:
                restoring = pool.submit(restore, gateway, "1.0.0")
                assert wait_for(lambda: not emulator.faults())
                purging = pool.submit(_worker(gateway).run_once)
                # the worker leases the purge while the restore is still in CodeArtifact
                assert wait_for(lambda: lease_owner(gateway, purge.purge_id) == "test")
                assert not restoring.done()
            run, response = purging.result(timeout=20), restoring.result(timeout=20)

        restore_event = _audit_event(gateway, response.audit_event_id)
        recorded = json_format.MessageToDict(restore_event.entries[-1].body)
        state, _, closed_by = _state(gateway, purge)
        entries = [entry.kind for entry in restore_event.entries]
        if first == "purge":
            assert (1, 0, 0) == _counts(run)
            assert status_of(codeartifact, "1.0.0") is None
            failure = response.failed_versions["1.0.0"]
            assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND == failure.error_code
            assert not response.successful_versions
            assert ("OK", ["outcome"]) == (restore_event.status_code, entries)  # nothing sent
            assert (
                "PACKAGE_VERSION_ERROR_CODE_NOT_FOUND"
                == recorded["response"]["failed_versions"]["1.0.0"]["error_code"]
            )
            [outcome] = purge_entries(gateway.audit_store)
            assert (PurgeState.PURGED, outcome["event_id"]) == (state, closed_by)
            assert Counter({("tool", "1.0.0"): 1}) == purged_in_record(gateway.audit_store)
        else:
            assert "Published" == status_of(codeartifact, "1.0.0")
            restored = response.successful_versions["1.0.0"]
            assert pb.PACKAGE_VERSION_STATUS_PUBLISHED == restored.status
            assert ("OK", ["intent", "outcome"]) == (restore_event.status_code, entries)
            assert ["1.0.0"] == list(recorded["response"]["successful_versions"])
            assert [] == emulator.calls("DeletePackageVersions")
            assert [] == purge_entries(gateway.audit_store, "intent")  # no purge was sent
            # The restore keeps the package's lock until its outcome, which closes the purge,
            # is committed: the worker, next in line for the lock, finds the purge closed and
            # records nothing.
            assert (0, 0, 0) == (run.purged, run.failed, run.cancelled)
            assert [] == purge_entries(gateway.audit_store)
            assert (PurgeState.RESTORED, response.audit_event_id) == (state, closed_by)
        assert [] == pending(gateway)
        _verified(gateway)


# --- 5. re-published outside the gateway before the purge -----------------------------------


@pytest.mark.parametrize("then", ["published", "archived_again"])
def test_a_version_republished_outside_the_gateway_is_not_purged(
    then: str,
    recoverable_gateway: Gateway,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """After the gateway archived it, the version is deleted outside the gateway and published
    again (a new revision), and left Published or archived again outside the gateway (Archived,
    but not the archived revision). Its purge is cancelled when due, with the reason; nothing
    is deleted; a restore meanwhile is refused as MISMATCHED_REVISION."""
    gateway = recoverable_gateway
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(gateway, "1.0.0")
    purge = _pending_purge(gateway, "1.0.0")
    coordinates = {
        "domain": "demo",
        "repository": "prod-release",
        "format": "generic",
        "namespace": "acme",
        "package": "tool",
    }
    codeartifact.delete_package_versions(**coordinates, versions=["1.0.0"])
    publish(codeartifact, "1.0.0")
    if then == "archived_again":
        codeartifact.update_package_versions_status(
            **coordinates, versions=["1.0.0"], targetStatus="Archived"
        )
        refused = restore(gateway, "1.0.0").failed_versions["1.0.0"]
        assert pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_REVISION == refused.error_code
    revision = _revision(codeartifact, "1.0.0")
    assert purge.revision != revision
    emulator.clear_calls()

    clock.advance(WINDOW + DAY)
    assert (0, 1, 0) == _counts(_worker(gateway).run_once())
    status = "Archived" if then == "archived_again" else "Published"
    assert (status, revision) == (
        status_of(codeartifact, "1.0.0"),
        _revision(codeartifact, "1.0.0"),
    )
    assert [] == emulator.calls("DeletePackageVersions")
    assert [] == pending(gateway)
    state, reason, closed_by = _state(gateway, purge)
    assert PurgeState.CANCELLED == state
    assert ("revision" if then == "archived_again" else "Published") in reason
    [outcome] = purge_entries(gateway.audit_store)
    assert closed_by == outcome["event_id"]
    assert ("OK", {}) == (outcome["status"]["code"], outcome["response"]["successful_versions"])
    assert [] == purge_entries(gateway.audit_store, "intent")  # nothing was to be sent
    _verified(gateway)


def test_a_purge_of_a_package_gone_from_codeartifact_is_cancelled(
    recoverable_gateway: Gateway,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """The archived version's whole package is gone when its purge falls due (CodeArtifact
    removes a package with its last version; the emulator keeps empty packages, so the test
    removes it by resetting the emulator to its seed). There is nothing left to purge: the
    purge is cancelled as for a version deleted outside the gateway, not retried for ever."""
    gateway = recoverable_gateway
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(gateway, "1.0.0")
    purge = _pending_purge(gateway, "1.0.0")
    emulator.reset()
    assert status_of(codeartifact, "1.1.0") is None
    clock.advance(WINDOW + DAY)
    run = _worker(gateway).run_once()
    assert [] == pending(gateway), [(p.attempts, p.last_error) for p in pending(gateway)]
    assert (0, 1, 0) == _counts(run), run.errors
    state, reason, _ = _state(gateway, purge)
    assert PurgeState.CANCELLED == state
    assert "no longer exists" in reason
    assert [] == emulator.calls("DeletePackageVersions")
    _verified(gateway)


# --- 6. CodeArtifact throttling or failing during purges -----------------------------------


@pytest.mark.parametrize("kind", ["throttle", "internal"])
def test_a_purge_that_codeartifact_refuses_is_retried_after_a_growing_delay(
    kind: FaultKind,
    recoverable_gateway: Gateway,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """DeletePackageVersions throttled (beyond the adapter's retries) or failing with 500: the
    pass records the failure, the purge stays pending with its attempts counted and the error
    kept, due again after retry_seconds, then twice that; once CodeArtifact answers again a
    later pass purges it. Nothing is lost, nothing deleted twice."""
    gateway = recoverable_gateway
    worker = _worker(gateway)
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(gateway, "1.0.0")
    clock.advance(WINDOW + DAY)
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind=kind, retry_after_seconds=0)
    )
    for attempt, delay in ((1, RETRY_SECONDS), (2, 2 * RETRY_SECONDS)):
        run = worker.run_once()
        assert (0, 0, 1) == _counts(run)
        assert run.errors
        assert "Archived" == status_of(codeartifact, "1.0.0")
        [listed] = pending(gateway)
        assert (attempt, True) == (listed.attempts, bool(listed.last_error))
        purge = _pending_purge(gateway, "1.0.0")
        assert clock() + timedelta(seconds=delay) == purge.next_attempt_at
        assert NOTHING == _counts(worker.run_once())  # not due again yet
        clock.advance(timedelta(seconds=RETRY_SECONDS))
    assert NOTHING == _counts(worker.run_once())  # the second delay is twice the first
    assert "Archived" == status_of(codeartifact, "1.0.0")
    calls = emulator.calls("DeletePackageVersions")
    assert calls
    assert all(call.fault == kind and not call.applied for call in calls)

    emulator.clear_faults()
    clock.advance(timedelta(seconds=RETRY_SECONDS))
    assert (1, 0, 0) == _counts(worker.run_once())
    assert status_of(codeartifact, "1.0.0") is None
    assert [] == pending(gateway)
    assert PurgeState.PURGED == _state(gateway, purge)[0]
    outcomes = purge_entries(gateway.audit_store)
    assert 3 == len(outcomes)
    assert "OK" != outcomes[0]["status"]["code"]
    assert "OK" != outcomes[1]["status"]["code"]
    assert "OK" == outcomes[2]["status"]["code"]
    assert Counter({("tool", "1.0.0"): 1}) == purged_in_record(gateway.audit_store)
    assert Counter({("tool", "1.0.0"): 1}) == deleted_upstream(emulator)
    _verified(gateway)


def test_a_purge_that_timed_out_after_deleting_is_recorded_as_purged(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """DeletePackageVersions outlasts the purge's deadline (1 s here): the pass records the
    outcome as unknown and releases the purge, and CodeArtifact applies the delete
    afterwards. The next attempt re-reads the version before trying again and finds it gone:
    the gateway's own purge deleted it, so the purge is closed as purged (not cancelled as
    deleted outside the gateway), and nothing is sent again."""
    recovery = {**RECOVERY, "purge_deadline_seconds": 1.0}
    publish(codeartifact, "1.0.0", "1.1.0")
    with make_gateway(clock=clock, recovery=recovery) as gateway:
        worker = _worker(gateway)
        delete(gateway, "1.0.0")
        purge = _pending_purge(gateway, "1.0.0")
        clock.advance(WINDOW + DAY)
        emulator.add_fault(
            FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.5)
        )
        assert (0, 0, 1) == _counts(worker.run_once())
        assert wait_for(lambda: bool(deleted_upstream(emulator)))  # applied after the timeout
        emulator.clear_faults()
        assert status_of(codeartifact, "1.0.0") is None
        [failed] = purge_entries(gateway.audit_store)
        assert "OK" != failed["status"]["code"]

        clock.advance(timedelta(seconds=RETRY_SECONDS))
        run = worker.run_once()
        assert Counter({("tool", "1.0.0"): 1}) == deleted_upstream(emulator)
        assert 1 == len(emulator.calls("DeletePackageVersions"))  # not sent again
        assert [] == pending(gateway)
        state, reason, _ = _state(gateway, purge)
        assert PurgeState.PURGED == state, f"closed as {state}: {reason!r}"
        assert (0, []) == (run.failed, run.errors)
        _verified(gateway)


def test_a_purge_whose_answer_is_lost_is_recorded_as_purged_once(
    recoverable_gateway: Gateway,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """CodeArtifact deletes the version but the connection drops before its answer: the
    adapter's retry finds the version gone (NOT_FOUND), which the worker records as purged by
    the lost attempt; the purge is closed as purged, in one pass, with one deletion."""
    gateway = recoverable_gateway
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(gateway, "1.0.0")
    purge = _pending_purge(gateway, "1.0.0")
    clock.advance(WINDOW + DAY)
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="drop_after_apply", count=1)
    )
    assert (1, 0, 0) == _counts(_worker(gateway).run_once())
    assert status_of(codeartifact, "1.0.0") is None
    calls = emulator.calls("DeletePackageVersions")
    assert ["drop_after_apply", None] == [call.fault for call in calls]  # the retry deleted none
    assert PurgeState.PURGED == _state(gateway, purge)[0]
    [outcome] = purge_entries(gateway.audit_store)
    assert ["1.0.0"] == list(outcome["response"]["successful_versions"])
    assert "answer was lost" in outcome["upstream"]["versions"]["1.0.0"]["inferred"]
    _verified(gateway)


def test_a_disposal_whose_answer_is_lost_is_recorded_as_purged_once(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """As above with final_step dispose: CodeArtifact disposes the version, the answer is lost,
    and the retry (pinned to the archived revision and status Archived) is refused for the
    version the lost attempt disposed. The purge is done: it is recorded as purged, not
    cancelled as "not purged"."""
    publish(codeartifact, "1.0.0", "1.1.0")
    with make_gateway(clock=clock, recovery={**RECOVERY, "final_step": "dispose"}) as gateway:
        delete(gateway, "1.0.0")
        purge = _pending_purge(gateway, "1.0.0")
        clock.advance(WINDOW + DAY)
        emulator.add_fault(
            FaultRule(operation="DisposePackageVersions", kind="drop_after_apply", count=1)
        )
        run = _worker(gateway).run_once()
        assert "Disposed" == status_of(codeartifact, "1.0.0")
        calls = emulator.calls("DisposePackageVersions")
        assert ["drop_after_apply", None] == [call.fault for call in calls]
        [outcome] = purge_entries(gateway.audit_store)
        state, reason, _ = _state(gateway, purge)
        assert (PurgeState.PURGED, ["1.0.0"]) == (
            state,
            list(outcome["response"]["successful_versions"]),
        ), (reason, outcome["response"])
        assert (1, 0, 0) == _counts(run)
        _verified(gateway)


# --- 7. the audit store down when a purge is due --------------------------------------------


@pytest.mark.parametrize("when", ["at_claim", "after_claim"])
def test_nothing_is_purged_while_the_audit_store_is_down(
    when: str,
    emulator: Emulator,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """The SQLite store takes no writes (another connection holds its write lock) when a purge
    is due: before the pass leases it, or after (while it reads CodeArtifact, so its intent
    cannot be committed). Nothing is deleted while it is down (fail closed: no intent, no
    purge); once it is back, and the lease has run out, the version is purged once."""
    publish(codeartifact, "1.0.0", "1.1.0")
    with gateway_with_busy_timeout(emulator, clock, 0.2) as gateway:
        worker = _worker(gateway)
        delete(gateway, "1.0.0")
        purge = _pending_purge(gateway, "1.0.0")
        clock.advance(WINDOW + DAY)
        if when == "at_claim":
            with write_locked(gateway), pytest.raises(AuditUnavailableError):
                worker.run_once()
        else:
            emulator.add_fault(
                FaultRule(
                    operation="ListPackageVersions", kind="latency", latency_seconds=0.5, count=1
                )
            )
            with ThreadPoolExecutor(1) as pool:
                purging = pool.submit(worker.run_once)
                assert wait_for(lambda: not emulator.faults())  # leased; reading CodeArtifact
                with write_locked(gateway):
                    run = purging.result(timeout=20)
            assert (0, 0, 1) == _counts(run)
            assert any("audit" in error.lower() for error in run.errors), run.errors
        assert [] == emulator.calls("DeletePackageVersions")
        assert "Archived" == status_of(codeartifact, "1.0.0")
        assert ["1.0.0"] == [p.version for p in pending(gateway)]

        if when == "after_claim":  # the lease could not be released: it runs out
            assert NOTHING == _counts(worker.run_once())
            clock.advance(timedelta(seconds=LEASE_SECONDS))
        assert (1, 0, 0) == _counts(worker.run_once())
        assert status_of(codeartifact, "1.0.0") is None
        assert Counter({("tool", "1.0.0"): 1}) == deleted_upstream(emulator)
        assert PurgeState.PURGED == _state(gateway, purge)[0]
        _verified(gateway)
        assert [] == [
            body for body in purge_entries(gateway.audit_store) if body["status"]["code"] != "OK"
        ]
        assert EntryKind.OUTCOME.value == purge_entries(gateway.audit_store)[-1]["kind"]


@pytest.fixture
def recoverable_gateway(
    make_gateway: GatewayFactory,
    clock: Clock,
) -> Iterator[Gateway]:
    """A gateway with the fault tests' recovery settings on the test clock."""
    with make_gateway(clock=clock, recovery=RECOVERY) as gateway:
        yield gateway
