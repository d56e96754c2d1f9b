"""Four eyes end to end, over real gRPC, against the emulator and a real SQLite store, with the
shipped policy: deleting for good in prod-* (purge_now under its window) needs one approval by
a release-admin other than the requester.

alice and dave are release-admins; ci-bot is in ci; `spiffe://pkggov.test/ops/alice` is
alice's certificate identity, the same person (entities.yaml).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_gateway.adapters.webhooks import verify_signature
from pkggov_gateway.domain.approvals import plan_digest
from pkggov_gateway.runtime import Gateway
from tests.e2e.harness import (
    GatewayFactory,
    RichError,
    approval_stub_for,
    rich_error,
    stub_for,
)
from tests.e2e.test_recoverable_delete import Clock, codeartifact, publish, status_of  # noqa: F401
from tests.integration.test_webhooks import Receiver

HOUR = timedelta(hours=1)
PROD: dict[str, Any] = {
    "domain": "demo",
    "repository": "prod-release",
    "format": pb.PACKAGE_FORMAT_GENERIC,
    "namespace": "acme",
    "package": "tool",
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(make_gateway: GatewayFactory, clock: Clock) -> Iterator[Gateway]:
    """The shipped policy, prod-* with a 30-day window, on the test clock."""
    with make_gateway(
        clock=clock,
        policy={},
        recovery={"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600.0},
        approvals={"sweep_interval_seconds": 3600.0},
    ) as gw:
        yield gw


def approvals(gateway: Gateway, principal: str) -> Any:
    """An ApprovalService caller as `principal`: each call on a fresh channel."""
    return _Caller(gateway, principal)


class _Caller:
    def __init__(self, gateway: Gateway, principal: str) -> None:
        self.gateway = gateway
        self.principal = principal

    def __getattr__(self, name: str) -> Any:
        def call(request: Any) -> Any:
            with approval_stub_for(self.gateway, principal=self.principal) as stub:
                return getattr(stub, name)(request, timeout=10)

        return call


def failure(call: Any) -> RichError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return rich_error(raised.value)


def purge_now(gateway: Gateway, *versions: str, principal: str = "alice") -> RichError:
    with stub_for(gateway, principal=principal) as stub:
        request = pb.DeletePackageVersionsRequest(
            **PROD, versions=list(versions), justification="leaked secret", purge_now=True
        )
        return failure(lambda: stub.DeletePackageVersions(request, timeout=10))


def open_request(gateway: Gateway, *versions: str) -> str:
    error = purge_now(gateway, *versions)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "APPROVAL_REQUIRED")
    return error.metadata["deletion_request_id"]


def test_the_whole_story_of_a_request(gateway: Gateway, codeartifact: Any) -> None:  # noqa: F811
    publish(codeartifact, "1.0.0", "1.1.0")
    error = purge_now(gateway, "1.0.0")
    request_id = error.metadata["deletion_request_id"]
    assert len(error.metadata["plan_hash"]) == 64
    assert status_of(codeartifact, "1.0.0") == "Published"  # nothing deleted

    shown = approvals(gateway, "alice").GetDeletionRequest(
        pb.GetDeletionRequestRequest(id=request_id)
    )
    request = shown.deletion_request
    assert request.state == pb.DELETION_REQUEST_STATE_PENDING
    assert [v.version for v in request.versions] == ["1.0.0"]
    assert request.plan_hash == error.metadata["plan_hash"]
    assert request.required_by == ["prod-irreversible-needs-release-admin-approval"]

    # Executing before the quorum: still needs approval, nothing deleted.
    early = failure(
        lambda: approvals(gateway, "alice").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert early.reason == "APPROVAL_REQUIRED"

    # The requester, in either identity form, never approves.
    for alice in ("alice", "spiffe://pkggov.test/ops/alice"):
        self_vote = failure(
            lambda alice=alice: approvals(gateway, alice).ApproveDeletionRequest(
                pb.ApproveDeletionRequestRequest(id=request_id, reason="mine")
            )
        )
        assert (self_vote.code, self_vote.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SELF_APPROVAL",
        )
    # A principal the policy does not let approve.
    ci = failure(
        lambda: approvals(gateway, "ci-bot").ApproveDeletionRequest(
            pb.ApproveDeletionRequestRequest(id=request_id, reason="lgtm")
        )
    )
    assert (ci.code, ci.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    # A vote needs a reason.
    bare = failure(
        lambda: approvals(gateway, "dave").ApproveDeletionRequest(
            pb.ApproveDeletionRequestRequest(id=request_id)
        )
    )
    assert bare.code is grpc.StatusCode.INVALID_ARGUMENT

    voted = approvals(gateway, "dave").ApproveDeletionRequest(
        pb.ApproveDeletionRequestRequest(id=request_id, reason="confirmed the leak")
    )
    assert voted.deletion_request.approvals == 1
    twice = failure(
        lambda: approvals(gateway, "dave").ApproveDeletionRequest(
            pb.ApproveDeletionRequestRequest(id=request_id, reason="again")
        )
    )
    assert (twice.code, twice.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_VOTED")

    not_mine = failure(
        lambda: approvals(gateway, "dave").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert not_mine.reason == "NOT_REQUESTER"

    done = approvals(gateway, "alice").ExecuteDeletionRequest(
        pb.ExecuteDeletionRequestRequest(id=request_id)
    )
    assert done.result.successful_versions["1.0.0"].status == pb.PACKAGE_VERSION_STATUS_DELETED
    assert done.deletion_request.state == pb.DELETION_REQUEST_STATE_EXECUTED
    assert status_of(codeartifact, "1.0.0") is None
    again = failure(
        lambda: approvals(gateway, "alice").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert (again.code, again.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_NOT_PENDING",
    )

    # Every step is in the audit record, linked by the request id.
    final = (
        approvals(gateway, "carol")
        .GetDeletionRequest(pb.GetDeletionRequestRequest(id=request_id))
        .deletion_request
    )
    assert [(v.approver, v.approve, v.counts) for v in final.votes] == [("dave", True, True)]
    assert final.closed_audit_event_id
    assert final.audit_event_id == error.metadata["audit_event_id"]


def test_plan_changed_after_approval_deletes_nothing(
    gateway: Gateway,
    codeartifact: Any,  # noqa: F811
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    approvals(gateway, "dave").ApproveDeletionRequest(
        pb.ApproveDeletionRequestRequest(id=request_id, reason="ok")
    )
    publish(codeartifact, "1.2.0")  # a new latest version, one more version
    changed = failure(
        lambda: approvals(gateway, "alice").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert (changed.code, changed.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLAN_CHANGED")
    assert "latest version is 1.2.0" in changed.message
    assert status_of(codeartifact, "1.0.0") == "Published"


def test_expired_rejected_and_cancelled_requests_never_run(
    gateway: Gateway,
    codeartifact: Any,  # noqa: F811
    clock: Clock,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0", "1.2.0", "1.3.0")
    expiring = open_request(gateway, "1.0.0")
    rejected = open_request(gateway, "1.1.0")
    cancelled = open_request(gateway, "1.2.0")

    bob = failure(
        lambda: approvals(gateway, "dave").CancelDeletionRequest(
            pb.CancelDeletionRequestRequest(id=cancelled)
        )
    )
    assert bob.reason == "NOT_REQUESTER"
    approvals(gateway, "alice").CancelDeletionRequest(
        pb.CancelDeletionRequestRequest(id=cancelled, reason="wrong version")
    )
    approvals(gateway, "dave").RejectDeletionRequest(
        pb.RejectDeletionRequestRequest(id=rejected, reason="not leaked")
    )
    clock.advance(72 * HOUR)
    assert gateway.approvals is not None
    assert gateway.approvals.expire_due() == 1
    for request_id, state in (
        (expiring, "REQUEST_EXPIRED"),
        (rejected, "REQUEST_NOT_PENDING"),
        (cancelled, "REQUEST_NOT_PENDING"),
    ):
        vote = failure(
            lambda request_id=request_id: approvals(gateway, "dave").ApproveDeletionRequest(
                pb.ApproveDeletionRequestRequest(id=request_id, reason="late")
            )
        )
        assert vote.reason == state
        run = failure(
            lambda request_id=request_id: approvals(gateway, "alice").ExecuteDeletionRequest(
                pb.ExecuteDeletionRequestRequest(id=request_id)
            )
        )
        assert run.reason == state
    listed = approvals(gateway, "carol").ListDeletionRequests(pb.ListDeletionRequestsRequest())
    states = {r.id: r.state for r in listed.deletion_requests}
    assert states == {
        expiring: pb.DELETION_REQUEST_STATE_EXPIRED,
        rejected: pb.DELETION_REQUEST_STATE_REJECTED,
        cancelled: pb.DELETION_REQUEST_STATE_CANCELLED,
    }
    assert all(status_of(codeartifact, v) == "Published" for v in ("1.0.0", "1.1.0", "1.2.0"))


def test_a_request_past_its_expiry_is_refused_before_the_sweep(
    gateway: Gateway,
    codeartifact: Any,  # noqa: F811
    clock: Clock,
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    clock.advance(72 * HOUR)
    late = failure(
        lambda: approvals(gateway, "dave").ApproveDeletionRequest(
            pb.ApproveDeletionRequestRequest(id=request_id, reason="late")
        )
    )
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_EXPIRED")


def test_a_tampered_plan_is_caught(gateway: Gateway, codeartifact: Any) -> None:  # noqa: F811
    """The stored plan edited in the database (its hash too): the hash recorded in the audit
    chain at creation no longer matches, and nothing is approved or run."""
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    approvals(gateway, "dave").ApproveDeletionRequest(
        pb.ApproveDeletionRequestRequest(id=request_id, reason="ok")
    )
    path = gateway.settings.audit.store.removeprefix("sqlite:")
    with sqlite3.connect(path) as db:
        (plan,) = db.execute(
            "SELECT plan FROM deletion_requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        body = json.loads(plan)
        body["versions"][0]["version"] = "1.1.0"
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        db.execute(
            "UPDATE deletion_requests SET plan = ?, plan_hash = ? WHERE request_id = ?",
            (text, plan_digest(body), request_id),
        )
    tampered = failure(
        lambda: approvals(gateway, "alice").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert (tampered.code, tampered.reason) == (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED")
    assert status_of(codeartifact, "1.1.0") == "Published"


@pytest.mark.parametrize("bad", ["", "nope", "12345678-1234-1234-1234-1234567890ab"])
def test_bad_and_unknown_request_ids(gateway: Gateway, bad: str) -> None:
    error = failure(
        lambda: approvals(gateway, "carol").GetDeletionRequest(pb.GetDeletionRequestRequest(id=bad))
    )
    if bad.count("-") == 4:
        assert (error.code, error.reason) == (
            grpc.StatusCode.NOT_FOUND,
            "DELETION_REQUEST_NOT_FOUND",
        )
    else:
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.details["BadRequest"].field_violations] == ["id"]  # type: ignore[attr-defined]


def test_a_principal_in_no_group_may_not_read_requests(
    gateway: Gateway,
    codeartifact: Any,  # noqa: F811
) -> None:
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    denied = failure(
        lambda: approvals(gateway, "bob").GetDeletionRequest(
            pb.GetDeletionRequestRequest(id=request_id)
        )
    )
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")


def test_approvers_hear_about_it(
    make_gateway: GatewayFactory,
    clock: Clock,
    codeartifact: Any,  # noqa: F811
) -> None:
    """With webhooks on, each step is POSTed to a local receiver, signed with the secret;
    delivery happens after the call, from the outbox (the call never waits for it)."""
    secret = "s" * 40
    receiver = Receiver()
    try:
        with make_gateway(
            clock=clock,
            policy={},
            recovery={"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600.0},
            approvals={"sweep_interval_seconds": 3600.0},
            webhooks={"url": receiver.url(), "secret": secret, "interval_seconds": 3600.0},
        ) as gateway:
            publish(codeartifact, "1.0.0", "1.1.0")
            request_id = open_request(gateway, "1.0.0")
            approvals(gateway, "dave").ApproveDeletionRequest(
                pb.ApproveDeletionRequestRequest(id=request_id, reason="ok")
            )
            approvals(gateway, "alice").ExecuteDeletionRequest(
                pb.ExecuteDeletionRequestRequest(id=request_id)
            )
            assert gateway.webhooks is not None
            gateway.webhooks.run_once()
    finally:
        receiver.close()
    kinds = [r.headers["x-pkggov-event"] for r in receiver.requests]
    assert kinds == ["created", "approved", "executed"]
    for received in receiver.requests:
        assert verify_signature(
            secret.encode(),
            received.headers["x-pkggov-timestamp"],
            received.body,
            received.headers["x-pkggov-signature"],
            now=int(received.headers["x-pkggov-timestamp"]),
        )
        assert json.loads(received.body)["deletion_request_id"] == request_id


def test_auto_execute_runs_a_request_once_approved(
    make_gateway: GatewayFactory,
    clock: Clock,
    codeartifact: Any,  # noqa: F811
) -> None:
    """approvals.auto_execute: the sweep runs a request for its requester once its approvals
    satisfy policy (not before), as the requester's deletion approved by the approvers."""
    with make_gateway(
        clock=clock,
        policy={},
        recovery={"windows": {"prod-*": 30.0}, "worker_interval_seconds": 3600.0},
        approvals={"sweep_interval_seconds": 3600.0, "auto_execute": True},
    ) as gateway:
        desk = gateway.approvals
        assert desk is not None
        publish(codeartifact, "1.0.0", "1.1.0")
        request_id = open_request(gateway, "1.0.0")
        assert desk.execute_approved() == 0  # no approval yet: not even tried
        approvals(gateway, "dave").ApproveDeletionRequest(
            pb.ApproveDeletionRequestRequest(id=request_id, reason="ok")
        )
        desk.sweep()
        assert status_of(codeartifact, "1.0.0") is None
        done = (
            approvals(gateway, "carol")
            .GetDeletionRequest(pb.GetDeletionRequestRequest(id=request_id))
            .deletion_request
        )
        assert done.state == pb.DELETION_REQUEST_STATE_EXECUTED
        event = gateway.audit_store.event(done.closed_audit_event_id)
        assert event is not None
        first = event.entries[0].body
        assert (first["principal"]["id"], first["rpc"]["method"]) == (
            "alice",
            "/pkggov.internal.Approvals/ExecuteDeletionRequest",
        )
        assert desk.execute_approved() == 0  # executed: nothing left to run


def test_a_vote_written_into_the_database_does_not_count(
    gateway: Gateway,
    codeartifact: Any,  # noqa: F811
) -> None:
    """A vote row no audit event recorded (someone with write access to the database made
    it up) is caught: the request is neither approved nor run."""
    publish(codeartifact, "1.0.0", "1.1.0")
    request_id = open_request(gateway, "1.0.0")
    path = gateway.settings.audit.store.removeprefix("sqlite:")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO deletion_request_votes (request_id, person, approver, approve, groups, "
            "reason, voted_at, event_id, seq) VALUES (?, 'mallory', 'mallory', 1, "
            "'[\"release-admins\"]', 'trust me', '2026-12-06T12:00:00.000000Z', ?, 1)",
            (request_id, "00000000-0000-4000-8000-000000000000"),
        )
    tampered = failure(
        lambda: approvals(gateway, "alice").ExecuteDeletionRequest(
            pb.ExecuteDeletionRequestRequest(id=request_id)
        )
    )
    assert (tampered.code, tampered.reason) == (grpc.StatusCode.DATA_LOSS, "PLAN_TAMPERED")
    assert "vote of mallory" in tampered.message
    assert status_of(codeartifact, "1.0.0") == "Published"
