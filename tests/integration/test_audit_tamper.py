"""Tampering with a real audit store, as an attacker with SQL access would, is found by verify.

Each test writes real events through the store (SQLite in a temporary folder, and PostgreSQL
on 127.0.0.1:5432 in a schema of its own), closes it, changes the table with plain SQL, then
reads the rows back through a new store and checks what `verify` reports.

PostgreSQL: user ``postgres`` (trust), database ``test``. When it cannot be reached the
PostgreSQL cases are skipped, unless the CI environment variable is set (then they fail).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pkggov_gateway.adapters.sql import open_audit_store
from pkggov_gateway.domain.audit import (
    COLUMNS,
    NewEntry,
    StoredEntry,
    canonical,
    chain_hash,
    column_values,
    format_time,
)
from pkggov_gateway.tools.audit_verify import VerifyReport, verify
from tests.conftest import pg_schema_url

EVENTS = 20


@dataclass
class Database:
    """A store's URL, and plain SQL on its table (the attacker's access)."""

    url: str
    kind: str
    path: Path | None = None

    def execute(self, *statements: tuple[str, Sequence[Any]]) -> None:
        """Run `statements` (``?`` placeholders) in one transaction."""
        if self.kind == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(self.path)
            try:
                with conn:
                    for query, params in statements:
                        conn.execute(query, tuple(params))
            finally:
                conn.close()
        else:
            with psycopg.connect(self.url) as pg, pg.transaction():
                for query, params in statements:
                    pg.execute(query.replace("?", "%s"), tuple(params))

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row, read the way an operator's verification reads them."""
        store = open_audit_store(self.url)
        try:
            return list(store.iter_rows())
        finally:
            store.close()

    def verify(self, **options: Any) -> VerifyReport:
        return verify(self.rows(), **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty store's database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        path = tmp_path / "audit.db"
        return Database(f"sqlite:///{path}", "sqlite", path)
    schema = request.getfixturevalue("pg_schema")
    return Database(pg_schema_url(schema), "postgresql")


@pytest.fixture
def events(database: Database) -> list[StoredEntry]:
    """`EVENTS` outcomes written through the store (seq 1..EVENTS); the store is closed."""
    store = open_audit_store(database.url)
    try:
        return [store.append(NewEntry(_body())) for _ in range(EVENTS)]
    finally:
        store.close()


def _body(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "kind": "outcome",
        "time": format_time(datetime.now(UTC)),
        "principal": {"id": "alice"},
        "request": {"domain": "d", "repository": "r", "package": "p", "versions": ["1.0"]},
        "decision": "allowed",
        "status": {"code": "OK"},
        "deleted": 1,
        **changes,
    }


def _shift(after: int, by: int) -> list[tuple[str, Sequence[Any]]]:
    """Move every row past seq `after` by `by`, through negative seqs (no key conflicts)."""
    return [
        ("UPDATE audit_entries SET seq = -seq WHERE seq > ?", (after,)),
        ("UPDATE audit_entries SET seq = -seq + ? WHERE seq < 0", (by,)),
    ]


def _found(report: VerifyReport) -> tuple[str, int | None, str | None]:
    assert not report.ok
    assert report.first_problem is not None
    return report.first_problem.kind, report.first_problem.seq, report.first_problem.event_id


def test_an_untouched_store_verifies(database: Database, events: list[StoredEntry]) -> None:
    report = database.verify()
    assert VerifyReport(True, EVENTS, EVENTS, events[-1].hash, None) == report
    assert [(e.seq, e.hash) for e in events] == [(row[0], row[-1]) for row in database.rows()]


def test_a_changed_body_is_modified(database: Database, events: list[StoredEntry]) -> None:
    target = events[6]
    database.execute(
        (
            "UPDATE audit_entries SET body = replace(body, ?, ?) WHERE seq = ?",
            ('"decision":"allowed"', '"decision":"denied"', target.seq),
        )
    )
    report = database.verify()
    assert ("modified", 7, target.event_id) == _found(report)
    assert report.first_problem is not None
    assert f"entry {target.event_id} (seq 7)" in report.first_problem.message


def test_a_changed_principal_column_is_columns(
    database: Database, events: list[StoredEntry]
) -> None:
    target = events[11]
    database.execute(
        ("UPDATE audit_entries SET principal = ? WHERE seq = ?", ("mallory", target.seq))
    )
    assert ("columns", 12, target.event_id) == _found(database.verify())


def test_a_deleted_row_is_found_after_the_gap(
    database: Database, events: list[StoredEntry]
) -> None:
    database.execute(("DELETE FROM audit_entries WHERE seq = ?", (9,)))
    report = database.verify()
    assert ("deleted", 10, events[9].event_id) == _found(report)
    assert EVENTS - 1 == report.entries


def test_a_deleted_row_is_found_though_seqs_are_renumbered(
    database: Database, events: list[StoredEntry]
) -> None:
    database.execute(("DELETE FROM audit_entries WHERE seq = ?", (9,)), *_shift(9, -1))
    rows = database.rows()
    assert list(range(1, EVENTS)) == [row[0] for row in rows]  # no gap left to see
    assert ("deleted", 9, events[9].event_id) == _found(verify(rows))


def test_a_deleted_first_row_is_found(database: Database, events: list[StoredEntry]) -> None:
    database.execute(("DELETE FROM audit_entries WHERE seq = ?", (1,)), *_shift(1, -1))
    assert ("deleted", 1, events[1].event_id) == _found(database.verify())


def test_an_inserted_row_with_a_valid_hash_is_found(
    database: Database, events: list[StoredEntry]
) -> None:
    """The attacker chains a forged outcome onto seq 5, and moves the rest up by one."""
    k = 5
    forged = _body(principal={"id": "bob"}, decision="denied", status={"code": "DENIED"})
    text = canonical(forged)
    prev = events[k - 1].hash
    names = ", ".join(("seq", *COLUMNS, "body", "prev_hash", "hash"))
    marks = ", ".join("?" for _ in range(len(COLUMNS) + 4))
    values = (k + 1, *column_values(forged), text, prev, chain_hash(prev, text))
    database.execute(
        *_shift(k, +1),
        (f"INSERT INTO audit_entries ({names}) VALUES ({marks})", values),  # noqa: S608
    )
    report = database.verify()
    assert ("inserted", k + 1, forged["event_id"]) == _found(report)
    assert EVENTS + 1 == report.entries


def test_swapped_rows_are_reordered(database: Database, events: list[StoredEntry]) -> None:
    database.execute(
        ("UPDATE audit_entries SET seq = -1 WHERE seq = ?", (4,)),
        ("UPDATE audit_entries SET seq = ? WHERE seq = ?", (4, 15)),
        ("UPDATE audit_entries SET seq = ? WHERE seq = -1", (15,)),
    )
    report = database.verify()
    assert ("reordered", 4, events[14].event_id) == _found(report)


def test_a_truncated_tail_is_found_only_with_the_recorded_head(
    database: Database, events: list[StoredEntry]
) -> None:
    anchor = database.verify().head_hash
    assert events[-1].hash == anchor
    database.execute(("DELETE FROM audit_entries WHERE seq > ?", (17,)))
    assert database.verify().ok  # the known limit: the chain alone cannot show it
    report = database.verify(expect_head=anchor)
    assert ("deleted", 17, events[16].event_id) == _found(report)
