"""The RPC edge: request id, caller identity, decoding, the governed call, status mapping, one
log line and the metrics of every unary call.

It must stay the innermost interceptor because it builds each method's handler once and reuses
it. It hands the servicer a `CallContext`: the caller and the governed call, explicitly.
"""

from __future__ import annotations

import base64
import collections
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from pkggov_gateway.api.convert import recorded_response, render_request
from pkggov_gateway.api.status import INTERNAL_RULE, rule_for, to_rpc_status
from pkggov_gateway.api.status_budget import fit_status
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    InvalidRequestError,
    MalformedRequestError,
    MethodNotImplementedError,
    UnauthenticatedError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.records import RecordedFailure, RecordedStatus
from pkggov_gateway.ports import Authenticator, Metrics, NullMetrics
from pkggov_gateway.service.audit import Auditor
from pkggov_gateway.service.governed_call import CHANGING_METHODS, GovernedCall

__all__ = [
    "AUDIT_EVENT_KEY",
    "PROTECTED_PREFIX",
    "REQUEST_ID_KEY",
    "CallContext",
    "RpcEdgeInterceptor",
    "abort_status",
    "governed",
    "governed_call",
    "recorded_status_of",
]

GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"
AUDIT_EVENT_KEY = "x-pkggov-audit-event-id"
"""Trailing metadata key carrying the call's audit event id."""

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
"""grpc.StatusCode by its number (as google.rpc.Status carries it)."""

PROTECTED_PREFIX = "/pkggov.v1."
"""Methods that require an identity; health and reflection do not (TLS still applies)."""

REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

log = structlog.get_logger("pkggov.rpc")

_Unary = Callable[[Any, grpc.ServicerContext], Any]
_Deserializer = Callable[[bytes], Any] | None

