"""An audit row as `verify` reads it, and the checks of one row on its own.

A row is laid out as `SqlAuditStore.iter_rows` returns it: seq, the indexed columns, body,
prev_hash, hash. Each row's own checks (its hash verifies, its body parses, its columns are its
body's) need no other row, so `check_rows` also runs in worker processes (`check_pickled`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from typing import Any

from pkggov_gateway.domain.audit import COLUMNS, column_values

__all__ = [
    "ALL_OK",
    "EVENT_ID",
    "HASH",
    "PREV",
    "WIDTH",
    "Row",
    "check_pickled",
    "check_rows",
    "examine",
    "hashes",
]

_BODY = 1 + len(COLUMNS)
PREV = _BODY + 1
HASH = _BODY + 2
WIDTH = _BODY + 3
EVENT_ID = 1 + COLUMNS.index("event_id")

_HASH_OK, _PARSED, _COLUMNS_OK = 1, 2, 4
ALL_OK = _HASH_OK | _PARSED | _COLUMNS_OK
_PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError)
"""What parsing a body that is not an entry raises (json.loads or `column_values`)."""

_raw_decode = json.JSONDecoder().raw_decode


def _decode(body: str) -> Any:
    """``json.loads(body)``, a little faster for bodies without surrounding whitespace."""
    try:
        value, end = _raw_decode(body)
    except ValueError:
        return json.loads(body)  # the same error, or leading whitespace
    return value if end == len(body) else json.loads(body)


def hashes(row: tuple[Any, ...]) -> bool:
    """Whether the row's hash is ``chain_hash(prev_hash, body)``."""
    try:
        digest = hashlib.sha256((row[PREV] + row[_BODY]).encode()).hexdigest()
    except (TypeError, AttributeError, ValueError):  # not (encodable) text: nothing matches
        return False
    return bool(digest == row[HASH])


def check_rows(rows: list[tuple[Any, ...]]) -> bytes:
    """The checks of each row on its own, one byte of flags per row: its hash verifies
    (`_HASH_OK`), its body parses (`_PARSED`), its columns are its body's (`_COLUMNS_OK`).

    Needs no other row, so it runs in worker processes for large stores."""
    flags = bytearray(len(rows))
    for index, row in enumerate(rows):
        found = _HASH_OK if hashes(row) else 0
        try:
            columns = column_values(_decode(row[_BODY]))
        except _PARSE_ERRORS:
            flags[index] = found
            continue
        flags[index] = found | _PARSED | (_COLUMNS_OK if row[1:_BODY] == columns else 0)
    return bytes(flags)


def check_pickled(data: bytes) -> bytes:
    """`check_rows` of a pickled chunk (a worker's task)."""
    rows: list[tuple[Any, ...]] = pickle.loads(data)  # noqa: S301 - pickled by verify
    return check_rows(rows)


@dataclass(slots=True)
class Row:
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


def examine(row: tuple[Any, ...], position: int) -> Row:
    """Check one row on its own, keeping what a problem report names."""
    event_id: str | None = None if row[EVENT_ID] is None else str(row[EVENT_ID])
    parsed = columns_ok = False
    try:
        columns = column_values(_decode(row[_BODY]))
    except _PARSE_ERRORS:
        pass
    else:
        parsed = True
        event_id = columns[0]
        columns_ok = tuple(row[1:_BODY]) == columns
    return Row(
        position=position,
        seq=int(row[0]),
        event_id=event_id,
        prev_hash=str(row[PREV]),
        hash=str(row[HASH]),
        hashes_ok=hashes(row),
        parsed=parsed,
        columns_ok=columns_ok,
    )
