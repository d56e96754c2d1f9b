"""`pkggov-admin`: the operator tools, which read the gateway's own files, never a gateway.

``policy validate`` and ``policy test`` check a Cedar policy set (schema, policies, entities)
offline and default to the example set shipped with the gateway; ``audit verify`` reads an
audit store (a SQLite file or a PostgreSQL URL) directly and checks its hash chain, as an
auditor checking the record should not have to trust the gateway. They ship with the gateway
(the ``pkggov`` distribution), not with the client, because they run the gateway's adapters.

Exit status: 0 ok, 1 an invalid set, a failing case or a broken chain, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pkggov_gateway import __version__
from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    default_policy_files,
)
from pkggov_gateway.adapters.sql import open_audit_store
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.tools.audit_verify import verify
from pkggov_gateway.tools.demo_issuer import add_token_commands
from pkggov_gateway.tools.policy_test import CaseResult, run_policy_tests

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "render_results",
    "run_test",
    "run_validate",
    "run_verify",
]

PROG = "pkggov-admin"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The `pkggov-admin` parser; each leaf parser sets ``func``, its ``(args) -> int`` handler."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operator tools of the pkggov gateway: check a policy set, verify an audit "
        "store. They read files and stores directly; no gateway is contacted.",
        epilog=f"exit status: {EXIT_OK} ok, {EXIT_FAILED} invalid set, failing cases or broken "
        f"chain, {EXIT_USAGE} usage error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_policy_commands(commands)
    add_audit_commands(commands)
    add_token_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pkggov-admin` and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help, --version and usage errors.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


def add_policy_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy validate`` and ``policy test``."""
    policy = subparsers.add_parser(
        "policy",
        help="validate and test a Cedar policy set offline",
        description="Check a Cedar policy set (schema, policies, entities) without a gateway.",
        epilog=f"exit status: {EXIT_OK} ok, {EXIT_FAILED} invalid set or failing cases",
    )
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    files = argparse.ArgumentParser(add_help=False)
    group = files.add_argument_group("policy set (default: the example set shipped with pkggov)")
    group.add_argument("--schema", type=Path, metavar="FILE", help="Cedar schema file")
    group.add_argument(
        "--policies", type=Path, metavar="DIR", help="directory of *.cedar files, or one file"
    )
    group.add_argument("--entities", type=Path, metavar="FILE", help="entities file (YAML/JSON)")

    validate = commands.add_parser(
        "validate",
        parents=[files],
        help="parse the schema and policies and validate the policies against the schema",
        description=(
            "Parse the schema, every policy and the entities file, and validate the policies "
            "against the schema. Prints the policy ids, or the first error as FILE:LINE: MESSAGE."
        ),
    )
    validate.set_defaults(func=run_validate)

    test = commands.add_parser(
        "test",
        parents=[files],
        help="decide sample requests and compare with the expected decisions",
        description=(
            "Decide each case of a test file (like `opa test`) with the policy set and report "
            "CASE, EXPECT, GOT, POLICIES and pass/FAIL."
        ),
    )
    test.add_argument("file", type=Path, metavar="FILE", help="test cases (YAML or JSON)")
    test.add_argument("--json", action="store_true", help="print machine-readable JSON")
    test.set_defaults(func=run_test)


def add_audit_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit verify``."""
    audit = subparsers.add_parser(
        "audit",
        help="verify an audit store's hash chain",
        description="Verify an audit store's hash chain, reading the store itself.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify_parser = commands.add_parser(
        "verify",
        help="verify a store's hash chain (reads the store directly)",
        description="Check every entry's hash and link; report the first broken place.",
        epilog=f"exit status: {EXIT_OK} chain intact, {EXIT_FAILED} broken or unreadable",
    )
    verify_parser.add_argument(
        "--store",
        required=True,
        help="sqlite:PATH (or a file path) or postgresql://user@host:port/database",
    )
    verify_parser.add_argument("--expect-head", metavar="HASH", help="a head hash recorded earlier")
    verify_parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    verify_parser.set_defaults(func=run_verify)


def _files(args: argparse.Namespace) -> PolicyFiles:
    default = default_policy_files()
    return PolicyFiles(
        schema=args.schema or default.schema,
        policies=args.policies or default.policies,
        entities=args.entities or default.entities,
    )


def run_validate(args: argparse.Namespace) -> int:
    """Handle `pkggov-admin policy validate`."""
    try:
        engine = CedarPolicyEngine(_files(args))
    except PolicyLoadError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    ids = engine.policy_ids()
    print(f"ok: {len(ids)} policies: {', '.join(ids)}")
    return EXIT_OK


def run_test(args: argparse.Namespace) -> int:
    """Handle `pkggov-admin policy test FILE`."""
    try:
        results = run_policy_tests(_files(args), args.file)
    except PolicyLoadError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    failed = sum(not result.passed for result in results)
    if args.json:
        summary = {"passed": len(results) - failed, "failed": failed}
        print(json.dumps({"cases": [r.to_dict() for r in results], **summary}, indent=2))
    else:
        print(render_results(results))
    return EXIT_FAILED if failed else EXIT_OK


def render_results(results: list[CaseResult]) -> str:
    """A table of CASE, EXPECT, GOT, POLICIES, RESULT and a summary "N passed, M failed".

    A failing row also shows the expected policies and any evaluation errors below it.
    """
    rows = [("CASE", "EXPECT", "GOT", "POLICIES", "RESULT")]
    notes: dict[int, list[str]] = {}
    for result in results:
        rows.append(
            (
                result.name,
                result.expect,
                result.got,
                ", ".join(result.policies) or "-",
                "pass" if result.passed else "FAIL",
            )
        )
        lines = [f"    error: {error}" for error in result.errors]
        if not result.passed and result.expected_policies is not None:
            expected = ", ".join(result.expected_policies) or "none"
            lines.insert(0, f"    expected policies: {expected}")
        if lines:
            notes[len(rows) - 1] = lines
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for number, (case, expect, got, policies, outcome) in enumerate(rows):
        lines.append(
            f"{case:<{widths[0]}}  {expect:<{widths[1]}}  {got:<{widths[2]}}  "
            f"{policies:<{widths[3]}}  {outcome}"
        )
        lines.extend(notes.get(number, []))
    failed = sum(not result.passed for result in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def run_verify(args: argparse.Namespace) -> int:
    """Handle `pkggov-admin audit verify --store URL`."""
    if not args.store.startswith(("postgresql://", "postgres://")):
        path = args.store.removeprefix("sqlite:")
        if not Path(path[2:] if path.startswith("//") else path).is_file():
            print(f"{PROG} audit verify: error: no such file: {path}", file=sys.stderr)
            return EXIT_FAILED
    try:
        store = open_audit_store(args.store, replica="pkggov-audit-verify", heartbeat_seconds=3600)
    except AuditUnavailableError as err:
        print(f"{PROG} audit verify: error: {err.detail}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
