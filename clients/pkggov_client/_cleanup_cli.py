"""`pkggov cleanup plan | apply | status | cancel | run`: retention through CleanupService.

Each call is authorized by the gateway's policy and audited. ``plan`` asks the gateway to decide
every version of one package (``--package``) or of the repository's packages that the filters
match (``--format``, ``--namespace``, ``--package-pattern``) by a rule, named (``--rule NAME``,
from the gateway's configuration) or inline (``--keep-newest N``, ``--older-than-days N``, ...),
and, for the versions the rule would delete, by policy. It deletes nothing: it prints the plan
(its id and SHA-256, the counts, the warnings) and a table of every version with the clause that
decided it. ``apply PLAN_ID`` starts the durable job that runs the plan in the gateway (only the
plan's requester may), and with ``--wait`` follows it to its end with a progress line on stderr;
``status JOB_ID`` reads a job, ``cancel JOB_ID`` stops it, and ``run`` plans, applies and waits
in one command (for a scheduled job such as a Kubernetes CronJob). ``--report FILE`` writes
every version (kept ones with their clause) as CSV (``.csv``) or JSON (``.json``).

Exit status: 0 ok; 1 the call failed, or the job failed or was cancelled; 2 usage error; 3 the
job succeeded but some planned deletions were not done (denied, plan changed, awaiting approval
or failed). ``plan`` and ``cancel`` exit 0 or 1 (or 2); ``apply`` without ``--wait`` exits 0 once
the job is started; ``status`` reports the job as it stands (0 while it is queued or running).
As everywhere in the CLI, every value shown is `printable`, and a reader of stdout that goes
away changes none of these.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import grpc

from pkggov.v1 import package_governance_pb2 as gov_pb2
from pkggov_client._cleanup_model import (
    CleanupAction,
    CleanupJob,
    CleanupJobState,
    CleanupOrder,
    CleanupPlan,
    CleanupResult,
    CleanupRule,
    PackageCleanupPlan,
    PackageCleanupResult,
    PrereleaseScope,
    VersionCleanupPlan,
    VersionCleanupResult,
)
from pkggov_client._cli_base import (
    UsageError,
    connection_hint,
    emit,
    emit_json,
    error_to_dict,
    message_to_dict,
    text_arg,
)
from pkggov_client._errors import PkggovError
from pkggov_client._model import PackageFormat, PackageVersionStatus, format_time
from pkggov_client._render import columns, render_time
from pkggov_client._text import printable

if TYPE_CHECKING:
    from pkggov_client._client import PkggovClient

__all__ = [
    "REPORT_COLUMNS",
    "RESULT_COLUMNS",
    "Progress",
    "add_cleanup_commands",
    "job_exit_status",
    "plan_rows",
    "progress_line",
    "render_cleanup_job",
    "render_cleanup_plan",
    "render_cleanup_results",
    "render_plan_versions",
    "report_text",
    "result_rows",
    "wait_for_job",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

PAGE_SIZE = 500
"""Packages per page when the CLI reads a whole plan or a job's results (the gateway's most)."""
DEFAULT_INTERVAL = 2.0
"""Seconds between two reads of a job that --wait follows."""
MAX_INTERVAL = 60.0
TRANSIENT_SECONDS = 60.0
"""How long --wait keeps reading a job through a gateway that does not answer (a rollout):
the job goes on in the gateway meanwhile."""
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_INT32_MAX = 2**31 - 1
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

REPORT_COLUMNS = (
    "format",
    "namespace",
    "package",
    "version",
    "status",
    "revision",
    "action",
    "clause",
    "reason",
    "prerelease",
    "policy_outcome",
    "policy_ids",
)
"""The columns of a plan's report, one row per version."""
RESULT_COLUMNS = (*REPORT_COLUMNS, "result", "result_message", "purge_time")
"""The columns of a job's report: the plan's, and what applying it did (KEPT for a version
the plan keeps)."""

_EPILOG = f"exit status: {EXIT_OK} ok, {EXIT_FAILED} the call failed, {EXIT_USAGE} usage error"
_JOB_EPILOG = (
    f"exit status: {EXIT_OK} the job did every planned deletion (or, without --wait, was "
    f"started), {EXIT_PARTIAL} it succeeded but some planned deletions were not done "
    f"(denied, plan changed, awaiting approval, failed), {EXIT_FAILED} the call failed or the "
    f"job failed or was cancelled, {EXIT_USAGE} usage error"
)

Connect = Callable[[argparse.Namespace], "PkggovClient"]


class ReportError(Protocol):
    """Prints a failed call (`pkggov_client._connection.report_error`)."""

    def __call__(
        self, err: PkggovError, args: argparse.Namespace, *, request_id: str | None = None
    ) -> None: ...


# --- argument types ---------------------------------------------------------------------------


def _count_arg(text: str) -> int:
    """A whole number from 0 (the gateway checks each field's own bounds and names it)."""
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number <= _INT32_MAX:
        raise argparse.ArgumentTypeError(
            f"invalid number '{printable(text)}': expected a whole number from 0"
        )
    return number


def _choice_arg(
    kind: type[CleanupOrder] | type[PrereleaseScope] | type[PackageFormat],
    what: str,
) -> Callable[[str], Any]:
    """An argparse type that reads a member of `kind` in any letter case."""

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise argparse.ArgumentTypeError(
                f"invalid {what} '{printable(text)}' (choose from {choices})"
            ) from None

    return parse


def _status_arg(text: str) -> PackageVersionStatus:
    """A version status in any letter case."""
    try:
        return PackageVersionStatus(text)
    except ValueError:
        choices = ", ".join(PackageVersionStatus)
        raise argparse.ArgumentTypeError(
            f"invalid status '{printable(text)}' (choose from {choices})"
        ) from None


def _plan_hash_arg(text: str) -> str:
    """A plan's SHA-256 in hex, as `pkggov cleanup plan` prints it."""
    if _HEX_SHA256.fullmatch(text) is None:
        raise argparse.ArgumentTypeError("expected a SHA-256 in hex (64 characters)")
    return text.lower()


def _request_id_arg(text: str) -> str:
    """An AIP-155 request id: a UUID in its 8-4-4-4-12 form, as the gateway requires."""
    if _UUID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"invalid request id '{printable(text)}': expected a UUID (8-4-4-4-12 hex digits)"
        )
    return text


