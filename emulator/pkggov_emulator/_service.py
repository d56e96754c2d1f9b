"""The emulated service: authenticate, parse, inject faults, validate, apply, answer, record."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._auth import SigV4Verifier
from ._calls import CallLog, RecordedCall
from ._constants import SERVICE_NAME
from ._errors import (
    AccessDeniedError,
    InternalServerError,
    ServiceError,
    ThrottlingError,
    ValidationError,
)
from ._faults import FaultPlan, FaultRule
from ._model import (
    error_shape,
    error_status,
    find_operation,
    operation_model,
    parse_input,
    serialize_output,
    service_model,
    validate_input,
)
from ._operations import OPERATIONS
from ._seed import Seed, build_store
from ._state import PackageRef, Store, new_revision
from ._wire import Request, Response

__all__ = ["Service"]

logger = logging.getLogger("pkggov_emulator")

_JSON = ("Content-Type", "application/json")
_DEFAULT_FAULT_MESSAGES = {
    "throttle": "Rate exceeded",
    "internal": "An internal error has occurred. Please try again later.",
}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Outcome:
    """What became known about one call while processing it (for the call log)."""

    params: dict[str, Any] = field(default_factory=dict)
    access_key_id: str | None = None
    fault: str | None = None
    applied: bool = False


class Service:
    """One emulated CodeArtifact account: its state, faults, call log and credentials.

    ``handle`` is safe to call from many threads at once; state changes happen under the store's
    lock, latency faults sleep outside it.
    """

    def __init__(
        self,
        *,
        seed: Seed | None,
        credentials: Mapping[str, str],
        account_id: str,
        region: str | None,
        arn_region: str,
        fault_seed: int = 0,
        log_requests: bool = False,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.account_id = account_id
        self._seed = seed
        self._arn_region = arn_region
        self._clock = clock
        self._log_requests = log_requests
        self._verifier = SigV4Verifier(
            credentials=dict(credentials), service=SERVICE_NAME, region=region
        )
        self._closing = threading.Event()
        self.faults = FaultPlan(seed=fault_seed)
        self.calls = CallLog()
        self.store = self._new_store()

    def _new_store(self) -> Store:
        return build_store(
            self._seed,
            account_id=self.account_id,
            region=self._arn_region,
            clock=self._clock,
            revisions=new_revision,
        )

    # ---- administration --------------------------------------------------------------------------

    def reset(self) -> None:
        """Return to the seed: fresh state, no faults, empty call log."""
        self.store = self._new_store()
        self.faults.clear()
        self.calls.clear()

    def add_fault(self, rule: FaultRule) -> None:
        """Add a fault rule; raise ValueError for an operation the model does not have."""
        if rule.operation != "*" and rule.operation not in service_model().operation_names:
            raise ValueError(f"unknown CodeArtifact operation {rule.operation!r}")
        self.faults.add(rule)

    def close(self) -> None:
        """Wake calls sleeping in latency faults so that shutdown does not wait for them."""
        self._closing.set()

    def reopen(self) -> None:
        """Undo ``close`` before serving again."""
        self._closing.clear()

    # ---- request handling ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one CodeArtifact request (never raises) and record it in the call log."""
        request_id = str(uuid.uuid4())
        received_at = self._clock()
        name = find_operation(request.method, request.decoded_path())
        outcome = _Outcome()
        try:
            response = self._process(name, request, request_id, received_at, outcome)
        except ServiceError as error:
            response = self._error_response(error, request_id)
        except Exception:  # A bug must still be answered the way AWS answers.
            logger.exception("unexpected error handling %s", name)
            response = self._error_response(
                InternalServerError("The emulator failed unexpectedly; see its log."), request_id
            )
        if name is not None:
            self.calls.record(
                RecordedCall(
                    operation=name,
                    params=outcome.params,
                    received_at=received_at,
                    applied=outcome.applied,
                    status=None if response.drop else response.status,
                    error_code=_error_code(response),
                    fault=outcome.fault,
                    request_id=request_id,
                    access_key_id=outcome.access_key_id,
                )
            )
        if self._log_requests:
            logger.info(
                "%s %s -> %s request_id=%s fault=%s",
                name or "-",
                request.decoded_path(),
                "dropped" if response.drop else response.status,
                request_id,
                outcome.fault,
            )
        return response

    def _process(
        self,
        name: str | None,
        request: Request,
        request_id: str,
        received_at: dt.datetime,
        outcome: _Outcome,
    ) -> Response:
        """Parse, authenticate, inject faults, validate and apply; fill ``outcome`` on the way.

        Parsing comes first (but its error is raised after authentication) so that even
        rejected calls are recorded with their parameters.
        """
        parse_error: ValidationError | None = None
        if name is not None:
            try:
                outcome.params = parse_input(operation_model(name), request)
            except ValidationError as error:
                parse_error = error
        outcome.access_key_id = self._verifier.verify(
            request, now=received_at, check_payload_hash=name != "PublishPackageVersion"
        )
        if name is None:
            raise ValidationError(
                f"Unknown operation: {request.method} {request.decoded_path()}",
                reason="UNKNOWN_OPERATION",
            )
        if parse_error is not None:
            raise parse_error
        decision = self.faults.decide(name)
        outcome.fault = decision.kind
        if decision.latency_seconds > 0:
            self._closing.wait(decision.latency_seconds)
        if decision.kind == "drop":
            return Response(status=0, drop=True)
        if decision.rule is not None and decision.kind not in ("latency", "drop_after_apply"):
            raise self._fault_error(decision.rule, name, outcome.params, outcome.access_key_id)
        output = self._apply(name, outcome.params)
        outcome.applied = True
        if decision.kind == "drop_after_apply":
            return Response(status=0, drop=True)
        headers, body = serialize_output(operation_model(name).output_shape, output)
        return Response(
            status=200,
            headers=(*headers, _JSON, ("x-amzn-RequestId", request_id)),
            body=body,
        )

    def _apply(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        validate_input(operation_model(name), params)
        handler = OPERATIONS.get(name)
        if handler is None:
            raise ValidationError(
                f"{name} is not supported by the pkggov CodeArtifact emulator.",
                reason="UNKNOWN_OPERATION",
            )
        store = self.store
        with store.lock:
            return handler(store, params)

    def _fault_error(
        self, rule: FaultRule, name: str, params: Mapping[str, Any], access_key_id: str | None
    ) -> ServiceError:
        message = rule.status_message
        if rule.kind == "throttle":
            return ThrottlingError(
                message or _DEFAULT_FAULT_MESSAGES["throttle"],
                retry_after_seconds=rule.retry_after_seconds,
            )
        if rule.kind == "access_denied":
            resource = self._resource_arn(params)
            return AccessDeniedError(
                message
                or f"User: arn:aws:iam::{self.account_id}:user/{access_key_id} is not authorized "
                f"to perform: codeartifact:{name} on resource: {resource} because no "
                f"identity-based policy allows the codeartifact:{name} action"
            )
        return InternalServerError(message or _DEFAULT_FAULT_MESSAGES["internal"])

    def _resource_arn(self, params: Mapping[str, Any]) -> str:
        store = self.store
        domain = params.get("domain")
        repository = params.get("repository")
        if domain and repository and params.get("format") and params.get("package"):
            return store.package_arn(
                PackageRef(
                    domain=domain,
                    repository=repository,
                    format=params["format"],
                    namespace=params.get("namespace"),
                    package=params["package"],
                )
            )
        if domain and repository:
            return store.repository_arn(domain, repository)
        if domain:
            return store.domain_arn(domain)
        return "*"

    @staticmethod
    def _error_response(error: ServiceError, request_id: str) -> Response:
        shape = error_shape(error.code)
        if shape is not None:
            status = error_status(error.code) or error.status
            headers, body = serialize_output(shape, error.members())
        else:
            status = error.status
            headers, body = [], json.dumps(error.members()).encode("utf-8")
        return Response(
            status=status,
            headers=(
                *headers,
                _JSON,
                ("x-amzn-ErrorType", error.code),
                ("x-amzn-RequestId", request_id),
            ),
            body=body,
        )


def _error_code(response: Response) -> str | None:
    for name, value in response.headers:
        if name == "x-amzn-ErrorType":
            return value
    return None
