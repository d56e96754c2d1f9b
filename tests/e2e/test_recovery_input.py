"""Hostile and confused input to the recoverable-deletion RPCs (RestorePackageVersions,
ListPendingPurges, DeletePackageVersions.purge_now) through the real gateway: every bad field is
INVALID_ARGUMENT / INVALID_REQUEST naming it, with nothing read or sent; never INTERNAL or
UNKNOWN; every call is audited; a principal who may not read the audit record learns nothing
from ListPendingPurges (authorization before validation); request ids never cross methods;
pending purges belong to exactly the package and version that were archived.

Principals (shipped entities.yaml): alice is a release admin, carol an auditor, ci-bot in ci,
bob in no group. Gateways run with a 30-day window on prod-* and, where time matters, a test
clock (see test_recoverable_delete.py); the module's shared gateway (shipped policies, real
clock) serves the tests that need no fresh state, and the fuzz tests (hypothesis).

Tests marked xfail(strict=True) with a reason starting "BUG:" document defects found here:
they pass once the gateway is fixed (then remove the mark).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import event, given
from hypothesis import strategies as st

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, RecordedCall
from pkggov_gateway.api.interceptors import AUDIT_EVENT_KEY
from pkggov_gateway.config import ServerSettings
from pkggov_gateway.domain.recovery import PurgeQuery
from pkggov_gateway.runtime import Gateway
from tests.e2e.audit_helpers import audit_event
from tests.e2e.fuzz_strategies import (
    FILTER_LIMITS,
    TIMESTAMP_SECONDS,
    pending_purge_requests,
    raw_messages,
    restore_requests,
)
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    bad_fields,
    fuzz_settings,
    gateway_settings,
    rich_error,
    running_gateway,
    stub_for,
)
from tests.e2e.test_fuzz import _Answer, _check_bad_request, _check_model, _History, _judge

Stub = pb_grpc.PackageGovernanceServiceStub

SERVICE = "/pkggov.v1.PackageGovernanceService"
RESTORE = "RestorePackageVersions"
LIST = "ListPendingPurges"
DELETE = "DeletePackageVersions"
WINDOW_DAYS = 30
DAY = timedelta(days=1)
RECOVERY: dict[str, Any] = {
    "windows": {"prod-*": float(WINDOW_DAYS)},
    "worker_interval_seconds": 3600.0,  # the gateway's own pass runs at start-up only
}
TIMESTAMP_LOW, TIMESTAMP_HIGH = TIMESTAMP_SECONDS
MAX_VERSIONS = ServerSettings().max_versions_per_call
WRITES = ("DeletePackageVersions", "UpdatePackageVersionsStatus", "DisposePackageVersions")
"""The CodeArtifact operations that change a version."""

LEFT_PAD: dict[str, Any] = {
    "domain": "demo",
    "repository": "prod-release",
    "format": pb.PACKAGE_FORMAT_NPM,
    "package": "left-pad",
}
"""demo/prod-release npm left-pad of the seed: 1.0.0 and 1.3.0 (the latest), Published."""

TOOL: dict[str, Any] = {
    "domain": "demo",
    "repository": "prod-release",
    "format": pb.PACKAGE_FORMAT_GENERIC,
    "namespace": "acme",
    "package": "tool",
}
"""A generic package the tests publish in demo/prod-release (CodeArtifact's generic names are
case-sensitive: acme/tool and acme/TOOL are two packages)."""


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


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(emulator: Emulator, _logging: None) -> Iterator[Gateway]:
    """The module's gateway: shipped policies, a window on prod-*, two pending purges
    (acme/tool 1.0.0 and 1.1.0, archived by alice) that outlive the emulator's resets."""
    settings = gateway_settings(emulator.endpoint_url, policy={}, recovery=RECOVERY)
    with running_gateway(settings) as gateway:
        for version in ("1.0.0", "1.1.0", "2.0.0"):
            put(emulator, version)
        archive(gateway, "1.0.0", "1.1.0")
        yield gateway


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def permissive(make_gateway: GatewayFactory, clock: Clock) -> Iterator[Gateway]:
    """A fresh gateway: the permit-all test policy, a window on prod-*, the test clock."""
    with make_gateway(clock=clock, recovery=RECOVERY) as gateway:
        yield gateway


@pytest.fixture
def shipped(make_gateway: GatewayFactory, clock: Clock) -> Iterator[Gateway]:
    """A fresh gateway: the shipped policies, a window on prod-*, the test clock."""
    with make_gateway(clock=clock, policy={}, recovery=RECOVERY) as gateway:
        yield gateway


# --- helpers -----------------------------------------------------------------------------------


def put(
    emulator: Emulator,
    version: str,
    *,
    package: str = "tool",
    status: str = "Published",
    fmt: str = "generic",
    namespace: str | None = "acme",
) -> str:
    """Create `version` of `namespace`/`package` in demo/prod-release; its revision."""
    return emulator.put_version(
        "demo", "prod-release", fmt, namespace, package, version, status=status
    )


def status(emulator: Emulator, version: str, package: str = "tool") -> str | None:
    return emulator.version_status("demo", "prod-release", "generic", "acme", package, version)


def archive(
    gateway: Gateway,
    *versions: str,
    principal: str = "alice",
    coordinates: dict[str, Any] = TOOL,
    **fields: Any,
) -> pb.DeletePackageVersionsResponse:
    """A delete of `versions` of `coordinates` (acme/tool by default) with a justification,
    as the shipped prod rules ask; `fields` override any field."""
    req = pb.DeletePackageVersionsRequest(
        **{**coordinates, "justification": "cleanup", **fields}, versions=list(versions)
    )
    response, _ = ok(gateway, DELETE, req, principal)
    assert isinstance(response, pb.DeletePackageVersionsResponse)
    return response


def restore_request(*versions: str, **fields: Any) -> pb.RestorePackageVersionsRequest:
    return pb.RestorePackageVersionsRequest(**{**TOOL, **fields}, versions=list(versions))


def ok(gateway: Gateway, method: str, req: Message, principal: str = "alice") -> tuple[Any, str]:
    """Call `method`, which must succeed: its response and the audit event id it carried in
    its trailing metadata."""
    with stub_for(gateway, principal) as stub:
        response, call = getattr(stub, method).with_call(req, timeout=30)
    trailing = dict(call.trailing_metadata() or ())
    event_id = trailing.get(AUDIT_EVENT_KEY)
    assert isinstance(event_id, str), f"{method} answered without an audit event id"
    return response, event_id


def fails(
    gateway: Gateway, method: str, req: Message, principal: str | None = "alice"
) -> RichError:
    """Call `method`, which must fail; its rich status (never UNKNOWN or INTERNAL)."""
    with stub_for(gateway, principal) as stub, pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(req, timeout=30)
    error = rich_error(caught.value)
    assert error.code not in {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}, error
    assert "pkggov.internal" == error.domain
    return error


def listing(gateway: Gateway, principal: str = "carol", **filters: Any) -> list[pb.PendingPurge]:
    """Every pending purge matching `filters`, page by page."""
    found: list[pb.PendingPurge] = []
    token = ""
    while True:
        page, _ = ok(
            gateway, LIST, pb.ListPendingPurgesRequest(page_token=token, **filters), principal
        )
        found += page.pending_purges
        token = page.next_page_token
        if not token:
            return found


def snapshot(gateway: Gateway) -> list[tuple[Any, ...]]:
    """Every pending purge in the store, every field (read directly: no audited call)."""
    page = gateway.audit_store.pending_purges(PurgeQuery(limit=10_000))
    return [
        (
            p.purge_id,
            p.package,
            p.version,
            p.revision,
            p.previous_status,
            p.requester,
            p.due_at,
            p.attempts,
            p.next_attempt_at,
        )
        for p in page.purges
    ]


def writes(emulator: Emulator) -> list[RecordedCall]:
    """The calls CodeArtifact received that change a version."""
    return [c for c in emulator.calls() if c.operation in WRITES]


def outcome_of(gateway: Gateway, event_id: str) -> dict[str, Any]:
    """The outcome entry body of an audit event."""
    body = audit_event(gateway, event_id).entries[-1].body
    assert "outcome" == body["kind"]
    return dict(body)