def _interval_arg(text: str) -> float:
    """Seconds between two reads of a job: more than 0, at most MAX_INTERVAL."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_INTERVAL:  # NaN too
        raise argparse.ArgumentTypeError(
            f"invalid interval '{printable(text)}': expected seconds, more than 0 and at most "
            f"{MAX_INTERVAL:g}"
        )
    return seconds


def _report_arg(text: str) -> Path:
    """A report file: its name ends in .csv or .json, and its folder exists and is writable
    (checked before any call, so that a job's results are never lost to a bad path)."""
    path = Path(text_arg(text))
    if path.suffix.lower() not in (".csv", ".json"):
        raise argparse.ArgumentTypeError(
            f"'{printable(text)}': a report is CSV or JSON: name the file *.csv or *.json"
        )
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"'{printable(text)}' is a folder")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write '{printable(text)}': its folder does not exist or is not writable"
        )
    return path


# --- the commands ------------------------------------------------------------------------------


def _add_plan_options(command: argparse.ArgumentParser) -> None:
    """What to plan and by which rule: shared by `plan` and `run`."""
    where = command.add_argument_group(
        "what to clean up",
        description=(
            "One package (--format, --namespace, --package), or every package of the "
            "repository that the filters match (--format, a --namespace prefix, "
            "--package-pattern GLOB; none: every package)."
        ),
    )
    where.add_argument("--domain", required=True, type=text_arg, help="CodeArtifact domain")
    where.add_argument(
        "--domain-owner", type=text_arg, metavar="ACCOUNT_ID", help="12-digit domain owner"
    )
    where.add_argument("--repository", required=True, type=text_arg, help="the repository")
    where.add_argument(
        "--format",
        type=_choice_arg(PackageFormat, "format"),
        metavar="{" + ",".join(PackageFormat) + "}",
        help="package format (any letter case); required with --package",
    )
    where.add_argument(
        "--namespace",
        type=text_arg,
        help="package namespace (npm scope without @, groupId); without --package a prefix",
    )
    where.add_argument("--package", type=text_arg, help="one package")
    where.add_argument(
        "--package-pattern",
        type=text_arg,
        metavar="GLOB",
        help="without --package: only packages whose name matches this glob",
    )
    rule = command.add_argument_group(
        "rule",
        description=(
            "A rule of the gateway's configuration (--rule NAME), or one given inline by the "
            "options below; not both. A version is deleted only when it is in the rule's scope "
            "(--status, --include, --exclude, the regexes, --prerelease) and no guard keeps it: "
            "the package's latest version, the newest N (--keep-newest*, ranked by --order), "
            "what is younger than --keep-younger-than-days or not older than "
            "--older-than-days, and --max-deletions. An inline rule needs a count or an age "
            "guard; the gateway checks every field and names each bad one."
        ),
    )
    rule.add_argument(
        "--rule",
        dest="rule_name",
        type=text_arg,
        metavar="NAME",
        help="a named rule ([cleanup.rules.NAME]) that applies to the repository",
    )
    counts = (
        ("--keep-newest", "keep the newest N versions in scope"),
        ("--keep-newest-releases", "keep the newest N releases in scope"),
        ("--keep-newest-prereleases", "keep the newest N pre-releases in scope"),
        ("--older-than-days", "only versions published more than N days ago are deleted"),
        ("--keep-younger-than-days", "never delete a version published less than N days ago"),
        ("--max-deletions", "delete at most N versions of each package, oldest first"),
    )
    for option, text in counts:
        rule.add_argument(option, type=_count_arg, metavar="N", help=text)
    rule.add_argument(
        "--status",
        dest="statuses",
        action="append",
        default=[],
        type=_status_arg,
        metavar="STATUS",
        help="only versions in this status are in scope (any letter case; repeatable; "
        "default Published and Unlisted)",
    )
    rule.add_argument(
        "--include",
        action="append",
        default=[],
        type=text_arg,
        metavar="GLOB",
        help="only versions matching one of these globs are in scope (repeatable)",
    )
    rule.add_argument(
        "--exclude",
        action="append",
        default=[],
        type=text_arg,
        metavar="GLOB",
        help="versions matching one of these globs are kept (repeatable)",
    )
    rule.add_argument(
        "--include-regex",
        type=text_arg,
        metavar="REGEX",
        help="only versions this regular expression matches (whole version) are in scope",
    )
    rule.add_argument(
        "--exclude-regex",
        type=text_arg,
        metavar="REGEX",
        help="versions this regular expression matches (whole version) are kept",
    )
    rule.add_argument(
        "--prerelease",
        type=_choice_arg(PrereleaseScope, "pre-release scope"),
        metavar="{" + ",".join(PrereleaseScope) + "}",
        help="about releases and pre-releases (any, the default), pre-releases only, or "
        "releases only (exclude)",
    )
    rule.add_argument(
        "--order",
        type=_choice_arg(CleanupOrder, "order"),
        metavar="{" + ",".join(CleanupOrder) + "}",
        help="rank versions by the format's version ordering (default) or by publication",
    )
    why = command.add_argument_group("the deletions")
    why.add_argument(
        "--justification",
        type=text_arg,
        metavar="TEXT",
        help="why, for policy and audit (at most 1024 characters)",
    )
    why.add_argument(
        "--purge-now",
        action="store_true",
        help="delete at once even where a recovery window would archive (policy decides who may)",
    )


def _add_wait_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--interval",
        type=_interval_arg,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"while waiting, read the job this often (default {DEFAULT_INTERVAL:g})",
    )


