"""Four eyes under attack, over real gRPC, against the emulator (read back through unmodified
boto3) and a real audit store (SQLite; PostgreSQL for two replicas), with the shipped policy:
deleting for good in prod-* (purge_now under its window) needs one approval by a release-admin
other than the requester.

Each test reads the outcome where it is observable: the status code and ErrorInfo reason, the
versions in CodeArtifact, the request as GetDeletionRequest shows it, and the audit record.
alice and dave are release-admins, carol an auditor, bob in no group; some tests add `erin`,
a third release-admin, through an entities file of their own (the shipped one plus her).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

import pkggov_gateway
from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.tools.audit_verify import verify
from tests.conftest import pg_schema_url
from tests.e2e import test_approvals as four_eyes
from tests.e2e import test_recoverable_delete as happy_path
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    RichError,
    bad_fields,
    rich_error,
    stub_for,
)
from tests.e2e.recovery_helpers import deleted_upstream
from tests.e2e.test_approvals import PROD, approvals, failure, open_request, purge_now
from tests.e2e.test_recoverable_delete import Clock, publish, status_of

# The fixtures of test_approvals (the shipped policy, prod-* with a 30-day window, on the
# test clock) and of test_recoverable_delete (boto3 on the emulator).
clock = four_eyes.clock
gateway = four_eyes.gateway
codeartifact = happy_path.codeartifact

MINUTE = timedelta(minutes=1)
TOOL = {k: v for k, v in PROD.items() if k != "format"} | {"format": "generic"}
"""demo/prod-release generic acme/tool, as boto3 names it."""
SETTINGS: dict[str, Any] = {
    "policy": {},
    "recovery": {"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600.0},
    "approvals": {"sweep_interval_seconds": 3600.0},
}
"""The `gateway` fixture's settings (test_approvals), for gateways a test makes itself."""
SHIPPED_ENTITIES = Path(pkggov_gateway.__file__).parent / "policies" / "entities.yaml"


# --- helpers --------------------------------------------------------------------------------


def request_of(gateway: Gateway, request_id: str, principal: str = "carol") -> pb.DeletionRequest:
    """The request as GetDeletionRequest shows it (to carol, the auditor, by default)."""
    answer = approvals(gateway, principal).GetDeletionRequest(
        pb.GetDeletionRequestRequest(id=request_id)
    )
    return answer.deletion_request  # type: ignore[no-any-return]


def approve(
    gateway: Gateway, request_id: str, principal: str = "dave", plan_hash: str = ""
) -> pb.DeletionRequest:
    answer = approvals(gateway, principal).ApproveDeletionRequest(
        pb.ApproveDeletionRequestRequest(id=request_id, reason="checked", plan_hash=plan_hash)
    )
    return answer.deletion_request  # type: ignore[no-any-return]


def reject(gateway: Gateway, request_id: str, principal: str = "dave") -> pb.DeletionRequest:
    answer = approvals(gateway, principal).RejectDeletionRequest(
        pb.RejectDeletionRequestRequest(id=request_id, reason="not convinced")
    )
    return answer.deletion_request  # type: ignore[no-any-return]


def execute(
    gateway: Gateway, request_id: str, principal: str = "alice"
) -> pb.ExecuteDeletionRequestResponse:
    return approvals(gateway, principal).ExecuteDeletionRequest(  # type: ignore[no-any-return]
        pb.ExecuteDeletionRequestRequest(id=request_id)
    )


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> RichError:
    """`call(*args, **kwargs)`, which must fail, decoded."""
    return failure(lambda: call(*args, **kwargs))


def attempt(call: Callable[[], Any]) -> Any:
    """The call's answer, or its decoded error."""
    try:
        return call()
    except grpc.RpcError as error:
        return rich_error(error)


def open_for(gateway: Gateway, package: str, version: str, principal: str = "alice") -> str:
    """A deletion request of `principal`'s purge_now of acme/`package` `version` in prod."""
    with stub_for(gateway, principal=principal) as stub:
        request = pb.DeletePackageVersionsRequest(
            **{**PROD, "package": package},
            versions=[version],
            justification="leaked secret",
            purge_now=True,
        )
        error = failure(lambda: stub.DeletePackageVersions(request, timeout=10))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "APPROVAL_REQUIRED")
    return error.metadata["deletion_request_id"]


