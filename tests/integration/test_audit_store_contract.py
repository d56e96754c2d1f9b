"""One suite, three audit stores: the in-memory fake answers as SQLite and PostgreSQL do.

Every test runs on `pkggov_gateway.testing.InMemoryAuditStore`, on a SQLite file and on a
PostgreSQL schema of its own (skipped when PostgreSQL cannot be reached, unless CI is set), and
uses the AuditStore, PurgeStore, RequestStore and WebhookOutbox ports only (plus `iter_rows`,
which verify reads, `purge_state`, which shows a closed purge, and `webhook_record`, which
shows a notification's delivery). What passes here is what unit tests may rely on when they
use the fake instead of a database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from pkggov_gateway.adapters.sql import SqlAuditStore, open_audit_store
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
    plan_digest,
)
from pkggov_gateway.domain.audit import (
    GENESIS,
    AppendGuard,
    AuditQuery,
    EventClosed,
    NewEntry,
    QuotaCheck,
    RequestIdClaimed,
    StoredEntry,
    canonical,
    chain_hash,
    format_time,
)
from pkggov_gateway.domain.errors import (
    AlreadyVotedError,
    AuditUnavailableError,
    DeletionRequestNotFoundError,
    PlanTamperedError,
    QuotaExceededError,
    RequestExpiredError,
    RequestNotPendingError,
)
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.recovery import (
    PendingPurge,
    PurgeClosure,
    PurgeEffects,
    PurgeQuery,
    PurgeState,
    PurgeStats,
)
from pkggov_gateway.ports import AuditStore, PurgeStore, RequestStore, WebhookOutbox
from pkggov_gateway.testing import InMemoryAuditStore
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url

HOUR = QuotaCheck("alice", limit=10, window_seconds=3600, subject="10 versions per hour")
"""The quota most tests check: 10 versions per hour for alice."""


class ContractStore(AuditStore, PurgeStore, RequestStore, WebhookOutbox, Protocol):
    """The ports, the rows verify reads, where a purge stands and where a notification
    stands."""

    def iter_rows(self, batch: int = 5000) -> Iterator[tuple[Any, ...]]: ...

    def purge_state(
        self, purge_id: str
    ) -> tuple[PurgeState, str | None, str | None, str | None] | None: ...

    def webhook_record(
        self, event_id: str
    ) -> tuple[str | None, int, str, str, str | None, str | None] | None: ...


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which store the test runs on."""
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractStore]:
    """An empty store of `backend`."""
    if backend == "memory":
        yield InMemoryAuditStore()
        return
    if backend == "sqlite":
        url = f"sqlite:{tmp_path}/audit.db"
    else:
        url = pg_schema_url(request.getfixturevalue("pg_schema"))
    sql = open_audit_store(url, heartbeat_seconds=3600)
    try:
        yield sql
    finally:
        sql.close()


def body(
    event: str,
    kind: str = "outcome",
    *,
    ago: float = 0.0,
    at: datetime | None = None,
    principal: str = "alice",
    **fields: Any,
) -> dict[str, Any]:
    """An entry body of `event`, recorded `at` (default: `ago` seconds before now)."""
    return {
        "event_id": event,
        "kind": kind,
        "time": format_time(at or datetime.now(UTC) - timedelta(seconds=ago)),
        "principal": {"id": principal},
        **fields,
    }


def add(store: AuditStore, event: str, kind: str = "outcome", **fields: Any) -> StoredEntry:
    return store.append(NewEntry(body(event, kind, **fields)))


def kinds(entries: Sequence[StoredEntry]) -> list[str]:
    return [entry.kind.value for entry in entries]


# --- the chain ---------------------------------------------------------------------------------


def test_entries_are_chained_in_order_and_read_back_as_stored(store: ContractStore) -> None:
    """seq 1, 2, 3; each hash chains the canonical body to the one before (GENESIS first);
    an event reads back its entries in chain order, with the bodies as JSON gives them."""
    bodies = [
        body("e1", "intent", forward=["1.0"]),
        body("e1", "outcome", deleted=1),
        body("e2", request={"versions": ("1.0",)}),
    ]
    stored = [store.append(NewEntry(b), durable=i == 1) for i, b in enumerate(bodies)]
    assert [1, 2, 3] == [s.seq for s in stored]
    prev = GENESIS
    for entry, sent in zip(stored, bodies, strict=True):
        assert (prev, chain_hash(prev, canonical(sent))) == (entry.prev_hash, entry.hash)
        assert sent == entry.body  # the caller's own body
        prev = entry.hash
    event = store.event("e1")
    assert event is not None
    assert ["intent", "outcome"] == kinds(event.entries)
    assert [(s.seq, s.hash) for s in stored[:2]] == [(e.seq, e.hash) for e in event.entries]
    assert bodies[0] == event.entries[0].body
    other = store.event("e2")
    assert other is not None
    assert json.loads(canonical(bodies[2])) == other.entries[0].body  # the tuple is a list
    assert None is store.event("e3")
    assert verify(store.iter_rows()).ok
    assert store.healthy()


def test_a_plan_given_as_a_tuple_is_counted_and_verifies(store: ContractStore) -> None:
    """The columns are derived from the body as stored (JSON), whatever sequence built it."""
    add(store, "e1", "intent", forward=("1.0", "2.0"))
    assert 2 == store.quota_usage(HOUR)[0]
    assert verify(store.iter_rows()).ok


@pytest.mark.parametrize("durable", [False, True])
def test_a_body_of_an_unknown_kind_is_refused_and_jams_nothing(
    store: ContractStore, durable: bool
) -> None:
    """An unknown kind is the caller's error, raised at once: the store stays healthy and
    the next entry is written (the SQL writer would otherwise fail, and retry, its batch)."""
    with pytest.raises(ValueError, match="bogus"):
        store.append(NewEntry(body("e1", "bogus")), durable=durable)
    assert "outcome" == add(store, "e2").kind.value
    assert store.healthy()
    assert [1] == [entry.seq for entry in store.event("e2").entries]  # type: ignore[union-attr]


def test_a_body_without_its_keys_is_refused_before_anything_is_written(
    store: ContractStore,
) -> None:
    """event_id, kind and time are what every entry must have."""
    incomplete = body("e1")
    del incomplete["time"]
    with pytest.raises(KeyError):
        store.append(NewEntry(incomplete))
    assert 1 == add(store, "e2").seq


def test_the_store_names_its_replica_and_has_a_page_token_key(store: ContractStore) -> None:
    assert "gateway" == store.replica
    assert 32 == len(store.page_token_key)


# --- an entry appended again -------------------------------------------------------------------


def test_an_entry_appended_again_is_the_stored_one_and_another_body_is_refused(
    store: ContractStore,
) -> None:
    """A retry after an unclear commit finds itself stored: the same body is that entry
    (even when its guard would now refuse it); another body under its event and kind is
    AuditUnavailableError. Nothing is appended twice."""
    claim = AppendGuard(request_id="r1")
    intent = body("e1", "intent", request_id="r1", forward=["1.0"])
    first = store.append(NewEntry(intent), guard=claim, durable=True)
    again = store.append(NewEntry(dict(intent)), guard=claim, durable=True)
    assert (first.seq, first.hash) == (again.seq, again.hash)
    with pytest.raises(AuditUnavailableError, match="already recorded differently"):
        store.append(NewEntry({**intent, "forward": ["2.0"]}))
    assert 2 == add(store, "e1", deleted=1).seq
    event = store.event("e1")
    assert event is not None
    assert ["intent", "outcome"] == kinds(event.entries)


# --- request ids (AIP-155) ---------------------------------------------------------------------