def assert_invalid(error: RichError, *fields: str) -> None:
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason), (
        error
    )
    assert list(fields) == bad_fields(error)


def stamp(seconds: int, nanos: int = 0) -> Any:
    req = pb.ListPendingPurgesRequest()
    req.due_before.seconds, req.due_before.nanos = seconds, nanos
    return req.due_before


# === RestorePackageVersions: bad fields ========================================================

_UUID = str(uuid.UUID(int=0x1234))
BAD_RESTORES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "no domain": ({"domain": ""}, ["domain"]),
    "domain too long": ({"domain": "d" * 51}, ["domain"]),
    "domain with NUL": ({"domain": "de\x00mo"}, ["domain"]),
    "domain in upper case": ({"domain": "Demo"}, ["domain"]),
    "domain owner too short": ({"domain_owner": "12345"}, ["domain_owner"]),
    "domain owner of letters": ({"domain_owner": "abcdefghijkl"}, ["domain_owner"]),
    "repository with ESC": ({"repository": "prod\x1b[2J"}, ["repository"]),
    "repository traversal": ({"repository": "../prod-release"}, ["repository"]),
    "no format": ({"format": 0}, ["format"]),
    "unknown format": ({"format": 99}, ["format"]),
    "negative format": ({"format": -1}, ["format"]),
    "largest int32 format": ({"format": 2**31 - 1}, ["format"]),
    "namespace on pypi": ({"format": pb.PACKAGE_FORMAT_PYPI, "namespace": "x"}, ["namespace"]),
    "npm scope with @": ({"format": pb.PACKAGE_FORMAT_NPM, "namespace": "@acme"}, ["namespace"]),
    "generic without namespace": ({"namespace": ""}, ["namespace"]),
    "namespace with slash": ({"namespace": "ac/me"}, ["namespace"]),
    "package with slash": ({"package": "to/ol"}, ["package"]),
    "package with space": ({"package": "to ol"}, ["package"]),
    "package too long": ({"package": "p" * 256}, ["package"]),
    "no package": ({"package": ""}, ["package"]),
    "no versions": ({"versions": []}, ["versions"]),
    "an empty version": ({"versions": ["1.0.0", ""]}, ["versions[1]"]),
    "version with hash": ({"versions": ["1.0.0#x"]}, ["versions[0]"]),
    "version with newline": ({"versions": ["1.0.0", "1.0\n"]}, ["versions[1]"]),
    "version too long": ({"versions": ["v" * 256]}, ["versions[0]"]),
    "1001 versions": ({"versions": [f"1.0.{i}" for i in range(1001)]}, ["versions"]),
    "1001 copies of one version": ({"versions": ["1.0.0"] * 1001}, ["versions"]),
    "justification with newline": ({"justification": "a\nb"}, ["justification"]),
    "justification with bidi override": ({"justification": "ok\u202e"}, ["justification"]),
    "justification too long": ({"justification": "j" * 1025}, ["justification"]),
    "request_id of words": ({"request_id": "not-a-uuid"}, ["request_id"]),
    "request_id in braces": ({"request_id": "{" + _UUID + "}"}, ["request_id"]),
    "request_id as urn": ({"request_id": uuid.UUID(_UUID).urn}, ["request_id"]),
    "request_id without hyphens": ({"request_id": uuid.UUID(_UUID).hex}, ["request_id"]),
    "request_id with NUL": ({"request_id": _UUID[:-1] + "\x00"}, ["request_id"]),
}


@pytest.mark.parametrize(("fields", "expected"), BAD_RESTORES.values(), ids=BAD_RESTORES.keys())
def test_a_bad_restore_field_is_named_and_nothing_is_read(
    shared: Gateway, emulator: Emulator, fields: dict[str, Any], expected: list[str]
) -> None:
    """INVALID_ARGUMENT / INVALID_REQUEST naming exactly the bad field; CodeArtifact is not
    even read; pending purges unchanged; the call is recorded as invalid."""
    before = snapshot(shared)
    req = pb.RestorePackageVersionsRequest(**{**TOOL, "versions": ["1.0.0"], **fields})
    error = fails(shared, RESTORE, req)
    assert_invalid(error, *expected)
    assert [] == emulator.calls()
    assert before == snapshot(shared)
    outcome = outcome_of(shared, error.metadata["audit_event_id"])
    assert ("invalid", "INVALID_ARGUMENT") == (outcome["decision"], outcome["status"]["code"])
    assert len(error.message) < 600  # a huge value is not echoed back whole


def test_a_restore_names_every_bad_field_at_once(shared: Gateway, emulator: Emulator) -> None:
    req = pb.RestorePackageVersionsRequest(
        domain="D",
        domain_owner="1",
        repository="\x00",
        format=42,  # type: ignore[arg-type]
        namespace="a b",
        package="",
        versions=["ok", "", "a/b"],
        justification="\x07",
    )
    expected = [
        "domain",
        "domain_owner",
        "repository",
        "package",
        "format",
        "namespace",
        "versions[1]",
        "versions[2]",
        "justification",
    ]
    assert_invalid(fails(shared, RESTORE, req), *expected)
    assert [] == emulator.calls()


def test_a_restore_larger_than_any_valid_request_is_refused_by_grpc(
    shared: Gateway, emulator: Emulator
) -> None:
    """Past the receive limit (the largest valid request): RESOURCE_EXHAUSTED before the
    gateway decodes anything."""
    req = restore_request("1.0.0", justification="j" * 3_000_000)
    with stub_for(shared) as stub, pytest.raises(grpc.RpcError) as caught:
        stub.RestorePackageVersions(req, timeout=30)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED == caught.value.code()
    assert [] == emulator.calls()


def test_a_restore_of_1000_versions_is_answered_per_version(
    shared: Gateway, emulator: Emulator
) -> None:
    """The limit itself (duplicates included): none is pending, so each fails on its own
    (MISMATCHED_STATUS for a Published one, NOT_FOUND for a missing one) and nothing is sent."""
    versions = [f"1.0.{i}" for i in range(400)] + [f"1.0.{i}" for i in range(600)]
    req = pb.RestorePackageVersionsRequest(
        domain="sandbox",
        repository="scratch",
        format=pb.PACKAGE_FORMAT_GENERIC,
        namespace="bulk",
        package="artifact",
        versions=versions,
    )
    response, _ = ok(shared, RESTORE, req)
    codes = {v: e.error_code for v, e in response.failed_versions.items()}
    assert 600 == len(codes)
    assert {pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS} == {
        codes[f"1.0.{i}"] for i in range(300)
    }
    assert {pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND} == {codes[f"1.0.{i}"] for i in range(300, 600)}
    assert not response.successful_versions
    assert [] == writes(emulator)


# === RestorePackageVersions: who, what and how often ===========================================


def test_duplicate_versions_restore_once(permissive: Gateway, emulator: Emulator) -> None:
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    emulator.clear_calls()
    response, _ = ok(permissive, RESTORE, restore_request("1.0.0", "1.0.0", "1.0.0"))
    assert ["1.0.0"] == list(response.successful_versions)
    [sent] = writes(emulator)
    assert ["1.0.0"] == list(sent.params["versions"])
    assert ("Published", "Archived") == (sent.params["targetStatus"], sent.params["expectedStatus"])
    assert "Published" == status(emulator, "1.0.0")
    assert [] == listing(permissive)