def audit_event(gateway: Gateway, event_id: str) -> pb.AuditEvent:
    """GetAuditEvent, as carol (an auditor) reads it."""
    with grpc.insecure_channel(gateway.address) as channel:
        answer = pb_grpc.AuditServiceStub(channel).GetAuditEvent(
            pb.GetAuditEventRequest(event_id=event_id),
            timeout=10,
            metadata=((PRINCIPAL_KEY, "carol"),),
        )
    return answer.event


def entry(event: pb.AuditEvent, kind: str) -> dict[str, Any]:
    """The body of the event's one entry of `kind`."""
    (found,) = [e for e in event.entries if e.kind == kind]
    return json_format.MessageToDict(found.body)


def listed(gateway: Gateway, principal: str = "carol", **filters: Any) -> list[str]:
    """The ids ListDeletionRequests answers with `filters`, one page."""
    answer = approvals(gateway, principal).ListDeletionRequests(
        pb.ListDeletionRequestsRequest(**filters)
    )
    return [r.id for r in answer.deletion_requests]


def deletes_of(emulator: Emulator, version: str, package: str = "tool") -> int:
    """How many DeletePackageVersions calls CodeArtifact applied that named `version`."""
    return deleted_upstream(emulator)[(package, version)]


def verified(gateway: Gateway) -> None:
    """No intent left open, and the hash chain verifies (`pkggov-admin audit verify`)."""
    assert [] == gateway.audit_store.open_intents()
    report = verify(gateway.audit_store.iter_rows())
    assert report.ok, report.first_problem


@pytest.fixture
def with_erin(tmp_path: Path) -> dict[str, str]:
    """Policy settings: the shipped set, with erin as a third release-admin."""
    entities = yaml.safe_load(SHIPPED_ENTITIES.read_text())
    entities["principals"]["erin"] = {
        "groups": ["release-admins"],
        "person": "erin",
        "description": "A third release administrator (tests only).",
    }
    path = tmp_path / "entities.yaml"
    path.write_text(yaml.safe_dump(entities))
    return {"entities": str(path)}


# --- 1. the plan changed after approval -------------------------------------------------------


def _republish(codeartifact: Any) -> None:
    """Archived and back: the same status, a new revision."""
    for status in ("Archived", "Published"):
        codeartifact.update_package_versions_status(**TOOL, versions=["1.0.0"], targetStatus=status)


def _unlist(codeartifact: Any) -> None:
    codeartifact.update_package_versions_status(**TOOL, versions=["1.0.0"], targetStatus="Unlisted")


def _delete_another(codeartifact: Any) -> None:
    codeartifact.delete_package_versions(**TOOL, versions=["1.1.0"])


CHANGES: dict[str, tuple[Callable[[Any], None], list[str], str]] = {
    "revision": (
        _republish,
        ["version 1.0.0 has another revision (changed since)"],
        "Published",
    ),
    "status": (
        _unlist,
        [
            "version 1.0.0 is Unlisted, not Published",
            "version 1.0.0 has another revision (changed since)",
        ],
        "Unlisted",
    ),
    "another-version-deleted": (
        _delete_another,
        ["the package has 2 versions, not 3"],
        "Published",
    ),
}
"""A change made outside the gateway: what it does, what PLAN_CHANGED names, 1.0.0's status."""


