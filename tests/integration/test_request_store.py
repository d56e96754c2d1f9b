"""Deletion requests on SQL beyond the contract: replicas racing to execute or vote, the
writer's hot path, effects committing (and rolling back) with their entry, what the rows hold,
the notifier's lease across replicas, tampering in the database, and migration 4 on a store
that has entries.

test_audit_store_contract.py covers what every store answers; this covers what only a
database shows. PostgreSQL tests are skipped when it cannot be reached (unless CI is set).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pkggov_gateway.adapters.sql import Dialect, SqlAuditStore, SqliteDialect, open_audit_store
from pkggov_gateway.adapters.sql.dialects import _ADVISORY_KEY
from pkggov_gateway.domain.approvals import (
    ApprovalEffects,
    DeletionPlan,
    DeletionRequestQuery,
    DeletionRequestRecord,
    NewVote,
    PlannedItem,
    RequestGuard,
    RequestState,
    Transition,
    Vote,
    WebhookEvent,
)
from pkggov_gateway.domain.audit import AppendGuard, NewEntry, StoredEntry, format_time
from pkggov_gateway.domain.errors import (
    AlreadyVotedError,
    AuditUnavailableError,
    PlanTamperedError,
    RequestNotPendingError,
)
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.recovery import PendingPurge, PurgeEffects, PurgeQuery
from pkggov_gateway.tools import cli
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.integration.dialect_wrappers import OldDialect
from tests.integration.test_purge_store import _RecordingDialect

PKG = PackageRef("demo", "prod-eu", PackageFormat.NPM, "left-pad")
NOW = datetime.now(UTC).replace(microsecond=0)
PENDING, EXECUTING = RequestState.PENDING, RequestState.EXECUTING
LEASE = timedelta(minutes=5)


def body(event: str, kind: str = "outcome") -> dict[str, Any]:
    return {"event_id": event, "kind": kind, "time": format_time(datetime.now(UTC))}


def plan(*versions: str) -> DeletionPlan:
    names = versions or ("1.0.0",)
    return DeletionPlan(
        package=PKG,
        versions=tuple(PlannedItem(v, f"r-{v}", VersionStatus.PUBLISHED, False) for v in names),
        latest="2.0.0",
        version_count=len(names) + 1,
        requested=names,
        justification="CVE-2030-0001",
        expected_status=VersionStatus.PUBLISHED,
        allow_partial=False,
        purge_now=False,
    )


def request(request_id: str, *, requester: str = "alice") -> DeletionRequestRecord:
    planned = plan()
    return DeletionRequestRecord(
        request_id=request_id,
        requester=requester,
        requester_person=requester,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=72),
        state=PENDING,
        plan=planned,
        plan_hash=planned.digest(),
        required_by=("prod-needs-release-admin",),
        event_id=f"create-{request_id}",
    )


def create(store: SqlAuditStore, event: str, *records: DeletionRequestRecord) -> StoredEntry:
    return store.append(NewEntry(body(event), approvals=ApprovalEffects(create=records)))


def ballot(approver: str, person: str | None = None) -> Vote:
    return Vote(approver, person or approver, True, ("release-admins",), "ok", NOW, approver)


def cast(store: SqlAuditStore, event: str, request_id: str, vote: Vote) -> StoredEntry:
    """Append event `event`'s outcome casting `vote`, guarded as a vote is: the request must
    be pending and the person must not have voted."""
    guard = RequestGuard(request_id, (PENDING,), NOW, voter=vote.person)
    entry = NewEntry(body(event), approvals=ApprovalEffects(votes=(NewVote(request_id, vote),)))
    return store.append(entry, guard=AppendGuard(deletion_request=guard))


def claim(store: SqlAuditStore, event: str, request_id: str) -> StoredEntry:
    """Append an execution's intent claiming `request_id` (PENDING -> EXECUTING), guarded:
    the request must be pending."""
    entry = NewEntry(
        body(event, "intent"),
        approvals=ApprovalEffects(
            transitions=(Transition(request_id, (PENDING,), EXECUTING, "executing"),)
        ),
    )
    guard = RequestGuard(request_id, (PENDING,), NOW)
    return store.append(entry, guard=AppendGuard(deletion_request=guard))


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


def race(*calls: Callable[[], object]) -> list[object]:
    """Run `calls` together (released at once by a barrier); each one's result or error."""
    results: list[object] = [None] * len(calls)
    go = threading.Barrier(len(calls))

    def run(i: int) -> None:
        go.wait()
        try:
            results[i] = calls[i]()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def column(store: SqlAuditStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with store.dialect.reader() as conn:
        return [tuple(row) for row in conn.execute(store.dialect.sql(sql), params).fetchall()]


# --- replicas racing ---------------------------------------------------------------------------


def test_two_replicas_executing_one_request_run_it_once(url: str) -> None:
    """Each replica appends its execution's intent claiming the request (PENDING ->
    EXECUTING, guarded by PENDING) at the same moment: exactly one commits; the other is
    RequestNotPendingError naming the request and its state, and its intent is not stored.
    Ten requests, so that the replicas really race."""
    with replicas(url, "a", "b") as (a, b):
        ids = [f"req-{n}" for n in range(10)]
        create(a, "c1", *(request(i) for i in ids))
        for request_id in ids:
            results = race(
                partial(claim, a, f"exec-a-{request_id}", request_id),
                partial(claim, b, f"exec-b-{request_id}", request_id),
            )
            won = [r for r in results if isinstance(r, StoredEntry)]
            lost = [r for r in results if isinstance(r, RequestNotPendingError)]
            assert (1, 1) == (len(won), len(lost)), results
            assert request_id == lost[0].request_id
            assert f"deletion request {request_id} is executing" in lost[0].message
            loser = "b" if won[0].event_id.startswith("exec-a") else "a"
            assert None is a.event(f"exec-{loser}-{request_id}")
            record = b.deletion_request(request_id)
            assert record is not None
            assert EXECUTING is record.state
        assert verify(a.iter_rows()).ok


def test_two_replicas_casting_one_persons_vote_count_it_once(url: str) -> None:
    """The same person's vote (two identity forms) reaching two replicas at once: one is
    stored, the other is AlreadyVotedError; other people's votes at either replica each
    count once."""
    with replicas(url, "a", "b") as (a, b):
        create(a, "c1", request("r1"))
        for n in range(5):
            cert, dev = ballot(f"cert-{n}", f"person-{n}"), ballot(f"dev-{n}", f"person-{n}")
            results = race(
                partial(cast, a, f"va-{n}", "r1", cert),
                partial(cast, b, f"vb-{n}", "r1", dev),
            )
            assert 1 == sum(isinstance(r, StoredEntry) for r in results), results
            assert 1 == sum(isinstance(r, AlreadyVotedError) for r in results), results
        record = a.deletion_request("r1")
        assert record is not None
        assert [f"person-{n}" for n in range(5)] == [v.person for v in record.votes]
        assert 5 == len(record.approvers())
        rows = column(a, "SELECT count(*) FROM deletion_request_votes WHERE request_id = ?", "r1")
        assert [(5,)] == rows


# --- the writer --------------------------------------------------------------------------------

_TABLES = ("deletion_requests", "deletion_request_votes", "webhook_outbox")


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[SqlAuditStore, _RecordingDialect]]:
    dialect = _RecordingDialect(SqliteDialect(tmp_path / "audit.db"))
    store = SqlAuditStore(dialect, heartbeat_seconds=3600, retry_seconds=0.05)
    try:
        yield store, dialect
    finally:
        store.close()