def test_a_restore_of_another_packages_version_finds_no_pending_purge(
    permissive: Gateway, emulator: Emulator
) -> None:
    """acme/tool 1.0.0 is archived; the same version string of acme/other (Published), of a
    package that does not exist, or of acme/tool in another repository is not restored, and
    tool's purge stays pending."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
        put(emulator, version, package="other")
    archive(permissive, "1.0.0")
    before = snapshot(permissive)
    emulator.clear_calls()
    other, _ = ok(permissive, RESTORE, restore_request("1.0.0", package="other"))
    assert {"1.0.0": pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS} == {
        v: e.error_code for v, e in other.failed_versions.items()
    }
    ghost = fails(permissive, RESTORE, restore_request("1.0.0", package="ghost"))
    assert (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND") == (ghost.code, ghost.reason)
    elsewhere = fails(permissive, RESTORE, restore_request("1.0.0", repository="prod-other"))
    assert grpc.StatusCode.NOT_FOUND == elsewhere.code
    swift = fails(permissive, RESTORE, restore_request("1.0.0", format=pb.PACKAGE_FORMAT_SWIFT))
    assert grpc.StatusCode.NOT_FOUND == swift.code
    assert [] == writes(emulator)
    assert before == snapshot(permissive)
    assert "Archived" == status(emulator, "1.0.0")


@pytest.mark.parametrize("principal", ["bob", "carol", "ci-bot", "spiffe://evil.example/x"])
def test_a_restore_by_a_principal_policy_does_not_let_restore_is_denied(
    shipped: Gateway, emulator: Emulator, principal: str
) -> None:
    """alice archived left-pad 1.0.0; someone in no group (or auditors, or ci, or a stranger)
    may not restore it, not even as a dry run: PERMISSION_DENIED with the denied version,
    nothing sent, the version still Archived with its purge pending; the call recorded as
    denied."""
    archive(shipped, "1.0.0", coordinates=LEFT_PAD)
    before = snapshot(shipped)
    emulator.clear_calls()
    for dry_run in (True, False):
        req = pb.RestorePackageVersionsRequest(
            **LEFT_PAD, versions=["1.0.0"], validate_only=dry_run, justification="please"
        )
        error = fails(shipped, RESTORE, req, principal)
        assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
        denial = error.details["PolicyDenial"]
        assert isinstance(denial, pb.PolicyDenial)
        assert ["1.0.0"] == [d.version for d in denial.denied_versions]
        outcome = outcome_of(shipped, error.metadata["audit_event_id"])
        assert ("denied", principal) == (outcome["decision"], outcome["principal"]["id"])
    assert [] == writes(emulator)
    assert before == snapshot(shipped)
    assert "Archived" == emulator.version_status(
        "demo", "prod-release", "npm", None, "left-pad", "1.0.0"
    )


def test_a_restore_without_identity_is_unauthenticated(shared: Gateway, emulator: Emulator) -> None:
    error = fails(shared, RESTORE, restore_request("1.0.0"), principal=None)
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert "unauthenticated" == outcome_of(shared, error.metadata["audit_event_id"])["decision"]
    assert [] == emulator.calls()


def test_a_dry_run_restore_changes_nothing(permissive: Gateway, emulator: Emulator) -> None:
    """validate_only (with and without a request_id, twice over): the plan, and no write to
    CodeArtifact, the version's status and revision, and its pending purge (due time,
    attempts, revision) as they were; the real restore afterwards still works."""
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        put(emulator, version)
    archived = archive(permissive, "1.0.0")
    before = snapshot(permissive)
    emulator.clear_calls()
    for request_id in ("", str(uuid.uuid4()), ""):
        req = restore_request("1.0.0", "1.1.0", "9.9.9", validate_only=True, request_id=request_id)
        plan, event_id = ok(permissive, RESTORE, req)
        assert {
            "1.0.0": pb.VERSION_OUTCOME_WOULD_RESTORE,
            "1.1.0": pb.VERSION_OUTCOME_NOT_PENDING_PURGE,
            "9.9.9": pb.VERSION_OUTCOME_NOT_FOUND,
        } == {v: d.outcome for v, d in plan.decisions.items()}
        assert not plan.successful_versions
        assert "dry_run" == outcome_of(permissive, event_id)["decision"]
    assert [] == writes(emulator)
    assert before == snapshot(permissive)
    assert "Archived" == status(emulator, "1.0.0")
    assert archived.successful_versions["1.0.0"].revision == before[0][3]
    restored, _ = ok(permissive, RESTORE, restore_request("1.0.0"))
    assert pb.PACKAGE_VERSION_STATUS_PUBLISHED == restored.successful_versions["1.0.0"].status


def test_a_second_restore_finds_nothing_pending(permissive: Gateway, emulator: Emulator) -> None:
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    ok(permissive, RESTORE, restore_request("1.0.0"))
    emulator.clear_calls()
    again, _ = ok(permissive, RESTORE, restore_request("1.0.0"))
    assert pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS == (
        again.failed_versions["1.0.0"].error_code
    )
    assert [] == writes(emulator)


def test_a_restore_of_a_version_archived_outside_pkggov_is_not_allowed(
    permissive: Gateway, emulator: Emulator
) -> None:
    put(emulator, "1.0.0", status="Archived")
    put(emulator, "2.0.0")
    response, _ = ok(permissive, RESTORE, restore_request("1.0.0"))
    assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED == (
        response.failed_versions["1.0.0"].error_code
    )
    assert [] == writes(emulator)


def test_a_restore_retried_with_its_request_id_replays(
    permissive: Gateway, emulator: Emulator
) -> None:
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    request_id = str(uuid.uuid4())
    first, first_event = ok(permissive, RESTORE, restore_request("1.0.0", request_id=request_id))
    sent = len(writes(emulator))
    again, again_event = ok(
        permissive, RESTORE, restore_request("1.0.0", request_id=request_id.upper())
    )
    assert first == again
    assert first_event != again_event
    assert sent == len(writes(emulator))
    assert "replayed" == outcome_of(permissive, again_event)["decision"]


# === request ids never cross methods ===========================================================


def test_a_delete_request_id_reused_for_a_restore_is_refused(
    permissive: Gateway, emulator: Emulator
) -> None:
    """alice archives 1.0.0 with request id X, then asks to restore 1.0.0 with X: not a replay
    of the delete's answer (which would say "archived" and restore nothing), and not run
    either: REQUEST_ID_REUSED; the version stays Archived, its purge pending."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    request_id = str(uuid.uuid4())
    archive(permissive, "1.0.0", request_id=request_id)
    before = snapshot(permissive)
    emulator.clear_calls()
    for dry_run in (False, True):
        error = fails(
            permissive,
            RESTORE,
            restore_request("1.0.0", request_id=request_id, validate_only=dry_run),
        )
        assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (
            error.code,
            error.reason,
        )
    assert [] == writes(emulator)
    assert before == snapshot(permissive)
    assert "Archived" == status(emulator, "1.0.0")


