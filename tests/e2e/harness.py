"""Helpers for end-to-end tests: gateway settings, a running gateway, requests, rich errors."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.config import (
    ApprovalSettings,
    AuditSettings,
    CleanupSettings,
    EmulatorSettings,
    IdentitySettings,
    MetricsSettings,
    PolicySettings,
    QuotaSettings,
    RecoverySettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
    WebhookSettings,
)
from pkggov_gateway.runtime import Gateway

PERMIT_ALL = Path(__file__).resolve().parent / "policy" / "permit_all.cedar"
"""A policy that permits every authenticated call (the spine tests are not about policy)."""

PRINCIPAL_KEY = "x-pkggov-principal"
TEST_PRINCIPAL = "alice"

DELETE_METHOD = "/pkggov.v1.PackageGovernanceService/DeletePackageVersions"
"""The gRPC method path of DeletePackageVersions (metrics label it so)."""

OFF_WORDS = frozenset({"0", "false", "no", "off"})  # how config.py reads a false boolean

SOAK_ENV = "PKGGOV_SOAK"
FUZZ_EXAMPLES_ENV = "PKGGOV_FUZZ_EXAMPLES"
TEST_SWITCHES = (SOAK_ENV, FUZZ_EXAMPLES_ENV)
"""The PKGGOV_* variables the test suite reads itself; they are not gateway settings (a gateway
refuses unknown PKGGOV_* variables), so no spawned gateway inherits them."""

SOAK = os.environ.get(SOAK_ENV, "").strip().lower() not in {"", *OFF_WORDS}
"""`make soak` (PKGGOV_SOAK=1): the soak and fuzz tests at their large size."""


def inherited_environ() -> dict[str, str]:
    """This process's environment, for a spawned gateway: without the TEST_SWITCHES."""
    return {k: v for k, v in os.environ.items() if k not in TEST_SWITCHES}


def gateway_settings(endpoint_url: str, **overrides: Any) -> Settings:
    """Settings for a test gateway: loopback port 0, emulator upstream, development identity,
    the permit-all test policy (or the shipped set with ``policy={}``); overrides by section."""
    server = {"listen": "127.0.0.1:0", "grace_seconds": 15.0, **overrides.pop("server", {})}
    upstream = {
        "endpoint_url": endpoint_url,
        "region": DEMO_REGION,
        "access_key_id": DEMO_ACCESS_KEY_ID,
        "secret_access_key": DEMO_SECRET_ACCESS_KEY,
        "retry_base_delay_seconds": 0.01,
        **overrides.pop("upstream", {}),
    }
    identity = {"mode": "dev", **overrides.pop("identity", {})}
    policy = overrides.pop("policy", {"policies": str(PERMIT_ALL)})
    audit = {
        "store": f"sqlite:{tempfile.mkdtemp(prefix='pkggov-audit-')}/audit.db",
        "log": "off",
        "replica": "test",
        **overrides.pop("audit", {}),
    }
    quota = overrides.pop("quota", {})
    recovery = overrides.pop("recovery", {})
    approvals = overrides.pop("approvals", {})
    webhooks = overrides.pop("webhooks", {})
    cleanup = {"interval_seconds": 0.2, **overrides.pop("cleanup", {})}
    metrics = {"listen": "127.0.0.1:0", **overrides.pop("metrics", {})}
    assert not overrides, f"unknown sections {overrides}"
    return Settings(
        server=ServerSettings(**server),
        upstream=UpstreamSettings(**upstream),
        emulator=EmulatorSettings(enabled=False),
        identity=IdentitySettings(**identity),
        policy=PolicySettings(**policy),
        audit=AuditSettings(**audit),
        quota=QuotaSettings(**quota),
        recovery=RecoverySettings(**recovery),
        approvals=ApprovalSettings(**approvals),
        webhooks=WebhookSettings(**webhooks),
        cleanup=CleanupSettings(**cleanup),
        metrics=MetricsSettings(**metrics),
    )


def external_upstream_env(endpoint_url: str, **settings: str) -> dict[str, str]:
    """Environment for spawn_gateway: no embedded emulator, `endpoint_url` (an emulator of the
    test's) as CodeArtifact with the demo credentials, warnings only (stderr is a pipe nobody
    reads while the gateway runs), then `settings` (PKGGOV_* names)."""
    return {
        "PKGGOV_EMULATOR_ENABLED": "false",
        "PKGGOV_UPSTREAM_ENDPOINT_URL": endpoint_url,
        "PKGGOV_UPSTREAM_REGION": DEMO_REGION,
        "PKGGOV_UPSTREAM_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
        "PKGGOV_UPSTREAM_SECRET_ACCESS_KEY": DEMO_SECRET_ACCESS_KEY,
        "PKGGOV_LOGGING_LEVEL": "warning",
        **settings,
    }