def test_a_request_id_is_claimed_per_principal_while_its_event_is_open(
    store: ContractStore,
) -> None:
    """An open event keeps its request id: another claim by the same principal is
    RequestIdClaimed naming it and writes nothing; another principal's claim is its own."""
    claim = AppendGuard(request_id="r1")
    store.append(NewEntry(body("e1", "intent", request_id="r1")), guard=claim)
    with pytest.raises(RequestIdClaimed) as caught:
        store.append(NewEntry(body("e2", "intent", request_id="r1")), guard=claim)
    assert "e1" == caught.value.event.event_id
    assert ["intent"] == kinds(caught.value.event.entries)
    assert None is store.event("e2")
    store.append(NewEntry(body("b1", "intent", principal="bob", request_id="r1")), guard=claim)
    found = store.event_by_request_id("bob", "r1")
    assert found is not None
    assert "b1" == found.event_id
    assert None is store.event_by_request_id("alice", "r2")
    assert None is store.event_by_request_id("carol", "r1")


@pytest.mark.parametrize(
    ("code", "claimed"),
    [
        ("OK", True),
        ("PERMISSION_DENIED", True),
        ("INVALID_ARGUMENT", True),
        ("UNAVAILABLE", False),
        ("DEADLINE_EXCEEDED", False),
        ("RESOURCE_EXHAUSTED", False),
    ],
)
def test_an_answered_request_id_stays_claimed_only_after_a_final_status(
    store: ContractStore, code: str, claimed: bool
) -> None:
    """After a final status the retry is answered from the record (claimed); after any other
    the retry runs again, and its event is the one the request id now names."""
    claim = AppendGuard(request_id="r1")
    store.append(NewEntry(body("e1", "intent", request_id="r1")), guard=claim)
    add(store, "e1", status={"code": code})
    retry = NewEntry(body("e2", "intent", request_id="r1"))
    if claimed:
        with pytest.raises(RequestIdClaimed) as caught:
            store.append(retry, guard=claim)
        assert ["intent", "outcome"] == kinds(caught.value.event.entries)
    else:
        store.append(retry, guard=claim)
    latest = store.event_by_request_id("alice", "r1")
    assert latest is not None
    assert ("e1" if claimed else "e2") == latest.event_id


def test_a_reconciled_intent_lets_its_request_id_run_again(store: ContractStore) -> None:
    """An intent closed by reconciliation (a crash) has no answer: the retry runs."""
    claim = AppendGuard(request_id="r1")
    store.append(NewEntry(body("e1", "intent", request_id="r1")), guard=claim)
    add(store, "e1", "reconciliation", deleted=0)
    store.append(NewEntry(body("e2", "intent", request_id="r1")), guard=claim)
    with pytest.raises(RequestIdClaimed) as caught:  # now e2 is open
        store.append(NewEntry(body("e3", "intent", request_id="r1")), guard=claim)
    assert "e2" == caught.value.event.event_id


def test_a_closing_entry_is_refused_once_its_event_is_closed(store: ContractStore) -> None:
    """A reconciliation guarded as closing its event: appended again, it is the stored one (a
    retry); another replica's (another body) or one after the call's outcome is refused with
    EventClosed, and nothing is written."""
    closing = AppendGuard(closes_open_event=True)
    add(store, "e1", "intent")
    first = store.append(NewEntry(body("e1", "reconciliation", deleted=0)), guard=closing)
    assert first == store.append(NewEntry(first.body), guard=closing)
    with pytest.raises(EventClosed):
        store.append(NewEntry(body("e1", "reconciliation", deleted=1)), guard=closing)
    add(store, "e2", "intent")
    last = add(store, "e2", "outcome")
    with pytest.raises(EventClosed):
        store.append(NewEntry(body("e2", "reconciliation", deleted=0)), guard=closing)
    assert last.seq == store.append(NewEntry(body("e3", "outcome"))).seq - 1


# --- quotas ------------------------------------------------------------------------------------


def test_quota_usage_counts_deleted_versions_else_planned_ones_in_the_window(
    store: ContractStore,
) -> None:
    """Per intent of the principal in the window: what its latest later entry deleted, else
    what it planned; the retry time is when the oldest counted intent leaves the window."""
    assert (0, 1.0) == store.quota_usage(HOUR)
    add(store, "old", "intent", ago=7200, forward=["a"] * 5)  # outside the window
    add(store, "e0", "intent", ago=3000, forward=["a"])  # deleted nothing: not counted
    add(store, "e0", deleted=0)
    add(store, "e1", "intent", ago=1800, forward=["a", "b", "c"])  # open: 3 planned
    add(store, "e2", "intent", ago=600, forward=["a"] * 4)
    add(store, "e2", deleted=1)
    add(store, "e3", "intent", ago=300, forward=["a", "b"])
    add(store, "e3", "reconciliation", deleted=2)
    add(store, "e4", "intent", ago=60, forward=["a"])
    add(store, "e4", status={"code": "UNAVAILABLE"})  # no count of deleted: its plan counts
    add(store, "b1", "intent", principal="bob", forward=["a"] * 5)
    used, retry = store.quota_usage(HOUR)
    assert 3 + 1 + 2 + 1 == used
    assert 1790 < retry <= 1800


def test_a_quota_guard_refuses_an_intent_past_the_limit_and_writes_nothing(
    store: ContractStore,
) -> None:
    """used + asked > limit is QuotaExceededError (with used, asked, limit, subject); exactly
    the limit is allowed. A claimed request id is reported before the quota."""
    five = AppendGuard(quota=QuotaCheck("alice", 5, 3600, "five"))
    store.append(NewEntry(body("e1", "intent", forward=["a"] * 4)), guard=five)
    with pytest.raises(QuotaExceededError) as caught:
        store.append(NewEntry(body("e2", "intent", forward=["a", "b"])), guard=five)
    refused = caught.value
    assert ("five", 5, 4, 2) == (refused.subject, refused.limit, refused.used, refused.asked)
    assert 3590 < refused.retry_after_seconds <= 3600
    assert None is store.event("e2")
    store.append(NewEntry(body("e2", "intent", request_id="r1", forward=["a"])), guard=five)
    both = AppendGuard(request_id="r1", quota=five.quota)
    with pytest.raises(RequestIdClaimed):
        store.append(NewEntry(body("e3", "intent", request_id="r1", forward=["a"])), guard=both)


# --- listing -----------------------------------------------------------------------------------


def _request(package: str, versions: list[str], **more: str) -> dict[str, Any]:
    return {
        "domain": "demo",
        "repository": "dev",
        "format": "generic",
        "package": package,
        "versions": versions,
        **more,
    }


def _listed(store: AuditStore, **filters: Any) -> list[str]:
    return [event.event_id for event in store.list_events(AuditQuery(**filters)).events]


@pytest.fixture
def events(store: ContractStore) -> datetime:
    """a1 (seq 1, outcome only), b1 (2, open intent), a2 (3 intent, 4 outcome), a3 (5 intent,
    6 reconciliation), a4 (7, outcome only), a minute apart; returns a2's outcome time."""
    start = datetime.now(UTC) - timedelta(minutes=10)

    def at(minute: int) -> datetime:
        return start + timedelta(minutes=minute)

    a1 = _request("p", ["1.0", "2.0"], namespace="ns")
    add(store, "a1", at=at(1), request=a1, decision="denied", status={"code": "PERMISSION_DENIED"})
    add(store, "b1", "intent", at=at(2), principal="bob", request=_request("q", ["1.0"]))
    add(store, "a2", "intent", at=at(3), request=_request("p", ["3.0"]), forward=["3.0"])
    add(store, "a2", at=at(4), request=_request("p", ["3.0"]), decision="allowed", deleted=1)
    add(store, "a3", "intent", at=at(5), request=_request("p", ["1.0"]), forward=["1.0"])
    add(store, "a3", "reconciliation", at=at(6), deleted=0)
    odd = ["x%y", "a_b", "c\\d"]
    add(store, "a4", at=at(7), request=_request("p", odd), status={"code": "OK"})
    return start + timedelta(minutes=4)


