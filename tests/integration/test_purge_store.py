"""Pending purges on SQL beyond the contract: replicas claiming together, the lease's
independence from the chain's lock, effects committing (and rolling back) with their entry,
the writer's hot path, and migration 3 on a store that has entries.

test_audit_store_contract.py covers what every store answers; this covers what only a
database shows. PostgreSQL tests are skipped when it cannot be reached (unless CI is set).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pkggov_gateway.adapters.sql import SqlAuditStore, SqliteDialect, open_audit_store
from pkggov_gateway.adapters.sql.dialects import _ADVISORY_KEY
from pkggov_gateway.domain.audit import NewEntry, format_time
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.recovery import PendingPurge, PurgeClosure, PurgeEffects, PurgeState
from pkggov_gateway.tools import cli
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.integration.dialect_wrappers import DelegatingDialect, OldDialect

PKG = PackageRef("demo", "dev", PackageFormat.NPM, "left-pad")
NOW = datetime.now(UTC).replace(microsecond=0)


def body(event: str, kind: str = "outcome") -> dict[str, Any]:
    return {"event_id": event, "kind": kind, "time": format_time(datetime.now(UTC))}


def purge(n: int, *, due: datetime = NOW - timedelta(minutes=1)) -> PendingPurge:
    return PendingPurge(
        purge_id=f"purge-{n:04d}",
        package=PKG,
        version=f"1.0.{n}",
        revision=f"rev{n}",
        previous_status=VersionStatus.PUBLISHED,
        requester="alice",
        archive_event_id="archive",
        archived_at=NOW - timedelta(days=7),
        due_at=due,
    )


def schedule(store: SqlAuditStore, event: str, *purges: PendingPurge) -> None:
    store.append(NewEntry(body(event), PurgeEffects(schedule=purges)))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database (a SQLite file or a PostgreSQL schema) for the test's stores."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path}/audit.db"
    return pg_schema_url(request.getfixturevalue("pg_schema"))


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    return pg_schema_url(pg_schema)


@contextlib.contextmanager
def replicas(url: str, *names: str) -> Iterator[list[SqlAuditStore]]:
    """Stores on `url`, one per replica name, as replicas of one deployment open them."""
    stores: list[SqlAuditStore] = []
    try:
        for name in names:
            stores.append(open_audit_store(url, replica=name, heartbeat_seconds=3600))
        yield stores
    finally:
        for store in stores:
            store.close()


def leases(store: SqlAuditStore) -> dict[str, str | None]:
    """Every purge's lease owner, by purge id."""
    with store.dialect.reader() as conn:
        rows = conn.execute("SELECT purge_id, lease_owner FROM pending_purges").fetchall()
    return {str(purge_id): owner for purge_id, owner in rows}


# --- replicas claiming together ----------------------------------------------------------------


