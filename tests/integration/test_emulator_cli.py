"""The real AWS CLI and the pkggov-emulator command work against the emulator."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from pkggov_emulator import Emulator

LEFT_PAD = ["--domain", "demo", "--repository", "dev-shared", "--format", "npm"]


def test_aws_cli_lists_packages(run_aws: Callable[..., Any]) -> None:
    result = run_aws(
        "codeartifact", "list-packages", "--domain", "demo", "--repository", "dev-shared"
    )
    assert 0 == result.returncode, result.stderr
    packages = json.loads(result.stdout)["packages"]
    assert 9 == len(packages)
    assert {"format": "npm", "namespace": "acme", "package": "widgets"} == {
        key: packages[4][key] for key in ("format", "namespace", "package")
    }


def test_aws_cli_deletes_a_version(run_aws: Callable[..., Any], emulator: Emulator) -> None:
    result = run_aws(
        "codeartifact",
        "delete-package-versions",
        *LEFT_PAD,
        "--package",
        "left-pad",
        "--versions",
        "1.0.0",
        "4.0.0",
        "--expected-status",
        "Published",
    )
    assert 0 == result.returncode, result.stderr
    answer = json.loads(result.stdout)
    assert "Deleted" == answer["successfulVersions"]["1.0.0"]["status"]
    assert "NOT_FOUND" == answer["failedVersions"]["4.0.0"]["errorCode"]
    assert emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0") is None


def test_aws_cli_reports_service_errors(run_aws: Callable[..., Any]) -> None:
    result = run_aws("codeartifact", "describe-domain", "--domain", "nope")
    assert 255 == result.returncode  # AWS CLI v1's status for service errors.
    assert "(ResourceNotFoundException) when calling the DescribeDomain operation" in (
        result.stderr
    )


def iter_lines_until(stream: IO[str], marker: str) -> Iterator[str]:
    """Yield lines of ``stream`` up to and including the first containing ``marker``."""
    for line in stream:
        yield line
        if marker in line:
            return


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_emulator_command_serves_until_signalled(
    stop_signal: signal.Signals, make_codeartifact: Callable[..., Any]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pkggov_emulator", "--listen", "127.0.0.1:0", "--seed", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The banner ends with an example AWS CLI command; read it whole before talking.
        banner = "".join(iter_lines_until(process.stdout, "aws codeartifact"))
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match is not None, banner

        url = match.group(1)

        class _Endpoint:
            endpoint_url = url

        client = make_codeartifact(_Endpoint())
        domains = [d["name"] for d in client.list_domains()["domains"]]
        process.send_signal(stop_signal)
        output, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert ["demo", "sandbox"] == domains
    assert 0 == process.returncode, errors
    assert "export AWS_ACCESS_KEY_ID=AKIAPKGGOVDEMO000001" in banner
    assert "pkggov-emulator: stopped" in output


def test_emulator_command_rejects_a_bad_seed(tmp_path: Any) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"domains": [{"name": "x", "colour": "red"}]}))
    result = subprocess.run(
        [sys.executable, "-m", "pkggov_emulator", "--listen", "127.0.0.1:0", "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 1 == result.returncode
    assert "seed.domains[0]: unknown keys ['colour']" in result.stderr
