"""The governed call and its record, with the shipped fakes: no intent, nothing sent; replays;
reuse with other content; calls in progress; quotas; outcomes retried until committed;
reconciliation; decisions classified from domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pkggov_gateway.domain.audit import Decision, EntryKind, StoredEntry
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    AuditUnavailableError,
    InvalidRequestError,
    MalformedRequestError,
    PolicyDeniedError,
    QuotaExceededError,
    RequestIdConflictError,
    RequestInProgressError,
    UnauthenticatedError,
    UpstreamThrottledError,
    VersionLimitError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import DeleteOutcome, PackageFormat, PackageRef, PackageState
from pkggov_gateway.domain.records import RecordedFailure, RecordedStatus
from pkggov_gateway.domain.validation import RawDeleteRequest
from pkggov_gateway.service.audit import Auditor, QuotaLimits
from pkggov_gateway.service.delete_versions import DeleteLimits, DeletePackageVersions
from pkggov_gateway.service.governed_call import DECISION_BY_ERROR, GovernedCall, decision_for
from pkggov_gateway.testing import (
    DELETE,
    FakeCodeArtifact,
    FakePackageLocks,
    FakePolicy,
    InMemoryAuditStore,
)

METHOD = "/pkggov.v1.PackageGovernanceService/DeletePackageVersions"
ALICE = Principal("alice", AuthMethod.DEV, "ipv4:127.0.0.1:1")
PACKAGE = PackageRef(
    domain="demo", repository="dev-shared", format=PackageFormat.NPM, package="left-pad"
)
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")


@dataclass
class World:
    """A use case on fakes, and the edge's part done by hand."""

    store: InMemoryAuditStore
    upstream: FakeCodeArtifact
    policy: FakePolicy
    auditor: Auditor
    use_case: DeletePackageVersions

    def begin(self, request: dict[str, Any]) -> GovernedCall:
        call = self.auditor.begin(METHOD, str(uuid.uuid4()), ALICE.peer)
        call.identified(ALICE)
        call.received(request)
        return call

    def run(self, request: dict[str, Any]) -> tuple[GovernedCall, DeleteOutcome | None]:
        """As the edge and the servicer do: replay or execute, then record the outcome."""
        call = self.begin(request)
        try:
            if call.replayed() is not None:
                call.succeeded(None)
                return call, None
            outcome = self.use_case.execute(_raw(request), ALICE, Deadline.after(10), call)
        except RecordedFailure as replay:
            call.failed(replay, replay.status)
            raise
        except Exception as error:
            call.failed(error, RecordedStatus(code=_CODES.get(type(error), "UNAVAILABLE")))
            raise
        call.succeeded({"successful_versions": {v: {} for v in outcome.successful}})
        return call, outcome

    def outcome(self, call: GovernedCall) -> StoredEntry:
        event = self.store.event(call.event_id)
        assert event is not None
        found = event.entry(EntryKind.OUTCOME)
        assert found is not None
        return found

    def kinds(self, call: GovernedCall) -> list[str]:
        event = self.store.event(call.event_id)
        return [e.kind.value for e in event.entries] if event is not None else []


_CODES = {
    PolicyDeniedError: "PERMISSION_DENIED",
    QuotaExceededError: "RESOURCE_EXHAUSTED",
    RequestIdConflictError: "INVALID_ARGUMENT",
}
"""The status code the edge's table gives (what the outcome records; a replay reads it)."""


def _raw(request: dict[str, Any]) -> RawDeleteRequest:
    return RawDeleteRequest(
        domain="demo",
        repository="dev-shared",
        format=PackageFormat.NPM,
        package="left-pad",
        versions=request["versions"],
        validate_only=bool(request.get("validate_only")),
        allow_partial=bool(request.get("allow_partial")),
    )


def _request(*versions: str, **fields: Any) -> dict[str, Any]:
    return {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "PACKAGE_FORMAT_NPM",
        "package": "left-pad",
        "versions": list(versions),
        **fields,
    }


