"""The `pkggov delete` result as text: a table of what was deleted (`render_table`) and a dry
run's plan (`render_plan`), each closing with a summary; the request's versions come first.
Every cell is `printable`: a version or message cannot reach the terminal as a control."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from pkggov_client._model import DeleteResult, VersionDecision, ordered_keys
from pkggov_client._text import printable

__all__ = ["render_plan", "render_table"]


def _one_line(text: str) -> str:
    """`text` on one line, its runs of whitespace as one space, and `printable`."""
    return printable(" ".join(text.split()))


def _outcome_label(outcome: str) -> str:
    """Return an outcome in words: "WOULD_DELETE" becomes "would delete"."""
    return outcome.lower().replace("_", " ")


def _decision_detail(decision: VersionDecision) -> str:
    """The POLICIES / MESSAGE cell: the message, preceded by any policy id it does not name."""
    message = _one_line(decision.message)
    unnamed = [printable(p) for p in decision.policy_ids if printable(p) not in message]
    parts = [", ".join(unnamed)] if unnamed else []
    if message:
        parts.append(message)
    return ": ".join(parts) or "-"


_PLAN_SUMMARY_ORDER = ("DENIED", "NOT_FOUND", "STATUS_MISMATCH")
"""The outcomes other than WOULD_DELETE that a plan's summary counts, in this order."""
_KNOWN_OUTCOMES = frozenset({"WOULD_DELETE", *_PLAN_SUMMARY_ORDER})


def render_plan(result: DeleteResult, *, order: Iterable[str] = ()) -> str:
    """Render a dry run's plan, one row per version, and a closing summary such as
    "dry run: 2 would be deleted, 1 denied; nothing was deleted".

    Versions listed in `order` (the request's order) come first, then any others sorted.
    """
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
    summary = [f"{counts['WOULD_DELETE']} would be deleted"]
    summary.extend(
        f"{counts[outcome]} {_outcome_label(outcome)}"
        for outcome in _PLAN_SUMMARY_ORDER
        if counts[outcome]
    )
    other = sum(count for outcome, count in counts.items() if outcome not in _KNOWN_OUTCOMES)
    if other:
        summary.append(f"{other} other")
    return "\n".join([*_columns(rows), f"dry run: {', '.join(summary)}; nothing was deleted"])


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay rows out in columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def render_table(result: DeleteResult, *, order: Iterable[str] = ()) -> str:
    """Render one row per version and a closing summary such as "2 deleted, 1 failed".

    Versions listed in `order` (the request's order) come first, then any others sorted.
    """
    rows = [("VERSION", "RESULT", "STATUS/ERROR", "REVISION/MESSAGE")]
    for version in ordered_keys([*result.successful, *result.failed], order):
        if version in result.successful:
            done = result.successful[version]
            status = "-" if done.status is None else done.status.value
            rows.append((printable(version), "deleted", status, printable(done.revision)))
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
    summary = f"{len(result.successful)} deleted, {len(result.failed)} failed"
    return "\n".join([*_columns(rows), summary])