def test_events_are_listed_newest_first_at_their_outcome_or_open_intent(
    store: ContractStore, events: datetime
) -> None:
    """Each event once, at its outcome or (without one) its intent, with every entry."""
    page = store.list_events(AuditQuery())
    assert ["a4", "a3", "a2", "b1", "a1"] == [e.event_id for e in page.events]
    assert (7, 5, 4, 2, 1) == page.positions
    assert None is page.next_before_seq
    assert [["outcome"], ["intent", "reconciliation"], ["intent", "outcome"]] == [
        kinds(e.entries) for e in page.events[:3]
    ]
    add(store, "b1", principal="bob", deleted=0)  # b1 now listed at its outcome
    page = store.list_events(AuditQuery(limit=2))
    assert (["b1", "a4"], (8, 7)) == ([e.event_id for e in page.events], page.positions)
    assert ["intent", "outcome"] == kinds(page.events[0].entries)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"principal": "alice"}, ["a4", "a3", "a2", "a1"]),
        ({"principal": "bob"}, ["b1"]),
        ({"package": "q"}, ["b1"]),
        (
            {"domain": "demo", "repository": "dev", "format": "generic"},
            ["a4", "a3", "a2", "b1", "a1"],
        ),
        ({"namespace": "ns"}, ["a1"]),
        ({"decision": "allowed"}, ["a2"]),
        ({"status_code": "PERMISSION_DENIED"}, ["a1"]),
        ({"version": "1.0"}, ["a3", "b1", "a1"]),
        ({"version": "2.0", "principal": "alice"}, ["a1"]),
        ({"version": "1"}, []),
        ({"version": "x%y"}, ["a4"]),
        ({"version": "x_y"}, []),
        ({"version": "a%"}, []),
        ({"version": "c\\d"}, ["a4"]),
        ({"package": "nothing"}, []),
    ],
)
def test_filters_select_on_the_listing_entry(
    store: ContractStore, events: datetime, filters: dict[str, Any], expected: list[str]
) -> None:
    """Exact matches of the columns; a version is one of the requested ones, literally."""
    assert expected == _listed(store, **filters)


def test_since_is_inclusive_and_until_exclusive_on_the_listing_entry_time(
    store: ContractStore, events: datetime
) -> None:
    """a2 is listed at its outcome's time: since it includes a2, until it excludes a2."""
    assert ["a4", "a3", "a2"] == _listed(store, since=events)
    assert ["b1", "a1"] == _listed(store, until=events)
    assert ["a2"] == _listed(store, since=events, until=events + timedelta(seconds=1))


def test_pages_continue_before_the_last_position(store: ContractStore, events: datetime) -> None:
    """A full page says where the next starts; the last says None; any position continues."""
    first = store.list_events(AuditQuery(limit=2))
    assert (["a4", "a3"], 5) == ([e.event_id for e in first.events], first.next_before_seq)
    second = store.list_events(AuditQuery(limit=2, before_seq=first.next_before_seq))
    assert (["a2", "b1"], 2) == ([e.event_id for e in second.events], second.next_before_seq)
    third = store.list_events(AuditQuery(limit=2, before_seq=second.next_before_seq))
    assert (["a1"], None) == ([e.event_id for e in third.events], third.next_before_seq)
    exact = store.list_events(AuditQuery(limit=5))
    assert (5, None) == (len(exact.events), exact.next_before_seq)
    rest = store.list_events(AuditQuery(principal="alice", before_seq=exact.positions[1]))
    assert ["a2", "a1"] == [e.event_id for e in rest.events]


def test_a_version_filter_is_case_sensitive(
    store: ContractStore, backend: str, request: pytest.FixtureRequest
) -> None:
    """Versions are compared as written: 1.0.0-RC1 is not 1.0.0-rc1."""
    add(store, "a1", request=_request("p", ["1.0.0-RC1"]))
    assert [] == _listed(store, version="1.0.0-rc1")


# --- open intents ------------------------------------------------------------------------------


def test_open_intents_are_those_without_outcome_or_reconciliation(store: ContractStore) -> None:
    """Oldest first, each as its intent alone."""
    add(store, "e1", "intent")
    add(store, "e2", "intent")
    add(store, "e2", deleted=0)
    add(store, "e3", "intent")
    add(store, "e3", "reconciliation", deleted=0)
    add(store, "e4", "intent")
    add(store, "e5")
    found = store.open_intents()
    assert ["e1", "e4"] == [event.event_id for event in found]
    assert [["intent"], ["intent"]] == [kinds(event.entries) for event in found]


# --- pending purges ----------------------------------------------------------------------------

PKG = PackageRef("demo", "dev", PackageFormat.GENERIC, "p", namespace="ns")
T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
"""The tests' "now" for purges: fixed, with microseconds (they must survive the store)."""


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def purge(
    purge_id: str,
    version: str = "1.0",
    *,
    due: float = 0.0,
    package: PackageRef = PKG,
    requester: str = "alice",
) -> PendingPurge:
    """A purge of `version` of `package`, archived an hour before T0, due `due` minutes
    after T0."""
    return PendingPurge(
        purge_id=purge_id,
        package=package,
        version=version,
        revision=f"rev-{purge_id}",
        previous_status=VersionStatus.UNLISTED,
        requester=requester,
        archive_event_id=f"archive-{purge_id}",
        archived_at=minutes(-60),
        due_at=minutes(due),
    )


def schedule(store: AuditStore, event: str, *purges: PendingPurge, **fields: Any) -> StoredEntry:
    """Append event `event`'s outcome scheduling `purges`."""
    return store.append(NewEntry(body(event, **fields), PurgeEffects(schedule=purges)))


def close(
    store: AuditStore,
    event: str,
    *versions: str,
    state: PurgeState = PurgeState.PURGED,
    reason: str = "purged",
    package: PackageRef = PKG,
) -> StoredEntry:
    """Append event `event`'s outcome closing the pending purges of `versions`."""
    closures = tuple(PurgeClosure(package, v, state, reason) for v in versions)
    return store.append(NewEntry(body(event), PurgeEffects(close=closures)))


def _closed(purge_id: str, store: ContractStore) -> tuple[PurgeState, str | None, str | None]:
    """A purge's state, closing reason and closing event id."""
    found = store.purge_state(purge_id)
    assert found is not None
    state, _, reason, event_id = found
    return state, reason, event_id


def ids(purges: Sequence[PendingPurge]) -> list[str]:
    return [p.purge_id for p in purges]


def test_a_scheduled_purge_is_pending_for_its_version_as_scheduled(store: ContractStore) -> None:
    """Effects commit with their entry; a purge reads back equal (times to the microsecond,
    the package as spelled); `pending_for` matches by the package as CodeArtifact names it
    (`package_identity`: generic names are case-sensitive, so another case is another
    package) and version."""
    owned = PackageRef("demo", "dev", PackageFormat.NPM, "q", domain_owner="111122223333")
    one, two, other = purge("p1", "1.0"), purge("p2", "2.0", due=5), purge("q1", package=owned)
    entry = schedule(store, "e1", one, two, other)
    assert 1 == entry.seq
    assert {"1.0": one, "2.0": two} == store.pending_for(PKG, ["1.0", "2.0", "3.0"])
    spelled = PackageRef("DEMO", "Dev", PackageFormat.GENERIC, "P", namespace="NS")
    assert {} == store.pending_for(spelled, ["2.0", "2.0"])
    assert {"1.0": other} == store.pending_for(owned, ["1.0"])
    assert {} == store.pending_for(PKG, [])
    assert {} == store.pending_for(PKG, ["1.0-other"])
    assert (PurgeState.PENDING, None, None, None) == store.purge_state("p1")
    assert None is store.purge_state("nothing")
    assert verify(store.iter_rows()).ok  # the chain does not see the effects


