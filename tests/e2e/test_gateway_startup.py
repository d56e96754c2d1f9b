"""pkggov-gateway refuses to start in one line naming the setting; --check-config checks files.

--check-config also warns about the emulator beside mTLS or non-loopback listeners.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import TestPKI, make_test_pki
from tests.conftest import free_port
from tests.e2e.harness import inherited_environ

_TIMEOUT = 60
"""Generous: a refused start takes about a second."""


@dataclass(frozen=True, slots=True)
class Run:
    """A finished pkggov-gateway process."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def last_line(self) -> str:
        """stderr's last line."""
        lines = self.stderr.splitlines()
        return lines[-1] if lines else ""


def _run(bin_dir: Path, workdir: Path, *args: str, **env: str) -> Run:
    """`pkggov-gateway --dev *args` in `workdir` on free ports, JSON logs and `env`."""
    environ = {
        **inherited_environ(),
        "PKGGOV_SERVER_LISTEN": "127.0.0.1:0",
        "PKGGOV_EMULATOR_LISTEN": "127.0.0.1:0",
        "PKGGOV_METRICS_LISTEN": "127.0.0.1:0",
        "PKGGOV_LOGGING_FORMAT": "json",
        "PKGGOV_AUDIT_STORE": f"sqlite:{workdir}/audit.db",
        "PKGGOV_AUDIT_LOG": "off",
        **env,
    }
    environ.pop("PKGGOV_CONFIG", None)
    started = time.monotonic()
    result = subprocess.run(
        [str(bin_dir / "pkggov-gateway"), "--dev", *args],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        env=environ,
        cwd=workdir,
        check=False,
    )
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def _refused(bin_dir: Path, workdir: Path, *args: str, **env: str) -> str:
    """Run, expect exit 2 with no traceback and nothing on stdout; stderr's last line."""
    run = _run(bin_dir, workdir, *args, **env)
    assert "Traceback" not in run.stderr, run.stderr
    assert 2 == run.returncode, run.stderr
    assert "" == run.stdout
    assert run.last_line.startswith("pkggov-gateway: "), run.stderr
    return run.last_line


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A test CA and a server certificate."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _mtls(pki: TestPKI, **files: str) -> dict[str, str]:
    """Environment for mTLS with the PKI's files, some replaced by `files` (by setting)."""
    paths = {
        "server_cert": str(pki.server.cert),
        "server_key": str(pki.server.key),
        "client_ca": str(pki.ca_pem),
        **files,
    }
    return {
        "PKGGOV_IDENTITY_MODE": "mtls",
        **{f"PKGGOV_IDENTITY_{key.upper()}": path for key, path in paths.items()},
    }


# --- listeners ---------------------------------------------------------------------------


@pytest.fixture
def taken() -> Iterator[str]:
    """HOST:PORT of a loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    "setting", ["server.listen", "server.health_listen", "metrics.listen", "emulator.listen"]
)
def test_a_taken_port_names_the_listener_and_address(
    bin_dir: Path, tmp_path: Path, taken: str, setting: str
) -> None:
    """Each listener on a port in use: one line naming it, its address and the reason."""
    variable = "PKGGOV_" + setting.upper().replace(".", "_")
    line = _refused(bin_dir, tmp_path, **{variable: taken})
    assert f"pkggov-gateway: {setting} {taken}: cannot listen: address already in use" == line


@pytest.mark.parametrize("setting", ["server.listen", "server.health_listen"])
def test_a_taken_grpc_port_is_found_before_grpc_tries(
    bin_dir: Path, tmp_path: Path, taken: str, setting: str
) -> None:
    """The gateway checks its gRPC listeners itself: grpc's own multi-line bind failure never
    precedes the one line."""
    variable = "PKGGOV_" + setting.upper().replace(".", "_")
    run = _run(bin_dir, tmp_path, **{variable: taken})
    assert "Failed to add port" not in run.stderr
    assert "add_port" not in run.stderr


# --- the audit store ---------------------------------------------------------------------


def test_a_store_in_a_missing_directory_names_audit_store(bin_dir: Path, tmp_path: Path) -> None:
    """sqlite: in a directory that does not exist: says so, not AuditUnavailableError's text."""
    store = f"sqlite:{tmp_path}/no/such/dir/audit.db"
    line = _refused(bin_dir, tmp_path, PKGGOV_AUDIT_STORE=store)
    expected = f"audit.store {store}: cannot open: directory {tmp_path}/no/such/dir does not exist"
    assert f"pkggov-gateway: {expected}" == line


