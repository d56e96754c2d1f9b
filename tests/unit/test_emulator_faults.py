"""Fault plans fire the first matching rule per call, by count and by seeded rate."""

from __future__ import annotations

import random

import pytest

from pkggov_emulator import FaultRule
from pkggov_emulator._faults import FaultPlan


def test_count_limits_the_rule() -> None:
    plan = FaultPlan()
    plan.add(FaultRule(operation="DeletePackageVersions", kind="throttle", count=2))
    kinds = [plan.decide("DeletePackageVersions").kind for _ in range(3)]
    assert ["throttle", "throttle", None] == kinds
    assert [] == plan.rules()


def test_rules_match_their_operation_or_all() -> None:
    plan = FaultPlan()
    plan.add(FaultRule(operation="ListPackages", kind="internal"))
    plan.add(FaultRule(kind="drop"))
    assert ("internal", "drop") == (
        plan.decide("ListPackages").kind,
        plan.decide("DeletePackageVersions").kind,
    )


def test_first_firing_rule_decides_the_call() -> None:
    plan = FaultPlan()
    plan.add(FaultRule(kind="latency", latency_seconds=0.0, count=1))
    plan.add(FaultRule(kind="throttle", count=1))
    plan.add(FaultRule(kind="latency", latency_seconds=0.25))
    decisions = [plan.decide("ListDomains") for _ in range(3)]
    assert [("latency", 0.0), ("throttle", 0.0), ("latency", 0.25)] == [
        (d.kind, d.latency_seconds) for d in decisions
    ]


def test_a_rate_rule_that_loses_its_draw_lets_later_rules_decide() -> None:
    plan = FaultPlan()
    plan.add(FaultRule(kind="drop", rate=0.0))
    plan.add(FaultRule(kind="internal"))
    assert "internal" == plan.decide("ListDomains").kind


def test_rate_uses_the_seeded_rng() -> None:
    plan = FaultPlan(seed=7)
    plan.add(FaultRule(kind="internal", rate=0.3))
    fired = [plan.decide("ListDomains").kind == "internal" for _ in range(50)]
    rng = random.Random(7)  # noqa: S311 - reproducing the plan's test RNG.
    assert [rng.random() < 0.3 for _ in range(50)] == fired


def test_clear_reseeds() -> None:
    plan = FaultPlan(seed=3)
    plan.add(FaultRule(kind="internal", rate=0.5))
    first = [plan.decide("X").kind for _ in range(10)]
    plan.clear()
    plan.add(FaultRule(kind="internal", rate=0.5))
    assert first == [plan.decide("X").kind for _ in range(10)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "boom"}, "kind must be one of"),
        ({"kind": "drop", "count": 0}, "count must be at least 1"),
        ({"kind": "drop", "rate": -0.1}, "rate must be between 0 and 1"),
        ({"kind": "latency", "latency_seconds": -1}, "latency_seconds must not be negative"),
        ({"kind": "throttle", "retry_after_seconds": -1}, "retry_after_seconds"),
    ],
)
def test_rule_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultRule(**kwargs)  # type: ignore[arg-type]


def test_rule_is_frozen_and_serializable() -> None:
    rule = FaultRule(operation="DeletePackageVersions", kind="throttle", count=2)
    assert {
        "operation": "DeletePackageVersions",
        "kind": "throttle",
        "count": 2,
        "rate": None,
        "latency_seconds": 0.0,
        "retry_after_seconds": 1,
        "status_message": None,
    } == rule.to_dict()
    with pytest.raises(AttributeError):
        rule.count = 3  # type: ignore[misc]
