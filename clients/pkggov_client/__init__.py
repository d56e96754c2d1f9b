"""Client of the pkggov gateway: a typed wrapper, its errors, the generated types and a CLI."""

from __future__ import annotations

from pkggov_client import pb
from pkggov_client._approval_model import (
    DeletionRequest,
    DeletionRequestExecution,
    DeletionRequestsPage,
    DeletionRequestState,
    DeletionVote,
    PlannedVersion,
)
from pkggov_client._cleanup_model import (
    CleanupAction,
    CleanupClause,
    CleanupJob,
    CleanupJobPage,
    CleanupJobState,
    CleanupOrder,
    CleanupPlan,
    CleanupPlanPage,
    CleanupResult,
    CleanupRule,
    PackageCleanupPlan,
    PackageCleanupResult,
    PrereleaseScope,
    VersionCleanupPlan,
    VersionCleanupResult,
)
from pkggov_client._client import DEFAULT_TIMEOUT, PkggovClient
from pkggov_client._errors import (
    DeniedVersion,
    FieldViolation,
    PkggovError,
    QuotaViolation,
    ResourceDetail,
    error_from_rpc_error,
)
from pkggov_client._model import (
    DeleteResult,
    FailedVersion,
    PackageFormat,
    PackageVersionStatus,
    PendingPurge,
    PendingPurgesPage,
    RestoreResult,
    SuccessfulVersion,
    VersionDecision,
)
from pkggov_client._token import TokenError

__all__ = [
    "DEFAULT_TIMEOUT",
    "CleanupAction",
    "CleanupClause",
    "CleanupJob",
    "CleanupJobPage",
    "CleanupJobState",
    "CleanupOrder",
    "CleanupPlan",
    "CleanupPlanPage",
    "CleanupResult",
    "CleanupRule",
    "DeleteResult",
    "DeletionRequest",
    "DeletionRequestExecution",
    "DeletionRequestState",
    "DeletionRequestsPage",
    "DeletionVote",
    "DeniedVersion",
    "FailedVersion",
    "FieldViolation",
    "PackageCleanupPlan",
    "PackageCleanupResult",
    "PackageFormat",
    "PackageVersionStatus",
    "PendingPurge",
    "PendingPurgesPage",
    "PkggovClient",
    "PkggovError",
    "PlannedVersion",
    "PrereleaseScope",
    "QuotaViolation",
    "ResourceDetail",
    "RestoreResult",
    "SuccessfulVersion",
    "TokenError",
    "VersionCleanupPlan",
    "VersionCleanupResult",
    "VersionDecision",
    "error_from_rpc_error",
    "pb",
]
