"""Upstream protection against the emulator: the gateway's own rate limit toward CodeArtifact,
and outcomes that stay true when an answer is lost and the call is retried."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.adapters.rate_limit import JITTER_GUARD
from pkggov_gateway.domain.audit import EntryKind
from pkggov_gateway.runtime import Gateway
from tests.e2e.audit_helpers import audit_event
from tests.e2e.harness import GatewayFactory, failed_call, request, rich_error, stub_for

BURST_PACKAGE = ("demo", "dev-shared", "npm", None, "burst")
LEFT_PAD = ("demo", "dev-shared", "npm", None, "left-pad")
BURST_CALLS = 1000
WRITE_RATE = 100


def _max_in_any_second(times: list[float]) -> int:
    """The most events in any half-open one-second window [t, t + 1)."""
    times = sorted(times)
    most, first = 0, 0
    for last, when in enumerate(times):
        while times[first] <= when - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.timeout(120)
def test_a_burst_never_exceeds_the_write_rate_at_codeartifact(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """1,000 single-version deletes sent 64 at a time, with a limit of 100 writes/s: every
    call succeeds (the burst queues within its deadline) and CodeArtifact never receives more
    than 100 deletes in any one second, nor throttles any."""
    versions = [f"1.0.{i}" for i in range(BURST_CALLS)]
    for version in [*versions, "2.0.0"]:  # one more: the last version is never deleted
        emulator.put_version(*BURST_PACKAGE, version)
    emulator.clear_calls()
    upstream = {"write_calls_per_second": WRITE_RATE, "read_calls_per_second": 10_000}
    with make_gateway(upstream=upstream) as gw, stub_for(gw) as stub:

        def delete(version: str) -> pb.DeletePackageVersionsResponse:
            return stub.DeletePackageVersions(
                request(package="burst", versions=[version]), timeout=30
            )

        with ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(delete, versions))
    assert all(len(r.successful_versions) == 1 for r in responses)
    calls = emulator.calls("DeletePackageVersions")
    # One call per version, plus any retry of a call whose answer was lost (a kept-alive
    # connection closed under this load): a retry names the same version and is paced too.
    assert sorted(versions) == sorted({v for call in calls for v in call.params["versions"]})
    assert len(calls) - BURST_CALLS <= 5
    assert [] == [call for call in calls if call.status == 429]
    received = [call.received_at.timestamp() for call in calls]
    assert _max_in_any_second(received) <= WRITE_RATE
    assert max(received) - min(received) >= (BURST_CALLS / WRITE_RATE) - 1  # it was spread


def test_a_call_whose_slot_is_past_its_deadline_is_refused_unsent(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With 1 write/s and the turn just taken, a call with a 0.5 s deadline is refused at once with
    RESOURCE_EXHAUSTED / UPSTREAM_RATE_LIMITED and RetryInfo; nothing reaches CodeArtifact."""
    upstream = {"write_calls_per_second": 1}
    with make_gateway(upstream=upstream) as gw, stub_for(gw) as stub:
        stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
        with pytest.raises(grpc.RpcError) as raised:
            stub.DeletePackageVersions(request(versions=["1.1.0"]), timeout=0.8)
    error = rich_error(raised.value)
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED") == (
        error.code,
        error.reason,
    )
    retry = error.details["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1 + JITTER_GUARD  # 1 call/s
    assert [["1.0.0"]] == [c.params["versions"] for c in emulator.calls("DeletePackageVersions")]
    assert "Published" == emulator.version_status(*LEFT_PAD, "1.1.0")


# --- outcome fidelity across retries ---------------------------------------------------------


def test_a_version_deleted_by_an_attempt_whose_answer_was_lost_is_reported_deleted(
    gateway: Gateway, emulator: Emulator
) -> None:
    """The emulator applies the first delete and drops its answer; the gateway retries and
    CodeArtifact says NOT_FOUND. The caller is told the truth: deleted, with the revision the
    version had before the call, and the audit outcome says how it was inferred."""
    revision = emulator.put_version(*LEFT_PAD, "1.0.0")
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="drop_after_apply", count=1)
    )
    with stub_for(gateway) as stub:
        response = stub.DeletePackageVersions(request(versions=["1.0.0", "1.1.0"]), timeout=10)
    deleted = {v: (i.revision, i.status) for v, i in response.successful_versions.items()}
    assert {
        "1.0.0": (revision, pb.PACKAGE_VERSION_STATUS_DELETED),
        "1.1.0": (deleted["1.1.0"][0], pb.PACKAGE_VERSION_STATUS_DELETED),
    } == deleted
    assert {} == dict(response.failed_versions)
    calls = emulator.calls("DeletePackageVersions")
    assert [(True, None), (True, 200)] == [(c.applied, c.status) for c in calls]
    assert ["1.0.0", "1.1.0"] == calls[1].params["versions"]
    outcome = audit_event(gateway, response.audit_event_id).entry(EntryKind.OUTCOME)
    assert outcome is not None
    versions = outcome.body["upstream"]["versions"]
    assert {"1.0.0", "1.1.0"} == set(versions)
    assert all(v["result"] == "deleted" for v in versions.values())
    assert all("answer was lost" in v["inferred"] for v in versions.values())
    assert 2 == outcome.body["deleted"]


def test_a_clean_failure_after_a_lost_answer_is_reported_as_unknown(
    gateway: Gateway, emulator: Emulator
) -> None:
    """The first attempt is applied and its answer lost, the retries fail with 500: the caller
    must hear that the outcome is unknown (UNAVAILABLE), not that nothing was deleted."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="drop_after_apply", count=1)
    )
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="internal"))
    with stub_for(gateway) as stub:
        error = failed_call(stub, request(versions=["1.0.0"]))
    assert (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE") == (error.code, error.reason)
    assert "outcome is unknown" in error.message
    assert 1 < len(emulator.calls("DeletePackageVersions"))
    assert emulator.version_status(*LEFT_PAD, "1.0.0") is None  # the first attempt deleted it


def test_a_read_whose_answer_was_lost_is_retried(gateway: Gateway, emulator: Emulator) -> None:
    """Reading the package's versions changes nothing, so a dropped answer is retried."""
    emulator.add_fault(FaultRule(operation="ListPackageVersions", kind="drop", count=1))
    with stub_for(gateway) as stub:
        response = stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
    assert ["1.0.0"] == list(response.successful_versions)
    assert 2 == len(emulator.calls("ListPackageVersions"))
