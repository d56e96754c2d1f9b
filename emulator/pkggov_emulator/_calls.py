"""The call log: every operation call the emulator received, with its outcome."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallLog", "RecordedCall"]


@dataclass(frozen=True)
class RecordedCall:
    """One received operation call.

    ``params`` are the parsed input members (by model member name); ``applied`` is True when the
    operation ran against the state (even if some versions failed inside a 200 answer);
    ``status`` is the HTTP status answered, None when the connection was dropped; ``error_code``
    names the error answered; ``fault`` names the injected fault kind, if any.
    """

    operation: str
    params: Mapping[str, Any]
    received_at: dt.datetime
    applied: bool
    status: int | None
    error_code: str | None
    fault: str | None
    request_id: str
    access_key_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the call as a JSON-ready mapping (camelCase keys, bytes as base64)."""
        return {
            "operation": self.operation,
            "params": _jsonable(self.params),
            "receivedAt": self.received_at.isoformat(),
            "applied": self.applied,
            "status": self.status,
            "errorCode": self.error_code,
            "fault": self.fault,
            "requestId": self.request_id,
            "accessKeyId": self.access_key_id,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


@dataclass
class CallLog:
    """A thread-safe, append-only list of recorded calls."""

    _calls: list[RecordedCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: RecordedCall) -> None:
        """Append one call."""
        with self._lock:
            self._calls.append(call)

    def calls(self, operation: str | None = None) -> list[RecordedCall]:
        """Return recorded calls in the order they were answered (only ``operation``'s if given)."""
        with self._lock:
            return [c for c in self._calls if operation is None or c.operation == operation]

    def clear(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._calls.clear()