def test_an_entry_without_approvals_costs_no_statement_more(
    recorded: tuple[SqlAuditStore, _RecordingDialect],
) -> None:
    """The writer's hot path: no statement touches the requests' tables for an entry
    without approval effects or guard; one with all four kinds runs them in order
    (creations, votes, transitions, notifications) before the COMMIT."""
    store, dialect = recorded
    dialect.statements.clear()  # the migrations'
    store.append(NewEntry(body("e1", "intent")))
    store.append(NewEntry(body("e1")))
    assert not [s for s in dialect.statements if any(t in s for t in _TABLES)]
    dialect.statements.clear()
    effects = ApprovalEffects(
        create=(request("r1"),),
        votes=(NewVote("r1", ballot("bob")),),
        transitions=(Transition("r1", (PENDING,), RequestState.CANCELLED, "cancelled"),),
        notify=(WebhookEvent("w1", "cancelled", "r1", {}, NOW),),
    )
    store.append(NewEntry(body("e2"), approvals=effects))
    touching = [s for s in dialect.statements if any(t in s for t in _TABLES)]
    assert [
        "INSERT INTO deletion_requests",
        "INSERT INTO deletion_request_votes",
        "UPDATE deletion_requests SET",
        "INSERT INTO webhook_outbox",
    ] == [" ".join(s.split()[:3]) for s in touching]
    assert dialect.statements.index(touching[-1]) < dialect.statements.index("COMMIT")


