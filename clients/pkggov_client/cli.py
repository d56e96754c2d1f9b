"""The `pkggov` command line: governed package-version deletion through the gateway
(`pkggov delete`; under a recovery window the versions are archived, and `pkggov restore`
brings them back before their purge), the pending purges (`pkggov pending list`, in
`_pending_cli`), deletion requests that wait for approval (`pkggov approvals ...`, in
`_approvals_cli`), retention plans and the jobs that apply them (`pkggov cleanup ...`, in
`_cleanup_cli`) and reading its audit record (`pkggov audit list|show`, in `_audit_cli`). The
operator tools that need the gateway's own code (`policy validate|test`, `audit verify`) are
`pkggov-admin`, installed with the gateway; `pkggov policy` only says so (`_moved`). The options
every command shares to reach the gateway are in `_connection`; results are laid out as text in
`_render`.

Exit statuses: 0 when every version was deleted (or archived; for `restore`, restored), 3 when
the call succeeded but some versions failed, 1 when the call itself failed (an RPC error), 2
for a usage error. A dry run (`pkggov delete --dry-run`) prints the plan for every version and
exits 0 when every version would be deleted or archived, 3 when some would not (not found,
another status, or denied with --allow-partial), and 1 when the real call would fail: a version
is denied and --allow-partial is not given, or a version needs approval (the plan is still
printed), or the dry run itself failed; `pkggov restore --dry-run` likewise (it has no
--allow-partial: a denied version makes it 1). A delete that needs approval (APPROVAL_REQUIRED)
exits 1 too, and says on stderr which deletion request it recorded and how to approve and
execute it. `pkggov cleanup` exits likewise: 3 when a job succeeded but some planned deletions
were not done, 1 when the call failed or the job failed or was cancelled (`_cleanup_cli`). A
reader of stdout that goes away (``pkggov delete ... | head -1``) changes none of these.

Identity: a bearer token (a CI job's OIDC token, a Kubernetes projected service-account token)
from ``--token-file FILE`` (read again whenever it changes) or ``--token-env NAME``, sent as
``authorization: Bearer`` over TLS, or in plaintext to a loopback ``--target`` only; a client
certificate (``--cert``, ``--key``); or, for a gateway in development mode, ``--as NAME``.

Environment: ``PKGGOV_CLI_TARGET`` (or the older ``PKGGOV_TARGET``), ``PKGGOV_CLI_TOKEN_FILE``
(the token file when neither --token-file, --token-env, --as nor --header authorization=... is
given) and ``PKGGOV_CLI_PRINCIPAL_KEY``; the gateway ignores every ``PKGGOV_CLI_*`` variable, so
they can be set in the shell that runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pkggov_client._approvals_cli import add_approvals_commands, approval_required_hint
from pkggov_client._audit_cli import add_audit_commands
from pkggov_client._cleanup_cli import add_cleanup_commands
from pkggov_client._cli_base import (
    ArgumentParser,
    UsageError,
    emit,
    emit_json,
    error_to_dict,
    finish_stdout,
    message_to_dict,
    text_arg,
)
from pkggov_client._client import PkggovClient
from pkggov_client._connection import (
    add_principal_header,
    add_token,
    connect,
    connection_parser,
    principal_arg,
    principal_key,
    report_error,
)
from pkggov_client._errors import PkggovError
from pkggov_client._model import (
    DeleteResult,
    PackageFormat,
    PackageVersionStatus,
    RestoreResult,
    ordered_keys,
)
from pkggov_client._moved import add_moved_command
from pkggov_client._pending_cli import add_pending_commands
from pkggov_client._render import (
    render_plan,
    render_table,
    restore_hint,
)
from pkggov_client._text import printable
from pkggov_client._token import TokenError

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_RPC_ERROR",
    "EXIT_USAGE",
    "build_parser",
    "error_to_dict",
    "main",
    "render_plan",
    "render_table",
]

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ASCII_SPACE = " \t\r\f\v"
"""The whitespace a version may not hold (the gateway's rule reads \\s as ASCII only)."""

Handler = Callable[[argparse.Namespace], int]


def _enum_arg(
    enum_type: type[PackageFormat] | type[PackageVersionStatus], what: str
) -> Callable[[str], PackageFormat | PackageVersionStatus]:
    """Return an argparse type that reads an enum member in any letter case."""

    def parse(text: str) -> PackageFormat | PackageVersionStatus:
        try:
            return enum_type(text)
        except ValueError:
            choices = ", ".join(member.value for member in enum_type)
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r} (choose from {choices})"
            ) from None

    return parse


