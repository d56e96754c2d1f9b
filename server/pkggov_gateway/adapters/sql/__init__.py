"""The gateway's durable state on SQL: SQLite (one replica) and PostgreSQL (a fleet), one schema.

Today that state is the audit chain (the AuditStore port), its replicas' heartbeats, the
deployment's shared secrets, the pending purges of archived versions (the PurgeStore port),
and the deletion requests awaiting approval with their votes (the RequestStore port) and
notifications about them (the WebhookOutbox port); new durable state is added beside them as
a new migration.

- `dialects`: what differs between the two databases (connections, placeholders, the chain
  lock, durability settings), and `sqlite_path`, which tells a SQLite URL from a PostgreSQL one;
- `migrations`: the versioned schema and the step that applies it when a store opens: the
  place to add a table;
- `queries`: the queries that the reads and the writer's guards share;
- `purges`: the pending-purge table: the effects the writer applies with an entry, the
  worker's lease (claim, release) and the reads;
- `requests`: the deletion-request, vote and webhook-outbox tables: the effects the writer
  applies with an entry, the guard it checks, the reads, and the notifier's lease;
- `writer`: the group-commit writer thread, the only code that appends to the chain (and
  schedules or closes a purge, or creates, votes on or moves a deletion request, with the
  entry that explains it);
- `store`: `SqlAuditStore`, the port's reads and writes composed of the above, and
  `open_audit_store`, which opens the store a URL names.
"""

from __future__ import annotations

from pkggov_gateway.adapters.sql.dialects import (
    Dialect,
    PostgresDialect,
    SqliteDialect,
    sqlite_path,
)
from pkggov_gateway.adapters.sql.store import SqlAuditStore, open_audit_store

__all__ = [
    "Dialect",
    "PostgresDialect",
    "SqlAuditStore",
    "SqliteDialect",
    "open_audit_store",
    "sqlite_path",
]
