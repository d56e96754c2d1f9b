"""The store's schema, as versioned migrations, and the step that brings a database up to it.

This is THE place where durable state is added beside the audit chain (pending purges,
approval requests, cleanup jobs, ...). To add a table:

1. Append a migration with the next version number to `migrations` (after 5 comes 6). Never
   edit, reorder or renumber one that has shipped: a database records the versions it has
   applied and skips them.
2. Write statements that both SQLite and PostgreSQL accept: ``{big}`` for a 64-bit integer,
   TEXT for times (`format_time`) and JSON bodies, ``ON CONFLICT`` rather than dialect
   upserts.
3. Read and write the table in a module of its own beside `queries`, through the dialect
   (``?`` placeholders, rewritten by `Dialect.sql`).

`migrate` runs when a store opens, in one transaction holding the chain's lock, so replicas
starting together apply each migration once; a database newer than this gateway knows stops
it from starting. It also reads (or makes) the deployment's shared secrets.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import structlog

from pkggov_gateway.adapters.sql.queries import fetch
from pkggov_gateway.domain.audit import format_time

if TYPE_CHECKING:
    from pkggov_gateway.adapters.sql.dialects import Dialect

__all__ = ["PAGE_TOKEN_KEY", "Migration", "migrate", "migrations"]

log = structlog.get_logger("pkggov.audit.store")

Migration: TypeAlias = tuple[int, list[str]]
"""A schema version and the statements that bring the previous version to it."""


def migrations(big: str) -> list[Migration]:
    """Versioned schema migrations; `big` is the 64-bit integer type's name."""
    return [
        (
            1,
            [
                f"""CREATE TABLE audit_entries (
                    seq {big} PRIMARY KEY,
                    event_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    recorded_at TEXT NOT NULL,
                    request_id TEXT,
                    principal TEXT,
                    domain TEXT,
                    repository TEXT,
                    format TEXT,
                    namespace TEXT,
                    package TEXT,
                    versions TEXT,
                    decision TEXT,
                    status_code TEXT,
                    versions_planned INTEGER,
                    versions_deleted INTEGER,
                    body TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                )""",
                "CREATE UNIQUE INDEX audit_entries_event_kind ON audit_entries (event_id, kind)",
                "CREATE INDEX audit_entries_request_id ON audit_entries (request_id, principal)",
                "CREATE INDEX audit_entries_principal_time"
                " ON audit_entries (principal, kind, recorded_at)",
                "CREATE INDEX audit_entries_kind_time ON audit_entries (kind, recorded_at)",
                """CREATE TABLE audit_heartbeat (
                    replica TEXT PRIMARY KEY,
                    beat_at TEXT NOT NULL
                )""",
            ],
        ),
        (
            2,
            [
                # Keys shared by the replicas of one deployment (the page-token key), made
                # once by whichever replica migrates first.
                """CREATE TABLE pkggov_secrets (
                    name TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                )""",
            ],
        ),
        (
            3,
            [
                # Pending purges of archived versions (domain.recovery; read and written by
                # `purges`). A row stays after its purge is closed (purged, restored or
                # cancelled). No CHECK on state: the store checks a closure's state before
                # queueing its entry, and a row the table refused would fail the writer's
                # batch (a durable entry's, again and again).
                """CREATE TABLE pending_purges (
                    purge_id TEXT PRIMARY KEY,
                    package_key TEXT NOT NULL,
                    domain TEXT NOT NULL,
                    domain_owner TEXT,
                    repository TEXT NOT NULL,
                    format TEXT NOT NULL,
                    namespace TEXT,
                    package TEXT NOT NULL,
                    version TEXT NOT NULL,
                    revision TEXT NOT NULL,
                    previous_status TEXT NOT NULL,
                    requester TEXT NOT NULL,
                    archive_event_id TEXT NOT NULL,
                    archived_at TEXT NOT NULL,
                    due_at TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT NOT NULL DEFAULT '',
                    next_attempt_at TEXT,
                    lease_owner TEXT,
                    lease_until TEXT,
                    closed_at TEXT,
                    closed_reason TEXT,
                    closed_event_id TEXT
                )""",
                # One pending purge per version; closed rows are history and may repeat.
                "CREATE UNIQUE INDEX pending_purges_version"
                " ON pending_purges (package_key, version) WHERE state = 'pending'",
                # The worker's claim: pending rows by when they are next due.
                "CREATE INDEX pending_purges_claim ON pending_purges"
                " (coalesce(next_attempt_at, due_at), purge_id) WHERE state = 'pending'",
                # The listing (soonest due first, keyset (due_at, purge_id)) and the stats.
                "CREATE INDEX pending_purges_due"
                " ON pending_purges (due_at, purge_id) WHERE state = 'pending'",
            ],
        ),
        (
            4,
            [
                # Deletion requests awaiting approval (domain.approvals; read and written by
                # `requests`). `plan` is the plan body's canonical JSON (what `plan_hash`
                # hashes); the package's columns are the listing's filters. A row stays after
                # it is closed (executed, rejected, cancelled, expired). No CHECK on state and
                # no foreign keys, for the reason given for pending_purges.
                """CREATE TABLE deletion_requests (
                    request_id TEXT PRIMARY KEY,
                    requester TEXT NOT NULL,
                    requester_person TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    expires_at TEXT NOT NULL,
                    state TEXT NOT NULL,
                    domain TEXT NOT NULL,
                    repository TEXT NOT NULL,
                    format TEXT NOT NULL,
                    namespace TEXT,
                    package TEXT NOT NULL,
                    plan TEXT NOT NULL,
                    plan_hash TEXT NOT NULL,
                    required_by TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    closed_reason TEXT,
                    closed_event_id TEXT,
                    closed_at TEXT
                )""",
                # The listing, newest first (keyset (created_at, request_id), read backwards),
                # unfiltered and by each filter that narrows it most.
                "CREATE INDEX deletion_requests_created"
                " ON deletion_requests (created_at, request_id)",
                "CREATE INDEX deletion_requests_state"
                " ON deletion_requests (state, created_at, request_id)",
                "CREATE INDEX deletion_requests_requester"
                " ON deletion_requests (requester, created_at, request_id)",
                "CREATE INDEX deletion_requests_package ON deletion_requests"
                " (domain, repository, package, created_at, request_id)",
                # The expiry pass: pending requests by when they expire.
                "CREATE INDEX deletion_requests_expiry"
                " ON deletion_requests (expires_at, request_id) WHERE state = 'pending'",
                # One vote per person and request; `seq` is the chain position of the entry
                # that cast it (the order cast).
                f"""CREATE TABLE deletion_request_votes (
                    request_id TEXT NOT NULL,
                    person TEXT NOT NULL,
                    approver TEXT NOT NULL,
                    approve INTEGER NOT NULL,
                    groups TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    voted_at TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    seq {big} NOT NULL,
                    UNIQUE (request_id, person)
                )""",
                # Notifications about requests, delivered by a leased worker in any replica;
                # a delivered row stays (delivered_at set).
                f"""CREATE TABLE webhook_outbox (
                    event_id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    delivered_at TEXT,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT NOT NULL DEFAULT '',
                    next_attempt_at TEXT NOT NULL,
                    lease_owner TEXT,
                    lease_until TEXT,
                    seq {big} NOT NULL
                )""",
                # The worker's claim: undelivered rows by when they are next due.
                "CREATE INDEX webhook_outbox_due ON webhook_outbox"
                " (next_attempt_at, event_id) WHERE delivered_at IS NULL",
            ],
        ),
        (
            5,
            [
                # Cleanup plans (domain.cleanup; read and written by `cleanup`), written once
                # and never changed: the header's canonical JSON (`CleanupPlan.header_json`)
                # beside the plan_hash over it and the packages; the other columns are the
                # header's, for lookups. No foreign keys, for the reason given for
                # pending_purges.
                """CREATE TABLE cleanup_plans (
                    plan_id TEXT PRIMARY KEY,
                    requester TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    expires_at TEXT NOT NULL,
                    plan_hash TEXT NOT NULL,
                    header TEXT NOT NULL
                )""",
                # A requester's plans that have not expired (the limit of open plans), and
                # the expired ones to prune.
                "CREATE INDEX cleanup_plans_requester ON cleanup_plans (requester, expires_at)",
                "CREATE INDEX cleanup_plans_expiry ON cleanup_plans (expires_at)",
                # A plan's packages in plan order (seq 0, 1, ...), each its canonical JSON
                # (`PackagePlan.to_json`).
                """CREATE TABLE cleanup_plan_packages (
                    plan_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    package TEXT NOT NULL,
                    PRIMARY KEY (plan_id, seq)
                )""",
                # Jobs applying plans, leased to one replica at a time; a finished job's row
                # stays (state succeeded, cancelled or failed). `requester` and `counts` are
                # JSON; `cancel_requested` is 0 or 1.
                f"""CREATE TABLE cleanup_jobs (
                    job_id TEXT PRIMARY KEY,
                    plan_id TEXT NOT NULL,
                    plan_hash TEXT NOT NULL,
                    requester TEXT NOT NULL,
                    state TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    packages_total INTEGER NOT NULL,
                    versions_planned {big} NOT NULL,
                    next_seq INTEGER NOT NULL DEFAULT 0,
                    packages_done INTEGER NOT NULL DEFAULT 0,
                    counts TEXT NOT NULL,
                    last_error TEXT NOT NULL DEFAULT '',
                    cancel_requested INTEGER NOT NULL DEFAULT 0,
                    cancel_reason TEXT NOT NULL DEFAULT '',
                    attempts INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_until TEXT
                )""",
                # The runners' claim: unfinished jobs, oldest first.
                "CREATE INDEX cleanup_jobs_claim ON cleanup_jobs (created_at, job_id)"
                " WHERE state IN ('queued', 'running')",
                # A job's package results (`PackageResult.to_json`), by the package's seq.
                """CREATE TABLE cleanup_job_results (
                    job_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    result TEXT NOT NULL,
                    PRIMARY KEY (job_id, seq)
                )""",
            ],
        ),
    ]


