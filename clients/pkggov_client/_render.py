"""The `pkggov delete` and `pkggov restore` results as text: a table of what was deleted,
archived or restored (`render_table`) and a dry run's plan (`render_plan`), each closing with a
summary; the request's versions come first. Every cell is `printable`: a version or message
cannot reach the terminal as a control."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from pkggov_client._model import DeleteResult, RestoreResult, VersionDecision, ordered_keys
from pkggov_client._text import printable

__all__ = [
    "columns",
    "render_plan",
    "render_table",
    "render_time",
    "restore_command_line",
    "restore_hint",
]


def render_time(moment: datetime | None) -> str:
    """A time in UTC to the second, as "2027-01-05T10:00:00Z"; "-" for None."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str) -> str:
    """`text` on one line, its runs of whitespace as one space, and `printable`."""
    return printable(" ".join(text.split()))


def _outcome_label(outcome: str) -> str:
    """Return an outcome in words: "WOULD_DELETE" becomes "would delete"."""
    return outcome.lower().replace("_", " ")


def _decision_detail(decision: VersionDecision) -> str:
    """The POLICIES / MESSAGE cell: the message, preceded by any policy id it does not name,
    and for a version that would be archived, when it would be purged."""
    message = _one_line(decision.message)
    unnamed = [printable(p) for p in decision.policy_ids if printable(p) not in message]
    parts = [", ".join(unnamed)] if unnamed else []
    if message:
        parts.append(message)
    detail = ": ".join(parts)
    if decision.purge_time is not None:
        purge = f"would be purged at {render_time(decision.purge_time)} unless restored"
        detail = f"{detail}; {purge}" if detail else purge
    return detail or "-"


_PLAN_SUMMARY_ORDER = (
    "WOULD_ARCHIVE",
    "NEEDS_APPROVAL",
    "DENIED",
    "NOT_FOUND",
    "STATUS_MISMATCH",
    "NOT_PENDING_PURGE",
    "REVISION_MISMATCH",
)
"""The outcomes other than the leading one (WOULD_DELETE, WOULD_RESTORE) that a plan's
summary counts, in this order."""
_SUMMARY_LABELS = {
    "WOULD_DELETE": "would be deleted",
    "WOULD_ARCHIVE": "would be archived",
    "WOULD_RESTORE": "would be restored",
    "NEEDS_APPROVAL": "need approval",
}


