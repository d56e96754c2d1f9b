"""The `pkggov` command line: governed package-version deletion through the gateway.

Exit statuses: 0 when every version was deleted, 3 when the call succeeded but some versions
failed, 1 when the call itself failed (an RPC error), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pkggov_client._client import DEFAULT_TIMEOUT, PkggovClient, check_metadata
from pkggov_client._errors import PkggovError
from pkggov_client._model import DeleteResult, PackageFormat, PackageVersionStatus, ordered_keys

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_RPC_ERROR",
    "EXIT_USAGE",
    "build_parser",
    "error_to_dict",
    "main",
    "render_table",
]

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PKGGOV_TARGET"

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


def _seconds_arg(text: str) -> float:
    """Read a positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: expected positive seconds")
    return seconds


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
            f"exit status: {EXIT_OK} all deleted, {EXIT_PARTIAL} some versions failed, "
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
    delete.add_argument("versions", nargs="+", metavar="VERSION", help="versions to delete")
    delete.set_defaults(handler=_run_delete)
    return parser


def _run_delete(args: argparse.Namespace) -> int:
    """Handle `pkggov delete`."""
    try:
        with PkggovClient(args.target, metadata=args.headers, timeout=args.timeout) as client:
            result = client.delete_package_versions(
                domain=args.domain,
                domain_owner=args.domain_owner,
                repository=args.repository,
                format=args.format,
                namespace=args.namespace,
                package=args.package,
                versions=args.versions,
                expected_status=args.expected_status,
            )
    except PkggovError as err:
        _print_error(err, as_json=args.json)
        return EXIT_RPC_ERROR
    if args.json:
        print(json.dumps(result.to_codeartifact_dict(), indent=2))
    else:
        print(render_table(result, order=args.versions))
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"{version:<{widths[0]}}  {outcome:<{widths[1]}}  {code:<{widths[2]}}  {detail}".rstrip()
        for version, outcome, code, detail in rows
    ]
    lines.append(f"{len(result.successful)} deleted, {len(result.failed)} failed")
    return "\n".join(lines)


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
            },
        }
    }


def _print_error(err: PkggovError, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(error_to_dict(err), indent=2))
    else:
        print(f"error: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI and return its exit status; `environ` defaults to the process environment."""
    parser = build_parser(os.environ if environ is None else environ)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help and for usage errors.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
