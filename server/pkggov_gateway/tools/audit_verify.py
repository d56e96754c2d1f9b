"""Verify the audit hash chain: find the first place where the stored chain was tampered with.

`verify` reads a store's rows in ``seq`` order (`SqlAuditStore.iter_rows`: seq, the indexed
columns, body, prev_hash, hash) and checks, for every row, that

- its hash is ``chain_hash(prev_hash, body)`` (else the row was *modified*);
- its indexed columns are what `column_values` derives from its body (else *columns*);
- its prev_hash is the hash of the row before it (``GENESIS`` for the first row).

``seq`` is not hashed: it is only where a row is stored, and whoever can write the table can
renumber it. So a broken link is classified from the hashes alone:

- *deleted*: the row's prev_hash is the hash of no row in the store: the rows it followed
  are gone (reported at the row after the gap; a seq gap, if any, is named as a hint);
- *inserted*: the row is skipped by the chain (the next row links to the row before it, or
  a later row links back past it), or it is a copy of another row (the same hash). A skipped
  row whose own hash does not verify is *inserted* only if neither its hash nor its event id
  appears in any other row (else *modified*);
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
- A row whose body was changed *and* re-hashed (its columns updated to match) breaks the link
  of the row after it exactly as deleting rows before that one does: both are reported as
  *deleted* at the row after (the message says so).

Cost: parsing each body (for its columns) is most of the work and holds the GIL, so past the
first `_PARALLEL_AFTER` rows the per-row checks (`_verify_rows`) run in a pool of spawned worker
processes while the rows are read (`_verify_source`) and linked here, in order. Memory: the
hash and event id of every row read (to classify a broken link) and a short window of recent
rows; rows after the first problem are only compared with it, not kept.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

from pkggov_gateway.domain.audit import GENESIS
from pkggov_gateway.tools._verify_rows import (
    ALL_OK,
    EVENT_ID,
    HASH,
    PREV,
    Row,
    examine,
    hashes,
)
from pkggov_gateway.tools._verify_source import Chunk, Source

__all__ = ["Problem", "ProblemKind", "VerifyReport", "verify"]

ProblemKind = Literal["modified", "deleted", "inserted", "reordered", "columns"]

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
    """For people: names the event id and seq, and what is wrong."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of `verify`: ok, or the first problem in chain order."""

    ok: bool
    entries: int
    """How many rows were read (all of them, also after a problem)."""
    head_seq: int | None
    """The last row's seq (None: the store is empty)."""
    head_hash: str | None
    """The last row's hash: the anchor to record and pass later as ``expect_head``."""
    first_problem: Problem | None


