"""Chain verification: every kind of tampering is found at its first place and named right.

Every test of verify runs with the default chunk size and with tiny chunks (so that look-ahead
crosses chunk boundaries); a few also run with worker processes checking the rows.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

from pkggov_gateway.domain.audit import (
    COLUMNS,
    GENESIS,
    canonical,
    chain_hash,
    column_values,
    columns_of,
)
from pkggov_gateway.tools import _verify_source, audit_verify
from pkggov_gateway.tools.audit_verify import Problem, VerifyReport, verify

Row = tuple[Any, ...]
BODY = 1 + len(COLUMNS)
PREV, HASH = BODY + 1, BODY + 2
PRINCIPAL = 1 + COLUMNS.index("principal")


@pytest.fixture(autouse=True, params=[2000, 1, 3], ids=["chunk2000", "chunk1", "chunk3"])
def chunk_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Rows per chunk: the default, and sizes that put rows on both sides of a boundary."""
    size = int(request.param)
    monkeypatch.setattr(_verify_source, "_CHUNK", size)
    return size


def body(n: int, **changes: Any) -> dict[str, Any]:
    """A realistic outcome body for event ``ev-<n>``."""
    return {
        "event_id": f"ev-{n:03d}",
        "kind": "outcome",
        "time": f"2025-01-01T00:00:{n % 60:02d}.000000Z",
        "principal": {"id": "alice"},
        "request": {"domain": "d", "repository": "r", "package": "p", "versions": ["1.0"]},
        "decision": "allowed",
        "status": {"code": "OK"},
        "deleted": 1,
        **changes,
    }


def row(seq: int, entry: dict[str, Any], prev_hash: str, digest: str | None = None) -> Row:
    """A stored row as an attacker (or the store) would write it: columns from the body."""
    text = canonical(entry)
    columns = columns_of(entry)
    values = tuple(getattr(columns, name) for name in COLUMNS)
    return (seq, *values, text, prev_hash, digest or chain_hash(prev_hash, text))


def chain(count: int) -> list[Row]:
    """`count` valid rows, seq 1..count, events ev-001...."""
    rows: list[Row] = []
    prev = GENESIS
    for n in range(1, count + 1):
        rows.append(row(n, body(n), prev))
        prev = rows[-1][HASH]
    return rows


def renumber(rows: list[Row]) -> list[Row]:
    """The rows with seq 1..n again (an attacker hiding a gap)."""
    return [(n, *r[1:]) for n, r in enumerate(rows, start=1)]


def replace(r: Row, index: int, value: Any) -> Row:
    return (*r[:index], value, *r[index + 1 :])


def problem(report: VerifyReport) -> tuple[str, int | None, str | None]:
    assert not report.ok
    found = report.first_problem
    assert found is not None
    return found.kind, found.seq, found.event_id


# --- intact chains ------------------------------------------------------------------------


def test_an_empty_store_is_ok() -> None:
    assert VerifyReport(True, 0, None, None, None) == verify([])


def test_an_intact_chain_is_ok_and_reports_its_head() -> None:
    rows = chain(10)
    assert VerifyReport(True, 10, 10, rows[-1][HASH], None) == verify(rows)


def test_an_intact_chain_read_from_a_generator() -> None:
    rows = chain(5)
    assert verify(iter(rows)).ok


def test_rows_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="values, expected"):
        verify([(1, "x")])


# --- modified -----------------------------------------------------------------------------


def test_a_changed_body_is_modified_at_that_row() -> None:
    rows = chain(10)
    text = rows[4][BODY].replace('"allowed"', '"denied"')
    rows[4] = replace(rows[4], BODY, text)
    report = verify(rows)
    assert ("modified", 5, "ev-005") == problem(report)
    assert report.first_problem is not None
    assert "ev-005" in report.first_problem.message
    assert "seq 5" in report.first_problem.message


def test_a_changed_hash_is_modified_at_that_row() -> None:
    rows = chain(10)
    rows[6] = replace(rows[6], HASH, "f" * 64)
    assert ("modified", 7, "ev-007") == problem(verify(rows))


