"""Proto <-> domain conversion for the pkggov.v1 messages, by table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageFormat,
    PlanOutcome,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.domain.validation import RawDeleteRequest, UnknownEnumValue

__all__ = ["FORMATS", "STATUSES", "from_delete_request", "to_delete_response"]

FORMATS: dict[int, PackageFormat] = {
    pb.PACKAGE_FORMAT_NPM: PackageFormat.NPM,
    pb.PACKAGE_FORMAT_PYPI: PackageFormat.PYPI,
    pb.PACKAGE_FORMAT_MAVEN: PackageFormat.MAVEN,
    pb.PACKAGE_FORMAT_NUGET: PackageFormat.NUGET,
    pb.PACKAGE_FORMAT_GENERIC: PackageFormat.GENERIC,
    pb.PACKAGE_FORMAT_RUBY: PackageFormat.RUBY,
    pb.PACKAGE_FORMAT_SWIFT: PackageFormat.SWIFT,
    pb.PACKAGE_FORMAT_CARGO: PackageFormat.CARGO,
}

STATUSES: dict[int, VersionStatus] = {
    pb.PACKAGE_VERSION_STATUS_PUBLISHED: VersionStatus.PUBLISHED,
    pb.PACKAGE_VERSION_STATUS_UNFINISHED: VersionStatus.UNFINISHED,
    pb.PACKAGE_VERSION_STATUS_UNLISTED: VersionStatus.UNLISTED,
    pb.PACKAGE_VERSION_STATUS_ARCHIVED: VersionStatus.ARCHIVED,
    pb.PACKAGE_VERSION_STATUS_DISPOSED: VersionStatus.DISPOSED,
    pb.PACKAGE_VERSION_STATUS_DELETED: VersionStatus.DELETED,
}

ERROR_CODES: dict[int, VersionErrorCode] = {
    pb.PACKAGE_VERSION_ERROR_CODE_ALREADY_EXISTS: VersionErrorCode.ALREADY_EXISTS,
    pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_REVISION: VersionErrorCode.MISMATCHED_REVISION,
    pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS: VersionErrorCode.MISMATCHED_STATUS,
    pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED: VersionErrorCode.NOT_ALLOWED,
    pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND: VersionErrorCode.NOT_FOUND,
    pb.PACKAGE_VERSION_ERROR_CODE_SKIPPED: VersionErrorCode.SKIPPED,
}

_E = TypeVar("_E")


def _enum(number: int, table: Mapping[int, _E]) -> _E | UnknownEnumValue | None:
    if number == 0:
        return None
    found = table.get(number)
    return found if found is not None else UnknownEnumValue(number)


def _invert(table: dict[int, _E]) -> dict[_E, int]:
    return {value: key for key, value in table.items()}


_STATUS_NUMBERS = _invert(STATUSES)

PLAN_OUTCOMES: dict[PlanOutcome, int] = {
    PlanOutcome.WOULD_DELETE: pb.VERSION_OUTCOME_WOULD_DELETE,
    PlanOutcome.DENIED: pb.VERSION_OUTCOME_DENIED,
    PlanOutcome.NOT_FOUND: pb.VERSION_OUTCOME_NOT_FOUND,
    PlanOutcome.STATUS_MISMATCH: pb.VERSION_OUTCOME_STATUS_MISMATCH,
}
_ERROR_CODE_NUMBERS = _invert(ERROR_CODES)


def from_delete_request(request: pb.DeletePackageVersionsRequest) -> RawDeleteRequest:
    """The request's fields as the core's unvalidated input."""
    return RawDeleteRequest(
        domain=request.domain,
        domain_owner=request.domain_owner,
        repository=request.repository,
        format=_enum(request.format, FORMATS),
        namespace=request.namespace,
        package=request.package,
        versions=list(request.versions),
        expected_status=_enum(request.expected_status, STATUSES),
        justification=request.justification,
        validate_only=request.validate_only,
        allow_partial=request.allow_partial,
    )


def to_delete_response(
    outcome: DeleteOutcome, *, with_plan: bool = False
) -> pb.DeletePackageVersionsResponse:
    """The merged outcome as the proto response, keyed by version like CodeArtifact; with the
    per-version decisions when `with_plan` (dry runs)."""
    response = pb.DeletePackageVersionsResponse()
    if with_plan:
        for version, planned in outcome.plan.items():
            decision = response.decisions[version]
            decision.outcome = PLAN_OUTCOMES[planned.outcome]  # type: ignore[assignment]
            decision.policy_ids.extend(planned.policy_ids)
            decision.message = planned.message
            decision.status = _STATUS_NUMBERS.get(planned.status, 0) if planned.status else 0  # type: ignore[assignment]
            decision.is_latest = planned.is_latest
    for version, ok in outcome.successful.items():
        entry = response.successful_versions[version]
        entry.revision = ok.revision
        entry.status = _STATUS_NUMBERS.get(ok.status, 0) if ok.status else 0  # type: ignore[assignment]
    for version, failure in outcome.failed.items():
        error = response.failed_versions[version]
        error.error_code = _ERROR_CODE_NUMBERS.get(failure.code, 0) if failure.code else 0  # type: ignore[assignment]
        error.error_message = failure.message
    return response