def verify(
    rows: Iterable[tuple[Any, ...]],
    *,
    expect_head: str | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Check the chain in `rows` (seq order, `SqlAuditStore.iter_rows` layout).

    Every row is read (`entries`, `head_seq`, `head_hash` cover them all); the first broken
    place is reported. `expect_head`: a head hash recorded earlier that must still be in
    the chain (else a *deleted* problem at the end). `workers`: processes checking rows
    past the first `_PARALLEL_AFTER` (default: one per core, none on one core; 0: none).
    """
    if workers is None:
        cores = os.cpu_count() or 1
        workers = min(cores, 4) if cores > 1 else 0
    return _Verifier(Source(rows, workers), expect_head).run()


# --- the chain ----------------------------------------------------------------------------


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


class _Verifier:
    """One pass over the rows; what is kept to classify the first broken place."""

    def __init__(self, source: Source, expect_head: str | None) -> None:
        self.source = source
        self.chunks = iter(source)
        self.expect_head = expect_head
        self.positions: dict[str, int] = {}
        """hash -> position of every row read before the first problem."""
        self.event_ids: set[str] = set()
        self.recent: deque[tuple[int, str | None]] = deque(maxlen=_WINDOW)
        """(seq, event id) of the last rows before the first problem."""
        self.entries = 0
        self.head: tuple[Any, ...] | None = None
        self.head_found = False

    def _pull(self) -> Chunk | None:
        """The next chunk, counted (and searched for `expect_head`)."""
        chunk = next(self.chunks, None)
        if chunk is not None:
            rows = chunk[0]
            self.entries += len(rows)
            self.head = rows[-1]
            if self.expect_head is not None and not self.head_found:
                self.head_found = any(row[HASH] == self.expect_head for row in rows)
        return chunk

    def _rest(self) -> Iterator[tuple[Any, ...]]:
        """The rows of the chunks not pulled yet."""
        while (chunk := self._pull()) is not None:
            yield from chunk[0]

    def run(self) -> VerifyReport:
        problem = self._first_problem()
        self.source.checking = False
        for _ in self._rest():
            pass
        if problem is None and self.expect_head is not None and not self.head_found:
            problem = self._head_missing()
        head = self.head
        return VerifyReport(
            ok=problem is None,
            entries=self.entries,
            head_seq=None if head is None else int(head[0]),
            head_hash=None if head is None else str(head[HASH]),
            first_problem=problem,
        )

    def _first_problem(self) -> Problem | None:
        expected = GENESIS
        position = 0
        positions, event_ids, recent = self.positions, self.event_ids, self.recent
        current = self._pull()
        while current is not None:
            rows, flags = current
            following_chunk = self._pull()  # for the last row's look-ahead
            last = len(rows) - 1
            for index, row in enumerate(rows):
                if index < last:
                    following: tuple[Any, ...] | None = rows[index + 1]
                else:
                    following = None if following_chunk is None else following_chunk[0][0]
                digest = row[HASH]
                if (
                    flags[index] == ALL_OK
                    and row[PREV] == expected
                    and (following is None or following[PREV] != expected)
                ):
                    event_id = row[EVENT_ID]  # the body's: the columns were checked
                else:
                    examined = examine(row, position)
                    after = chain(
                        rows[index + 1 :],
                        () if following_chunk is None else following_chunk[0],
                        self._rest(),
                    )
                    problem = self._classify(examined, expected, after)
                    if problem is not None:
                        return problem
                    event_id = examined.event_id  # a false alarm: the next row is the broken one
                positions[digest] = position
                event_ids.add(event_id)
                recent.append((row[0], event_id))
                expected = digest
                position += 1
            current = following_chunk
        return None

    def _later(self, suspect: Row, after: Iterator[tuple[Any, ...]]) -> _Later:
        """Read every remaining row, noting how each relates to `suspect`."""
        self.source.checking = False
        later = _Later()
        for row in after:
            seq, event_id = int(row[0]), row[EVENT_ID]
            if later.hash_is_prev is None and row[HASH] == suspect.prev_hash:
                later.hash_is_prev = (seq, event_id)
            if later.same_hash is None and row[HASH] == suspect.hash:
                later.same_hash = (seq, event_id)
            if row[PREV] == suspect.hash:
                later.hash_linked = True
            if event_id is not None and event_id == suspect.event_id:
                later.event_seen = True
        return later

    def _classify(
        self, row: Row, expected: str, after: Iterator[tuple[Any, ...]]
    ) -> Problem | None:
        """The problem at `row`, if the chain breaks there (None: it breaks only later).

        `after`: the rows after it (read to the end only when the classification needs it).
        """
        following = next(after, None)
        after = chain(() if following is None else (following,), after)
        linked = row.prev_hash == expected
        skipped = following is not None and following[PREV] == expected and hashes(following)
        if linked and row.hashes_ok and row.columns_ok and not skipped:
            return None

        def problem(kind: ProblemKind, message: str) -> Problem:
            return Problem(row.seq, row.event_id, kind, f"{row.name()}: {message}")

        modified = "its hash does not match its prev_hash and body"
        if row.hashes_ok and not linked:
            later = self._later(row, after)
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
                later = self._later(row, after)
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

    def _branch(self, row: Row) -> Problem:
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

    def _deleted_message(self, row: Row) -> str:
        if row.position == 0 or not self.recent:
            where = "the first entries of the chain were deleted"
            return f"its prev_hash is not the genesis hash and names no stored entry: {where}"
        before = self.recent[-1][0]
        gap = f" (seq jumps from {before} to {row.seq})" if row.seq != before + 1 else ""
        return (
            "its prev_hash names no stored entry: the entries before it were deleted"
            f"{gap} (or the entry before it, seq {before}, was rewritten and re-hashed)"
        )

    def _head_missing(self) -> Problem:
        head = self.head
        return Problem(
            seq=None if head is None else int(head[0]),
            event_id=None if head is None or head[EVENT_ID] is None else str(head[EVENT_ID]),
            kind="deleted",
            message=(
                f"the chain no longer contains the recorded head {self.expect_head}: "
                "entries after it were deleted, or the chain was rewritten"
            ),
        )