def test_a_changed_prev_hash_is_modified_at_that_row() -> None:
    rows = chain(10)
    rows[6] = replace(rows[6], PREV, "e" * 64)
    assert ("modified", 7, "ev-007") == problem(verify(rows))


def test_a_next_row_pointing_back_is_reported_there_not_before() -> None:
    """Row 5's prev_hash is set to row 4's: row 5 is the modified one, row 4 is fine."""
    rows = chain(10)
    rows[4] = replace(rows[4], PREV, rows[3][PREV])
    assert ("modified", 5, "ev-005") == problem(verify(rows))


def test_a_body_that_is_not_an_entry_but_hashes_is_modified() -> None:
    rows = chain(4)
    forged = (*rows[2][:BODY], "not json", rows[1][HASH], chain_hash(rows[1][HASH], "not json"))
    rows[2] = forged
    rows[3] = row(4, body(4), forged[HASH])
    assert ("modified", 3, "ev-003") == problem(verify(rows))


# --- columns ------------------------------------------------------------------------------


def test_an_indexed_column_that_disagrees_with_the_body_is_columns() -> None:
    rows = chain(10)
    rows[2] = replace(rows[2], PRINCIPAL, "mallory")
    report = verify(rows)
    assert ("columns", 3, "ev-003") == problem(report)


def test_a_changed_and_rehashed_body_with_stale_columns_is_columns() -> None:
    """The body says denied, re-hashed, but the decision column still says allowed."""
    rows = chain(6)
    text = canonical(body(3, decision="denied"))
    rows[2] = (*rows[2][:BODY], text, rows[2][PREV], chain_hash(rows[2][PREV], text))
    assert ("columns", 3, "ev-003") == problem(verify(rows))


# --- deleted ------------------------------------------------------------------------------


def test_a_deleted_row_is_reported_at_the_row_after_the_gap() -> None:
    rows = chain(10)
    del rows[4]
    report = verify(rows)
    assert ("deleted", 6, "ev-006") == problem(report)
    assert report.first_problem is not None
    assert "seq jumps from 4 to 6" in report.first_problem.message


def test_a_deleted_row_with_renumbered_seqs_is_still_found() -> None:
    rows = chain(10)
    del rows[4]
    assert ("deleted", 5, "ev-006") == problem(verify(renumber(rows)))


def test_several_deleted_rows_are_one_gap() -> None:
    rows = chain(10)
    del rows[3:7]
    assert ("deleted", 8, "ev-008") == problem(verify(rows))


def test_a_deleted_first_row_is_reported_at_the_new_first_row() -> None:
    rows = chain(5)
    del rows[0]
    report = verify(renumber(rows))
    assert ("deleted", 1, "ev-002") == problem(report)
    assert report.first_problem is not None
    assert "genesis" in report.first_problem.message


def test_a_rewritten_and_rehashed_row_breaks_the_next_link() -> None:
    """A known limit: a re-hashed body (columns updated too) looks like a deletion after it."""
    rows = chain(6)
    rows[2] = row(3, body(3, decision="denied"), rows[2][PREV])
    report = verify(rows)
    assert ("deleted", 4, "ev-004") == problem(report)
    assert report.first_problem is not None
    assert "re-hashed" in report.first_problem.message


def test_a_truncated_tail_is_not_visible_without_an_anchor() -> None:
    rows = chain(10)
    assert verify(rows[:7]).ok


# --- inserted -----------------------------------------------------------------------------


def test_an_inserted_row_with_a_valid_hash_is_found() -> None:
    rows = chain(10)
    forged = row(99, body(99, principal={"id": "mallory"}), rows[3][HASH])
    rows.insert(4, forged)
    assert ("inserted", 5, "ev-099") == problem(verify(renumber(rows)))


def test_an_inserted_row_before_the_first_is_found() -> None:
    rows = chain(5)
    rows.insert(0, row(0, body(99), GENESIS))
    assert ("inserted", 0, "ev-099") == problem(verify(rows))