def render_plan(result: DeleteResult | RestoreResult, *, order: Iterable[str] = ()) -> str:
    """Render a dry run's plan, one row per version, and a closing summary such as
    "dry run: 2 would be deleted, 1 denied; nothing was deleted" (for a restore, "dry run:
    1 would be restored, 1 not pending purge; nothing was restored").

    Versions listed in `order` (the request's order) come first, then any others sorted.
    """
    restore = isinstance(result, RestoreResult)
    rows = [("VERSION", "DECISION", "STATUS", "LATEST", "POLICIES / MESSAGE")]
    for version in ordered_keys(result.decisions, order):
        decision = result.decisions[version]
        rows.append(
            (
                printable(version),
                printable(_outcome_label(decision.outcome)),
                "-" if decision.status is None else decision.status.value,
                "yes" if decision.is_latest else "no",
                _decision_detail(decision),
            )
        )
    counts = Counter(decision.outcome for decision in result.decisions.values())
    lead = "WOULD_RESTORE" if restore else "WOULD_DELETE"
    summary = []
    if counts[lead] or not counts["WOULD_ARCHIVE"]:  # "2 would be archived" alone, not "0 ..."
        summary.append(f"{counts[lead]} {_SUMMARY_LABELS[lead]}")
    summary.extend(
        f"{counts[outcome]} {_SUMMARY_LABELS.get(outcome, _outcome_label(outcome))}"
        for outcome in _PLAN_SUMMARY_ORDER
        if counts[outcome]
    )
    known = {lead, *_PLAN_SUMMARY_ORDER}
    other = sum(count for outcome, count in counts.items() if outcome not in known)
    if other:
        summary.append(f"{other} other")
    if restore:
        done = "restored"
    else:
        done = "deleted or archived" if counts["WOULD_ARCHIVE"] else "deleted"
    return "\n".join([*_columns(rows), f"dry run: {', '.join(summary)}; nothing was {done}"])


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay rows out in columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay rows of cells (each already `printable`) out in columns two spaces apart; the last
    column is not padded."""
    return _columns(rows)


def render_table(result: DeleteResult | RestoreResult, *, order: Iterable[str] = ()) -> str:
    """Render one row per version and a closing summary such as "2 deleted, 1 failed".

    A delete's version archived under a recovery window is "archived", with the time it will
    be purged unless restored ("1 deleted, 1 archived, 0 failed"); a restore's versions are
    "restored" ("1 restored, 0 failed"). Versions listed in `order` (the request's order)
    come first, then any others sorted.
    """
    restore = isinstance(result, RestoreResult)
    rows = [("VERSION", "RESULT", "STATUS/ERROR", "REVISION/MESSAGE")]
    archived = 0
    for version in ordered_keys([*result.successful, *result.failed], order):
        if version in result.successful:
            done = result.successful[version]
            status = "-" if done.status is None else done.status.value
            detail = printable(done.revision)
            if restore:
                label = "restored"
            elif done.archived:
                label = "archived"
                archived += 1
                if done.purge_time is not None:
                    purge = f"purged at {render_time(done.purge_time)} unless restored"
                    detail = f"{detail}; {purge}" if detail else purge
            else:
                label = "deleted"
            rows.append((printable(version), label, status, detail))
        else:
            failed = result.failed[version]
            rows.append(
                (
                    printable(version),
                    "failed",
                    printable(failed.error_code),
                    _one_line(failed.message),
                )
            )
    if restore:
        summary = f"{len(result.successful)} restored, {len(result.failed)} failed"
    elif archived:
        deleted = len(result.successful) - archived
        summary = f"{deleted} deleted, {archived} archived, {len(result.failed)} failed"
    else:
        summary = f"{len(result.successful)} deleted, {len(result.failed)} failed"
    return "\n".join([*_columns(rows), summary])


MAX_LISTED_IN_HINT = 20
"""Past this many archived versions the restore hint names none (it says how instead)."""


def restore_command_line(
    *,
    domain: str,
    domain_owner: str | None,
    repository: str,
    format: str,
    namespace: str | None,
    package: str,
    versions: Sequence[str],
) -> str:
    """The `pkggov restore` command line that restores `versions` of one package, quoted for a
    POSIX shell and `printable`. Connection options are left out (they may hold secrets' paths
    or another caller's name); past `MAX_LISTED_IN_HINT` versions it ends in "VERSION..."
    rather than list them all."""
    words = ["pkggov", "restore", "--domain", domain]
    if domain_owner:
        words += ["--domain-owner", domain_owner]
    words += ["--repository", repository, "--format", format]
    if namespace:
        words += ["--namespace", namespace]
    words += ["--package", package]
    quoted = [shlex.quote(printable(word)) for word in words]
    if len(versions) > MAX_LISTED_IN_HINT:
        quoted.append("VERSION...")
    else:
        quoted.extend(shlex.quote(printable(version)) for version in versions)
    return " ".join(quoted)


def restore_hint(
    result: DeleteResult,
    *,
    domain: str,
    domain_owner: str | None,
    repository: str,
    format: str,
    namespace: str | None,
    package: str,
) -> str | None:
    """The line that says how to restore what a delete archived, or None when it archived
    nothing."""
    archived = list(result.archived)
    if not archived:
        return None
    many = len(archived) > MAX_LISTED_IN_HINT
    command = restore_command_line(
        domain=domain,
        domain_owner=domain_owner,
        repository=repository,
        format=format,
        namespace=namespace,
        package=package,
        versions=archived,
    )
    return (
        "to restore before the purge (with the same connection options): "
        + command
        + (" (name the versions, or list them in --versions-from FILE)" if many else "")
    )