@pytest.mark.parametrize("case", CHANGES)
def test_a_plan_changed_outside_after_approval_runs_nothing(
    gateway: Gateway, codeartifact: Any, emulator: Emulator, case: str
) -> None:
    """Approved, then changed in CodeArtifact behind the gateway's back: the execution fails
    PLAN_CHANGED naming exactly what changed, sends nothing, and the request stays pending."""
    change, changes, status_after = CHANGES[case]
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0")
    request_id = open_request(gateway, "1.0.0")
    approve(gateway, request_id)
    change(codeartifact)

    changed = refused(execute, gateway, request_id)

    assert (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_CHANGED") == (changed.code, changed.reason)
    assert request_id == changed.metadata["deletion_request_id"]
    assert changed.message.endswith("nothing was deleted: " + "; ".join(changes))
    assert status_after == status_of(codeartifact, "1.0.0")
    assert 0 == deletes_of(emulator, "1.0.0")
    after = request_of(gateway, request_id)
    assert (pb.DELETION_REQUEST_STATE_PENDING, 1, "") == (
        after.state,
        after.approvals,
        after.closed_audit_event_id,
    )
    event = audit_event(gateway, changed.metadata["audit_event_id"])
    assert ("denied", "PLAN_CHANGED", ["outcome"]) == (
        event.decision,
        event.reason,
        [e.kind for e in event.entries],  # no intent: nothing was about to be sent
    )
    verified(gateway)


# --- 2. votes on requests that can no longer change -------------------------------------------


def test_an_executed_request_takes_no_vote_and_no_cancellation(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    approve(gateway, request_id)
    execute(gateway, request_id)
    before = request_of(gateway, request_id)

    late_approval = refused(approve, gateway, request_id)
    late_rejection = refused(reject, gateway, request_id)
    cancelled = refused(
        approvals(gateway, "alice").CancelDeletionRequest,
        pb.CancelDeletionRequestRequest(id=request_id, reason="too late"),
    )

    for error in (late_approval, late_rejection, cancelled):
        assert (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_NOT_PENDING") == (
            error.code,
            error.reason,
        )
        assert "is executed" in error.message
    assert before == request_of(gateway, request_id)  # still executed, the same single vote
    assert [("dave", True)] == [(v.approver, v.approve) for v in before.votes]
    assert before.closed_reason == "executed by alice, approved by dave"


def test_a_rejection_ends_the_request_whoever_approves_later(
    make_gateway: GatewayFactory,
    clock: Clock,
    codeartifact: Any,
    emulator: Emulator,
    with_erin: dict[str, str],
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    with make_gateway(clock=clock, **{**SETTINGS, "policy": with_erin}) as gw:
        request_id = open_request(gw, "1.0.0")
        rejected = reject(gw, request_id)
        assert pb.DELETION_REQUEST_STATE_REJECTED == rejected.state
        assert rejected.closed_reason == "rejected by dave: not convinced"

        late = refused(approve, gw, request_id, "erin")
        run = refused(execute, gw, request_id)

        assert ("REQUEST_NOT_PENDING", "REQUEST_NOT_PENDING") == (late.reason, run.reason)
        final = request_of(gw, request_id)
        assert (pb.DELETION_REQUEST_STATE_REJECTED, 0) == (final.state, final.approvals)
        assert [("dave", False)] == [(v.approver, v.approve) for v in final.votes]
    assert "Published" == status_of(codeartifact, "1.0.0")
    assert 0 == deletes_of(emulator, "1.0.0")


def test_when_rejections_do_not_end_it_a_later_approval_lets_it_run(
    make_gateway: GatewayFactory,
    clock: Clock,
    codeartifact: Any,
    with_erin: dict[str, str],
) -> None:
    """approvals.rejection_ends=false: a rejection is recorded (and does not count), the
    request stays pending, its author cannot turn it into an approval, and another approver's
    approval lets it run."""
    publish(codeartifact, "1.0.0", "1.1.0")
    settings = {
        **SETTINGS,
        "policy": with_erin,
        "approvals": {"sweep_interval_seconds": 3600.0, "rejection_ends": False},
    }
    with make_gateway(clock=clock, **settings) as gw:
        request_id = open_request(gw, "1.0.0")
        rejected = reject(gw, request_id)
        assert (pb.DELETION_REQUEST_STATE_PENDING, 0, "") == (
            rejected.state,
            rejected.approvals,
            rejected.closed_reason,
        )
        assert [("dave", False, False)] == [
            (v.approver, v.approve, v.counts) for v in rejected.votes
        ]
        early = refused(execute, gw, request_id)
        assert "APPROVAL_REQUIRED" == early.reason
        change_of_mind = refused(approve, gw, request_id, "dave")
        assert (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_VOTED") == (
            change_of_mind.code,
            change_of_mind.reason,
        )

        approved = approve(gw, request_id, "erin")
        assert 1 == approved.approvals
        done = execute(gw, request_id)

        assert pb.DELETION_REQUEST_STATE_EXECUTED == done.deletion_request.state
        assert done.deletion_request.closed_reason == "executed by alice, approved by erin"
        assert [("dave", False, False), ("erin", True, True)] == [
            (v.approver, v.approve, v.counts) for v in request_of(gw, request_id).votes
        ]
    assert status_of(codeartifact, "1.0.0") is None


# --- 3. an approval bound to the plan hash it reviewed -----------------------------------------


def test_an_approval_counts_only_for_the_plan_hash_it_names(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    plan_hash = request_of(gateway, request_id).plan_hash
    other = ("0" if plan_hash[0] != "0" else "1") + plan_hash[1:]

    wrong = refused(approve, gateway, request_id, plan_hash=other)

    assert (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_CHANGED") == (wrong.code, wrong.reason)
    assert plan_hash in wrong.message
    assert other in wrong.message
    unchanged = request_of(gateway, request_id)
    assert ([], 0) == (list(unchanged.votes), unchanged.approvals)

    for malformed in ("xyz", plan_hash[:-1], plan_hash + "0", "g" * 64, " " + plan_hash[1:]):
        bad = refused(approve, gateway, request_id, plan_hash=malformed)
        assert grpc.StatusCode.INVALID_ARGUMENT == bad.code, malformed
        assert ["plan_hash"] == bad_fields(bad), malformed
    assert [] == list(request_of(gateway, request_id).votes)

    voted = approve(gateway, request_id, plan_hash=plan_hash.upper())  # hex, either case

    assert 1 == voted.approvals
    assert [("dave", True, True)] == [(v.approver, v.approve, v.counts) for v in voted.votes]
    recorded = entry(audit_event(gateway, voted.votes[0].audit_event_id), "intent")["vote"]
    assert plan_hash == recorded["plan_hash"]
    assert pb.DELETION_REQUEST_STATE_EXECUTED == execute(gateway, request_id).deletion_request.state


def test_a_principal_who_may_not_vote_learns_nothing_from_a_plan_hash(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    plan_hash = request_of(gateway, request_id).plan_hash
    cannot_read = refused(request_of, gateway, request_id, "bob")
    assert "POLICY_DENIED" == cannot_read.reason

    probe = refused(approve, gateway, request_id, "bob", "a" * 64)

    assert plan_hash not in probe.message
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (probe.code, probe.reason)


# --- 4. two replicas on one PostgreSQL store --------------------------------------------------


def test_two_replicas_count_each_vote_once_and_run_a_request_once(
    pg_schema: str,
    emulator: Emulator,
    codeartifact: Any,
    make_gateway: GatewayFactory,
    with_erin: dict[str, str],
) -> None:
    """Replicas a and b share the PostgreSQL store and the emulator. dave votes at both at
    once and erin at one: dave counts once (the other vote ALREADY_VOTED), erin once. Then
    alice executes at both at once: it runs once, the other finds it executed."""
    url = pg_schema_url(pg_schema)
    publish(codeartifact, "1.0.0", "1.1.0")
    settings = {**SETTINGS, "policy": with_erin}
    with (
        make_gateway(audit={"store": url, "replica": "a"}, **settings) as a,
        make_gateway(audit={"store": url, "replica": "b"}, **settings) as b,
    ):
        request_id = open_request(a, "1.0.0")
        assert request_of(b, request_id).plan_hash == request_of(a, request_id).plan_hash

        votes_start = threading.Barrier(3)

        def vote(at: Gateway, who: str) -> Any:
            votes_start.wait(timeout=10)
            return attempt(lambda: approve(at, request_id, who))

        with ThreadPoolExecutor(3) as pool:
            voted = list(
                pool.map(vote, (a, b, a), ("dave", "dave", "erin")),
            )
        errors = [v for v in voted if isinstance(v, RichError)]
        assert [(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_VOTED")] == [
            (e.code, e.reason) for e in errors
        ]
        assert 1 == sum(isinstance(v, RichError) for v in voted[:2])  # one of dave's two
        assert not isinstance(voted[2], RichError)  # erin's
        counted = request_of(b, request_id)
        assert 2 == counted.approvals
        assert ["dave", "erin"] == sorted(v.approver for v in counted.votes)
        assert all(v.counts for v in counted.votes)

        run_start = threading.Barrier(2)

        def run(at: Gateway) -> Any:
            run_start.wait(timeout=10)
            return attempt(lambda: execute(at, request_id))

        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(run, (a, b)))
        done = [r for r in runs if not isinstance(r, RichError)]
        lost = [r for r in runs if isinstance(r, RichError)]
        assert (1, 1) == (len(done), len(lost)), runs
        (loser,) = lost
        if loser.reason == "PACKAGE_BUSY":  # its wait for the package's lock ran out: retry
            assert grpc.StatusCode.ABORTED == loser.code
            loser = refused(execute, b if runs[1] is loser else a, request_id)
        assert (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_NOT_PENDING") == (
            loser.code,
            loser.reason,
        )
        assert pb.PACKAGE_VERSION_STATUS_DELETED == (
            done[0].result.successful_versions["1.0.0"].status
        )
        assert 1 == deletes_of(emulator, "1.0.0")
        assert 1 == sum(call.applied for call in emulator.calls("DeletePackageVersions"))
        assert status_of(codeartifact, "1.0.0") is None
        assert "Published" == status_of(codeartifact, "1.1.0")
        for replica in (a, b):
            final = request_of(replica, request_id)
            assert pb.DELETION_REQUEST_STATE_EXECUTED == final.state
            assert done[0].deletion_request.closed_audit_event_id == final.closed_audit_event_id
        verified(a)


# --- 5. a dry run records nothing ---------------------------------------------------------------


def test_a_dry_run_needing_approval_records_no_request(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    with stub_for(gateway, principal="alice") as stub:
        request = pb.DeletePackageVersionsRequest(
            **PROD,
            versions=["1.0.0"],
            justification="leaked secret",
            purge_now=True,
            validate_only=True,
        )
        dry = failure(lambda: stub.DeletePackageVersions(request, timeout=10))

    assert (grpc.StatusCode.FAILED_PRECONDITION, "APPROVAL_REQUIRED") == (dry.code, dry.reason)
    assert "deletion_request_id" not in dry.metadata
    assert "a real call would record a deletion request" in dry.message
    assert [] == listed(gateway)
    assert "Published" == status_of(codeartifact, "1.0.0")
    # The dry run shows the hash of the plan the real call records: what approvers approve.
    real = purge_now(gateway, "1.0.0")
    assert dry.metadata["plan_hash"] == real.metadata["plan_hash"]
    assert [real.metadata["deletion_request_id"]] == listed(gateway)


# --- 6. listing requests ------------------------------------------------------------------------


def test_list_deletion_requests_filters_pages_and_refuses(
    gateway: Gateway,
    codeartifact: Any,
    clock: Clock,
) -> None:
    """Four requests: alice's tool 1.0.0 (rejected), then, a minute later and at the same
    instant, alice's tool 1.1.0 and dave's tool 1.2.0, then alice's gadget 1.0.0."""
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0", "1.3.0")
    publish(codeartifact, "1.0.0", "1.1.0", package="gadget")
    first = open_for(gateway, "tool", "1.0.0")
    clock.advance(MINUTE)
    alices = open_for(gateway, "tool", "1.1.0")
    daves = open_for(gateway, "tool", "1.2.0", principal="dave")
    clock.advance(MINUTE)
    gadget = open_for(gateway, "gadget", "1.0.0")
    reject(gateway, first)
    tie = sorted([alices, daves], reverse=True)  # same time: by id, descending

    assert [gadget, *tie, first] == listed(gateway)  # newest first
    assert [gadget, *tie] == listed(gateway, state=pb.DELETION_REQUEST_STATE_PENDING)
    assert [first] == listed(gateway, state=pb.DELETION_REQUEST_STATE_REJECTED)
    assert [] == listed(gateway, state=pb.DELETION_REQUEST_STATE_EXECUTED)
    assert [daves] == listed(gateway, requester="dave")
    assert [gadget, alices, first] == listed(gateway, requester="alice")
    assert [gadget] == listed(gateway, package="gadget")
    assert [alices] == listed(
        gateway, requester="alice", package="tool", state=pb.DELETION_REQUEST_STATE_PENDING
    )
    assert [gadget, *tie, first] == listed(gateway, domain="demo", repository="prod-release")
    assert [] == listed(gateway, repository="dev-shared")

    # One at a time: three pages, each request once, in order, the last without a token.
    pages: list[list[str]] = []
    token = ""
    while True:
        page = approvals(gateway, "carol").ListDeletionRequests(
            pb.ListDeletionRequestsRequest(package="tool", page_size=1, page_token=token)
        )
        pages.append([r.id for r in page.deletion_requests])
        token = page.next_page_token
        if not token or len(pages) > 4:
            break
    assert [[tie[0]], [tie[1]], [first]] == pages

    second = approvals(gateway, "carol").ListDeletionRequests(
        pb.ListDeletionRequestsRequest(package="tool", page_size=1)
    )
    for other_filters in (
        {"package": "gadget"},
        {"package": "tool", "requester": "alice"},
        {"package": "tool", "state": pb.DELETION_REQUEST_STATE_PENDING},
        {},
    ):
        foreign = refused(
            approvals(gateway, "carol").ListDeletionRequests,
            pb.ListDeletionRequestsRequest(
                **other_filters, page_size=1, page_token=second.next_page_token
            ),
        )
        assert grpc.StatusCode.INVALID_ARGUMENT == foreign.code, other_filters
        assert ["page_token"] == bad_fields(foreign), other_filters
    forged = refused(
        approvals(gateway, "carol").ListDeletionRequests,
        pb.ListDeletionRequestsRequest(page_token="not-a-token"),
    )
    assert ["page_token"] == bad_fields(forged)
    # A different page size with the same filters is the same listing.
    assert [tie[1], first] == listed(
        gateway, package="tool", page_size=5, page_token=second.next_page_token
    )

    bad_filter = pb.ListDeletionRequestsRequest(requester="al\x01ice", state=99)  # type: ignore[arg-type]
    invalid = refused(approvals(gateway, "carol").ListDeletionRequests, bad_filter)
    assert grpc.StatusCode.INVALID_ARGUMENT == invalid.code
    assert ["requester", "state"] == sorted(bad_fields(invalid))
    for principal in ("bob", "ci-bot"):  # may not read the audit record
        denied = refused(approvals(gateway, principal).ListDeletionRequests, bad_filter)
        assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (
            denied.code,
            denied.reason,
        )
        denied = refused(
            approvals(gateway, principal).ListDeletionRequests, pb.ListDeletionRequestsRequest()
        )
        assert "POLICY_DENIED" == denied.reason


# --- 7. the audit story -------------------------------------------------------------------------


def test_the_record_tells_the_story_of_an_executed_request(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    approve(gateway, request_id)
    execute(gateway, request_id)
    story = request_of(gateway, request_id)
    (vote,) = story.votes

    created = audit_event(gateway, story.audit_event_id)
    assert (
        "/pkggov.v1.PackageGovernanceService/DeletePackageVersions",
        "alice",
        "approval_required",
        "APPROVAL_REQUIRED",
        ["outcome"],
    ) == (
        created.method,
        created.principal,
        created.decision,
        created.reason,
        [e.kind for e in created.entries],
    )
    opened = entry(created, "outcome")["deletion_request"]
    assert (request_id, story.plan_hash, ["1.0.0"]) == (
        opened["id"],
        opened["plan_hash"],
        opened["versions"],
    )

    voted = audit_event(gateway, vote.audit_event_id)
    assert (
        "/pkggov.v1.ApprovalService/ApproveDeletionRequest",
        "dave",
        "allowed",
        ["intent", "outcome"],
    ) == (voted.method, voted.principal, voted.decision, [e.kind for e in voted.entries])
    assert {
        "deletion_request_id": request_id,
        "approve": True,
        "person": "dave",
        "groups": ["release-admins"],
        "reason": "checked",
        "plan_hash": story.plan_hash,
    } == entry(voted, "intent")["vote"]

    executed = audit_event(gateway, story.closed_audit_event_id)
    assert (
        "/pkggov.v1.ApprovalService/ExecuteDeletionRequest",
        "alice",
        "allowed",
        ["intent", "outcome"],
    ) == (
        executed.method,
        executed.principal,
        executed.decision,
        [e.kind for e in executed.entries],
    )
    intent = entry(executed, "intent")
    assert (request_id, ["1.0.0"]) == (
        intent["request"]["deletion_request_id"],
        intent["forward"],
    )
    closed = entry(executed, "outcome")["deletion_request"]
    assert (request_id, ["dave"], True, story.plan_hash) == (
        closed["id"],
        closed["approved_by"],
        closed["executed"],
        closed["plan_hash"],
    )
    verified(gateway)


def test_the_execution_outcome_records_what_was_deleted(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    approve(gateway, request_id)
    done = execute(gateway, request_id)
    assert status_of(codeartifact, "1.0.0") is None

    outcome = entry(audit_event(gateway, done.deletion_request.closed_audit_event_id), "outcome")

    assert ["1.0.0"] == sorted(outcome["upstream"]["versions"])
    assert "deleted" == outcome["upstream"]["versions"]["1.0.0"]["result"]
    assert 1 == outcome["deleted"]


QUOTA: dict[str, Any] = {**SETTINGS, "quota": {"max_versions_per_group": {"release-admins": 1}}}
"""Release-admins may delete one version an hour (on the wall clock: quotas read it)."""


def test_the_quota_counts_an_ordinary_delete(
    make_gateway: GatewayFactory,
    codeartifact: Any,
) -> None:
    """The control of the next test: one archive used the hour's quota."""
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0")
    with make_gateway(**QUOTA) as gw, stub_for(gw, principal="alice") as stub:
        first = pb.DeletePackageVersionsRequest(**PROD, versions=["1.0.0"], justification="x")
        stub.DeletePackageVersions(first, timeout=10)
        second = pb.DeletePackageVersionsRequest(**PROD, versions=["1.1.0"], justification="x")
        over = failure(lambda: stub.DeletePackageVersions(second, timeout=10))
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED") == (over.code, over.reason)
    assert "Published" == status_of(codeartifact, "1.1.0")


def test_an_executed_request_counts_against_the_requesters_quota(
    make_gateway: GatewayFactory,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0")
    with make_gateway(**QUOTA) as gw:
        request_id = open_request(gw, "1.0.0")
        approve(gw, request_id)
        execute(gw, request_id)
        assert status_of(codeartifact, "1.0.0") is None
        with stub_for(gw, principal="alice") as stub:
            second = pb.DeletePackageVersionsRequest(**PROD, versions=["1.1.0"], justification="x")
            over = attempt(lambda: stub.DeletePackageVersions(second, timeout=10))
    assert "Published" == status_of(codeartifact, "1.1.0")
    assert isinstance(over, RichError)
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED") == (over.code, over.reason)


# --- tampering with who asked -------------------------------------------------------------------


def test_a_requester_edited_in_the_store_is_caught(
    gateway: Gateway,
    codeartifact: Any,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    path = gateway.settings.audit.store.removeprefix("sqlite:")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE deletion_requests SET requester = 'mallory', requester_person = 'mallory' "
            "WHERE request_id = ?",
            (request_id,),
        )

    self_vote = attempt(lambda: approve(gateway, request_id, "alice"))

    assert isinstance(self_vote, RichError)
    assert (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED") == (self_vote.code, self_vote.reason)