def test_replicas_claiming_together_lease_every_due_purge_exactly_once(url: str) -> None:
    """Two replicas, four threads each, claim small batches of 200 due purges until none is
    left: the claims are disjoint, together they are every purge, and each purge's row names
    the replica that claimed it. (SQLite: two stores on one file, as two processes would
    be; its single UPDATE takes the write lock, so claims take turns.)"""
    total, threads_per_replica = 200, 4
    with replicas(url, "a", "b") as (a, b):
        for start in range(0, total, 50):
            schedule(a, f"s{start}", *(purge(n) for n in range(start, start + 50)))
        claims: dict[str, list[list[str]]] = {"a": [], "b": []}
        failures: list[Exception] = []
        go = threading.Barrier(2 * threads_per_replica)

        def worker(store: SqlAuditStore) -> None:
            try:
                go.wait()
                while True:
                    batch = store.claim_due_purges(NOW, NOW + timedelta(hours=1), 7)
                    if not batch:
                        return
                    claims[store.replica].append([p.purge_id for p in batch])
                    time.sleep(0.002)  # the purges' work: SQLite's busy waiters get a turn
            except Exception as err:  # noqa: BLE001 - the test reports it
                failures.append(err)

        threads = [
            threading.Thread(target=worker, args=(store,))
            for store in (a, b)
            for _ in range(threads_per_replica)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures
        assert not any(thread.is_alive() for thread in threads)
        owners = leases(a)
    claimed = {name: [i for batch in batches for i in batch] for name, batches in claims.items()}
    everything = claimed["a"] + claimed["b"]
    assert len(everything) == len(set(everything))  # nothing leased twice
    assert {purge(n).purge_id for n in range(total)} == set(everything)
    assert all(len(batch) <= 7 for batches in claims.values() for batch in batches)
    assert claimed["a"], "replica a claimed nothing: the test did not race"
    assert claimed["b"], "replica b claimed nothing: the test did not race"
    assert dict.fromkeys(claimed["a"], "a") | dict.fromkeys(claimed["b"], "b") == owners


def test_a_lease_that_ended_lets_another_replica_claim_the_purge(url: str) -> None:
    with replicas(url, "a", "b") as (a, b):
        schedule(a, "s1", purge(1))
        assert ["purge-0001"] == [p.purge_id for p in a.claim_due_purges(NOW, NOW, 5)]
        assert [] == b.claim_due_purges(NOW - timedelta(seconds=1), NOW, 5)
        assert ["purge-0001"] == [p.purge_id for p in b.claim_due_purges(NOW, NOW, 5)]
        assert {"purge-0001": "b"} == leases(a)
        b.release_purge("purge-0001", retry_at=NOW + timedelta(minutes=5), error="boom")
        assert {"purge-0001": None} == leases(a)


def test_a_claim_skips_purges_another_transaction_has_locked(pg_url: str) -> None:
    """PostgreSQL: rows locked by another replica's claim in flight are skipped at once (FOR
    UPDATE SKIP LOCKED), not waited for and not leased twice."""
    with replicas(pg_url, "a") as (a,):
        schedule(a, "s1", purge(1), purge(2), purge(3))
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT 1 FROM pending_purges WHERE purge_id = 'purge-0001' FOR UPDATE")
            started = time.monotonic()
            claimed = a.claim_due_purges(NOW, NOW + timedelta(minutes=5), 10)
            assert time.monotonic() - started < 2
            other.execute("ROLLBACK")
        assert ["purge-0002", "purge-0003"] == [p.purge_id for p in claimed]
        assert ["purge-0001"] == [
            p.purge_id for p in a.claim_due_purges(NOW, NOW + timedelta(minutes=5), 10)
        ]


def test_the_lease_and_the_reads_do_not_wait_for_the_chain_lock(pg_url: str) -> None:
    """PostgreSQL: while another replica holds the chain's lock (a long group commit), the
    worker still claims, releases and reads purges; only appends wait."""
    with replicas(pg_url, "a") as (a,):
        schedule(a, "s1", purge(1))
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            started = time.monotonic()
            assert 1 == len(a.claim_due_purges(NOW, NOW + timedelta(minutes=5), 10))
            a.release_purge("purge-0001", retry_at=NOW, error="boom")
            assert 1 == a.purge_stats(NOW).pending
            assert 1 == len(a.pending_for(PKG, ["1.0.1"]))
            assert time.monotonic() - started < 2
            other.execute("ROLLBACK")


# --- effects commit with their entry -----------------------------------------------------------


class _Recording:
    """A connection that records the statements it runs and can fail its next COMMIT."""

    def __init__(self, inner: Any, log: list[str], fail_commits: list[int]) -> None:
        self._inner = inner
        self._log = log
        self._fail_commits = fail_commits

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._log.append(sql)
        if sql == "COMMIT" and self._fail_commits and self._fail_commits[0] > 0:
            self._fail_commits[0] -= 1
            self._inner.execute("ROLLBACK")
            raise OSError("the commit was lost")
        return self._inner.execute(sql, params)

    def close(self) -> None:
        self._inner.close()


class _RecordingDialect(DelegatingDialect):
    """SQLite, with the writer's connections recording their statements."""

    def __init__(self, inner: SqliteDialect) -> None:
        super().__init__(inner)
        self.statements: list[str] = []
        self.fail_commits = [0]

    def connect(self) -> Any:
        return _Recording(self.inner.connect(), self.statements, self.fail_commits)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[SqlAuditStore, _RecordingDialect]]:
    dialect = _RecordingDialect(SqliteDialect(tmp_path / "audit.db"))
    store = SqlAuditStore(dialect, heartbeat_seconds=3600, retry_seconds=0.05)
    try:
        yield store, dialect
    finally:
        store.close()


def test_an_entry_without_effects_costs_no_statement_more(
    recorded: tuple[SqlAuditStore, _RecordingDialect],
) -> None:
    """The writer's hot path: no statement touches the purges for an entry without effects;
    an entry with effects runs its closes, then its schedules, before the COMMIT."""
    store, dialect = recorded
    dialect.statements.clear()  # the migrations'
    store.append(NewEntry(body("e1", "intent")))
    store.append(NewEntry(body("e1")))
    assert not [s for s in dialect.statements if "pending_purges" in s]
    dialect.statements.clear()
    closing = PurgeClosure(PKG, "1.0.1", PurgeState.CANCELLED, "re-archived")
    store.append(NewEntry(body("e2"), PurgeEffects(schedule=(purge(1),), close=(closing,))))
    purges = [i for i, s in enumerate(dialect.statements) if "pending_purges" in s]
    assert 2 == len(purges)
    assert dialect.statements[purges[0]].startswith("UPDATE pending_purges SET state")
    assert dialect.statements[purges[1]].startswith("INSERT INTO pending_purges")
    assert purges[1] < dialect.statements.index("COMMIT")


