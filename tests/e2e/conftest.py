"""End-to-end fixtures: the real emulator and the real gateway on free ports, driven by stubs."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCOUNT_ID,
    DEMO_SECRET_ACCESS_KEY,
    Emulator,
    load_demo_seed,
)
from pkggov_gateway.logs import configure_logging
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.tools.demo_issuer import ensure_demo_issuer
from tests.conftest import REPO
from tests.e2e.harness import (
    OFF_WORDS,
    GatewayFactory,
    GatewayProcess,
    gateway_settings,
    inherited_environ,
    running_gateway,
    stub_for,
)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One emulator for the session, on a free port, seeded with the demo data."""
    emu = Emulator(
        host="127.0.0.1",
        port=0,
        seed=load_demo_seed(),
        credentials={DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY},
        account_id=DEMO_ACCOUNT_ID,
    )
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def _fresh_emulator(emulator: Emulator) -> None:
    """Every test starts from the seed with no faults and an empty call log."""
    emulator.reset()


@pytest.fixture(scope="session")
def _logging() -> None:
    configure_logging("warning", "json")


@pytest.fixture(scope="session")
def gateway(emulator: Emulator, _logging: None) -> Iterator[Gateway]:
    """The session's gateway in front of the session's emulator, default settings."""
    with running_gateway(gateway_settings(emulator.endpoint_url)) as gw:
        yield gw


@pytest.fixture
def make_gateway(emulator: Emulator, _logging: None) -> GatewayFactory:
    """Start a gateway with overridden settings: `with make_gateway(upstream={...}) as gw:`."""

    def make(
        endpoint_url: str | None = None,
        clock: Callable[[], datetime] | None = None,
        **overrides: Any,
    ) -> AbstractContextManager[Gateway]:
        settings = gateway_settings(endpoint_url or emulator.endpoint_url, **overrides)
        return running_gateway(settings, clock)

    return make


@pytest.fixture
def stub(gateway: Gateway) -> Iterator[pb_grpc.PackageGovernanceServiceStub]:
    """A stub on a fresh channel to the session gateway, calling as the test principal."""
    with stub_for(gateway) as identified:
        yield identified


@contextmanager
def spawn_gateway(bin_dir: Path, **env_overrides: str) -> Iterator[GatewayProcess]:
    """Start the real binary as `make run` does (--dev), with free ports, JSON logs and
    `env_overrides`; killed on exit if still running.

    With ``PKGGOV_EMULATOR_ENABLED=false`` in `env_overrides` the gateway embeds no emulator;
    its upstream is ``PKGGOV_UPSTREAM_ENDPOINT_URL`` (also returned as `emulator_url`)."""
    workdir = tempfile.mkdtemp(prefix="pkggov-gateway-")
    demo: dict[str, str] = {}
    if "PKGGOV_IDENTITY_MODE" not in env_overrides:  # as `make run`: the demo token issuer
        ensure_demo_issuer(REPO / ".run" / "demo-issuer")
        demo = {
            "PKGGOV_IDENTITY_TOKENS": "accept",
            "PKGGOV_IDENTITY_TOKEN_ISSUERS": str(REPO / ".run" / "demo-issuer" / "issuers.yaml"),
        }
    env = {
        **inherited_environ(),  # without the test suite's own switches (PKGGOV_SOAK, ...)
        **demo,
        "PKGGOV_SERVER_LISTEN": "127.0.0.1:0",
        "PKGGOV_EMULATOR_LISTEN": "127.0.0.1:0",
        "PKGGOV_LOGGING_FORMAT": "json",
        "PKGGOV_AUDIT_STORE": f"sqlite:{workdir}/audit.db",
        "PKGGOV_AUDIT_LOG": f"{workdir}/audit.jsonl",  # stdout is read only up to the banner
        "PKGGOV_METRICS_LISTEN": "127.0.0.1:0",
        **env_overrides,
    }
    env.pop("PKGGOV_CONFIG", None)
    embedded = env.get("PKGGOV_EMULATOR_ENABLED", "true").strip().lower() not in OFF_WORDS
    if not embedded:
        assert env.get("PKGGOV_UPSTREAM_ENDPOINT_URL"), "no embedded emulator and no upstream"
    with subprocess.Popen(
        [str(bin_dir / "pkggov-gateway"), "--dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        try:
            banner: list[str] = []
            deadline = time.monotonic() + 30
            while not any(line.startswith("Reload policies") for line in banner):
                line = proc.stdout.readline()
                if (not line and proc.poll() is not None) or time.monotonic() > deadline:
                    stderr = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"gateway did not start: {stderr}")
                banner.append(line.rstrip("\n"))
            address = re.search(r"listening on (\S+)", "\n".join(banner))
            emulator = re.search(r"emulator \(demo data\) at (\S+)", "\n".join(banner))
            assert address, banner
            assert embedded == bool(emulator), banner
            upstream = emulator.group(1) if emulator else env["PKGGOV_UPSTREAM_ENDPOINT_URL"]
            yield GatewayProcess(
                proc, address.group(1), upstream, banner, env["PKGGOV_AUDIT_STORE"]
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def gateway_process(bin_dir: Path) -> Iterator[GatewayProcess]:
    """The real binary as `make run` starts it."""
    with spawn_gateway(bin_dir) as process:
        yield process
