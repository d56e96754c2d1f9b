"""Typed audit records: what an intent, an outcome and a reconciliation say, as entry bodies.

These classes (with `domain.audit`'s indexed columns) are the only code that knows an entry
body's keys, and the keys of the request and response recorded in it (the proto's JSON with
proto field names, as the edge renders them). Writers build a record and take its `body()`;
readers take a view (`IntentFacts`, `OutcomeFacts`, `EventSummary`) of a stored entry.

One governed call is one event: an *intent* before anything leaves (write-ahead), an
*outcome* after, and after a crash a *reconciliation* instead of the outcome. A new kind of
governed operation (archive, restore, purge, approval votes) records the same three entries;
what it asked and what came back are its `request` and `response`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pkggov_gateway.domain.audit import (
    SCHEMA_VERSION,
    AuditEventRecord,
    Decision,
    EntryKind,
    StoredEntry,
    canonical,
    format_time,
    parse_time,
)
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageRef,
    PlannedVersion,
    VersionStatus,
)

__all__ = [
    "OK",
    "CallHeader",
    "EventSummary",
    "IntentFacts",
    "IntentRecord",
    "OutcomeFacts",
    "OutcomeRecord",
    "ReconciliationRecord",
    "RecordedFailure",
    "RecordedStatus",
    "RequestFacts",
    "request_json",
    "response_json",
]

_REQUEST_ID = "request_id"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the governed call reads from the recorded request (the proto's JSON)."""

    request_id: str | None
    """The AIP-155 retry key, in lower case: a UUID names one call in any case."""
    dry_run: bool
    fingerprint: str
    """What "the same content" means for a request_id: the request without its request_id."""

    @classmethod
    def of(cls, request: Mapping[str, Any]) -> RequestFacts:
        """The facts of a request as the edge rendered it."""
        content = {k: v for k, v in request.items() if k != _REQUEST_ID}
        return cls(
            request_id=str(request.get(_REQUEST_ID) or "").lower() or None,
            dry_run=bool(request.get("validate_only")),
            fingerprint=hashlib.sha256(canonical(content).encode()).hexdigest(),
        )


@dataclass(frozen=True, slots=True)
class CallHeader:
    """What every entry of an event says of its call: the RPC, who called, what was asked."""

    event_id: str
    method: str
    rpc_request_id: str
    peer: str
    received: datetime
    replica: str
    principal: Principal | None = None
    request: Mapping[str, Any] | None = None

    def body(self, kind: EntryKind, time: datetime) -> dict[str, Any]:
        """The keys every entry of the call has."""
        principal = self.principal
        return {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "kind": kind.value,
            "time": format_time(time),
            "received": format_time(self.received),
            "replica": self.replica,
            "rpc": {"method": self.method, "request_id": self.rpc_request_id, "peer": self.peer},
            "principal": _principal(principal),
            "request": dict(self.request) if self.request is not None else None,
        }


def _principal(principal: Principal | None) -> dict[str, Any] | None:
    """Who called, as recorded: the id and how it was established; for a token also its
    issuer, its id (`jti`, or a hash: never the token) and the claims that became attributes."""
    if principal is None:
        return None
    recorded: dict[str, Any] = {"id": principal.id, "auth_method": principal.method.value}
    if principal.issuer is not None:
        recorded["issuer"] = principal.issuer
        recorded["token_id"] = principal.token_id
        recorded["claims"] = dict(principal.attributes)
        if principal.claim_groups:
            recorded["claim_groups"] = list(principal.claim_groups)
    return recorded


