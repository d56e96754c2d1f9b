"""Client-side rate limits toward CodeArtifact: calls paced at most R per second.

CodeArtifact allows about 100 write requests per second per account and Region (and about 200
ListPackageVersions); a burst that goes over is answered 429 and has to be retried. The gateway
instead paces its own calls: each call waits its turn before it is sent, first come, first
served, and two calls leave the gateway at least 1/R seconds apart. A burst therefore queues
within the callers' deadlines rather than tripping the upstream throttle; a caller whose turn
would come too late for its deadline is refused at once and sends nothing.

Why pacing and not a window or a token bucket that lets a burst go at once: CodeArtifact counts
calls when they arrive, and a burst sent at once arrives spread by scheduling and network
jitter, so the tail of one burst and the head of the next can land in the same second. Evenly
paced calls keep every one-second window at R as long as the jitter between two calls a second
apart stays under the pacing guard (`JITTER_GUARD`: the interval is (1 + guard) / R).

The turn is taken in botocore's `before-send` hook, after signing and right before the request
is written, and the interval is measured from when the previous call actually left.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["JITTER_GUARD", "Pacer", "RateLimits"]

JITTER_GUARD = 0.02
"""Calls are paced (1 + JITTER_GUARD) / R apart: R calls span 1.02 s, so every one-second
window at CodeArtifact holds at most R calls unless their arrival jitter differs by 20 ms."""


class Pacer:
    """Lets callers go one at a time, in arrival order, at least `interval` seconds apart."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be greater than 0, not {per_second}")
        self.per_second = per_second
        self.interval = (1.0 + JITTER_GUARD) / per_second
        self._clock = clock
        self._last = -float("inf")  # when the previous caller left
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    def expected_wait(self) -> float:
        """Seconds a caller arriving now would wait for its turn (0: it would go at once)."""
        with self._cond:
            return self._expected_wait(self._clock())

    def _expected_wait(self, now: float) -> float:
        return max(0.0, self._last + self.interval - now) + len(self._queue) * self.interval

    def acquire(self, max_wait: float) -> float | None:
        """Wait for this caller's turn and take it; return the seconds waited.

        Returns None, having taken no turn, when the turn is not expected within `max_wait`
        or does not come by then (callers ahead took longer than planned).
        """
        with self._cond:
            start = self._clock()
            if self._expected_wait(start) > max_wait:
                return None
            me = object()
            self._queue.append(me)
            give_up = start + max_wait
            try:
                while True:
                    now = self._clock()
                    ready_at = self._last + self.interval
                    if self._queue[0] is me and now >= ready_at:
                        self._last = now
                        return now - start
                    if now >= give_up:
                        return None
                    wake = ready_at if self._queue[0] is me else give_up
                    self._cond.wait(max(0.0, min(wake, give_up) - now))
            finally:
                self._queue.remove(me)
                self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Calls per second allowed toward CodeArtifact, per account and Region, for this replica.

    `write_calls_per_second` and `read_calls_per_second` are the budgets for the whole fleet;
    each of `replicas` replicas takes an equal share.
    """

    write_calls_per_second: float = 90.0
    read_calls_per_second: float = 180.0
    replicas: int = 1

    def share(self, per_second: float) -> float:
        """This replica's share of a fleet-wide rate."""
        return per_second / self.replicas