def _request_id_arg(text: str) -> str:
    """Read an AIP-155 request id: a UUID in its 8-4-4-4-12 form, as the gateway requires."""
    if _UUID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"invalid request id {text!r}: expected a UUID (8-4-4-4-12 hex digits)"
        )
    return text


def parse_versions(text: str, source: str) -> list[str]:
    """The versions in `text`, one per line: surrounding spaces, blank lines and everything
    after a ``#`` are ignored (a version holds neither whitespace nor ``#``). Only "\\n" (and
    "\\r\\n") end a line. Raises UsageError naming `source` and the line of a line that holds
    more than one word, or that is not UTF-8 (a byte kept as a surrogate by surrogateescape)."""
    versions = []
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{source}:{number}: not UTF-8 text: '{printable(line)}'") from None
        version = line.split("#", 1)[0].strip(_ASCII_SPACE)
        if not version:
            continue
        if any(space in version for space in _ASCII_SPACE):
            raise UsageError(
                f"{source}:{number}: expected one version per line, got '{printable(version)}'"
            )
        versions.append(version)
    return versions


def _read_versions(source: str) -> list[str]:
    """The versions of --versions-from SOURCE: a UTF-8 file, or standard input for "-". The
    bytes are read as they are (no newline translation), and `parse_versions` names a line
    that is not UTF-8."""
    if source == "-":
        stdin = getattr(sys.stdin, "buffer", None)  # a test's text stream has none
        data = sys.stdin.read() if stdin is None else stdin.read()
        text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
        return parse_versions(text, "<stdin>")
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {printable(source)}: {error.strerror}") from error
    return parse_versions(data.decode("utf-8", "surrogateescape"), printable(source))


def _versions(args: argparse.Namespace) -> list[str]:
    """The VERSION arguments, then those of each --versions-from in order."""
    if "-" in args.versions:
        raise UsageError(
            "'-' is not read as standard input here; use --versions-from - to read versions "
            "from standard input (a version named '-' can be listed in a --versions-from file)"
        )
    versions = list(args.versions)
    for source in args.versions_from:
        versions.extend(_read_versions(source))
    if not versions:
        raise UsageError("no versions given: name them as arguments or with --versions-from")
    return versions


def _add_package_options(command: argparse.ArgumentParser) -> None:
    """The options that name one package, shared by `delete` and `restore`."""
    command.add_argument("--domain", required=True, type=text_arg, help="CodeArtifact domain")
    command.add_argument(
        "--domain-owner", type=text_arg, metavar="ACCOUNT_ID", help="12-digit domain owner"
    )
    command.add_argument(
        "--repository", required=True, type=text_arg, help="repository holding the package"
    )
    command.add_argument(
        "--format",
        required=True,
        type=_enum_arg(PackageFormat, "format"),
        metavar="{" + ",".join(PackageFormat) + "}",
        help="package format (any letter case)",
    )
    command.add_argument(
        "--namespace", type=text_arg, help="package namespace (npm scope without @, groupId)"
    )
    command.add_argument("--package", required=True, type=text_arg, help="package name")


def _add_request_id_option(command: argparse.ArgumentParser, again: str) -> None:
    command.add_argument(
        "--request-id",
        type=_request_id_arg,
        metavar="UUID",
        help=(
            "name the call for safe retries (AIP-155): a retry with the same id and request "
            f"gets the recorded answer instead of {again} (default: a new UUID, printed)"
        ),
    )