def test_approvals_are_rolled_back_with_an_entry_that_did_not_commit(
    recorded: tuple[SqlAuditStore, _RecordingDialect],
) -> None:
    """A failed commit loses the entry and its approvals together; a durable entry retried
    after its failed commit applies them once, when it commits."""
    store, dialect = recorded
    dialect.fail_commits[0] = 1
    with pytest.raises(AuditUnavailableError):
        create(store, "e1", request("r1"))
    assert (None, None) == (store.event("e1"), store.deletion_request("r1"))
    create(store, "e2", request("r1"))
    dialect.fail_commits[0] = 1
    cast = NewEntry(body("v1"), approvals=ApprovalEffects(votes=(NewVote("r1", ballot("bob")),)))
    with pytest.raises(AuditUnavailableError):
        store.append(cast, durable=True)  # its caller is told; the writer retries it
    deadline = time.monotonic() + 10
    while store.event("v1") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    record = store.deletion_request("r1")
    assert record is not None
    assert ["bob"] == [v.approver for v in record.votes]
    assert store.healthy()


def test_the_rows_hold_the_canonical_plan_the_closure_and_the_votes_order(url: str) -> None:
    """`plan` is the body's canonical JSON (what plan_hash hashes); the listing's columns
    are the plan's package; a final transition records the entry's time and event; votes
    are ordered by the entry that cast them."""
    with replicas(url, "a") as (a,):
        sent = request("r1")
        create(a, "c1", sent)
        [(text, digest, domain, repository, fmt, namespace, package)] = column(
            a,
            "SELECT plan, plan_hash, domain, repository, format, namespace, package "
            "FROM deletion_requests",
        )
        assert (
            json.dumps(sent.plan.body(), sort_keys=True, separators=(",", ":")),
            sent.plan.digest(),
        ) == (text, digest)
        assert ("demo", "prod-eu", "npm", None, "left-pad") == (
            domain,
            repository,
            fmt,
            namespace,
            package,
        )
        cast(a, "v1", "r1", ballot("zed"))
        cast(a, "v2", "r1", ballot("amy"))
        record = a.deletion_request("r1")
        assert record is not None
        assert ["zed", "amy"] == [v.approver for v in record.votes]  # cast, not by name
        claimed = claim(a, "x1", "r1")
        assert [(None, None, None)] == column(
            a, "SELECT closed_at, closed_reason, closed_event_id FROM deletion_requests"
        )
        done = a.append(
            NewEntry(
                body("x1"),
                approvals=ApprovalEffects(
                    transitions=(Transition("r1", (EXECUTING,), RequestState.EXECUTED, "ok"),)
                ),
            )
        )
        assert claimed.seq < done.seq
        assert [(done.time, "ok", "x1")] == column(
            a, "SELECT closed_at, closed_reason, closed_event_id FROM deletion_requests"
        )


def test_text_with_nul_is_stored_without_it(url: str) -> None:
    """PostgreSQL's text cannot hold NUL: a request, a vote and a notification naming one
    are stored with U+FFFD in their columns (the writer's batch must not fail on it); JSON
    columns keep it escaped."""
    with replicas(url, "a") as (a,):
        odd = replace(request("r\x001"), requester="al\x00ice")
        create(a, "c1", odd)
        record = a.deletion_request("r\x001")
        assert record is not None
        assert ("r\ufffd1", "al\ufffdice") == (record.request_id, record.requester)
        assert [record.request_id] == [
            r.request_id
            for r in a.deletion_requests(DeletionRequestQuery(requester="al\x00ice")).requests
        ]
        cast(a, "v1", "r\x001", replace(ballot("b\x00b"), reason="x\x00y"))
        hook = WebhookEvent("w\x001", "created", "r\x001", {"note": "a\x00b"}, NOW)
        a.append(NewEntry(body("n1"), approvals=ApprovalEffects(notify=(hook,))))
        [(event, _)] = a.claim_webhooks(NOW, NOW + LEASE, 10)
        assert ("w\ufffd1", {"note": "a\x00b"}) == (event.event_id, event.payload)
        record = a.deletion_request("r\x001")
        assert record is not None
        assert [("b\ufffdb", "x\ufffdy")] == [(v.person, v.reason) for v in record.votes]
        assert a.healthy()


