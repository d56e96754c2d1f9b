"""The `pkggov` command line: governed package-version deletion through the gateway, and
offline checks of a Cedar policy set (`pkggov policy validate|test`, in `_policy_cli`).

Exit statuses: 0 when every version was deleted, 3 when the call succeeded but some versions
failed, 1 when the call itself failed (an RPC error), 2 for a usage error. A dry run
(`pkggov delete --dry-run`) exits 0 when every version would be deleted, 3 when some would not
and 1 when the call failed, which it does exactly when the real call would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from pkggov_client._audit_cli import add_audit_commands
from pkggov_client._client import DEFAULT_TIMEOUT, PkggovClient, check_metadata
from pkggov_client._errors import PkggovError
from pkggov_client._model import (
    DeleteResult,
    PackageFormat,
    PackageVersionStatus,
    VersionDecision,
    ordered_keys,
)
from pkggov_client._policy_cli import add_policy_commands

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

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PKGGOV_TARGET"
DEV_PRINCIPAL_KEY = "x-pkggov-principal"
DEV_PRINCIPAL_KEY_ENV = "PKGGOV_DEV_PRINCIPAL_KEY"

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


def _header_arg(text: str) -> tuple[str, str]:
    """Read `KEY=VALUE` as one call-metadata pair; the key is lower-cased."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected KEY=VALUE")
    try:
        (pair,) = check_metadata([(key.strip().lower(), value)])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return pair


def _principal_arg(key: str) -> Callable[[str], tuple[str, str]]:
    """Return an argparse type that reads a principal name as the pair (`key`, NAME)."""

    def parse(text: str) -> tuple[str, str]:
        if not text:
            raise argparse.ArgumentTypeError("invalid principal '': expected a name")
        try:
            (pair,) = check_metadata([(key, text)])
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{err} (key from ${DEV_PRINCIPAL_KEY_ENV})") from None
        return pair

    return parse


def _seconds_arg(text: str) -> float:
    """Read a positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: expected positive seconds")
    return seconds


class UsageError(Exception):
    """Raised for a bad combination of options that argparse cannot express."""


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from --cacert/--cert/--key, or None for plaintext."""
    if args.cacert is None:
        if args.cert is not None or args.key is not None:
            raise UsageError("--cert and --key need --cacert (TLS)")
        return None
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=args.cacert.read_bytes(),
            private_key=args.key.read_bytes() if args.key else None,
            certificate_chain=args.cert.read_bytes() if args.cert else None,
        )
    except OSError as error:
        raise UsageError(f"cannot read {error.filename}: {error.strerror}") from error