def test_a_restore_request_id_reused_for_a_delete_is_refused(
    permissive: Gateway, emulator: Emulator
) -> None:
    """The other way round: a restore's request id sent with a delete (also purge_now) is
    REQUEST_ID_REUSED, and nothing is archived or deleted."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    request_id = str(uuid.uuid4())
    ok(permissive, RESTORE, restore_request("1.0.0", request_id=request_id))
    emulator.clear_calls()
    for purge_now in (False, True):
        req = pb.DeletePackageVersionsRequest(
            **TOOL, versions=["1.0.0"], request_id=request_id, purge_now=purge_now
        )
        error = fails(permissive, DELETE, req)
        assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (
            error.code,
            error.reason,
        )
    assert [] == writes(emulator)
    assert "Published" == status(emulator, "1.0.0")
    assert [] == listing(permissive)


def test_a_dry_runs_request_id_does_not_answer_the_real_call(
    permissive: Gateway, emulator: Emulator
) -> None:
    """A delete's dry run with request id X, then the same delete for real with X:
    REQUEST_ID_REUSED (the dry run's plan is not replayed as if the version were archived)."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    request_id = str(uuid.uuid4())
    archive(permissive, "1.0.0", request_id=request_id, validate_only=True)
    req = pb.DeletePackageVersionsRequest(
        **TOOL, versions=["1.0.0"], request_id=request_id, justification="cleanup"
    )
    error = fails(permissive, DELETE, req)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (error.code, error.reason)
    assert "Published" == status(emulator, "1.0.0")


# === purge_now ===================================================================================


def test_purge_now_without_a_window_is_an_ordinary_delete(
    permissive: Gateway, emulator: Emulator
) -> None:
    """dev-shared has no window: purge_now changes nothing (no purge time, no restore method,
    no pending purge), as a dry run and for real."""
    fields: dict[str, Any] = {**LEFT_PAD, "repository": "dev-shared", "versions": ["1.0.0"]}
    plan, _ = ok(
        permissive,
        DELETE,
        pb.DeletePackageVersionsRequest(**fields, purge_now=True, validate_only=True),
    )
    decision = plan.decisions["1.0.0"]
    assert pb.VERSION_OUTCOME_WOULD_DELETE == decision.outcome
    assert not decision.HasField("purge_time")
    response, _ = ok(permissive, DELETE, pb.DeletePackageVersionsRequest(**fields, purge_now=True))
    deleted = response.successful_versions["1.0.0"]
    assert pb.PACKAGE_VERSION_STATUS_DELETED == deleted.status
    assert (False, "") == (deleted.HasField("purge_time"), deleted.restore_method)
    assert [] == listing(permissive)
    assert ["DeletePackageVersions"] == [c.operation for c in writes(emulator)]


def test_purge_now_of_a_version_pending_purge_deletes_it_and_closes_its_purge(
    permissive: Gateway, emulator: Emulator, clock: Clock
) -> None:
    """Archived, then purged at once (a dry run first, which changes nothing): deleted with
    expectedStatus Archived, its purge closed as purged by the delete's outcome; the worker
    finds nothing to do when the window ends, and a restore finds nothing."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    [purge_id] = [row[0] for row in snapshot(permissive)]
    before = snapshot(permissive)
    plan = archive(permissive, "1.0.0", purge_now=True, validate_only=True)
    assert pb.VERSION_OUTCOME_WOULD_DELETE == plan.decisions["1.0.0"].outcome
    assert before == snapshot(permissive)
    emulator.clear_calls()
    response = archive(permissive, "1.0.0", purge_now=True)
    assert pb.PACKAGE_VERSION_STATUS_DELETED == response.successful_versions["1.0.0"].status
    [sent] = writes(emulator)
    assert ("DeletePackageVersions", "Archived") == (
        sent.operation,
        sent.params["expectedStatus"],
    )
    assert status(emulator, "1.0.0") is None
    assert [] == listing(permissive)
    record = permissive.audit_store.purge_state(purge_id)
    assert record is not None
    assert ("purged", response.audit_event_id) == (record.state.value, record.closed_event_id)
    clock.advance((WINDOW_DAYS + 1) * DAY)
    run = permissive.purge_worker.run_once()  # type: ignore[union-attr]
    assert (0, 0, 0) == (run.purged, run.cancelled, run.failed)
    gone, _ = ok(permissive, RESTORE, restore_request("1.0.0"))
    assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND == gone.failed_versions["1.0.0"].error_code


def test_deleting_an_archived_version_again_keeps_its_first_purge(
    permissive: Gateway, emulator: Emulator, clock: Clock
) -> None:
    """A confused second delete (a day later, by another principal): still Archived, reported
    with the purge time of the first archive, whose purge (requester, due time) stands."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    first = archive(permissive, "1.0.0")
    before = snapshot(permissive)
    clock.advance(DAY)
    again = archive(permissive, "1.0.0", principal="ci-bot")
    assert (
        first.successful_versions["1.0.0"].purge_time
        == again.successful_versions["1.0.0"].purge_time
    )
    assert pb.PACKAGE_VERSION_STATUS_ARCHIVED == again.successful_versions["1.0.0"].status
    assert before == snapshot(permissive)


def test_purge_now_is_refused_without_a_justification_and_changes_nothing(
    shipped: Gateway, emulator: Emulator
) -> None:
    archive(shipped, "1.0.0", coordinates=LEFT_PAD)
    before = snapshot(shipped)
    emulator.clear_calls()
    req = pb.DeletePackageVersionsRequest(**LEFT_PAD, versions=["1.0.0"], purge_now=True)
    for principal in ("alice", "ci-bot", "bob"):
        error = fails(shipped, DELETE, req, principal)
        assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    assert [] == writes(emulator)
    assert before == snapshot(shipped)


# === pending purges belong to exactly one package ==============================================
# acme/tool and acme/TOOL are two generic packages in CodeArtifact (its names are case-sensitive
# except where a format says otherwise), but the gateway keys pending purges by its lock key,
# package_key(), which case-folds every part (on purpose: a coarser *lock* key only makes two
# packages take turns). As the identity of a pending purge it merges distinct packages.

CASE_BUG = (
    "BUG: pending purges are keyed by package_key() (adapters/sql/purges.py pending_for, _CLOSE "
    "and the unique index pending_purges_version), a case-folded lock key, so acme/tool and "
    "acme/TOOL share pending purges"
)


def test_archiving_a_case_variant_package_schedules_its_own_purge(
    permissive: Gateway, emulator: Emulator
) -> None:
    """Both archived with a purge time in the answer: both must be pending (observed: the
    second schedule hits ON CONFLICT DO NOTHING, so acme/TOOL 1.0.0 stays Archived for ever
    with no purge: the "no archived version is left without its purge" guarantee breaks)."""
    for package in ("tool", "TOOL"):
        for version in ("1.0.0", "2.0.0"):
            put(emulator, version, package=package)
        response = archive(permissive, "1.0.0", package=package)
        assert response.successful_versions["1.0.0"].HasField("purge_time")
    assert {("tool", "1.0.0"), ("TOOL", "1.0.0")} == {
        (p.package, p.version) for p in listing(permissive)
    }


def test_the_worker_purges_each_case_variant_package(
    permissive: Gateway, emulator: Emulator, clock: Clock
) -> None:
    """acme/tool 1.0.0 and acme/TOOL 2.0.0 archived (both pending): when the window ends both
    are purged (observed: the worker groups them by the case-folded key, reads acme/tool for
    both, finds no 2.0.0 there and cancels TOOL's purge as "deleted outside the gateway";
    acme/TOOL 2.0.0 stays Archived and unlisted for ever)."""
    for version in ("1.0.0", "3.0.0"):
        put(emulator, version, package="tool")
    for version in ("2.0.0", "3.0.0"):
        put(emulator, version, package="TOOL")
    archive(permissive, "1.0.0", package="tool")
    archive(permissive, "2.0.0", package="TOOL")
    assert 2 == len(listing(permissive))
    clock.advance((WINDOW_DAYS + 1) * DAY)
    run = permissive.purge_worker.run_once()  # type: ignore[union-attr]
    assert (status(emulator, "1.0.0", "tool"), status(emulator, "2.0.0", "TOOL")) == (None, None)
    assert (2, 0) == (run.purged, run.cancelled)


def test_purge_now_of_a_case_variant_leaves_the_other_packages_purge_pending(
    permissive: Gateway, emulator: Emulator
) -> None:
    """acme/tool 1.0.0 archived by the gateway (pending); acme/TOOL 1.0.0 Archived outside it.
    Purging acme/TOOL 1.0.0 at once must not touch tool's purge (observed: it is closed as
    "deleted at once (purge_now)", so acme/tool 1.0.0 is never purged)."""
    for package in ("tool", "TOOL"):
        put(emulator, "2.0.0", package=package)
    put(emulator, "1.0.0", package="tool")
    put(emulator, "1.0.0", package="TOOL", status="Archived")
    archive(permissive, "1.0.0", package="tool")
    response = archive(permissive, "1.0.0", package="TOOL", purge_now=True)
    assert pb.PACKAGE_VERSION_STATUS_DELETED == response.successful_versions["1.0.0"].status
    assert [("tool", "1.0.0")] == [(p.package, p.version) for p in listing(permissive)]


def test_a_restore_of_a_case_variant_is_judged_by_its_own_state(
    permissive: Gateway, emulator: Emulator
) -> None:
    """acme/TOOL 1.0.0 was Archived outside the gateway: its restore is NOT_ALLOWED (archived
    outside pkggov) as the API documents (observed: MISMATCHED_REVISION, "changed since it
    was archived", from acme/tool's pending purge)."""
    for package in ("tool", "TOOL"):
        put(emulator, "2.0.0", package=package)
    put(emulator, "1.0.0", package="tool")
    put(emulator, "1.0.0", package="TOOL", status="Archived")
    archive(permissive, "1.0.0", package="tool")
    response, _ = ok(permissive, RESTORE, restore_request("1.0.0", package="TOOL"))
    assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED == (
        response.failed_versions["1.0.0"].error_code
    )


# === a restore CodeArtifact cannot perform =====================================================


def test_a_version_archived_from_unfinished_can_be_restored(
    permissive: Gateway, emulator: Emulator
) -> None:
    """A Maven version with no maven-metadata is Unfinished; archived under the window, its
    restore must not forward an invalid request (the gateway's own archive made it Archived,
    so the gateway must know a way back, or refuse per version without forwarding)."""
    maven: dict[str, Any] = {
        "domain": "demo",
        "repository": "prod-release",
        "format": pb.PACKAGE_FORMAT_MAVEN,
        "namespace": "com.acme",
        "package": "core",
    }
    put(emulator, "1.1.0-SNAPSHOT", fmt="maven", namespace="com.acme", package="core")
    put(emulator, "1.0.0", fmt="maven", namespace="com.acme", package="core", status="Unfinished")
    archived = archive(permissive, "1.0.0", coordinates=maven)
    assert pb.PACKAGE_VERSION_STATUS_ARCHIVED == archived.successful_versions["1.0.0"].status
    [purge] = listing(permissive)
    assert pb.PACKAGE_VERSION_STATUS_UNFINISHED == purge.previous_status
    emulator.clear_calls()
    req = pb.RestorePackageVersionsRequest(**maven, versions=["1.0.0"])
    with stub_for(permissive) as stub:
        try:
            response = stub.RestorePackageVersions(req, timeout=30)
        except grpc.RpcError as error:
            raise AssertionError(f"the restore failed: {rich_error(error)}") from error
    refused = [c for c in writes(emulator) if c.error_code == "ValidationException"]
    assert [] == refused, "an invalid request was forwarded"
    assert {"1.0.0"} == set(response.successful_versions) | set(response.failed_versions)


# === ListPendingPurges: filters, sizes, times ==================================================

LIST_FILTERS = tuple(FILTER_LIMITS)


@pytest.mark.parametrize("field", LIST_FILTERS)
@pytest.mark.parametrize(
    "value",
    ["x" * 60_000, "\U0001d518" * 2049, "a\x00b", "line\nbreak", "tab\there"],
    ids=["long", "long in 4-byte characters", "nul", "newline", "tab"],
)
def test_a_bad_filter_is_named(shared: Gateway, emulator: Emulator, field: str, value: str) -> None:
    filters: dict[str, Any] = {field: value}
    error = fails(shared, LIST, pb.ListPendingPurgesRequest(**filters), "carol")
    assert_invalid(error, field)
    assert [] == emulator.calls()
    assert "invalid" == outcome_of(shared, error.metadata["audit_event_id"])["decision"]


@pytest.mark.parametrize("field", ["domain", "repository", "requester"])
def test_a_control_character_in_a_principal_or_location_filter_is_named(
    shared: Gateway, field: str
) -> None:
    """No domain, repository or principal holds DEL or ESC: a filter with one is a mistake."""
    for value in ("\x7f", "a\x1bb"):
        filters: dict[str, Any] = {field: value}
        assert_invalid(fails(shared, LIST, pb.ListPendingPurgesRequest(**filters), "carol"), field)


@pytest.mark.parametrize("field", LIST_FILTERS)
def test_filters_at_their_longest_match_nothing(shared: Gateway, field: str) -> None:
    filters: dict[str, Any] = {field: "f" * FILTER_LIMITS[field]}
    page, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(**filters), "carol")
    assert [] == list(page.pending_purges)


