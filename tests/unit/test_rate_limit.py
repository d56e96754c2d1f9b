"""The pacer that keeps calls toward CodeArtifact under a rate (real clock, small intervals)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from pkggov_gateway.adapters.rate_limit import JITTER_GUARD, Pacer, RateLimits


def test_an_idle_pacer_lets_a_call_go_at_once() -> None:
    pacer = Pacer(10.0)
    assert 0.0 == pacer.expected_wait()
    waited = pacer.acquire(1.0)
    assert waited is not None
    assert waited < 0.01


def test_concurrent_callers_leave_an_interval_apart_in_arrival_order() -> None:
    """Twenty callers at once: they leave one by one, each at least 1/R (plus the guard) after
    the one before, in the order they arrived.

    A caller's departure is the pacer's own reading of the clock when it let the caller go
    (its thread's last reading), not a reading taken after `acquire` returned, which a busy
    machine can delay past the next caller's."""
    readings: dict[int, float] = {}

    def clock() -> float:
        now = time.monotonic()
        readings[threading.get_ident()] = now
        return now

    pacer = Pacer(200.0, clock=clock)
    left: list[tuple[int, float]] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        assert pacer.acquire(5.0) is not None
        with lock:
            left.append((index, readings[threading.get_ident()]))

    threads = []
    for index in range(20):
        thread = threading.Thread(target=call, args=(index,))
        thread.start()
        threads.append(thread)
        time.sleep(0.001)  # arrive in index order
    for thread in threads:
        thread.join()
    left.sort(key=lambda departure: departure[1])
    times = [when for _, when in left]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= pacer.interval - 0.0005
    assert pytest.approx((1 + JITTER_GUARD) / 200.0) == pacer.interval
    assert list(range(20)) == [index for index, _ in left]


def test_a_caller_whose_turn_is_too_late_takes_none() -> None:
    """With a queue ahead, a caller whose budget is shorter than the expected wait is refused
    at once and does not delay the callers behind it."""
    pacer = Pacer(10.0)  # 0.102 s apart
    assert pacer.acquire(1.0) is not None
    started = time.monotonic()
    assert pacer.acquire(0.01) is None
    assert time.monotonic() - started < 0.01
    waited = pacer.acquire(1.0)
    assert waited is not None
    assert waited < 1.5 * pacer.interval  # one interval after the first, not two


def test_expected_wait_counts_the_queue() -> None:
    """Callers waiting ahead each add one interval to a newcomer's expected wait."""
    pacer = Pacer(5.0)  # 0.204 s apart
    assert pacer.acquire(1.0) is not None
    waiter = threading.Thread(target=pacer.acquire, args=(5.0,))
    waiter.start()
    time.sleep(0.05)
    expected = pacer.expected_wait()
    assert pacer.interval < expected <= 2 * pacer.interval
    waiter.join()


def test_a_replica_takes_its_share_of_the_fleet_budget() -> None:
    """The fleet budget split evenly between replicas."""
    assert 90.0 == RateLimits(replicas=1).share(90.0)
    assert 45.0 == RateLimits(replicas=2).share(90.0)
    assert 22.5 == RateLimits(replicas=4).share(90.0)


def test_the_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        Pacer(0.0)
