"""The pkggov CLI as operators run it: a subprocess against the real gateway and emulator."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from tests.certs import TestPKI, make_test_pki
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import GatewayFactory


def pkggov(
    bin_dir: Path,
    gateway: Gateway,
    *args: str,
    stdin: str | None = None,
    stdout: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `pkggov` console script against `gateway` ($PKGGOV_CLI_TARGET)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGGOV_")}
    env["PKGGOV_CLI_TARGET"] = gateway.address
    if args[:1] == ("delete",):  # call as the test principal (development identity)
        args = ("delete", "--as", "alice", *args[1:])
    return subprocess.run(
        [str(bin_dir / "pkggov"), *args],
        input=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
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
    """--json prints the response in proto3 JSON with its audit event id and the request id
    the CLI made; versions from standard input; exit 0 when every version was deleted."""
    result = pkggov(
        bin_dir,
        gateway,
        "delete",
        *PYPI,
        "--package",
        "requests-lite",
        "--json",
        "--versions-from",
        "-",
        stdin="0.3.0\n# keep 0.5.0\n\n0.4.0\n",
    )
    assert (0, "") == (result.returncode, result.stderr)
    output = json.loads(result.stdout)
    assert ["0.3.0", "0.4.0"] == list(output["successfulVersions"])
    assert "PACKAGE_VERSION_STATUS_DELETED" == output["successfulVersions"]["0.3.0"]["status"]
    assert ({}, {}) == (output["failedVersions"], output["decisions"])
    assert re.fullmatch(r"[0-9a-f-]{36}", output["auditEventId"])
    assert re.fullmatch(r"[0-9a-f-]{36}", output["requestId"])


def test_a_retry_with_the_printed_request_id_deletes_nothing_again(
    bin_dir: Path, gateway: Gateway, emulator: Emulator
) -> None:
    """The request id printed on stderr, passed back with --request-id, gets the recorded
    answer: the same table, and CodeArtifact is called once."""
    args = ("delete", *PYPI, "--package", "requests-lite", "0.5.0")
    first = pkggov(bin_dir, gateway, *args)
    match = re.match(
        r"request id (\S+) \(to retry this call safely: --request-id \1\)\n", first.stderr
    )
    assert match, first.stderr
    retry = pkggov(bin_dir, gateway, *args, "--request-id", match.group(1))
    assert (0, 0) == (first.returncode, retry.returncode), retry.stderr
    assert first.stdout == retry.stdout
    assert 1 == len(emulator.calls("DeletePackageVersions"))


def test_a_closed_stdout_does_not_turn_a_delete_into_a_failure(
    bin_dir: Path, gateway: Gateway, emulator: Emulator
) -> None:
    """`pkggov delete ... | head -1` with the reader gone before the table is written: the
    exit status is the call's own (3: one version failed), with no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = pkggov(
            bin_dir,
            gateway,
            "delete",
            *PYPI,
            "--package",
            "requests-lite",
            "0.1.0",
            "9.9.9",
            stdout=write_end,
        )
    finally:
        os.close(write_end)
    assert 3 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert None is emulator.version_status(
        "demo", "dev-shared", "pypi", None, "requests-lite", "0.1.0"
    )


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
    assert result.stderr.splitlines()[1].startswith("error: INVALID_ARGUMENT INVALID_REQUEST: ")
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
    assert (5, "NOT_FOUND", "UPSTREAM_NOT_FOUND") == (
        error["code"],
        error["status"],
        error["reason"],
    )
    info, resource = (
        next(d for d in error["details"] if d["@type"].endswith(kind))
        for kind in ("google.rpc.ErrorInfo", "google.rpc.ResourceInfo")
    )
    assert "domain" == resource["resourceType"]
    assert info["metadata"]["audit_event_id"]


def test_usage_error_exit_code(bin_dir: Path, gateway: Gateway) -> None:
    """An unknown format is a usage error (exit 2), not a traceback."""
    result = pkggov(bin_dir, gateway, "delete", *PYPI[:4], "--format", "rpm", "--package", "x", "1")
    assert 2 == result.returncode
    assert "Traceback" not in result.stderr


def test_a_mistyped_flag_is_named(bin_dir: Path, gateway: Gateway) -> None:
    result = pkggov(bin_dir, gateway, "delete", *PYPI, "--package", "x", "--dryrun", "1")
    assert 2 == result.returncode
    assert "pkggov delete: error: unknown option --dryrun; did you mean --dry-run?" in (
        result.stderr
    )


_BANNER_EXAMPLE = re.compile(r"^  ((?:grpcurl|pkggov) .*)$")


def _expected_exit(example: str) -> int:
    """What each `make run` example should exit with: the dry run 1 (1.3.0, the latest, is
    denied, so the real call would fail), the pypi delete 3 (9.9.9 does not exist), else 0."""
    if "--dry-run" in example and "1.3.0" in example:
        return 1
    if "9.9.9" in example and example.startswith("pkggov delete"):
        return 3
    return 0