PAGE_TOKEN_KEY = "page_token_key"  # noqa: S105 - the name of a row, not a secret
"""The pkggov_secrets row holding the deployment's page-token signing key (hex)."""


def migrate(dialect: Dialect) -> bytes:
    """Apply the migrations `dialect`'s database lacks; return the page-token key.

    Raises RuntimeError when the database is newer than this gateway, or the database's own
    error."""
    conn = dialect.connect()
    try:
        dialect.begin_locked(conn)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pkggov_schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            rows = fetch(dialect, conn, "SELECT version FROM pkggov_schema_migrations", ())
            applied = {int(row[0]) for row in rows}
            known = dialect.migrations()
            newest = max(version for version, _ in known)
            if applied and max(applied) > newest:
                raise RuntimeError(
                    f"the audit schema is at version {max(applied)}, newer than this "
                    f"gateway knows ({newest}): upgrade the gateway"
                )
            for version, statements in known:
                if version in applied:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    dialect.sql(
                        "INSERT INTO pkggov_schema_migrations (version, applied_at) VALUES (?, ?)"
                    ),
                    (version, format_time(datetime.now(UTC))),
                )
                log.info("audit.migrated", store=dialect.description, version=version)
            page_token_key = _secret(dialect, conn, PAGE_TOKEN_KEY)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return page_token_key


def _secret(dialect: Dialect, conn: Any, name: str) -> bytes:
    """The deployment's secret `name`, made (32 random bytes) if this store has none."""
    conn.execute(
        dialect.sql(
            "INSERT INTO pkggov_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
        ),
        (name, secrets.token_hex(32)),
    )
    rows = fetch(dialect, conn, "SELECT value FROM pkggov_secrets WHERE name = ?", (name,))
    return bytes.fromhex(str(rows[0][0]))
