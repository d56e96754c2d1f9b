"""The pkggov-client wheel installed alone in a fresh virtualenv, on Python 3.11 (with the
lowest versions its dependency ranges allow) and on 3.13 (with the newest): small, none of
the gateway's dependencies, and it calls a real gateway through the typed client and the CLI.
Also: the client's source never imports server code, and the gateway wheel (what the image
installs) holds the gateway only, without the emulator's demo seed or keys."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pkggov_emulator import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY
from pkggov_gateway.runtime import Gateway
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CLIENT_PYPROJECT = tomllib.loads((REPO / "clients" / "pyproject.toml").read_text())
GATEWAY_PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
MAX_VENV_BYTES = 60_000_000
FORBIDDEN = {
    "boto3",
    "botocore",
    "cedarpy",
    "cryptography",
    "psycopg",
    "psycopg-binary",
    "prometheus-client",
    "structlog",
}
# What a fresh virtualenv holds besides the client: pip (and on 3.11 setuptools) from venv.
VENV_SEED = {"pip", "setuptools"}

CALL = """
import sys
from pkggov_client import PkggovClient, PkggovError

with PkggovClient(sys.argv[1], metadata=[("x-pkggov-principal", "alice")]) as client:
    plan = client.delete_package_versions(
        domain="demo", repository="dev-shared", format="npm", package="left-pad",
        versions=["1.1.0", "9.9.9"], validate_only=True,
    )
    for version, decision in plan.decisions.items():
        print("plan", version, decision.outcome)
    try:
        client.delete_package_versions(
            domain="demo", repository="dev-shared", format="pypi", namespace="acme",
            package="requests-lite", versions=["0.1.0"],
        )
    except PkggovError as error:
        print("error", error.code.name, error.reason, *(v.field for v in error.field_violations))
"""


def find_python(version: str) -> str | None:
    """An interpreter of `version` ("3.13"): this one, pythonX.Y on PATH (when it runs: a
    pyenv shim may not), or a pyenv installation; None when there is none."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}")
    )
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def venv_bytes(root: Path) -> int:
    """The size of every file under `root` (symbolic links not followed)."""
    return sum(
        (Path(folder) / name).lstat().st_size
        for folder, _, names in os.walk(root)
        for name in names
    )


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv, capture its text output; fail the test with that output on a non-zero exit."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, f"{argv}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pkggov-client and pkggov (gateway) wheels, built as the Dockerfile builds them, from
    copies of their sources (the work tree gets no build/ folders)."""
    root = tmp_path_factory.mktemp("dist")
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "build", "typescript", "node_modules"
    )
    shutil.copytree(REPO / "clients", root / "src" / "clients", ignore=ignore)
    shutil.copytree(REPO / "server", root / "src" / "server", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "src" / "pyproject.toml")
    out = root / "wheels"
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-build-isolation", "--wheel-dir", out,
        root / "src" / "clients", root / "src",
    )  # fmt: skip
    return {
        "client": next(out.glob("pkggov_client-*.whl")),
        "gateway": next(out.glob("pkggov-*.whl")),
    }


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pip cache for both virtualenvs: the second downloads nothing twice."""
    return tmp_path_factory.mktemp("pip-cache")


def floors() -> list[str]:
    """`name==lowest` for every dependency of pkggov-client (its `>=` bound)."""
    pins = []
    for line in CLIENT_PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert 1 == len(lowest), f"{line}: one lower bound expected"
        pins.append(f"{requirement.name}=={lowest[0]}")
    return pins


def fresh_client_venv(version: str, *, lowest: bool, wheel: Path, cache: Path, at: Path) -> Path:
    """A new virtualenv at `at` on Python `version` with only the client wheel installed, its
    dependencies from the package index at their lowest allowed versions or the newest."""
    python = find_python(version)
    if python is None:
        message = f"python{version} is not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run(python, "-m", "venv", at)
    constraints = at.parent / f"constraints-{version}.txt"
    constraints.write_text("\n".join(floors() if lowest else []) + "\n")
    run(
        at / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-input", "--only-binary", ":all:", "--cache-dir", cache, "-c", constraints, wheel,
    )  # fmt: skip
    return at


