"""`pkggov approvals list | show | approve | reject | cancel | execute`: four-eyes deletion
requests, through the gateway's ApprovalService (each call authorized by its policy and
audited).

A delete that policy lets run only once approved deletes nothing: it records a deletion request
holding the plan exactly as decided, with the plan's SHA-256, and fails with APPROVAL_REQUIRED
(`pkggov delete` then says how to proceed). Approvers read it (``show``) and vote with a reason
(``approve``, ``reject``); its requester then runs it (``execute``), which deletes only while
the plan still holds, or gives it up (``cancel``).

Exit status: 0 ok, 1 the call failed, 2 usage error; ``execute`` also exits 3 when the call
succeeded but some versions failed, as `pkggov delete` does. As everywhere in the CLI, every
value shown is `printable`.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pkggov_client import pb
from pkggov_client._approval_model import (
    DeletionRequest,
    DeletionRequestExecution,
    DeletionRequestState,
    DeletionVote,
)
from pkggov_client._cli_base import (
    MAX_PAGE_SIZE,
    UsageError,
    emit,
    emit_json,
    message_to_dict,
    page_size_arg,
    text_arg,
)
from pkggov_client._errors import PkggovError
from pkggov_client._render import render_table, render_time, restore_hint
from pkggov_client._text import printable

if TYPE_CHECKING:
    from pkggov_client._client import PkggovClient

__all__ = [
    "add_approvals_commands",
    "approval_required_hint",
    "render_deletion_request",
    "render_deletion_requests",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

DEFAULT_PAGE_SIZE = 20
"""Deletion requests per page of one `approvals list` (as `pending list`)."""
_MAX_VERSIONS_IN_ROW = 3
"""Versions named in one row of `approvals list` before "(+N)"."""

_EPILOG = f"exit status: {EXIT_OK} ok, {EXIT_FAILED} the call failed, {EXIT_USAGE} usage error"


def _state_arg(text: str) -> DeletionRequestState:
    """Read a deletion request state in any letter case."""
    try:
        return DeletionRequestState(text)
    except ValueError:
        choices = ", ".join(DeletionRequestState)
        raise argparse.ArgumentTypeError(
            f"invalid state '{printable(text)}' (choose from {choices})"
        ) from None


def _plan_hash_arg(text: str) -> str:
    """A plan's SHA-256 in hex, as `pkggov approvals show` prints it."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError("expected a SHA-256 in hex (64 characters)")
    return text.lower()