def add_cleanup_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    connect: Connect,
    report_error: ReportError,
) -> None:
    """Add ``cleanup plan|apply|status|cancel|run`` to the `pkggov` subcommands; `common`
    holds the connection options (``--as`` among them), `connect` opens a client for them
    (UsageError for bad TLS options) and `report_error` prints a failed call."""
    cleanup = subparsers.add_parser(
        "cleanup",
        help="retention: plan and apply cleanups of old versions by a rule",
        description=(
            "Retention: a rule says which versions of a package to keep and which to delete; "
            "a plan applies it and explains every version; applying the plan deletes exactly "
            "what it planned, through the governed delete path, as a durable job in the "
            "gateway."
        ),
    )
    commands = cleanup.add_subparsers(dest="cleanup_command", required=True, metavar="COMMAND")
    bind = functools.partial

    plan = commands.add_parser(
        "plan",
        parents=[common],
        help="plan a cleanup: decide every version, delete nothing",
        description=(
            "Plan a cleanup: the gateway decides every version by the rule and, for those the "
            "rule deletes, by policy (as a dry run of a delete), and keeps the plan for "
            "`pkggov cleanup apply`. Nothing is deleted. Prints the plan's id, SHA-256, counts "
            "and warnings, and every version with the clause that decided it."
        ),
        epilog=_EPILOG,
    )
    _add_plan_options(plan)
    plan.add_argument(
        "--report",
        type=_report_arg,
        metavar="FILE",
        help="also write every version to FILE, as CSV (*.csv) or JSON (*.json)",
    )
    plan.set_defaults(func=bind(_run_plan, connect=connect, report_error=report_error))

    apply = commands.add_parser(
        "apply",
        parents=[common],
        help="apply a plan: start the job that deletes what it planned",
        description=(
            "Start the durable job that runs a plan (only the plan's requester may, before it "
            "expires); the gateway runs it package by package, through the governed delete "
            "path, as the requester. Prints the job's id; with --wait, follows it to its end "
            "(a progress line on stderr) and prints what it did. Without --request-id a new "
            "one is made and printed (on stderr, or as requestId with --json): pass it to "
            "--request-id to retry safely (a retry gets the same job)."
        ),
        epilog=_JOB_EPILOG,
    )
    apply.add_argument("plan_id", type=text_arg, metavar="PLAN_ID", help="the plan's id")
    apply.add_argument(
        "--plan-hash",
        type=_plan_hash_arg,
        metavar="SHA256",
        help="the plan sha256 you reviewed: the gateway refuses (PLAN_HASH_MISMATCH) a plan "
        "that is not that one",
    )
    apply.add_argument(
        "--request-id",
        type=_request_id_arg,
        metavar="UUID",
        help="name the call for safe retries (AIP-155): a retry with the same id gets the "
        "same job (default: a new UUID, printed)",
    )
    apply.add_argument(
        "--wait", action="store_true", help="follow the job to its end, then print its results"
    )
    apply.add_argument(
        "--report",
        type=_report_arg,
        metavar="FILE",
        help="with --wait: write every version of the plan (kept ones with their clause) and "
        "what the job did with it to FILE, as CSV (*.csv) or JSON (*.json)",
    )
    _add_wait_options(apply)
    apply.set_defaults(func=bind(_run_apply, connect=connect, report_error=report_error))

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show a cleanup job: its state and progress",
        description=(
            "Show a cleanup job: its state, its progress and, with --results, what it did "
            "with each planned deletion. Readable by its requester and by those policy lets "
            "read the audit record."
        ),
        epilog=(
            f"exit status: {EXIT_OK} the job is queued, running, or did every planned "
            f"deletion, {EXIT_PARTIAL} it succeeded but some planned deletions were not done, "
            f"{EXIT_FAILED} the call failed or the job failed or was cancelled, {EXIT_USAGE} "
            "usage error"
        ),
    )
    status.add_argument("job_id", type=text_arg, metavar="JOB_ID", help="the job's id")
    status.add_argument(
        "--results", action="store_true", help="also show each planned deletion's result"
    )
    status.add_argument(
        "--report",
        type=_report_arg,
        metavar="FILE",
        help="write every version of the plan (kept ones with their clause) and what the job "
        "did with it to FILE, as CSV (*.csv) or JSON (*.json)",
    )
    status.set_defaults(func=bind(_run_status, connect=connect, report_error=report_error))

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a cleanup job (its requester only)",
        description=(
            "Cancel a cleanup job; only its requester may. No package not yet started is "
            "deleted; the package in progress finishes. A job that has ended cannot be "
            "cancelled (CLEANUP_JOB_FINISHED)."
        ),
        epilog=_EPILOG,
    )
    cancel.add_argument("job_id", type=text_arg, metavar="JOB_ID", help="the job's id")
    cancel.add_argument(
        "--reason", type=text_arg, metavar="TEXT", help="why (recorded in the audit record)"
    )
    cancel.set_defaults(func=bind(_run_cancel, connect=connect, report_error=report_error))

    run = commands.add_parser(
        "run",
        parents=[common],
        help="plan, apply and wait in one command (for a scheduled job)",
        description=(
            "Plan a cleanup, apply the plan and follow the job to its end: for a scheduled "
            "job such as a Kubernetes CronJob, calling as its own workload identity "
            "(--token-file). Prints the plan's summary, the job's progress (stderr) and what "
            "it did. A plan that deletes nothing starts no job."
        ),
        epilog=_JOB_EPILOG,
    )
    _add_plan_options(run)
    run.add_argument(
        "--report",
        type=_report_arg,
        metavar="FILE",
        help="write every version of the plan (kept ones with their clause) and what the job "
        "did with it to FILE, as CSV (*.csv) or JSON (*.json)",
    )
    _add_wait_options(run)
    run.set_defaults(func=bind(_run_run, connect=connect, report_error=report_error))


# --- handlers ----------------------------------------------------------------------------------


