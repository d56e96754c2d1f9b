"""The SQLite audit store takes any JSON value and verify reads every row it holds."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pkggov_gateway.adapters.sql import open_audit_store
from pkggov_gateway.domain.audit import NewEntry, format_time
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.tools.audit_verify import verify


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "kind": "outcome",
        "time": format_time(datetime.now(UTC)),
        "principal": {"id": "alice"},
        **extra,
    }


def test_an_unencodable_string_is_recorded_and_the_store_stays_healthy(tmp_path: Path) -> None:
    """A lone surrogate (possible in decoded upstream JSON) neither fails nor jams the store."""
    store = open_audit_store(f"sqlite:{tmp_path}/audit.db")
    try:
        odd = store.append(NewEntry(_body(upstream={"message": "bad \ud800 text"})), durable=True)
        after = store.append(NewEntry(_body()))
        assert odd.seq + 1 == after.seq
        assert store.healthy()
        assert "bad \ud800 text" == store.event(odd.event_id).entries[0].body["upstream"]["message"]  # type: ignore[union-attr]
        assert verify(store.iter_rows()).ok
    finally:
        store.close()


def test_a_numeric_principal_is_a_text_column_that_verifies(tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:{tmp_path}/audit.db")
    try:
        store.append(NewEntry(_body(principal={"id": 42})))
        assert verify(store.iter_rows()).ok
    finally:
        store.close()


def test_a_row_moved_to_a_negative_seq_is_not_hidden_from_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    store = open_audit_store(f"sqlite:{path}")
    for _ in range(3):
        store.append(NewEntry(_body()))
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_entries SET seq = -5 WHERE seq = 3")
    store = open_audit_store(f"sqlite:{path}")
    try:
        report = verify(store.iter_rows())
    finally:
        store.close()
    assert 3 == report.entries
    assert not report.ok


def test_an_entry_appended_again_is_not_recorded_twice(tmp_path: Path) -> None:
    """A durable entry retried after a commit whose answer was lost finds itself stored: the
    same body is the stored entry again, another body under its event and kind is refused."""
    store = open_audit_store(f"sqlite:{tmp_path}/audit.db")
    try:
        intent = _body(kind="intent", forward=["1.0.0"])
        first = store.append(NewEntry(intent), durable=True)
        outcome = {**_body(kind="outcome", deleted=1), "event_id": first.event_id}
        stored = store.append(NewEntry(outcome), durable=True)
        again = store.append(NewEntry(dict(outcome)), durable=True)
        assert (again.seq, again.hash) == (stored.seq, stored.hash)
        with pytest.raises(AuditUnavailableError, match="already recorded differently"):
            store.append(NewEntry({**outcome, "deleted": 0}))
        event = store.event(first.event_id)
        assert event is not None
        assert [e.kind.value for e in event.entries] == ["intent", "outcome"]
        assert len(list(store.iter_rows())) == 2
        assert verify(store.iter_rows()).ok
    finally:
        store.close()
