"""Every console example in the README works verbatim against a freshly started gateway."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import GatewayProcess

_BLOCK = re.compile(r"```console( mtls)?\n(.*?)```", re.DOTALL)
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
# A ```python block, one line of prose, then the ```text block holding what it prints.
_PYTHON = re.compile(r"```python\n(.*?)```\n\n[^\n]+\n\n```text\n(.*?)```", re.DOTALL)


def readme_commands(*, mtls: bool = False) -> list[str]:
    """The `$ ` lines of the README's ``console`` blocks (or its ``console mtls`` blocks)."""
    text = (REPO / "README.md").read_text()
    return [
        line[2:]
        for kind, block in _BLOCK.findall(text)
        if bool(kind) == mtls
        for line in block.splitlines()
        if line.startswith("$ ")
    ]


def test_readme_has_examples() -> None:
    """The README shows grpcurl, pkggov and aws examples."""
    tools = {command.split()[0] for command in readme_commands()}
    assert {"export", "grpcurl", "pkggov", "aws"} <= tools


def test_every_readme_example_runs(gateway_process: GatewayProcess) -> None:
    """Run each example in order with bash; it exits as the README says (0 unless `# exit N`).

    The only changes made to a command: the README's 127.0.0.1:50051 and :50052 become the
    free ports the test gateway and its emulator listen on, and `make run`'s audit file
    (sqlite:pkggov-audit.db) the test gateway's, in a temporary folder.
    """
    run_commands(readme_commands(), gateway_process)


def test_every_mtls_readme_example_runs(bin_dir: Path, tmp_path: Path) -> None:
    """The mTLS block against a gateway started as `make run-mtls` does: the certificates come
    from scripts/dev_certs.py, written to a temporary folder instead of .run/certs."""
    certs = tmp_path / "certs"
    subprocess.run(
        [str(bin_dir / "python"), str(REPO / "scripts" / "dev_certs.py"), "--out", str(certs)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {
        "PKGGOV_IDENTITY_MODE": "mtls",
        "PKGGOV_IDENTITY_SERVER_CERT": str(certs / "server.pem"),
        "PKGGOV_IDENTITY_SERVER_KEY": str(certs / "server.key"),
        "PKGGOV_IDENTITY_CLIENT_CA": str(certs / "ca.pem"),
    }
    commands = [c.replace(".run/certs", str(certs)) for c in readme_commands(mtls=True)]
    assert commands, "the README has an mTLS block"
    with spawn_gateway(bin_dir, **env) as process:
        run_commands(commands, process)


def test_every_python_example_prints_what_the_readme_says(
    bin_dir: Path, gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """Each ```python block, run with the virtualenv's Python against a freshly started gateway
    (as `make run` starts it; 127.0.0.1:50051 becomes its port), exits 0 and prints exactly the
    ```text block that follows it."""
    examples = _PYTHON.findall((REPO / "README.md").read_text())
    assert examples, "the README has a Python example with its output"
    for code, expected in examples:
        result = subprocess.run(
            [
                str(bin_dir / "python"),
                "-c",
                code.replace("127.0.0.1:50051", gateway_process.address),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (0, expected) == (result.returncode, result.stdout), result.stderr


def run_commands(commands: list[str], gateway_process: GatewayProcess) -> None:
    """Run README commands in order against `gateway_process`, checking each exit code."""
    emulator_address = gateway_process.emulator_url.removeprefix("http://")
    exports: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PKGGOV_"))}
    env["PKGGOV_TARGET"] = gateway_process.address
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for command in commands:
        runnable = (
            command.replace("127.0.0.1:50051", gateway_process.address)
            .replace("127.0.0.1:50052", emulator_address)
            .replace("sqlite:pkggov-audit.db", gateway_process.audit_store)
        )
        if command.startswith("export "):
            exports.append(runnable)
            continue
        match = _EXIT.search(command)
        expected = int(match.group(1)) if match else 0
        script = "\n".join(["set -e", *exports, runnable])
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert expected == result.returncode, (
            f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
