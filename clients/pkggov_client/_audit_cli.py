"""`pkggov audit list | show`: read the audit record through the gateway.

``list`` and ``show`` ask the gateway (AuditService, authorized by its policy). Verifying a
store's hash chain reads the store itself and moved to `pkggov-admin audit verify`, installed
with the gateway. Exit status: 0 ok, 1 the call failed, 2 usage error.

Who calls and whose events are listed are separate flags: ``--as NAME`` calls as NAME (the
development identity, as for every command) and ``audit list --by NAME`` lists NAME's events.
``--principal`` (the identity elsewhere, the filter's field name in the API) and the older
``--caller`` are refused here with a message naming both.

The text forms (`render_events`, `render_event`) show every recorded value `printable`: a
caller's version or justification holding a terminal escape cannot hide or forge a row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, timestamp_pb2

from pkggov_client import pb
from pkggov_client._cli_base import (
    UsageError,
    emit,
    emit_json,
    integral_numbers,
    message_to_dict,
    text_arg,
    time_arg,
)
from pkggov_client._errors import PkggovError
from pkggov_client._moved import add_moved_command
from pkggov_client._text import printable

if TYPE_CHECKING:
    from pkggov_client._client import PkggovClient

__all__ = ["add_audit_commands"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_AMBIGUOUS_PRINCIPAL = (
    "--principal is ambiguous in `pkggov audit`: use --as NAME to call as NAME, "
    "or `audit list --by NAME` to list NAME's events"
)


class _Refuse(argparse.Action):
    """An option that is not one here: using it is a usage error that says what to use."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, message: str) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.message = message

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(self.message)