def _usage(command: str, error: UsageError) -> int:
    print(f"pkggov cleanup {command}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _inline_rule(args: argparse.Namespace) -> CleanupRule | None:
    """The rule the inline options give, or None when none is given."""
    rule = CleanupRule(
        order=args.order,
        keep_newest=args.keep_newest,
        keep_newest_releases=args.keep_newest_releases,
        keep_newest_prereleases=args.keep_newest_prereleases,
        older_than_days=args.older_than_days,
        keep_younger_than_days=args.keep_younger_than_days,
        statuses=tuple(args.statuses),
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        include_regex=args.include_regex or "",
        exclude_regex=args.exclude_regex or "",
        prerelease=args.prerelease,
        max_deletions=args.max_deletions,
    )
    return None if rule.empty else rule


@dataclass
class _WholePlan:
    """A plan read to its last page: the header and every package, and the merged response."""

    plan: CleanupPlan
    packages: list[PackageCleanupPlan]
    response: gov_pb2.PlanCleanupResponse


class _PageLoopError(Exception):
    """The gateway returned a page token it had returned before."""


def _next_pages(first_token: str | None, fetch: Callable[[str], str | None]) -> None:
    """Call `fetch(token)` for every page after the first, each returning the next token."""
    token = first_token
    seen: set[str] = set()
    while token is not None:
        if token in seen:
            raise _PageLoopError
        seen.add(token)
        token = fetch(token)


def _make_plan(client: PkggovClient, args: argparse.Namespace) -> _WholePlan:
    """PlanCleanup, then GetCleanupPlan for every further page."""
    first = client.plan_cleanup(
        domain=args.domain,
        domain_owner=args.domain_owner,
        repository=args.repository,
        format=args.format,
        namespace=args.namespace,
        package=args.package,
        package_pattern=args.package_pattern,
        rule_name=args.rule_name,
        rule=_inline_rule(args),
        justification=args.justification,
        purge_now=args.purge_now,
        page_size=PAGE_SIZE,
    )
    return _rest_of_plan(client, first.plan, list(first.packages), first.next_page_token)


def _read_plan(client: PkggovClient, plan_id: str) -> _WholePlan:
    """GetCleanupPlan, every page."""
    first = client.get_cleanup_plan(plan_id, page_size=PAGE_SIZE)
    return _rest_of_plan(client, first.plan, list(first.packages), first.next_page_token)


def _rest_of_plan(
    client: PkggovClient,
    plan: CleanupPlan,
    packages: list[PackageCleanupPlan],
    token: str | None,
) -> _WholePlan:
    def fetch(page_token: str) -> str | None:
        page = client.get_cleanup_plan(plan.plan_id, page_size=PAGE_SIZE, page_token=page_token)
        rest = list(page.packages)
        if rest and rest[0].continues and packages:
            packages[-1] = packages[-1].joined(rest.pop(0))
        packages.extend(rest)
        return page.next_page_token

    _next_pages(token, fetch)
    response = gov_pb2.PlanCleanupResponse(plan=plan.raw)
    response.packages.extend(package.raw for package in packages)
    return _WholePlan(plan, packages, response)


@dataclass
class _WholeJob:
    """A job and, when read, every page of its results, and the merged response."""

    job: CleanupJob
    results: list[PackageCleanupResult]
    response: gov_pb2.GetCleanupJobResponse


def _read_job(client: PkggovClient, job_id: str, *, results: bool) -> _WholeJob:
    """GetCleanupJob, with every page of results when `results`."""
    first = client.get_cleanup_job(job_id, include_results=results, page_size=PAGE_SIZE)
    found = list(first.results)

    def fetch(page_token: str) -> str | None:
        page = client.get_cleanup_job(
            job_id, include_results=True, page_size=PAGE_SIZE, page_token=page_token
        )
        rest = list(page.results)
        if rest and rest[0].continues and found:
            found[-1] = found[-1].joined(rest.pop(0))
        found.extend(rest)
        return page.next_page_token

    if results:
        _next_pages(first.next_page_token, fetch)
    response = gov_pb2.GetCleanupJobResponse(job=first.job.raw)
    response.results.extend(result.raw for result in found)
    return _WholeJob(first.job, found, response)


def _page_loop_error(command: str) -> int:
    print(
        f"pkggov cleanup {command}: error: the gateway returned a page token it had returned "
        "before; stopped",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _json_error(err: PkggovError, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The JSON form of a failed call (as `report_error` prints it), with `extra` fields."""
    hint = connection_hint(
        err, tls=args.cacert is not None, client_certificate=args.cert is not None
    )
    return {**extra, **error_to_dict(err, hint=hint)}


def _run_plan(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`cleanup plan`: every page, then the summary and the table (or the JSON)."""
    try:
        with connect(args) as client:
            whole = _make_plan(client, args)
    except UsageError as error:
        return _usage("plan", error)
    except PkggovError as err:
        report_error(err, args)
        _print_refusal_hint(err, args)
        return EXIT_FAILED
    except _PageLoopError:
        return _page_loop_error("plan")
    if args.report is not None and not _write_report(
        args.report, plan_rows(whole.packages), REPORT_COLUMNS
    ):
        return EXIT_FAILED
    if args.json:
        emit_json(message_to_dict(whole.response))
        return EXIT_OK
    emit(render_plan_versions(whole.packages))
    emit("")
    emit(render_cleanup_plan(whole.plan))
    if whole.plan.delete_count:
        emit(
            f"\nnext: the requester runs: pkggov cleanup apply {printable(whole.plan.plan_id)} "
            f"--plan-hash {printable(whole.plan.plan_hash)} --wait"
        )
    else:
        emit("\nnothing to delete")
    return EXIT_OK


def _new_request_id(args: argparse.Namespace) -> str:
    """--request-id, or a new UUID, printed (on stderr) before the call that uses it."""
    request_id: str | None = getattr(args, "request_id", None)
    if request_id is not None:
        return request_id
    request_id = str(uuid.uuid4())
    if not args.json:
        print(
            f"request id {request_id} (to retry this call safely: --request-id {request_id})",
            file=sys.stderr,
        )
    return request_id


def _run_apply(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`cleanup apply PLAN_ID`: start the job; with --wait, follow it and print its results."""
    if args.report is not None and not args.wait:
        return _usage("apply", UsageError("--report needs --wait (the job's results)"))
    try:
        with connect(args) as client:
            request_id = _new_request_id(args)
            try:
                job = client.apply_cleanup(
                    args.plan_id, plan_hash=args.plan_hash or "", request_id=request_id
                )
            except PkggovError as err:
                report_error(err, args, request_id=request_id)
                _print_refusal_hint(err, args)
                return EXIT_FAILED
            if not args.wait:
                if args.json:
                    output = message_to_dict(gov_pb2.ApplyCleanupResponse(job=job.raw))
                    emit_json({**output, "requestId": request_id})
                else:
                    _print_started(job)
                return EXIT_OK
            return _follow(client, job, args, request_id=request_id, plan=None)
    except UsageError as error:
        return _usage("apply", error)


def _run_status(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`cleanup status JOB_ID`."""
    want_results = bool(args.results or args.report is not None)
    try:
        with connect(args) as client:
            whole = _read_job(client, args.job_id, results=want_results)
            plan = None
            if args.report is not None:
                plan = _read_plan(client, whole.job.plan_id)
    except UsageError as error:
        return _usage("status", error)
    except PkggovError as err:
        report_error(err, args)
        _print_refusal_hint(err, args)
        return EXIT_FAILED
    except _PageLoopError:
        return _page_loop_error("status")
    if plan is not None and not _write_report(
        args.report, result_rows(plan.packages, whole.results), RESULT_COLUMNS
    ):
        return EXIT_FAILED
    if args.json:
        if not args.results:
            del whole.response.results[:]
        emit_json(message_to_dict(whole.response))
    else:
        if args.results:
            emit(render_cleanup_results(whole.results))
            emit("")
        emit(render_cleanup_job(whole.job))
        _print_not_done_hint(whole.job, shown=bool(args.results))
    return job_exit_status(whole.job)


def _run_cancel(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`cleanup cancel JOB_ID`."""
    try:
        with connect(args) as client:
            job = client.cancel_cleanup_job(args.job_id, args.reason or "")
    except UsageError as error:
        return _usage("cancel", error)
    except PkggovError as err:
        report_error(err, args)
        _print_refusal_hint(err, args)
        return EXIT_FAILED
    if args.json:
        emit_json(message_to_dict(gov_pb2.CancelCleanupJobResponse(job=job.raw)))
        return EXIT_OK
    emit(
        f"cancelled cleanup job {printable(job.job_id)}; state {_state_text(job)} "
        f"({job.packages_done} of {job.packages_total} packages done, "
        f"{job.versions_deleted} deleted, {job.versions_archived} archived)"
    )
    if not job.finished:
        emit(
            "the package in progress finishes first; follow it: pkggov cleanup status "
            f"{printable(job.job_id)}"
        )
    return EXIT_OK


def _run_run(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`cleanup run`: plan, print the summary, apply (unless nothing is to be deleted), wait."""
    try:
        with connect(args) as client:
            try:
                whole = _make_plan(client, args)
            except PkggovError as err:
                report_error(err, args)
                _print_refusal_hint(err, args)
                return EXIT_FAILED
            except _PageLoopError:
                return _page_loop_error("run")
            if not args.json:
                emit(render_cleanup_plan(whole.plan))
                emit("")
            if not whole.plan.delete_count:
                return _nothing_to_delete(whole, args)
            request_id = _new_request_id(args)
            try:
                job = client.apply_cleanup(
                    whole.plan.plan_id, plan_hash=whole.plan.plan_hash, request_id=request_id
                )
            except PkggovError as err:
                if args.json:
                    plan_json = message_to_dict(whole.response)
                    emit_json(_json_error(err, args, plan=plan_json, requestId=request_id))
                else:
                    report_error(err, args)
                    _print_refusal_hint(err, args)
                return EXIT_FAILED
            return _follow(client, job, args, request_id=request_id, plan=whole)
    except UsageError as error:
        return _usage("run", error)


def _nothing_to_delete(whole: _WholePlan, args: argparse.Namespace) -> int:
    """`run` with a plan that deletes nothing: no job; the report holds the kept versions."""
    if args.report is not None and not _write_report(
        args.report, result_rows(whole.packages, []), RESULT_COLUMNS
    ):
        return EXIT_FAILED
    if args.json:
        emit_json({"plan": message_to_dict(whole.response), "job": None})
    else:
        emit("nothing to delete: no job started")
    return EXIT_OK


def _print_started(job: CleanupJob) -> None:
    """Say which job was started, and how to follow and cancel it."""
    p = printable
    emit(
        f"cleanup job {p(job.job_id)} {_state_text(job)}: plan {p(job.plan_id)} "
        f"(sha256 {p(job.plan_hash)})"
    )
    emit(
        f"follow it: pkggov cleanup status {p(job.job_id)}; cancel it: "
        f"pkggov cleanup cancel {p(job.job_id)}"
    )


def _follow(
    client: PkggovClient,
    job: CleanupJob,
    args: argparse.Namespace,
    *,
    request_id: str,
    plan: _WholePlan | None,
) -> int:
    """Wait for the job's end, then print its results (and write the report); the exit status
    is the job's (`job_exit_status`)."""
    progress = Progress(sys.stderr)
    try:
        final = wait_for_job(client, job, args.interval, progress)
    except KeyboardInterrupt:
        progress.close()
        _write_stderr(
            f"interrupted: the job goes on in the gateway; follow it: pkggov cleanup status "
            f"{printable(job.job_id)}; cancel it: pkggov cleanup cancel {printable(job.job_id)}\n"
        )
        return 130
    except PkggovError as err:
        progress.close()
        return _lost_job(err, job, args, plan)
    progress.close()
    try:
        whole = _read_job(client, final.job_id, results=True)
        if args.report is not None and plan is None:
            plan = _read_plan(client, final.plan_id)
    except PkggovError as err:
        return _lost_job(err, job, args, plan)
    except _PageLoopError:
        return _page_loop_error("apply" if plan is None else "run")
    if args.report is not None and plan is not None:
        rows = result_rows(plan.packages, whole.results)
        if not _write_report(args.report, rows, RESULT_COLUMNS):
            return EXIT_FAILED
    if args.json:
        output = message_to_dict(whole.response)
        if args.cleanup_command == "run":
            assert plan is not None  # noqa: S101 - run always has its plan
            emit_json(
                {"plan": message_to_dict(plan.response), "job": output, "requestId": request_id}
            )
        else:
            emit_json({**output, "requestId": request_id})
    else:
        if whole.results:
            emit(render_cleanup_results(whole.results))
            emit("")
        emit(render_cleanup_job(whole.job))
        _print_not_done_hint(whole.job, shown=True)
    return job_exit_status(whole.job)


def _lost_job(
    err: PkggovError, job: CleanupJob, args: argparse.Namespace, plan: _WholePlan | None
) -> int:
    """Reading the job failed while waiting: say so, and that the job goes on."""
    if args.json:
        extra: dict[str, Any] = {"jobId": job.job_id}
        if plan is not None:
            extra["plan"] = message_to_dict(plan.response)
        emit_json(_json_error(err, args, **extra))
    else:
        print(f"error: {err}", file=sys.stderr)
        print(
            f"  the job goes on in the gateway: pkggov cleanup status {printable(job.job_id)}",
            file=sys.stderr,
        )
    return EXIT_FAILED


def job_exit_status(job: CleanupJob) -> int:
    """0 for a job queued, running or that did every planned deletion; 3 for one that
    succeeded with some not done; 1 for one that failed or was cancelled (or a state this
    client does not know)."""
    if job.state in (CleanupJobState.QUEUED, CleanupJobState.RUNNING):
        return EXIT_OK
    if job.state is CleanupJobState.SUCCEEDED:
        return EXIT_OK if job.versions_not_done == 0 else EXIT_PARTIAL
    return EXIT_FAILED


def wait_for_job(
    client: PkggovClient,
    job: CleanupJob,
    interval: float,
    progress: Progress,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CleanupJob:
    """Read the job every `interval` seconds until it ends, showing each reading on
    `progress`; return it as it ended. A gateway that does not answer (UNAVAILABLE,
    DEADLINE_EXCEEDED) is asked again for up to TRANSIENT_SECONDS; any other error, or one that
    lasts longer, is raised (the job goes on in the gateway)."""
    current = job
    failing_since: float | None = None
    progress.update(current)
    while not current.finished:
        sleep(interval)
        try:
            current = client.get_cleanup_job(job.job_id).job
        except PkggovError as err:
            now = clock()
            if failing_since is None:
                failing_since = now
            if err.code not in _TRANSIENT or now - failing_since > TRANSIENT_SECONDS:
                raise
            progress.note(f"the gateway did not answer ({err.code.name}); asking again")
            continue
        failing_since = None
        progress.update(current)
    return current


class Progress:
    """A job's progress on `stream` (stderr): on a terminal, one line rewritten in place with a
    bar of packages done; otherwise one line per change. Writing never fails the command."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._tty = stream.isatty()
        except (AttributeError, ValueError, OSError):
            self._tty = False
        self._last: tuple[Any, ...] | None = None
        self._open = False

    def update(self, job: CleanupJob) -> None:
        """Show `job` (only if it changed, when not on a terminal)."""
        key = (
            job.state,
            job.packages_done,
            job.packages_total,
            job.versions_deleted,
            job.versions_archived,
            job.versions_not_done,
            job.last_error,
        )
        if key == self._last:
            return
        self._last = key
        text = progress_line(job)
        if self._tty:
            total = max(job.packages_total, 1)
            filled = self.WIDTH * min(job.packages_done, total) // total
            if job.state is CleanupJobState.SUCCEEDED:
                filled = self.WIDTH
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self._write(f"\r\x1b[K[{bar}] {text}")
            self._open = True
        else:
            self._write(f"{text}\n")

    def note(self, text: str) -> None:
        """A line of its own (on a terminal, below the progress line)."""
        self.close()
        self._write(f"{printable(text)}\n")

    def close(self) -> None:
        """End the progress line on a terminal."""
        if self._open:
            self._write("\n")
            self._open = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def progress_line(job: CleanupJob) -> str:
    """One line of a job's progress: state, packages done, versions deleted (and archived, not
    done) of those planned."""
    parts = [
        f"cleanup job {printable(job.job_id)}: {_state_text(job)}",
        f"packages {job.packages_done}/{job.packages_total}",
        f"deleted {job.versions_deleted}/{job.versions_planned}",
    ]
    if job.versions_archived:
        parts.append(f"archived {job.versions_archived}")
    if job.versions_not_done:
        parts.append(f"not done {job.versions_not_done}")
    if job.last_error and not job.finished:
        parts.append(f"retrying: {_one_line(job.last_error)}")
    return ", ".join(parts)


_REFUSAL_HINTS = {
    "NOT_REQUESTER apply": "only the plan's requester may apply it: they run pkggov cleanup "
    "apply, or plan again as yourself",
    "NOT_REQUESTER cancel": "only the job's requester may cancel it",
    "PLAN_EXPIRED": "the plan can no longer be applied: plan again (pkggov cleanup plan)",
    "PLAN_HASH_MISMATCH": "nothing was started: the plan is not the one whose sha256 you gave",
    "PLAN_TAMPERED": "nothing was started: the stored plan no longer matches its hash; tell "
    "the gateway's operators",
    "CLEANUP_JOB_FINISHED": "the job has ended: there is nothing to cancel (pkggov cleanup "
    "status {id})",
    "CLEANUP_TOO_LARGE": "plan fewer packages: name one (--package) or filter them (--format, "
    "--namespace, --package-pattern)",
    "UNKNOWN_CLEANUP_RULE": "the gateway's configuration has no rule of that name "
    "([cleanup.rules.NAME]); or give a rule inline (--keep-newest N, ...)",
    "CLEANUP_RULE_NOT_APPLICABLE": "the rule's repositories do not include this repository",
    "CLEANUP_PLAN_LIMIT": "you have as many unexpired plans as the gateway allows: apply one "
    "(pkggov cleanup apply) or wait for one to expire",
}


def _print_refusal_hint(err: PkggovError, args: argparse.Namespace) -> None:
    """On stderr (text output only), what a refusal of a CleanupService call means."""
    reason = err.reason or ""
    command = "cancel" if args.cleanup_command == "cancel" else "apply"
    hint = _REFUSAL_HINTS.get(f"{reason} {command}") or _REFUSAL_HINTS.get(reason)
    if args.cleanup_command == "status" and reason == "NOT_REQUESTER":
        hint = None  # the gateway's message says who may read the job
    named = getattr(args, "rule_name", None)
    bad_name = any(violation.field == "rule_name" for violation in err.field_violations)
    if bad_name and bool(named) == (_inline_rule(args) is not None):
        hint = "give --rule NAME or an inline rule (--keep-newest N, ...): one, not both"
    if hint is None or args.json:
        return
    ident = getattr(args, "job_id", None) or "JOB_ID"
    print(f"  {hint.format(id=printable(ident))}", file=sys.stderr)


def _print_not_done_hint(job: CleanupJob, *, shown: bool) -> None:
    """After a job's summary: how many planned deletions were not done, why, and (when the
    results were not shown) where to see them."""
    count = job.versions_not_done
    if not count:
        return
    why = [
        f"{number} {label}"
        for number, label in (
            (job.versions_denied, "denied"),
            (job.versions_plan_changed, "plan changed"),
            (job.versions_awaiting_approval, "awaiting approval"),
            (job.versions_failed, "failed"),
        )
        if number
    ]
    line = f"{count} planned deletion{'' if count == 1 else 's'} not done ({', '.join(why)})"
    if not shown:
        line += f": see pkggov cleanup status {printable(job.job_id)} --results"
    emit(line)


# --- text output -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """`text` on one line, its runs of whitespace as one space, and `printable`."""
    return printable(" ".join(text.split()))


def _label(name: str) -> str:
    """An enum name in words: "WOULD_DELETE" becomes "would delete"."""
    return name.lower().replace("_", " ")


def _state_text(job: CleanupJob) -> str:
    """The job's state in words, or the proto number of one this client does not know."""
    if job.state is not None:
        return job.state.value
    return str(job.raw.state) if job.raw.state else "-"


def _format_text(value: PackageFormat | None, raw: int) -> str:
    if value is not None:
        return value.value
    return str(raw) if raw else ""


def _package_name(namespace: str | None, package: str) -> str:
    return package if namespace is None else f"{namespace}/{package}"


def _action_name(version: VersionCleanupPlan) -> str:
    if version.action is not None:
        return version.action.name
    return str(version.raw.action) if version.raw.action else ""


def _clause_name(version: VersionCleanupPlan) -> str:
    if version.clause is not None:
        return version.clause.name
    return str(version.raw.clause) if version.raw.clause else ""


def _result_name(result: VersionCleanupResult | None) -> str:
    if result is None:
        return ""
    if result.result is not None:
        return result.result.name
    return "UNKNOWN"


def _status_text(status: PackageVersionStatus | None) -> str:
    return "-" if status is None else status.value


def _policy_cell(version: VersionCleanupPlan) -> str:
    """The POLICY cell: for a version to delete, what the governed delete would do."""
    if version.policy_outcome is None:
        return "-"
    return printable(_label(version.policy_outcome))


def _reason_cell(version: VersionCleanupPlan) -> str:
    """The REASON cell: the rule's reason and, for a version to delete that policy does not
    simply allow, the policy's words (and the purge time of one that would be archived)."""
    text = _one_line(version.reason) or "-"
    outcome = version.policy_outcome
    if outcome is not None and outcome != "WOULD_DELETE":
        detail = _one_line(version.policy_message or "")
        if not detail and version.policy_ids:
            detail = ", ".join(printable(i) for i in version.policy_ids)
        if not detail and outcome == "DENIED":
            detail = "no policy permits it"
        if detail:
            text += f"; {detail}"
        if version.purge_time is not None:
            text += f"; purged at {render_time(version.purge_time)} unless restored"
    return text


def render_plan_versions(packages: Iterable[PackageCleanupPlan]) -> str:
    """A table of every version of the plan, in plan order (each package's versions newest
    first by the rule's order): format, package, version, status, action, clause, the policy's
    outcome for a version to delete, and why. A package that could not be planned is one row
    saying why."""
    rows = [("FORMAT", "PACKAGE", "VERSION", "STATUS", "ACTION", "CLAUSE", "POLICY", "REASON")]
    for package in packages:
        fmt = _format_text(package.format, package.raw.format) or "-"
        name = printable(_package_name(package.namespace, package.package))
        if package.error is not None:
            rows.append(
                (fmt, name, "-", "-", "-", "-", "-", f"not planned: {_one_line(package.error)}")
            )
        for version in package.versions:
            rows.append(
                (
                    fmt,
                    name,
                    printable(version.version),
                    _status_text(version.status),
                    _label(_action_name(version)) or "-",
                    _clause_name(version) or "-",
                    _policy_cell(version),
                    _reason_cell(version),
                )
            )
    if len(rows) == 1:
        return "no packages matched"
    return "\n".join(columns(rows))


_RULE_FIELDS = (
    "keep_newest",
    "keep_newest_releases",
    "keep_newest_prereleases",
    "older_than_days",
    "keep_younger_than_days",
    "max_deletions",
)


def _rule_text(rule: CleanupRule) -> str:
    """The rule as its fields, spelled as in the gateway's [cleanup.rules.NAME] tables."""
    parts = []
    if rule.prerelease is not None:
        parts.append(f"prerelease={rule.prerelease.value}")
    for name in _RULE_FIELDS:
        value = getattr(rule, name)
        if value is not None:
            parts.append(f"{name}={value}")
    if rule.include:
        parts.append("include=" + ",".join(printable(p) for p in rule.include))
    if rule.exclude:
        parts.append("exclude=" + ",".join(printable(p) for p in rule.exclude))
    if rule.include_regex:
        parts.append(f"include_regex={printable(rule.include_regex)}")
    if rule.exclude_regex:
        parts.append(f"exclude_regex={printable(rule.exclude_regex)}")
    if rule.statuses:
        parts.append("statuses=" + ",".join(status.value for status in rule.statuses))
    if rule.order is not None:
        parts.append(f"order={rule.order.value}")
    return " ".join(parts) or "-"


def _fields(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in rows)
    return [f"{label.ljust(width)}  {value}" for label, value in rows]


def render_cleanup_plan(plan: CleanupPlan) -> str:
    """A plan's summary: its id and SHA-256, who planned it and until when it can be applied,
    the repository and the rule, the counts (to delete: allowed, denied, needing approval;
    kept), how many versions each clause decided, the CodeArtifact calls it made and its
    warnings."""
    p = printable
    created = render_time(plan.create_time)
    if plan.audit_event_id is not None:
        created += f" (audit event {p(plan.audit_event_id)})"
    where = plan.domain if plan.domain_owner is None else f"{plan.domain}@{plan.domain_owner}"
    rule = _rule_text(plan.rule)
    if plan.rule_name is not None:
        rule = f"{p(plan.rule_name)}: {rule}"
    versions = (
        f"{plan.version_count} in {plan.package_count} "
        f"package{'' if plan.package_count == 1 else 's'}: {plan.delete_count} to delete "
        f"({plan.allowed_count} allowed, {plan.denied_count} denied, "
        f"{plan.needs_approval_count} need approval), {plan.keep_count} kept"
    )
    clauses = ", ".join(f"{p(name)} {count}" for name, count in plan.clause_counts.items())
    rows = [
        ("plan", p(plan.plan_id)),
        ("plan sha256", p(plan.plan_hash or "-")),
        ("requester", p(plan.requester or "-")),
        ("created", created),
        ("expires", render_time(plan.expire_time)),
        ("repository", p(f"{where}/{plan.repository}")),
        ("rule", rule),
        ("justification", _one_line(plan.justification or "") or "-"),
        ("purge now", "yes" if plan.purge_now else "no"),
        ("versions", versions),
        ("clauses", clauses or "-"),
        ("upstream calls", str(plan.upstream_calls)),
        ("warnings", str(len(plan.warnings)) if plan.warnings else "none"),
    ]
    lines = _fields(rows)
    lines.extend(f"  warning: {_one_line(warning)}" for warning in plan.warnings)
    return "\n".join(lines)


def render_cleanup_job(job: CleanupJob) -> str:
    """A job's summary: its id, state, plan, requester, times, packages done and what
    happened to the planned deletions, its last error and why it was cancelled."""
    p = printable
    created = render_time(job.create_time)
    if job.audit_event_id is not None:
        created += f" (audit event {p(job.audit_event_id)})"
    versions = (
        f"{job.versions_planned} planned: {job.versions_deleted} deleted, "
        f"{job.versions_archived} archived, {job.versions_denied} denied, "
        f"{job.versions_plan_changed} plan changed, {job.versions_awaiting_approval} awaiting "
        f"approval, {job.versions_failed} failed"
    )
    rows = [
        ("cleanup job", p(job.job_id)),
        ("state", _state_text(job)),
        ("plan", f"{p(job.plan_id)} (sha256 {p(job.plan_hash or '-')})"),
        ("requester", p(job.requester or "-")),
        ("created", created),
        ("updated", render_time(job.update_time)),
        ("packages", f"{job.packages_done} of {job.packages_total} done"),
        ("versions", versions),
        ("last error", _one_line(job.last_error or "") or "-"),
    ]
    if job.cancel_reason is not None:
        rows.append(("cancelled", _one_line(job.cancel_reason)))
    return "\n".join(_fields(rows))


def _result_message(result: VersionCleanupResult, package: PackageCleanupResult) -> str:
    text = _one_line(result.message) or "-"
    if result.purge_time is not None:
        text += f"; purged at {render_time(result.purge_time)} unless restored"
    if result.result is CleanupResult.AWAITING_APPROVAL and package.deletion_request_id:
        text += f"; deletion request {printable(package.deletion_request_id)}"
    return text


def render_cleanup_results(results: Iterable[PackageCleanupResult]) -> str:
    """A table of each planned deletion's result, in plan order: format, package, version,
    result and why (the purge time of an archived version, the deletion request of one that
    awaits approval)."""
    rows = [("FORMAT", "PACKAGE", "VERSION", "RESULT", "MESSAGE")]
    for package in results:
        fmt = _format_text(package.format, package.raw.format) or "-"
        name = printable(_package_name(package.namespace, package.package))
        for version in package.versions:
            rows.append(
                (
                    fmt,
                    name,
                    printable(version.version),
                    _label(_result_name(version)) or "-",
                    _result_message(version, package),
                )
            )
    if len(rows) == 1:
        return "no per-version results (no package with deletions was processed)"
    return "\n".join(columns(rows))


# --- reports -----------------------------------------------------------------------------------


def _version_row(package: PackageCleanupPlan, version: VersionCleanupPlan | None) -> dict[str, Any]:
    """One report row (REPORT_COLUMNS): the version's decision; a package that could not be
    planned has one row without a version, whose reason says why."""
    row: dict[str, Any] = {
        "format": _format_text(package.format, package.raw.format),
        "namespace": package.namespace or "",
        "package": package.package,
    }
    if version is None:
        return {
            **row,
            "version": "",
            "status": "",
            "revision": "",
            "action": "",
            "clause": "",
            "reason": f"not planned: {package.error or ''}",
            "prerelease": False,
            "policy_outcome": "",
            "policy_ids": [],
        }
    return {
        **row,
        "version": version.version,
        "status": "" if version.status is None else version.status.value,
        "revision": version.revision,
        "action": _action_name(version),
        "clause": _clause_name(version),
        "reason": version.reason,
        "prerelease": version.prerelease,
        "policy_outcome": version.policy_outcome or "",
        "policy_ids": list(version.policy_ids),
    }


def _plan_entries(
    packages: Iterable[PackageCleanupPlan],
) -> Iterator[tuple[PackageCleanupPlan, VersionCleanupPlan | None]]:
    for package in packages:
        if package.error is not None and not package.versions:
            yield package, None
        for version in package.versions:
            yield package, version


def plan_rows(packages: Iterable[PackageCleanupPlan]) -> list[dict[str, Any]]:
    """Every version of the plan as a report row (REPORT_COLUMNS), in plan order."""
    return [_version_row(package, version) for package, version in _plan_entries(packages)]


def _key(fmt: PackageFormat | None, raw: int, namespace: str | None, package: str) -> str:
    return "\0".join((_format_text(fmt, raw), namespace or "", package))


def result_rows(
    packages: Iterable[PackageCleanupPlan], results: Iterable[PackageCleanupResult]
) -> list[dict[str, Any]]:
    """Every version of the plan (RESULT_COLUMNS), in plan order, with what the job did: the
    result of a planned deletion (PENDING until the job reaches it; empty when the job has no
    result for it), KEPT for a version the plan keeps."""
    found: dict[tuple[str, str], tuple[PackageCleanupResult, VersionCleanupResult]] = {}
    for result_package in results:
        key = _key(
            result_package.format,
            result_package.raw.format,
            result_package.namespace,
            result_package.package,
        )
        for result_version in result_package.versions:
            found[key, result_version.version] = (result_package, result_version)
    rows = []
    for package, version in _plan_entries(packages):
        row = _version_row(package, version)
        result, message, purge = "", "", None
        if version is not None and version.action is CleanupAction.KEEP:
            result = "KEPT"
        elif version is not None:
            key = _key(package.format, package.raw.format, package.namespace, package.package)
            hit = found.get((key, version.version))
            if hit is not None:
                done, outcome = hit
                result, message, purge = _result_name(outcome), outcome.message, outcome.purge_time
                awaiting = outcome.result is CleanupResult.AWAITING_APPROVAL
                if awaiting and done.deletion_request_id:
                    message += f" (deletion request {done.deletion_request_id})"
        row.update(result=result, result_message=message, purge_time=format_time(purge) or "")
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(names), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = dict(row)
        cells["policy_ids"] = " ".join(row["policy_ids"])
        cells["prerelease"] = "true" if row["prerelease"] else "false"
        writer.writerow(cells)
    return buffer.getvalue()


def report_text(path: Path, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """The report as the file's suffix says: CSV with a header row (policy ids separated by
    spaces, prerelease as true/false), or a JSON array of objects (policy ids as a list)."""
    if path.suffix.lower() == ".json":
        return json.dumps([{name: row[name] for name in names} for row in rows], indent=2) + "\n"
    return _csv_text(rows, names)


def _write_report(path: Path, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bool:
    """Write the report to `path`; False, said on stderr, when it cannot be written."""
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(report_text(path, rows, names))
    except OSError as error:
        print(
            f"pkggov cleanup: error: cannot write the report {printable(str(path))}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return False
    print(f"report: {len(rows)} versions written to {printable(str(path))}", file=sys.stderr)
    return True
