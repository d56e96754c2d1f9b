"""Policies on the package as a whole hold under concurrency: two simultaneous deletes of a
package's last two versions, through one gateway (in-process lock) and through two gateways
sharing one PostgreSQL database (advisory lock), delete one and are denied the other by
never-delete-only-remaining-version, every round.

The emulator holds each read (ListPackageVersions) and each delete for DELAY before applying
it, so that unless the gateway makes the calls take turns both reads see the package before
either delete lands (the gateway's own read pacing sends the second read about 6 ms after the
first): without the package lock both calls decide on a version count of 2, and both versions
are deleted, in every round.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.runtime import Gateway
from tests.conftest import pg_schema_url
from tests.e2e.audit_helpers import audit_event, deletes, kinds
from tests.e2e.harness import (
    GatewayFactory,
    RichError,
    request,
    rich_error,
    stub_for,
    wait_for,
)

SHIPPED: dict[str, str] = {}  # empty PolicySettings: the shipped example set
VERSIONS = ("1.0.0-rc.1", "1.0.0-rc.2")  # pre-releases: both alice and ci-bot may delete them
PRINCIPALS = ("alice", "ci-bot")  # release-admins and ci (Unlisted pre-releases in dev-*)
DELAY = 0.1


def _race(emulator: Emulator, gateways: Sequence[Gateway]) -> tuple[str, list[str]]:
    """One round: a package with exactly two Unlisted versions, one delete of each fired at
    once (through gateways[0] and gateways[-1]); returns the package and, per call, "OK" or
    the failure's reason."""
    name = f"race-{uuid.uuid4().hex[:12]}"
    for version in VERSIONS:
        emulator.put_version("demo", "dev-shared", "npm", None, name, version, status="Unlisted")

    def slow_down() -> None:
        for operation in ("ListPackageVersions", "DeletePackageVersions"):
            emulator.add_fault(
                FaultRule(operation=operation, kind="latency", latency_seconds=DELAY, count=2)
            )

    # Both channels are connected (by a dry run, before the emulator slows down) when the
    # barrier lets the two calls go.
    start = threading.Barrier(2, action=slow_down)

    def delete(index: int) -> str:
        gateway = gateways[index % len(gateways)]
        with stub_for(gateway, PRINCIPALS[index]) as stub:
            call = request(package=name, versions=[VERSIONS[index]])
            dry_run = request(package=name, versions=[VERSIONS[index]], validate_only=True)
            stub.DeletePackageVersions(dry_run, timeout=10)
            start.wait()
            try:
                response = stub.DeletePackageVersions(call, timeout=10)
            except grpc.RpcError as error:
                return _denied_by(rich_error(error))
        assert [VERSIONS[index]] == list(response.successful_versions)
        return "OK"

    with ThreadPoolExecutor(2) as callers:
        outcomes = list(callers.map(delete, range(2)))
    emulator.clear_faults()
    return name, outcomes


def _denied_by(error: RichError) -> str:
    """The failure's reason, with the denying policy ids when policy denied."""
    if error.reason != "POLICY_DENIED":
        return error.reason
    denial = error.details["PolicyDenial"]
    assert isinstance(denial, pb.PolicyDenial)
    ids = sorted({i for d in denial.denied_versions for i in d.policy_ids})
    return f"POLICY_DENIED by {', '.join(ids)}"


def _remaining(emulator: Emulator, package: str) -> list[str]:
    return [
        v
        for v in VERSIONS
        if emulator.version_status("demo", "dev-shared", "npm", None, package, v) is not None
    ]


def _assert_one_deleted_one_denied(
    emulator: Emulator, gateways: Sequence[Gateway], rounds: int
) -> None:
    for _ in range(rounds):
        package, outcomes = _race(emulator, gateways)
        assert ["OK", "POLICY_DENIED by never-delete-only-remaining-version"] == sorted(outcomes)
        assert 1 == len(_remaining(emulator, package)), outcomes


def test_one_gateway_keeps_the_last_version(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """20 rounds through one gateway (SQLite audit, in-process lock): one deleted, one denied,
    one version left every time."""
    with make_gateway(policy=SHIPPED) as gateway:
        _assert_one_deleted_one_denied(emulator, [gateway], rounds=20)


def test_two_gateways_on_one_postgres_keep_the_last_version(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """10 rounds, each call through another gateway; the gateways share only the PostgreSQL
    audit database, whose advisory lock makes them take turns."""
    store = pg_schema_url(pg_schema)
    with (
        make_gateway(policy=SHIPPED, audit={"store": store, "replica": "gw-a"}) as one,
        make_gateway(policy=SHIPPED, audit={"store": store, "replica": "gw-b"}) as other,
    ):
        _assert_one_deleted_one_denied(emulator, [one, other], rounds=10)


def _busy_call_sends_nothing(holder: Gateway, waiter: Gateway, emulator: Emulator) -> None:
    """While alice's call through `holder` holds the package (its delete is slow), ci-bot's
    call through `waiter`, whose deadline ends first, fails ABORTED / PACKAGE_BUSY: it read
    nothing, recorded no intent, sent nothing; then alice's call completes."""
    name = f"busy-{uuid.uuid4().hex[:12]}"
    for version in VERSIONS:
        emulator.put_version("demo", "dev-shared", "npm", None, name, version, status="Unlisted")
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.5, count=1)
    )
    with (
        stub_for(holder, "alice") as alice,
        stub_for(waiter, "ci-bot") as ci,
        ThreadPoolExecutor(1) as pool,
    ):
        held = pool.submit(
            alice.DeletePackageVersions, request(package=name, versions=[VERSIONS[0]]), 10
        )
        assert wait_for(lambda: 1 == len(emulator.calls("ListPackageVersions")))
        try:  # 0.8 s: it may wait 0.4 s for the package (0.4 s stay for a read and a delete)
            ci.DeletePackageVersions(request(package=name, versions=[VERSIONS[1]]), timeout=0.8)
        except grpc.RpcError as caught:
            error = rich_error(caught)
        else:
            pytest.fail("the second call did not wait for the package")
        assert [VERSIONS[0]] == list(held.result().successful_versions)
    assert (grpc.StatusCode.ABORTED, "PACKAGE_BUSY") == (error.code, error.reason)
    assert 1 == len(emulator.calls("ListPackageVersions"))  # the holder's read only
    assert 1 == deletes(emulator)  # the holder's delete only
    busy = audit_event(waiter, error.metadata["audit_event_id"])
    assert ["outcome"] == kinds(busy)  # no intent: nothing was about to be sent
    assert ("ABORTED", "failed") == (
        busy.entries[0].body["status"]["code"],
        busy.entries[0].body["decision"],
    )


def test_a_held_package_is_busy_and_nothing_is_sent(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """SQLite audit, in-process lock: a call that cannot have the package in time."""
    with make_gateway(policy=SHIPPED) as gateway:
        _busy_call_sends_nothing(gateway, gateway, emulator)


def test_a_package_held_by_another_gateway_is_busy_and_nothing_is_sent(
    pg_schema: str, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """PostgreSQL audit, advisory lock: the same across two gateways of a fleet."""
    store = pg_schema_url(pg_schema)
    with (
        make_gateway(policy=SHIPPED, audit={"store": store, "replica": "gw-a"}) as one,
        make_gateway(policy=SHIPPED, audit={"store": store, "replica": "gw-b"}) as other,
    ):
        _busy_call_sends_nothing(one, other, emulator)
