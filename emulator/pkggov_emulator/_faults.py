"""Fault injection: rules that delay, fail or drop the next matching calls."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

__all__ = ["FAULT_KINDS", "FaultDecision", "FaultKind", "FaultPlan", "FaultRule"]

FaultKind = Literal["latency", "throttle", "internal", "access_denied", "drop", "drop_after_apply"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True, kw_only=True)
class FaultRule:
    """One fault to inject into calls of ``operation`` (an operation name, or ``"*"`` for all).

    kinds:
      * ``latency``: wait ``latency_seconds``, then handle the call normally;
      * ``throttle``: answer 429 ThrottlingException with ``Retry-After: retry_after_seconds``;
      * ``internal``: answer 500 InternalServerException;
      * ``access_denied``: answer 403 AccessDeniedException;
      * ``drop``: close the connection without answering, before applying the operation;
      * ``drop_after_apply``: apply the operation, then close the connection without answering.

    ``count`` limits the rule to the next N matching calls (None: until cleared); ``rate`` makes
    each matching call fault with that probability, drawn from the emulator's seeded RNG.
    ``status_message`` replaces the default error message. Raises ValueError when inconsistent.
    Of several rules, the first one added that fires decides the call (see FaultPlan.decide).
    """

    operation: str = "*"
    kind: FaultKind
    count: int | None = None
    rate: float | None = None
    latency_seconds: float = 0.0
    retry_after_seconds: int = 1
    status_message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}, not {self.kind!r}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1, not {self.count}")
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {self.rate}")
        if self.latency_seconds < 0:
            raise ValueError(f"latency_seconds must not be negative, not {self.latency_seconds}")
        if self.retry_after_seconds < 0:
            raise ValueError(
                f"retry_after_seconds must not be negative, not {self.retry_after_seconds}"
            )

    def matches(self, operation: str) -> bool:
        """Return True if the rule applies to calls of ``operation``."""
        return self.operation in ("*", operation)

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-ready mapping (field names as in the dataclass)."""
        return asdict(self)


@dataclass(frozen=True)
class FaultDecision:
    """The rule that fires for one call, if any."""

    rule: FaultRule | None = None

    @property
    def kind(self) -> FaultKind | None:
        """The fault's kind, or None if the call proceeds normally."""
        return None if self.rule is None else self.rule.kind

    @property
    def latency_seconds(self) -> float:
        """How long to wait before handling the call (0 unless a latency rule fired)."""
        if self.rule is None or self.rule.kind != "latency":
            return 0.0
        return self.rule.latency_seconds


@dataclass
class _ActiveRule:
    rule: FaultRule
    remaining: int | None


@dataclass
class FaultPlan:
    """The thread-safe list of active rules and the seeded RNG used for rate-based rules."""

    seed: int = 0
    _rules: list[_ActiveRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - reproducible test faults, not crypto.

    def add(self, rule: FaultRule) -> None:
        """Append a rule; rules are evaluated in the order they were added."""
        with self._lock:
            self._rules.append(_ActiveRule(rule=rule, remaining=rule.count))

    def clear(self) -> None:
        """Remove every rule and reseed the RNG."""
        with self._lock:
            self._rules.clear()
            self._rng = random.Random(self.seed)  # noqa: S311 - see __post_init__.

    def rules(self) -> list[FaultRule]:
        """Return the rules that can still fire, in evaluation order."""
        with self._lock:
            return [active.rule for active in self._rules]

    def decide(self, operation: str) -> FaultDecision:
        """Pick the fault for one call of ``operation`` and consume it.

        Rules are tried in the order they were added; the first rule that matches the operation
        (and, for a rate rule, wins its draw) decides the call, so exactly one rule fires per
        call. A firing ``latency`` rule delays the call, which then proceeds normally; e.g. a
        ``latency`` rule with ``count=1`` and 0 seconds lets one call through untouched before
        the rules after it apply.
        """
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if not rule.matches(operation):
                    continue
                if rule.rate is not None and self._rng.random() >= rule.rate:
                    continue
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._rules.remove(active)
                return FaultDecision(rule=rule)
        return FaultDecision()
