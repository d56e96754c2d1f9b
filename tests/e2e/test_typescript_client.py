"""A second language proves the contract: the TypeScript client in clients/typescript, generated
from the same protos by buf and protoc-gen-es, deletes through a real gateway over gRPC (HTTP/2)
and decodes the gateway's rich errors; a service installs the packed client and runs the
README's TypeScript example verbatim.

Needs npm and node: skipped without them, unless the CI environment variable is set (then the
tests fail). The client is copied to a temporary folder with the protos and built there, so
the checkout is never written and concurrent runs do not race; npm's cache makes later runs
fast (``npm ci --prefer-offline``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.runtime import Gateway
from tests.certs import TestPKI, make_test_pki
from tests.conftest import REPO
from tests.e2e.harness import PRINCIPAL_KEY, GatewayFactory

# The first test's setup runs `npm ci`: with a cold npm cache that is a download.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENT = REPO / "clients" / "typescript"
GENERATED = Path("src") / "gen"
SHIPPED: dict[str, str] = {}  # empty PolicySettings: the shipped example policies
_README_BLOCK = re.compile(r"```(typescript|yaml)\n(.*?)```", re.DOTALL)
AS_CAROL = ((PRINCIPAL_KEY, "carol"),)  # an auditor (shipped entities.yaml)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def npm(cwd: Path, *args: str, timeout: float = 300) -> str:
    """Run npm in `cwd` (quietly, preferring the cache); its stdout, or fail with its output."""
    result = subprocess.run(
        ["npm", "--no-audit", "--no-fund", "--prefer-offline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert 0 == result.returncode, f"npm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def node(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run node; never raises on a non-zero exit."""
    return subprocess.run(
        ["node", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of protos/ and clients/typescript/ (as in the checkout: buf.gen.yaml reads
    ../../protos) with its dependencies installed by `npm ci`; skipped without npm."""
    missing = [tool for tool in ("npm", "node") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not found: the TypeScript client cannot be built"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("ts")
    shutil.copytree(REPO / "protos", root / "protos")
    client = root / "clients" / "typescript"
    shutil.copytree(CLIENT, client, ignore=shutil.ignore_patterns("node_modules", "dist", "*.tgz"))
    npm(client, "ci")
    return client


@pytest.fixture(scope="module")
def client(workspace: Path) -> Path:
    """The client regenerated from the protos (`npm run generate`) and built (`npm run build`)."""
    npm(workspace, "run", "generate")
    npm(workspace, "run", "build")
    return workspace


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_committed_code_is_what_the_protos_generate(client: Path) -> None:
    """The committed src/gen equals a fresh `buf generate`: regenerate with `make ts-client`."""
    fresh, committed = _files(client / GENERATED), _files(CLIENT / GENERATED)
    assert sorted(fresh) == sorted(committed), "run `make ts-client`"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert [] == changed, "run `make ts-client` and commit clients/typescript/src/gen"


def delete_versions(client: Path, gateway: Gateway, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the client's delete-versions program against `gateway`: its exit code and JSON."""
    result = node("dist/delete-versions.js", "--target", gateway.address, *args, cwd=client)
    assert result.returncode in {0, 1}, result.stderr
    return result.returncode, json.loads(result.stdout)


LEFT_PAD = ("--domain", "demo", "--repository", "dev-shared", "--format", "npm")


def test_node_deletes_and_decodes_a_policy_denial(
    client: Path, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """alice deletes 1.0.0 (proto JSON: the version and the audit event id); bob is refused
    with PERMISSION_DENIED, one ErrorInfo (POLICY_DENIED, the audit event id in its metadata)
    and a PolicyDenial; alice's 1.3.0 is denied by the policy that names it; an auditor finds
    every event id the Node program printed."""
    with make_gateway(policy=SHIPPED) as gateway:
        allowed = delete_versions(
            client, gateway, "--principal", "alice", *LEFT_PAD, "--package", "left-pad", "1.0.0"
        )
        denied = delete_versions(
            client, gateway, "--principal", "bob", *LEFT_PAD, "--package", "left-pad", "1.1.0"
        )
        latest = delete_versions(
            client, gateway, "--principal", "alice", *LEFT_PAD, "--package", "left-pad", "1.3.0"
        )
        ids = [allowed[1]["auditEventId"], denied[1]["auditEventId"], latest[1]["auditEventId"]]
        with grpc.insecure_channel(gateway.address) as channel:
            audit = pb_grpc.AuditServiceStub(channel)
            found = [
                audit.GetAuditEvent(
                    pb.GetAuditEventRequest(event_id=i), timeout=10, metadata=AS_CAROL
                ).event
                for i in ids
            ]
    status, response = allowed
    assert 0 == status
    assert ["1.0.0"] == list(response["successfulVersions"])
    assert "PACKAGE_VERSION_STATUS_DELETED" == response["successfulVersions"]["1.0.0"]["status"]
    assert None is emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0")

    status, error = denied
    assert (1, "PERMISSION_DENIED", "POLICY_DENIED") == (status, error["code"], error["reason"])
    assert {
        "reason": "POLICY_DENIED",
        "domain": "pkggov.internal",
        "metadata": {"audit_event_id": error["auditEventId"]},
    } == error["errorInfo"]
    assert {
        "deniedVersions": [{"version": "1.1.0", "reason": "denied: no policy permits it"}]
    } == error["policyDenial"]
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.1.0"
    )

    status, error = latest
    assert (1, "POLICY_DENIED") == (status, error["reason"])
    [denial] = error["policyDenial"]["deniedVersions"]
    assert ("1.3.0", ["never-delete-latest"]) == (denial["version"], denial["policyIds"])

    assert all(_UUID.fullmatch(i) for i in ids), ids
    assert [("alice", "allowed"), ("bob", "denied"), ("alice", "denied")] == [
        (event.principal, event.decision) for event in found
    ]


def test_node_decodes_field_violations(client: Path, make_gateway: GatewayFactory) -> None:
    """A request that breaks a field rule: INVALID_ARGUMENT with BadRequest's violations."""
    with make_gateway(policy=SHIPPED) as gateway:
        status, error = delete_versions(
            client,
            gateway,
            *("--principal", "alice", "--domain", "demo", "--repository", "dev-shared"),
            *("--format", "pypi", "--namespace", "acme", "--package", "requests-lite", "0.5.0"),
        )
    assert (1, "INVALID_ARGUMENT", "INVALID_REQUEST") == (status, error["code"], error["reason"])
    assert ["namespace"] == [violation["field"] for violation in error["fieldViolations"]]


@pytest.fixture
def mtls_gateway(make_gateway: GatewayFactory, tmp_path: Path) -> Iterator[tuple[Gateway, TestPKI]]:
    """A gateway that identifies callers by client certificate, and its test PKI."""
    pki = make_test_pki(tmp_path / "pki")
    identity = dataclasses.asdict(pki.identity_settings())
    with make_gateway(identity=identity, policy=SHIPPED) as gateway:
        yield gateway, pki


def test_node_calls_with_a_client_certificate(
    client: Path, mtls_gateway: tuple[Gateway, TestPKI], emulator: Emulator
) -> None:
    """Over mTLS, alice's certificate (not a header) makes her a release admin: 1.0.0 goes."""
    gateway, pki = mtls_gateway
    tls = ("--cacert", str(pki.ca_pem), "--cert", str(pki.alice.cert), "--key", str(pki.alice.key))
    status, response = delete_versions(
        client, gateway, *tls, *LEFT_PAD, "--package", "left-pad", "1.0.0"
    )
    assert 0 == status, response
    assert ["1.0.0"] == list(response["successfulVersions"])
    assert None is emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0")


def readme_block(language: str, containing: str = "") -> str:
    """The README's one `language` block that contains `containing`."""
    text = (REPO / "README.md").read_text()
    [block] = [b for lang, b in _README_BLOCK.findall(text) if lang == language and containing in b]
    return str(block)


def _without_comments(yaml: str) -> list[str]:
    return [
        line for line in yaml.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_readme_go_template_is_the_shipped_one() -> None:
    """The README's Go buf.gen.yaml is clients/go/buf.gen.yaml without its comments."""
    shipped = (REPO / "clients" / "go" / "buf.gen.yaml").read_text()
    assert _without_comments(shipped) == _without_comments(readme_block("yaml", "protoc-gen-go"))


def test_a_service_installs_the_client_and_runs_the_readme_example(
    client: Path, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """As the README says: `npm pack` the client, install the tarball in a service (ESM,
    TypeScript), compile the README's example verbatim (127.0.0.1:50051 becomes the test
    gateway's address) and run it: 1.0.0 is deleted, 1.3.0 is refused with the policy's
    reason."""
    [tarball] = json.loads(npm(client, "pack", "--json", "--ignore-scripts", "--silent"))
    service = tmp_path / "service"
    service.mkdir()
    (service / "package.json").write_text(
        json.dumps(
            {
                "name": "a-service",
                "private": True,
                "type": "module",
                "dependencies": {"@pkggov/client": f"file:{client / tarball['filename']}"},
                "devDependencies": {"typescript": "5.9.3", "@types/node": "20.19.43"},
            }
        )
    )
    (service / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "target": "es2022",
                    "module": "nodenext",
                    "strict": True,
                    "skipLibCheck": True,
                    "types": ["node"],
                }
            }
        )
    )
    npm(service, "install")
    with make_gateway(policy=SHIPPED) as gateway:
        example = readme_block("typescript").replace("127.0.0.1:50051", gateway.address)
        (service / "main.ts").write_text(example)
        npm(service, "exec", "--", "tsc", "-p", ".")
        result = node("main.js", cwd=service)
    assert 0 == result.returncode, result.stderr
    deleted, refused = result.stdout.splitlines()
    assert re.fullmatch(rf"deleted \[ '1\.0\.0' \] audit event {_UUID.pattern}", deleted), deleted
    assert "PERMISSION_DENIED POLICY_DENIED [ 'denied by never-delete-latest' ]" == refused