def _connection_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Options every subcommand shares: where the gateway is, call metadata, output form."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output")
    default_target = environ.get(TARGET_ENV) or DEFAULT_TARGET
    group.add_argument(
        "--target",
        default=default_target,
        metavar="HOST:PORT",
        help=f"gateway address (default: ${TARGET_ENV} or {DEFAULT_TARGET}; now {default_target})",
    )
    group.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header_arg,
        default=[],
        metavar="KEY=VALUE",
        help="call metadata to send; repeat for several",
    )
    group.add_argument(
        "--cacert",
        type=Path,
        metavar="FILE",
        help="use TLS, trusting the gateway certificate's CA in FILE (PEM); without it the "
        "connection is plaintext",
    )
    group.add_argument(
        "--cert", type=Path, metavar="FILE", help="client certificate (PEM) for mTLS"
    )
    group.add_argument("--key", type=Path, metavar="FILE", help="client private key (PEM) for mTLS")
    principal_key = (environ.get(DEV_PRINCIPAL_KEY_ENV) or DEV_PRINCIPAL_KEY).strip().lower()
    group.add_argument(
        "--principal",
        type=_principal_arg(principal_key),
        metavar="NAME",
        help=(
            "development mode only: call as NAME by sending the header "
            f"{principal_key}=NAME (key from ${DEV_PRINCIPAL_KEY_ENV}, default "
            f"{DEV_PRINCIPAL_KEY}); a gateway not in development mode does not trust it"
        ),
    )
    group.add_argument(
        "--timeout",
        type=_seconds_arg,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of the call (default: {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parent


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Build the `pkggov` argument parser; `environ` supplies defaults such as PKGGOV_TARGET."""
    parser = argparse.ArgumentParser(
        prog="pkggov",
        description="Talk to the pkggov package governance gateway.",
        epilog=(
            f"exit status: {EXIT_OK} all deleted (or, for --dry-run, all would be), "
            f"{EXIT_PARTIAL} some versions failed (would not be deleted), "
            f"{EXIT_RPC_ERROR} the call failed, {EXIT_USAGE} usage error"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _connection_parser(environ)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete versions of one package",
        description="Delete versions of one package, as CodeArtifact's DeletePackageVersions.",
    )
    delete.add_argument("--domain", required=True, help="CodeArtifact domain")
    delete.add_argument("--domain-owner", metavar="ACCOUNT_ID", help="12-digit domain owner")
    delete.add_argument("--repository", required=True, help="repository holding the package")
    delete.add_argument(
        "--format",
        required=True,
        type=_enum_arg(PackageFormat, "format"),
        metavar="{" + ",".join(PackageFormat) + "}",
        help="package format (any letter case)",
    )
    delete.add_argument("--namespace", help="package namespace (npm scope without @, groupId)")
    delete.add_argument("--package", required=True, help="package name")
    delete.add_argument(
        "--expected-status",
        type=_enum_arg(PackageVersionStatus, "status"),
        metavar="{" + ",".join(PackageVersionStatus) + "}",
        help="delete only versions in this status (any letter case)",
    )
    delete.add_argument(
        "--justification",
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
        "--dry-run",
        action="store_true",
        help=(
            "check and decide everything as the real call would, delete nothing, and print "
            f"the plan (exit {EXIT_OK} if every version would be deleted, {EXIT_PARTIAL} if "
            f"not, {EXIT_RPC_ERROR} if the real call would fail)"
        ),
    )
    delete.add_argument("versions", nargs="+", metavar="VERSION", help="versions to delete")
    delete.set_defaults(func=_run_delete)

    add_policy_commands(commands)
    add_audit_commands(
        commands, common, _connect, lambda err, as_json: _print_error(err, as_json=as_json)
    )
    return parser


def _connect(args: argparse.Namespace) -> PkggovClient:
    """A client for the connection options of `args` (UsageError for bad TLS options)."""
    return PkggovClient(
        args.target,
        credentials=_credentials(args),
        metadata=args.headers,
        timeout=args.timeout,
    )


def _run_delete(args: argparse.Namespace) -> int:
    """Handle `pkggov delete`."""
    try:
        credentials = _credentials(args)
    except UsageError as error:
        print(f"pkggov delete: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with PkggovClient(
            args.target,
            credentials=credentials,
            metadata=args.headers,
            timeout=args.timeout,
        ) as client:
            result = client.delete_package_versions(
                domain=args.domain,
                domain_owner=args.domain_owner,
                repository=args.repository,
                format=args.format,
                namespace=args.namespace,
                package=args.package,
                versions=args.versions,
                expected_status=args.expected_status,
                justification=args.justification,
                validate_only=args.dry_run,
                allow_partial=args.allow_partial,
            )
    except PkggovError as err:
        _print_error(err, as_json=args.json)
        return EXIT_RPC_ERROR
    if args.dry_run:
        return _report_plan(result, args)
    if args.json:
        print(json.dumps(result.to_codeartifact_dict(), indent=2))
    else:
        print(render_table(result, order=args.versions))
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _report_plan(result: DeleteResult, args: argparse.Namespace) -> int:
    """Print a dry run's plan and return its exit status."""
    if not result.decisions:
        # A gateway that predates validate_only ignores it and really deletes: say so loudly.
        deleted = f"; it DELETED {len(result.successful)} version(s)" if result.successful else ""
        print(
            f"error: the gateway returned no dry-run plan{deleted} "
            "(it may be too old to support --dry-run)",
            file=sys.stderr,
        )
        if args.json:
            print(json.dumps(result.to_codeartifact_dict(), indent=2))
        else:
            print(render_table(result, order=args.versions))
        return EXIT_RPC_ERROR
    if args.json:
        print(json.dumps(result.to_plan_dict(), indent=2))
    else:
        print(render_plan(result, order=args.versions))
    return EXIT_OK if result.all_would_delete else EXIT_PARTIAL


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _outcome_label(outcome: str) -> str:
    """Return an outcome in words: "WOULD_DELETE" becomes "would delete"."""
    return outcome.lower().replace("_", " ")


def _decision_detail(decision: VersionDecision) -> str:
    """The POLICIES / MESSAGE cell: the message, preceded by any policy id it does not name."""
    message = _one_line(decision.message)
    unnamed = [policy for policy in decision.policy_ids if policy not in message]
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
                version,
                _outcome_label(decision.outcome),
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
            rows.append((version, "deleted", status, done.revision))
        else:
            failed = result.failed[version]
            rows.append((version, "failed", failed.error_code, _one_line(failed.message)))
    summary = f"{len(result.successful)} deleted, {len(result.failed)} failed"
    return "\n".join([*_columns(rows), summary])


def error_to_dict(err: PkggovError) -> dict[str, Any]:
    """Return the JSON form of an error: ``{"error": {"code": ..., "reason": ..., ...}}``."""
    return {
        "error": {
            "code": err.code.name,
            "reason": err.reason,
            "domain": err.domain,
            "message": err.message,
            "details": {
                "metadata": dict(err.metadata),
                "fieldViolations": [
                    {"field": field, "description": description}
                    for field, description in err.field_violations
                ],
                "resource": (
                    None
                    if err.resource is None
                    else {
                        "resourceType": err.resource.type,
                        "resourceName": err.resource.name,
                        "description": err.resource.description,
                    }
                ),
                "retryDelaySeconds": err.retry_after,
                "deniedVersions": [
                    {"version": version, "policyIds": list(policy_ids), "reason": reason}
                    for version, policy_ids, reason in err.denied_versions
                ],
                "deniedOmitted": err.denied_omitted,
                "quotaViolations": [
                    {"subject": subject, "description": description}
                    for subject, description in err.quota_violations
                ],
            },
        }
    }


def _print_error(err: PkggovError, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(error_to_dict(err), indent=2))
    else:
        print(f"error: {err}", file=sys.stderr)


def _add_principal_header(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Append --principal's pair to the call metadata; refuse it next to a --header of its key."""
    principal: tuple[str, str] | None = getattr(args, "principal", None)
    if principal is None:
        return
    key = principal[0]
    if any(header_key == key for header_key, _ in args.headers):
        parser.error(f"--principal and --header {key}=... both set the principal; use one")
    args.headers = [*args.headers, principal]


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI and return its exit status; `environ` defaults to the process environment.

    Every subcommand's parser sets ``func``, an ``(args) -> int`` handler that `main` calls.
    """
    parser = build_parser(os.environ if environ is None else environ)
    try:
        args = parser.parse_args(argv)
        _add_principal_header(parser, args)
    except SystemExit as exit_:  # argparse exits for --help and for usage errors.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