def test_a_second_schedule_of_a_version_keeps_the_earlier_purge(store: ContractStore) -> None:
    """One pending purge per version: a later one (another id, another due time) is not
    stored, nor is a purge id scheduled again; neither refuses its entry."""
    first = purge("p1", due=10)
    schedule(store, "e1", first)
    schedule(store, "e2", purge("p2", due=60), purge("p1", "2.0"))
    assert {"1.0": first} == store.pending_for(PKG, ["1.0", "2.0"])
    assert None is store.purge_state("p2")
    assert [2] == [e.seq for e in store.event("e2").entries]  # type: ignore[union-attr]


def test_a_closure_ends_the_versions_pending_purge_with_its_entry(store: ContractStore) -> None:
    """The closure records its state, its reason and the entry's time and event id; a version
    without a pending purge is no error; a closed version can be scheduled again."""
    schedule(store, "e1", purge("p1", "1.0"), purge("p2", "2.0"))
    closing = close(store, "r1", "1.0", "9.9", state=PurgeState.RESTORED, reason="restored")
    assert ["p2"] == ids(list(store.pending_for(PKG, ["1.0", "2.0"]).values()))
    assert (PurgeState.RESTORED, closing.time, "restored", "r1") == store.purge_state("p1")
    assert ["p2"] == ids(store.pending_purges(PurgeQuery()).purges)
    again = purge("p3", "1.0", due=30)
    schedule(store, "e2", again)
    assert again == store.pending_for(PKG, ["1.0"])["1.0"]
    close(store, "w1", "1.0", reason="deleted")  # closes p3 only: p1 stays restored
    assert (PurgeState.PURGED, "deleted", "w1") == _closed("p3", store)
    assert (PurgeState.RESTORED, "restored", "r1") == _closed("p1", store)


def test_an_entry_closing_and_scheduling_a_version_replaces_its_purge(
    store: ContractStore,
) -> None:
    """Closes apply before schedules: the entry's new purge is the pending one."""
    schedule(store, "e1", purge("p1"))
    new = purge("p2", due=99)
    effects = PurgeEffects(
        schedule=(new,), close=(PurgeClosure(PKG, "1.0", PurgeState.CANCELLED, "re-archived"),)
    )
    store.append(NewEntry(body("e2"), effects))
    assert {"1.0": new} == store.pending_for(PKG, ["1.0"])
    assert (PurgeState.CANCELLED, "re-archived", "e2") == _closed("p1", store)


def test_a_closure_that_leaves_the_purge_pending_is_refused_before_anything_is_written(
    store: ContractStore,
) -> None:
    schedule(store, "e1", purge("p1"))
    with pytest.raises(ValueError, match="pending"):
        close(store, "e2", "1.0", state=PurgeState.PENDING)
    assert None is store.event("e2")
    assert ["p1"] == ids(list(store.pending_for(PKG, ["1.0"]).values()))
    assert store.healthy()


def test_an_entry_refused_by_its_guard_applies_no_effects(store: ContractStore) -> None:
    """A claimed request id or an exceeded quota refuses the entry and its effects."""
    schedule(store, "e1", purge("p1"))
    claim = AppendGuard(request_id="r1")
    store.append(NewEntry(body("c1", "intent", request_id="r1")), guard=claim)
    closing = PurgeEffects(close=(PurgeClosure(PKG, "1.0", PurgeState.PURGED, "purged"),))
    scheduling = PurgeEffects(schedule=(purge("p2", "2.0"),))
    with pytest.raises(RequestIdClaimed):
        store.append(NewEntry(body("c2", "intent", request_id="r1"), closing), guard=claim)
    quota = AppendGuard(quota=QuotaCheck("alice", 1, 3600, "one"))
    with pytest.raises(QuotaExceededError):
        store.append(NewEntry(body("q1", "intent", forward=["a", "b"]), scheduling), guard=quota)
    assert ["p1"] == ids(list(store.pending_for(PKG, ["1.0", "2.0"]).values()))
    assert None is store.purge_state("p2")


def test_an_entry_appended_again_does_not_apply_its_effects_again(store: ContractStore) -> None:
    """A retry after an unclear commit finds its entry stored with its effects: a closure
    appended again does not close the purge scheduled since."""
    schedule(store, "e1", purge("p1"))
    closing = NewEntry(
        body("w1"), PurgeEffects(close=(PurgeClosure(PKG, "1.0", PurgeState.PURGED, "done"),))
    )
    first = store.append(closing, durable=True)
    later = purge("p2", due=60)
    schedule(store, "e2", later)
    again = store.append(closing, durable=True)
    assert (first.seq, first.hash) == (again.seq, again.hash)
    assert {"1.0": later} == store.pending_for(PKG, ["1.0"])


@pytest.fixture
def listed(store: ContractStore) -> dict[str, PendingPurge]:
    """Seven pending purges (and a closed one) in several repositories, by id."""
    other_repo = PackageRef("demo", "prod", PackageFormat.GENERIC, "p", namespace="ns")
    other_domain = PackageRef("other", "dev", PackageFormat.GENERIC, "p", namespace="ns")
    other_package = PackageRef("demo", "dev", PackageFormat.GENERIC, "z", namespace="ns")
    purges = [
        purge("a", "1", due=30),
        purge("b", "2", due=10),
        purge("c", "3", due=10),  # same due time as b: by id
        purge("d", "4", due=-10, requester="bob"),
        purge("e", "1", due=20, package=other_repo),
        purge("f", "1", due=0, package=other_domain),
        purge("g", "1", due=40, package=other_package, requester="bob"),
        purge("h", "5", due=5),
    ]
    schedule(store, "s1", *purges[:4])
    schedule(store, "s2", *purges[4:])
    close(store, "x1", "5")  # h is closed: never listed
    return {p.purge_id: p for p in purges}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["d", "f", "b", "c", "e", "a", "g"]),
        ({"domain": "demo"}, ["d", "b", "c", "e", "a", "g"]),
        ({"domain": "demo", "repository": "dev"}, ["d", "b", "c", "a", "g"]),
        ({"repository": "prod"}, ["e"]),
        ({"package": "z"}, ["g"]),
        ({"package": "P"}, []),  # exact, as stored
        ({"requester": "bob"}, ["d", "g"]),
        ({"due_before": T0 + timedelta(minutes=10)}, ["d", "f"]),  # exclusive
        ({"due_before": T0 + timedelta(minutes=10, microseconds=1)}, ["d", "f", "b", "c"]),
        ({"requester": "bob", "due_before": T0}, ["d"]),
        ({"domain": "nowhere"}, []),
    ],
)
def test_pending_purges_are_listed_soonest_due_first_and_filtered(
    store: ContractStore,
    listed: dict[str, PendingPurge],
    filters: dict[str, Any],
    expected: list[str],
) -> None:
    page = store.pending_purges(PurgeQuery(**filters))
    assert expected == ids(page.purges)
    assert [listed[i] for i in expected] == list(page.purges)
    assert None is page.next_after


