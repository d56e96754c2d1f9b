"""`pkggov-gateway`: start the gateway; stop gracefully on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from pkggov_gateway import preflight
from pkggov_gateway.config import (
    ConfigError,
    IdentitySettings,
    Settings,
    describe,
    load_settings,
)
from pkggov_gateway.logs import LogFormat, configure_logging
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.serving import Signals, serve, start_failure, start_gateway
from pkggov_gateway.workers import Started, describe_workers, supervise

log = structlog.get_logger("pkggov.main")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pkggov-gateway",
        description="Package governance gateway for AWS CodeArtifact DeletePackageVersions.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("PKGGOV_CONFIG") or None,
        help="TOML settings file (default: $PKGGOV_CONFIG); PKGGOV_<SECTION>_<KEY> environment "
        "variables override it",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development profile: also start the embedded CodeArtifact emulator with demo "
        "data and use it as the upstream (what `make run` does)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the settings, print them, exit"
    )
    return parser.parse_args(argv)


def banner(gateway: Gateway) -> str:
    """Ready-to-paste examples for the running gateway."""
    return _banner(
        gateway.address,
        gateway.settings.identity,
        emulator_url=gateway.emulator.endpoint_url if gateway.emulator is not None else None,
        policy_ids=gateway.policy.policy_ids(),
        health_address=gateway.server.health_address,
        metrics=(
            f"http://{gateway.metrics_address}/metrics"
            if gateway.metrics_address is not None
            else None
        ),
    )


def workers_banner(started: Started, identity: IdentitySettings) -> str:
    """The banner of a supervisor (server.workers > 1): the one address its workers share,
    the workers, and the same examples."""
    return _banner(
        started.address,
        identity,
        workers=describe_workers(started.workers),
        emulator_url=started.emulator_url,
        policy_ids=started.workers[0].policy_ids,
        health_address=started.health_address,
        metrics=(
            f"http://{started.metrics_address}/metrics (every worker's, labelled worker)"
            if started.metrics_address is not None
            else None
        ),
    )


def _banner(
    target: str,
    identity: IdentitySettings,
    *,
    emulator_url: str | None,
    policy_ids: Sequence[str],
    health_address: str | None,
    metrics: str | None,
    workers: str | None = None,
) -> str:
    lines = [f"pkggov gateway listening on {target} (identity: {identity.mode})"]
    if workers is not None:
        lines.append(workers)
    if emulator_url is not None:
        lines.append(f"CodeArtifact emulator (demo data) at {emulator_url}")
    lines.append(f"policies: {', '.join(policy_ids)}")
    if health_address is not None:
        lines.append(f"health checks (plaintext, Check only) at {health_address}")
    if metrics is not None:
        lines.append(f"Prometheus metrics at {metrics}")
    if identity.mode == "dev":
        key = identity.dev_metadata_key
        lines += [
            "",
            "Try it (from this checkout, with .venv/bin on PATH or the .venv/bin/ prefix):",
            f"  grpcurl -plaintext {target} list",
            f"  grpcurl -plaintext {target} describe pkggov.v1.PackageGovernanceService",
            f'  grpcurl -plaintext -H \'{key}: alice\' -d \'{{"domain": "demo", '
            '"repository": "dev-shared", "format": "PACKAGE_FORMAT_NPM", "package": "left-pad", '
            f'"versions": ["1.0.0"]}}\' {target} '
            "pkggov.v1.PackageGovernanceService/DeletePackageVersions",
            f"  pkggov delete --target {target} --as alice --dry-run --domain demo "
            "--repository dev-shared --format npm --package left-pad 1.1.0 1.3.0 9.9.9",
            f"  pkggov delete --target {target} --as alice --domain demo "
            "--repository dev-shared --format pypi --package requests-lite 0.1.0 0.2.0 9.9.9",
            f"  pkggov audit list --target {target} --as carol --by alice --limit 5",
            f"  grpcurl -plaintext {target} grpc.health.v1.Health/Check",
        ]
    lines += ["", "Reload policies with SIGHUP; stop with Ctrl-C."]
    return "\n".join(lines)


def _check_config(settings: Settings) -> int:
    """--check-config: warnings, then problems, one line each on stderr (exit 2 if any
    problem); else the settings (secrets masked) as JSON on stdout."""
    for warning in preflight.warnings(settings):
        print(f"WARNING: {warning}", file=sys.stderr)
    problems = preflight.problems(settings)
    for problem in problems:
        print(f"pkggov-gateway: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(json.dumps(describe(settings), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain in-flight calls and exit 0 (with server.workers
    other than 1: supervise that many worker processes, see `workers.supervise`).

    Exit 2 when a setting, or what it names (a file, a listen address, the audit store), is
    unusable: one line on stderr, ``pkggov-gateway: <setting> [<value>]: <cause>``; exit 1
    for any other failure at start-up (one line too; its traceback is logged at debug level).
    """
    args = _parse(argv)
    try:
        settings: Settings = load_settings(args.config, os.environ, dev=args.dev)
    except ConfigError as error:
        print(f"pkggov-gateway: configuration error: {error}", file=sys.stderr)
        return 2
    fmt: LogFormat = settings.logging.format  # type: ignore[assignment]  # checked by config
    configure_logging(settings.logging.level, fmt)
    if args.check_config:
        return _check_config(settings)
    for warning in preflight.warnings(settings):  # the same warnings --check-config prints
        log.warning("config.suspicious", detail=warning)
    processes = settings.server.worker_processes
    if processes > 1:  # this process supervises; each worker is a gateway (workers.py)
        identity = settings.identity
        return supervise(settings, processes, lambda started: workers_banner(started, identity))
    signals = Signals()
    try:
        gateway = start_gateway(settings)
    except Exception as error:  # noqa: BLE001 - every start-up failure is one line
        code, line = start_failure(error)
        print(f"pkggov-gateway: {line}", file=sys.stderr)
        return code
    print(banner(gateway), flush=True)
    serve(gateway, signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