def add_audit_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    connect: Callable[[argparse.Namespace], PkggovClient],
    report_error: Callable[[PkggovError, argparse.Namespace], None],
) -> None:
    """Add ``audit list`` and ``audit show`` to the `pkggov` subcommands; `common` holds the
    connection options (``--as`` among them), `connect` opens a client for them (UsageError for
    bad TLS options) and `report_error` prints a failed call."""
    audit = subparsers.add_parser(
        "audit",
        help="read the audit record",
        description="Read the audit record through the gateway.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common], help="list audit events, newest first")
    listing.add_argument(
        "--by",
        type=text_arg,
        metavar="PRINCIPAL",
        help="only events of this principal, as the gateway identified it (e.g. bob, or "
        "spiffe://... under mTLS); to call as someone, use --as",
    )
    listing.add_argument(
        "--caller",
        action=_Refuse,
        message="--caller is now --by PRINCIPAL (events of PRINCIPAL); --as NAME calls as NAME",
    )
    listing.add_argument("--principal", action=_Refuse, message=_AMBIGUOUS_PRINCIPAL)
    for name in ("domain", "repository", "namespace", "package"):
        listing.add_argument(f"--{name}", type=text_arg, help=f"only events for this {name}")
    listing.add_argument(  # not --version, which prints the client's version on every command
        "--package-version",
        type=text_arg,
        metavar="VERSION",
        help="only events for this package version",
    )
    listing.add_argument(
        "--format", type=text_arg, help="only events for this package format (e.g. npm)"
    )
    listing.add_argument(
        "--decision",
        type=text_arg,
        help="allowed, partial, denied, dry_run, invalid, unauthenticated, failed, read, replayed",
    )
    listing.add_argument(
        "--status-code", type=text_arg, help="gRPC status code name, e.g. PERMISSION_DENIED"
    )
    listing.add_argument("--since", type=time_arg, help="ISO 8601 time: events at or after")
    listing.add_argument("--until", type=time_arg, help="ISO 8601 time: events before")
    listing.add_argument("--limit", type=int, default=20, help="events per page (default 20)")
    listing.add_argument(
        "--page-token", type=text_arg, default="", help="next_page_token of a previous page"
    )

    def run_list(args: argparse.Namespace) -> int:
        request = pb.ListAuditEventsRequest(
            principal=args.by or "",
            domain=args.domain or "",
            repository=args.repository or "",
            namespace=args.namespace or "",
            package=args.package or "",
            version=args.package_version or "",
            decision=args.decision or "",
            status_code=(args.status_code or "").upper(),
            page_size=args.limit,
            page_token=args.page_token,
        )
        if args.format:
            try:
                request.format = pb.PackageFormat.Value(f"PACKAGE_FORMAT_{args.format.upper()}")
            except ValueError:
                print(f"pkggov audit list: error: unknown format {args.format!r}", file=sys.stderr)
                return 2
        for field, moment in (("start_time", args.since), ("end_time", args.until)):
            if moment is not None:
                stamp = timestamp_pb2.Timestamp()
                stamp.FromDatetime(moment)
                getattr(request, field).CopyFrom(stamp)
        try:
            with connect(args) as client:
                page = client.list_audit_events(request)
        except UsageError as error:
            print(f"pkggov audit list: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except PkggovError as err:
            report_error(err, args)
            return EXIT_FAILED
        if args.json:
            emit_json(message_to_dict(page))
        else:
            emit(render_events(page.events))
            if page.next_page_token:
                emit(f"more: --page-token {printable(page.next_page_token)}")
        return EXIT_OK

    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", parents=[common], help="show one audit event")
    show.add_argument(
        "event_id", type=text_arg, metavar="EVENT_ID", help="the event id (audit_event_id)"
    )
    show.add_argument("--principal", action=_Refuse, message=_AMBIGUOUS_PRINCIPAL)

    def run_show(args: argparse.Namespace) -> int:
        try:
            with connect(args) as client:
                event = client.get_audit_event(args.event_id)
        except UsageError as error:
            print(f"pkggov audit show: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except PkggovError as err:
            report_error(err, args)
            return EXIT_FAILED
        if args.json:
            emit_json(message_to_dict(event))
        else:
            emit(render_event(event))
        return EXIT_OK

    show.set_defaults(func=run_show)

    add_moved_command(commands, "verify", "pkggov-admin audit verify")


def _versions(event: pb.AuditEvent) -> str:
    for entry in event.entries:
        request = entry.body.fields.get("request")
        if request is not None and request.HasField("struct_value"):
            versions = request.struct_value.fields.get("versions")
            if versions is not None and versions.HasField("list_value"):
                names = [v.string_value for v in versions.list_value.values]
                return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    return ""


def _package(event: pb.AuditEvent) -> str:
    for entry in event.entries:
        request = entry.body.fields.get("request")
        if request is not None and request.HasField("struct_value"):
            fields = request.struct_value.fields
            parts = [
                fields[k].string_value for k in ("domain", "repository", "package") if k in fields
            ]
            return "/".join(parts)
    return ""


def render_events(events: Any) -> str:
    """A table: time, event id, principal, method, decision, status, package, versions."""
    rows = [("TIME", "EVENT", "PRINCIPAL", "METHOD", "DECISION", "STATUS", "PACKAGE", "VERSIONS")]
    for event in events:
        cells = (
            event.event_id,
            event.principal or "-",
            event.method.rpartition("/")[2],
            event.decision or "(open)",
            event.status_code or "-",
            _package(event) or "-",
            _versions(event) or "-",
        )
        time = event.time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append((time, *(printable(cell) for cell in cells)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_event(event: pb.AuditEvent) -> str:
    """The summary, then each entry's header and body as JSON (which escapes every character
    that is not ASCII, so controls too)."""
    p = printable
    lines = [
        f"event     {p(event.event_id)}",
        f"time      {event.time.ToDatetime().isoformat()}Z",
        f"principal {p(event.principal or '-')}",
        f"method    {p(event.method)}",
        f"decision  {p(event.decision or '(open)')}",
        f"status    {p(event.status_code or '-')} {p(event.reason)}".rstrip(),
    ]
    for entry in event.entries:
        lines.append(f"\n{p(entry.kind)} (seq {entry.seq}, hash {p(entry.hash)})")
        body = integral_numbers(json_format.MessageToDict(entry.body))
        lines.append(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=True))
    return "\n".join(lines)
