"""The RPC edge interceptor: request id, caller identity, decoding, error mapping, one log line.

It must stay the innermost interceptor because it builds each method's handler once and reuses
it. The authenticated principal of the current call is in `CURRENT_PRINCIPAL`.
"""

from __future__ import annotations

import base64
import collections
import contextvars
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from pkggov_gateway.api.status import INTERNAL_RULE, rule_for, to_rpc_status
from pkggov_gateway.api.status_budget import fit_status
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    FieldViolation,
    InvalidRequestError,
    MalformedRequestError,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.ports import Authenticator, Metrics, NullMetrics
from pkggov_gateway.service.audit import AuditCall, Auditor

__all__ = [
    "AUDIT_EVENT_KEY",
    "CURRENT_AUDIT",
    "CURRENT_PRINCIPAL",
    "PROTECTED_PREFIX",
    "REQUEST_ID_KEY",
    "ReplayedCall",
    "RpcEdgeInterceptor",
]

CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "pkggov_principal", default=None
)
"""The authenticated caller of the RPC being served on this thread."""

CURRENT_AUDIT: contextvars.ContextVar[AuditCall | None] = contextvars.ContextVar(
    "pkggov_audit", default=None
)
"""The audit event of the pkggov RPC being served on this thread."""

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
        wrapped = grpc.unary_unary_rpc_method_handler(
            _edge(
                handler.unary_unary,
                handler.request_deserializer,
                method,
                self._authenticator if method.startswith(PROTECTED_PREFIX) else None,
                self._auditor if method.startswith(PROTECTED_PREFIX) else None,
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


class ReplayedCall(Exception):  # noqa: N818 - a way of answering, not a failure
    """Raised by a servicer to answer with a recorded error status (an AIP-155 replay)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class _AbortStatus(
    collections.namedtuple("_AbortStatus", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    """A status to abort with, carrying our trailing metadata beside the rich details."""


def _abort_status(status: status_pb2.Status, event_id: str | None) -> grpc.Status:
    """The status as sent: every status the gateway answers with (mapped errors, INTERNAL,
    AUDIT_UNAVAILABLE, AIP-155 replays) passes here and is cut to the trailer budget, its
    ``grpc-message`` the same text as the sent Status.message. The audit keeps it whole."""
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


def _edge(
    behaviour: _Unary,
    deserialize: _Deserializer,
    method: str,
    authenticator: Authenticator | None,
    auditor: Auditor | None,
    *,
    metrics: Metrics,
) -> _Unary:
    def call(raw: bytes, context: grpc.ServicerContext) -> Any:
        metadata = _metadata(context.invocation_metadata())
        sent = metadata.get(REQUEST_ID_KEY)
        request_id = sent if isinstance(sent, str) and _REQUEST_ID.fullmatch(sent) else None
        request_id = request_id or str(uuid.uuid4())
        peer = context.peer()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method, peer=peer)
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        metrics.rpc_started(method)
        code = grpc.StatusCode.OK
        audit = auditor.begin(method, request_id, peer) if auditor else None
        event_id = audit.event_id if audit is not None else None
        CURRENT_PRINCIPAL.set(None)
        CURRENT_AUDIT.set(audit)
        status: status_pb2.Status | None = None
        response: Any = None
        try:
            try:
                if authenticator is not None:
                    # grpc-stubs type auth_context() as Mapping[str, bytes]; grpcio: lists.
                    auth_context = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
                    principal = authenticator.authenticate(metadata, peer, auth_context)
                    CURRENT_PRINCIPAL.set(principal)
                    if audit is not None:
                        audit.principal = principal
                    structlog.contextvars.bind_contextvars(
                        principal=principal.id, auth=principal.method.value
                    )
                try:
                    request = deserialize(raw) if deserialize is not None else raw
                except DecodeError as exc:
                    raise MalformedRequestError(
                        f"the request is not a valid {method.rpartition('/')[2]} request message"
                    ) from exc
                if audit is not None and isinstance(request, Message):
                    rendered, unrenderable = _render(request)
                    audit.set_request(rendered)
                    if unrenderable:
                        raise InvalidRequestError(unrenderable)
                response = behaviour(request, context)
            except ReplayedCall as replay:
                status = replay.status
            except Exception as error:
                rule = rule_for(error)
                if rule is INTERNAL_RULE:
                    log.exception("rpc.unexpected_error")
                else:
                    log.info("rpc.error", reason=rule.reason, error=str(error))
                extra = {"audit_event_id": event_id} if event_id is not None else None
                status = to_rpc_status(error, extra)
            if audit is not None:
                status = _record(audit, response, status)
            if status is not None:
                code = _CODE_BY_NUMBER[status.code]
                context.abort_with_status(_abort_status(status, event_id))
            if event_id is not None:
                context.set_trailing_metadata(((AUDIT_EVENT_KEY, event_id),))
            return response
        finally:
            fields: dict[str, Any] = {"code": code.name}
            if event_id is not None:
                fields["audit_event_id"] = event_id
            if not context.is_active():  # the caller went away before the answer
                gone = (
                    grpc.StatusCode.DEADLINE_EXCEEDED
                    if (context.time_remaining() or 0) <= 0
                    else grpc.StatusCode.CANCELLED
                )
                fields.update(code=gone.name, handler_code=code.name)
            seconds = time.perf_counter() - started
            metrics.rpc_finished(method, fields["code"], seconds)
            log.info("rpc", duration_ms=round(seconds * 1000, 3), **fields)
            structlog.contextvars.clear_contextvars()
            CURRENT_PRINCIPAL.set(None)
            CURRENT_AUDIT.set(None)

    return call


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


TIMESTAMP_RULE = (
    "must be a valid Timestamp: seconds within 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, "
    "nanos within 0 and 999,999,999"
)

_UNRENDERABLE = {"google.protobuf.Timestamp": TIMESTAMP_RULE}
"""What a field of this message type that JSON cannot show breaks, by type."""


def _render(message: Message) -> tuple[dict[str, Any], list[FieldViolation]]:
    """The request as the audit records it, and the fields JSON cannot show (a Timestamp out
    of its range, say): those are recorded as unrenderable and make the call invalid, so the
    edge never fails while recording a request, whatever it holds."""
    try:
        return _as_dict(message), []
    except Exception:  # noqa: BLE001, S110 - json_format raises several types; found below
        pass
    bad: dict[str, str] = {}
    for descriptor, _ in message.ListFields():
        alone = type(message)()
        alone.MergeFrom(message)
        for other, _ in message.ListFields():
            if other.name != descriptor.name:
                alone.ClearField(other.name)
        try:
            json_format.MessageToDict(alone)
        except Exception as error:  # noqa: BLE001 - any failure makes the field unrenderable
            kind = descriptor.message_type.full_name if descriptor.message_type else ""
            bad[descriptor.name] = _UNRENDERABLE.get(kind) or (
                f"cannot be recorded: {str(error).partition(' field: ')[2] or error}"
            )
    rest = type(message)()
    rest.MergeFrom(message)
    for name in bad:
        rest.ClearField(name)
    rendered = _as_dict(rest)
    rendered.update({name: {"unrenderable": text} for name, text in bad.items()})
    return rendered, [FieldViolation(name, text) for name, text in bad.items()]


_SUMMARIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "pkggov.v1.ListAuditEventsResponse": lambda r: {
        "event_ids": [e.event_id for e in r.events],
        "next_page": bool(r.next_page_token),
    },
    "pkggov.v1.GetAuditEventResponse": lambda r: {"event_id": r.event.event_id},
}
"""Responses recorded by what they name, not whole: an audit read's answer holds recorded
bodies, which would nest (and grow) with every read of a read."""


def _recorded(response: Message) -> dict[str, Any]:
    """What the outcome records of an OK response."""
    summary = _SUMMARIES.get(response.DESCRIPTOR.full_name)
    return summary(response) if summary is not None else _as_dict(response)


def _record(
    audit: AuditCall, response: Any, status: status_pb2.Status | None
) -> status_pb2.Status | None:
    """Write the call's outcome; return the status to answer with (None: the response).

    When nothing of the call could be recorded, the answer becomes AUDIT_UNAVAILABLE (fail
    closed). After a committed intent the true answer stands: the store keeps retrying.
    The status is recorded whole (message and details): only the copy sent is cut to fit.
    """
    if isinstance(response, Message) and getattr(response, "audit_event_id", None) == "":
        response.audit_event_id = audit.event_id  # type: ignore[attr-defined]
    if status is None:
        code, reason, message, details = "OK", "", "", None
        recorded = _recorded(response) if isinstance(response, Message) else None
        metadata: dict[str, str] = {}
    else:
        code = _CODE_BY_NUMBER[status.code].name
        reason, message, recorded = _reason(status), status.message, None
        details = base64.b64encode(status.SerializeToString()).decode()
        metadata = {}
    try:
        audit.finish(
            code=code,
            reason=reason,
            message=message,
            response=recorded,
            status_details=details,
            error_metadata=metadata,
        )
    except AuditUnavailableError as error:
        if audit.intent is None:
            log.error("audit.call_refused", error=error.detail)
            return to_rpc_status(error, {"audit_event_id": audit.event_id})
        log.error("audit.outcome_pending", error=error.detail, note="retried until recorded")
    return status