# --- tampering in the database -----------------------------------------------------------------


def test_a_state_changed_in_the_database_is_refused_and_jams_nothing(url: str) -> None:
    """A row whose state is none the gateway knows: its read is PlanTamperedError, a guard
    naming it refuses the entry (RequestNotPendingError naming the state), and the writer
    goes on."""
    with replicas(url, "a") as (a,):
        create(a, "c1", request("r1"))
        with a.dialect.reader() as conn:
            conn.execute("UPDATE deletion_requests SET state = 'approved-by-me'")
        with pytest.raises(PlanTamperedError, match="r1"):
            a.deletion_request("r1")
        with pytest.raises(RequestNotPendingError, match="r1 is approved-by-me"):
            claim(a, "x1", "r1")
        assert 2 == create(a, "c2", request("r2")).seq
        assert a.healthy()


# --- the notifier's lease ----------------------------------------------------------------------


def hooks(store: SqlAuditStore, event: str, count: int, start: int = 0) -> None:
    events = tuple(
        WebhookEvent(f"hook-{n:04d}", "created", "r1", {"n": n}, NOW - timedelta(seconds=n))
        for n in range(start, start + count)
    )
    store.append(NewEntry(body(event), approvals=ApprovalEffects(notify=events)))


def test_replicas_claiming_notifications_together_lease_each_once(url: str) -> None:
    """Two replicas, three threads each, claim small batches of 120 notifications until none
    is left: the claims are disjoint and together every one."""
    total = 120
    with replicas(url, "a", "b") as (a, b):
        for start in range(0, total, 40):
            hooks(a, f"n{start}", 40, start)
        claims: dict[str, list[str]] = {"a": [], "b": []}
        failures: list[Exception] = []
        go = threading.Barrier(6)

        def worker(store: SqlAuditStore) -> None:
            try:
                go.wait()
                while batch := store.claim_webhooks(NOW, NOW + timedelta(hours=1), 5):
                    claims[store.replica].extend(event.event_id for event, _ in batch)
                    time.sleep(0.002)
            except Exception as err:  # noqa: BLE001 - the test reports it
                failures.append(err)

        threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures
        everything = claims["a"] + claims["b"]
        assert len(everything) == len(set(everything)) == total
        assert claims["a"]
        assert claims["b"]
        owners = dict(column(a, "SELECT event_id, lease_owner FROM webhook_outbox"))
        assert dict.fromkeys(claims["a"], "a") | dict.fromkeys(claims["b"], "b") == owners


def test_a_late_failure_leaves_another_replicas_lease_alone(url: str) -> None:
    """Replica a's lease ends and b claims the notification; a's late failure neither counts
    an attempt nor ends b's lease; b's failure does."""
    with replicas(url, "a", "b") as (a, b):
        hooks(a, "n1", 1)
        [(event, _)] = a.claim_webhooks(NOW, NOW + LEASE, 10)
        later = NOW + LEASE + timedelta(seconds=1)
        assert [(event, 0)] == b.claim_webhooks(later, later + LEASE, 10)
        a.webhook_failed(event.event_id, retry_at=later, error="late")
        record = b.webhook_record(event.event_id)
        assert record is not None
        assert (0, "", "b") == (record.attempts, record.last_error, record.lease_owner)
        assert [] == a.claim_webhooks(later, later + LEASE, 10)  # still b's
        b.webhook_failed(event.event_id, retry_at=later, error="b failed")
        record = b.webhook_record(event.event_id)
        assert record is not None
        assert (1, "b failed", None) == (record.attempts, record.last_error, record.lease_owner)
        assert [(event, 1)] == a.claim_webhooks(later, later + LEASE, 10)


