"""Verify the audit hash chain: find the first place where the stored chain was tampered with.

`verify` reads a store's rows in ``seq`` order (`SqlAuditStore.iter_rows`: seq, the indexed
columns, body, prev_hash, hash) and checks, for every row, that

- its hash is ``chain_hash(prev_hash, body)`` (else the row was *modified*);
- its indexed columns are what `columns_of` derives from its body (else *columns*);
- its prev_hash is the hash of the row before it (``GENESIS`` for the first row).

``seq`` is not hashed: it is only where a row is stored, and whoever can write the table can
renumber it. So a broken link is classified from the hashes alone:

- *deleted*: the row's prev_hash is the hash of no row in the store: the rows it followed
  are gone (reported at the row after the gap; a seq gap, if any, is named as a hint);
- *inserted*: the row is skipped by the chain (the next row links to the row before it, or
  a later row links back past it), or it is a copy of another row (the same hash);
- *reordered*: the row's prev_hash is the hash of a row that comes *later* in seq order
  (rows were swapped or moved; reported at the first row out of place).

Only the first problem in chain order is reported: what follows a break is not reliable.

Known limits (what a hash chain alone cannot show):

- Deleting the newest entries (truncating the tail) leaves a valid, shorter chain. The report's
  `head_seq` / `head_hash` are what an operator records elsewhere (an *anchor*, like a signed
  CloudTrail digest); passing the recorded hash back as ``expect_head`` reports a *deleted*
  problem when the chain no longer contains it.
- Appending forged entries after the head, or rewriting every entry from some point on (each
  re-hashed), also leaves a valid chain: only an anchor recorded earlier shows it.
- A row whose body was changed *and* re-hashed breaks the link of the row after it exactly
  as deleting rows before that one does: both are reported as *deleted* at the row after
  (the message says so).

Memory: the hashes and event ids of the rows read so far (to classify a broken link), and a
short window of recent rows; rows after the first problem are only compared, not kept.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

from pkggov_gateway.adapters.audit_sql import COLUMNS
from pkggov_gateway.domain.audit import GENESIS, columns_of

__all__ = ["Problem", "ProblemKind", "VerifyReport", "verify"]

ProblemKind = Literal["modified", "deleted", "inserted", "reordered", "columns"]

_BODY = 1 + len(COLUMNS)
_PREV = _BODY + 1
_HASH = _BODY + 2
_WIDTH = _BODY + 3
_EVENT_ID = 1 + COLUMNS.index("event_id")
_columns = attrgetter(*COLUMNS)
_WINDOW = 4096
"""How many recent rows are kept to name the first of several inserted rows."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Where the chain breaks first: the row (as stored) and what happened there."""

    seq: int | None
    """The row's seq as stored (None: the store is empty)."""
    event_id: str | None
    """The row's event id (from its body when it parses, else its column)."""
    kind: ProblemKind
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of `verify`: ok, or the first problem in chain order."""

    ok: bool
    entries: int
    """How many rows were read."""
    head_seq: int | None
    """The last row's seq (None: the store is empty)."""
    head_hash: str | None
    """The last row's hash: the anchor to record and pass later as ``expect_head``."""
    first_problem: Problem | None


@dataclass(slots=True)
class _Row:
    """A row being classified (the happy path never builds one)."""

    position: int
    seq: int
    event_id: str | None
    prev_hash: str
    hash: str
    hashes_ok: bool
    parsed: bool
    columns_ok: bool

    def name(self) -> str:
        return f"entry {self.event_id or '(unknown event)'} (seq {self.seq})"


@dataclass(slots=True)
class _Later:
    """What the rows after a suspect row say about it (found in one pass, nothing kept)."""

    hash_is_prev: tuple[int, str | None] | None = None
    """The first later row whose hash is the suspect's prev_hash (seq, event id)."""
    same_hash: tuple[int, str | None] | None = None
    """The first later row with the suspect's own hash (a copy)."""
    hash_linked: bool = False
    """Some later row names the suspect's hash as its prev_hash."""
    event_seen: bool = False
    """Some later row carries the suspect's event id."""


def _digest(row: tuple[Any, ...]) -> str:
    return hashlib.sha256((row[_PREV] + row[_BODY]).encode()).hexdigest()