def _reason_arg(text: str) -> str:
    """Read a vote's reason: UTF-8 text that is not blank (the gateway requires one)."""
    text = text_arg(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("a reason is required: say why")
    return text


def _add_id(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "request_id",
        type=text_arg,
        metavar="ID",
        help="the deletion request's id (deletion_request_id of the APPROVAL_REQUIRED error)",
    )


Connect = Callable[[argparse.Namespace], "PkggovClient"]
ReportError = Callable[[PkggovError, argparse.Namespace], None]


def add_approvals_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    connect: Connect,
    report_error: ReportError,
) -> None:
    """Add ``approvals list|show|approve|reject|cancel|execute`` to the `pkggov` subcommands;
    `common` holds the connection options (``--as`` among them), `connect` opens a client for
    them (UsageError for bad TLS options) and `report_error` prints a failed call."""
    approvals = subparsers.add_parser(
        "approvals",
        help="deletion requests that wait for approval (four eyes)",
        description=(
            "Deletion requests: a delete that policy lets run only once approved records one, "
            "bound to its exact plan, instead of deleting. Approvers vote on it with a reason; "
            "its requester then executes it, which deletes only while the plan still holds."
        ),
    )
    commands = approvals.add_subparsers(dest="approvals_command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list deletion requests, newest first",
        description=(
            "List deletion requests, newest first; filters left out match everything. "
            "Authorized as reading the audit record."
        ),
        epilog=_EPILOG,
    )
    listing.add_argument(
        "--state",
        type=_state_arg,
        metavar="{" + ",".join(DeletionRequestState) + "}",
        help="only requests in this state (any letter case)",
    )
    listing.add_argument(
        "--requester",
        type=text_arg,
        metavar="PRINCIPAL",
        help="only requests of this principal, as the gateway identified it (e.g. alice, or "
        "spiffe://... under mTLS)",
    )
    for name in ("domain", "repository", "package"):
        listing.add_argument(f"--{name}", type=text_arg, help=f"only requests for this {name}")
    listing.add_argument(
        "--page-size",
        type=page_size_arg,
        metavar="N",
        help=f"requests per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}; "
        f"with --all, {MAX_PAGE_SIZE})",
    )
    listing.add_argument(
        "--page-token", type=text_arg, default="", help="next_page_token of a previous page"
    )
    listing.add_argument(
        "--all",
        action="store_true",
        help="follow the page tokens and list every request (from --page-token, if given)",
    )
    listing.set_defaults(
        func=functools.partial(_run_list, connect=connect, report_error=report_error)
    )

    show = commands.add_parser(
        "show",
        parents=[common],
        help="show one deletion request: its plan, votes and state",
        description=(
            "Show one deletion request: requester, state, expiry, package, the plan (each "
            "version with the revision and status it was decided on) and its SHA-256, the "
            "policies that require approval, every vote and how it ended."
        ),
        epilog=_EPILOG,
    )
    _add_id(show)
    show.set_defaults(func=functools.partial(_run_show, connect=connect, report_error=report_error))

    for verb, past, text in (
        ("approve", "approved", "approve a pending deletion request"),
        ("reject", "rejected", "reject a pending deletion request (this ends it)"),
    ):
        vote = commands.add_parser(
            verb,
            parents=[common],
            help=text,
            description=(
                f"{text[0].upper()}{text[1:]}, with a reason (recorded in the audit record). "
                "Policy decides who may vote; the requester never counts as an approver, and "
                "one person votes once."
            ),
            epilog=_EPILOG,
        )
        _add_id(vote)
        vote.add_argument(
            "--reason",
            required=True,
            type=_reason_arg,
            metavar="TEXT",
            help="why (required, at most 1024 characters)",
        )
        if verb == "approve":
            vote.add_argument(
                "--plan-hash",
                type=_plan_hash_arg,
                metavar="SHA256",
                help="the plan sha256 you reviewed (`pkggov approvals show`): the approval is "
                "refused (PLAN_CHANGED) if the request's plan is not that one",
            )
        vote.set_defaults(
            func=functools.partial(
                _run_vote, verb=verb, past=past, connect=connect, report_error=report_error
            )
        )

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a pending deletion request (its requester only)",
        description="Cancel a pending deletion request; only its requester may. It never runs.",
        epilog=_EPILOG,
    )
    _add_id(cancel)
    cancel.add_argument(
        "--reason", type=text_arg, metavar="TEXT", help="why (optional, at most 1024 characters)"
    )
    cancel.set_defaults(
        func=functools.partial(
            _run_vote, verb="cancel", past="cancelled", connect=connect, report_error=report_error
        )
    )

    execute = commands.add_parser(
        "execute",
        parents=[common],
        help="run an approved deletion request (its requester only)",
        description=(
            "Run an approved deletion request's plan through the governed delete path; only "
            "its requester may. The gateway re-reads the package first and deletes nothing if "
            "the plan no longer holds (PLAN_CHANGED: a version's revision or status changed, "
            "another version became latest, ...). Prints the result per version, as "
            "pkggov delete does."
        ),
        epilog=(
            f"exit status: {EXIT_OK} all deleted or archived, {EXIT_PARTIAL} some not, "
            f"{EXIT_FAILED} the call failed, {EXIT_USAGE} usage error"
        ),
    )
    _add_id(execute)
    execute.set_defaults(
        func=functools.partial(_run_execute, connect=connect, report_error=report_error)
    )