def test_a_package_filter_with_a_name_codeartifact_allows_is_a_search(shared: Gateway) -> None:
    """ESC, DEL and other non-space control characters may be in a package name: a search."""
    for value in ("tool\x1b[2J", "\x7f", "\u202etool"):
        page, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(package=value), "carol")
        assert [] == list(page.pending_purges)


def test_injection_shaped_filters_are_plain_values(shared: Gateway) -> None:
    for value in ("'OR'1'='1'--", "%", "_", "*", "tool'--", "tool%", "t_ol"):
        page, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(package=value), "carol")
        assert [] == list(page.pending_purges), value
    assert 2 <= len(listing(shared, package="tool"))


@pytest.mark.parametrize("size", [-1, -(2**31)])
def test_a_negative_page_size_is_named(shared: Gateway, size: int) -> None:
    assert_invalid(
        fails(shared, LIST, pb.ListPendingPurgesRequest(page_size=size), "carol"), "page_size"
    )


@pytest.mark.parametrize("size", [0, 1, 500, 501, 2**31 - 1])
def test_any_other_page_size_is_served_at_most_500(shared: Gateway, size: int) -> None:
    page, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(page_size=size, package="tool"), "carol")
    assert len(page.pending_purges) == (1 if size == 1 else 2)
    assert bool(page.next_page_token) == (size == 1)


def test_a_listing_names_every_bad_field_at_once(shared: Gateway) -> None:
    req = pb.ListPendingPurgesRequest(
        domain="d" * 51,
        repository="\x00",
        package="a b",
        requester="\n",
        page_size=-1,
        page_token="forged",
    )
    expected = ["domain", "repository", "package", "requester", "page_token", "page_size"]
    assert_invalid(fails(shared, LIST, req, "carol"), *expected)


OUT_OF_RANGE = [
    (TIMESTAMP_LOW - 1, 0),
    (TIMESTAMP_HIGH + 1, 0),
    (2**62, 0),
    (-(2**63), 0),
    (0, -1),
    (0, 1_000_000_000),
    (0, -(2**31)),
]


@pytest.mark.parametrize(("seconds", "nanos"), OUT_OF_RANGE)
def test_a_due_before_out_of_range_is_named(shared: Gateway, seconds: int, nanos: int) -> None:
    """Past either end of Timestamp's range: INVALID_ARGUMENT naming due_before (today alone,
    even beside another bad field, as the edge refuses it first; together with it once the
    check moves after authorization), recorded unrenderable."""
    req = pb.ListPendingPurgesRequest(due_before=stamp(seconds, nanos), page_size=-1)
    error = fails(shared, LIST, req, "carol")
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    assert bad_fields(error) in (["due_before"], ["page_size", "due_before"])
    outcome = outcome_of(shared, error.metadata["audit_event_id"])
    assert "invalid" == outcome["decision"]
    assert "unrenderable" in outcome["request"]["due_before"]


def test_due_before_at_either_end_of_the_range(shared: Gateway) -> None:
    low = pb.ListPendingPurgesRequest(due_before=stamp(TIMESTAMP_LOW))
    high = pb.ListPendingPurgesRequest(due_before=stamp(TIMESTAMP_HIGH, 999_999_999))
    assert [] == list(ok(shared, LIST, low, "carol")[0].pending_purges)
    assert 2 <= len(ok(shared, LIST, high, "carol")[0].pending_purges)


@pytest.mark.parametrize("year", [500, 999])
def test_due_before_a_year_before_1000_matches_nothing(shared: Gateway, year: int) -> None:
    before = datetime(year, 5, 1, tzinfo=UTC)
    due_before = pb.ListPendingPurgesRequest().due_before
    due_before.FromDatetime(before)
    page, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(due_before=due_before), "carol")
    assert [] == [p.version for p in page.pending_purges]


def test_an_audit_end_time_before_the_year_1000_matches_nothing(shared: Gateway) -> None:
    req = pb.ListAuditEventsRequest()
    req.end_time.FromDatetime(datetime(999, 5, 1, tzinfo=UTC))
    with grpc.insecure_channel(shared.address) as channel:
        page = pb_grpc.AuditServiceStub(channel).ListAuditEvents(
            req, timeout=10, metadata=((PRINCIPAL_KEY, "carol"),)
        )
    assert [] == list(page.events)


def test_due_before_is_an_exclusive_bound(permissive: Gateway, emulator: Emulator) -> None:
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    [purge] = listing(permissive)
    at = pb.ListPendingPurgesRequest(due_before=purge.purge_time)
    assert [] == list(ok(permissive, LIST, at)[0].pending_purges)
    after = pb.ListPendingPurgesRequest(due_before=purge.purge_time)
    after.due_before.nanos += 1000
    assert ["1.0.0"] == [p.version for p in ok(permissive, LIST, after)[0].pending_purges]


def test_due_before_counts_nanoseconds(permissive: Gateway, emulator: Emulator) -> None:
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    [purge] = listing(permissive)
    after = pb.ListPendingPurgesRequest(due_before=purge.purge_time)
    after.due_before.nanos += 1
    assert ["1.0.0"] == [p.version for p in ok(permissive, LIST, after)[0].pending_purges]