def _examine(row: tuple[Any, ...], position: int) -> _Row:
    """Check one row on its own: its hash and its columns."""
    body = row[_BODY]
    event_id: str | None = None if row[_EVENT_ID] is None else str(row[_EVENT_ID])
    parsed = columns_ok = False
    try:
        decoded = json.loads(body)
        columns = columns_of(decoded)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    else:
        parsed = True
        event_id = columns.event_id
        columns_ok = tuple(row[1:_BODY]) == _columns(columns)
    return _Row(
        position=position,
        seq=int(row[0]),
        event_id=event_id,
        prev_hash=str(row[_PREV]),
        hash=str(row[_HASH]),
        hashes_ok=_digest(row) == row[_HASH],
        parsed=parsed,
        columns_ok=columns_ok,
    )


class _Verifier:
    """One pass over the rows; state for classifying the first broken place."""

    def __init__(self, rows: Iterable[tuple[Any, ...]], expect_head: str | None) -> None:
        self.rows: Iterator[tuple[Any, ...]] = iter(rows)
        self.expect_head = expect_head
        self.positions: dict[str, int] = {}
        """hash -> position of every row read before the first problem."""
        self.event_ids: set[str] = set()
        self.recent: deque[tuple[int, str | None]] = deque(maxlen=_WINDOW)
        """(seq, event id) of the last rows before the first problem."""
        self.entries = 0
        self.head: tuple[Any, ...] | None = None
        self.head_found = False

    def _next(self) -> tuple[Any, ...] | None:
        row = next(self.rows, None)
        if row is not None:
            if len(row) != _WIDTH:
                raise ValueError(f"an audit row has {len(row)} values, expected {_WIDTH}")
            self.entries += 1
            self.head = row
            if row[_HASH] == self.expect_head:
                self.head_found = True
        return row

    def run(self) -> VerifyReport:
        problem: Problem | None = None
        expected = GENESIS
        position = 0
        positions, event_ids, recent = self.positions, self.event_ids, self.recent
        current = self._next()
        while current is not None:
            following = self._next()
            body, prev_hash, digest = current[_BODY], current[_PREV], current[_HASH]
            try:
                columns = columns_of(json.loads(body))
            except (ValueError, TypeError, KeyError, AttributeError):
                columns = None
            if (
                prev_hash == expected
                and hashlib.sha256((prev_hash + body).encode()).hexdigest() == digest
                and columns is not None
                and current[1:_BODY] == _columns(columns)
                and (following is None or following[_PREV] != expected)
            ):
                positions[digest] = position
                event_ids.add(columns.event_id)
                recent.append((current[0], columns.event_id))
                expected = digest
                position += 1
                current = following
                continue
            row = _examine(current, position)
            problem = self._classify(row, expected, following)
            if problem is not None:
                break
            positions[digest] = position  # a false alarm: the next row is the broken one
            if row.event_id is not None:
                event_ids.add(row.event_id)
            recent.append((row.seq, row.event_id))
            expected = digest
            position += 1
            current = following
        while self._next() is not None:
            pass
        if problem is None and self.expect_head is not None and not self.head_found:
            problem = self._head_missing()
        head = self.head
        return VerifyReport(
            ok=problem is None,
            entries=self.entries,
            head_seq=None if head is None else int(head[0]),
            head_hash=None if head is None else str(head[_HASH]),
            first_problem=problem,
        )

    def _later(self, suspect: _Row, following: tuple[Any, ...] | None) -> _Later:
        """Read every remaining row, noting how each relates to `suspect`."""
        later = _Later()
        row = following
        while row is not None:
            seq, event_id = int(row[0]), row[_EVENT_ID]
            if later.hash_is_prev is None and row[_HASH] == suspect.prev_hash:
                later.hash_is_prev = (seq, event_id)
            if later.same_hash is None and row[_HASH] == suspect.hash:
                later.same_hash = (seq, event_id)
            if row[_PREV] == suspect.hash:
                later.hash_linked = True
            if event_id is not None and event_id == suspect.event_id:
                later.event_seen = True
            row = self._next()
        return later

    def _classify(
        self, row: _Row, expected: str, following: tuple[Any, ...] | None
    ) -> Problem | None:
        """The problem at `row`, if the chain breaks there (None: it breaks only later)."""
        linked = row.prev_hash == expected
        skipped = (
            following is not None
            and following[_PREV] == expected
            and _digest(following) == following[_HASH]
        )
        if linked and row.hashes_ok and row.columns_ok and not skipped:
            return None

        def problem(kind: ProblemKind, message: str) -> Problem:
            return Problem(row.seq, row.event_id, kind, f"{row.name()}: {message}")

        modified = "its hash does not match its prev_hash and body"
        if row.hashes_ok and not linked:
            later = self._later(row, following)
            earlier_copy = self.positions.get(row.hash)
            if earlier_copy is not None or later.same_hash is not None:
                where = "an earlier entry" if earlier_copy is not None else "a later entry"
                return problem("inserted", f"a copy of {where} (the same hash) was inserted")
            if later.hash_is_prev is not None:
                seq, event_id = later.hash_is_prev
                return problem(
                    "reordered",
                    f"out of place: it follows entry {event_id} (seq {seq}), "
                    "which is stored after it",
                )
        if skipped:
            if not row.hashes_ok:
                later = self._later(row, following)
                nowhere_else = (
                    row.hash not in self.positions
                    and not later.hash_linked
                    and later.same_hash is None
                    and (row.event_id is None or row.event_id not in self.event_ids)
                    and not later.event_seen
                )
                if not nowhere_else:
                    return problem("modified", modified)
            return problem(
                "inserted",
                "not part of the chain: the entry after it links to the entry before it"
                + ("" if row.hashes_ok else " (and its own hash does not verify)"),
            )
        if not row.hashes_ok:
            return problem("modified", modified)
        if not linked:
            if row.prev_hash == GENESIS or row.prev_hash in self.positions:
                return self._branch(row)
            return problem("deleted", self._deleted_message(row))
        if not row.parsed:
            return problem("modified", "its body is not a valid audit entry")
        return problem("columns", "an indexed column disagrees with the body")

    def _branch(self, row: _Row) -> Problem:
        """`row` links to an earlier row than the one before it: the rows between are extra."""
        start = self.positions.get(row.prev_hash, -1) + 1
        count = row.position - start
        offset = len(self.recent) - count
        if offset < 0:  # further back than the window keeps: name the row that links back
            return Problem(
                row.seq,
                row.event_id,
                "inserted",
                f"{row.name()}: links to the entry {count + 1} positions before it: "
                f"the {count} entries before it are not part of the chain",
            )
        seq, event_id = self.recent[offset]
        entries = "1 entry" if count == 1 else f"{count} entries"
        return Problem(
            int(seq),
            event_id,
            "inserted",
            f"entry {event_id or '(unknown event)'} (seq {seq}): not part of the chain: "
            f"{row.name()} links to the entry before this one ({entries} inserted here)",
        )

    def _deleted_message(self, row: _Row) -> str:
        if row.position == 0 or not self.recent:
            where = "the first entries of the chain were deleted"
            return f"its prev_hash is not the genesis hash and names no stored entry: {where}"
        before = self.recent[-1][0]
        gap = ""
        if row.seq != before + 1:
            gap = f" (seq jumps from {before} to {row.seq})"
        return (
            "its prev_hash names no stored entry: the entries before it were deleted"
            f"{gap} (or the entry before it, seq {before}, was rewritten and re-hashed)"
        )

    def _head_missing(self) -> Problem:
        head = self.head
        return Problem(
            seq=None if head is None else int(head[0]),
            event_id=None if head is None or head[_EVENT_ID] is None else str(head[_EVENT_ID]),
            kind="deleted",
            message=(
                f"the chain no longer contains the recorded head {self.expect_head}: "
                "entries after it were deleted, or the chain was rewritten"
            ),
        )


def verify(rows: Iterable[tuple[Any, ...]], *, expect_head: str | None = None) -> VerifyReport:
    """Check the chain in `rows` (seq order, `SqlAuditStore.iter_rows` layout).

    Every row is read (`entries`, `head_seq`, `head_hash` cover them all); the first broken
    place is reported. `expect_head`: a head hash recorded earlier that must still be in
    the chain (else a *deleted* problem at the end).
    """
    return _Verifier(rows, expect_head).run()
