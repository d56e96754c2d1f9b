"""`pkggov-gateway --check-config`: the files the settings name exist and parse.

Risky combinations are warned about (`warnings`). The checks reuse what build_gateway runs
(the Cedar loader, the TLS credential loader, the emulator's seed loader), so they find what
start-up would, with the same StartupError text.
They change nothing and open no connection and no port: the audit store is checked on paper
(a SQLite file's directory exists and is writable; load_settings has parsed a PostgreSQL URL),
so that the check can run where the database is not reachable (an image build, CI). A
listener that is taken, or a database that is down, is found only at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pkggov_gateway.adapters.identity import build_authenticator
from pkggov_gateway.adapters.sql import sqlite_path
from pkggov_gateway.bootstrap import (
    build_emulator,
    claim_groups_of,
    credentials_of,
    load_policy,
)
from pkggov_gateway.config import Settings
from pkggov_gateway.netaddr import is_loopback
from pkggov_gateway.startup import (
    StartupError,
    file_problem,
    naming,
    sqlite_problem,
    store_error,
)

__all__ = ["listeners", "problems", "warnings"]


def problems(settings: Settings) -> list[str]:
    """What would stop the gateway from starting, one line each naming the setting (empty:
    nothing found). A loader stops at its first error, so one per check at most."""
    found: list[str] = []
    for check in _CHECKS:
        try:
            check(settings)
        except StartupError as error:
            found.append(str(error))
    return found


def warnings(settings: Settings) -> list[str]:
    """Combinations that start but are most likely a mistake: the development emulator with
    a production identity (mTLS), or reachable from other hosts."""
    if not settings.emulator.enabled:
        return []
    found: list[str] = []
    if settings.identity.mode == "mtls":
        found.append(
            "emulator.enabled with identity.mode = mtls: a production identity in front of the "
            "development emulator, which stands in for CodeArtifact (is --dev or "
            "emulator.enabled set by mistake?)"
        )
    exposed = [f"{name} {addr}" for name, addr in listeners(settings) if not is_loopback(addr)]
    if exposed:
        found.append(
            f"emulator.enabled with non-loopback listener(s) {', '.join(exposed)}: the "
            "development emulator (demo data and credentials, no real CodeArtifact) is then "
            "reachable from other hosts"
        )
    return found


def listeners(settings: Settings) -> list[tuple[str, str]]:
    """(setting, HOST:PORT) of every listener the settings switch on."""
    named = [
        ("server.listen", settings.server.listen),
        ("server.health_listen", settings.server.health_listen),
        ("metrics.listen", settings.metrics.listen),
    ]
    if settings.emulator.enabled:
        named.append(("emulator.listen", settings.emulator.listen))
    return [(name, listen) for name, listen in named if listen]


def _policy(settings: Settings) -> None:
    try:  # the groups tokens' claims can name must be defined (the identity check names a
        groups = claim_groups_of(build_authenticator(settings.identity))  # bad issuers file)
    except (ValueError, OSError):
        groups = ()
    load_policy(settings, claim_groups=groups)


def _identity(settings: Settings) -> None:
    with naming("identity"):
        build_authenticator(settings.identity)


def _certificates(settings: Settings) -> None:
    credentials_of(settings)


def _audit_store(settings: Settings) -> None:
    # A PostgreSQL URL was parsed by load_settings (as urlsplit and libpq read it).
    path = sqlite_path(settings.audit.store)
    if path is not None:
        problem = sqlite_problem(path)
        if problem:
            raise store_error(settings, f"cannot open: {problem}")


def _audit_log(settings: Settings) -> None:
    log = settings.audit.log
    if log in ("", "off", "stdout"):
        return
    problem = file_problem(Path(log))
    if problem:
        raise StartupError("audit.log", f"cannot open: {problem}", value=log)


def _emulator(settings: Settings) -> None:
    if settings.emulator.enabled:
        build_emulator(settings.emulator)


_CHECKS: tuple[Callable[[Settings], None], ...] = (
    _policy,
    _identity,
    _certificates,
    _audit_store,
    _audit_log,
    _emulator,
)