@pytest.fixture
def world() -> Iterator[World]:
    store = InMemoryAuditStore()
    upstream = FakeCodeArtifact()
    upstream.add_package(PACKAGE, VERSIONS)
    policy = FakePolicy()
    auditor = Auditor(store, quotas=QuotaLimits(default=3))
    with ThreadPoolExecutor(4) as pool:
        use_case = DeletePackageVersions(
            upstream, pool, DeleteLimits(), policy, locks=FakePackageLocks()
        )
        yield World(store, upstream, policy, auditor, use_case)


def test_an_allowed_delete_is_an_intent_then_an_outcome(world: World) -> None:
    call, outcome = world.run(_request("1.0.0"))
    assert outcome is not None
    assert ["1.0.0"] == list(outcome.successful)
    assert ["intent", "outcome"] == world.kinds(call)
    assert "allowed" == world.outcome(call).body["decision"]


def test_no_intent_nothing_is_sent(world: World) -> None:
    """The intent cannot be committed: the call fails closed and nothing leaves."""
    world.store.fail_next(kinds=[EntryKind.INTENT])
    with pytest.raises(AuditUnavailableError):
        world.run(_request("1.0.0"))
    assert [] == world.upstream.sent()


def test_a_dry_run_records_one_outcome_and_sends_nothing(world: World) -> None:
    call, _ = world.run(_request("1.0.0", validate_only=True))
    assert (["outcome"], []) == (world.kinds(call), world.upstream.sent())
    assert "dry_run" == world.outcome(call).body["decision"]


def test_a_partial_delete_is_recorded_partial(world: World) -> None:
    world.policy.deny = frozenset({"1.1.0"})
    call, _ = world.run(_request("1.0.0", "1.1.0", allow_partial=True))
    assert "partial" == world.outcome(call).body["decision"]


def test_a_retry_with_the_same_id_and_content_replays(world: World) -> None:
    request = _request("1.0.0", request_id=str(uuid.uuid4()))
    first, _ = world.run(request)
    sent = world.upstream.sent()
    again, outcome = world.run({**request, "request_id": request["request_id"].upper()})
    assert outcome is None  # answered from the record
    assert sent == world.upstream.sent()
    body = world.outcome(again).body
    assert ("replayed", first.event_id, None) == (
        body["decision"],
        body["replay_of"],
        body["request_id"],
    )


def test_the_same_id_with_other_content_is_refused_and_claims_nothing(world: World) -> None:
    request_id = str(uuid.uuid4())
    world.run(_request("1.0.0", request_id=request_id))
    with pytest.raises(RequestIdConflictError):
        world.run(_request("1.1.0", request_id=request_id))
    [refused] = [
        e for e in world.store.entries() if e.body.get("decision") == Decision.INVALID.value
    ]
    assert refused.body["request_id"] is None
    assert [("1.0.0",)] == world.upstream.sent()  # the first call's delete, nothing more


def test_a_call_still_open_is_in_progress(world: World) -> None:
    """An intent without outcome (the first call still runs): the retry is ABORTED."""
    request = _request("1.0.0", request_id=str(uuid.uuid4()))
    first = world.begin(request)
    first.before_forwarding((), ["1.0.0"], Deadline.after(10))
    with pytest.raises(RequestInProgressError):
        world.begin(request).replayed()


def test_a_final_error_is_replayed_as_recorded(world: World) -> None:
    """A retry of a call that was denied (final) gets the recorded status; nothing runs."""
    world.policy.deny = frozenset({"1.0.0"})
    request = _request("1.0.0", request_id=str(uuid.uuid4()))
    with pytest.raises(PolicyDeniedError):
        world.run(request)
    world.policy.deny = frozenset()  # it would be allowed now, but the answer is recorded
    with pytest.raises(RecordedFailure) as replayed:
        world.run(request)
    assert "PERMISSION_DENIED" == replayed.value.status.code
    assert [] == world.upstream.sent()
    assert "replayed" == world.store.entries()[-1].body["decision"]


def test_a_retryable_failure_runs_again(world: World) -> None:
    """After a retryable failure (UNAVAILABLE) the same request_id runs the call again."""
    request = _request("1.0.0", request_id=str(uuid.uuid4()))
    world.upstream.fail_next(DELETE, UpstreamThrottledError("slow down"))
    with pytest.raises(UpstreamThrottledError):
        world.run(request)
    _, outcome = world.run(request)
    assert outcome is not None
    assert ["1.0.0"] == list(outcome.successful)


