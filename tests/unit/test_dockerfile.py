"""The production image holds the gateway and its runtime dependencies only: read from the
Dockerfile and .dockerignore (no container engine needed)."""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import NamedTuple

from tests.conftest import REPO

# Paths the image must never receive from the build context.
DEVELOPMENT_ONLY = ("emulator", "tests", "scripts", "protos", ".venv", ".run")


class Instruction(NamedTuple):
    """One Dockerfile instruction: its keyword, its arguments and the stage it belongs to."""

    keyword: str
    arguments: str
    stage: int


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        found.append(Instruction(keyword.upper(), " ".join(arguments.split()), stage))
    return found


def comments() -> str:
    """The Dockerfile's comment lines, joined into one text."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    return " ".join(line.lstrip("# ").strip() for line in lines if line.lstrip().startswith("#"))


def context_sources() -> list[str]:
    """Every path a COPY or ADD takes from the build context (not from another stage)."""
    sources: list[str] = []
    for instruction in instructions():
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        sources.extend(word for word in words[:-1] if not word.startswith("--"))
    return sources


def test_the_build_context_is_an_allowlist_without_development_files() -> None:
    """.dockerignore excludes everything, then lets in the gateway's and the client's sources
    only; the emulator (with its demo seed and demo keys), tests and scripts never enter."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    assert "*" == patterns[0]
    assert allowed
    for path in allowed:
        assert not path.startswith(DEVELOPMENT_ONLY), path
    for source in context_sources():
        assert not source.rstrip("/").startswith(DEVELOPMENT_ONLY), source
        assert any(
            path == source.rstrip("/") or path.startswith(source.rstrip("/") + "/")
            for path in allowed
        ), f"COPY {source} is not in .dockerignore's allowlist"


def test_no_emulator_and_no_dev_extra_is_installed() -> None:
    """Nothing names the emulator, and pip installs the built wheels, not `.[dev]`."""
    for instruction in instructions():
        assert "emulator" not in instruction.arguments.lower(), instruction
        assert "[dev]" not in instruction.arguments, instruction
    runs = [i.arguments for i in instructions() if i.keyword == "RUN" and "install" in i.arguments]
    assert ["/wheels/*.whl"] == [run.split()[-1] for run in runs if "pip" in run]


def test_the_run_stage_copies_only_the_virtualenv_and_runs_the_gateway_as_non_root() -> None:
    """The last stage takes /opt/pkggov from the build stage and nothing from the context."""
    last = max(instruction.stage for instruction in instructions())
    stage = [instruction for instruction in instructions() if instruction.stage == last]
    copies = [i.arguments for i in stage if i.keyword in {"COPY", "ADD"}]
    assert ["--from=build /opt/pkggov /opt/pkggov"] == copies
    user = [i.arguments for i in stage if i.keyword == "USER"]
    assert 1 == len(user)
    assert not user[0].startswith(("0", "root"))
    assert ['["pkggov-gateway"]'] == [i.arguments for i in stage if i.keyword == "ENTRYPOINT"]


def test_exposed_ports_are_the_example_configurations() -> None:
    """EXPOSE lists exactly the ports examples/pkggov.toml listens on: server.listen,
    server.health_listen and metrics.listen (the emulator's is development only)."""
    example = tomllib.loads((REPO / "examples" / "pkggov.toml").read_text())
    listens = [
        example["server"]["listen"],
        example["server"]["health_listen"],
        example["metrics"]["listen"],
    ]
    expected = {int(listen.rpartition(":")[2]) for listen in listens}
    exposed = {
        int(port.partition("/")[0])
        for instruction in instructions()
        if instruction.keyword == "EXPOSE"
        for port in instruction.arguments.split()
    }
    assert expected == exposed


def test_health_is_checked_or_the_orchestrators_probe_is_documented() -> None:
    """A HEALTHCHECK, or a comment saying why the orchestrator's gRPC probe of
    server.health_listen replaces it."""
    if any(instruction.keyword == "HEALTHCHECK" for instruction in instructions()):
        return
    text = comments()
    assert re.search(r"No HEALTHCHECK: .*gRPC .*probes? .*server\.health_listen", text), text
