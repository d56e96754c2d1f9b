"""The generated pkggov.v1 messages, enums and service classes under one short name."""

from __future__ import annotations

from pkggov.v1.package_governance_pb2 import (
    DeletePackageVersionsRequest,
    DeletePackageVersionsResponse,
    DeniedVersion,
    PackageFormat,
    PackageVersionError,
    PackageVersionErrorCode,
    PackageVersionStatus,
    PolicyDenial,
    SuccessfulPackageVersionInfo,
    VersionDecision,
    VersionOutcome,
)
from pkggov.v1.package_governance_pb2_grpc import (
    PackageGovernanceServiceServicer,
    PackageGovernanceServiceStub,
    add_PackageGovernanceServiceServicer_to_server,
)

__all__ = [
    "DeletePackageVersionsRequest",
    "DeletePackageVersionsResponse",
    "DeniedVersion",
    "PackageFormat",
    "PackageGovernanceServiceServicer",
    "PackageGovernanceServiceStub",
    "PackageVersionError",
    "PackageVersionErrorCode",
    "PackageVersionStatus",
    "PolicyDenial",
    "SuccessfulPackageVersionInfo",
    "VersionDecision",
    "VersionOutcome",
    "add_PackageGovernanceServiceServicer_to_server",
]