def test_the_quota_refuses_the_intent_and_nothing_is_sent(world: World) -> None:
    with pytest.raises(QuotaExceededError):
        world.run(_request(*VERSIONS))
    assert [] == world.upstream.sent()
    assert "denied" == world.store.entries()[-1].body["decision"]


def test_an_outcome_after_an_intent_is_retried_until_committed(world: World) -> None:
    world.store.fail_next(None, kinds=[EntryKind.OUTCOME])
    with pytest.raises(AuditUnavailableError):
        world.run(_request("1.0.0"))
    assert 1 == len(world.upstream.sent())  # the intent was committed: the delete went out
    assert [EntryKind.OUTCOME] == [e.kind for e in world.store.pending]
    world.store.heal()
    assert [] == list(world.store.pending)
    assert EntryKind.OUTCOME is world.store.entries()[-1].kind


def test_an_intent_left_open_is_reconciled(world: World) -> None:
    call = world.begin(_request("1.0.0"))
    call.before_forwarding((), ["1.0.0"], Deadline.after(10))
    world.upstream.delete_package_versions(PACKAGE, ["1.0.0"], None, Deadline.after(10))
    done = world.auditor.reconcile(
        world.upstream, older_than=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert 1 == done.count
    [reconciliation] = [e for e in world.store.entries() if e.kind is EntryKind.RECONCILIATION]
    assert ({"1.0.0": "deleted"}, 1) == (
        reconciliation.body["versions"],
        reconciliation.body["deleted"],
    )
    assert [] == world.store.open_intents()


def test_two_replicas_sweeping_one_orphan_record_one_reconciliation(world: World) -> None:
    """Two replicas starting at once both find the orphan open; the one that appends second is
    refused (the event is closed already) and goes on, where it used to fail its start."""
    call = world.begin(_request("1.0.0"))
    call.before_forwarding((), ["1.0.0"], Deadline.after(10))
    stale = datetime.now(UTC) + timedelta(seconds=1)
    other = Auditor(world.store.another_replica("b"))

    class RacedRead(FakeCodeArtifact):
        """The other replica's sweep lands while this one reads CodeArtifact."""

        def package_state(
            self,
            package: PackageRef,
            deadline: Deadline,
            *,
            published_time_for: Sequence[str] = (),
            by_published: bool = False,
        ) -> PackageState:
            assert 1 == other.reconcile(world.upstream, older_than=stale).count
            return world.upstream.package_state(package, deadline)

    assert 0 == world.auditor.reconcile(RacedRead(), older_than=stale).count
    reconciliations = [e for e in world.store.entries() if e.kind is EntryKind.RECONCILIATION]
    assert ["b"] == [e.body["replica"] for e in reconciliations]
    assert [] == world.store.open_intents()


def test_an_upstream_failure_is_recorded_failed(world: World) -> None:
    world.upstream.fail_next(DELETE, UpstreamThrottledError("slow down"))
    with pytest.raises(UpstreamThrottledError):
        world.run(_request("1.0.0"))
    assert "failed" == world.store.entries()[-1].body["decision"]


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (InvalidRequestError([]), Decision.INVALID),
        (MalformedRequestError("x"), Decision.INVALID),
        (RequestIdConflictError("r", "e"), Decision.INVALID),
        (UnauthenticatedError("x"), Decision.UNAUTHENTICATED),
        (PolicyDeniedError([], 1), Decision.DENIED),
        (VersionLimitError(2, 1, ()), Decision.DENIED),
        (QuotaExceededError("s", 1, 1, 1, 1.0), Decision.DENIED),
        (UpstreamThrottledError("x"), Decision.FAILED),
        (RequestInProgressError("r", "e"), Decision.FAILED),
        (AuditUnavailableError("x"), Decision.FAILED),
        (ValueError("a bug"), Decision.FAILED),
    ],
)
def test_decisions_are_classified_from_the_domain_error(
    error: BaseException, decision: Decision
) -> None:
    assert decision is decision_for(error)


def test_the_table_is_read_by_the_most_specific_class() -> None:
    class SpecialError(InvalidRequestError):
        pass

    assert Decision.INVALID is decision_for(SpecialError([]))
    assert set(DECISION_BY_ERROR.values()) <= set(Decision)