def test_an_inserted_row_with_a_bad_hash_and_a_new_event_is_inserted() -> None:
    rows = chain(10)
    rows.insert(4, row(99, body(99), rows[3][HASH], digest="a" * 64))
    report = verify(renumber(rows))
    assert ("inserted", 5, "ev-099") == problem(report)
    assert report.first_problem is not None
    assert "does not verify" in report.first_problem.message


def test_an_inserted_row_with_a_bad_hash_and_a_known_event_is_modified() -> None:
    rows = chain(10)
    rows.insert(4, row(99, body(2, kind="reconciliation"), rows[3][HASH], digest="a" * 64))
    assert ("modified", 5, "ev-002") == problem(verify(renumber(rows)))


def test_an_inserted_row_whose_event_comes_later_with_a_bad_hash_is_modified() -> None:
    rows = chain(10)
    rows.insert(4, row(99, body(8, kind="intent"), rows[3][HASH], digest="a" * 64))
    assert ("modified", 5, "ev-008") == problem(verify(renumber(rows)))


def test_several_inserted_rows_are_reported_at_the_first() -> None:
    rows = chain(10)
    first = row(0, body(98), rows[3][HASH])
    second = row(0, body(99), first[HASH])
    rows[4:4] = [first, second]
    report = verify(renumber(rows))
    assert ("inserted", 5, "ev-098") == problem(report)
    assert report.first_problem is not None
    assert "2 entries inserted" in report.first_problem.message


def test_inserted_rows_further_back_than_the_window_are_named_by_the_next_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_verify, "_WINDOW", 2)
    rows = chain(10)
    forged = [row(0, body(97), rows[3][HASH])]
    for n in (98, 99):
        forged.append(row(0, body(n), forged[-1][HASH]))
    rows[4:4] = forged
    report = verify(renumber(rows))
    assert ("inserted", 8, "ev-005") == problem(report)
    assert report.first_problem is not None
    assert "the 3 entries before it are not part of the chain" in report.first_problem.message


def test_a_copy_of_a_later_row_is_inserted() -> None:
    rows = chain(10)
    rows.insert(3, rows[7])
    assert ("inserted", 4, "ev-008") == problem(verify(renumber(rows)))


def test_a_copy_of_an_earlier_row_is_inserted() -> None:
    rows = chain(10)
    rows.insert(6, rows[2])
    assert ("inserted", 7, "ev-003") == problem(verify(renumber(rows)))


# --- reordered ----------------------------------------------------------------------------


def swap_seqs(rows: list[Row], a: int, b: int) -> list[Row]:
    """The rows at seq `a` and `b` exchange seqs (and so places in seq order)."""
    swapped = list(rows)
    i, j = a - 1, b - 1
    swapped[i], swapped[j] = (a, *rows[j][1:]), (b, *rows[i][1:])
    return swapped


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (4, 5, ("reordered", 4, "ev-005")),
        (3, 8, ("reordered", 3, "ev-008")),
        (1, 2, ("reordered", 1, "ev-002")),
        (1, 10, ("reordered", 1, "ev-010")),
        (9, 10, ("reordered", 9, "ev-010")),
    ],
)
def test_swapped_rows_are_reordered_at_the_first_out_of_place(
    a: int, b: int, expected: tuple[str, int, str]
) -> None:
    report = verify(swap_seqs(chain(10), a, b))
    assert expected == problem(report)


def test_a_row_moved_back_is_reordered() -> None:
    rows = chain(10)
    moved = rows.pop(7)
    rows.insert(2, moved)
    assert ("reordered", 3, "ev-008") == problem(verify(renumber(rows)))


# --- the first problem --------------------------------------------------------------------


