"""The unsigned HTTP control API under ``/_emulator/`` (faults, call log, reset, state peeks).

Routes (JSON in and out; errors are ``{"message": ...}`` with status 400 or 404):

* ``GET /_emulator/health``: ``{"status": "ok"}``.
* ``GET /_emulator/faults``: ``{"faults": [rule, ...]}``.
* ``POST /_emulator/faults``: body is one rule, or ``{"faults": [rule, ...]}``; a rule has the
  FaultRule field names (``operation``, ``kind``, ``count``, ``rate``, ``latency_seconds``,
  ``retry_after_seconds``, ``status_message``). Answers ``{"faults": [all active rules]}``.
* ``DELETE /_emulator/faults``: remove every rule.
* ``GET /_emulator/calls[?operation=Name]``: ``{"calls": [call, ...]}`` (see RecordedCall).
* ``DELETE /_emulator/calls``: forget the call log.
* ``POST /_emulator/reset``: back to the seed, no faults, empty call log.
* ``GET /_emulator/version-status?domain=&repository=&format=&namespace=&package=&version=``:
  ``{"status": "Published"}`` or ``{"status": null}`` when the version does not exist.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from ._faults import FaultRule
from ._service import Service
from ._state import PackageRef
from ._wire import Request, Response

__all__ = ["CONTROL_PREFIX", "handle_control"]

CONTROL_PREFIX = "/_emulator/"


class _ControlError(Exception):
    """Raised inside the control API to answer ``{"message": ...}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, document: Any) -> Response:
    return Response(
        status=status,
        headers=(
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ),
        body=json.dumps(document).encode("utf-8"),
    )


def _rule_from_json(value: Any) -> FaultRule:
    if not isinstance(value, Mapping):
        raise _ControlError(400, "a fault rule must be a JSON object")
    try:
        return FaultRule(**value)
    except (TypeError, ValueError) as error:
        raise _ControlError(400, f"invalid fault rule: {error}") from error


def _body(request: Request) -> Any:
    if not request.body.strip():
        return {}
    try:
        return json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _ControlError(400, f"the body is not JSON: {error}") from error


def _faults(service: Service) -> Response:
    return _json(200, {"faults": [rule.to_dict() for rule in service.faults.rules()]})


def handle_control(service: Service, request: Request) -> Response:
    """Answer one control API request (never raises)."""
    route = request.decoded_path().removeprefix(CONTROL_PREFIX).rstrip("/")
    method = request.method.upper()
    query = dict(request.query_pairs())
    try:
        if (method, route) == ("GET", "health"):
            return _json(200, {"status": "ok"})
        if (method, route) == ("GET", "faults"):
            return _faults(service)
        if (method, route) == ("POST", "faults"):
            body = _body(request)
            raw_rules = body["faults"] if isinstance(body, Mapping) and "faults" in body else [body]
            if not isinstance(raw_rules, list):
                raise _ControlError(400, "'faults' must be a list of rules")
            rules = [_rule_from_json(raw) for raw in raw_rules]
            for rule in rules:
                try:
                    service.add_fault(rule)
                except ValueError as error:
                    raise _ControlError(400, str(error)) from error
            return _faults(service)
        if (method, route) == ("DELETE", "faults"):
            service.faults.clear()
            return _faults(service)
        if (method, route) == ("GET", "calls"):
            calls = service.calls.calls(query.get("operation"))
            return _json(200, {"calls": [call.to_dict() for call in calls]})
        if (method, route) == ("DELETE", "calls"):
            service.calls.clear()
            return _json(200, {"calls": []})
        if (method, route) == ("POST", "reset"):
            service.reset()
            return _json(200, {"status": "reset"})
        if (method, route) == ("GET", "version-status"):
            missing = [
                key
                for key in ("domain", "repository", "format", "package", "version")
                if not query.get(key)
            ]
            if missing:
                raise _ControlError(400, f"missing query parameters: {', '.join(missing)}")
            ref = PackageRef(
                domain=query["domain"],
                repository=query["repository"],
                format=query["format"],
                namespace=query.get("namespace") or None,
                package=query["package"],
            )
            return _json(200, {"status": service.store.version_status(ref, query["version"])})
        raise _ControlError(404, f"no control route {method} {CONTROL_PREFIX}{route}")
    except _ControlError as error:
        return _json(error.status, {"message": error.message})
