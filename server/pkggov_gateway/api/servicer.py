"""The PackageGovernanceService servicer: proto in, use case, proto out; no error handling."""

from __future__ import annotations

import grpc
import structlog

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_gateway.api.convert import from_delete_request, to_delete_response
from pkggov_gateway.api.interceptors import CURRENT_PRINCIPAL
from pkggov_gateway.domain.deadline import Deadline, DrainSignal
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.service.delete_versions import DeletePackageVersions

__all__ = ["PackageGovernanceServicer"]

_NO_DEADLINE = 86_400.0


class PackageGovernanceServicer(pb_grpc.PackageGovernanceServiceServicer):
    """Serves pkggov.v1.PackageGovernanceService; errors are mapped by an interceptor."""

    def __init__(
        self,
        delete_versions: DeletePackageVersions,
        *,
        default_deadline: float,
        max_deadline: float,
        drain: DrainSignal,
    ) -> None:
        self._delete_versions = delete_versions
        self._drain = drain
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline

    def DeletePackageVersions(  # noqa: N802 - the generated method name
        self, request: pb.DeletePackageVersionsRequest, context: grpc.ServicerContext
    ) -> pb.DeletePackageVersionsResponse:
        """Decide and delete the requested versions and report each one's outcome."""
        principal = CURRENT_PRINCIPAL.get()
        if principal is None:  # the edge interceptor authenticates every pkggov method
            raise UnauthenticatedError("the call carries no identity")
        raw = from_delete_request(request)
        outcome = self._delete_versions.execute(raw, principal, self._deadline(context))
        structlog.contextvars.bind_contextvars(aws_request_ids=list(outcome.aws_request_ids))
        return to_delete_response(outcome, with_plan=raw.validate_only)

    def _deadline(self, context: grpc.ServicerContext) -> Deadline:
        """The caller's deadline capped at the maximum, or the default when the caller set none.

        grpc reports "no deadline" as a remaining time of many years; anything beyond a day
        is taken as no deadline.
        """
        remaining = context.time_remaining()
        if remaining is None or remaining > _NO_DEADLINE:
            return Deadline.after(self._default_deadline, self._drain)
        return Deadline.after(min(remaining, self._max_deadline), self._drain)
