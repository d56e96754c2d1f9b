"""`pkggov-admin policy validate|test`: output, errors as file:line on stderr, exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from pkggov_gateway.adapters.cedar import default_policy_files
from pkggov_gateway.tools.cli import EXIT_FAILED, EXIT_OK, add_policy_commands

SHIPPED = default_policy_files()
SHIPPED_TESTS = SHIPPED.schema.parent / "tests.yaml"


def run(*argv: str) -> int:
    """Parse `argv` with a parser holding only the policy commands and run the handler."""
    parser = argparse.ArgumentParser(prog="pkggov-admin")
    add_policy_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def broken_policies(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED.policies, policies)
    (policies / "zz-bad.cedar").write_text('@id("bad")\npermit (principal, action, resource\n;\n')
    return policies


def test_validate_shipped_set_prints_ids_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """ok: N policies: id, id, ..."""
    assert EXIT_OK == run("policy", "validate")
    out = capsys.readouterr().out
    assert out.startswith(
        "ok: 14 policies: auditors-may-read-audit, ci-may-delete-dev-prereleases, cleanup-planners"
    )


def test_validate_error_is_file_line_message_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid set: exit 1, "path:line: message" on stderr, nothing on stdout."""
    policies = broken_policies(tmp_path)
    assert EXIT_FAILED == run("policy", "validate", "--policies", str(policies))
    captured = capsys.readouterr()
    assert "" == captured.out
    assert captured.err.startswith(f"{policies / 'zz-bad.cedar'}:3: ")


def test_validate_takes_schema_and_entities_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--schema and --entities replace the shipped files."""
    entities = tmp_path / "entities.yaml"
    entities.write_text("principals: {x: {groups: [missing]}}\n")
    assert EXIT_FAILED == run("policy", "validate", "--entities", str(entities))
    assert f"{entities}:1: principal 'x': unknown group 'missing'" in capsys.readouterr().err
    schema = tmp_path / "s.cedarschema"
    schema.write_text("namespace Pkggov {\n  entity Group\n}\n")
    assert EXIT_FAILED == run("policy", "validate", "--schema", str(schema))
    assert capsys.readouterr().err.startswith(f"{schema}:3: ")


def test_test_shipped_cases_print_a_table_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    """The table has the documented columns and ends with the summary."""
    assert EXIT_OK == run("policy", "test", str(SHIPPED_TESTS))
    lines = capsys.readouterr().out.splitlines()
    assert ["CASE", "EXPECT", "GOT", "POLICIES", "RESULT"] == lines[0].split()
    assert lines[-1].endswith(" passed, 0 failed")
    assert all(line.endswith("pass") for line in lines[1:-1])


def test_test_failing_case_shows_fail_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing case is marked FAIL with what was expected; the summary counts it."""
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "cases:\n"
        "  - name: bob may delete\n"
        "    principal: bob\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0}\n"
        "    expect: allow\n"
        "  - name: latest is kept\n"
        "    principal: alice\n"
        "    resource: {repository: dev-x, package: p, version: 1.0.0, is_latest: true}\n"
        "    expect: deny\n"
        "    policies: [release-admins-may-delete]\n"
    )
    assert EXIT_FAILED == run("policy", "test", str(tests))
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert rows[1].split()[-4:] == ["allow", "deny", "-", "FAIL"]
    assert "expected policies: release-admins-may-delete" in out
    assert "0 passed, 2 failed" == rows[-1]


def test_test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints every case and the counts."""
    assert EXIT_OK == run("policy", "test", str(SHIPPED_TESTS), "--json")
    document = json.loads(capsys.readouterr().out)
    assert 0 == document["failed"]
    assert document["passed"] == len(document["cases"])
    first = document["cases"][0]
    assert {"name", "expect", "got", "policies", "expected_policies", "errors", "passed"} == set(
        first
    )


def test_test_with_an_invalid_policy_set_or_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken policy set or test file: the load error on stderr, exit 1."""
    policies = broken_policies(tmp_path)
    assert EXIT_FAILED == run("policy", "test", str(SHIPPED_TESTS), "--policies", str(policies))
    assert "zz-bad.cedar:3: " in capsys.readouterr().err
    tests = tmp_path / "t.yaml"
    tests.write_text("cases: [\n")
    assert EXIT_FAILED == run("policy", "test", str(tests))
    assert capsys.readouterr().err.startswith(f"{tests}:")


def test_policy_without_subcommand_is_a_usage_error() -> None:
    """`pkggov-admin policy` alone: argparse exits 2."""
    with pytest.raises(SystemExit) as caught:
        run("policy")
    assert 2 == caught.value.code
