"""Cleanup plans and jobs (domain.cleanup) in the store's database: ``cleanup_plans``, their
``cleanup_plan_packages``, ``cleanup_jobs`` and their ``cleanup_job_results``.

A plan row holds the header's canonical JSON (sorted keys, no spaces, ASCII) beside the
``plan_hash`` over it and the packages, and the header's requester id and times in columns of
their own; a package row holds one `PackagePlan.to_json` at its seq (0, 1, ... in plan order).
A plan is read back from that JSON (its times as the header records them, so it hashes as it
did); the store does not check the hash: whoever reads the plan recomputes it (`plan_hash`)
and refuses a plan that no longer matches. A row that does not read back as a plan at all
(changed outside the gateway) raises CleanupPlanTamperedError when parsed (`plan_of`,
`package_of`).

A job row is the job's progress and its lease (``lease_owner``, ``lease_until``); a result
row is one `PackageResult.to_json` at its package's seq. Times are `format_time` text, so
text order is time order; they read back as aware (UTC) datetimes.

Every statement runs on a pooled (autocommit) connection, never under the chain's lock:

- `claim`: ONE statement, as the purge worker's lease (see `purges.claim_due`): PostgreSQL
  picks the job with ``FOR UPDATE SKIP LOCKED`` in a materialized CTE, so replicas claiming
  together lease different jobs and do not wait for each other; SQLite's single ``UPDATE``
  takes the database's write lock when it starts.
- `finish` and `retry`: one ``UPDATE`` each, only while the job is leased to the replica.
- `save_plan`, `record_step` and `cancel`: a short transaction of their own (SQLite: ``BEGIN
  IMMEDIATE``, the write lock at once; PostgreSQL: the job's row locked ``FOR UPDATE``).

The functions that read return raw rows; the store parses them (`plan_of`, `package_of`,
`job_of`, `result_of`) after the connection is back, so that a row that does not parse is not
taken for a database failure. Every text value written to a column of its own is free of NUL
(PostgreSQL's text cannot hold it: U+FFFD instead); JSON columns are ASCII.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pkggov_gateway.adapters.sql.queries import fetch
from pkggov_gateway.domain.audit import format_time, parse_time
from pkggov_gateway.domain.cleanup import (
    FINISHED,
    CleanupJob,
    CleanupPlan,
    CleanupResult,
    JobState,
    PackagePlan,
    PackageResult,
)
from pkggov_gateway.domain.errors import CleanupPlanTamperedError, InvalidRequestError

if TYPE_CHECKING:
    from pkggov_gateway.adapters.sql.dialects import Dialect

__all__ = [
    "add_counts",
    "cancel",
    "claim",
    "create_job",
    "finish",
    "job_of",
    "json_text",
    "open_plans",
    "package_of",
    "packages",
    "plan_jobs",
    "plan_of",
    "plan_rows",
    "prune_plans",
    "read_job",
    "read_plan",
    "record_step",
    "renew",
    "result_of",
    "results",
    "retry",
    "save_plan",
]

_JOB = (
    "job_id, plan_id, plan_hash, requester, state, created_at, updated_at, event_id, "
    "packages_total, versions_planned, next_seq, packages_done, counts, last_error, "
    "cancel_requested, cancel_reason, attempts"
)
"""The columns `job_of` reads, in its order."""

_UNFINISHED = f"('{JobState.QUEUED.value}', '{JobState.RUNNING.value}')"
"""The states a runner may claim a job in (the claim index's predicate)."""

_RUNNING = f"'{JobState.RUNNING.value}'"

_SAVE_PLAN = (
    "INSERT INTO cleanup_plans (plan_id, requester, created_at, expires_at, plan_hash, header) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

_SAVE_PACKAGE = "INSERT INTO cleanup_plan_packages (plan_id, seq, package) VALUES (?, ?, ?)"

_CREATE_JOB = (
    f"INSERT INTO cleanup_jobs ({_JOB}, lease_owner, lease_until) "  # noqa: S608 - fixed names
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) ON CONFLICT DO NOTHING"
)

_CLAIM = (
    f"WITH due AS MATERIALIZED (SELECT job_id FROM cleanup_jobs "  # noqa: S608 - fixed names
    f"WHERE state IN {_UNFINISHED} AND (lease_until IS NULL OR lease_until <= ?) "
    f"ORDER BY created_at, job_id LIMIT 1{{lock}}) "
    f"UPDATE cleanup_jobs SET state = {_RUNNING}, lease_owner = ?, lease_until = ?, "
    f"updated_at = ? WHERE job_id IN (SELECT job_id FROM due) RETURNING {_JOB}"
)
"""`{lock}`: PostgreSQL's row lock (see the module docstring)."""

_LEASED = f"job_id = ? AND state = {_RUNNING} AND lease_owner = ?"
"""The job, while it is leased to a replica."""

_STEP = (
    "UPDATE cleanup_jobs SET counts = ?, next_seq = ?, packages_done = packages_done + 1, "
    "attempts = 0, last_error = '', lease_until = ?, updated_at = ? WHERE job_id = ?"
)

_RESULT = (
    "INSERT INTO cleanup_job_results (job_id, seq, result) VALUES (?, ?, ?) "
    "ON CONFLICT (job_id, seq) DO UPDATE SET result = excluded.result"
)

_RETRY = (
    "UPDATE cleanup_jobs SET attempts = attempts + 1, last_error = ?, lease_owner = NULL, "  # noqa: S608 - fixed names
    f"lease_until = ?, updated_at = ? WHERE {_LEASED}"
)


def _text(value: str) -> str:
    """`value` without NUL (see the module docstring)."""
    return value.replace("\x00", "\ufffd")


def json_text(value: Any) -> str:
    """The canonical JSON of `value` (sorted keys, no spaces, ASCII): what a JSON column
    holds. Raises TypeError or ValueError for a value JSON cannot hold."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _lock(dialect: Dialect) -> str:
    """PostgreSQL's row lock for a select in a transaction (SQLite's is the database's)."""
    return " FOR UPDATE" if dialect.name == "postgresql" else ""


@contextlib.contextmanager
def _transaction(dialect: Dialect, conn: Any) -> Iterator[None]:
    """One transaction on a pooled connection, committed when the block ends (rolled back
    when it raises); SQLite takes the write lock when it begins."""
    conn.execute("BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def add_counts(counts: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """`counts` with `more` added, key by key. Raises ValueError for a key of `more` that is
    not a CleanupResult value."""
    total = {str(key): int(value) for key, value in counts.items()}
    for key, value in more.items():
        name = CleanupResult(key).value
        total[name] = total.get(name, 0) + int(value)
    return total


# --- plans -------------------------------------------------------------------------------------


def plan_rows(plan: CleanupPlan, packages: Sequence[PackagePlan]) -> tuple[str, list[str]]:
    """The JSON a plan is stored as: its header's, and each package's in order. Raises
    TypeError or ValueError for a value JSON cannot hold (before anything is written)."""
    return json_text(plan.header_json()), [json_text(p.to_json()) for p in packages]


def save_plan(
    dialect: Dialect,
    conn: Any,
    plan: CleanupPlan,
    header: str,
    packages: Sequence[str],
    *,
    max_open: int | None = None,
) -> str:
    """Store `plan`'s row with its `header` JSON, and its `packages`' JSON (seq 0, 1, ...),
    in one transaction (see `plan_rows`): "saved"; "exists" when a plan with its id is stored
    already, "limit" when its requester has `max_open` plans that have not expired at its
    creation (counted in the transaction: SQLite's write lock, PostgreSQL's advisory lock on
    the requester, so concurrent plans cannot pass the limit together); nothing written then."""
    with _transaction(dialect, conn):
        if max_open is not None:
            if dialect.name == "postgresql":
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (plan.requester_id,))
            (count,) = fetch(
                dialect,
                conn,
                "SELECT COUNT(*) FROM cleanup_plans WHERE requester = ? AND expires_at > ?",
                (_text(plan.requester_id), format_time(plan.created_at)),
            )[0]
            if int(count) >= max_open:
                return "limit"
        cursor = conn.execute(
            dialect.sql(_SAVE_PLAN),
            (
                _text(plan.plan_id),
                _text(plan.requester_id),
                format_time(plan.created_at),
                format_time(plan.expires_at),
                _text(plan.plan_hash),
                header,
            ),
        )
        if cursor.rowcount != 1:
            return "exists"
        for seq, package in enumerate(packages):
            conn.execute(dialect.sql(_SAVE_PACKAGE), (_text(plan.plan_id), seq, package))
    return "saved"


def open_plans(dialect: Dialect, conn: Any, requester: str, now: datetime) -> int:
    """How many of `requester`'s plans expire after `now`."""
    rows = fetch(
        dialect,
        conn,
        "SELECT COUNT(*) FROM cleanup_plans WHERE requester = ? AND expires_at > ?",
        (_text(requester), format_time(now)),
    )
    return int(rows[0][0])


def prune_plans(dialect: Dialect, conn: Any, expired_before: datetime, limit: int) -> int:
    """Delete up to `limit` plans that expired before `expired_before` and that no unfinished
    job applies, with their packages, in one transaction; how many."""
    with _transaction(dialect, conn):
        rows = fetch(
            dialect,
            conn,
            "SELECT plan_id FROM cleanup_plans p WHERE expires_at < ? AND NOT EXISTS ("  # noqa: S608 - fixed names
            f"SELECT 1 FROM cleanup_jobs j WHERE j.plan_id = p.plan_id AND j.state IN {_UNFINISHED}"
            ") ORDER BY expires_at LIMIT ?",
            (format_time(expired_before), limit),
        )
        for (plan_id,) in rows:
            conn.execute(
                dialect.sql("DELETE FROM cleanup_plan_packages WHERE plan_id = ?"), (plan_id,)
            )
            conn.execute(dialect.sql("DELETE FROM cleanup_plans WHERE plan_id = ?"), (plan_id,))
    return len(rows)


def read_plan(dialect: Dialect, conn: Any, plan_id: str) -> tuple[str, str, str] | None:
    """The plan's id, header JSON and plan_hash as stored (None: no such plan)."""
    rows = fetch(
        dialect,
        conn,
        "SELECT plan_id, header, plan_hash FROM cleanup_plans WHERE plan_id = ?",
        (_text(plan_id),),
    )
    if not rows:
        return None
    found, header, digest = rows[0]
    return str(found), str(header), str(digest)


def plan_of(found: tuple[str, str, str]) -> CleanupPlan:
    """The plan in a row read by `read_plan`. Raises CleanupPlanTamperedError when it does
    not read back as a plan (it was changed outside the gateway)."""
    plan_id, header, digest = found
    try:
        return CleanupPlan.from_header(json.loads(header), digest)
    except (KeyError, TypeError, ValueError, AttributeError, InvalidRequestError) as err:
        raise CleanupPlanTamperedError(
            f"cleanup plan {plan_id} as stored is not a plan header "
            f"({type(err).__name__}: {err}): it was changed outside the gateway",
            plan_id=plan_id,
        ) from err


def packages(
    dialect: Dialect, conn: Any, plan_id: str, after: int, limit: int
) -> list[tuple[int, str]]:
    """Up to `limit` of the plan's package rows whose seq is above `after`, in order: each
    seq with its JSON as stored."""
    if limit <= 0:
        return []
    rows = fetch(
        dialect,
        conn,
        "SELECT seq, package FROM cleanup_plan_packages WHERE plan_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (_text(plan_id), after, limit),
    )
    return [(int(seq), str(package)) for seq, package in rows]


def package_of(plan_id: str, seq: int, text: str) -> PackagePlan:
    """The package in a row read by `packages`. Raises CleanupPlanTamperedError when it does
    not read back as a package's plan (it was changed outside the gateway)."""
    try:
        return PackagePlan.from_json(json.loads(text))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CleanupPlanTamperedError(
            f"package {seq} of cleanup plan {plan_id} as stored is not a package's plan "
            f"({type(err).__name__}: {err}): it was changed outside the gateway",
            plan_id=plan_id,
        ) from err


# --- jobs --------------------------------------------------------------------------------------


def create_job(dialect: Dialect, conn: Any, job: CleanupJob, requester: str) -> bool:
    """Store `job` in state queued, unleased, with its `requester` JSON (`json_text`); False
    (and nothing written) when a job with its id is stored already."""
    cursor = conn.execute(
        dialect.sql(_CREATE_JOB),
        (
            _text(job.job_id),
            _text(job.plan_id),
            _text(job.plan_hash),
            requester,
            JobState.QUEUED.value,
            format_time(job.created_at),
            format_time(job.updated_at),
            _text(job.event_id),
            job.packages_total,
            job.versions_planned,
            job.next_seq,
            job.packages_done,
            json_text(add_counts({}, job.counts)),
            _text(job.last_error),
            1 if job.cancel_requested else 0,
            _text(job.cancel_reason),
            job.attempts,
        ),
    )
    return bool(cursor.rowcount == 1)


def job_of(row: Sequence[Any]) -> CleanupJob:
    """The job in a row of `_JOB`'s columns."""
    (
        job_id,
        plan_id,
        digest,
        requester,
        state,
        created_at,
        updated_at,
        event_id,
        packages_total,
        versions_planned,
        next_seq,
        packages_done,
        counts,
        last_error,
        cancel_requested,
        cancel_reason,
        attempts,
    ) = row
    return CleanupJob(
        job_id=str(job_id),
        plan_id=str(plan_id),
        plan_hash=str(digest),
        requester=json.loads(requester),
        state=JobState(state),
        created_at=parse_time(str(created_at)),
        updated_at=parse_time(str(updated_at)),
        event_id=str(event_id),
        packages_total=int(packages_total),
        versions_planned=int(versions_planned),
        next_seq=int(next_seq),
        packages_done=int(packages_done),
        counts={str(k): int(v) for k, v in json.loads(counts).items()},
        last_error=str(last_error),
        cancel_requested=bool(cancel_requested),
        cancel_reason=str(cancel_reason),
        attempts=int(attempts),
    )


def read_job(dialect: Dialect, conn: Any, job_id: str) -> tuple[Any, ...] | None:
    """The job's row (`_JOB`'s columns; None: no such job)."""
    rows = fetch(
        dialect,
        conn,
        f"SELECT {_JOB} FROM cleanup_jobs WHERE job_id = ?",  # noqa: S608 - fixed names
        (_text(job_id),),
    )
    return rows[0] if rows else None


def plan_jobs(dialect: Dialect, conn: Any, plan_id: str) -> list[tuple[Any, ...]]:
    """The rows of the jobs of `plan_id`, oldest first."""
    return fetch(
        dialect,
        conn,
        f"SELECT {_JOB} FROM cleanup_jobs WHERE plan_id = ? "  # noqa: S608 - fixed names
        "ORDER BY created_at, job_id",
        (_text(plan_id),),
    )


def claim(
    dialect: Dialect, conn: Any, replica: str, *, now: datetime, lease_until: datetime
) -> tuple[Any, ...] | None:
    """Lease the oldest (created_at, then job id) queued or running job not leased past `now`
    to `replica` until `lease_until` and mark it running (one statement; see the module
    docstring): its row, or None when there is none."""
    at = format_time(now)
    lock = " FOR UPDATE SKIP LOCKED" if dialect.name == "postgresql" else ""
    rows = fetch(
        dialect,
        conn,
        _CLAIM.format(lock=lock),
        (at, _text(replica), format_time(lease_until), at),
    )
    return rows[0] if rows else None


def record_step(
    dialect: Dialect,
    conn: Any,
    replica: str,
    job_id: str,
    *,
    seq: int,
    result: str,
    counts: Mapping[str, int],
    now: datetime,
    lease_until: datetime,
) -> tuple[Any, ...] | None:
    """In one transaction, while the job is leased to `replica`: store the `result` JSON of
    its package `seq` (replacing a result stored at that seq), add `counts` to the job's,
    move its next seq past the package (never back), count it done, clear its attempts and
    error, extend the lease to `lease_until`. The job's row as updated, or None (nothing
    written) when it is not leased to `replica`. Raises ValueError, before anything is
    written, for a count that is not of a CleanupResult value."""
    add_counts({}, counts)
    with _transaction(dialect, conn):
        rows = fetch(
            dialect,
            conn,
            f"SELECT counts, next_seq FROM cleanup_jobs WHERE {_LEASED}{_lock(dialect)}",  # noqa: S608 - fixed names
            (_text(job_id), _text(replica)),
        )
        if not rows:
            return None
        stored, next_seq = rows[0]
        conn.execute(
            dialect.sql(_STEP),
            (
                json_text(add_counts(json.loads(stored), counts)),
                max(int(next_seq), seq + 1),
                format_time(lease_until),
                format_time(now),
                _text(job_id),
            ),
        )
        conn.execute(dialect.sql(_RESULT), (_text(job_id), seq, result))
        return read_job(dialect, conn, job_id)


def finish(
    dialect: Dialect,
    conn: Any,
    replica: str,
    job_id: str,
    *,
    state: JobState,
    now: datetime,
    error: str,
) -> None:
    """End a job leased to `replica` in `state` (succeeded, cancelled, failed) and end its
    lease; `error`, when not empty, becomes its last error (nothing when it is not leased to
    `replica`). Raises ValueError for a state that does not end a job."""
    ended = JobState(state)
    if ended not in FINISHED:
        raise ValueError(f"a job does not end in state {ended.value!r}")
    sets = "state = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?"
    params: list[Any] = [ended.value, format_time(now)]
    if error:
        sets += ", last_error = ?"
        params.append(_text(error))
    conn.execute(
        dialect.sql(f"UPDATE cleanup_jobs SET {sets} WHERE {_LEASED}"),  # noqa: S608 - fixed names
        (*params, _text(job_id), _text(replica)),
    )


def renew(dialect: Dialect, conn: Any, replica: str, job_id: str, lease_until: datetime) -> bool:
    """Extend the lease of a job leased to `replica`; whether it was."""
    cursor = conn.execute(
        dialect.sql(f"UPDATE cleanup_jobs SET lease_until = ? WHERE {_LEASED}"),  # noqa: S608 - fixed names
        (format_time(lease_until), _text(job_id), _text(replica)),
    )
    return bool(cursor.rowcount == 1)


def retry(
    dialect: Dialect,
    conn: Any,
    replica: str,
    job_id: str,
    *,
    retry_at: datetime,
    error: str,
    now: datetime,
) -> None:
    """Count a failed step of a job leased to `replica`, record `error`, and end the lease so
    that no replica claims the job before `retry_at` (its ``lease_until``, without an owner);
    nothing when it is not leased to `replica`."""
    conn.execute(
        dialect.sql(_RETRY),
        (_text(error), format_time(retry_at), format_time(now), _text(job_id), _text(replica)),
    )


def cancel(
    dialect: Dialect, conn: Any, job_id: str, reason: str, now: datetime
) -> tuple[Any, ...] | None:
    """In one transaction: a finished job is left as it is; a queued job, or a running one
    that no replica holds (no lease owner, or its lease has expired at `now`), is cancelled
    (cancel requested, `reason` recorded, lease cleared); a running one leased past `now` is
    marked for its runner (cancel requested, `reason` recorded). The job's row as it is then
    (None: no such job)."""
    at = format_time(now)
    with _transaction(dialect, conn):
        rows = fetch(
            dialect,
            conn,
            "SELECT state, lease_owner, lease_until FROM cleanup_jobs "  # noqa: S608 - fixed names
            f"WHERE job_id = ?{_lock(dialect)}",
            (_text(job_id),),
        )
        if not rows:
            return None
        state, owner, until = rows[0]
        if JobState(state) in FINISHED:
            return read_job(dialect, conn, job_id)
        held = (
            JobState(state) is JobState.RUNNING
            and owner is not None
            and until is not None
            and str(until) > at
        )
        if held:
            sql = "UPDATE cleanup_jobs SET cancel_requested = 1, cancel_reason = ?, updated_at = ?"
            params: tuple[Any, ...] = (_text(reason), at)
        else:
            sql = (
                "UPDATE cleanup_jobs SET state = ?, cancel_requested = 1, cancel_reason = ?, "
                "lease_owner = NULL, lease_until = NULL, updated_at = ?"
            )
            params = (JobState.CANCELLED.value, _text(reason), at)
        conn.execute(dialect.sql(f"{sql} WHERE job_id = ?"), (*params, _text(job_id)))
        return read_job(dialect, conn, job_id)


def results(dialect: Dialect, conn: Any, job_id: str, after: int, limit: int) -> list[str]:
    """Up to `limit` of the job's result rows whose seq is above `after`, in order: each
    result's JSON as stored."""
    if limit <= 0:
        return []
    rows = fetch(
        dialect,
        conn,
        "SELECT result FROM cleanup_job_results WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (_text(job_id), after, limit),
    )
    return [str(row[0]) for row in rows]


def result_of(text: str) -> PackageResult:
    """The package result in a row read by `results`."""
    return PackageResult.from_json(json.loads(text))