def test_effects_are_rolled_back_with_an_entry_that_did_not_commit(
    recorded: tuple[SqlAuditStore, _RecordingDialect],
) -> None:
    """A failed commit loses the entry and its effects together; a durable entry retried
    after its failed commit applies them once, when it commits."""
    store, dialect = recorded
    dialect.fail_commits[0] = 1
    with pytest.raises(AuditUnavailableError):
        schedule(store, "e1", purge(1))
    assert None is store.event("e1")
    assert {} == store.pending_for(PKG, ["1.0.1"])
    # The writer proves the store takes writes again (a heartbeat commit) before the next
    # failure is armed: otherwise that heartbeat could be the commit that fails.
    deadline = time.monotonic() + 10
    while not store.healthy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.healthy()
    dialect.fail_commits[0] = 1
    entry = NewEntry(body("e2"), PurgeEffects(schedule=(purge(2),)))
    with pytest.raises(AuditUnavailableError):
        store.append(entry, durable=True)  # its caller is told; the writer retries it
    deadline = time.monotonic() + 10
    while store.event("e2") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ["purge-0002"] == [p.purge_id for p in store.pending_for(PKG, ["1.0.2"]).values()]
    assert store.healthy()


LEASE = timedelta(minutes=5)


def test_text_with_nul_is_stored_without_it(url: str) -> None:
    """PostgreSQL's text cannot hold NUL: a purge naming one is stored with U+FFFD (the
    writer's batch must not fail on it), and found by the same spelling."""
    odd = replace(purge(1), version="1.0\x00x", last_error="a\x00b")
    with replicas(url, "a") as (a,):
        schedule(a, "s1", odd)
        found = a.pending_for(PKG, ["1.0\x00x"])
        assert ["1.0\ufffdx"] == list(found)
        assert [odd.purge_id] == [
            p.purge_id for p in a.claim_due_purges(odd.due_at, odd.due_at + LEASE, 10)
        ]
        a.release_purge(odd.purge_id, retry_at=NOW, error="bad\x00error")
        assert "bad\ufffderror" == a.pending_for(PKG, ["1.0\x00x"])["1.0\ufffdx"].last_error
        assert a.healthy()


# --- migration 3 -------------------------------------------------------------------------------


def test_a_store_with_entries_migrates_to_pending_purges_and_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing store (schema 2, with entries) gains the table when a new gateway opens
    it; its chain, and `pkggov-admin audit verify`, are unaffected by purges."""
    path = tmp_path / "audit.db"
    old = SqlAuditStore(OldDialect(SqliteDialect(path), last=2), heartbeat_seconds=3600)
    old.append(NewEntry(body("e1", "intent")))
    old.append(NewEntry(body("e1")))
    old.close()
    with replicas(f"sqlite:{path}", "a") as (a,):
        schedule(a, "s1", purge(1), purge(2))
        a.append(
            NewEntry(
                body("w1"),
                PurgeEffects(close=(PurgeClosure(PKG, "1.0.1", PurgeState.PURGED, "purged"),)),
            )
        )
        with a.dialect.reader() as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM pkggov_schema_migrations")]
        assert [version for version, _ in a.dialect.migrations()] == sorted(versions)
        report = verify(a.iter_rows())
        assert (True, 4) == (report.ok, report.entries)
    capsys.readouterr()  # what the stores logged
    assert 0 == cli.main(["audit", "verify", "--store", f"sqlite:{path}", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert (True, 4) == (printed["ok"], printed["entries"])


def test_a_late_release_leaves_another_replicas_lease_alone(url: str) -> None:
    """Replica a's lease expires and b takes the purge; a's late release (its attempt failed
    after all) neither counts an attempt nor ends b's lease."""
    with replicas(url, "a", "b") as (a, b):
        schedule(a, "s1", purge(1))
        [leased] = a.claim_due_purges(NOW, NOW + LEASE, 10)
        later = NOW + LEASE + timedelta(seconds=1)
        assert [leased.purge_id] == [
            p.purge_id for p in b.claim_due_purges(later, later + LEASE, 10)
        ]
        a.release_purge(leased.purge_id, retry_at=later, error="late")
        found = b.pending_for(PKG, [leased.version])[leased.version]
        assert (0, "") == (found.attempts, found.last_error)
        assert [] == a.claim_due_purges(later, later + LEASE, 10)  # still b's
        b.release_purge(leased.purge_id, retry_at=later, error="b failed")
        assert 1 == b.pending_for(PKG, [leased.version])[leased.version].attempts