def test_an_unreachable_postgres_names_audit_store_without_the_password(
    bin_dir: Path, tmp_path: Path
) -> None:
    """postgresql:// where nothing listens: fails fast, names the store, masks the password."""
    port = free_port()
    store = f"postgresql://pkggov:s3cret-pw@127.0.0.1:{port}/test"
    run = _run(bin_dir, tmp_path, PKGGOV_AUDIT_STORE=store)
    assert (2, False) == (run.returncode, "Traceback" in run.stderr), run.stderr
    shown = f"postgresql://pkggov:***@127.0.0.1:{port}/test"
    assert run.last_line.startswith(f"pkggov-gateway: audit.store {shown}: cannot open: ")
    assert "Connection refused" in run.last_line
    assert "s3cret-pw" not in run.stderr
    assert run.seconds < 30


# --- files the settings name -------------------------------------------------------------

FileCase = Callable[[Path, TestPKI], tuple[dict[str, str], str]]
"""(workdir, pki) -> (environment, what stderr's last line starts with after the prefix)."""


def _missing_cert(setting: str) -> FileCase:
    def case(workdir: Path, pki: TestPKI) -> tuple[dict[str, str], str]:
        path = workdir / "nope.pem"
        return _mtls(pki, **{setting: str(path)}), f"identity.{setting}: cannot read {path}: "

    return case


def _garbage_pem(setting: str) -> FileCase:
    def case(workdir: Path, pki: TestPKI) -> tuple[dict[str, str], str]:
        path = workdir / "garbage.pem"
        path.write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
        return _mtls(pki, **{setting: str(path)}), f"identity.{setting}: {path} holds no "

    return case


def _policy_file(setting: str, name: str, text: str | None, after: str = "") -> FileCase:
    def case(workdir: Path, _pki: TestPKI) -> tuple[dict[str, str], str]:
        path = workdir / name
        if text is not None:
            path.write_text(text)
        return {f"PKGGOV_POLICY_{setting.upper()}": str(path)}, f"policy.{setting}: {path}{after}"

    return case


def _audit_log(workdir: Path, _pki: TestPKI) -> tuple[dict[str, str], str]:
    path = workdir / "missing" / "audit.jsonl"
    return {"PKGGOV_AUDIT_LOG": str(path)}, f"audit.log {path}: cannot open: "


def _seed(workdir: Path, _pki: TestPKI) -> tuple[dict[str, str], str]:
    path = workdir / "seed.json"
    path.write_text("[]")
    return {"PKGGOV_EMULATOR_SEED": str(path)}, f"emulator.seed: seed {path} must contain"


