"""The group-commit writer's leader/follower commits: callers commit each other's entries, no
entry is lost or committed twice, and a durable entry whose commit failed is retried."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pkggov_gateway.adapters.sql import SqlAuditStore, SqliteDialect, open_audit_store
from pkggov_gateway.domain.audit import AppendGuard, NewEntry, RequestIdClaimed, StoredEntry
from pkggov_gateway.ports import NullMetrics
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.integration.test_purge_store import body


class _Commits(NullMetrics):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.waits: list[float] = []
        self.holds: list[float] = []

    def audit_group_commit(self, entries: int, wait_seconds: float, hold_seconds: float) -> None:
        self.batches.append(entries)
        self.waits.append(wait_seconds)
        self.holds.append(hold_seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path}/audit.db"
    return pg_schema_url(request.getfixturevalue("pg_schema"))


def _append_from_threads(
    stores: list[SqlAuditStore], threads: int, per_thread: int
) -> list[StoredEntry]:
    stored: list[StoredEntry] = []
    errors: list[BaseException] = []
    guard = threading.Lock()
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        store = stores[n % len(stores)]
        start.wait()
        for i in range(per_thread):
            try:
                entry = store.append(NewEntry(body(f"t{n}-{i}")), durable=bool(i % 2))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return
            with guard:
                stored.append(entry)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [] == errors
    return stored


def _rows(store: SqlAuditStore) -> list[tuple[Any, ...]]:
    return list(store.iter_rows())


def test_concurrent_callers_commit_every_entry_once_in_one_chain(url: str) -> None:
    """32 threads on two stores of one database (two replicas), batches of at most 4 (so that
    a leader whose entry did not fit leads again): every entry is committed exactly once,
    each caller gets its own entry back, and the chain verifies."""
    metrics = _Commits()
    stores = [
        open_audit_store(url, replica=name, heartbeat_seconds=3600, max_batch=4, metrics=metrics)
        for name in ("a", "b")
    ]
    try:
        stored = _append_from_threads(stores, threads=32, per_thread=20)
        rows = _rows(stores[0])
    finally:
        for store in stores:
            store.close()
    assert 640 == len(stored)
    assert {f"t{n}-{i}" for n in range(32) for i in range(20)} == {s.event_id for s in stored}
    assert len({s.seq for s in stored}) == 640  # each caller got its own entry
    counted = Counter(str(row[1]) for row in rows)  # event_id column
    assert all(n == 1 for n in counted.values())
    assert 640 == len(rows)
    report = verify(rows, workers=0)
    assert report.ok, report
    assert 640 == sum(metrics.batches)
    assert max(metrics.batches) <= 4
    assert any(n > 1 for n in metrics.batches)  # concurrent callers shared commits
    assert all(w >= 0 for w in metrics.waits)
    assert all(h >= 0 for h in metrics.holds)


def test_request_ids_claimed_at_once_in_shared_batches_go_to_one_call_each(url: str) -> None:
    """16 threads on two replicas race to claim the same 8 request ids, with a claim of their
    own between each (batches of at most 8, so batches mix new claims, claims stored before
    and claims made earlier in the same batch): each request id goes to one intent, every
    other caller is refused naming that intent's event, and every own claim commits."""
    stores = [
        open_audit_store(url, replica=name, heartbeat_seconds=3600, max_batch=8)
        for name in ("a", "b")
    ]
    won: dict[str, str] = {}
    refused: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def claim(store: SqlAuditStore, event: str, request_id: str) -> None:
        entry = {**body(event, "intent"), "principal": {"id": "alice"}, "request_id": request_id}
        try:
            store.append(NewEntry(entry), guard=AppendGuard(request_id=request_id))
        except RequestIdClaimed as taken:
            with lock:
                refused.append((request_id, taken.event.event_id))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        else:
            with lock:
                assert request_id not in won
                won[request_id] = event

    def work(n: int) -> None:
        start.wait()
        for i in range(8):
            claim(stores[n % 2], f"t{n}-{i}", f"shared-{i}")
            claim(stores[n % 2], f"t{n}-own-{i}", f"own-{n}-{i}")

    try:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        rows = _rows(stores[0])
    finally:
        for store in stores:
            store.close()
    assert [] == errors
    assert {f"shared-{i}" for i in range(8)} | {
        f"own-{n}-{i}" for n in range(16) for i in range(8)
    } == set(won)
    assert 8 * 15 == len(refused)
    assert all(won[request_id] == event for request_id, event in refused)
    assert 8 + 16 * 8 == len(rows)
    report = verify(rows, workers=0)
    assert report.ok, report


def test_a_lone_caller_commits_on_its_own_thread(tmp_path: Path) -> None:
    """With no commit under way the caller leads: its entry is committed by its own thread
    (no hand-off to another one), one entry per commit."""
    committed_on: list[str] = []
    store = open_audit_store(
        f"sqlite:{tmp_path}/audit.db",
        heartbeat_seconds=3600,
        on_commit=lambda _entry: committed_on.append(threading.current_thread().name),
    )
    try:
        for i in range(5):
            store.append(NewEntry(body(f"e{i}")))
    finally:
        store.close()
    assert [threading.current_thread().name] * 5 == committed_on


def test_sqlite_begin_locked_waits_for_another_process_then_times_out(
    tmp_path: Path,
) -> None:
    """Another connection (as another worker process) holds the write lock for 50 ms:
    begin_locked waits for it (polling; how soon is for make bench, not a test) and takes it;
    held past the busy timeout, it fails as SQLite would (database is locked)."""
    dialect = SqliteDialect(tmp_path / "audit.db", busy_timeout_seconds=0.3)
    holder, waiter = dialect.connect(), dialect.connect()
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.05, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    dialect.begin_locked(waiter)
    waited = time.monotonic() - started
    waiter.execute("COMMIT")
    assert waited >= 0.04
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        dialect.begin_locked(waiter)
    holder.execute("COMMIT")
    holder.close()
    waiter.close()
