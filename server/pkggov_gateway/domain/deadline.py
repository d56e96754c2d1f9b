"""A caller's deadline as a point on the monotonic clock, and the gateway's drain signal."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["Deadline", "DrainSignal"]


class DrainSignal:
    """Set once when the gateway starts to shut down: from then on no upstream call starts."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def start(self) -> None:
        """Begin draining (idempotent)."""
        self._event.set()

    @property
    def draining(self) -> bool:
        """True once draining has begun."""
        return self._event.is_set()


@dataclass(frozen=True, slots=True)
class Deadline:
    """The monotonic time by which the caller needs an answer, and the gateway's drain signal."""

    expires_at: float
    drain: DrainSignal | None = field(default=None, compare=False)

    @classmethod
    def after(cls, seconds: float, drain: DrainSignal | None = None) -> Deadline:
        """A deadline `seconds` from now."""
        return cls(time.monotonic() + seconds, drain)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires_at - time.monotonic())

    def is_draining(self) -> bool:
        """True when the gateway is shutting down and must not start another upstream call."""
        return self.drain is not None and self.drain.draining
