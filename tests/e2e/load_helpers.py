"""What the load tests (the soak, and SIGTERM under load) share: planned calls and their
results, the spawned gateway's environment, stderr and metrics, reading the audit record back,
and the checks of the documented statuses and of write-ahead intents."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any

import grpc
from grpc_status import rpc_status

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, RecordedCall
from pkggov_gateway.domain.audit import format_time
from tests.conftest import REPO
from tests.e2e.audit_helpers import coordinates, reopened_store, row_body
from tests.e2e.harness import (
    DELETE_METHOD,
    PRINCIPAL_KEY,
    GatewayProcess,
    external_upstream_env,
    rich_error,
    scrape,
)

AUDIT_EVENT_KEY = "x-pkggov-audit-event-id"
REQUEST_ID_KEY = "x-request-id"

DOMAIN, REPOSITORY = "demo", "dev-shared"
LATEST = "9.0.0"
"""Each package's latest version (defaultDisplayVersion): the shipped policy never deletes it."""

LONG_DEADLINE = 30.0
"""Seconds: the deadline of a call that is not meant to run out of time."""


# --- the documented statuses ------------------------------------------------------------------

_PAIR = re.compile(r"`([A-Z_]+)`\s*[|/(]\s*`([A-Z_]+)`")


def documented_statuses() -> frozenset[tuple[str, str]]:
    """Every (gRPC code, ErrorInfo reason) the README documents: the rows of its "Status
    mapping" table and the pairs its prose names (``UNAVAILABLE`` / ``AUDIT_UNAVAILABLE``)."""
    codes = {code.name for code in grpc.StatusCode}
    text = (REPO / "README.md").read_text()
    pairs = {(c, r) for c, r in _PAIR.findall(text) if c in codes}
    assert ("UNAVAILABLE", "UPSTREAM_INTERNAL_ERROR") in pairs, "the README table moved"
    return frozenset(pairs)


CLEAN_CODES_EXCLUDED = frozenset({"UNKNOWN", "INTERNAL"})
"""Documented, but each means a bug or a misconfiguration, never an answer under load."""