def test_every_example_make_run_prints_works_verbatim(bin_dir: Path) -> None:
    """Start the gateway as `make run` does, in a shell where the CLI's variables are set (a
    gateway that read them as settings would refuse to start), and run each example of its
    banner as printed, with the virtualenv's bin on PATH as the banner says."""
    cli_variables = {
        "PKGGOV_CLI_TARGET": "127.0.0.1:50051",
        "PKGGOV_CLI_PRINCIPAL_KEY": "x-pkggov-principal",
        "PKGGOV_TARGET": "127.0.0.1:50051",
    }
    with spawn_gateway(bin_dir, **cli_variables) as process:
        examples = [m.group(1) for line in process.banner if (m := _BANNER_EXAMPLE.match(line))]
        assert len(examples) >= 6, process.banner
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKGGOV_")}
        env.update(cli_variables, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
        outputs = {}
        for example in examples:
            result = subprocess.run(
                ["bash", "-c", example],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=env,
            )
            assert _expected_exit(example) == result.returncode, (
                f"{example}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            )
            outputs[example] = result.stdout
    dry_run = next(out for example, out in outputs.items() if "--dry-run" in example)
    rows = [line.split()[:2] for line in dry_run.splitlines()[1:4]]
    assert [["1.1.0", "would"], ["1.3.0", "denied"], ["9.9.9", "not"]] == rows


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls_gateway(make_gateway: GatewayFactory, pki: TestPKI) -> Iterator[Gateway]:
    """A gateway requiring client certificates, as in production."""
    with make_gateway(identity=dataclasses.asdict(pki.identity_settings())) as gateway:
        yield gateway


@pytest.mark.parametrize(
    ("tls", "hint"),
    [
        (
            ("--cacert", "other-ca.pem", "--cert", "alice.pem", "--key", "alice.key"),
            "error: we do not trust the gateway's certificate (unable to get local issuer "
            "certificate): --cacert must hold the CA that issued it",
        ),
        (
            ("--cacert", "ca.pem"),
            "error: the gateway closed the connection after the TLS handshake: it most likely "
            "requires a client certificate (--cert, --key)",
        ),
        (
            ("--cacert", "ca.pem", "--cert", "expired.pem", "--key", "expired.key"),
            "error: the gateway closed the connection after the TLS handshake: it most likely "
            "refused our client certificate",
        ),
        (
            ("--cacert", "ca.pem", "--cert", "other-ca-alice.pem", "--key", "other-ca-alice.key"),
            "error: the gateway closed the connection after the TLS handshake: it most likely "
            "refused our client certificate",
        ),
        (
            (),
            "error: the gateway closed the connection before answering: if it serves TLS, pass "
            "--cacert (and --cert, --key for mTLS)",
        ),
    ],
    ids=["untrusted-server", "no-client-cert", "expired-client-cert", "foreign-ca-client", "plain"],
)
def test_tls_failures_say_which_side_refused(
    bin_dir: Path, mtls_gateway: Gateway, pki: TestPKI, tls: tuple[str, ...], hint: str
) -> None:
    """Against an mTLS gateway: our distrust of its certificate, its refusal of ours (or of
    none), and plaintext are told apart; the gRPC status follows on the next line."""
    files = [str(pki.directory / arg) if arg.endswith((".pem", ".key")) else arg for arg in tls]
    result = pkggov(
        bin_dir,
        mtls_gateway,
        "audit",
        "show",
        "--timeout",
        "5",
        *files,
        "0f8e6a1c-3b1e-4d2a-9c61-5d2f7e9a0b13",
    )
    assert 1 == result.returncode
    # gRPC may log the failed handshake itself first (unless $GRPC_VERBOSITY is set).
    ours = result.stderr[result.stderr.index("error: ") :]
    assert ours.startswith(hint), result.stderr
    assert "\n  UNAVAILABLE: " in ours


def test_a_good_client_certificate_still_works(
    bin_dir: Path, mtls_gateway: Gateway, pki: TestPKI
) -> None:
    """The same options with alice's certificate reach the gateway: a dry run, exit 0."""
    tls = ["--cacert", str(pki.ca_pem), "--cert", str(pki.alice.cert), "--key", str(pki.alice.key)]
    result = pkggov(
        bin_dir,
        mtls_gateway,
        "delete",
        *tls,
        "--dry-run",
        "--domain",
        "demo",
        "--repository",
        "dev-shared",
        "--format",
        "npm",
        "--package",
        "left-pad",
        "1.0.0",
    )
    assert 0 == result.returncode, result.stderr


def test_recorded_terminal_escapes_are_shown_escaped(bin_dir: Path, gateway: Gateway) -> None:
    """A caller's version holding terminal escapes (CodeArtifact's pattern allows them) is
    recorded as sent, and the delete's output and `audit list` show it escaped: nothing
    reaches the operator's terminal that clears it, retitles it or reorders a line."""
    version = "9.9.9\x1b[2J\x1b]0;pwned\x07\u202e"
    shown = r"9.9.9\x1b[2J\x1b]0;pwned\x07\u202e"
    package = ("--package", "requests-lite")
    deleted = pkggov(bin_dir, gateway, "delete", *PYPI, *package, version)
    listed = pkggov(bin_dir, gateway, "audit", "list", "--as", "alice", *package, "--limit", "1")
    assert 3 == deleted.returncode, deleted.stderr  # valid for CodeArtifact: NOT_FOUND
    assert 0 == listed.returncode, listed.stderr
    for output in (deleted.stdout, deleted.stderr, listed.stdout, listed.stderr):
        assert [] == [char for char in output if char != "\n" and not char.isprintable()]
    assert shown in deleted.stdout + deleted.stderr
    row = listed.stdout.splitlines()[1]  # the newest event (then "more: --page-token ...")
    assert row.endswith(shown), listed.stdout


def test_an_argument_that_is_not_utf8_is_a_usage_error(bin_dir: Path, gateway: Gateway) -> None:
    """$'\\xff' as a version (Python hands it over as a surrogate): exit 2 naming the
    argument, no traceback."""
    result = pkggov(bin_dir, gateway, "delete", *PYPI, "--package", "requests-lite", "1.0\udcff")
    assert 2 == result.returncode
    assert "error: argument VERSION: not UTF-8 text: '1.0\\xff'" in result.stderr
    assert "Traceback" not in result.stderr