def test_pages_of_purges_due_at_one_time_list_each_once(
    permissive: Gateway, emulator: Emulator
) -> None:
    """Seven versions archived in one call share one due time: pages of two (keyset on due
    time, then purge id) still list each exactly once."""
    versions = [f"1.0.{i}" for i in range(7)]
    for version in [*versions, "2.0.0"]:
        put(emulator, version)
    archive(permissive, *versions)
    seen: list[str] = []
    token = ""
    while True:
        page, _ = ok(
            permissive, LIST, pb.ListPendingPurgesRequest(page_size=2, page_token=token), "carol"
        )
        assert len(page.pending_purges) <= 2
        seen += [p.version for p in page.pending_purges]
        token = page.next_page_token
        if not token:
            break
    assert sorted(versions) == sorted(seen)
    assert len(seen) == len(set(seen))


# === ListPendingPurges: page tokens ============================================================


def _unsigned(data: dict[str, Any]) -> str:
    """A token shaped like the gateway's (payload.mac) with a MAC nobody made."""
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{payload}.{'A' * 43}"


FORGED_TOKENS = {
    "unsigned cursor": _unsigned({"v": 1, "after": ["0000", "x"], "filters": "0" * 32}),
    "unsigned audit cursor": _unsigned({"v": 1, "before": 10**30, "filters": "0" * 32}),
    "old style": base64.urlsafe_b64encode(b'{"after": ["", ""]}').decode(),
    "base64 garbage": "!!!not-base64@@@",
    "dot only": ".",
    "two dots": "a.b.c",
    "binary": base64.urlsafe_b64encode(bytes(range(256))).decode(),
    "very long": "A" * 100_000,
    "nul bytes": "abc\x00def",
    "sql": "' OR 1=1 --",
}


@pytest.mark.parametrize("token", FORGED_TOKENS.values(), ids=FORGED_TOKENS.keys())
def test_a_forged_page_token_is_named(shared: Gateway, token: str) -> None:
    error = fails(shared, LIST, pb.ListPendingPurgesRequest(page_token=token), "carol")
    assert_invalid(error, "page_token")
    assert len(error.message) < 600


def _first_token(gateway: Gateway, **filters: Any) -> str:
    page, _ = ok(gateway, LIST, pb.ListPendingPurgesRequest(page_size=1, **filters), "carol")
    assert page.next_page_token
    return str(page.next_page_token)


def test_a_truncated_or_altered_token_is_named(shared: Gateway) -> None:
    token = _first_token(shared)
    payload, _, mac = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["after"] = ["0000-01-01T00:00:00.000000Z", ""]
    altered = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    for bad in (token[: len(token) // 2], token[:-1], f"{altered}.{mac}", payload, token + "A"):
        req = pb.ListPendingPurgesRequest(page_size=1, page_token=bad)
        assert_invalid(fails(shared, LIST, req, "carol"), "page_token")


@pytest.mark.parametrize(
    "changed",
    [
        {"package": "other"},
        {"domain": "demo"},
        {"repository": "prod-release"},
        {"requester": "alice"},
        {"due_before": stamp(TIMESTAMP_HIGH)},
    ],
    ids=["package", "domain", "repository", "requester", "due_before"],
)
def test_a_token_for_other_filters_is_named(shared: Gateway, changed: dict[str, Any]) -> None:
    token = _first_token(shared)
    error = fails(shared, LIST, pb.ListPendingPurgesRequest(page_token=token, **changed), "carol")
    assert_invalid(error, "page_token")
    assert "other filters" in error.details["BadRequest"].field_violations[0].description  # type: ignore[attr-defined]


def test_a_token_serves_the_next_page_whatever_the_page_size(shared: Gateway) -> None:
    token = _first_token(shared, package="tool")
    req = pb.ListPendingPurgesRequest(package="tool", page_token=token, page_size=2**31 - 1)
    first, _ = ok(shared, LIST, pb.ListPendingPurgesRequest(package="tool", page_size=1), "carol")
    rest, _ = ok(shared, LIST, req, "carol")
    assert ["1.0.0", "1.1.0"] == sorted(
        p.version for p in [*first.pending_purges, *rest.pending_purges]
    )


def test_audit_and_pending_purge_tokens_do_not_cross(shared: Gateway) -> None:
    """Both listings sign with the deployment's key and, unfiltered, their filter digests are
    equal (an empty message): each must still refuse the other's token."""
    with grpc.insecure_channel(shared.address) as channel:
        audit = pb_grpc.AuditServiceStub(channel)
        reader = ((PRINCIPAL_KEY, "carol"),)
        events = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=1), timeout=10, metadata=reader
        )
        assert events.next_page_token
        error = fails(
            shared, LIST, pb.ListPendingPurgesRequest(page_token=events.next_page_token), "carol"
        )
        assert_invalid(error, "page_token")
        with pytest.raises(grpc.RpcError) as caught:
            audit.ListAuditEvents(
                pb.ListAuditEventsRequest(page_token=_first_token(shared)),
                timeout=10,
                metadata=reader,
            )
    assert_invalid(rich_error(caught.value), "page_token")


def test_a_token_from_another_deployment_is_named(
    shared: Gateway, permissive: Gateway, emulator: Emulator
) -> None:
    token = _first_token(shared)
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0", "1.1.0")
    req = pb.ListPendingPurgesRequest(page_size=1, page_token=token)
    assert_invalid(fails(permissive, LIST, req, "carol"), "page_token")


# === ListPendingPurges: authorization before validation, and the record =======================

_DUE_BUG = (
    "BUG: a due_before out of Timestamp's range is refused by the edge (api/interceptors.py "
    "_Edge._decode raises render_request's violations) before AuditReads authorizes the "
    "reader, so bob learns INVALID_ARGUMENT (due_before) instead of PERMISSION_DENIED"
)
UNAUTHORIZED_LISTINGS: list[Any] = [
    pytest.param(pb.ListPendingPurgesRequest(), id="valid"),
    pytest.param(pb.ListPendingPurgesRequest(page_token="forged.token"), id="forged token"),
    pytest.param(pb.ListPendingPurgesRequest(page_size=-1), id="negative page size"),
    pytest.param(pb.ListPendingPurgesRequest(package="a\x00b"), id="nul filter"),
    pytest.param(pb.ListPendingPurgesRequest(requester="r" * 3000), id="long filter"),
    pytest.param(
        pb.ListPendingPurgesRequest(domain="\n", page_size=-5, page_token="x"), id="everything"
    ),
    pytest.param(
        pb.ListPendingPurgesRequest(due_before=stamp(TIMESTAMP_HIGH + 1)),
        id="due_before out of range",
    ),
    pytest.param(
        pb.ListPendingPurgesRequest(due_before=stamp(0, -1), package="a\x00b"),
        id="due_before nanos out of range",
    ),
]


@pytest.mark.parametrize("principal", ["bob", "ci-bot"])
@pytest.mark.parametrize("req", UNAUTHORIZED_LISTINGS)
def test_a_principal_who_may_not_read_the_audit_learns_nothing(
    shared: Gateway, emulator: Emulator, principal: str, req: pb.ListPendingPurgesRequest
) -> None:
    """bob (no group) and ci-bot (ci) may not read the audit record: PERMISSION_DENIED /
    POLICY_DENIED whatever the request holds, naming no field; recorded as denied."""
    error = fails(shared, LIST, req, principal)
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    assert "BadRequest" not in error.details
    outcome = outcome_of(shared, error.metadata["audit_event_id"])
    assert ("denied", principal) == (outcome["decision"], outcome["principal"]["id"])
    assert [] == emulator.calls()


def test_the_same_edge_check_reveals_audit_listing_timestamps_to_bob(shared: Gateway) -> None:
    """The same root cause on AuditService.ListAuditEvents (start_time out of range)."""
    req = pb.ListAuditEventsRequest()
    req.start_time.seconds = TIMESTAMP_HIGH + 1
    with grpc.insecure_channel(shared.address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.AuditServiceStub(channel).ListAuditEvents(
            req, timeout=10, metadata=((PRINCIPAL_KEY, "bob"),)
        )
    error = rich_error(caught.value)
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)


