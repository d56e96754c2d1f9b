"""botocore errors -> domain UpstreamError, by two tables: AWS error codes and transport exceptions.

`translate` is the only way a botocore exception becomes a domain error. A ClientError is
looked up by its AWS error code in `CLIENT_ERROR_TABLE`; any other exception by its most
specific class in `TRANSPORT_ERROR_TABLE` (walking its MRO, as `api.status.rule_for` does), so
the order of the rows does not matter. What neither table knows becomes UpstreamUnknownError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore import exceptions as bce

from pkggov_gateway.domain.errors import (
    GatewayCredentialsError,
    UpstreamAccessDeniedError,
    UpstreamConflictError,
    UpstreamError,
    UpstreamInternalError,
    UpstreamNotFoundError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamUnknownError,
    UpstreamValidationError,
)

__all__ = ["CLIENT_ERROR_TABLE", "TRANSPORT_ERROR_TABLE", "translate"]

_ErrorFields = Mapping[str, Any]
_ClientErrorFactory = Callable[[str, _ErrorFields, dict[str, str | None]], UpstreamError]


def _retry_after(fields: _ErrorFields, headers: Mapping[str, str]) -> float | None:
    value = fields.get("retryAfterSeconds") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


CLIENT_ERROR_TABLE: dict[str, _ClientErrorFactory] = {
    "ValidationException": lambda msg, f, kw: UpstreamValidationError(
        msg, reason=f.get("reason"), **kw
    ),
    "ResourceNotFoundException": lambda msg, f, kw: UpstreamNotFoundError(
        msg, resource_type=f.get("resourceType"), resource_id=f.get("resourceId"), **kw
    ),
    "AccessDeniedException": lambda msg, f, kw: UpstreamAccessDeniedError(msg, **kw),
    "ConflictException": lambda msg, f, kw: UpstreamConflictError(
        msg, resource_type=f.get("resourceType"), resource_id=f.get("resourceId"), **kw
    ),
    "ThrottlingException": lambda msg, f, kw: UpstreamThrottledError(
        msg, retry_after_seconds=_retry_after(f, f.get("_headers", {})), **kw
    ),
    "InternalServerException": lambda msg, f, kw: UpstreamInternalError(msg, **kw),
}
"""AWS error code -> domain error. A code not listed becomes UpstreamUnknownError."""

_CREDENTIAL_ERROR_CODES = (
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "ExpiredTokenException",
    "ExpiredToken",
)
"""AWS's answers to a request signed with bad, unknown or expired credentials of the gateway."""

for _code in _CREDENTIAL_ERROR_CODES:
    CLIENT_ERROR_TABLE[_code] = lambda msg, f, kw: GatewayCredentialsError(msg, **kw)

_TRANSIENT_SERVER_CODES = (
    "500",
    "502",
    "503",
    "504",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
)
"""Server-side failures without a modeled shape (a load balancer's 5xx page has only the HTTP
status as its code): handled like InternalServerException, so retried within the deadline."""

for _code in _TRANSIENT_SERVER_CODES:
    CLIENT_ERROR_TABLE[_code] = lambda msg, f, kw: UpstreamInternalError(msg, **kw)

_TransportFactory = Callable[[Exception], UpstreamError]

TRANSPORT_ERROR_TABLE: dict[type[Exception], _TransportFactory] = {
    # Messages go to the caller, so they never quote the exception (it names the endpoint);
    # the adapter logs the exception itself. The order of the rows does not matter.
    bce.ReadTimeoutError: lambda e: UpstreamTimeoutError(
        "CodeArtifact did not answer in time; the call's outcome is unknown"
    ),
    bce.ConnectTimeoutError: lambda e: UpstreamUnavailableError(
        "could not connect to CodeArtifact in time"
    ),
    bce.EndpointConnectionError: lambda e: UpstreamUnavailableError(
        "CodeArtifact is unreachable (connection failed)"
    ),
    bce.ConnectionClosedError: lambda e: UpstreamUnavailableError(
        "the connection to CodeArtifact closed before it answered; the call's outcome is unknown",
        outcome_unknown=True,
    ),
    # urllib3 raises SSLError while reading a response too, so the request may have
    # been applied: not retried.
    bce.SSLError: lambda e: UpstreamUnavailableError(
        "TLS with CodeArtifact failed; the call's outcome is unknown",
        outcome_unknown=True,
    ),
    bce.ConnectionError: lambda e: UpstreamUnavailableError(
        "CodeArtifact is unreachable (connection failed)"
    ),
    bce.HTTPClientError: lambda e: UpstreamUnavailableError(
        "the HTTP exchange with CodeArtifact failed; the call's outcome is unknown",
        outcome_unknown=True,
    ),
    bce.NoCredentialsError: lambda e: GatewayCredentialsError("the gateway has no AWS credentials"),
    bce.PartialCredentialsError: lambda e: GatewayCredentialsError(
        "the gateway's AWS credentials are incomplete"
    ),
    bce.CredentialRetrievalError: lambda e: GatewayCredentialsError(
        "the gateway could not obtain AWS credentials"
    ),
    bce.ParamValidationError: lambda e: UpstreamValidationError(
        f"botocore rejected the request: {e}", reason="OTHER"
    ),
    bce.BotoCoreError: lambda e: UpstreamUnknownError(
        f"unexpected botocore error {type(e).__name__}", aws_error_code=type(e).__name__
    ),
}
"""botocore exception class -> domain error, for failures without an AWS error code; a subclass
not listed takes the row of its nearest listed base (see `_transport_factory`)."""


def translate(exc: Exception) -> UpstreamError:
    """Translate any botocore exception into the domain's UpstreamError."""
    if isinstance(exc, bce.ClientError):
        response: Mapping[str, Any] = exc.response
        error: Mapping[str, Any] = response.get("Error", {})
        meta: Mapping[str, Any] = response.get("ResponseMetadata", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message") or error.get("message") or code)
        headers = {k.lower(): v for k, v in meta.get("HTTPHeaders", {}).items()}
        fields = {**response, **error, "_headers": headers}
        kw: dict[str, str | None] = {
            "aws_request_id": meta.get("RequestId"),
            "aws_error_code": code,
        }
        factory = CLIENT_ERROR_TABLE.get(code)
        if factory is None:
            return UpstreamUnknownError(f"CodeArtifact returned {code}: {message}", **kw)
        return factory(message, fields, kw)
    make = _transport_factory(type(exc))
    if make is not None:
        return make(exc)
    return UpstreamUnknownError(
        f"unexpected error {type(exc).__name__}", aws_error_code=type(exc).__name__
    )


def _transport_factory(exc_type: type[BaseException]) -> _TransportFactory | None:
    """The row of TRANSPORT_ERROR_TABLE for `exc_type`: its own class's, else its nearest
    listed base's (by MRO), else None."""
    for cls in exc_type.__mro__:
        make = TRANSPORT_ERROR_TABLE.get(cls)
        if make is not None:
            return make
    return None
