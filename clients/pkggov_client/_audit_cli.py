"""`pkggov audit list | show | verify`: read the audit record and check its hash chain.

``list`` and ``show`` ask the gateway (AuditService, authorized by its policy); ``verify``
reads the store itself (a SQLite file or a PostgreSQL URL), as an auditor checking the
record should not have to trust the gateway. Exit status: 0 ok, 1 the call failed or the
chain is broken, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, timestamp_pb2

from pkggov_client import pb
from pkggov_client._errors import PkggovError

if TYPE_CHECKING:
    from pkggov_client._client import PkggovClient

__all__ = ["add_audit_commands"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_audit_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    connect: Callable[[argparse.Namespace], PkggovClient],
    print_error: Callable[[PkggovError, bool], None],
) -> None:
    """Add ``audit list``, ``audit show`` and ``audit verify`` to the `pkggov` subcommands."""
    audit = subparsers.add_parser(
        "audit",
        help="read the audit record and verify its hash chain",
        description="Read the audit record (through the gateway) or verify a store's chain.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common], help="list audit events, newest first")
    listing.add_argument(
        "--caller", metavar="PRINCIPAL", help="only events of this principal (as identified)"
    )
    for name in ("domain", "repository", "namespace", "package", "version"):
        listing.add_argument(f"--{name}", help=f"only events for this {name}")
    listing.add_argument("--format", help="only events for this package format (e.g. npm)")
    listing.add_argument(
        "--decision",
        help="allowed, partial, denied, dry_run, invalid, unauthenticated, failed, read, replayed",
    )
    listing.add_argument("--status-code", help="gRPC status code name, e.g. PERMISSION_DENIED")
    listing.add_argument("--since", type=_time_arg, help="ISO 8601 time: events at or after")
    listing.add_argument("--until", type=_time_arg, help="ISO 8601 time: events before")
    listing.add_argument("--limit", type=int, default=20, help="events per page (default 20)")
    listing.add_argument("--page-token", default="", help="next_page_token of a previous page")

    def run_list(args: argparse.Namespace) -> int:
        request = pb.ListAuditEventsRequest(
            principal=args.caller or "",
            domain=args.domain or "",
            repository=args.repository or "",
            namespace=args.namespace or "",
            package=args.package or "",
            version=args.version or "",
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
        except PkggovError as err:
            print_error(err, args.json)
            return EXIT_FAILED
        if args.json:
            print(json.dumps(_to_dict(page), indent=2))
        else:
            print(render_events(page.events))
            if page.next_page_token:
                print(f"more: --page-token {page.next_page_token}")
        return EXIT_OK

    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", parents=[common], help="show one audit event")
    show.add_argument("event_id", metavar="EVENT_ID", help="the event id (audit_event_id)")

    def run_show(args: argparse.Namespace) -> int:
        try:
            with connect(args) as client:
                event = client.get_audit_event(args.event_id)
        except PkggovError as err:
            print_error(err, args.json)
            return EXIT_FAILED
        if args.json:
            print(json.dumps(_to_dict(event), indent=2))
        else:
            print(render_event(event))
        return EXIT_OK

    show.set_defaults(func=run_show)

    verify = commands.add_parser(
        "verify",
        help="verify a store's hash chain (reads the store directly)",
        description="Check every entry's hash and link; report the first broken place.",
    )
    verify.add_argument(
        "--store",
        required=True,
        help="sqlite:PATH (or a file path) or postgresql://user@host:port/database",
    )
    verify.add_argument("--expect-head", metavar="HASH", help="a head hash recorded earlier")
    verify.add_argument("--json", action="store_true", help="print machine-readable JSON")
    verify.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from pkggov_gateway.adapters.sql import open_audit_store  # noqa: PLC0415
    from pkggov_gateway.domain.errors import AuditUnavailableError  # noqa: PLC0415
    from pkggov_gateway.tools.audit_verify import verify  # noqa: PLC0415

    if not args.store.startswith(("postgresql://", "postgres://")):
        path = args.store.removeprefix("sqlite:")
        if not Path(path[2:] if path.startswith("//") else path).is_file():
            print(f"pkggov audit verify: error: no such file: {path}", file=sys.stderr)
            return EXIT_FAILED
    try:
        store = open_audit_store(args.store, replica="pkggov-audit-verify", heartbeat_seconds=3600)
    except AuditUnavailableError as err:
        print(f"pkggov audit verify: error: {err.detail}", file=sys.stderr)
        return EXIT_FAILED
    try:
        report = verify(store.iter_rows(), expect_head=args.expect_head)
    finally:
        store.close()
    problem = report.first_problem
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "entries": report.entries,
                    "head_seq": report.head_seq,
                    "head_hash": report.head_hash,
                    "first_problem": None
                    if problem is None
                    else {
                        "kind": problem.kind,
                        "seq": problem.seq,
                        "event_id": problem.event_id,
                        "message": problem.message,
                    },
                },
                indent=2,
            )
        )
    elif report.ok:
        print(
            f"ok: {report.entries} entries, chain intact; head seq {report.head_seq} "
            f"hash {report.head_hash}"
        )
    else:
        assert problem is not None  # noqa: S101 - not ok means a problem
        print(f"BROKEN: {problem.kind} at seq {problem.seq}: {problem.message}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _time_arg(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.astimezone()


def _to_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


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
        rows.append(
            (
                event.time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"),
                event.event_id,
                event.principal or "-",
                event.method.rpartition("/")[2],
                event.decision or "(open)",
                event.status_code or "-",
                _package(event) or "-",
                _versions(event) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_event(event: pb.AuditEvent) -> str:
    """The summary, then each entry's header and body as JSON."""
    lines = [
        f"event     {event.event_id}",
        f"time      {event.time.ToDatetime().isoformat()}Z",
        f"principal {event.principal or '-'}",
        f"method    {event.method}",
        f"decision  {event.decision or '(open)'}",
        f"status    {event.status_code or '-'} {event.reason}".rstrip(),
    ]
    for entry in event.entries:
        lines.append(f"\n{entry.kind} (seq {entry.seq}, hash {entry.hash})")
        lines.append(json.dumps(json_format.MessageToDict(entry.body), indent=2, sort_keys=True))
    return "\n".join(lines)
