"""Client of the pkggov gateway: a typed wrapper, its errors, the generated types and a CLI."""

from __future__ import annotations

from pkggov_client import pb
from pkggov_client._client import DEFAULT_TIMEOUT, PkggovClient
from pkggov_client._errors import FieldViolation, PkggovError, ResourceDetail, error_from_rpc_error
from pkggov_client._model import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    SuccessfulVersion,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DeleteResult",
    "FailedVersion",
    "FieldViolation",
    "PackageFormat",
    "PackageVersionStatus",
    "PkggovClient",
    "PkggovError",
    "ResourceDetail",
    "SuccessfulVersion",
    "error_from_rpc_error",
    "pb",
]