def test_a_listing_without_identity_is_unauthenticated(shared: Gateway) -> None:
    error = fails(shared, LIST, pb.ListPendingPurgesRequest(package="\x00"), principal=None)
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert "unauthenticated" == outcome_of(shared, error.metadata["audit_event_id"])["decision"]


def test_every_listing_is_audited_as_a_read(shared: Gateway) -> None:
    """An OK listing carries its audit event id in the trailing metadata; the event is a read
    by carol with the request as sent."""
    req = pb.ListPendingPurgesRequest(package="tool", page_size=1)
    _, event_id = ok(shared, LIST, req, "carol")
    outcome = outcome_of(shared, event_id)
    assert ("read", "OK", "carol") == (
        outcome["decision"],
        outcome["status"]["code"],
        outcome["principal"]["id"],
    )
    assert ("tool", 1) == (outcome["request"]["package"], outcome["request"]["page_size"])
    assert f"{SERVICE}/{LIST}" == outcome["rpc"]["method"]


# === protocol errors on the new methods ========================================================


@pytest.mark.parametrize("method", [RESTORE, LIST])
@pytest.mark.parametrize("principal", ["alice", "bob"])
@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff",
        b"\x0a\x05ab",  # a length past the end
        b"\x0a\x02\xc0\xaf",  # field 1 (a string) with an overlong UTF-8 "/"
        b"\x78",  # field 15, varint, no payload
        pb.DeletePackageVersionsRequest(versions=["\ud7ff"]).SerializeToString()[:-1],
    ],
    ids=["truncated tag", "short length", "bad utf8", "no payload", "truncated request"],
)
def test_bytes_that_are_not_a_request_are_malformed(
    shared: Gateway, emulator: Emulator, method: str, principal: str, data: bytes
) -> None:
    """INVALID_ARGUMENT / MALFORMED_REQUEST naming the message type, audited, nothing read."""
    with grpc.insecure_channel(shared.address) as channel:
        call = channel.unary_unary(f"{SERVICE}/{method}", None, None)
        with pytest.raises(grpc.RpcError) as caught:
            call(data, timeout=10, metadata=((PRINCIPAL_KEY, principal),))
    error = rich_error(caught.value)
    expected = (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        f"the request is not a valid {method} request message",
    )
    assert expected == (error.code, error.reason, error.message)
    assert "invalid" == outcome_of(shared, error.metadata["audit_event_id"])["decision"]
    assert [] == emulator.calls()


def test_a_delete_message_sent_as_a_restore_is_read_by_field_number(
    permissive: Gateway, emulator: Emulator
) -> None:
    """A client with a stale or wrong stub: the bytes of a DeletePackageVersionsRequest sent
    to RestorePackageVersions. Their fields 8 to 13 have other types there (the restore's
    justification is 8, validate_only 9, request_id 10), so protobuf keeps them as unknown
    fields and the delete's *dry run* parses as a *real* restore, which runs. Whatever they
    parse as, the answer is a documented status (never INTERNAL). Numbering the restore's
    fields as the delete's are numbered would make such a mix-up harmless."""
    for version in ("1.0.0", "2.0.0"):
        put(emulator, version)
    archive(permissive, "1.0.0")
    data = pb.DeletePackageVersionsRequest(
        **TOOL,
        versions=["1.0.0"],
        expected_status=pb.PACKAGE_VERSION_STATUS_PUBLISHED,
        justification="why",
        validate_only=True,
        request_id=str(uuid.uuid4()),
        purge_now=True,
    ).SerializeToString()
    with grpc.insecure_channel(permissive.address) as channel:
        call = channel.unary_unary(f"{SERVICE}/{RESTORE}", None, None)
        try:
            reply = call(data, timeout=10, metadata=((PRINCIPAL_KEY, "alice"),))
        except grpc.RpcError as error:
            answer = rich_error(error)
            assert answer.code not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
            return
    parsed = pb.RestorePackageVersionsResponse.FromString(reply)
    assert {"1.0.0"} == set(parsed.successful_versions) | set(parsed.failed_versions) | set(
        parsed.decisions
    )


# === fuzzing (hypothesis) ======================================================================

FUZZ_EXAMPLES = {"restore": 200, "list": 250, "list_denied": 100, "bytes": 200}
"""Bounded sizes: about 10 s in all on two shared cores."""

_CODES_NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

_FUZZ_HISTORY = _History()
"""Request ids the restore fuzz tests sent (hypothesis runs every example in one test call)."""


@dataclass
class _Reply:
    code: grpc.StatusCode
    response: Any = None
    error: RichError | None = None
    event_id: str = ""

    @property
    def reason(self) -> str:
        return self.error.reason if self.error is not None else ""

    def fields(self) -> list[str]:
        assert self.error is not None
        return bad_fields(self.error)


def _failed(method: str, failure: grpc.RpcError) -> _Reply:
    """A failed call's reply; asserts the error contract."""
    call: Any = failure
    code = call.code()
    assert code not in _CODES_NEVER, f"{code}: {call.details()}"
    error = rich_error(failure)  # asserts exactly one ErrorInfo
    assert "pkggov.internal" == error.domain
    assert error.metadata.get("audit_event_id"), "an error without its audit event id"
    event(f"{method}: {code.name} {error.reason}")
    return _Reply(code, error=error, event_id=error.metadata["audit_event_id"])


def _call(channel: grpc.Channel, method: str, data: bytes, principal: str) -> _Reply:
    """`method` with raw request bytes, as `principal`; asserts the error contract."""
    multicallable = channel.unary_unary(f"{SERVICE}/{method}", None, None)
    try:
        reply, call = multicallable.with_call(
            data, timeout=60, metadata=((PRINCIPAL_KEY, principal),)
        )
    except grpc.RpcError as failure:
        return _failed(method, failure)
    trailing = dict(call.trailing_metadata() or ())
    event_id = trailing.get(AUDIT_EVENT_KEY)
    assert isinstance(event_id, str), "an answer without its audit event id"
    event(f"{method}: OK")
    response_type = (
        pb.RestorePackageVersionsResponse if method == RESTORE else pb.ListPendingPurgesResponse
    )
    return _Reply(grpc.StatusCode.OK, response_type.FromString(reply), event_id=event_id)


@pytest.fixture(scope="module")
def channel(shared: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shared.address) as opened:
        yield opened


def _as_delete(req: pb.RestorePackageVersionsRequest) -> pb.DeletePackageVersionsRequest:
    """The delete naming the same package and versions (for test_fuzz's oracle)."""
    return pb.DeletePackageVersionsRequest(
        domain=req.domain,
        domain_owner=req.domain_owner,
        repository=req.repository,
        format=req.format,
        namespace=req.namespace,
        package=req.package,
        versions=list(req.versions),
        justification=req.justification,
        validate_only=req.validate_only,
        request_id=req.request_id,
    )


