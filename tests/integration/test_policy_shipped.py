"""The installed `pkggov-admin policy` console script validates and tests the shipped policy set."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pkggov_gateway.adapters.cedar import default_policy_files

PKGGOV_ADMIN = Path(sys.executable).with_name("pkggov-admin")
SHIPPED = default_policy_files()


def pkggov_admin(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PKGGOV_ADMIN), *argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_policy_test_passes_on_the_shipped_tests() -> None:
    """`pkggov-admin policy test tests.yaml` on the shipped set: every case passes, exit 0."""
    result = pkggov_admin("policy", "test", str(SHIPPED.schema.parent / "tests.yaml"))
    assert (0, "") == (result.returncode, result.stderr)
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")


def test_policy_validate_accepts_the_shipped_set() -> None:
    """`pkggov-admin policy validate` with the defaults: ok and the fourteen ids, exit 0."""
    result = pkggov_admin("policy", "validate")
    assert 0 == result.returncode
    assert result.stdout.startswith("ok: 14 policies: ")
    assert "prod-irreversible-needs-release-admin-approval" in result.stdout
    assert "release-admins-may-approve" in result.stdout


def test_policy_validate_refuses_a_syntax_error_with_file_and_line(tmp_path: Path) -> None:
    """An invalid policy: exit 1 and FILE:LINE: MESSAGE on stderr."""
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED.policies, policies)
    bad = policies / "zz-bad.cedar"
    bad.write_text('// broken\n@id("bad")\npermit (principal, action action, resource);\n')
    result = pkggov_admin("policy", "validate", "--policies", str(policies))
    assert 1 == result.returncode
    assert result.stderr.startswith(f"{bad}:3: unexpected token")
