"""`pkggov policy validate` and `pkggov policy test`: check a Cedar policy set offline.

Both work on files only (no gateway is contacted) and default to the example set shipped
with the gateway. Exit status: 0 when the set is valid (and every case passes), 1 otherwise.
The gateway's Cedar adapter and policy-test tool are imported inside the handlers (hence the
PLC0415 waivers), so the other subcommands never load cedarpy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pkggov_gateway.adapters.cedar import PolicyFiles
    from pkggov_gateway.tools.policy_test import CaseResult

__all__ = ["EXIT_FAILED", "EXIT_OK", "add_policy_commands", "render_results"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_policy_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy validate`` and ``policy test`` to the `pkggov` subcommands.

    Each leaf parser sets ``func``, the ``(args) -> int`` handler `pkggov_client.cli.main`
    calls.
    """
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


def _files(args: argparse.Namespace) -> PolicyFiles:
    from pkggov_gateway.adapters.cedar import PolicyFiles, default_policy_files  # noqa: PLC0415

    default = default_policy_files()
    return PolicyFiles(
        schema=args.schema or default.schema,
        policies=args.policies or default.policies,
        entities=args.entities or default.entities,
    )


def run_validate(args: argparse.Namespace) -> int:
    """Handle `pkggov policy validate`."""
    from pkggov_gateway.adapters.cedar import CedarPolicyEngine, PolicyLoadError  # noqa: PLC0415

    try:
        engine = CedarPolicyEngine(_files(args))
    except PolicyLoadError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    ids = engine.policy_ids()
    print(f"ok: {len(ids)} policies: {', '.join(ids)}")
    return EXIT_OK


def run_test(args: argparse.Namespace) -> int:
    """Handle `pkggov policy test FILE`."""
    from pkggov_gateway.adapters.cedar import PolicyLoadError  # noqa: PLC0415
    from pkggov_gateway.tools.policy_test import run_policy_tests  # noqa: PLC0415

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