if TYPE_CHECKING:  # grpc-stubs make the base generic; at runtime it is not subscriptable
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class RpcEdgeInterceptor(_ServerInterceptor):
    """Wraps every unary-unary method; streaming methods (health Watch, reflection) pass through.

    Per call: take the caller's ``x-request-id`` when well formed (else a new UUID), bind it
    with the method and peer to the log context and send it back as initial metadata;
    authenticate the caller of a pkggov method (UNAUTHENTICATED before anything else); decode
    the request here, so undecodable bytes are INVALID_ARGUMENT (MALFORMED_REQUEST) rather than
    grpc's INTERNAL; translate exceptions through the status table; log one ``rpc`` line with
    the code the caller saw (CANCELLED or DEADLINE_EXCEEDED when it went away first).

    With an auditor, every pkggov call is an audit event (health and reflection are not):
    its outcome is recorded before the answer leaves, and the answer carries the event id
    (in the response, the ErrorInfo metadata and the ``x-pkggov-audit-event-id`` trailer).
    A call of which nothing could be recorded is answered UNAVAILABLE (AUDIT_UNAVAILABLE).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        auditor: Auditor | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._auditor = auditor
        self._metrics = metrics or NullMetrics()
        self._handlers: dict[str, _Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        """Return the wrapped handler for the method, built once per method."""
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        protected = method.startswith(PROTECTED_PREFIX)
        wrapped = grpc.unary_unary_rpc_method_handler(
            _Edge(
                handler.unary_unary,
                handler.request_deserializer,
                method,
                self._authenticator if protected else None,
                self._auditor if protected else None,
                metrics=self._metrics,
            ),
            request_deserializer=None,  # raw bytes: decoded inside, with errors mapped
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = wrapped
        return wrapped


def _metadata(pairs: Sequence[tuple[str, str | bytes]]) -> dict[str, str | bytes]:
    """Call metadata as a mapping; a repeated text key's values are joined with ", " (as HTTP
    joins repeated headers), so a second identity header cannot silently replace the first."""
    merged: dict[str, str | bytes] = {}
    for key, value in pairs:
        previous = merged.get(key)
        if isinstance(previous, str) and isinstance(value, str):
            merged[key] = f"{previous}, {value}"
        else:
            merged[key] = value
    return merged


class _AbortStatus(
    collections.namedtuple("_AbortStatus", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    """A status to abort with, carrying our trailing metadata beside the rich details."""


def abort_status(status: status_pb2.Status, event_id: str | None = None) -> grpc.Status:
    """The status as sent: every status the gateway answers with (mapped errors, INTERNAL,
    AUDIT_UNAVAILABLE, AIP-155 replays, the streams' errors) passes here and is cut to the
    trailer budget, its ``grpc-message`` the same text as the sent Status.message. The audit
    keeps it whole."""
    status = fit_status(status)
    code = _CODE_BY_NUMBER[status.code]
    trailing: list[tuple[str, str | bytes]] = [
        (GRPC_DETAILS_METADATA_KEY, status.SerializeToString())
    ]
    if event_id is not None:
        trailing.append((AUDIT_EVENT_KEY, event_id))
    return _AbortStatus(code, status.message, tuple(trailing))


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


class CallContext:
    """The grpc context of a pkggov call, with what the edge established: the caller and the
    governed call (None without an auditor). The edge hands it to the servicer in place of
    grpc's context, which it wraps (every other attribute is grpc's); see `governed`."""

    __slots__ = ("_context", "call", "principal")

    def __init__(
        self,
        context: grpc.ServicerContext,
        principal: Principal | None,
        call: GovernedCall | None,
    ) -> None:
        self._context = context
        self.principal = principal
        self.call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def governed(context: grpc.ServicerContext) -> CallContext:
    """The CallContext the edge passed for `context`; UNAUTHENTICATED if there is none (a
    method served without the edge has no identity)."""
    if not isinstance(context, CallContext) or context.principal is None:
        raise UnauthenticatedError("the call carries no identity")
    return context


def governed_call(context: grpc.ServicerContext) -> tuple[Principal, GovernedCall]:
    """The caller and the call's record, for a method the edge audits (every pkggov.v1
    method but the reads of AuditService)."""
    edge = governed(context)
    assert edge.principal is not None  # noqa: S101 - governed() says so
    assert edge.call is not None  # noqa: S101 - the edge audits the method
    return edge.principal, edge.call


@dataclass(slots=True)
class _Rpc:
    """One call as the edge sees it, from arrival to the log line."""

    request_id: str
    peer: str
    metadata: dict[str, str | bytes]
    started: float
    call: GovernedCall | None
    code: grpc.StatusCode = grpc.StatusCode.OK

    @property
    def event_id(self) -> str | None:
        return self.call.event_id if self.call is not None else None


class _Edge:
    """The edge of one unary method; each step of a call is one method, in order:
    `_arrive` (request id, log context, metrics, the governed call), `_identify`, `_decode`,
    `_serve` (the servicer), `_status_for` (the status table), `_record`, `_answer` and
    `_leave` (the log line)."""

    def __init__(
        self,
        behaviour: _Unary,
        deserialize: _Deserializer,
        method: str,
        authenticator: Authenticator | None,
        auditor: Auditor | None,
        *,
        metrics: Metrics,
    ) -> None:
        self._behaviour = behaviour
        self._deserialize = deserialize
        self._method = method
        self._message_name = method.rpartition("/")[2]
        self._authenticator = authenticator
        self._auditor = auditor
        self._metrics = metrics

    def __call__(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        rpc = self._arrive(context)
        try:
            response: Any = None
            status: status_pb2.Status | None = None
            error: BaseException | None = None
            try:
                principal = self._identify(rpc, context)
                request = self._decode(rpc, raw)
                edge = CallContext(context, principal, rpc.call)
                response = self._serve(request, cast("grpc.ServicerContext", edge))
            except RecordedFailure as replay:
                error = replay
                status = status_pb2.Status.FromString(base64.b64decode(replay.status.details or ""))
            except Exception as failure:  # noqa: BLE001 - the status table maps any error
                error = failure
                status = self._status_for(failure, rpc)
            if rpc.call is not None:
                status = _record(rpc.call, response, status, error)
            return self._answer(context, rpc, response, status)
        finally:
            if rpc.call is not None:
                rpc.call.release()  # the package's lock, if the call still holds it
            self._leave(context, rpc)

    def _arrive(self, context: grpc.ServicerContext) -> _Rpc:
        metadata = _metadata(context.invocation_metadata())
        sent = metadata.get(REQUEST_ID_KEY)
        request_id = sent if isinstance(sent, str) and _REQUEST_ID.fullmatch(sent) else None
        request_id = request_id or str(uuid.uuid4())
        peer = context.peer()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=self._method, peer=peer
        )
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        self._metrics.rpc_started(self._method)
        call = self._auditor.begin(self._method, request_id, peer) if self._auditor else None
        return _Rpc(request_id, peer, metadata, time.perf_counter(), call)

    def _identify(self, rpc: _Rpc, context: grpc.ServicerContext) -> Principal | None:
        """The caller of a pkggov method (UNAUTHENTICATED before anything else is done)."""
        if self._authenticator is None:
            return None
        # grpc-stubs type auth_context() as Mapping[str, bytes]; grpcio: lists.
        auth_context = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
        principal = self._authenticator.authenticate(rpc.metadata, rpc.peer, auth_context)
        if rpc.call is not None:
            rpc.call.identified(principal)
        structlog.contextvars.bind_contextvars(principal=principal.id, auth=principal.method.value)
        return principal

    def _decode(self, rpc: _Rpc, raw: bytes) -> Any:
        """The request message: undecodable bytes are MALFORMED_REQUEST (grpc would say
        INTERNAL); a request the record cannot show is recorded as such, and invalid."""
        try:
            request = self._deserialize(raw) if self._deserialize is not None else raw
        except DecodeError as exc:
            raise MalformedRequestError(
                f"the request is not a valid {self._message_name} request message"
            ) from exc
        if rpc.call is not None and isinstance(request, Message):
            rendered, unrenderable = render_request(request)
            rpc.call.received(rendered)
            # A change is refused at once; a read validates its fields itself, after it has
            # authorized the reader, so that one who may not read learns nothing from them.
            if unrenderable and self._message_name in CHANGING_METHODS:
                raise InvalidRequestError(unrenderable)
        return request

    def _serve(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The servicer's answer. A method it does not implement (the generated base class
        raises NotImplementedError) is UNIMPLEMENTED, logged at info: not a bug to trace."""
        try:
            return self._behaviour(request, context)
        except NotImplementedError as missing:
            raise MethodNotImplementedError(
                f"{self._method} is not implemented by this gateway"
            ) from missing

    def _status_for(self, error: Exception, rpc: _Rpc) -> status_pb2.Status:
        rule = rule_for(error)
        if rule is INTERNAL_RULE:
            log.exception("rpc.unexpected_error")
        else:
            log.info("rpc.error", reason=rule.reason, error=str(error))
        extra = {"audit_event_id": rpc.event_id} if rpc.event_id is not None else None
        return to_rpc_status(error, extra)

    def _answer(
        self,
        context: grpc.ServicerContext,
        rpc: _Rpc,
        response: Any,
        status: status_pb2.Status | None,
    ) -> Any:
        if status is not None:
            rpc.code = _CODE_BY_NUMBER[status.code]
            context.abort_with_status(abort_status(status, rpc.event_id))
        if rpc.event_id is not None:
            context.set_trailing_metadata(((AUDIT_EVENT_KEY, rpc.event_id),))
        return response

    def _leave(self, context: grpc.ServicerContext, rpc: _Rpc) -> None:
        """One ``rpc`` log line and the metrics, with the code the caller saw (CANCELLED or
        DEADLINE_EXCEEDED when it went away before the answer)."""
        fields: dict[str, Any] = {"code": rpc.code.name}
        if rpc.call is not None:
            fields["audit_event_id"] = rpc.call.event_id
            if rpc.call.aws_request_ids:
                fields["aws_request_ids"] = list(rpc.call.aws_request_ids)
        if not context.is_active():
            gone = (
                grpc.StatusCode.DEADLINE_EXCEEDED
                if (context.time_remaining() or 0) <= 0
                else grpc.StatusCode.CANCELLED
            )
            fields.update(code=gone.name, handler_code=rpc.code.name)
        seconds = time.perf_counter() - rpc.started
        self._metrics.rpc_finished(self._method, fields["code"], seconds)
        log.info("rpc", duration_ms=round(seconds * 1000, 3), **fields)
        structlog.contextvars.clear_contextvars()


