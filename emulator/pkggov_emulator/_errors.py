"""Errors the emulator answers with; each class is named after the AWS error it becomes.

The hierarchy::

    ServiceError                      any error answered as an AWS JSON error
    ├── AccessDeniedError             AccessDeniedException (modeled)
    ├── ConflictError                 ConflictException (modeled)
    ├── InternalServerError           InternalServerException (modeled)
    ├── ResourceNotFoundError         ResourceNotFoundException (modeled)
    ├── ThrottlingError               ThrottlingException (modeled, Retry-After header)
    ├── ValidationError               ValidationException (modeled, with a reason)
    └── AuthError                     SigV4 failures, not in the service model
        ├── MissingAuthenticationTokenError
        ├── IncompleteSignatureError
        ├── UnrecognizedClientError
        └── InvalidSignatureError

Modeled errors take their HTTP status from the shape's ``error.httpStatusCode`` in botocore's
model; the ``status`` class attributes here are only the fallback for unmodeled ones.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "AccessDeniedError",
    "AuthError",
    "ConflictError",
    "IncompleteSignatureError",
    "InternalServerError",
    "InvalidSignatureError",
    "MissingAuthenticationTokenError",
    "ResourceNotFoundError",
    "ResourceType",
    "ServiceError",
    "ThrottlingError",
    "UnrecognizedClientError",
    "ValidationError",
    "ValidationReason",
]

ResourceType = Literal["domain", "repository", "package", "package-version", "asset"]
ValidationReason = Literal[
    "CANNOT_PARSE", "ENCRYPTION_KEY_ERROR", "FIELD_VALIDATION_FAILED", "UNKNOWN_OPERATION", "OTHER"
]


class ServiceError(Exception):
    """Raised anywhere in request handling to answer with an AWS-shaped JSON error."""

    code: ClassVar[str] = "InternalServerException"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def members(self) -> dict[str, Any]:
        """Return the error shape's members, ``message`` included, keyed by member name."""
        return {"message": self.message}


class AccessDeniedError(ServiceError):
    """Raised when the caller may not perform the operation (only injected by faults)."""

    code = "AccessDeniedException"
    status = 403


class _ResourceError(ServiceError):
    """A service error about one resource, whose shape carries resourceId and resourceType."""

    def __init__(self, message: str, *, resource_type: ResourceType, resource_id: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_id = resource_id

    def members(self) -> dict[str, Any]:
        """Return message, resourceId and resourceType."""
        return {
            "message": self.message,
            "resourceId": self.resource_id,
            "resourceType": self.resource_type,
        }


class ConflictError(_ResourceError):
    """Raised when a resource to create already exists or is in the wrong state."""

    code = "ConflictException"
    status = 409


class InternalServerError(ServiceError):
    """Raised for injected internal faults and for bugs caught at the request boundary."""

    code = "InternalServerException"
    status = 500


class ResourceNotFoundError(_ResourceError):
    """Raised when a domain, repository, package or package version does not exist."""

    code = "ResourceNotFoundException"
    status = 404


class ThrottlingError(ServiceError):
    """Raised when a throttle fault fires; answered with 429 and a ``Retry-After`` header."""

    code = "ThrottlingException"
    status = 429

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def members(self) -> dict[str, Any]:
        """Return message and retryAfterSeconds (serialized as the Retry-After header)."""
        return {"message": self.message, "retryAfterSeconds": self.retry_after_seconds}


class ValidationError(ServiceError):
    """Raised when a request breaks a model constraint or a CodeArtifact rule."""

    code = "ValidationException"
    status = 400

    def __init__(self, message: str, *, reason: ValidationReason) -> None:
        super().__init__(message)
        self.reason = reason

    def members(self) -> dict[str, Any]:
        """Return message and reason."""
        return {"message": self.message, "reason": self.reason}


class AuthError(ServiceError):
    """Raised when a request fails SigV4 authentication; these errors are not in the model."""

    code = "AccessDeniedException"
    status = 403


class MissingAuthenticationTokenError(AuthError):
    """Raised when a request carries no ``Authorization`` header."""

    code = "MissingAuthenticationTokenException"
    status = 403


class IncompleteSignatureError(AuthError):
    """Raised when the ``Authorization`` header or the signed headers are malformed."""

    code = "IncompleteSignatureException"
    status = 400


class UnrecognizedClientError(AuthError):
    """Raised when the access key id is not one the emulator knows."""

    code = "UnrecognizedClientException"
    status = 403


class InvalidSignatureError(AuthError):
    """Raised when the signature, its scope or its date does not check out."""

    code = "InvalidSignatureException"
    status = 403