def _check_restore(
    req: pb.RestorePackageVersionsRequest | None,
    reply: _Reply,
    calls: Sequence[RecordedCall],
    history: _History,
) -> None:
    """The properties of a restore: a bad field is named (and nothing read), a valid request
    is answered for every version and sends only guarded restores of requested versions."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for call in calls:
        _check_model(call)
        assert call.operation not in {"DeletePackageVersions", "DisposePackageVersions"}
    updates = [c for c in calls if c.operation == "UpdatePackageVersionsStatus"]
    if req is None:
        assert (invalid, "MALFORMED_REQUEST") == (reply.code, reply.reason)
        assert not calls
        return
    if reply.reason == "INVALID_REQUEST":
        assert not calls, "a refused restore was read or forwarded"
    reused = bool(req.request_id) and req.request_id.lower() in history.request_ids
    history.sent(req.request_id)
    verdict = _judge(_as_delete(req))
    if verdict.request_id == "bad" or (
        verdict.request_id == "lenient"
        and reply.reason == "INVALID_REQUEST"
        and ["request_id"] == reply.fields()
    ):
        assert (invalid, "INVALID_REQUEST") == (reply.code, reply.reason), reply.error
        assert ["request_id"] == reply.fields()
        return
    if reused and reply.reason != "INVALID_REQUEST":
        return
    if verdict.must or reply.reason == "INVALID_REQUEST":
        assert (invalid, "INVALID_REQUEST") == (reply.code, reply.reason), (
            f"must refuse {sorted(verdict.must)}: {reply.code} {reply.error}"
        )
        _check_bad_request(
            _Answer(reply.code, error=reply.error), verdict, {*verdict.must, *verdict.may}
        )
        return
    allowed = {
        (grpc.StatusCode.OK, ""),
        (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND"),
        # Under the shipped policies, alice restores what she archived; nobody else's is here.
    }
    assert (reply.code, reply.reason) in allowed, f"{reply.code} {reply.error}"
    requested = set(req.versions)
    sent = [v for c in updates for v in c.params["versions"]]
    assert len(sent) == len(set(sent)), "a version was restored twice"
    assert set(sent) <= requested, "an unrequested version was restored"
    for call in updates:
        assert "Archived" == call.params["expectedStatus"]
        assert set(call.params["versions"]) == set(call.params.get("versionRevisions") or {})
    if req.validate_only:
        assert not updates, "a dry run restored"
    response = reply.response
    if response is None:
        assert not updates, "NOT_FOUND after restoring"
        return
    if req.validate_only:
        assert requested == set(response.decisions)
        event(f"dry run: {sorted({d.outcome for d in response.decisions.values()})}")
        return
    successful, failed = set(response.successful_versions), set(response.failed_versions)
    assert requested == successful | failed
    assert not successful & failed
    assert successful <= set(sent), "reported restored but never sent"
    if successful:
        event("restored")


def _keep_archived(gateway: Gateway, emulator: Emulator) -> None:
    """left-pad 1.0.0 in prod-release archived by alice, so that a restore can find it (an
    example that restored it leaves it Published)."""
    coordinates = ("demo", "prod-release", "npm", None, "left-pad", "1.0.0")
    if emulator.version_status(*coordinates) == "Published":
        archive(gateway, "1.0.0", coordinates=LEFT_PAD)
        assert "Archived" == emulator.version_status(*coordinates)


@pytest.mark.timeout(120)
@fuzz_settings(FUZZ_EXAMPLES["restore"])
@given(req=restore_requests(MAX_VERSIONS), retry=st.sampled_from([False] * 4 + [True]))
def test_fuzzed_restores(
    channel: grpc.Channel,
    emulator: Emulator,
    shared: Gateway,
    *,
    req: pb.RestorePackageVersionsRequest,
    retry: bool,
) -> None:
    """Restores across every field, as alice: the properties of _check_restore; sent again
    with its request_id, the same answer and nothing more sent upstream."""
    history = _FUZZ_HISTORY
    _keep_archived(shared, emulator)
    emulator.clear_calls()
    req.request_id = history.fresh(req.request_id, reuse=False)
    reply = _call(channel, RESTORE, req.SerializeToString(), "alice")
    calls = emulator.calls()
    _check_restore(req, reply, calls, history)
    if retry and req.request_id:
        again = _call(channel, RESTORE, req.SerializeToString(), "alice")
        assert (reply.code, reply.reason) == (again.code, again.reason), again.error
        assert len(calls) == len(emulator.calls()), "the retry was sent upstream"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLANK = re.compile(r"[\x00\s]", re.ASCII)


def _listing_violations(req: pb.ListPendingPurgesRequest) -> list[str]:
    """The fields of a listing that break a documented rule (its filters' lengths and
    characters, the page size, and any page token: none here was issued)."""
    bad = []
    for name, longest in FILTER_LIMITS.items():
        value: str = getattr(req, name)
        never = _BLANK if name == "package" else _CONTROL
        if len(value) > longest or never.search(value):
            bad.append(name)
    if req.page_token:
        bad.append("page_token")
    if req.page_size < 0:
        bad.append("page_size")
    return bad


_YEAR_1000 = -30_610_224_000
"""1000-01-01T00:00:00Z in seconds since the epoch."""


def _in_range(req: pb.ListPendingPurgesRequest) -> bool:
    if not req.HasField("due_before"):
        return True
    low, high = TIMESTAMP_SECONDS
    due = req.due_before
    return low <= due.seconds <= high and 0 <= due.nanos <= 999_999_999


@pytest.mark.timeout(120)
@fuzz_settings(FUZZ_EXAMPLES["list"])
@given(req=pending_purge_requests())
def test_fuzzed_listings(
    channel: grpc.Channel, emulator: Emulator, req: pb.ListPendingPurgesRequest
) -> None:
    """Listings as carol: a due_before out of range is named (with, at most, the other bad
    fields); other bad fields are named all at once; a good listing returns at most a page of
    matching purges, soonest first, and reads nothing from CodeArtifact."""
    emulator.clear_calls()
    reply = _call(channel, LIST, req.SerializeToString(), "carol")
    assert [] == emulator.calls()
    if not _in_range(req):
        assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (reply.code, reply.reason)
        fields = reply.fields()
        assert "due_before" in fields
        assert set(fields) <= {"due_before", *_listing_violations(req)}
        return
    bad = _listing_violations(req)
    if bad:
        assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (
            reply.code,
            reply.reason,
        ), reply.error
        assert sorted(bad) == sorted(reply.fields())
        return
    assert grpc.StatusCode.OK == reply.code, reply.error
    if req.HasField("due_before") and req.due_before.seconds < _YEAR_1000:
        # Known bug (test_due_before_a_year_before_1000_matches_nothing, xfail): such a bound
        # matches what it should not. Remove this once that test passes.
        event("due_before before the year 1000: result not checked")
        return
    purges = list(reply.response.pending_purges)
    assert len(purges) <= min(req.page_size or 50, 500)
    for purge in purges:
        for name in FILTER_LIMITS:
            wanted = getattr(req, name)
            assert not wanted or wanted == getattr(purge, name)
        if req.HasField("due_before"):
            assert purge.purge_time.ToNanoseconds() < req.due_before.ToNanoseconds()
    due = [p.purge_time.ToNanoseconds() for p in purges]
    assert due == sorted(due)


@pytest.mark.timeout(120)
@fuzz_settings(FUZZ_EXAMPLES["list_denied"])
@given(req=pending_purge_requests().filter(_in_range))
def test_fuzzed_listings_by_bob_are_denied(
    channel: grpc.Channel, req: pb.ListPendingPurgesRequest
) -> None:
    """bob learns nothing, whatever he sends: PERMISSION_DENIED. (A due_before out of range is
    left out here: see test_a_principal_who_may_not_read_the_audit_learns_nothing, xfail.)"""
    reply = _call(channel, LIST, req.SerializeToString(), "bob")
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (reply.code, reply.reason)


def _parse(message: type[Message], data: bytes) -> Any:
    try:
        return message.FromString(data)
    except DecodeError:
        return None


@pytest.mark.timeout(120)
@fuzz_settings(FUZZ_EXAMPLES["bytes"])
@given(
    method=st.sampled_from([RESTORE, LIST]),
    data=st.one_of(
        raw_messages(MAX_VERSIONS, restore_requests(MAX_VERSIONS)),
        raw_messages(MAX_VERSIONS, pending_purge_requests()),
    ),
)
def test_fuzzed_bytes(channel: grpc.Channel, emulator: Emulator, method: str, data: bytes) -> None:
    """Bytes that may not be a request message, to either new method: MALFORMED_REQUEST when
    they do not parse, else an answer that keeps the error contract (one ErrorInfo, an audit
    event id, never INTERNAL or UNKNOWN), and a restore's properties."""
    emulator.clear_calls()
    if method == RESTORE:
        req = _parse(pb.RestorePackageVersionsRequest, data)
        if req is not None and req.request_id:
            fresh = _FUZZ_HISTORY.fresh(req.request_id, reuse=False)
            data = data.replace(req.request_id.encode(), fresh.encode())
            req = _parse(pb.RestorePackageVersionsRequest, data)
        reply = _call(channel, method, data, "alice")
        _check_restore(req, reply, emulator.calls(), _FUZZ_HISTORY)
        return
    listed = _parse(pb.ListPendingPurgesRequest, data)
    reply = _call(channel, method, data, "carol")
    if listed is None:
        assert (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST") == (
            reply.code,
            reply.reason,
        )
    assert [] == emulator.calls()