FILE_CASES: dict[str, FileCase] = {
    **{f"missing {s}": _missing_cert(s) for s in ("server_cert", "server_key", "client_ca")},
    **{f"garbage {s}": _garbage_pem(s) for s in ("server_cert", "server_key", "client_ca")},
    "missing policies": _policy_file("policies", "nope", None, ": no such file or directory"),
    "invalid policy": _policy_file(
        "policies", "broken.cedar", '@id("x")\npermit(principal,\n  action resource);\n', ":3: "
    ),
    "missing entities": _policy_file("entities", "nope.yaml", None, ": cannot read: "),
    "invalid entities": _policy_file("entities", "bad.yaml", "groups: [\n", ":"),
    "missing schema": _policy_file("schema", "nope.cedarschema", None, ": "),
    "audit.log in a missing directory": _audit_log,
    "emulator seed not an object": _seed,
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_a_bad_file_refuses_to_start_naming_setting_and_path(
    bin_dir: Path, tmp_path: Path, pki: TestPKI, case: str
) -> None:
    """A missing or unparsable certificate, key, CA, policy, entities, schema, audit copy or
    seed file: one line naming the setting and the path."""
    env, expected = FILE_CASES[case](tmp_path, pki)
    assert _refused(bin_dir, tmp_path, **env).startswith(f"pkggov-gateway: {expected}")


# --- --check-config ----------------------------------------------------------------------


def test_check_config_of_the_dev_profile_prints_the_settings(bin_dir: Path, tmp_path: Path) -> None:
    """`--dev --check-config` as shipped: exit 0, the settings as JSON, no warning."""
    run = _run(bin_dir, tmp_path, "--check-config", PKGGOV_AUDIT_STORE="sqlite:pkggov-audit.db")
    assert (0, "") == (run.returncode, run.stderr)
    assert "127.0.0.1:0" == json.loads(run.stdout)["server"]["listen"]
    assert not (tmp_path / "pkggov-audit.db").exists()  # checked, not created


@pytest.mark.parametrize("case", FILE_CASES)
def test_check_config_names_each_bad_file(
    bin_dir: Path, tmp_path: Path, pki: TestPKI, case: str
) -> None:
    """Every file case start-up refuses, --check-config reports in the same words (exit 2)."""
    env, expected = FILE_CASES[case](tmp_path, pki)
    assert _refused(bin_dir, tmp_path, "--check-config", **env).startswith(
        f"pkggov-gateway: {expected}"
    )


def test_check_config_reports_every_problem_one_per_line(bin_dir: Path, tmp_path: Path) -> None:
    """Several bad settings: one line each, then exit 2."""
    schema = tmp_path / "nope.cedarschema"
    run = _run(
        bin_dir,
        tmp_path,
        "--check-config",
        PKGGOV_POLICY_SCHEMA=str(schema),
        PKGGOV_AUDIT_STORE=f"sqlite:{tmp_path}/gone/audit.db",
        PKGGOV_AUDIT_LOG=str(tmp_path / "gone" / "audit.jsonl"),
    )
    assert 2 == run.returncode
    assert [
        f"pkggov-gateway: policy.schema: {schema}: no such file",
        f"pkggov-gateway: audit.store sqlite:{tmp_path}/gone/audit.db: cannot open: "
        f"directory {tmp_path}/gone does not exist",
        f"pkggov-gateway: audit.log {tmp_path}/gone/audit.jsonl: cannot open: "
        f"directory {tmp_path}/gone does not exist",
    ] == run.stderr.splitlines()


_PASSWORD = "s3cretpw"


@pytest.mark.parametrize("mode", ["--check-config", "start"])
@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (f"postgresql://u:{_PASSWORD}@[::1/db", "unbalanced '[' or ']' around the host"),
        (f"postgresql://u:{_PASSWORD}@db:port/x", "the port is not a number"),
        ("postgresql://u:s3cret/pw@db/x", "the port is not a number"),
        ("postgresql://u:s3cr@tpw@127.0.0.1:1/db", "ambiguous user info"),
        (f"postgresql://u:{_PASSWORD}@[::1]x/db", "unexpected character"),
    ],
)
def test_a_malformed_postgres_url_is_one_line_without_the_password(
    bin_dir: Path, tmp_path: Path, mode: str, store: str, reason: str
) -> None:
    """A PostgreSQL URL that does not parse (no connection is tried): the same one line, exit
    2, with --check-config and at start-up; no part of the password anywhere."""
    run = _run(bin_dir, tmp_path, *([mode] if mode != "start" else []), PKGGOV_AUDIT_STORE=store)
    assert (2, "", False) == (run.returncode, run.stdout, "Traceback" in run.stderr), run.stderr
    assert run.last_line.startswith("pkggov-gateway: configuration error: audit.store postgres")
    assert f": invalid PostgreSQL URL: {reason}" in run.last_line
    for part in ("s3cr", "tpw", "pw@"):
        assert part not in run.stderr


