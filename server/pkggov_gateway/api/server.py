"""Assembles the grpcio server: the service, health, reflection, interceptors and limits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

# Imported so that reflection can describe the google.rpc error details the service sends.
from google.rpc import error_details_pb2  # noqa: F401
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.approvals import ApprovalServicer
from pkggov_gateway.api.cleanup import CleanupServicer
from pkggov_gateway.api.interceptors import RpcEdgeInterceptor
from pkggov_gateway.api.servicer import AuditServicer, PackageGovernanceServicer
from pkggov_gateway.api.stream_budget import StreamLimits
from pkggov_gateway.api.streams import StreamLimitInterceptor
from pkggov_gateway.ports import Authenticator, Metrics
from pkggov_gateway.service.audit import Auditor

__all__ = [
    "APPROVAL_SERVICE_NAME",
    "AUDIT_HEALTH_NAME",
    "AUDIT_SERVICE_NAME",
    "POLICY_HEALTH_NAME",
    "SERVICE_NAME",
    "TOKENS_HEALTH_NAME",
    "GrpcServer",
    "max_request_bytes",
]

POLICY_HEALTH_NAME = "pkggov.policy"
"""Health service name whose status says whether the last policy reload succeeded."""

AUDIT_HEALTH_NAME = "pkggov.audit"
"""Health service name whose status says whether the audit store takes writes."""

TOKENS_HEALTH_NAME = "pkggov.tokens"
"""Health service name whose status says whether every token issuer's keys are loaded (only
when tokens are accepted)."""

LIVENESS_HEALTH_NAME = "pkggov.liveness"
"""Health service name that is SERVING while the process runs, whatever the audit store or
the last policy reload: for liveness probes, since a restart cures neither."""

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["PackageGovernanceService"].full_name
AUDIT_SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
APPROVAL_SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ApprovalService"].full_name
CLEANUP_SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CleanupService"].full_name

# The model's lengths count characters; UTF-8 takes up to 4 bytes for one.
_VERSION_BYTES = 255 * 4 + 3  # the longest valid version, its tag and its length prefix
_FIXED_BYTES = 8192  # every other field at its maximum (namespace and package 1,020 bytes each)


def max_request_bytes(max_versions: int) -> int:
    """The receive limit: the largest valid request, so anything larger is refused early."""
    return max_versions * _VERSION_BYTES + _FIXED_BYTES


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive and connection age (server.keepalive_* settings), as grpc options."""

    time_seconds: float = 60.0
    timeout_seconds: float = 20.0
    min_client_ping_interval_seconds: float = 10.0
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0

    def options(self) -> list[tuple[str, int]]:
        """The grpc core channel arguments (milliseconds)."""

        def ms(seconds: float) -> int:
            return round(seconds * 1000)

        options = [
            ("grpc.keepalive_time_ms", ms(self.time_seconds)),
            ("grpc.keepalive_timeout_ms", ms(self.timeout_seconds)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                ms(self.min_client_ping_interval_seconds),
            ),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        if self.max_connection_age_seconds > 0:
            options += [
                ("grpc.max_connection_age_ms", ms(self.max_connection_age_seconds)),
                ("grpc.max_connection_age_grace_ms", ms(self.max_connection_age_grace_seconds)),
            ]
        return options


class _Health(health.HealthServicer):
    """grpcio's HealthServicer with grpc.health.v1 List, which grpcio-health-checking leaves
    to the generated base class (NotImplementedError): every status it holds, at once."""

    def List(  # noqa: N802 - the generated servicer's method name
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """A snapshot of every status set (under the servicer's own lock, as Check reads)."""
        with self._lock:
            statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )


class GrpcServer:
    """A started-on-demand grpcio server serving pkggov.v1 plus health and reflection.

    `reuse_port` binds `listen` with SO_REUSEPORT: the other workers of one gateway
    (server.workers) listen on the same port, and the kernel spreads connections over them.
    Without it (one process) a port another socket holds fails the bind. `health_listen` is
    bound with grpc's default, SO_REUSEPORT, either way.
    """

    def __init__(
        self,
        servicer: PackageGovernanceServicer,
        *,
        authenticator: Authenticator,
        credentials: grpc.ServerCredentials | None,
        listen: str,
        max_workers: int,
        max_concurrent_rpcs: int,
        max_versions: int,
        max_metadata_bytes: int = 16_384,
        keepalive: Keepalive | None = None,
        health_listen: str = "",
        auditor: Auditor | None = None,
        audit_servicer: AuditServicer | None = None,
        approval_servicer: ApprovalServicer | None = None,
        cleanup_servicer: CleanupServicer | None = None,
        metrics: Metrics | None = None,
        stream_limits: StreamLimits | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="pkggov-rpc")
        limit = max_request_bytes(max_versions)
        default_limits = StreamLimits(
            max_streams=max(1, max_workers // 4), max_per_peer=4, idle_seconds=10, max_seconds=300
        )
        self._streams = StreamLimitInterceptor(stream_limits or default_limits, metrics)
        self._server = grpc.server(
            self._executor,
            # streams first: the edge interceptor must stay innermost (it caches its handlers)
            interceptors=[self._streams, RpcEdgeInterceptor(authenticator, auditor, metrics)],
            options=[
                ("grpc.max_receive_message_length", limit),
                # Room for a bearer token of identity.max_token_bytes besides the rest: beyond
                # grpc's 8 KiB default a call would fail before the gateway could name why.
                ("grpc.max_metadata_size", max_metadata_bytes),
                ("grpc.absolute_max_metadata_size", max_metadata_bytes),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                *(keepalive or Keepalive()).options(),
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        pb_grpc.add_PackageGovernanceServiceServicer_to_server(servicer, self._server)
        names = [SERVICE_NAME]
        if audit_servicer is not None:
            pb_grpc.add_AuditServiceServicer_to_server(audit_servicer, self._server)
            names.append(AUDIT_SERVICE_NAME)
        if approval_servicer is not None:
            pb_grpc.add_ApprovalServiceServicer_to_server(approval_servicer, self._server)
            names.append(APPROVAL_SERVICE_NAME)
        if cleanup_servicer is not None:
            pb_grpc.add_CleanupServiceServicer_to_server(cleanup_servicer, self._server)
            names.append(CLEANUP_SERVICE_NAME)
        self._names = tuple(names)
        self.health = _Health()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(listen)
            else:
                self.port = self._server.add_secure_port(listen, credentials)
        except RuntimeError as error:  # grpcio reports a failed bind this way
            self._executor.shutdown(wait=False)
            raise OSError(f"cannot listen on {listen}: {error}") from error
        host = listen.rpartition(":")[0]
        self.address = f"{host}:{self.port}"
        self._health_server: HealthOnlyServer | None = None
        if health_listen:
            try:
                self._health_server = HealthOnlyServer(self.health, health_listen, metrics)
            except OSError:
                self._executor.shutdown(wait=False)
                raise

    @property
    def health_address(self) -> str | None:
        """HOST:PORT of the plaintext health-only listener (None when there is none)."""
        return self._health_server.address if self._health_server is not None else None

    @property
    def open_streams(self) -> int:
        """Streaming calls now admitted under server.max_streams."""
        return self._streams.budget.open

    @property
    def waiting_calls(self) -> int:
        """Unary calls now waiting for their request message (on the main port)."""
        return self._streams.budget.waiting

    def start(self) -> None:
        """Start serving and report SERVING for the service and the server as a whole."""
        self._server.start()
        self._streams.start()
        names = ("", *self._names, POLICY_HEALTH_NAME, AUDIT_HEALTH_NAME, LIVENESS_HEALTH_NAME)
        for name in names:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self._health_server is not None:
            self._health_server.start()

    def set_audit_health(self, healthy: bool) -> None:
        """While the audit store cannot take writes, the gateway cannot serve: report
        NOT_SERVING for the server, its services and AUDIT_HEALTH_NAME."""
        status = health_pb2.HealthCheckResponse
        for name in ("", *self._names, AUDIT_HEALTH_NAME):
            self.health.set(name, status.SERVING if healthy else status.NOT_SERVING)

    def set_token_health(self, ready: bool) -> None:
        """Report whether every token issuer has keys (NOT_SERVING under TOKENS_HEALTH_NAME
        while one's tokens fail closed: its JWKS could not be loaded, or its cache ran out)."""
        status = health_pb2.HealthCheckResponse
        self.health.set(TOKENS_HEALTH_NAME, status.SERVING if ready else status.NOT_SERVING)

    def set_policy_health(self, healthy: bool) -> None:
        """Report the last policy reload: NOT_SERVING under POLICY_HEALTH_NAME when it failed
        (the previous policy set is still in force, so the service itself keeps serving)."""
        status = health_pb2.HealthCheckResponse
        self.health.set(POLICY_HEALTH_NAME, status.SERVING if healthy else status.NOT_SERVING)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within `grace`."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._streams.stop()
        self._executor.shutdown(wait=False)
        if self._health_server is not None:
            self._health_server.stop()


def _check_only(statuses: health.HealthServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """grpc.health.v1 Check answered from the main server's statuses, and no other method.

    Watch is not registered at all (UNIMPLEMENTED before any thread is taken): registered but
    unimplemented, as the generated servicer has it, grpcio would hold one of the two threads
    while waiting for its request message, which an unauthenticated caller need never send.
    """
    check = grpc.unary_unary_rpc_method_handler(
        statuses.Check,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(health.SERVICE_NAME, {"Check": check})


_HEALTH_ONLY_LIMITS = StreamLimits(
    max_streams=0, max_per_peer=0, idle_seconds=10.0, max_seconds=300.0
)
"""The health-only port's limits: it serves no stream and keeps no call slow to send its
message (a probe's is there at once): each ends RESOURCE_EXHAUSTED after MESSAGE_GRACE."""


class HealthOnlyServer:
    """A plaintext listener serving only grpc.health.v1 Check (server.health_listen).

    The main port requires a client certificate under mTLS, which the kubelet's gRPC probes
    cannot present; this port lets them ask. It has no pkggov service, no reflection and no
    Watch, a two-thread executor, a small concurrency limit, and its own `StreamLimitInterceptor`
    so that Check calls that never send their message cannot hold both threads.
    """

    def __init__(
        self,
        statuses: health.HealthServicer,
        listen: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="pkggov-health")
        self._limits = StreamLimitInterceptor(_HEALTH_ONLY_LIMITS, metrics)
        self._server = grpc.server(
            self._executor,
            interceptors=[self._limits],
            maximum_concurrent_rpcs=8,  # grpc's default SO_REUSEPORT: the workers share the port
        )
        self._server.add_generic_rpc_handlers((_check_only(statuses),))
        try:
            port = self._server.add_insecure_port(listen)
        except RuntimeError as error:
            self._executor.shutdown(wait=False)
            raise OSError(f"cannot listen on {listen}: {error}") from error
        self.address = f"{listen.rpartition(':')[0]}:{port}"

    def start(self) -> None:
        """Start answering probes."""
        self._server.start()
        self._limits.start()

    def stop(self) -> None:
        """Stop at once (the main server has drained by then)."""
        self._server.stop(0).wait()
        self._limits.stop()
        self._executor.shutdown(wait=False)
