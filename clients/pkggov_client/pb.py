"""The generated pkggov.v1 messages, enums and service classes under one short name."""

from __future__ import annotations

from pkggov.v1.package_governance_pb2 import (
    AuditEntry,
    AuditEvent,
    DeletePackageVersionsRequest,
    DeletePackageVersionsResponse,
    DeniedVersion,
    GetAuditEventRequest,
    GetAuditEventResponse,
    ListAuditEventsRequest,
    ListAuditEventsResponse,
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
    AuditServiceServicer,
    AuditServiceStub,
    PackageGovernanceServiceServicer,
    PackageGovernanceServiceStub,
    add_AuditServiceServicer_to_server,
    add_PackageGovernanceServiceServicer_to_server,
)

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditServiceServicer",
    "AuditServiceStub",
    "DeletePackageVersionsRequest",
    "DeletePackageVersionsResponse",
    "DeniedVersion",
    "GetAuditEventRequest",
    "GetAuditEventResponse",
    "ListAuditEventsRequest",
    "ListAuditEventsResponse",
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
    "add_AuditServiceServicer_to_server",
    "add_PackageGovernanceServiceServicer_to_server",
]