@pytest.mark.parametrize("mode", ["--check-config", "start"])
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": "Bad Key"}, "identity.dev_metadata_key: "),
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": "grpc-timeout"}, "identity.dev_metadata_key: "),
        ({"PKGGOV_IDENTITY_PROXY_HEADER": "x-p-bin"}, "identity.proxy_header: "),
        (
            {"PKGGOV_SERVER_MAX_WORKERS": "100000000000000000000"},
            "$PKGGOV_SERVER_MAX_WORKERS: server.max_workers: must be at most 10,000",
        ),
    ],
)
def test_settings_no_client_could_use_are_refused_by_name(
    bin_dir: Path, tmp_path: Path, mode: str, env: dict[str, str], expected: str
) -> None:
    """A metadata key no client can send, an absurd thread count: refused, naming the setting."""
    line = _refused(bin_dir, tmp_path, *([mode] if mode != "start" else []), **env)
    assert line.startswith(f"pkggov-gateway: configuration error: {expected}"), line


def test_check_config_warns_of_the_emulator_with_mtls(
    bin_dir: Path, tmp_path: Path, pki: TestPKI
) -> None:
    """The emulator with identity.mode = mtls (a production identity): a WARNING line."""
    run = _run(bin_dir, tmp_path, "--check-config", **_mtls(pki))
    assert 0 == run.returncode, run.stderr
    assert run.stderr.startswith("WARNING: emulator.enabled with identity.mode = mtls: ")


def test_check_config_warns_of_the_emulator_beside_a_non_loopback_listener(
    bin_dir: Path, tmp_path: Path
) -> None:
    """The emulator with listeners beyond loopback: one WARNING naming them."""
    run = _run(
        bin_dir,
        tmp_path,
        "--check-config",
        PKGGOV_IDENTITY_MODE="proxy",
        PKGGOV_IDENTITY_TRUSTED_PROXIES="10.0.0.1",
        PKGGOV_SERVER_LISTEN="0.0.0.0:50051",
        PKGGOV_METRICS_LISTEN="[::]:9464",
    )
    assert 0 == run.returncode, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(
        "WARNING: emulator.enabled with non-loopback listener(s) server.listen 0.0.0.0:50051, "
        "metrics.listen [::]:9464: "
    )


def test_check_config_without_the_emulator_does_not_warn(bin_dir: Path, tmp_path: Path) -> None:
    """Non-loopback listeners without the emulator are production as intended: no warning."""
    run = _run(
        bin_dir,
        tmp_path,
        "--check-config",
        PKGGOV_EMULATOR_ENABLED="false",
        PKGGOV_IDENTITY_MODE="proxy",
        PKGGOV_IDENTITY_TRUSTED_PROXIES="10.0.0.1",
        PKGGOV_SERVER_LISTEN="0.0.0.0:50051",
    )
    assert (0, "") == (run.returncode, run.stderr)


def test_the_emulator_beside_a_non_loopback_listener_is_logged_at_start_up(
    bin_dir: Path, tmp_path: Path, taken: str
) -> None:
    """What --check-config warns about is also logged when the gateway starts (here it then
    stops at once, on a taken port, so the test needs no running gateway)."""
    run = _run(
        bin_dir,
        tmp_path,
        PKGGOV_EMULATOR_LISTEN="0.0.0.0:0",
        PKGGOV_SERVER_LISTEN=taken,
    )
    warned = [line for line in run.stderr.splitlines() if '"config.suspicious"' in line]
    assert 1 == len(warned), run.stderr
    assert "emulator.listen 0.0.0.0:0" in warned[0]
    assert run.last_line.startswith("pkggov-gateway: server.listen ")