def _record(
    call: GovernedCall,
    response: Any,
    status: status_pb2.Status | None,
    error: BaseException | None,
) -> status_pb2.Status | None:
    """Write the call's outcome; return the status to answer with (None: the response).

    When nothing of the call could be recorded, the answer becomes AUDIT_UNAVAILABLE (fail
    closed). After a committed intent the true answer stands: the store keeps retrying.
    The status is recorded whole (message and details): only the copy sent is cut to fit.
    """
    if isinstance(response, Message) and getattr(response, "audit_event_id", None) == "":
        response.audit_event_id = call.event_id  # type: ignore[attr-defined]
    try:
        if status is None or error is None:  # no error: the response
            call.succeeded(recorded_response(response) if isinstance(response, Message) else None)
        else:
            call.failed(error, _recorded_status(status))
    except AuditUnavailableError as unavailable:
        if call.intent is None:
            log.error("audit.call_refused", error=unavailable.detail)
            return to_rpc_status(unavailable, {"audit_event_id": call.event_id})
        log.error("audit.outcome_pending", error=unavailable.detail, note="retried until recorded")
    return status


def recorded_status_of(error: BaseException) -> RecordedStatus:
    """What the audit records of the status the edge would answer `error` with (for calls
    that are not RPCs: the purge worker's)."""
    return _recorded_status(to_rpc_status(error))


def _recorded_status(status: status_pb2.Status) -> RecordedStatus:
    return RecordedStatus(
        code=_CODE_BY_NUMBER[status.code].name,
        reason=_reason(status),
        message=status.message,
        details=base64.b64encode(status.SerializeToString()).decode(),
    )
