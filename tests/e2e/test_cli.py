"""The pkggov CLI as operators run it: a subprocess against the real gateway and emulator."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway


def pkggov(bin_dir: Path, gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `pkggov` console script against `gateway`."""
    env = {**os.environ, "PKGGOV_TARGET": gateway.address}
    if args[:1] == ("delete",):  # call as the test principal (development identity)
        args = ("delete", "--header", "x-pkggov-principal=alice", *args[1:])
    return subprocess.run(
        [str(bin_dir / "pkggov"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


PYPI = ("--domain", "demo", "--repository", "dev-shared", "--format", "pypi")


def test_table_output_and_partial_exit_code(
    bin_dir: Path, gateway: Gateway, emulator: Emulator
) -> None:
    """Deleted and missing versions in a table; exit 3 because one version failed."""
    result = pkggov(
        bin_dir, gateway, "delete", *PYPI, "--package", "requests-lite", "0.1.0", "9.9.9"
    )
    assert 3 == result.returncode, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "RESULT", "STATUS/ERROR", "REVISION/MESSAGE"]
    assert ["0.1.0", "deleted", "Deleted"] == lines[1].split()[:3]
    assert ["9.9.9", "failed", "NOT_FOUND"] == lines[2].split()[:3]
    assert "1 deleted, 1 failed" == lines[-1]
    assert None is emulator.version_status(
        "demo", "dev-shared", "pypi", None, "requests-lite", "0.1.0"
    )


def test_json_output_and_success_exit_code(bin_dir: Path, gateway: Gateway) -> None:
    """--json prints CodeArtifact's shape; exit 0 when every version was deleted."""
    result = pkggov(
        bin_dir, gateway, "delete", *PYPI, "--package", "requests-lite", "--json", "0.3.0", "0.4.0"
    )
    assert 0 == result.returncode, result.stderr
    output = json.loads(result.stdout)
    assert {"0.3.0", "0.4.0"} == set(output["successfulVersions"])
    assert "Deleted" == output["successfulVersions"]["0.3.0"]["status"]
    assert {} == output["failedVersions"]


def test_rpc_error_exit_code_and_details(bin_dir: Path, gateway: Gateway) -> None:
    """An invalid request: exit 1, code, reason and each bad field on stderr."""
    result = pkggov(
        bin_dir,
        gateway,
        "delete",
        *PYPI,
        "--namespace",
        "acme",
        "--package",
        "requests-lite",
        "0.1.0",
    )
    assert 1 == result.returncode
    assert result.stderr.startswith("error: INVALID_ARGUMENT INVALID_REQUEST: ")
    assert "namespace: must be empty: pypi packages have no namespace" in result.stderr


def test_not_found_json_error(bin_dir: Path, gateway: Gateway) -> None:
    """--json prints the error object with the resource detail."""
    result = pkggov(
        bin_dir,
        gateway,
        "delete",
        "--domain",
        "nope",
        "--repository",
        "dev-shared",
        "--format",
        "npm",
        "--package",
        "left-pad",
        "--json",
        "1.0.0",
    )
    assert 1 == result.returncode
    error = json.loads(result.stdout)["error"]
    assert ("NOT_FOUND", "UPSTREAM_NOT_FOUND") == (error["code"], error["reason"])
    assert "domain" == error["details"]["resource"]["resourceType"]


def test_usage_error_exit_code(bin_dir: Path, gateway: Gateway) -> None:
    """An unknown format is a usage error (exit 2), not a traceback."""
    result = pkggov(bin_dir, gateway, "delete", *PYPI[:4], "--format", "rpm", "--package", "x", "1")
    assert 2 == result.returncode
    assert "Traceback" not in result.stderr