def test_pending_purge_pages_continue_after_the_last_due_time_and_id(
    store: ContractStore, listed: dict[str, PendingPurge]
) -> None:
    """A full page names its last (due_at text, purge id); the last page names None; a
    cursor inside a tie continues by id."""
    seen: list[list[str]] = []
    after: tuple[str, str] | None = None
    while True:
        page = store.pending_purges(PurgeQuery(limit=2, after=after))
        seen.append(ids(page.purges))
        if page.next_after is None:
            break
        assert (format_time(page.purges[-1].due_at), page.purges[-1].purge_id) == page.next_after
        after = page.next_after
    assert [["d", "f"], ["b", "c"], ["e", "a"], ["g"]] == seen
    exact = store.pending_purges(PurgeQuery(limit=7))
    assert (7, None) == (len(exact.purges), exact.next_after)
    tie = store.pending_purges(PurgeQuery(after=(format_time(listed["b"].due_at), "b")))
    assert ["c", "e", "a", "g"] == ids(tie.purges)
    bob = store.pending_purges(PurgeQuery(requester="bob", limit=1))
    assert (["d"], (format_time(listed["d"].due_at), "d")) == (ids(bob.purges), bob.next_after)
    rest = store.pending_purges(PurgeQuery(requester="bob", limit=1, after=bob.next_after))
    assert (["g"], None) == (ids(rest.purges), rest.next_after)


def test_due_purges_are_claimed_once_until_their_lease_ends(store: ContractStore) -> None:
    """Due (next attempt, else due time, not after now) and unleased (no lease, or one that
    ended by now): soonest first, at most `limit`; a lease hides a purge from claims until
    it ends, and from nothing else."""
    a, b, c = purge("a", "1", due=-10), purge("b", "2", due=-5), purge("c", "3", due=10)
    schedule(store, "s1", c, b, a)
    assert [a] == store.claim_due_purges(T0, minutes(5), 1)
    assert [b] == store.claim_due_purges(T0, minutes(5), 10)
    assert [] == store.claim_due_purges(T0, minutes(5), 10)
    assert [] == store.claim_due_purges(minutes(4), minutes(9), 10)
    assert [] == store.claim_due_purges(minutes(5), minutes(10), 0)
    assert ["a", "b", "c"] == ids(store.pending_purges(PurgeQuery()).purges)  # still listed
    assert [a, b] == store.claim_due_purges(minutes(5), minutes(20), 10)  # the leases ended
    assert [c] == store.claim_due_purges(minutes(10), minutes(15), 10)  # due exactly now
    assert [a, b, c] == store.claim_due_purges(minutes(20), minutes(25), 10)


def test_a_released_purge_counts_its_attempt_and_is_due_again_at_its_retry_time(
    store: ContractStore,
) -> None:
    a, b = purge("a", "1", due=-10), purge("b", "2", due=-5)
    schedule(store, "s1", a, b)
    assert [a, b] == store.claim_due_purges(T0, minutes(5), 10)
    store.release_purge("a", retry_at=minutes(30), error="throttled")
    retried = replace(a, attempts=1, last_error="throttled", next_attempt_at=minutes(30))
    assert {"1": retried} == store.pending_for(PKG, ["1"])
    assert [] == store.claim_due_purges(minutes(1), minutes(6), 10)  # a waits; b is leased
    assert [b] == store.claim_due_purges(minutes(29), minutes(34), 10)
    assert [retried] == store.claim_due_purges(minutes(30), minutes(35), 10)
    store.release_purge("a", retry_at=minutes(40), error="again")
    again = store.pending_for(PKG, ["1"])["1"]
    assert (2, "again", minutes(40)) == (again.attempts, again.last_error, again.next_attempt_at)
    close(store, "w1", "1")
    store.release_purge("a", retry_at=minutes(50), error="late")  # no longer pending: nothing
    store.release_purge("nothing", retry_at=minutes(50), error="unknown")
    assert (PurgeState.PURGED, "purged", "w1") == _closed("a", store)
    assert {} == store.pending_for(PKG, ["1"])
    assert [b] == store.claim_due_purges(minutes(60), minutes(65), 10)


def test_purge_stats_count_pending_and_due_purges_and_the_oldest_due_time(
    store: ContractStore,
) -> None:
    """Due: the due time is not after now (a failed purge waiting for its retry is still
    due: it is overdue); closed purges are not counted."""
    assert PurgeStats(0, 0, None) == store.purge_stats(T0)
    a, b, c, d = (
        purge("a", "1", due=-10),
        purge("b", "2", due=-5),
        purge("c", "3", due=10),
        purge("d", "4", due=-20),
    )
    schedule(store, "s1", a, b, c, d)
    close(store, "w1", "4")
    store.claim_due_purges(T0, minutes(5), 1)
    store.release_purge("a", retry_at=minutes(30), error="boom")
    assert PurgeStats(3, 2, a.due_at) == store.purge_stats(T0)
    assert PurgeStats(3, 3, a.due_at) == store.purge_stats(minutes(10))
    assert PurgeStats(3, 0, None) == store.purge_stats(minutes(-11))


# --- deletion requests -------------------------------------------------------------------------

PENDING, EXECUTING, EXECUTED = RequestState.PENDING, RequestState.EXECUTING, RequestState.EXECUTED
OPEN = (PENDING,)
"""The states a vote, a cancellation or an execution's claim needs."""


def plan_of(
    package: PackageRef = PKG, *versions: str, justification: str = "cleanup"
) -> DeletionPlan:
    """A plan deleting `versions` (default 1.0 and 2.0, the latter the latest) of `package`."""
    names = versions or ("1.0", "2.0")
    return DeletionPlan(
        package=package,
        versions=tuple(
            PlannedItem(v, f"rev-{v}", VersionStatus.PUBLISHED, v == names[-1]) for v in names
        ),
        latest=names[-1],
        version_count=len(names) + 1,
        requested=(*names, "9.9"),
        justification=justification,
        expected_status=None,
        allow_partial=True,
        purge_now=False,
    )


def request(
    request_id: str,
    *,
    created: float = 0.0,
    expires: float = 72 * 60,
    requester: str = "alice",
    package: PackageRef = PKG,
    plan: DeletionPlan | None = None,
) -> DeletionRequestRecord:
    """A pending request by `requester`, created `created` minutes after T0, expiring
    `expires` minutes after T0."""
    planned = plan or plan_of(package)
    return DeletionRequestRecord(
        request_id=request_id,
        requester=requester,
        requester_person=requester,
        created_at=minutes(created),
        expires_at=minutes(expires),
        state=PENDING,
        plan=planned,
        plan_hash=planned.digest(),
        required_by=("prod-needs-release-admin",),
        event_id=f"create-{request_id}",
    )


def create(
    store: AuditStore, event: str, *records: DeletionRequestRecord, **effects: Any
) -> StoredEntry:
    """Append event `event`'s outcome creating `records` (and any other `effects`)."""
    return store.append(NewEntry(body(event), approvals=ApprovalEffects(create=records, **effects)))


def vote(
    approver: str,
    *,
    person: str | None = None,
    approve: bool = True,
    groups: tuple[str, ...] = ("release-admins",),
    reason: str = "looks right",
    event: str | None = None,
) -> Vote:
    return Vote(
        approver=approver,
        person=person or approver,
        approve=approve,
        groups=groups,
        reason=reason,
        at=minutes(1),
        event_id=event or f"vote-{approver}",
    )


def cast(
    store: AuditStore,
    event: str,
    request_id: str,
    ballot: Vote,
    *,
    now: datetime = T0,
    guarded: bool = True,
) -> StoredEntry:
    """Append event `event`'s outcome casting `ballot` on `request_id` (guarded: the request
    must be pending at `now` and the person must not have voted)."""
    guard = RequestGuard(request_id, OPEN, now, voter=ballot.person) if guarded else None
    return store.append(
        NewEntry(body(event), approvals=ApprovalEffects(votes=(NewVote(request_id, ballot),))),
        guard=AppendGuard(deletion_request=guard),
    )


