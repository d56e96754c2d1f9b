"""Audit reads: authorized before anything else, then listed or got from the store."""

from __future__ import annotations

import pytest

from pkggov_gateway.domain.audit import AuditQuery, NewEntry
from pkggov_gateway.domain.errors import (
    AuditEventNotFoundError,
    FieldViolation,
    InvalidRequestError,
    PolicyDeniedError,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.service.audit_reads import AuditReads
from pkggov_gateway.testing import FakePolicy, InMemoryAuditStore

CAROL = Principal("carol", AuthMethod.DEV, "ipv4:127.0.0.1:1")
BOB = Principal("bob", AuthMethod.DEV, "ipv4:127.0.0.1:2")


def _reads() -> tuple[AuditReads, InMemoryAuditStore]:
    store = InMemoryAuditStore()
    store.append(
        NewEntry(
            {
                "event_id": "e1",
                "kind": "outcome",
                "time": "2026-12-06T00:00:00.000000Z",
                "principal": {"id": "alice"},
            }
        )
    )
    return AuditReads(store, FakePolicy(deny_principals=frozenset({"bob"}))), store


def _invalid() -> AuditQuery:
    raise InvalidRequestError([FieldViolation("page_token", "forged")])


def test_an_auditor_lists_and_gets() -> None:
    reads, _ = _reads()
    assert ["e1"] == [e.event_id for e in reads.list_events(CAROL, AuditQuery).events]
    assert "e1" == reads.event(CAROL, lambda: "e1").event_id


def test_an_unknown_event_is_not_found() -> None:
    reads, _ = _reads()
    with pytest.raises(AuditEventNotFoundError):
        reads.event(CAROL, lambda: "e2")


def test_a_reader_without_permission_learns_nothing_not_even_which_field_is_bad() -> None:
    """Authorization comes before the query is built: bob is denied, not told his token is
    forged."""
    reads, _ = _reads()
    with pytest.raises(PolicyDeniedError, match="does not let bob read"):
        reads.list_events(BOB, _invalid)
    with pytest.raises(PolicyDeniedError):
        reads.event(BOB, lambda: "e1")


def test_an_authorized_reader_gets_the_query_error() -> None:
    reads, _ = _reads()
    with pytest.raises(InvalidRequestError):
        reads.list_events(CAROL, _invalid)