def _add_version_arguments(command: argparse.ArgumentParser, verb: str) -> None:
    """--versions-from FILE and the VERSION arguments."""
    command.add_argument(
        "--versions-from",
        action="append",
        default=[],
        metavar="FILE",
        help=(
            f"also {verb} the versions listed in FILE, one per line (blank lines and text "
            "after # are ignored); - reads standard input; repeatable"
        ),
    )
    command.add_argument(
        "versions",
        nargs="*",
        type=text_arg,
        metavar="VERSION",
        help=f"versions to {verb} (at least one here or in --versions-from)",
    )


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Build the `pkggov` argument parser; `environ` supplies defaults such as
    PKGGOV_CLI_TARGET."""
    parser: argparse.ArgumentParser = ArgumentParser(
        prog="pkggov",
        description="Talk to the pkggov package governance gateway.",
        epilog=(
            f"exit status: {EXIT_OK} all deleted, archived or restored (or, for --dry-run, all "
            f"would be), {EXIT_PARTIAL} some versions failed (would fail), "
            f"{EXIT_RPC_ERROR} the call failed (or, for --dry-run, would), {EXIT_USAGE} usage error"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = connection_parser(environ)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete versions of one package",
        description=(
            "Delete versions of one package, as CodeArtifact's DeletePackageVersions. Where the "
            "gateway gives the repository a recovery window, the versions are archived instead "
            "and purged when it ends, unless restored before (pkggov restore)."
        ),
        epilog=(
            "Without --request-id a new one is made for each call and printed (on stderr, or as "
            "requestId with --json): pass it to --request-id to retry a call safely. "
            f"exit status: {EXIT_OK} all deleted or archived (would be), {EXIT_PARTIAL} some "
            f"not, {EXIT_RPC_ERROR} the call failed (a dry run: the real call would fail), "
            f"{EXIT_USAGE} usage error"
        ),
    )
    delete.add_argument(
        "--principal",
        dest="as_principal",
        type=principal_arg(principal_key(environ)),
        metavar="NAME",
        help="the same as --as NAME",
    )
    _add_package_options(delete)
    delete.add_argument(
        "--expected-status",
        type=_enum_arg(PackageVersionStatus, "status"),
        metavar="{" + ",".join(PackageVersionStatus) + "}",
        help="delete only versions in this status (any letter case)",
    )
    delete.add_argument(
        "--justification",
        type=text_arg,
        metavar="TEXT",
        help="why the versions are deleted, for policy and audit (at most 1024 characters)",
    )
    delete.add_argument(
        "--allow-partial",
        action="store_true",
        help=(
            "delete the versions policy allows and report denied ones as NOT_ALLOWED, "
            "instead of failing the whole call when any version is denied"
        ),
    )
    delete.add_argument(
        "--purge-now",
        action="store_true",
        help=(
            "delete at once, even where a recovery window would archive the versions (they "
            "cannot be restored); policy decides who may"
        ),
    )
    delete.add_argument(
        "--dry-run",
        action="store_true",
        help=(
            "check and decide everything as the real call would, delete nothing, and print "
            "the plan for every version, denied ones included (exit "
            f"{EXIT_OK} if every version would be deleted or archived, {EXIT_PARTIAL} if not, "
            f"{EXIT_RPC_ERROR} if the real call would fail: a version is denied and "
            "--allow-partial is not given)"
        ),
    )
    _add_request_id_option(delete, "deleting again")
    _add_version_arguments(delete, "delete")
    delete.set_defaults(func=_run_delete)

    restore = commands.add_parser(
        "restore",
        parents=[common],
        help="restore archived versions of one package before their purge",
        description=(
            "Restore versions that a delete archived under a recovery window, before their "
            "purge: each goes back to the status it had, and its purge is cancelled."
        ),
        epilog=(
            "Without --request-id a new one is made for each call and printed (on stderr, or as "
            "requestId with --json): pass it to --request-id to retry a call safely. "
            f"exit status: {EXIT_OK} all restored (would be), {EXIT_PARTIAL} some not, "
            f"{EXIT_RPC_ERROR} the call failed (a dry run: the real call would fail), "
            f"{EXIT_USAGE} usage error"
        ),
    )
    _add_package_options(restore)
    restore.add_argument(
        "--justification",
        type=text_arg,
        metavar="TEXT",
        help="why the versions are restored, for policy and audit (at most 1024 characters)",
    )
    restore.add_argument(
        "--dry-run",
        action="store_true",
        help=(
            "check and decide everything as the real call would, restore nothing, and print "
            f"the plan for every version (exit {EXIT_OK} if every version would be restored, "
            f"{EXIT_PARTIAL} if not, {EXIT_RPC_ERROR} if the real call would fail: a version "
            "is denied)"
        ),
    )
    _add_request_id_option(restore, "restoring again")
    _add_version_arguments(restore, "restore")
    restore.set_defaults(func=_run_restore)

    add_moved_command(commands, "policy", "pkggov-admin policy")
    add_audit_commands(commands, common, connect, report_error)
    add_pending_commands(commands, common, connect, report_error)
    add_approvals_commands(commands, common, connect, report_error)
    add_cleanup_commands(commands, common, connect, report_error)
    return parser


_Call = Callable[[PkggovClient, list[str], str | None], DeleteResult | RestoreResult]
"""Makes the call of `delete` or `restore`: (client, versions, request id) -> its result."""


def _run_versions_call(args: argparse.Namespace, command: str, call: _Call) -> int:
    """Run `pkggov delete` or `pkggov restore` (`command`): read the versions, make a request
    id for a real call (printed before the call: a call cut short is the one to retry), call,
    and print the result or the plan; return the exit status."""
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(connect(args))
            versions = _versions(args)
        except UsageError as error:
            print(f"pkggov {command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        request_id: str | None = args.request_id
        if request_id is None and not args.dry_run:
            request_id = str(uuid.uuid4())
            if not args.json:
                print(
                    f"request id {request_id} (to retry this call safely: --request-id "
                    f"{request_id})",
                    file=sys.stderr,
                )
        try:
            result = call(client, versions, request_id)
        except PkggovError as err:
            report_error(err, args, request_id=request_id)
            hint = approval_required_hint(err)
            if hint is not None and not args.json:
                print(hint, file=sys.stderr)
            return EXIT_RPC_ERROR
    if args.dry_run:
        return _report_plan(result, args, versions, request_id)
    _print_result(result, args, versions, request_id)
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _run_delete(args: argparse.Namespace) -> int:
    """Handle `pkggov delete`.

    A dry run asks the gateway for the whole plan (allow_partial, so that denied versions do
    not hide the others' decisions) and then exits as the real call would end: 1 when a version
    is denied and --allow-partial is not given.
    """

    def call(client: PkggovClient, versions: list[str], request_id: str | None) -> DeleteResult:
        return client.delete_package_versions(
            domain=args.domain,
            domain_owner=args.domain_owner,
            repository=args.repository,
            format=args.format,
            namespace=args.namespace,
            package=args.package,
            versions=versions,
            expected_status=args.expected_status,
            justification=args.justification,
            validate_only=args.dry_run,
            allow_partial=args.allow_partial or args.dry_run,
            request_id=request_id,
            purge_now=args.purge_now,
        )

    return _run_versions_call(args, "delete", call)


def _run_restore(args: argparse.Namespace) -> int:
    """Handle `pkggov restore`: as `pkggov delete`, with RestorePackageVersions (which has no
    allow_partial: a denied version fails the whole call, and its dry run too)."""

    def call(client: PkggovClient, versions: list[str], request_id: str | None) -> RestoreResult:
        return client.restore_package_versions(
            domain=args.domain,
            domain_owner=args.domain_owner,
            repository=args.repository,
            format=args.format,
            namespace=args.namespace,
            package=args.package,
            versions=versions,
            justification=args.justification,
            validate_only=args.dry_run,
            request_id=request_id,
        )

    return _run_versions_call(args, "restore", call)


def _print_result(
    result: DeleteResult | RestoreResult,
    args: argparse.Namespace,
    versions: list[str],
    request_id: str | None,
) -> None:
    """Print a response: as proto3 JSON with the request id, or as a table (a dry run's as a
    plan) with the audit event id on stderr. After a delete that archived versions, the text
    form ends with the `pkggov restore` command that brings them back before their purge."""
    if args.json:
        output = message_to_dict(result.raw)
        for name in ("successfulVersions", "failedVersions", "decisions"):  # in request order
            by_version = output[name]
            output[name] = {v: by_version[v] for v in ordered_keys(by_version, versions)}
        if request_id is not None:
            output["requestId"] = request_id
        emit_json(output)
        return
    emit(
        render_plan(result, order=versions)
        if result.decisions
        else render_table(result, order=versions)
    )
    if isinstance(result, DeleteResult):
        hint = restore_hint(
            result,
            domain=args.domain,
            domain_owner=args.domain_owner,
            repository=args.repository,
            format=args.format.value,
            namespace=args.namespace,
            package=args.package,
        )
        if hint is not None:
            emit(hint)
    if result.audit_event_id is not None:
        print(f"audit event {printable(result.audit_event_id)}", file=sys.stderr)


def _report_plan(
    result: DeleteResult | RestoreResult,
    args: argparse.Namespace,
    versions: list[str],
    request_id: str | None,
) -> int:
    """Print a dry run's plan and return its exit status."""
    restore = isinstance(result, RestoreResult)
    if not result.decisions:
        # A gateway that predates validate_only ignores it and really deletes: say so loudly.
        done = "RESTORED" if restore else "DELETED"
        changed = f"; it {done} {len(result.successful)} version(s)" if result.successful else ""
        print(
            f"error: the gateway returned no dry-run plan{changed} "
            "(it may be too old to support --dry-run)",
            file=sys.stderr,
        )
        _print_result(result, args, versions, request_id)
        return EXIT_RPC_ERROR
    _print_result(result, args, versions, request_id)
    denied = [printable(v) for v, d in result.decisions.items() if d.outcome == "DENIED"]
    if denied and (restore or not args.allow_partial):
        if not args.json:
            partial = (
                ""
                if restore
                else "; with --allow-partial it would delete the allowed ones and report these "
                "NOT_ALLOWED"
            )
            print(
                f"error: the real call would fail with PERMISSION_DENIED (POLICY_DENIED): policy "
                f"denies {len(denied)} of {len(result.decisions)} version(s) "
                f"({', '.join(denied[:3])}{', ...' if len(denied) > 3 else ''}){partial}",
                file=sys.stderr,
            )
        return EXIT_RPC_ERROR
    needing = [printable(v) for v, d in result.decisions.items() if d.needs_approval]
    if needing:
        if not args.json:
            print(
                "error: the real call would fail with FAILED_PRECONDITION (APPROVAL_REQUIRED): "
                f"policy allows {len(needing)} of {len(result.decisions)} version(s) only once "
                f"approved ({', '.join(needing[:3])}{', ...' if len(needing) > 3 else ''}); it "
                "would delete nothing and record a deletion request for approvers to vote on "
                "(see pkggov approvals)",
                file=sys.stderr,
            )
        return EXIT_RPC_ERROR
    if isinstance(result, RestoreResult):
        return EXIT_OK if result.all_would_restore else EXIT_PARTIAL
    return EXIT_OK if result.all_would_delete else EXIT_PARTIAL


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI and return its exit status; `environ` defaults to the process environment.

    Every subcommand's parser sets ``func``, an ``(args) -> int`` handler that `main` calls.
    The status is the command's own even when the reader of stdout has gone (EPIPE).
    """
    environment = os.environ if environ is None else environ
    parser = build_parser(environment)
    try:
        args = parser.parse_args(argv)
        add_principal_header(parser, args)
        add_token(parser, args, environment)
    except SystemExit as exit_:  # argparse exits for --help, --version and usage errors.
        finish_stdout()
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler = args.func
    try:
        status = handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except TokenError as error:  # the token file went away or went bad between two calls
        print(f"pkggov: error: {error}", file=sys.stderr)
        status = EXIT_USAGE
    finish_stdout()
    return status
