"""Server interceptors, outermost first: request logging context, then error mapping."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_status import rpc_status

from pkggov_gateway.api.status import INTERNAL_RULE, rule_for, to_rpc_status

__all__ = ["REQUEST_ID_KEY", "ErrorMappingInterceptor", "RequestLoggingInterceptor"]

REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

log = structlog.get_logger("pkggov.rpc")

_Unary = Callable[[Any, grpc.ServicerContext], Any]


if TYPE_CHECKING:  # grpc-stubs make the base generic; at runtime it is not subscriptable
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor


class _UnaryInterceptor(_ServerInterceptor):
    """Wraps the unary-unary behaviour of every method; streaming methods pass through."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: _Unary = handler.unary_unary
        method: str = handler_call_details.method

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            return self.around(inner, request, context, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def around(
        self, inner: _Unary, request: Any, context: grpc.ServicerContext, method: str
    ) -> Any:
        """Run `inner` for one call."""
        raise NotImplementedError


class RequestLoggingInterceptor(_UnaryInterceptor):
    """Binds the request id, method and peer to the log context; one log line per RPC.

    The request id is the caller's ``x-request-id`` metadata when it is well formed, else a
    new UUID; it is sent back as initial metadata so callers can quote it.
    """

    def around(
        self, inner: _Unary, request: Any, context: grpc.ServicerContext, method: str
    ) -> Any:
        """Log one line with method, status code, duration and request id."""
        sent = dict(context.invocation_metadata()).get(REQUEST_ID_KEY)
        request_id = sent if isinstance(sent, str) and _REQUEST_ID.fullmatch(sent) else None
        request_id = request_id or str(uuid.uuid4())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=method, peer=context.peer()
        )
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return inner(request, context)
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
            raise
        finally:
            log.info(
                "rpc",
                code=code.name,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()


class ErrorMappingInterceptor(_UnaryInterceptor):
    """Turns domain errors into rich gRPC statuses through the status table."""

    def around(
        self, inner: _Unary, request: Any, context: grpc.ServicerContext, method: str
    ) -> Any:
        """Call `inner`; abort with the mapped status when it raises."""
        try:
            return inner(request, context)
        except Exception as error:
            if context.code() not in (None, grpc.StatusCode.OK):  # type: ignore[attr-defined]
                raise  # the handler already aborted with its own status
            rule = rule_for(error)
            if rule is INTERNAL_RULE:
                log.exception("rpc.unexpected_error")
            else:
                log.info("rpc.error", reason=rule.reason, error=str(error))
            context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
            raise  # unreachable: abort_with_status raises
