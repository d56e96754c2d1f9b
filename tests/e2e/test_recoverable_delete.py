"""Recoverable deletion end to end: archive under a window, restore, pending purges, the purge
worker, over real gRPC against the emulator (through unmodified boto3) and a real SQLite store.

Time is a test clock handed to the gateway: purges are made due by moving it, never by
sleeping. The gateway's own worker thread runs only at start-up (its interval is an hour), so
the tests run passes themselves with `gateway.purge_worker.run_once()`.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY, Emulator
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import GatewayFactory, rich_error, scrape, stub_for

WINDOW_DAYS = 30
DAY = timedelta(days=1)
GENERIC = {
    "domain": "demo",
    "repository": "prod-release",
    "format": pb.PACKAGE_FORMAT_GENERIC,
    "namespace": "acme",
    "package": "tool",
}


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codeartifact(emulator: Emulator) -> Any:
    """Unmodified boto3 on the emulator, as an operator would look at CodeArtifact."""
    return boto3.client(
        "codeartifact",
        endpoint_url=emulator.endpoint_url,
        region_name=DEMO_REGION,
        aws_access_key_id=DEMO_ACCESS_KEY_ID,
        aws_secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )


def publish(codeartifact: Any, *versions: str, package: str = "tool") -> None:
    """Publish generic versions of acme/`package` in demo/prod-release."""
    for version in versions:
        content = f"{package} {version}".encode()
        codeartifact.publish_package_version(
            domain="demo",
            repository="prod-release",
            format="generic",
            namespace="acme",
            package=package,
            packageVersion=version,
            assetName=f"{package}-{version}.tgz",
            assetContent=content,
            assetSHA256=hashlib.sha256(content).hexdigest(),
        )


def status_of(codeartifact: Any, version: str, package: str = "tool") -> str | None:
    try:
        found = codeartifact.describe_package_version(
            domain="demo",
            repository="prod-release",
            format="generic",
            namespace="acme",
            package=package,
            packageVersion=version,
        )
    except codeartifact.exceptions.ResourceNotFoundException:
        return None
    return str(found["packageVersion"]["status"])


@pytest.fixture
def recoverable(
    make_gateway: GatewayFactory, clock: Clock, emulator: Emulator
) -> Iterator[Gateway]:
    """A gateway with a 30-day window on prod-*, the permit-all policy, on the test clock."""
    with make_gateway(
        clock=clock,
        recovery={"windows": {"prod-*": float(WINDOW_DAYS)}, "worker_interval_seconds": 3600.0},
    ) as gateway:
        yield gateway


def delete(gateway: Gateway, *versions: str, **fields: Any) -> pb.DeletePackageVersionsResponse:
    with stub_for(gateway, principal=fields.pop("principal", "alice")) as stub:
        request = pb.DeletePackageVersionsRequest(
            **{**GENERIC, **fields}, versions=list(versions), justification="cleanup"
        )
        return stub.DeletePackageVersions(request, timeout=10)


def restore(gateway: Gateway, *versions: str, **fields: Any) -> pb.RestorePackageVersionsResponse:
    with stub_for(gateway, principal=fields.pop("principal", "alice")) as stub:
        request = pb.RestorePackageVersionsRequest(**{**GENERIC, **fields}, versions=list(versions))
        return stub.RestorePackageVersions(request, timeout=10)


def pending(gateway: Gateway, **filters: Any) -> list[pb.PendingPurge]:
    with stub_for(gateway, principal="alice") as stub:
        response = stub.ListPendingPurges(pb.ListPendingPurgesRequest(**filters), timeout=10)
        return list(response.pending_purges)


def test_delete_under_a_window_archives_and_schedules_the_purge(
    recoverable: Gateway, codeartifact: Any, clock: Clock
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    response = delete(recoverable, "1.0.0")
    archived = response.successful_versions["1.0.0"]
    assert archived.status == pb.PACKAGE_VERSION_STATUS_ARCHIVED
    assert archived.purge_time.ToDatetime(UTC) == clock.now + WINDOW_DAYS * DAY
    assert archived.restore_method == "/pkggov.v1.PackageGovernanceService/RestorePackageVersions"
    assert status_of(codeartifact, "1.0.0") == "Archived"
    listed = pending(recoverable, package="tool")
    assert [(p.version, p.requester) for p in listed] == [("1.0.0", "alice")]
    assert listed[0].previous_status == pb.PACKAGE_VERSION_STATUS_PUBLISHED
    assert listed[0].archive_event_id == response.audit_event_id


def test_restore_brings_the_version_back_and_cancels_the_purge(
    recoverable: Gateway, codeartifact: Any, clock: Clock
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(recoverable, "1.0.0")
    response = restore(recoverable, "1.0.0")
    restored = response.successful_versions["1.0.0"]
    assert restored.status == pb.PACKAGE_VERSION_STATUS_PUBLISHED
    assert status_of(codeartifact, "1.0.0") == "Published"
    assert pending(recoverable, package="tool") == []
    clock.advance((WINDOW_DAYS + 1) * DAY)
    run = recoverable.purge_worker.run_once()  # type: ignore[union-attr]
    assert run.purged == 0
    assert status_of(codeartifact, "1.0.0") == "Published"


def test_the_worker_purges_when_the_window_ends(
    recoverable: Gateway, codeartifact: Any, clock: Clock
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(recoverable, "1.0.0")
    worker = recoverable.purge_worker
    assert worker is not None
    clock.advance(WINDOW_DAYS * DAY - timedelta(seconds=1))
    assert worker.run_once().purged == 0
    assert status_of(codeartifact, "1.0.0") == "Archived"
    clock.advance(timedelta(seconds=1))
    assert worker.run_once().purged == 1
    assert status_of(codeartifact, "1.0.0") is None
    assert pending(recoverable) == []


def test_a_version_republished_outside_the_gateway_is_not_purged(
    recoverable: Gateway, codeartifact: Any, clock: Clock
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(recoverable, "1.0.0")
    codeartifact.update_package_versions_status(
        domain="demo",
        repository="prod-release",
        format="generic",
        namespace="acme",
        package="tool",
        versions=["1.0.0"],
        targetStatus="Published",
    )
    clock.advance((WINDOW_DAYS + 1) * DAY)
    run = recoverable.purge_worker.run_once()  # type: ignore[union-attr]
    assert (run.purged, run.cancelled) == (0, 1)
    assert status_of(codeartifact, "1.0.0") == "Published"
    assert pending(recoverable) == []


def test_restore_of_a_version_without_a_pending_purge_is_a_per_version_failure(
    recoverable: Gateway, codeartifact: Any
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    response = restore(recoverable, "1.0.0", "9.9.9")
    assert response.failed_versions["1.0.0"].error_code == (
        pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS
    )
    assert response.failed_versions["9.9.9"].error_code == pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND


def test_purge_now_deletes_at_once(recoverable: Gateway, codeartifact: Any) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    response = delete(recoverable, "1.0.0", purge_now=True)
    assert response.successful_versions["1.0.0"].status == pb.PACKAGE_VERSION_STATUS_DELETED
    assert status_of(codeartifact, "1.0.0") is None
    assert pending(recoverable) == []


def test_unknown_request_id_uuid_is_fine(recoverable: Gateway, codeartifact: Any) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = str(uuid.uuid4())
    first = delete(recoverable, "1.0.0", request_id=request_id)
    again = delete(recoverable, "1.0.0", request_id=request_id)
    assert first.successful_versions == again.successful_versions


def test_list_pending_purges_is_refused_to_principals_who_may_not_read_the_audit(
    make_gateway: GatewayFactory,
) -> None:
    with make_gateway(policy={}) as gateway, stub_for(gateway, principal="bob") as stub:
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListPendingPurges(pb.ListPendingPurgesRequest(), timeout=10)
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert rich_error(raised.value).reason == "POLICY_DENIED"


def test_pending_purges_are_filtered_and_paged(
    recoverable: Gateway, codeartifact: Any, clock: Clock
) -> None:
    """Five archived versions, one a day: filters by package and due time, pages of two that
    together list each once, soonest first; a token is refused with other filters."""
    versions = [f"2.0.{i}" for i in range(5)]
    publish(codeartifact, *versions, "9.0.0")
    publish(codeartifact, "1.0.0", "9.0.0", package="other")
    for version in versions:
        delete(recoverable, version)
        clock.advance(DAY)
    delete(recoverable, "1.0.0", package="other")
    assert len(pending(recoverable)) == 6
    assert [p.version for p in pending(recoverable, package="other")] == ["1.0.0"]
    due_before = pb.ListPendingPurgesRequest().due_before
    due_before.FromDatetime(clock.now + (WINDOW_DAYS - 3) * DAY)
    early = pending(recoverable, package="tool", due_before=due_before)
    assert [p.version for p in early] == ["2.0.0", "2.0.1"]
    seen: list[str] = []
    token = ""
    with stub_for(recoverable, principal="carol") as stub:
        while True:
            page = stub.ListPendingPurges(
                pb.ListPendingPurgesRequest(package="tool", page_size=2, page_token=token),
                timeout=10,
            )
            seen += [p.version for p in page.pending_purges]
            token = page.next_page_token
            if not token:
                break
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListPendingPurges(
                pb.ListPendingPurgesRequest(
                    package="other", page_size=2, page_token=first_token(stub)
                ),
                timeout=10,
            )
    assert seen == versions
    error = rich_error(raised.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    bad_request = error.details["BadRequest"]
    assert [v.field for v in bad_request.field_violations] == ["page_token"]  # type: ignore[attr-defined]


def first_token(stub: Any) -> str:
    page = stub.ListPendingPurges(
        pb.ListPendingPurgesRequest(package="tool", page_size=2), timeout=10
    )
    return str(page.next_page_token)


def test_purge_metrics(recoverable: Gateway, codeartifact: Any, clock: Clock) -> None:
    """pending, due and overdue gauges, and the purged counter, after a pass."""
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0")
    delete(recoverable, "1.0.0", "1.1.0")
    worker = recoverable.purge_worker
    assert worker is not None
    clock.advance(WINDOW_DAYS * DAY + timedelta(hours=1))
    codeartifact.update_package_versions_status(
        domain="demo",
        repository="prod-release",
        format="generic",
        namespace="acme",
        package="tool",
        versions=["1.1.0"],
        targetStatus="Unlisted",
    )
    run = worker.run_once()
    assert (run.purged, run.cancelled) == (1, 1)
    samples = scrape(f"http://{recoverable.metrics_address}/metrics")
    assert samples[("pkggov_purges_total", frozenset({("result", "purged")}))] == 1
    assert samples[("pkggov_purges_total", frozenset({("result", "cancelled")}))] == 1
    assert samples[("pkggov_purges_pending", frozenset())] == 0
    assert samples[("pkggov_purges_due", frozenset())] == 0
    assert samples[("pkggov_purges_overdue_seconds", frozenset())] == 0


def test_a_dry_run_restore_changes_nothing(recoverable: Gateway, codeartifact: Any) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    delete(recoverable, "1.0.0")
    response = restore(recoverable, "1.0.0", validate_only=True)
    assert response.decisions["1.0.0"].outcome == pb.VERSION_OUTCOME_WOULD_RESTORE
    assert not response.successful_versions
    assert status_of(codeartifact, "1.0.0") == "Archived"
    assert [p.version for p in pending(recoverable)] == ["1.0.0"]
