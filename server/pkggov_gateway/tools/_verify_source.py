"""How `verify` reads the rows: in chunks, each row with its own checks (`check_rows`).

Parsing each body (for its columns) is most of the work and holds the GIL, so past the first
`_PARALLEL_AFTER` rows the chunks are checked by a pool of spawned worker processes while the
next ones are read; the rows still come out in order.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pkggov_gateway.tools._verify_rows import WIDTH, check_pickled, check_rows

__all__ = ["Chunk", "Source"]

_CHUNK = 2000
"""Rows per unit of work (checked here or sent to a worker process)."""
_PARALLEL_AFTER = 10_000
"""Rows checked here before worker processes are started (starting them takes ~0.3 s)."""

Chunk = tuple[list[tuple[Any, ...]], bytes]
"""Consecutive rows and their `check_rows` flags."""


class Source:
    """The rows in order, in chunks, each row with its `check_rows` flags.

    The first `_PARALLEL_AFTER` rows are checked here; after that, with `workers`, chunks
    are checked by a process pool while the next ones are read. Once `checking` is turned
    off (the first problem is found), the remaining rows come unchecked (flags 0).
    """

    def __init__(self, rows: Iterable[tuple[Any, ...]], workers: int) -> None:
        self.rows: Iterator[tuple[Any, ...]] = iter(rows)
        self.workers = workers
        self.checking = True

    def __iter__(self) -> Iterator[Chunk]:
        read = 0
        while not (self.workers > 0 and self.checking and read >= _PARALLEL_AFTER):
            chunk = self._chunk()
            if not chunk:
                return
            read += len(chunk)
            yield chunk, self._here(chunk)
        pool = _start_pool(self.workers)
        if pool is None:
            while chunk := self._chunk():
                yield chunk, self._here(chunk)
            return
        try:
            yield from self._pipelined(pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _here(self, chunk: list[tuple[Any, ...]]) -> bytes:
        """The flags of `chunk`, checked in this process (zeros once `checking` is off)."""
        return check_rows(chunk) if self.checking else bytes(len(chunk))

    def _chunk(self) -> list[tuple[Any, ...]]:
        chunk = list(islice(self.rows, _CHUNK))
        for row in chunk:
            if len(row) != WIDTH:
                raise ValueError(f"an audit row has {len(row)} values, expected {WIDTH}")
        return chunk

    def _pipelined(self, pool: Executor) -> Iterator[Chunk]:
        """Keep the workers busy with the next chunks while the oldest one is consumed; while
        the oldest is not done, check the newest not yet started here rather than wait."""
        pending: deque[_Pending] = deque()
        depth = 2 * self.workers + 2
        while True:
            while len(pending) < depth and (chunk := self._chunk()):
                pending.append(self._submit(pool, chunk))
            if not pending:
                return
            oldest = pending[0]
            if not self.checking:
                for entry in pending:
                    entry.cancel()
                pending.popleft()
                yield oldest.rows, bytes(len(oldest.rows))
                continue
            if not oldest.done() and any(entry.take_back() for entry in reversed(pending)):
                continue
            pending.popleft()
            yield oldest.rows, oldest.result()

    def _submit(self, pool: Executor, chunk: list[tuple[Any, ...]]) -> _Pending:
        if not self.checking:
            return _Pending(chunk, None, bytes(len(chunk)))
        try:  # pickled here: in the pool's feeder thread it would hold the GIL from reading
            future = pool.submit(check_pickled, pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - no worker to take it (a broken pool): check it here
            return _Pending(chunk, None, check_rows(chunk))
        return _Pending(chunk, future)


@dataclass(slots=True)
class _Pending:
    """A chunk sent to the pool: its flags to come (or found here, if taken back)."""

    rows: list[tuple[Any, ...]]
    future: Future[bytes] | None
    flags: bytes | None = None

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()

    def take_back(self) -> bool:
        """Check the chunk here if no worker has started on it; whether it was."""
        if self.future is None or not self.future.cancel():
            return False
        self.future, self.flags = None, check_rows(self.rows)
        return True

    def result(self) -> bytes:
        if self.future is not None:
            try:
                self.flags = self.future.result()
            except Exception:  # noqa: BLE001 - a broken pool: check the chunk here instead
                self.flags = check_rows(self.rows)
            self.future = None
        return self.flags if self.flags is not None else check_rows(self.rows)


def _start_pool(workers: int) -> Executor | None:
    """A process pool (spawned: safe beside the store's threads), or None if none starts."""
    try:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    except (OSError, ValueError, NotImplementedError):
        return None