def _fail(command: str, error: UsageError) -> int:
    print(f"pkggov approvals {command}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _run_list(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`approvals list`: one page, or with --all every page from --page-token on."""
    page_size: int = args.page_size or (MAX_PAGE_SIZE if args.all else DEFAULT_PAGE_SIZE)
    pages: list[pb.ListDeletionRequestsResponse] = []
    token: str = args.page_token
    seen = {token}
    try:
        with connect(args) as client:
            while True:
                page = client.list_deletion_requests(
                    state=args.state,
                    requester=args.requester,
                    domain=args.domain,
                    repository=args.repository,
                    package=args.package,
                    page_size=page_size,
                    page_token=token,
                )
                pages.append(page.raw)
                if not args.all or page.next_page_token is None:
                    break
                if page.next_page_token in seen:  # a gateway that never ends the listing
                    print(
                        "pkggov approvals list: error: the gateway returned a page token it "
                        "had returned before; stopped",
                        file=sys.stderr,
                    )
                    return EXIT_FAILED
                token = page.next_page_token
                seen.add(token)
    except UsageError as error:
        return _fail("list", error)
    except PkggovError as err:
        report_error(err, args)
        return EXIT_FAILED
    merged = pb.ListDeletionRequestsResponse(next_page_token=pages[-1].next_page_token)
    for raw in pages:
        merged.deletion_requests.extend(raw.deletion_requests)
    if args.json:
        emit_json(message_to_dict(merged))
    else:
        emit(
            render_deletion_requests(
                DeletionRequest.from_proto(r) for r in merged.deletion_requests
            )
        )
        if merged.next_page_token:
            emit(f"more: --page-token {printable(merged.next_page_token)}")
    return EXIT_OK


def _run_show(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`approvals show ID`."""
    try:
        with connect(args) as client:
            request = client.get_deletion_request(args.request_id)
    except UsageError as error:
        return _fail("show", error)
    except PkggovError as err:
        report_error(err, args)
        return EXIT_FAILED
    if args.json:
        emit_json(message_to_dict(pb.GetDeletionRequestResponse(deletion_request=request.raw)))
    else:
        emit(render_deletion_request(request))
    return EXIT_OK


def _run_vote(
    args: argparse.Namespace, verb: str, past: str, connect: Connect, report_error: ReportError
) -> int:
    """`approvals approve|reject|cancel ID`: the call, then one line on what it changed."""
    response_type: type[
        pb.ApproveDeletionRequestResponse
        | pb.RejectDeletionRequestResponse
        | pb.CancelDeletionRequestResponse
    ]
    try:
        with connect(args) as client:
            if verb == "approve":
                request = client.approve_deletion_request(
                    args.request_id, args.reason, plan_hash=args.plan_hash or ""
                )
                response_type = pb.ApproveDeletionRequestResponse
            elif verb == "reject":
                request = client.reject_deletion_request(args.request_id, args.reason)
                response_type = pb.RejectDeletionRequestResponse
            else:
                request = client.cancel_deletion_request(args.request_id, args.reason or "")
                response_type = pb.CancelDeletionRequestResponse
    except UsageError as error:
        return _fail(verb, error)
    except PkggovError as err:
        report_error(err, args)
        _print_refusal_hint(err, args)
        return EXIT_FAILED
    if args.json:
        emit_json(message_to_dict(response_type(deletion_request=request.raw)))
        return EXIT_OK
    p = printable
    state = _state_text(request)
    if verb == "approve":
        plural = " counts" if request.approvals == 1 else "s count"
        counted = f"{request.approvals} approval{plural}"
        emit(
            f"{past} deletion request {p(request.id)} (plan sha256 {p(request.plan_hash)}): "
            f"{counted}; state {state}"
        )
        if request.pending:
            emit(
                "once the approvals satisfy policy, the requester runs: "
                f"pkggov approvals execute {p(request.id)}"
            )
    else:
        emit(f"{past} deletion request {p(request.id)}; state {state}")
    return EXIT_OK


def _run_execute(args: argparse.Namespace, connect: Connect, report_error: ReportError) -> int:
    """`approvals execute ID`: the result per version, as `pkggov delete` prints it."""
    try:
        with connect(args) as client:
            execution = client.execute_deletion_request(args.request_id)
    except UsageError as error:
        return _fail("execute", error)
    except PkggovError as err:
        report_error(err, args)
        _print_refusal_hint(err, args)
        return EXIT_FAILED
    result = execution.result
    if args.json:
        emit_json(message_to_dict(execution.raw))
    else:
        _print_execution(execution)
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _print_execution(execution: DeletionRequestExecution) -> None:
    result, request = execution.result, execution.deletion_request
    p = printable
    emit(render_table(result, order=request.plan_versions))
    approvers = ", ".join(p(name) for name in dict.fromkeys(request.counted_approvers)) or "-"
    emit(
        f"deletion request {p(request.id)} {_state_text(request)} "
        f"(plan sha256 {p(request.plan_hash)}; approved by {approvers})"
    )
    hint = restore_hint(
        result,
        domain=request.domain,
        domain_owner=request.domain_owner,
        repository=request.repository,
        format="" if request.format is None else request.format.value,
        namespace=request.namespace,
        package=request.package,
    )
    if hint is not None:
        emit(hint)
    if result.audit_event_id is not None:
        print(f"audit event {p(result.audit_event_id)}", file=sys.stderr)


_REFUSAL_HINTS = {
    "SELF_APPROVAL": "the requester never approves their own request: another approver must",
    "ALREADY_VOTED": "one person votes once on a request",
    "NOT_REQUESTER": "only the request's requester may cancel or execute it",
    "REQUEST_EXPIRED": "an expired request never runs: delete again to record a new one",
    "REQUEST_NOT_PENDING": "the request has ended (executed, rejected, cancelled or expired), "
    "or is being executed: see pkggov approvals show {id}",
    "APPROVAL_REQUIRED": "not approved yet: the approvals do not satisfy policy; see the votes "
    "with pkggov approvals show {id}",
    "PLAN_CHANGED": "nothing was deleted: the package changed since the plan was approved; "
    "delete again to record a new request",
    "PLAN_TAMPERED": "nothing was deleted: the stored plan no longer matches its hash; "
    "tell the gateway's operators",
}


def _print_refusal_hint(err: PkggovError, args: argparse.Namespace) -> None:
    """On stderr (text output only), what a refusal of an ApprovalService call means."""
    hint = _REFUSAL_HINTS.get(err.reason or "")
    if hint is None or args.json:
        return
    print(f"  {hint.format(id=printable(args.request_id))}", file=sys.stderr)


def approval_required_hint(err: PkggovError) -> str | None:
    """How to proceed after a call that needs approval (reason APPROVAL_REQUIRED), or None for
    any other error: the deletion request the call recorded, its plan's hash and the commands
    that approve and execute it."""
    if not err.approval_required:
        return None
    plan = f" (plan sha256 {printable(err.plan_hash)})" if err.plan_hash else ""
    if err.deletion_request_id is None:
        return f"approval required{plan}: a real call records a deletion request for approvers"
    request_id = printable(err.deletion_request_id)
    return (
        f"approval required: deletion request {request_id}{plan}; an approver runs: "
        f"pkggov approvals approve {request_id} --reason TEXT; then: "
        f"pkggov approvals execute {request_id}"
    )


# --- text output ------------------------------------------------------------------------------


def _state_text(request: DeletionRequest) -> str:
    """The state's name, or the proto number of one this client does not know."""
    if request.state is not None:
        return request.state.value
    return str(request.raw.state) if request.raw.state else "-"


def _package(request: DeletionRequest) -> str:
    """domain[@owner]/repository/[namespace/]package."""
    domain = request.domain
    if request.domain_owner is not None:
        domain += f"@{request.domain_owner}"
    name = request.package
    if request.namespace is not None:
        name = f"{request.namespace}/{name}"
    return f"{domain}/{request.repository}/{name}"


def _version_list(versions: Sequence[str], limit: int | None = None) -> str:
    shown = versions if limit is None else versions[:limit]
    text = ", ".join(printable(v) for v in shown)
    if limit is not None and len(versions) > limit:
        text += f" (+{len(versions) - limit})"
    return text or "-"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lay rows out in columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def render_deletion_requests(requests: Iterable[DeletionRequest]) -> str:
    """A table, newest first as the gateway lists them: created, id, state, requester, format,
    package, the plan's versions, counted approvals and expiry."""
    rows = [
        (
            "CREATED",
            "ID",
            "STATE",
            "REQUESTER",
            "FORMAT",
            "PACKAGE",
            "VERSIONS",
            "APPROVALS",
            "EXPIRES",
        )
    ]
    for request in requests:
        rows.append(
            (
                render_time(request.create_time),
                printable(request.id),
                _state_text(request),
                printable(request.requester or "-"),
                "-" if request.format is None else request.format.value,
                printable(_package(request)),
                _version_list(request.plan_versions, _MAX_VERSIONS_IN_ROW),
                str(request.approvals),
                render_time(request.expire_time),
            )
        )
    return "\n".join(_columns(rows))


def _one_line(text: str) -> str:
    return printable(" ".join(text.split()))


def _options(request: DeletionRequest) -> str:
    options = []
    if request.expected_status is not None:
        options.append(f"expected status {request.expected_status.value}")
    if request.allow_partial:
        options.append("allow partial")
    if request.purge_now:
        options.append("purge now")
    return ", ".join(options) or "none"


def _expiry(request: DeletionRequest, now: datetime) -> str:
    text = render_time(request.expire_time)
    if request.expire_time is not None and request.pending and request.is_expired(now):
        text += " (passed: it can no longer run)"
    return text


def _vote_rows(votes: Sequence[DeletionVote]) -> list[str]:
    rows = [("TIME", "APPROVER", "VOTE", "COUNTS", "GROUPS", "EVENT", "REASON")]
    for vote in votes:
        rows.append(
            (
                render_time(vote.time),
                printable(vote.approver or "-"),
                "approve" if vote.approve else "reject",
                "yes" if vote.counts else "no",
                printable(",".join(vote.groups)) or "-",
                printable(vote.audit_event_id or "-"),
                _one_line(vote.reason) or "-",
            )
        )
    return _columns(rows)


def render_deletion_request(request: DeletionRequest, *, now: datetime | None = None) -> str:
    """The whole story of one request: who asked and when, until when it can run, the package
    and the plan with its SHA-256, the policies that require approval, every vote (approver,
    groups, whether it counts, its audit event, its reason) and how it ended; for a pending
    request, the commands that approve and execute it. `now` (default: the current time)
    decides whether a pending request's expiry has passed."""
    p = printable
    moment = datetime.now(UTC) if now is None else now
    created = render_time(request.create_time)
    if request.audit_event_id is not None:
        created += f" (audit event {p(request.audit_event_id)})"
    fmt = "" if request.format is None else f"{request.format.value} "
    facts = (
        f"latest {p(request.latest_version or '-')}, {request.version_count} "
        f"version{'' if request.version_count == 1 else 's'} when decided"
    )
    counted = ", ".join(p(a) for a in dict.fromkeys(request.counted_approvers))
    approvals = str(request.approvals) + (f" ({counted})" if counted else "")
    fields = [
        ("deletion request", p(request.id)),
        ("state", _state_text(request)),
        ("requester", p(request.requester or "-")),
        ("created", created),
        ("expires", _expiry(request, moment)),
        ("package", fmt + p(_package(request))),
        ("requested", _version_list(request.requested_versions)),
        ("justification", _one_line(request.justification or "") or "-"),
        ("options", _options(request)),
        ("package facts", facts),
        ("plan sha256", p(request.plan_hash or "-")),
        ("required by", ", ".join(p(i) for i in request.required_by) or "-"),
        ("approvals", approvals),
    ]
    if request.closed_reason is not None or request.closed_audit_event_id is not None:
        closed = _one_line(request.closed_reason or "") or _state_text(request)
        if request.closed_audit_event_id is not None:
            closed += f" (audit event {p(request.closed_audit_event_id)})"
        fields.append(("closed", closed))
    width = max(len(label) for label, _ in fields)
    lines = [f"{label.ljust(width)}  {value}" for label, value in fields]

    count = len(request.versions)
    lines.append(f"\nplan: {count} version{'' if count == 1 else 's'}")
    if request.versions:
        rows = [("VERSION", "REVISION", "STATUS", "LATEST")]
        rows.extend(
            (
                p(planned.version),
                p(planned.revision or "-"),
                "-" if planned.status is None else planned.status.value,
                "yes" if planned.is_latest else "no",
            )
            for planned in request.versions
        )
        lines.extend(_columns(rows))

    lines.append(f"\nvotes: {len(request.votes) or 'none'}")
    if request.votes:
        lines.extend(_vote_rows(request.votes))

    if request.pending and not request.is_expired(moment):
        lines.append(
            f"\nnext: an approver runs: pkggov approvals approve {p(request.id)} --reason TEXT; "
            f"then the requester: pkggov approvals execute {p(request.id)}"
        )
    return "\n".join(lines)