def move(
    store: AuditStore,
    event: str,
    request_id: str,
    to: RequestState,
    *,
    source: tuple[RequestState, ...] = OPEN,
    reason: str = "",
    guard: tuple[RequestState, ...] | None = None,
    now: datetime = T0,
) -> StoredEntry:
    """Append event `event`'s outcome moving `request_id` from `source` to `to` (guarded by
    `guard`'s states, when given)."""
    moving = ApprovalEffects(transitions=(Transition(request_id, source, to, reason),))
    checked = None if guard is None else RequestGuard(request_id, guard, now)
    return store.append(
        NewEntry(body(event), approvals=moving), guard=AppendGuard(deletion_request=checked)
    )


def found(store: RequestStore, request_id: str) -> DeletionRequestRecord:
    record = store.deletion_request(request_id)
    assert record is not None
    return record


def tamper(store: ContractStore, request_id: str, plan: str) -> None:
    """Replace a request's stored plan text behind the gateway's back."""
    if isinstance(store, InMemoryAuditStore):
        store.tamper_plan(request_id, plan)
        return
    assert isinstance(store, SqlAuditStore)
    with store.dialect.reader() as conn:
        conn.execute(
            store.dialect.sql("UPDATE deletion_requests SET plan = ? WHERE request_id = ?"),
            (plan, request_id),
        )


def test_a_created_request_reads_back_exactly_with_its_plan(store: ContractStore) -> None:
    """The record reads back equal (times to the microsecond), its plan parsed from the
    stored body, which `stored_plan` holds: the plan's digest is the stored plan_hash; a
    request without namespace or domain owner too. The chain does not see the requests."""
    owned = PackageRef("demo", "prod", PackageFormat.NPM, "left-pad", domain_owner="111122223333")
    odd = plan_of(PKG, "1.0", '2.0-é"x', justification="ticket #4 — \u00e9 \x01")
    odd = replace(odd, expected_status=VersionStatus.UNLISTED, latest=None, purge_now=True)
    first = request("r1", plan=odd)
    second = request("r2", created=1, package=owned)
    entry = create(store, "e1", first, second)
    assert 1 == entry.seq
    for sent in (first, second):
        record = found(store, sent.request_id)
        assert replace(sent, stored_plan=sent.plan.body()) == record
        assert record.plan.digest() == record.plan_hash == sent.plan_hash
        assert record.stored_plan is not None
        assert plan_digest(record.stored_plan) == record.plan_hash
        assert (PENDING, (), "", "") == (
            record.state,
            record.votes,
            record.closed_reason,
            record.closed_event_id,
        )
    assert None is store.deletion_request("r3")
    assert None is store.deletion_request("")
    assert verify(store.iter_rows()).ok


def test_a_request_created_again_keeps_the_first_one(store: ContractStore) -> None:
    """ON CONFLICT DO NOTHING: a second creation of a request id stores nothing and refuses
    nothing (its entry is stored)."""
    create(store, "e1", request("r1"))
    create(store, "e2", request("r1", requester="bob", created=5))
    assert "alice" == found(store, "r1").requester
    assert [2] == [e.seq for e in store.event("e2").entries]  # type: ignore[union-attr]


def test_effects_the_store_could_not_keep_are_refused_before_anything_is_written(
    store: ContractStore,
) -> None:
    """A plan_hash that is not the plan's digest, a state that is none, a payload JSON cannot
    hold: ValueError or TypeError at once, nothing written, the store healthy."""
    forged = replace(request("r1"), plan_hash="0" * 64)
    with pytest.raises(ValueError, match="plan_hash"):
        create(store, "e1", forged)
    with pytest.raises(ValueError, match="bogus"):
        move(store, "e2", "r1", RequestState("pending"), source=("bogus",))  # type: ignore[arg-type]
    unjsonable = WebhookEvent("w1", "created", "r1", {"at": T0}, T0)
    with pytest.raises(TypeError):
        create(store, "e3", notify=(unjsonable,))
    assert [None, None, None] == [store.event(e) for e in ("e1", "e2", "e3")]
    assert None is store.deletion_request("r1")
    assert store.healthy()
    assert 1 == create(store, "e4", request("r1")).seq


def test_votes_read_back_in_the_order_cast_one_per_person(store: ContractStore) -> None:
    """Each vote as cast (groups, reason, time, event); a person's second vote, unguarded,
    is not stored and does not refuse its entry. The store keeps the requester's own vote:
    `approvers()` is what does not count it."""
    create(store, "e1", request("r1"), request("r2", created=1))
    bob = vote("bob", groups=("release-admins", "dev"))
    carol = vote("carol", approve=False, groups=(), reason="not yet")
    own = vote("alice-cert", person="alice", reason="mine")
    cast(store, "v1", "r1", bob)
    cast(store, "v2", "r1", carol)
    cast(store, "v3", "r1", own)
    cast(store, "v4", "r2", vote("dave"))
    again = cast(store, "v5", "r1", replace(bob, reason="twice"), guarded=False)
    assert "v5" == again.event_id
    record = found(store, "r1")
    assert (bob, carol, own) == record.votes
    assert (bob,) == record.approvers()
    assert (carol,) == record.rejections()
    assert ("dave",) == tuple(v.approver for v in found(store, "r2").votes)


def _everything(event: str) -> ApprovalEffects:
    """Effects of every kind (on r1 and a new request n1): a refused entry applies none."""
    return ApprovalEffects(
        create=(request("n1", created=9),),
        votes=(NewVote("r1", vote("erin", event=event)),),
        transitions=(Transition("r1", (PENDING, EXECUTING), RequestState.CANCELLED, "x"),),
        notify=(WebhookEvent(f"hook-{event}", "cancelled", "r1", {"event": event}, T0),),
    )


def test_each_refusal_of_a_request_guard_names_the_request_and_applies_nothing(
    store: ContractStore,
) -> None:
    """Missing: DeletionRequestNotFoundError. Expired (pending and its expiry not after the
    guard's now, or stored expired): RequestExpiredError. In a state the guard does not allow:
    RequestNotPendingError naming the state. The voter voted: AlreadyVotedError. The refused
    entry is not stored and none of its effects are applied."""
    create(store, "e1", request("r1", expires=10), request("done"), request("old"))
    cast(store, "v1", "r1", vote("bob"))
    move(store, "x1", "done", EXECUTED, source=OPEN)
    move(store, "x2", "old", RequestState.EXPIRED, reason="expired")
    cases: list[tuple[RequestGuard, type[Exception], str]] = [
        (RequestGuard("nothing", OPEN, T0), DeletionRequestNotFoundError, "nothing"),
        (RequestGuard("done", OPEN, T0), RequestNotPendingError, "done is executed"),
        (RequestGuard("done", (EXECUTING,), T0), RequestNotPendingError, "not executing"),
        (RequestGuard("old", OPEN, T0), RequestExpiredError, "old expired"),
        (RequestGuard("r1", OPEN, minutes(10)), RequestExpiredError, "r1 expired at"),
        (RequestGuard("r1", OPEN, minutes(11)), RequestExpiredError, "r1"),
        (RequestGuard("r1", OPEN, T0, voter="bob"), AlreadyVotedError, "bob has already voted"),
    ]
    for n, (guard, error, message) in enumerate(cases):
        event = f"refused-{n}"
        with pytest.raises(error, match=message) as caught:
            store.append(
                NewEntry(body(event), approvals=_everything(event)),
                guard=AppendGuard(deletion_request=guard),
            )
        assert guard.request_id == caught.value.request_id  # type: ignore[attr-defined]
        assert None is store.event(event)
        assert None is store.webhook_record(f"hook-{event}")
    assert None is store.deletion_request("n1")
    record = found(store, "r1")
    assert (PENDING, ["bob"]) == (record.state, [v.approver for v in record.votes])
    assert store.healthy()
    # what the guard allows: a moment before expiry, another voter, an allowed state
    allowed = RequestGuard("r1", OPEN, minutes(10) - timedelta(microseconds=1), voter="erin")
    store.append(
        NewEntry(body("ok"), approvals=_everything("ok")),
        guard=AppendGuard(deletion_request=allowed),
    )
    record = found(store, "r1")
    assert (RequestState.CANCELLED, ["bob", "erin"]) == (
        record.state,
        [v.approver for v in record.votes],
    )
    assert store.deletion_request("n1") is not None
    # expiry concerns pending requests only: an executed one's later step is not refused
    late = RequestGuard("done", (EXECUTED,), minutes(10**6))
    assert (
        "late"
        == store.append(NewEntry(body("late")), guard=AppendGuard(deletion_request=late)).event_id
    )


