"""Reading the audit record: listing and getting events, for principals policy lets read it.

Authorization comes first (the Cedar action ``ReadAuditLog``), so a principal who may not read
the record learns nothing from it, not even which of its fields were malformed: the query is
built (and validated) by the caller's `query` callable only once the reader is authorized.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pkggov_gateway.domain.audit import AuditEventRecord, AuditPage, AuditQuery
from pkggov_gateway.domain.errors import AuditEventNotFoundError, DeniedVersion, PolicyDeniedError
from pkggov_gateway.domain.identity import Principal
from pkggov_gateway.domain.recovery import PurgePage, PurgeQuery
from pkggov_gateway.ports import AuditStore, PolicyEngine, PurgeStore

__all__ = ["AuditReads"]


class AuditReads:
    """The audit record's read use cases."""

    def __init__(
        self,
        store: AuditStore,
        policy: PolicyEngine,
        *,
        purges: PurgeStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._purges = purges
        self._policy = policy
        self._clock = clock

    def list_events(self, principal: Principal, query: Callable[[], AuditQuery]) -> AuditPage:
        """One page of events matching `query()`, newest first."""
        self._authorize(principal)
        return self._store.list_events(query())

    def event(self, principal: Principal, event_id: Callable[[], str]) -> AuditEventRecord:
        """The event named by `event_id()`; AuditEventNotFoundError when there is none."""
        self._authorize(principal)
        wanted = event_id()
        found = self._store.event(wanted)
        if found is None:
            raise AuditEventNotFoundError(wanted)
        return found

    def pending_purges(self, principal: Principal, query: Callable[[], PurgeQuery]) -> PurgePage:
        """One page of pending purges matching `query()`, soonest due first (readable by the
        principals that may read the audit record)."""
        self._authorize(principal)
        wanted = query()
        if self._purges is None:
            return PurgePage(())
        return self._purges.pending_purges(wanted)

    def _authorize(self, principal: Principal) -> None:
        decision = self._policy.current().authorize_read(principal, self._clock())
        if decision.allowed:
            return
        reason = "; ".join(decision.errors) or (
            f"denied by {', '.join(decision.policy_ids)}"
            if decision.policy_ids
            else "no policy permits ReadAuditLog"
        )
        raise PolicyDeniedError(
            [DeniedVersion("audit", decision.policy_ids, reason)],
            1,
            message=f"policy does not let {principal.id} read the audit record: {reason}",
        )
