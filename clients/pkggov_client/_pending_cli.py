"""`pkggov pending list`: the versions archived under a recovery window whose purge is pending,
soonest due first, read through the gateway (ListPendingPurges, authorized as reading the audit
record). Exit status: 0 ok, 1 the call failed, 2 usage error.

As `pkggov audit list`: one page by default, ending with ``more: --page-token TOKEN`` when
there is another; ``--all`` follows the page tokens to the end and prints one table (or one
JSON object holding every pending purge). Every value shown is `printable`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pkggov_client import pb
from pkggov_client._cli_base import (
    MAX_PAGE_SIZE,
    UsageError,
    emit,
    emit_json,
    message_to_dict,
    page_size_arg,
    text_arg,
    time_arg,
)
from pkggov_client._errors import PkggovError
from pkggov_client._model import PendingPurge
from pkggov_client._render import render_time
from pkggov_client._text import printable

if TYPE_CHECKING:
    from pkggov_client._client import PkggovClient

__all__ = ["add_pending_commands", "render_pending_purges"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_PAGE_SIZE = 20
"""Pending purges per page of one `pending list` (as `audit list --limit`)."""
ALL_PAGE_SIZE = MAX_PAGE_SIZE
"""Pending purges per page with --all (the gateway's largest page: fewer round trips)."""


def add_pending_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    connect: Callable[[argparse.Namespace], PkggovClient],
    report_error: Callable[[PkggovError, argparse.Namespace], None],
) -> None:
    """Add ``pending list`` to the `pkggov` subcommands; `common` holds the connection options,
    `connect` opens a client for them (UsageError for bad TLS options) and `report_error`
    prints a failed call."""
    pending = subparsers.add_parser(
        "pending",
        help="versions archived under a recovery window, awaiting their purge",
        description=(
            "The versions a delete archived under a recovery window, whose purge is pending: "
            "each is purged at its time unless restored before (pkggov restore)."
        ),
    )
    commands = pending.add_subparsers(dest="pending_command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list pending purges, soonest due first",
        description=(
            "List the pending purges, soonest due first; filters left out match everything. "
            "Authorized as reading the audit record."
        ),
        epilog=(
            f"exit status: {EXIT_OK} ok, {EXIT_FAILED} the call failed, {EXIT_USAGE} usage error"
        ),
    )
    for name in ("domain", "repository", "package"):
        listing.add_argument(f"--{name}", type=text_arg, help=f"only versions of this {name}")
    listing.add_argument(
        "--requester",
        type=text_arg,
        metavar="PRINCIPAL",
        help="only versions archived by this principal's request, as the gateway identified it "
        "(e.g. alice, or spiffe://... under mTLS)",
    )
    listing.add_argument(
        "--due-before",
        type=time_arg,
        metavar="TIME",
        help="ISO 8601 time: only purges due before it (no offset: local time)",
    )
    listing.add_argument(
        "--page-size",
        type=page_size_arg,
        metavar="N",
        help=f"pending purges per page, 1 to {ALL_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}; "
        f"with --all, {ALL_PAGE_SIZE})",
    )
    listing.add_argument(
        "--page-token", type=text_arg, default="", help="next_page_token of a previous page"
    )
    listing.add_argument(
        "--all",
        action="store_true",
        help="follow the page tokens and list every pending purge (from --page-token, if given)",
    )

    def run_list(args: argparse.Namespace) -> int:
        page_size: int = args.page_size or (ALL_PAGE_SIZE if args.all else DEFAULT_PAGE_SIZE)
        pages: list[pb.ListPendingPurgesResponse] = []
        token: str = args.page_token
        seen = {token}
        try:
            with connect(args) as client:
                while True:
                    page = client.list_pending_purges(
                        domain=args.domain,
                        repository=args.repository,
                        package=args.package,
                        requester=args.requester,
                        due_before=args.due_before,
                        page_size=page_size,
                        page_token=token,
                    )
                    pages.append(page.raw)
                    if not args.all or page.next_page_token is None:
                        break
                    if page.next_page_token in seen:  # a gateway that never ends the listing
                        print(
                            "pkggov pending list: error: the gateway returned a page token it "
                            "had returned before; stopped",
                            file=sys.stderr,
                        )
                        return EXIT_FAILED
                    token = page.next_page_token
                    seen.add(token)
        except UsageError as error:
            print(f"pkggov pending list: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except PkggovError as err:
            report_error(err, args)
            return EXIT_FAILED
        merged = pb.ListPendingPurgesResponse(next_page_token=pages[-1].next_page_token)
        for raw in pages:
            merged.pending_purges.extend(raw.pending_purges)
        if args.json:
            emit_json(message_to_dict(merged))
        else:
            emit(render_pending_purges(PendingPurge.from_proto(p) for p in merged.pending_purges))
            if merged.next_page_token:
                emit(f"more: --page-token {printable(merged.next_page_token)}")
        return EXIT_OK

    listing.set_defaults(func=run_list)


def _package(purge: PendingPurge) -> str:
    """domain/repository/[namespace/]package, with "@owner" after the domain when named."""
    domain = purge.domain if purge.domain_owner is None else f"{purge.domain}@{purge.domain_owner}"
    name = purge.package if purge.namespace is None else f"{purge.namespace}/{purge.package}"
    return f"{domain}/{purge.repository}/{name}"


def render_pending_purges(purges: Iterable[PendingPurge]) -> str:
    """A table, soonest due first as the gateway lists them: purge time, format, package
    (domain/repository/[namespace/]package), version, the status a restore brings back,
    requester, archive time, failed attempts and the last error."""
    rows = [
        (
            "PURGE AT",
            "FORMAT",
            "PACKAGE",
            "VERSION",
            "RESTORES TO",
            "REQUESTER",
            "ARCHIVED AT",
            "ATTEMPTS",
            "LAST ERROR",
        )
    ]
    for purge in purges:
        rows.append(
            (
                render_time(purge.purge_time),
                "-" if purge.format is None else purge.format.value,
                printable(_package(purge)),
                printable(purge.version),
                "-" if purge.previous_status is None else purge.previous_status.value,
                printable(purge.requester or "-"),
                render_time(purge.archive_time),
                str(purge.attempts),
                printable(" ".join((purge.last_error or "-").split())),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