@contextmanager
def running_gateway(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> Iterator[Gateway]:
    """A started gateway (on `clock`, when given) that is stopped on exit."""
    gateway = build_gateway(settings, clock=clock)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(grace=2.0)


GatewayFactory = Callable[..., AbstractContextManager[Gateway]]
"""What the make_gateway fixture returns."""


if TYPE_CHECKING:  # grpc-stubs make the base generic; at runtime it is not subscriptable
    _ClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:
    _ClientInterceptor = grpc.UnaryUnaryClientInterceptor


class _Identify(_ClientInterceptor):
    """Adds the development-mode identity header to every call."""

    def __init__(self, principal: str) -> None:
        self._metadata = ((PRINCIPAL_KEY, principal),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = (*(details.metadata or ()), *self._metadata)
        return continuation(details._replace(metadata=metadata), request)


class Reachable(Protocol):
    """A gateway with a gRPC address: an in-process Gateway or a spawned GatewayProcess."""

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        ...


@contextmanager
def stub_for(
    gateway: Reachable, principal: str | None = TEST_PRINCIPAL
) -> Iterator[pb_grpc.PackageGovernanceServiceStub]:
    """A stub on a fresh channel to `gateway`, calling as `principal` (None: anonymous)."""
    with grpc.insecure_channel(gateway.address) as channel:
        target = (
            channel if principal is None else grpc.intercept_channel(channel, _Identify(principal))
        )
        yield pb_grpc.PackageGovernanceServiceStub(target)


@contextmanager
def approval_stub_for(
    gateway: Reachable, principal: str | None = TEST_PRINCIPAL
) -> Iterator[pb_grpc.ApprovalServiceStub]:
    """An ApprovalService stub on a fresh channel to `gateway`, calling as `principal`."""
    with grpc.insecure_channel(gateway.address) as channel:
        target = (
            channel if principal is None else grpc.intercept_channel(channel, _Identify(principal))
        )
        yield pb_grpc.ApprovalServiceStub(target)


@contextmanager
def cleanup_stub_for(
    gateway: Reachable, principal: str | None = TEST_PRINCIPAL
) -> Iterator[pb_grpc.CleanupServiceStub]:
    """A CleanupService stub on a fresh channel to `gateway`, calling as `principal`."""
    with grpc.insecure_channel(gateway.address) as channel:
        target = (
            channel if principal is None else grpc.intercept_channel(channel, _Identify(principal))
        )
        yield pb_grpc.CleanupServiceStub(target)


def request(**fields: Any) -> pb.DeletePackageVersionsRequest:
    """A request for demo/dev-shared npm left-pad unless fields say otherwise."""
    base: dict[str, Any] = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": pb.PACKAGE_FORMAT_NPM,
        "package": "left-pad",
        "versions": ["1.0.0"],
    }
    base.update(fields)
    return pb.DeletePackageVersionsRequest(**base)


@dataclass
class RichError:
    """A failed call's status code, message, its one ErrorInfo and the other details."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    details: dict[str, Message] = field(default_factory=dict)


_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    pb.PolicyDenial,
)


def rich_error(error: grpc.RpcError) -> RichError:
    """Decode the google.rpc.Status of a failed call; asserts exactly one ErrorInfo."""
    call: Any = error
    status = rpc_status.from_call(call)
    assert status is not None, f"no rich status on {call.code()}: {call.details()}"
    infos = []
    details: dict[str, Message] = {}
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            infos.append(info)
            continue
        for cls in _DETAIL_TYPES:
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                details[cls.DESCRIPTOR.name] = message
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {len(infos)}"
    return RichError(
        call.code(),
        status.message,
        infos[0].reason,
        infos[0].domain,
        dict(infos[0].metadata),
        details,
    )


def failed_call(
    stub: pb_grpc.PackageGovernanceServiceStub,
    req: pb.DeletePackageVersionsRequest,
    timeout: float = 10.0,
) -> RichError:
    """Call DeletePackageVersions, which must fail, and decode its rich status."""
    try:
        stub.DeletePackageVersions(req, timeout=timeout)
    except grpc.RpcError as error:
        return rich_error(error)
    raise AssertionError("the call succeeded but was expected to fail")


def bad_fields(error: RichError) -> list[str]:
    """The field names of the BadRequest detail."""
    bad = error.details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [v.field for v in bad.field_violations]


@dataclass
class GatewayProcess:
    """A running `pkggov-gateway` subprocess and what its banner said."""

    proc: subprocess.Popen[str]
    address: str
    emulator_url: str
    """The embedded emulator's URL, or (without one) the configured upstream endpoint."""
    banner: list[str]
    audit_store: str = ""
    """The audit store the process writes (``sqlite:<temporary folder>/audit.db``)."""


def health_status(address: str, service: str) -> int:
    """The gateway's grpc.health.v1 status for `service`."""
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Prometheus samples by name and labels."""


def scrape(url: str) -> Samples:
    """Every sample of the /metrics endpoint at `url`, by name and labels."""
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our loopback gateway
        assert 200 == answer.status
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings for the fuzz tests: `max_examples`, no deadline (calls cross real
    sockets), no example database, failures printed with a reproduction blob."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
