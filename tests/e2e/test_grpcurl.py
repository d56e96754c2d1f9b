"""The operator path: the real grpcurl binary lists, describes and invokes via reflection."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway

SERVICE = "pkggov.v1.PackageGovernanceService"


def grpcurl(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run grpcurl with a timeout; never raises on a non-zero exit."""
    return subprocess.run(
        [str(bin_dir / "grpcurl"), "-max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_services_via_reflection(bin_dir: Path, gateway: Gateway) -> None:
    """Reflection lists the service, health and reflection itself."""
    result = grpcurl(bin_dir, "-plaintext", gateway.address, "list")
    assert 0 == result.returncode, result.stderr
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        result.stdout.split()
    )


def test_describe_service(bin_dir: Path, gateway: Gateway) -> None:
    """describe shows the RPC and its message types."""
    result = grpcurl(bin_dir, "-plaintext", gateway.address, "describe", SERVICE)
    assert 0 == result.returncode, result.stderr
    assert (
        "rpc DeletePackageVersions ( .pkggov.v1.DeletePackageVersionsRequest ) returns "
        "( .pkggov.v1.DeletePackageVersionsResponse );"
    ) in result.stdout


def test_invoke_delete(bin_dir: Path, gateway: Gateway, emulator: Emulator) -> None:
    """A JSON request with enum names deletes one version and reports the other missing."""
    body = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "PACKAGE_FORMAT_NPM",
        "namespace": "acme",
        "package": "widgets",
        "versions": ["2.0.0", "7.7.7"],
    }
    result = grpcurl(
        bin_dir,
        "-plaintext",
        "-H",
        "x-pkggov-principal: alice",
        "-d",
        json.dumps(body),
        gateway.address,
        f"{SERVICE}/DeletePackageVersions",
    )
    assert 0 == result.returncode, result.stderr
    output = json.loads(result.stdout)
    assert "PACKAGE_VERSION_STATUS_DELETED" == output["successful_versions"]["2.0.0"]["status"]
    assert (
        "PACKAGE_VERSION_ERROR_CODE_NOT_FOUND" == output["failed_versions"]["7.7.7"]["error_code"]
    )
    assert None is emulator.version_status("demo", "dev-shared", "npm", "acme", "widgets", "2.0.0")


def test_invoke_invalid_shows_code_and_details(bin_dir: Path, gateway: Gateway) -> None:
    """An invalid request exits non-zero and prints the code and the rich details."""
    body = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "PACKAGE_FORMAT_PYPI",
        "namespace": "acme",
        "package": "requests-lite",
        "versions": ["0.1.0"],
    }
    result = grpcurl(
        bin_dir,
        "-plaintext",
        "-H",
        "x-pkggov-principal: alice",
        "-d",
        json.dumps(body),
        gateway.address,
        f"{SERVICE}/DeletePackageVersions",
    )
    assert 0 != result.returncode
    assert "Code: InvalidArgument" in result.stderr
    assert "INVALID_REQUEST" in result.stderr
    assert "namespace" in result.stderr


def test_health_check(bin_dir: Path, gateway: Gateway) -> None:
    """grpc.health.v1 reports SERVING for the service."""
    result = grpcurl(
        bin_dir,
        "-plaintext",
        "-H",
        "x-pkggov-principal: alice",
        "-d",
        json.dumps({"service": SERVICE}),
        gateway.address,
        "grpc.health.v1.Health/Check",
    )
    assert 0 == result.returncode, result.stderr
    assert "SERVING" == json.loads(result.stdout)["status"]


def test_invoke_without_identity_is_unauthenticated(bin_dir: Path, gateway: Gateway) -> None:
    """Without the development identity header the call is refused UNAUTHENTICATED."""
    body = {
        "domain": "demo",
        "repository": "dev-shared",
        "format": "PACKAGE_FORMAT_NPM",
        "package": "left-pad",
        "versions": ["1.0.0"],
    }
    result = grpcurl(
        bin_dir,
        "-plaintext",
        "-d",
        json.dumps(body),
        gateway.address,
        f"{SERVICE}/DeletePackageVersions",
    )
    assert 0 != result.returncode
    assert "Code: Unauthenticated" in result.stderr