def _decisions(plan: Mapping[str, PlannedVersion] | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    # Versions decided alike share one PlannedVersion: it is rendered once, and each version
    # gets its own copy, as if rendered for it alone.
    rendered: dict[int, dict[str, Any]] = {}
    decisions: dict[str, Any] = {}
    for version, planned in plan.items():
        form = rendered.get(id(planned))
        if form is None:
            form = rendered[id(planned)] = _decision(planned)
        decisions[version] = {**form, "policy_ids": form["policy_ids"].copy()}
    return decisions


def _decision(planned: PlannedVersion) -> dict[str, Any]:
    """One version's decision, as recorded."""
    return {
        "outcome": planned.outcome.value,
        "policy_ids": list(planned.policy_ids),
        "message": planned.message,
        "status": planned.status.value if planned.status is not None else None,
        "is_latest": planned.is_latest,
        **({"purge_at": format_time(planned.purge_at)} if planned.purge_at else {}),
    }


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """Written and committed before anything leaves: what is about to be sent, and by when."""

    header: CallHeader
    request_id: str | None
    fingerprint: str
    plan: Mapping[str, PlannedVersion] | None
    forward: tuple[str, ...]
    deadline: datetime
    """Nothing of the call is sent after it: reconciliation waits for it after a crash."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What else the intent commits to (a vote, a deletion request's state change)."""

    def body(self) -> dict[str, Any]:
        """The entry body."""
        body = self.header.body(EntryKind.INTENT, self.header.received)
        body.update(
            request_id=self.request_id,
            fingerprint=self.fingerprint,
            decisions=_decisions(self.plan),
            forward=list(self.forward),
            deadline=format_time(self.deadline),
        )
        body.update(self.extra)
        return body


@dataclass(frozen=True, slots=True)
class RecordedStatus:
    """The status the caller got, as the edge reports it: gRPC code name, ErrorInfo reason,
    message, the whole google.rpc.Status (base64) and the ErrorInfo metadata."""

    code: str = "OK"
    reason: str = ""
    message: str = ""
    details: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The outcome's ``status``."""
        return {
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "details": self.details,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> RecordedStatus:
        """The status an outcome recorded."""
        return cls(
            code=str(status.get("code") or ""),
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            details=status.get("details") or None,
            metadata={str(k): str(v) for k, v in (status.get("metadata") or {}).items()},
        )


OK = RecordedStatus()


class RecordedFailure(Exception):  # noqa: N818 - a way of answering, not a failure
    """Raised to answer a retry (AIP-155) with the error status recorded for its request."""

    def __init__(self, status: RecordedStatus) -> None:
        super().__init__(status.message)
        self.status = status


_RESULTS = {"DELETED": "deleted", "ARCHIVED": "archived", "DISPOSED": "disposed"}
"""What happened to a version, by the status CodeArtifact reported after the call; a version
in any other status was restored."""


def _upstream_versions(
    response: Mapping[str, Any] | None, inferred: Mapping[str, str]
) -> dict[str, Any]:
    """Per version, what CodeArtifact (or the gateway) reported in the response; a version
    reported deleted from a NOT_FOUND after a lost answer says so in `inferred`."""
    if not response:
        return {}
    versions: dict[str, Any] = {}
    for version, info in (response.get("successful_versions") or {}).items():
        status = str(info.get("status") or "").removeprefix("PACKAGE_VERSION_STATUS_")
        result = _RESULTS.get(status, "restored")
        versions[version] = {"result": result, **info}
        if version in inferred:
            versions[version]["inferred"] = inferred[version]
    for version, info in (response.get("failed_versions") or {}).items():
        versions[version] = {"result": "failed", **info}
    return versions


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """Written after the call (or as its only entry when it sent nothing): what came back and
    what the caller got."""

    header: CallHeader
    time: datetime
    decision: Decision
    status: RecordedStatus
    response: Mapping[str, Any] | None
    duration_ms: float
    aws_request_ids: tuple[str, ...] = ()
    inferred: Mapping[str, str] = field(default_factory=dict)
    intent_seq: int | None = None
    """The intent's place in the chain; None when this is the call's only entry."""
    claimed_request_id: str | None = None
    """Only entry: the request_id it claims (only a call that ran the request claims one)."""
    fingerprint: str | None = None
    plan: Mapping[str, PlannedVersion] | None = None
    replay_of: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What else the outcome records (the deletion request it created or changed)."""

    def body(self) -> dict[str, Any]:
        """The entry body."""
        body = self.header.body(EntryKind.OUTCOME, self.time)
        if self.intent_seq is None:
            body.update(
                request_id=self.claimed_request_id,
                fingerprint=self.fingerprint,
                decisions=_decisions(self.plan),
            )
        else:
            body["intent_seq"] = self.intent_seq
        response = self.response
        # An approved request's execution answers with the delete's response as its result.
        deleted = (response or {}).get("result", response)
        body.update(
            decision=self.decision.value,
            status=self.status.body(),
            response=dict(response) if response is not None else None,
            upstream={
                "aws_request_ids": list(self.aws_request_ids),
                "versions": _upstream_versions(deleted, self.inferred),
            },
            deleted=len((deleted or {}).get("successful_versions") or {}),
            duration_ms=self.duration_ms,
        )
        if self.replay_of is not None:
            body["replay_of"] = self.replay_of
        body.update(self.extra)
        return body


@dataclass(frozen=True, slots=True)
class IntentFacts:
    """What reconciliation reads from a stored intent."""

    entry: StoredEntry
    time: str
    replica: str
    deadline: str | None
    request: Mapping[str, Any]
    forward: tuple[str, ...]

    @classmethod
    def of(cls, entry: StoredEntry) -> IntentFacts:
        """The facts of a stored intent."""
        body = entry.body
        deadline = body.get("deadline")
        return cls(
            entry=entry,
            time=str(body.get("time") or ""),
            replica=str(body.get("replica") or ""),
            deadline=deadline if isinstance(deadline, str) else None,
            request=body.get("request") or {},
            forward=tuple(str(v) for v in body.get("forward") or ()),
        )

    @property
    def principal(self) -> str:
        """The id of the principal whose call this was ("" when none)."""
        return str((self.entry.body.get("principal") or {}).get("id") or "")

    def decision(self, version: str) -> str | None:
        """The plan's outcome for `version` (e.g. "WOULD_ARCHIVE"), None when not planned."""
        planned = (self.entry.body.get("decisions") or {}).get(version) or {}
        outcome = planned.get("outcome")
        return str(outcome) if outcome else None

    def archived(self, version: str) -> tuple[VersionStatus, datetime]:
        """For a version the intent archives: its status before, and when it is purged."""
        planned = (self.entry.body.get("decisions") or {}).get(version) or {}
        previous = VersionStatus(planned.get("status") or VersionStatus.PUBLISHED.value)
        return previous, parse_time(str(planned["purge_at"]))

    def package_fields(self) -> dict[str, str | None]:
        """The package the intent named, as recorded (proto JSON values); KeyError when the
        request lacks one."""
        request = self.request
        return {
            "domain": str(request["domain"]),
            "repository": str(request["repository"]),
            "format": str(request["format"]).removeprefix("PACKAGE_FORMAT_").lower(),
            "package": str(request["package"]),
            "namespace": request.get("namespace") or None,
            "domain_owner": request.get("domain_owner") or None,
        }


@dataclass(frozen=True, slots=True)
class ReconciliationRecord:
    """Closes an intent that a crash left without outcome: what CodeArtifact then held."""

    intent: IntentFacts
    time: datetime
    replica: str
    versions: Mapping[str, str]
    """Per forwarded version: ``deleted``, ``still_present`` or ``unknown``."""
    detail: str

    def body(self) -> dict[str, Any]:
        """The entry body."""
        intent = self.intent.entry
        return {
            "schema": SCHEMA_VERSION,
            "event_id": intent.event_id,
            "kind": EntryKind.RECONCILIATION.value,
            "time": format_time(self.time),
            "replica": self.replica,
            "principal": intent.body.get("principal"),
            "request": dict(self.intent.request),
            "intent_seq": intent.seq,
            "versions": dict(self.versions),
            "deleted": sum(1 for s in self.versions.values() if s == "deleted"),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class OutcomeFacts:
    """What a retry (AIP-155) reads from the event that claimed its request_id."""

    fingerprint: str | None
    """The claimed request's fingerprint (from the event's first entry)."""
    status: RecordedStatus | None
    """The answer recorded (None while the event has no outcome)."""
    response: Mapping[str, Any] | None

    @classmethod
    def of(cls, event: AuditEventRecord) -> OutcomeFacts:
        """The facts of a stored event."""
        outcome = event.entry(EntryKind.OUTCOME)
        fingerprint = event.entries[0].body.get("fingerprint")
        if outcome is None:
            return cls(str(fingerprint) if fingerprint else None, None, None)
        return cls(
            str(fingerprint) if fingerprint else None,
            RecordedStatus.of(outcome.body.get("status") or {}),
            outcome.body.get("response") or {},
        )


@dataclass(frozen=True, slots=True)
class EventSummary:
    """An event at a glance (AuditService's AuditEvent without its entries)."""

    event_id: str
    received: str
    principal: str
    method: str
    decision: str
    status_code: str
    reason: str

    @classmethod
    def of(cls, event: AuditEventRecord) -> EventSummary:
        """The summary of a stored event."""
        first = event.entries[0].body
        outcome = event.entry(EntryKind.OUTCOME)
        status = (outcome.body.get("status") or {}) if outcome is not None else {}
        return cls(
            event_id=event.event_id,
            received=str(first.get("received") or first["time"]),
            principal=str((first.get("principal") or {}).get("id") or ""),
            method=str((first.get("rpc") or {}).get("method") or ""),
            decision=str(outcome.body.get("decision") or "") if outcome is not None else "",
            status_code=str(status.get("code") or ""),
            reason=str(status.get("reason") or ""),
        )


def response_json(outcome: DeleteOutcome) -> dict[str, Any]:
    """A delete's outcome as a DeletePackageVersionsResponse's JSON (proto field names): what
    the record holds of a call the gateway makes itself (a purge, an automatic execution)."""
    return {
        "successful_versions": {
            v: {
                "revision": ok.revision,
                "status": f"PACKAGE_VERSION_STATUS_{(ok.status or 'deleted').upper()}",
            }
            for v, ok in outcome.successful.items()
        },
        "failed_versions": {
            v: {
                "error_code": f"PACKAGE_VERSION_ERROR_CODE_{f.code or 'unspecified'}".upper(),
                "error_message": f.message,
            }
            for v, f in outcome.failed.items()
        },
    }


def request_json(
    package: PackageRef,
    versions: Sequence[str],
    *,
    expected_status: VersionStatus | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A delete the gateway makes itself (an approved plan's execution, a cleanup job's step)
    as a DeletePackageVersionsRequest's JSON (proto field names), plus `fields` (the other
    request fields, and what the call completes): what its audit event records as its request,
    and what reconciliation reads after a crash."""
    return {
        "domain": package.domain,
        "domain_owner": package.domain_owner or "",
        "repository": package.repository,
        "format": f"PACKAGE_FORMAT_{package.format.name}",
        "namespace": package.namespace or "",
        "package": package.package,
        "versions": list(versions),
        "expected_status": (
            f"PACKAGE_VERSION_STATUS_{expected_status.name}"
            if expected_status
            else "PACKAGE_VERSION_STATUS_UNSPECIFIED"
        ),
        **fields,
    }
