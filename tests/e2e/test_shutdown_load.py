"""Graceful shutdown under load: SIGTERM with 100 calls in flight loses no audit outcome and
completes or cleanly fails each call.

The real binary (``pkggov-gateway --dev``) with the session emulator as its upstream, so that
CodeArtifact's state and call log, and the SQLite audit file, can be read after the gateway
has exited. Latency faults keep the calls in flight: every DeletePackageVersions waits 2.5 to 3.5
seconds in the emulator, and a third of the ListPackageVersions wait 2 seconds, so at SIGTERM
some calls are inside a delete (which must complete) and some are still reading (which must
send nothing and fail UNAVAILABLE / GATEWAY_SHUTTING_DOWN).

Calls made after SIGTERM fail UNAVAILABLE too: either grpc refuses them (the server stopped
taking calls; they never reach the gateway, so they are not audited, and the caller sees
grpc's own status without details, which is what a client retries elsewhere) or, in the
instant between the signal and grpc's stop, the gateway answers GATEWAY_SHUTTING_DOWN and
records it. Which one does not matter; that every call ends in one of them does.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, FaultRule
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import health_status, request, wait_for
from tests.e2e.load_helpers import (
    CLEAN_CODES_EXCLUDED,
    DOMAIN,
    LATEST,
    REPOSITORY,
    CallResult,
    PlannedCall,
    StderrDrain,
    check_write_ahead,
    documented_statuses,
    in_flight,
    invoke,
    metrics_url,
    own_calls,
    read_record,
    upstream_env,
)

CALLS = 100
LATE_CALLS = 10
"""Calls made after SIGTERM."""
PACKAGES = 10
DELETE_LATENCY = (2.5, 3.0, 3.5)
"""Seconds each DeletePackageVersions waits in the emulator (a third, half the rest, the rest):
longer than it takes to start 100 calls on a busy 2-core machine, so that all are in flight."""
READ_LATENCY = 2.0
"""Seconds a third of the ListPackageVersions wait: those calls are still reading at SIGTERM."""
GRACE_SECONDS = 15.0
"""server.grace_seconds (the default): it covers one upstream attempt, connect + read timeout
(2 + 10 s by default), as the configuration check requires."""


def _calls(prefix: str, count: int, first: int = 0) -> list[PlannedCall]:
    """`count` calls by alice, each deleting its own version of one of the PACKAGES."""
    return [
        PlannedCall(
            f"{prefix}-{i:03d}",
            prefix,
            "alice",
            request(package=f"drain-{i % PACKAGES}", versions=[f"1.0.{i}"]),
            30.0,
        )
        for i in range(first, first + count)
    ]


def _exists(emulator: Emulator, call: PlannedCall) -> bool:
    [version] = call.request.versions
    status = emulator.version_status(DOMAIN, REPOSITORY, "npm", None, call.request.package, version)
    return status is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "max_workers",
    [
        pytest.param(128, id="all-calls-in-handlers"),
        pytest.param(32, id="calls-queued-behind-busy-workers"),  # the default
    ],
)
def test_sigterm_with_100_calls_in_flight(
    bin_dir: Path, emulator: Emulator, max_workers: int
) -> None:
    """SIGTERM once the gateway handles 100 calls (or all its workers are busy and the rest
    are queued): it exits 0 within its grace; every call completed OK or failed cleanly with a
    documented status; reopened, the audit store has an outcome for every call that reached the
    gateway and no open intent; every delete CodeArtifact applied was announced by an intent
    committed before it and reported deleted by its outcome; nothing else was deleted."""
    calls = _calls("drain", CALLS)
    late = _calls("late", LATE_CALLS, first=CALLS)
    for call in (*calls, *late):
        emulator.put_version(
            DOMAIN, REPOSITORY, "npm", None, call.request.package, *call.request.versions
        )
    for index in range(PACKAGES):
        emulator.put_version(DOMAIN, REPOSITORY, "npm", None, f"drain-{index}", LATEST)
    for latency, rate in zip(DELETE_LATENCY, (1 / 3, 1 / 2, 1.0), strict=True):
        emulator.add_fault(
            FaultRule(
                operation="DeletePackageVersions",
                kind="latency",
                latency_seconds=latency,
                rate=rate,
            )
        )
    emulator.add_fault(
        FaultRule(
            operation="ListPackageVersions",
            kind="latency",
            latency_seconds=READ_LATENCY,
            rate=1 / 3,
        )
    )
    env = upstream_env(
        emulator.endpoint_url,
        PKGGOV_SERVER_MAX_WORKERS=str(max_workers),
        PKGGOV_SERVER_GRACE_SECONDS=str(GRACE_SECONDS),
        PKGGOV_LOGGING_LEVEL="info",
    )
    with spawn_gateway(bin_dir, **env) as process:
        assert process.proc.stderr is not None
        log = StderrDrain(process.proc.stderr)
        log.start()
        url = metrics_url(process)
        with (
            grpc.insecure_channel(process.address) as channel,
            ThreadPoolExecutor(CALLS + LATE_CALLS) as pool,
        ):
            stub = pb_grpc.PackageGovernanceServiceStub(channel)
            futures: list[Future[CallResult]] = [pool.submit(invoke, stub, c) for c in calls]
            busy = min(CALLS, max_workers)
            assert wait_for(lambda: in_flight(url) >= busy, timeout=20), in_flight(url)
            time.sleep(0.2)  # the calls beyond the workers are queued in grpc by now
            process.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert wait_for(lambda: _not_serving(process.address), timeout=10), (
                f"still SERVING {time.monotonic() - signalled:.1f} s after SIGTERM; "
                f"exit code {process.proc.poll()}; gateway log so far {dict(log.events)}"
            )
            futures += [pool.submit(invoke, stub, c) for c in late]
            results = [future.result(timeout=GRACE_SECONDS + 10) for future in futures]
        assert 0 == process.proc.wait(timeout=GRACE_SECONDS + 10)
        exited_after = time.monotonic() - signalled
        log.join(timeout=10)
        events, _ = read_record(process.audit_store)  # asserts no intent is open
    deletes = own_calls(emulator, "DeletePackageVersions", "drain-")
    statuses = Counter((r.call.shape, r.code, r.reason) for r in results)
    print(  # the test's report: pytest -s, or -rP
        f"\nshutdown ({max_workers} workers): exit 0 {exited_after:.1f} s after SIGTERM; "
        f"{len(deletes)} deletes upstream; {sorted(statuses.items())}"
    )
    assert exited_after < GRACE_SECONDS

    # every call completed OK or failed cleanly, as documented
    documented = documented_statuses()
    for result in results:
        assert result.code not in CLEAN_CODES_EXCLUDED, result
        if result.reason is None:  # grpc's own status: the server no longer took calls
            assert "UNAVAILABLE" == result.code, result
        else:
            assert result.code == "OK" or (result.code, result.reason) in documented, result
            assert result.code in {"OK", "UNAVAILABLE"}, result
            if result.code == "UNAVAILABLE":
                assert "GATEWAY_SHUTTING_DOWN" == result.reason, result

    # one outcome per call that reached the gateway; none for the others
    by_rpc = {event.rpc_id: event for event in events.values()}
    reached = [r for r in results if r.call.rpc_id in by_rpc]
    assert len(by_rpc) == len(events) == len(reached)
    assert len(reached) == sum("outcome" in event.entries for event in events.values())
    if max_workers >= CALLS:
        assert {c.rpc_id for c in calls} <= set(by_rpc), "a call in flight left no outcome"
    for result in results:
        event = by_rpc.get(result.call.rpc_id)
        if event is None:
            assert (None, "UNAVAILABLE") == (result.reason, result.code), result
            assert _exists(emulator, result.call)
            continue
        assert result.reason is not None, f"the gateway recorded {result} but did not answer"
        assert (result.code, result.reason) == event.status
        assert event.event_id == result.event_id == result.trailer_event_id
    assert [] == log.errors
    assert log.events["gateway.stopping"] == log.events["gateway.stopped"] == 1

    # every applied delete was announced, and its outcome says it was deleted
    check_write_ahead(events, deletes)
    assert all(call.applied and call.status == 200 for call in deletes), deletes
    sent = {(c.params["package"], v) for c in deletes for v in c.params["versions"]}
    for result in results:
        [version] = result.call.request.versions
        key = (result.call.request.package, version)
        if result.code == "OK":
            assert result.response is not None
            assert [version] == list(result.response.successful_versions)
            assert {version: False} == by_rpc[result.call.rpc_id].claims  # deleted, not inferred
            assert key in sent
            assert not _exists(emulator, result.call)
        else:
            assert key not in sent, result  # nothing was sent for a call that failed
            assert _exists(emulator, result.call)
    assert len(deletes) == len(sent) == sum(1 for r in results if r.code == "OK")


def _not_serving(address: str) -> bool:
    """The gateway no longer reports SERVING (or no longer answers at all)."""
    try:
        status = health_status(address, "")
    except grpc.RpcError:
        return True
    return status != int(health_pb2.HealthCheckResponse.SERVING)
