"""Each injected fault kind behaves as documented, by count and by seeded rate."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from pkggov_emulator import Emulator, FaultKind, FaultRule

LEFT_PAD = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}


def _delete(client: Any, version: str = "1.0.0") -> dict[str, Any]:
    result: dict[str, Any] = client.delete_package_versions(**LEFT_PAD, versions=[version])
    return result


def _status(emulator: Emulator, version: str = "1.0.0") -> str | None:
    return emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", version)


def test_throttle_by_count_then_recovers(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="throttle", count=2))
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            _delete(codeartifact)
        codes.append(caught.value.response["Error"]["Code"])
    result = _delete(codeartifact)
    assert ["ThrottlingException", "ThrottlingException"] == codes
    assert ["1.0.0"] == list(result["successfulVersions"])
    assert [False, False, True] == [c.applied for c in emulator.calls("DeletePackageVersions")]
    assert ["throttle", "throttle", None] == [
        c.fault for c in emulator.calls("DeletePackageVersions")
    ]


def test_faults_only_hit_their_operation(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="internal"))
    listing = codeartifact.list_package_versions(**LEFT_PAD)
    assert 4 == len(listing["versions"])


def test_wildcard_fault_hits_every_operation(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(kind="access_denied", count=2))
    with pytest.raises(codeartifact.exceptions.AccessDeniedException):
        codeartifact.list_domains()
    with pytest.raises(codeartifact.exceptions.AccessDeniedException):
        codeartifact.describe_domain(domain="demo")
    assert 2 == len(codeartifact.list_domains()["domains"])


def test_latency_delays_the_answer(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(
        FaultRule(operation="ListDomains", kind="latency", latency_seconds=0.3, count=1)
    )
    started = time.monotonic()
    codeartifact.list_domains()
    elapsed = time.monotonic() - started
    codeartifact.list_domains()
    assert 0.3 <= elapsed < 2.0
    assert ["latency", None] == [c.fault for c in emulator.calls("ListDomains")]


def test_latency_beyond_the_client_timeout(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(
        config=Config(retries={"total_max_attempts": 1}, read_timeout=0.1, connect_timeout=1)
    )
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=0.3, count=1)
    )
    with pytest.raises(ReadTimeoutError):
        _delete(client)
    deadline = time.monotonic() + 5
    while not emulator.calls("DeletePackageVersions") and time.monotonic() < deadline:
        time.sleep(0.02)
    # The server still applied the call after its delay: the client just did not wait.
    assert _status(emulator) is None
    assert [True] == [c.applied for c in emulator.calls("DeletePackageVersions")]


def test_drop_closes_without_applying(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="drop", count=1))
    with pytest.raises(ConnectionClosedError):
        _delete(codeartifact)
    [call] = emulator.calls("DeletePackageVersions")
    assert (False, None, "drop") == (call.applied, call.status, call.fault)
    assert "Published" == _status(emulator)


def test_drop_after_apply_applies_then_closes(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="drop_after_apply", count=1)
    )
    with pytest.raises(ConnectionClosedError):
        _delete(codeartifact)
    retried = _delete(codeartifact)
    [first, second] = emulator.calls("DeletePackageVersions")
    assert (True, None, "drop_after_apply") == (first.applied, first.status, first.fault)
    assert _status(emulator) is None
    # As CODEARTIFACT.md warns: the retry of a lost delete reports NOT_FOUND.
    assert "NOT_FOUND" == retried["failedVersions"]["1.0.0"]["errorCode"]
    assert (True, 200) == (second.applied, second.status)


def test_botocore_retries_through_a_throttle(
    emulator: Emulator, make_codeartifact: Callable[..., Any]
) -> None:
    client = make_codeartifact(config=Config(retries={"mode": "standard", "max_attempts": 3}))
    emulator.add_fault(
        FaultRule(
            operation="DeletePackageVersions", kind="throttle", count=1, retry_after_seconds=0
        )
    )
    result = _delete(client)
    assert ["1.0.0"] == list(result["successfulVersions"])
    assert [429, 200] == [c.status for c in emulator.calls("DeletePackageVersions")]


def test_rate_faults_follow_the_seeded_rng(
    make_codeartifact: Callable[..., Any],
) -> None:
    with Emulator(fault_seed=42) as seeded:
        client = make_codeartifact(seeded)
        seeded.add_fault(FaultRule(operation="ListDomains", kind="internal", rate=0.5))
        outcomes = []
        for _ in range(20):
            try:
                client.list_domains()
                outcomes.append(True)
            except ClientError:
                outcomes.append(False)
    rng = random.Random(42)  # noqa: S311 - reproducing the emulator's test RNG.
    assert [rng.random() >= 0.5 for _ in range(20)] == outcomes


def test_rate_and_count_combine(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(operation="ListDomains", kind="throttle", rate=1.0, count=1))
    with pytest.raises(ClientError):
        codeartifact.list_domains()
    assert 2 == len(codeartifact.list_domains()["domains"])
    assert [] == emulator.faults()


def test_clear_faults(codeartifact: Any, emulator: Emulator) -> None:
    emulator.add_fault(FaultRule(kind="internal"))
    emulator.clear_faults()
    assert 2 == len(codeartifact.list_domains()["domains"])


def test_fault_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        FaultRule(kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        FaultRule(kind="drop", count=0)
    with pytest.raises(ValueError, match="rate"):
        FaultRule(kind="drop", rate=1.5)


def test_unknown_operation_in_a_rule_is_refused(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="DeletePackageVersion'"):
        emulator.add_fault(FaultRule(operation="DeletePackageVersion", kind="drop"))


def test_reset_restores_seed_and_clears_faults_and_calls(
    codeartifact: Any, emulator: Emulator
) -> None:
    _delete(codeartifact)
    emulator.add_fault(FaultRule(kind="internal"))
    emulator.reset()
    assert ("Published", [], []) == (_status(emulator), emulator.faults(), emulator.calls())


# --- the writes of recoverable deletion --------------------------------------------------------


def _archive(client: Any, version: str = "1.0.0", **guards: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.update_package_versions_status(
        **LEFT_PAD, versions=[version], targetStatus="Archived", **guards
    )
    return result


def test_throttle_update_status_n_times_then_recovers(
    codeartifact: Any, emulator: Emulator
) -> None:
    """A rule by operation name throttles UpdatePackageVersionsStatus (and only it) N times,
    each with Retry-After, before the call applies."""
    emulator.add_fault(
        FaultRule(
            operation="UpdatePackageVersionsStatus",
            kind="throttle",
            count=3,
            retry_after_seconds=2,
        )
    )
    errors = []
    for _ in range(3):
        with pytest.raises(ClientError) as caught:
            _archive(codeartifact)
        errors.append(caught.value.response)
    deleted = _delete(codeartifact, "1.1.0")
    archived = _archive(codeartifact)
    calls = emulator.calls("UpdatePackageVersionsStatus")
    assert {("ThrottlingException", 429, "2")} == {
        (
            error["Error"]["Code"],
            error["ResponseMetadata"]["HTTPStatusCode"],
            error["ResponseMetadata"]["HTTPHeaders"]["retry-after"],
        )
        for error in errors
    }
    assert ["1.1.0"] == list(deleted["successfulVersions"])
    assert "Archived" == archived["successfulVersions"]["1.0.0"]["status"]
    assert [(False, "throttle")] * 3 + [(True, None)] == [(c.applied, c.fault) for c in calls]
    assert [] == emulator.faults()


@pytest.mark.parametrize("kind", ["internal", "throttle", "access_denied"])
def test_dispose_faults_by_operation_name(
    codeartifact: Any, emulator: Emulator, kind: FaultKind
) -> None:
    """DisposePackageVersions takes every error fault kind by its own name."""
    emulator.add_fault(FaultRule(operation="DisposePackageVersions", kind=kind, count=1))
    with pytest.raises(ClientError) as caught:
        codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.0.0"])
    result = codeartifact.dispose_package_versions(**LEFT_PAD, versions=["1.0.0"])
    expected = {
        "internal": "InternalServerException",
        "throttle": "ThrottlingException",
        "access_denied": "AccessDeniedException",
    }[kind]
    assert expected == caught.value.response["Error"]["Code"]
    assert "Disposed" == result["successfulVersions"]["1.0.0"]["status"]


def test_a_pinned_archive_whose_answer_was_dropped_fails_its_retry(
    codeartifact: Any, emulator: Emulator
) -> None:
    """drop_after_apply on UpdatePackageVersionsStatus: the version is archived, and the same
    pinned call repeated reports MISMATCHED_REVISION (the archive issued a new revision)."""
    emulator.add_fault(
        FaultRule(operation="UpdatePackageVersionsStatus", kind="drop_after_apply", count=1)
    )
    revision = codeartifact.describe_package_version(**LEFT_PAD, packageVersion="1.0.0")[
        "packageVersion"
    ]["revision"]
    with pytest.raises(ConnectionClosedError):
        _archive(codeartifact, versionRevisions={"1.0.0": revision})
    retried = _archive(codeartifact, versionRevisions={"1.0.0": revision})
    assert "Archived" == _status(emulator)
    assert "MISMATCHED_REVISION" == retried["failedVersions"]["1.0.0"]["errorCode"]


def test_latency_on_update_status_only(codeartifact: Any, emulator: Emulator) -> None:
    """A latency rule for UpdatePackageVersionsStatus delays it and nothing else."""
    emulator.add_fault(
        FaultRule(operation="UpdatePackageVersionsStatus", kind="latency", latency_seconds=0.3)
    )
    started = time.monotonic()
    _delete(codeartifact, "1.1.0")
    deleted_after = time.monotonic() - started
    _archive(codeartifact)
    archived_after = time.monotonic() - started - deleted_after
    assert deleted_after < 0.3 <= archived_after