def test_a_request_guard_is_checked_after_a_claimed_request_id(store: ContractStore) -> None:
    """A claimed request id is reported before the request's state (the retry is answered
    from the record)."""
    claim = AppendGuard(request_id="q1")
    create(store, "e1", request("r1"))
    store.append(NewEntry(body("c1", "intent", request_id="q1")), guard=claim)
    both = AppendGuard(request_id="q1", deletion_request=RequestGuard("nothing", OPEN, T0))
    with pytest.raises(RequestIdClaimed):
        store.append(NewEntry(body("c2", "intent", request_id="q1")), guard=both)


def test_a_transition_moves_a_request_only_from_its_states(store: ContractStore) -> None:
    """PENDING -> EXECUTING records no closure; EXECUTING -> EXECUTED (final) records the
    reason and the entry's event; a transition from a state the request is not in, of a
    request that does not exist, or from no state, changes nothing and refuses nothing."""
    create(store, "e1", request("r1"), request("r2", created=1))
    move(store, "m1", "r1", EXECUTING, reason="claimed")
    assert (EXECUTING, "", "") == _state(store, "r1")
    move(store, "m2", "r1", RequestState.CANCELLED, reason="too late")  # not pending: nothing
    move(store, "m3", "nothing", EXECUTING)
    move(store, "m4", "r2", EXECUTED, source=())
    assert (EXECUTING, "", "") == _state(store, "r1")
    assert (PENDING, "", "") == _state(store, "r2")
    move(store, "m5", "r1", EXECUTED, source=(EXECUTING,), reason="executed")
    assert (EXECUTED, "executed", "m5") == _state(store, "r1")
    move(store, "m6", "r1", PENDING, source=(PENDING, EXECUTING))  # final: stays
    assert (EXECUTED, "executed", "m5") == _state(store, "r1")
    move(store, "m7", "r2", RequestState.REJECTED, reason="rejected by bob")
    assert (RequestState.REJECTED, "rejected by bob", "m7") == _state(store, "r2")
    assert verify(store.iter_rows()).ok


def _state(store: RequestStore, request_id: str) -> tuple[RequestState, str, str]:
    record = found(store, request_id)
    return record.state, record.closed_reason, record.closed_event_id


def test_an_entry_appended_again_does_not_apply_its_approvals_again(
    store: ContractStore,
) -> None:
    """A retry after an unclear commit finds its entry stored with its effects: an
    execution's release (EXECUTING -> PENDING) appended again does not undo the claim made
    since, nor is its vote cast twice."""
    create(store, "e1", request("r1"))
    move(store, "claim1", "r1", EXECUTING)
    release = NewEntry(
        body("release1"),
        approvals=ApprovalEffects(
            transitions=(Transition("r1", (EXECUTING,), PENDING, "retry"),),
        ),
    )
    first = store.append(release, durable=True)
    move(store, "claim2", "r1", EXECUTING)
    again = store.append(release, durable=True)
    assert (first.seq, first.hash) == (again.seq, again.hash)
    assert EXECUTING is found(store, "r1").state


# --- listing requests --------------------------------------------------------------------------


@pytest.fixture
def requested(store: ContractStore) -> dict[str, DeletionRequestRecord]:
    """Seven requests, newest first g f e d c b a (c and d created together); a rejected,
    b executing; by id."""
    other_repo = PackageRef("demo", "prod", PackageFormat.GENERIC, "p", namespace="ns")
    other_domain = PackageRef("other", "dev", PackageFormat.GENERIC, "p", namespace="ns")
    other_package = PackageRef("demo", "dev", PackageFormat.GENERIC, "z", namespace="ns")
    records = [
        request("a", created=1),
        request("b", created=2, requester="bob"),
        request("c", created=3, package=other_repo),
        request("d", created=3),
        request("e", created=4, package=other_domain),
        request("f", created=5, package=other_package, requester="bob"),
        request("g", created=6),
    ]
    create(store, "s1", *records[:4])
    create(store, "s2", *records[4:])
    move(store, "x1", "a", RequestState.REJECTED, reason="no")
    move(store, "x2", "b", EXECUTING)
    return {r.request_id: r for r in records}


def request_ids(records: Sequence[DeletionRequestRecord]) -> list[str]:
    return [r.request_id for r in records]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["g", "f", "e", "d", "c", "b", "a"]),
        ({"state": PENDING}, ["g", "f", "e", "d", "c"]),
        ({"state": RequestState.REJECTED}, ["a"]),
        ({"state": EXECUTED}, []),
        ({"requester": "bob"}, ["f", "b"]),
        ({"domain": "demo"}, ["g", "f", "d", "c", "b", "a"]),
        ({"domain": "demo", "repository": "prod"}, ["c"]),
        ({"package": "z"}, ["f"]),
        ({"package": "P"}, []),  # exact, as stored
        ({"state": PENDING, "requester": "bob"}, ["f"]),
        ({"domain": "nowhere"}, []),
    ],
)
def test_requests_are_listed_newest_first_and_filtered(
    store: ContractStore,
    requested: dict[str, DeletionRequestRecord],
    filters: dict[str, Any],
    expected: list[str],
) -> None:
    page = store.deletion_requests(DeletionRequestQuery(**filters))
    assert expected == request_ids(page.requests)
    assert None is page.next_after
    states = {"a": RequestState.REJECTED, "b": EXECUTING}
    for record in page.requests:
        sent = requested[record.request_id]
        closed = ("no", "x1") if record.request_id == "a" else ("", "")
        assert (
            replace(
                sent,
                state=states.get(sent.request_id, PENDING),
                stored_plan=sent.plan.body(),
                closed_reason=closed[0],
                closed_event_id=closed[1],
            )
            == record
        )