@pytest.mark.parametrize(
    "version", ["3.11", "3.13"], ids=["py3.11-lowest-deps", "py3.13-newest-deps"]
)
def test_the_client_wheel_alone_calls_a_real_gateway(
    version: str, wheels: dict[str, Path], pip_cache: Path, gateway: Gateway, tmp_path: Path
) -> None:
    """Install the wheel into a fresh virtualenv (dependencies from the package index: on 3.11
    the lowest versions the client allows, on 3.13 the newest), then: under 60 MB, only the four
    dependencies (and grpcio's typing-extensions), a dry-run delete and a rich INVALID_ARGUMENT
    through the typed client, `pkggov delete --dry-run`, and `pkggov policy` names
    `pkggov-admin`."""
    lowest = version == "3.11"
    venv = fresh_client_venv(
        version, lowest=lowest, wheel=wheels["client"], cache=pip_cache, at=tmp_path / "venv"
    )

    size = venv_bytes(venv)
    assert size < MAX_VENV_BYTES, f"{size / 1e6:.1f} MB"
    listed = run(
        venv / "bin" / "python",
        "-I",  # isolated: the virtualenv's packages only, not the working directory's
        "-c",
        "import importlib.metadata as m\n"
        "for d in m.distributions(): print(d.metadata['Name'], d.version)",
        cwd=tmp_path,
    ).stdout.split("\n")
    installed = dict(line.split(" ", 1) for line in listed if line)
    names = {canonicalize_name(name) for name in installed} - VENV_SEED
    assert set() == names & FORBIDDEN
    expected = {
        canonicalize_name(Requirement(d).name) for d in CLIENT_PYPROJECT["project"]["dependencies"]
    }
    assert {"pkggov-client", "typing-extensions"} | expected == names
    if lowest:
        pins = dict(pin.split("==") for pin in floors())
        assert pins == {name: installed[name] for name in pins}

    call = run(venv / "bin" / "python", "-I", "-c", CALL, gateway.address, cwd=tmp_path)
    assert [
        "plan 1.1.0 WOULD_DELETE",
        "plan 9.9.9 NOT_FOUND",
        "error INVALID_ARGUMENT INVALID_REQUEST namespace",
    ] == call.stdout.splitlines()

    cli = run(
        venv / "bin" / "pkggov", "delete", "--target", gateway.address,
        "--header", "x-pkggov-principal=alice", "--dry-run",
        "--domain", "demo", "--repository", "dev-shared", "--format", "npm",
        "--package", "left-pad", "1.1.0",
        cwd=tmp_path,
    )  # fmt: skip
    assert "1.1.0" in cli.stdout
    moved = subprocess.run(
        [venv / "bin" / "pkggov", "policy", "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 2 == moved.returncode
    assert "pkggov-admin policy" in moved.stderr


def test_the_gateway_wheel_holds_the_gateway_only(wheels: dict[str, Path]) -> None:
    """The image's gateway wheel: pkggov_gateway and its metadata, no emulator, no demo seed and
    no demo access key; it requires exactly this version of pkggov-client."""
    with zipfile.ZipFile(wheels["gateway"]) as wheel:
        names = wheel.namelist()
        contents = b"".join(wheel.read(name) for name in names)
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    assert {"pkggov_gateway"} == {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert not [n for n in names if "emulator" in n or n.endswith("demo.json")]
    for secret in (DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY):
        assert secret.encode() not in contents
    client_version = CLIENT_PYPROJECT["project"]["version"]
    assert f"pkggov-client=={client_version}" in requires
    assert GATEWAY_PYPROJECT["project"]["version"] == client_version


def test_the_client_wheel_holds_stubs_types_and_client_only(wheels: dict[str, Path]) -> None:
    """pkggov (the stubs, with .pyi and py.typed) and pkggov_client; nothing else."""
    with zipfile.ZipFile(wheels["client"]) as wheel:
        names = wheel.namelist()
    assert {"pkggov", "pkggov_client"} == {n.split("/")[0] for n in names if ".dist-info/" not in n}
    for typed in (
        "pkggov/v1/package_governance_pb2.pyi",
        "pkggov/py.typed",
        "pkggov_client/py.typed",
    ):
        assert typed in names


def test_the_client_never_imports_server_code() -> None:
    """No module of pkggov_client (or the stubs) imports the gateway or the emulator, even
    lazily inside a function."""
    offenders = []
    for path in sorted((REPO / "clients").glob("pkggov*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {module}"
                for module in modules
                if module.split(".")[0] in {"pkggov_gateway", "pkggov_emulator"}
            ]
    assert [] == offenders