def test_only_the_first_problem_is_reported() -> None:
    rows = chain(20)
    rows[14] = replace(rows[14], PRINCIPAL, "mallory")
    del rows[9]
    rows[3] = replace(rows[3], BODY, rows[3][BODY].replace("alice", "bob"))
    report = verify(rows)
    assert ("modified", 4, "ev-004") == problem(report)
    assert 19 == report.entries
    assert (20, rows[-1][HASH]) == (report.head_seq, report.head_hash)


def test_a_swap_before_a_modification_is_reported_first() -> None:
    rows = swap_seqs(chain(20), 2, 3)
    rows[10] = replace(rows[10], HASH, "0" * 64)
    assert ("reordered", 2, "ev-003") == problem(verify(rows))


def test_every_row_is_counted_after_a_problem() -> None:
    rows = chain(30)
    rows[0] = replace(rows[0], HASH, "1" * 64)
    report = verify(rows)
    assert (30, 30, rows[-1][HASH]) == (report.entries, report.head_seq, report.head_hash)


# --- expect_head --------------------------------------------------------------------------


def test_the_recorded_head_still_in_the_chain_is_ok() -> None:
    rows = chain(10)
    anchor = verify(rows[:6]).head_hash
    assert verify(rows, expect_head=anchor).ok


def test_a_truncated_tail_is_deleted_with_the_recorded_head() -> None:
    rows = chain(10)
    anchor = verify(rows).head_hash
    report = verify(rows[:7], expect_head=anchor)
    assert ("deleted", 7, "ev-007") == problem(report)
    assert report.first_problem is not None
    assert f"recorded head {anchor}" in report.first_problem.message


def test_an_emptied_store_with_a_recorded_head_is_deleted() -> None:
    anchor = verify(chain(3)).head_hash
    report = verify([], expect_head=anchor)
    expected = Problem(
        None,
        None,
        "deleted",
        f"the chain no longer contains the recorded head {anchor}: "
        "entries after it were deleted, or the chain was rewritten",
    )
    assert VerifyReport(False, 0, None, None, expected) == report


def test_a_chain_problem_comes_before_a_missing_head() -> None:
    rows = chain(10)
    anchor = rows[-1][HASH]
    rows = rows[:8]
    rows[1] = replace(rows[1], PRINCIPAL, "mallory")
    assert ("columns", 2, "ev-002") == problem(verify(rows, expect_head=anchor))


# --- bodies that are not entries ----------------------------------------------------------


def test_a_body_with_surrounding_whitespace_is_still_an_entry() -> None:
    rows = chain(3)
    text = " " + rows[1][BODY] + "\n"
    rows[1] = (*rows[1][:BODY], text, rows[0][HASH], chain_hash(rows[0][HASH], text))
    rows[2] = (*rows[2][:PREV], rows[1][HASH], chain_hash(rows[1][HASH], rows[2][BODY]))
    assert verify(rows).ok


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "[]", '{"kind": "outcome"}', '"text"', "", "{"],
    ids=["deeply-nested", "array", "no-event-id", "string", "empty", "truncated"],
)
def test_a_hashed_body_that_is_no_entry_is_modified(text: str) -> None:
    rows = chain(3)
    rows[1] = (*rows[1][:BODY], text, rows[0][HASH], chain_hash(rows[0][HASH], text))
    rows[2] = (*rows[2][:PREV], rows[1][HASH], chain_hash(rows[1][HASH], rows[2][BODY]))
    assert ("modified", 2, "ev-002") == problem(verify(rows))


# --- the test rows, and the fast column check agrees with columns_of ----------------------