OUTCOME_UNKNOWN = frozenset(
    {("UNAVAILABLE", "UPSTREAM_UNAVAILABLE"), ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT")}
)
"""Failures that may hide a deletion (their message says the outcome is unknown)."""


# --- making the calls -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedCall:
    """One call to make (the soak's, or a shutdown test's)."""

    rpc_id: str
    """Sent as x-request-id: the audit event records it, so even a call the caller gave up
    on (grpc's own DEADLINE_EXCEEDED, no event id) is found in the record."""
    shape: str
    principal: str | None
    request: pb.DeletePackageVersionsRequest
    timeout: float

    @property
    def short(self) -> bool:
        """Whether the call has a short deadline."""
        return self.timeout < LONG_DEADLINE


@dataclass(frozen=True)
class CallResult:
    """What the caller got."""

    call: PlannedCall
    code: str
    reason: str | None
    """The ErrorInfo reason; "" for OK; None when the status has no rich details (grpc's own
    status, e.g. the caller's deadline passed before the gateway answered)."""
    event_id: str | None
    """The audit event id the answer named (response or ErrorInfo metadata)."""
    trailer_event_id: str | None
    message: str
    response: pb.DeletePackageVersionsResponse | None


def _trailer(call: Any) -> str | None:
    for key, value in call.trailing_metadata() or ():
        if key == AUDIT_EVENT_KEY:
            return str(value)
    return None


def invoke(stub: pb_grpc.PackageGovernanceServiceStub, call: PlannedCall) -> CallResult:
    """Make one call and decode whatever it ended with."""
    metadata: tuple[tuple[str, str | bytes], ...] = ((REQUEST_ID_KEY, call.rpc_id),)
    if call.principal is not None:
        metadata += ((PRINCIPAL_KEY, call.principal),)
    try:
        response, rpc = stub.DeletePackageVersions.with_call(
            call.request, timeout=call.timeout, metadata=metadata
        )
    except grpc.RpcError as error:
        failed: Any = error
        trailer = _trailer(failed)
        if rpc_status.from_call(failed) is None:
            return CallResult(call, failed.code().name, None, None, trailer, failed.details(), None)
        rich = rich_error(error)
        event_id = rich.metadata.get("audit_event_id")
        return CallResult(call, rich.code.name, rich.reason, event_id, trailer, rich.message, None)
    return CallResult(call, "OK", "", response.audit_event_id, _trailer(rpc), "", response)


def upstream_env(endpoint_url: str, **extra: str) -> dict[str, str]:
    """spawn_gateway settings: the session emulator as CodeArtifact, the shipped policies, no
    pacing to speak of (this is not a test of the rate limit), warnings only."""
    return external_upstream_env(
        endpoint_url,
        PKGGOV_UPSTREAM_WRITE_CALLS_PER_SECOND="100000",
        PKGGOV_UPSTREAM_READ_CALLS_PER_SECOND="100000",
        PKGGOV_AUDIT_REPLICA="soak",
        **extra,
    )


class StderrDrain(threading.Thread):
    """Reads the gateway's stderr while it runs (a pipe nobody reads would fill and block the
    gateway's logging) and keeps the error-level lines and a count of the events."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(name="soak-stderr", daemon=True)
        self._stream = stream
        self.errors: list[str] = []
        self.events: Counter[str] = Counter()

    def run(self) -> None:
        for line in self._stream:
            try:
                entry = json.loads(line)
            except ValueError:
                self.errors.append(line.rstrip())
                continue
            self.events[str(entry.get("event"))] += 1
            if entry.get("level") in {"error", "critical"}:
                self.errors.append(line.rstrip())


def metrics_url(process: GatewayProcess) -> str:
    """The Prometheus endpoint the banner announces."""
    for line in process.banner:
        found = re.search(r"Prometheus metrics at (\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"no metrics address in the banner: {process.banner}")


def in_flight(url: str) -> float:
    """DeletePackageVersions calls the gateway is handling now."""
    return scrape(url).get(("pkggov_rpcs_in_flight", frozenset({("method", DELETE_METHOD)})), 0.0)


# --- reading the record -----------------------------------------------------------------------


@dataclass
class Event:
    """One audit event as stored: its entries' bodies by kind."""

    event_id: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    intent_committed_after: str = ""
    """A lower bound of when the intent was committed: the latest body time of every entry
    up to it in the chain (entries commit in chain order; a body is made before its commit)."""

    @property
    def intent(self) -> dict[str, Any] | None:
        """The intent body, if the call forwarded anything."""
        return self.entries.get("intent")

    @property
    def outcome(self) -> dict[str, Any]:
        """The outcome body (it must exist)."""
        assert "outcome" in self.entries, f"event {self.event_id} has no outcome: {self.entries}"
        return self.entries["outcome"]

    @property
    def rpc_id(self) -> str:
        """The x-request-id of the call."""
        first = self.entries.get("intent") or self.entries["outcome"]
        return str(first["rpc"]["request_id"])

    @property
    def status(self) -> tuple[str, str]:
        """The outcome's (code, reason)."""
        status = self.outcome["status"]
        return str(status["code"]), str(status["reason"] or "")

    def unknown(self, version: str) -> bool:
        """Whether the outcome leaves `version`'s deletion open (the caller was told so)."""
        status = self.outcome["status"]
        if self.status in OUTCOME_UNKNOWN and "unknown" in str(status["message"]):
            return True
        failed = (self.outcome.get("response") or {}).get("failed_versions") or {}
        info = failed.get(version) or {}
        return bool(
            info.get("error_code") == "PACKAGE_VERSION_ERROR_CODE_SKIPPED"
            and str(info.get("error_message", "")).startswith("outcome unknown")
        )

    @cached_property
    def claims(self) -> dict[str, bool]:
        """Versions the outcome reports deleted -> whether by inference after a lost answer."""
        versions = self.outcome.get("upstream", {}).get("versions") or {}
        return {
            v: "inferred" in info for v, info in versions.items() if info["result"] == "deleted"
        }


def read_record(store_url: str) -> tuple[dict[str, Event], list[tuple[Any, ...]]]:
    """Every event in the store (reopened as an auditor would), and the raw rows."""
    with reopened_store(store_url, "soak-reader") as store:
        assert [] == store.open_intents(), "an intent was left without outcome"
        rows = list(store.iter_rows())
    events: dict[str, Event] = {}
    latest = ""
    for row in rows:
        body = row_body(row)
        latest = max(latest, str(body["time"]))
        event = events.setdefault(body["event_id"], Event(body["event_id"]))
        kind = str(body["kind"])
        assert kind not in event.entries, f"two {kind} entries in {event.event_id}"
        event.entries[kind] = body
        if kind == "intent":
            event.intent_committed_after = latest
    return events, rows


def own_calls(emulator: Emulator, operation: str, prefix: str) -> list[RecordedCall]:
    """The emulator's calls of `operation` for this test's packages (named `prefix`...): a
    call an earlier test left in a latency fault is recorded when it ends, maybe in this
    test's log (the emulator records calls as they are answered)."""
    return [
        call
        for call in emulator.calls(operation)
        if str(call.params.get("package", "")).startswith(prefix)
    ]


# --- the checks -------------------------------------------------------------------------------


def check_write_ahead(
    events: Mapping[str, Event], deletes: Sequence[RecordedCall]
) -> dict[tuple[str, str], list[Event]]:
    """Every DeletePackageVersions the emulator received names versions an intent of that
    package announced, and that intent was committed before the request arrived: its call
    began earlier, and no entry chained before it was written after the request arrived.
    Returns the events that announced each (package, version)."""
    intents: dict[tuple[str, ...], list[Event]] = defaultdict(list)
    forwarded_by: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events.values():
        intent = event.intent
        if intent is None:
            continue
        assert intent["forward"], intent
        intents[coordinates(intent["request"])].append(event)
        for version in intent["forward"]:
            forwarded_by[(str(intent["request"]["package"]), str(version))].append(event)
    for call in deletes:
        received = format_time(call.received_at)
        versions = set(call.params["versions"])
        covering = [
            event
            for event in intents[coordinates(call.params)]
            if versions <= set((event.intent or {})["forward"])
            and str((event.intent or {})["time"]) < received
            and event.intent_committed_after < received
        ]
        assert covering, f"no intent committed before {call}"
    return forwarded_by