def test_a_claim_skips_notifications_another_transaction_has_locked(pg_url: str) -> None:
    """PostgreSQL: rows locked by another replica's claim in flight are skipped at once (FOR
    UPDATE SKIP LOCKED), not waited for and not leased twice."""
    with replicas(pg_url, "a") as (a,):
        hooks(a, "n1", 3)
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT 1 FROM webhook_outbox WHERE event_id = 'hook-0002' FOR UPDATE")
            started = time.monotonic()
            claimed = a.claim_webhooks(NOW, NOW + LEASE, 10)
            assert time.monotonic() - started < 2
            other.execute("ROLLBACK")
        assert ["hook-0001", "hook-0000"] == [event.event_id for event, _ in claimed]
        assert ["hook-0002"] == [e.event_id for e, _ in a.claim_webhooks(NOW, NOW + LEASE, 10)]


def test_the_lease_and_the_reads_do_not_wait_for_the_chain_lock(pg_url: str) -> None:
    """PostgreSQL: while another replica holds the chain's lock (a long group commit), the
    notifier still claims, fails and delivers, and requests are read; only appends wait."""
    with replicas(pg_url, "a") as (a,):
        create(a, "c1", request("r1"))
        hooks(a, "n1", 2)
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            started = time.monotonic()
            assert 2 == len(a.claim_webhooks(NOW, NOW + LEASE, 10))
            a.webhook_failed("hook-0000", retry_at=NOW, error="boom")
            a.webhook_delivered("hook-0001")
            assert a.deletion_request("r1") is not None
            assert 1 == len(a.deletion_requests(DeletionRequestQuery()).requests)
            assert [] == a.expired_requests(NOW, 10)
            assert time.monotonic() - started < 2
            other.execute("ROLLBACK")


# --- migration 4 -------------------------------------------------------------------------------


def test_a_store_with_entries_migrates_to_deletion_requests_and_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing store (schema 3, with entries and a pending purge) gains the tables when
    a new gateway opens it; its chain, and `pkggov-admin audit verify`, are unaffected by
    requests, votes and notifications."""
    path = tmp_path / "audit.db"
    old = SqlAuditStore(OldDialect(SqliteDialect(path), last=3), heartbeat_seconds=3600)
    old.append(NewEntry(body("e1", "intent")))
    scheduled = PendingPurge(
        "p1", PKG, "0.9.0", "r", VersionStatus.PUBLISHED, "alice", "e1", NOW, NOW
    )
    old.append(NewEntry(body("e1"), PurgeEffects(schedule=(scheduled,))))
    old.close()
    with replicas(f"sqlite:{path}", "a") as (a,):
        create(a, "c1", request("r1"))
        cast(a, "v1", "r1", ballot("bob"))
        claim(a, "x1", "r1")
        hooks(a, "n1", 1)
        versions = [r[0] for r in column(a, "SELECT version FROM pkggov_schema_migrations")]
        assert [v for v, _ in a.dialect.migrations()] == sorted(versions)
        assert ["p1"] == [p.purge_id for p in a.pending_purges(PurgeQuery()).purges]
        report = verify(a.iter_rows())
        assert (True, 6) == (report.ok, report.entries)
    capsys.readouterr()  # what the stores logged
    assert 0 == cli.main(["audit", "verify", "--store", f"sqlite:{path}", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert (True, 6) == (printed["ok"], printed["entries"])


def test_migration_4_applies_on_postgresql_beside_an_older_schema(pg_url: str) -> None:
    """PostgreSQL: a schema at version 3 gains version 4 (and every later one) once, whichever
    replica opens it first; both then see the same requests."""
    old = SqlAuditStore(OldDialect(_postgres(pg_url), last=3), heartbeat_seconds=3600)
    old.append(NewEntry(body("e1")))
    old.close()
    with replicas(pg_url, "a", "b") as (a, b):
        create(a, "c1", request("r1"))
        assert b.deletion_request("r1") is not None
        versions = sorted(r[0] for r in column(b, "SELECT version FROM pkggov_schema_migrations"))
        assert [v for v, _ in b.dialect.migrations()] == versions
        assert verify(b.iter_rows()).ok


def _postgres(url: str) -> Dialect:
    from pkggov_gateway.adapters.sql import PostgresDialect

    return PostgresDialect(url)