class TestWithoutVerify:
    """Tests that never call verify: the chunk size does not matter, so they run once."""

    @pytest.fixture(autouse=True)
    def chunk_size(self) -> int:
        """Overrides the module's: the default chunk size, untouched."""
        return int(_verify_source._CHUNK)

    def test_rows_built_here_match_the_store_layout(self) -> None:
        """The helper's rows hold exactly what columns_of derives (so the tests test verify)."""
        r = chain(1)[0]
        assert json.loads(r[BODY]) == body(1)
        assert "alice" == r[PRINCIPAL]

    @pytest.mark.parametrize(
        "entry",
        [
            body(1),
            body(2, request_id="r-1", forward=["1.0", "2.0"], deleted=0),
            body(3, kind="intent", deleted=True, forward=[]),
            body(4, principal=None, request=None, status=None, decision=""),
            body(5, principal={}, request={"versions": []}, status={"code": ""}, request_id=""),
            body(
                6, request={"domain": "d", "format": "npm", "namespace": "", "versions": [1, 2.5]}
            ),
            body(7, forward="not a list", deleted="3", time=12),
            {"event_id": 8, "kind": "outcome", "time": "t"},
        ],
        ids=lambda entry: str(entry["event_id"]),
    )
    def test_the_column_values_are_columns_of(self, entry: dict[str, Any]) -> None:
        expected = tuple(getattr(columns_of(entry), name) for name in COLUMNS)
        assert expected == column_values(entry)

    @pytest.mark.parametrize(
        "entry",
        [{"kind": "outcome", "time": "t"}, {"event_id": "e", "time": "t"}, {"event_id": "e"}],
    )
    def test_the_column_values_fail_where_columns_of_fails(self, entry: dict[str, Any]) -> None:
        with pytest.raises(KeyError):
            columns_of(entry)
        with pytest.raises(KeyError):
            column_values(entry)


# --- with worker processes ----------------------------------------------------------------


def tampered(kind: str) -> tuple[list[Row], tuple[str, int, str] | None]:
    """60 rows tampered with past where the workers take over, and the expected problem."""
    rows = chain(60)
    if kind == "modified":
        rows[40] = replace(rows[40], BODY, rows[40][BODY].replace("alice", "bob"))
        return rows, ("modified", 41, "ev-041")
    if kind == "columns":
        rows[33] = replace(rows[33], PRINCIPAL, "mallory")
        return rows, ("columns", 34, "ev-034")
    if kind == "deleted":
        del rows[50]
        return renumber(rows), ("deleted", 51, "ev-052")
    if kind == "inserted":
        rows.insert(45, row(0, body(99), rows[44][HASH]))
        return renumber(rows), ("inserted", 46, "ev-099")
    if kind == "reordered":
        return swap_seqs(rows, 30, 55), ("reordered", 30, "ev-055")
    return rows, None


class TestWorkerProcesses:
    """Past `_PARALLEL_AFTER` rows, spawned worker processes check the rows."""

    @pytest.fixture(autouse=True)
    def chunk_size(self, monkeypatch: pytest.MonkeyPatch) -> int:
        """Overrides the module's: tiny chunks, workers from the tenth row on."""
        monkeypatch.setattr(_verify_source, "_CHUNK", 3)
        monkeypatch.setattr(_verify_source, "_PARALLEL_AFTER", 9)
        return 3

    @pytest.mark.parametrize(
        "kind", ["untouched", "modified", "columns", "deleted", "inserted", "reordered"]
    )
    def test_they_find_the_same_problems(self, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        pools: list[object] = []
        start_pool = _verify_source._start_pool

        def recording(workers: int) -> Any:
            pool = start_pool(workers)
            pools.append(pool)
            return pool

        monkeypatch.setattr(_verify_source, "_start_pool", recording)
        rows, expected = tampered(kind)
        report = verify(rows, workers=2)
        assert 1 == len(pools)
        assert pools[0] is not None
        assert report == verify(rows, workers=0)
        assert expected == (None if report.ok else problem(report))

    def test_without_a_pool_the_rows_are_checked_here(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_verify_source, "_start_pool", lambda workers: None)
        rows, expected = tampered("columns")
        assert expected == problem(verify(rows, workers=2))

    def test_a_broken_pool_leaves_the_rows_to_be_checked_here(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Broken(Executor):
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                raise BrokenProcessPool("no workers")

        monkeypatch.setattr(_verify_source, "_start_pool", lambda workers: Broken())
        rows, expected = tampered("modified")
        assert expected == problem(verify(rows, workers=2))