def test_request_pages_continue_after_the_last_creation_time_and_id(
    store: ContractStore, requested: dict[str, DeletionRequestRecord]
) -> None:
    """A full page names its last (created_at text, request id); the last page names None;
    a cursor inside a tie continues by id (descending); votes come with each request."""
    cast(store, "v1", "d", vote("bob"))
    seen: list[list[str]] = []
    after: tuple[str, str] | None = None
    while True:
        page = store.deletion_requests(DeletionRequestQuery(limit=2, after=after))
        seen.append(request_ids(page.requests))
        if page.next_after is None:
            break
        last = page.requests[-1]
        assert (format_time(last.created_at), last.request_id) == page.next_after
        after = page.next_after
    assert [["g", "f"], ["e", "d"], ["c", "b"], ["a"]] == seen
    exact = store.deletion_requests(DeletionRequestQuery(limit=7))
    assert (7, None) == (len(exact.requests), exact.next_after)
    tie = store.deletion_requests(
        DeletionRequestQuery(after=(format_time(requested["d"].created_at), "d"))
    )
    assert ["c", "b", "a"] == request_ids(tie.requests)
    voted = store.deletion_requests(
        DeletionRequestQuery(limit=1, after=("9999", "z"), domain="demo")
    )
    assert ["g"] == request_ids(voted.requests)
    with_votes = store.deletion_requests(DeletionRequestQuery(state=PENDING))
    assert {"d": ("bob",)} == {
        r.request_id: tuple(v.approver for v in r.votes) for r in with_votes.requests if r.votes
    }
    assert [] == list(store.deletion_requests(DeletionRequestQuery(limit=0)).requests)


def test_expired_requests_are_the_pending_ones_past_their_expiry_soonest_first(
    store: ContractStore,
) -> None:
    """Pending, expiry not after now (equal counts), by expiry then id, at most `limit`; a
    request in any other state is never listed as expired."""
    create(
        store,
        "e1",
        request("late", expires=30),
        request("b", expires=10),
        request("a", expires=10),
        request("soon", expires=5),
        request("gone", expires=1),
        request("future", expires=60),
    )
    move(store, "x1", "gone", EXECUTING)
    assert [] == store.expired_requests(minutes(4), 10)
    assert ["soon", "a", "b"] == request_ids(store.expired_requests(minutes(10), 10))
    assert ["soon", "a"] == request_ids(store.expired_requests(minutes(10), 2))
    assert [] == store.expired_requests(minutes(10), 0)
    move(store, "x2", "soon", RequestState.EXPIRED, reason="expired")
    assert ["a", "b", "late"] == request_ids(store.expired_requests(minutes(59), 10))
    [record] = store.expired_requests(minutes(10), 1)
    assert replace(request("a", expires=10), stored_plan=record.plan.body()) == record


def test_a_tampered_plan_reads_back_as_stored_and_garbage_is_plan_tampered(
    store: ContractStore,
) -> None:
    """A plan changed in the store parses (its digest differs from plan_hash, as does the
    stored body's); one that is not a plan is PlanTamperedError naming the request."""
    sent = request("r1")
    create(store, "e1", sent)
    body_ = sent.plan.body()
    body_["versions"][0]["revision"] = "forged"
    tamper(store, "r1", json.dumps(body_))
    record = found(store, "r1")
    assert "forged" == record.plan.versions[0].revision
    assert record.plan.digest() != record.plan_hash == sent.plan_hash
    assert record.stored_plan is not None
    assert plan_digest(record.stored_plan) != record.plan_hash
    for garbage in ("not json", "[]", json.dumps({**sent.plan.body(), "allow_partial": "yes"})):
        tamper(store, "r1", garbage)
        with pytest.raises(PlanTamperedError, match="r1") as caught:
            store.deletion_request("r1")
        assert "r1" == caught.value.request_id
        with pytest.raises(PlanTamperedError):
            store.deletion_requests(DeletionRequestQuery())


# --- the webhook outbox ------------------------------------------------------------------------


def hook(event_id: str, *, created: float = 0.0, kind: str = "created") -> WebhookEvent:
    return WebhookEvent(
        event_id=event_id,
        kind=kind,
        request_id="r1",
        payload={"kind": kind, "versions": ["1.0"], "n": 1, "none": None},
        created_at=minutes(created),
    )


def notify(store: AuditStore, event: str, *events: WebhookEvent) -> StoredEntry:
    return store.append(NewEntry(body(event), approvals=ApprovalEffects(notify=events)))


def hook_ids(claimed: Sequence[tuple[WebhookEvent, int]]) -> list[str]:
    return [event.event_id for event, _ in claimed]


def test_notifications_are_claimed_oldest_first_once_until_their_lease_ends(
    store: ContractStore,
) -> None:
    """Due (next attempt not after now: at first, its creation), undelivered and unleased
    (no lease, or one that ended by now): oldest first, at most `limit`, with the attempts
    so far; each reads back as queued (the payload as JSON gives it)."""
    a, b, c = hook("a", created=-10), hook("b", created=-5), hook("c", created=10)
    notify(store, "n1", c, b)
    notify(store, "n2", a, replace(b, kind="again"))  # b queued again: the first one stays
    assert [(a, 0)] == store.claim_webhooks(T0, minutes(5), 1)
    assert [(b, 0)] == store.claim_webhooks(T0, minutes(5), 10)
    assert [] == store.claim_webhooks(T0, minutes(5), 10)
    assert [] == store.claim_webhooks(minutes(4), minutes(9), 10)
    assert [] == store.claim_webhooks(minutes(5), minutes(10), 0)
    assert ["a", "b"] == hook_ids(store.claim_webhooks(minutes(5), minutes(20), 10))
    assert ["c"] == hook_ids(store.claim_webhooks(minutes(10), minutes(15), 10))
    assert ["a", "b", "c"] == hook_ids(store.claim_webhooks(minutes(20), minutes(25), 10))
    claimed = {e.event_id: e for e, _ in store.claim_webhooks(minutes(30), minutes(31), 10)}
    assert "created" == claimed["b"].kind


def test_a_delivered_notification_is_never_claimed_again(store: ContractStore) -> None:
    notify(store, "n1", hook("a", created=-10), hook("b", created=-5))
    assert ["a", "b"] == hook_ids(store.claim_webhooks(T0, minutes(5), 10))
    store.webhook_delivered("a")
    record = store.webhook_record("a")
    assert record is not None
    delivered_at, attempts, _, _, owner, until = record
    assert (1, None, None) == (attempts, owner, until)
    assert delivered_at is not None
    store.webhook_delivered("a")  # again: nothing
    assert record == store.webhook_record("a")
    store.webhook_failed("a", retry_at=T0, error="late")  # delivered: nothing
    assert record == store.webhook_record("a")
    assert ["b"] == hook_ids(store.claim_webhooks(minutes(6), minutes(10), 10))
    store.webhook_delivered("nothing")
    assert None is store.webhook_record("nothing")


def test_a_failed_notification_counts_its_attempt_and_is_due_again_at_its_retry_time(
    store: ContractStore,
) -> None:
    """Only while leased to this replica: a failure of an unleased notification does
    nothing."""
    a, b = hook("a", created=-10), hook("b", created=-5)
    notify(store, "n1", a, b)
    store.webhook_failed("a", retry_at=minutes(60), error="not leased")
    assert (None, 0, "", format_time(a.created_at), None, None) == store.webhook_record("a")
    assert [(a, 0), (b, 0)] == store.claim_webhooks(T0, minutes(5), 10)
    assert (None, 0, "", format_time(a.created_at), "gateway", format_time(minutes(5))) == (
        store.webhook_record("a")
    )
    store.webhook_failed("a", retry_at=minutes(30), error="HTTP 502")
    assert (None, 1, "HTTP 502", format_time(minutes(30)), None, None) == store.webhook_record("a")
    assert [] == store.claim_webhooks(minutes(1), minutes(6), 10)  # a waits; b is leased
    assert [(b, 0)] == store.claim_webhooks(minutes(29), minutes(34), 10)
    assert [(a, 1)] == store.claim_webhooks(minutes(30), minutes(35), 10)
    store.webhook_failed("a", retry_at=minutes(40), error="timeout")
    assert (2, "timeout") == store.webhook_record("a")[1:3]  # type: ignore[index]
