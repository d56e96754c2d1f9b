"""The RPC edge interceptor: request id, caller identity, decoding, error mapping, one log line.

It must stay the innermost interceptor because it builds each method's handler once and reuses
it. The authenticated principal of the current call is in `CURRENT_PRINCIPAL`.
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from pkggov_gateway.api.status import INTERNAL_RULE, rule_for, to_rpc_status
from pkggov_gateway.domain.errors import MalformedRequestError
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.ports import Authenticator

__all__ = ["CURRENT_PRINCIPAL", "PROTECTED_PREFIX", "REQUEST_ID_KEY", "RpcEdgeInterceptor"]

CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "pkggov_principal", default=None
)
"""The authenticated caller of the RPC being served on this thread."""

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
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
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


def _edge(
    behaviour: _Unary,
    deserialize: _Deserializer,
    method: str,
    authenticator: Authenticator | None,
) -> _Unary:
    def call(raw: bytes, context: grpc.ServicerContext) -> Any:
        metadata = _metadata(context.invocation_metadata())
        sent = metadata.get(REQUEST_ID_KEY)
        request_id = sent if isinstance(sent, str) and _REQUEST_ID.fullmatch(sent) else None
        request_id = request_id or str(uuid.uuid4())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=method, peer=context.peer()
        )
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        CURRENT_PRINCIPAL.set(None)
        try:
            if authenticator is not None:
                # grpc-stubs type auth_context() as Mapping[str, bytes]; grpcio returns lists.
                auth_context = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
                principal = authenticator.authenticate(metadata, context.peer(), auth_context)
                CURRENT_PRINCIPAL.set(principal)
                structlog.contextvars.bind_contextvars(
                    principal=principal.id, auth=principal.method.value
                )
            try:
                request = deserialize(raw) if deserialize is not None else raw
            except DecodeError as exc:
                raise MalformedRequestError(
                    f"the request is not a valid {method.rpartition('/')[2]} request message"
                ) from exc
            return behaviour(request, context)
        except Exception as error:
            aborted = context.code()  # type: ignore[attr-defined]
            if aborted not in (None, grpc.StatusCode.OK):
                code = aborted
                raise  # the behaviour aborted with its own status
            rule = rule_for(error)
            code = rule.code
            if rule is INTERNAL_RULE:
                log.exception("rpc.unexpected_error")
            else:
                log.info("rpc.error", reason=rule.reason, error=str(error))
            context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
            raise  # unreachable: abort_with_status raises
        finally:
            fields: dict[str, Any] = {"code": code.name}
            if not context.is_active():  # the caller went away before the answer
                gone = (
                    grpc.StatusCode.DEADLINE_EXCEEDED
                    if (context.time_remaining() or 0) <= 0
                    else grpc.StatusCode.CANCELLED
                )
                fields = {"code": gone.name, "handler_code": code.name}
            log.info("rpc", duration_ms=round((time.perf_counter() - started) * 1000, 3), **fields)
            structlog.contextvars.clear_contextvars()
            CURRENT_PRINCIPAL.set(None)

    return call
