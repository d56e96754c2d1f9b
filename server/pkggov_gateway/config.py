"""Settings: frozen dataclasses built from defaults, a TOML file and an environment mapping.

Precedence: environment > file > defaults. Every key can be overridden by
``PKGGOV_<SECTION>_<KEY>`` (e.g. ``PKGGOV_SERVER_LISTEN=0.0.0.0:50051``); ``PKGGOV_CONFIG``,
``PKGGOV_TARGET`` and the client CLI's ``PKGGOV_CLI_*`` are not settings. There are two sets of
defaults: the production defaults (the dataclass defaults: loopback, the real CodeArtifact
through the standard AWS chain) and the development profile (``dev=True``, what ``make run``
uses: the same plus the embedded CodeArtifact emulator with demo data). The emulator is never
on unless the development profile or the configuration turns it on. Configuration is only
ever read from what is passed in (never at import).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints
from urllib.parse import unquote, urlsplit

from pkggov_gateway.domain.errors import InvalidRequestError
from pkggov_gateway.domain.retention import rule_from_mapping
from pkggov_gateway.domain.validation import RULE_NAME
from pkggov_gateway.netaddr import is_loopback

__all__ = [
    "ApprovalSettings",
    "AuditSettings",
    "ConfigError",
    "EmulatorSettings",
    "LoggingSettings",
    "QuotaSettings",
    "RecoverySettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "WebhookSettings",
    "describe",
    "load_settings",
    "mask_store",
    "masked_store",
    "metadata_key_problem",
    "store_secrets",
    "usable_cpus",
]

ENV_PREFIX = "PKGGOV_"
CLIENT_ENV_PREFIX = "PKGGOV_CLI_"
"""The `pkggov` client CLI's variables (PKGGOV_CLI_TARGET, PKGGOV_CLI_PRINCIPAL_KEY): never
settings, so that the shell that runs the gateway may set them. No section is named "cli"."""
_NOT_SETTINGS = frozenset({"PKGGOV_CONFIG", "PKGGOV_TARGET"})  # read by the entry points


DEV_RECOVERY_WINDOWS = {"prod-*": 30.0}
"""The development profile's recovery windows: the demo's prod-release gets 30 days."""

DEV_CLEANUP_RULES: dict[str, dict[str, Any]] = {
    "dev-prereleases": {
        "repositories": ["dev-*"],
        "prerelease": "only",
        "older_than_days": 30,
        "keep_newest_prereleases": 2,
        "keep_younger_than_days": 7,
    }
}
"""The development profile's named cleanup rule: in dev-* repositories, delete pre-releases
older than 30 days, but keep the newest 2 of them and never anything younger than 7 days."""


class ConfigError(Exception):
    """Raised when the configuration file or environment holds an unknown key or bad value."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The gRPC listener and its limits."""

    listen: str = "127.0.0.1:50051"
    # A plaintext listener serving only grpc.health.v1 Check, for probes that cannot present a
    # client certificate (the kubelet's); "" = none. Must differ from listen.
    health_listen: str = ""
    # Gateway processes (workers) on this listen address: 1 = this process serves; more = this
    # process supervises that many workers, each a whole gateway (its own threads, limits,
    # audit replica name "<audit.replica>-w<i>" and 1/workers of the upstream pace) sharing the
    # port through SO_REUSEPORT; 0 = one per usable CPU (the process's CPU affinity).
    workers: int = 1
    max_workers: int = 32
    max_concurrent_rpcs: int = 256
    grace_seconds: float = 15.0  # must cover one upstream attempt: connect + read timeout
    default_deadline_seconds: float = 30.0
    max_deadline_seconds: float = 300.0
    max_versions_per_call: int = 1000
    # HTTP/2 keepalive: ping an idle connection after this long, drop it if no answer in time.
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    # Clients may ping at most this often (more often: GOAWAY "too_many_pings").
    min_client_ping_interval_seconds: float = 10.0
    # Close connections after this age (plus a grace for calls in flight) so that clients
    # reconnect and spread over replicas added since; 0 = never.
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0
    # Streaming calls (server reflection, Health/Watch): at most max_streams open at once
    # (0 = a quarter of max_workers, at least 1; must be below max_workers, so that unary calls
    # always keep threads) and max_streams_per_peer from one host. A stream waiting on its
    # client longer than stream_idle_seconds, or open longer than stream_max_seconds, is ended.
    max_streams: int = 0
    max_streams_per_peer: int = 4
    stream_idle_seconds: float = 10.0
    stream_max_seconds: float = 300.0
    # A unary call still waiting for its request message after 0.25 s counts, with the
    # streams, against max_streams and max_streams_per_peer (beyond them the newest are ended);
    # one waiting longer than this is ended.
    request_message_seconds: float = 5.0

    @property
    def stream_budget(self) -> int:
        """max_streams, or (when 0) a quarter of max_workers, at least 1."""
        return self.max_streams or max(1, self.max_workers // 4)

    @property
    def worker_processes(self) -> int:
        """workers, or (when 0) one per CPU this process may run on (`usable_cpus`)."""
        return self.workers or usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the system has one (Linux;
    a container's CPU quota does not narrow it), else the CPU count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this system (macOS)
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How the gateway reaches CodeArtifact. Empty strings mean "use the AWS default chain"."""

    region: str = "us-east-1"
    endpoint_url: str = ""
    profile: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 10.0
    max_attempts: int = 3
    retry_base_delay_seconds: float = 0.05
    deadline_margin_seconds: float = 0.1
    chunk_parallelism: int = 4
    chunk_workers: int = 16
    min_call_seconds: float = 0.2
    # CodeArtifact's per-account, per-Region request limits, kept under (the fleet's budget):
    # about 100 writes/s and 200 ListPackageVersions/s. Each replica takes 1/replicas of them.
    write_calls_per_second: float = 90.0
    read_calls_per_second: float = 180.0
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """The embedded CodeArtifact emulator (development only); when enabled it is the upstream."""

    enabled: bool = False
    listen: str = "127.0.0.1:50052"
    seed: str = "demo"


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """How callers are identified: mTLS (production), a trusted proxy's header, or dev mode."""

    mode: str = "mtls"
    # mTLS: the server's certificate and key, and the CA bundle client certificates must chain to.
    server_cert: str = ""
    server_key: str = ""
    client_ca: str = ""
    # Where the principal is taken from, in order: spiffe (URI SAN), dns (DNS SAN), cn.
    principal_sources: str = "spiffe,dns,cn"
    # Trusted proxy: the header carrying the client certificate facts (Envoy's XFCC format),
    # honoured only from these peers (comma-separated IP addresses or CIDR ranges).
    proxy_header: str = "x-forwarded-client-cert"
    trusted_proxies: str = ""
    # Development: the principal is this metadata key's value; loopback listeners only.
    dev_metadata_key: str = "x-pkggov-principal"
    # Workload identity tokens (OIDC / JWT bearer, adapters.tokens): off; accept (a token or
    # the mode's own identity, token_precedence deciding when both come); only (a token is
    # required: TLS without client certificates). Tokens need TLS (mode = mtls), except in
    # development (mode = dev on loopback), which may accept them beside the dev header.
    tokens: str = "off"
    # The issuers file (YAML): each trusted issuer, its keys, audiences, algorithms, claims.
    token_issuers: str = ""
    # When a call carries both: which identity wins, "certificate" (the mode's own: the client
    # certificate, or the dev header) or "token". A token that is sent is always verified.
    token_precedence: str = "certificate"  # noqa: S105 - a choice, not a secret
    # Where the token is: the value must be exactly "Bearer <token>".
    token_metadata_key: str = "authorization"  # noqa: S105 - a metadata key, not a secret
    max_token_bytes: int = 8192


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Where the Cedar schema, policies and entities (principals -> groups) are read from.

    Empty paths mean the example set shipped in the package (pkggov_gateway/policies).
    """

    schema: str = ""
    policies: str = ""
    entities: str = ""
    # Most versions one call may name, by principal group (the most generous group applies);
    # principals in none of these groups get server.max_versions_per_call.
    max_versions_per_group: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """The audit store (the record) and its JSON-lines copy."""

    # sqlite:PATH (one replica; relative to the working directory) or
    # postgresql://user@host:port/database (a fleet sharing one database).
    store: str = "sqlite:pkggov-audit.db"
    # This replica's name in the record ("" = the host name). Each replica must have its own.
    replica: str = ""
    # Where each committed entry is copied as one JSON line: stdout, off, or a file path.
    log: str = "stdout"
    # An intent still without outcome after this long is reconciled by any replica.
    orphan_after_seconds: float = 600.0
    # How often open intents are looked for (besides at start-up).
    reconcile_interval_seconds: float = 60.0
    # This replica's own open intents are reconciled once their call's deadline is this long
    # past (a delete the dead process sent may still be applied upstream until then).
    reconcile_settle_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """Versions a principal may delete per window, counted from the audit record."""

    window_seconds: float = 3600.0
    # For principals in none of the groups below; 0 = unlimited.
    max_versions: int = 0
    # By group: the most generous of the principal's groups applies.
    max_versions_per_group: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    """Recoverable deletion: recovery windows, and the purge worker every replica runs."""

    # Recovery windows in days, by "DOMAIN/REPOSITORY" glob ("REPOSITORY" alone: any domain),
    # first match wins; 0 = no window. Under a window a delete archives and purges later;
    # where none matches, deletion is immediate. The development profile: prod-* 30 days.
    windows: dict[str, float] = field(default_factory=dict)
    # The purge: delete (DeletePackageVersions) or dispose (DisposePackageVersions: the assets
    # are deleted and the record kept, status Disposed).
    final_step: str = "delete"
    # How often each replica's purge worker looks for due purges, and how many it takes at
    # once; a taken purge is leased for lease_seconds (then another replica may take it).
    worker_interval_seconds: float = 30.0
    worker_batch: int = 100
    lease_seconds: float = 300.0
    # A purge's upstream calls get this long; it must be well below lease_seconds.
    purge_deadline_seconds: float = 60.0
    # A failed purge is retried after retry_seconds, doubling per attempt up to the maximum.
    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """Four eyes: deletion requests awaiting approval (policy says which deletions need it)."""

    # A request not executed within this many hours expires and can never run.
    expire_hours: float = 72.0
    # Whether one rejection ends a request (false: rejections are recorded, approvals still
    # count).
    rejection_ends: bool = True
    # How often each replica records the expiry of requests past their expiry (and, with
    # auto_execute, runs the requests whose approvals may now satisfy policy).
    sweep_interval_seconds: float = 60.0
    # Run a request for its requester as soon as its approvals satisfy policy (false: the
    # requester runs ExecuteDeletionRequest).
    auto_execute: bool = False


@dataclass(frozen=True, slots=True)
class CleanupSettings:
    """Retention: cleanup plans (PlanCleanup) and the jobs that apply them (ApplyCleanup)."""

    # A plan can be applied for this many hours after it was made; it is kept plan_retention_days
    # more (a finished job's report reads it), then pruned.
    plan_ttl_hours: float = 24.0
    plan_retention_days: float = 30.0
    # The most packages and versions one plan covers (CLEANUP_TOO_LARGE beyond), and the most
    # unexpired plans one principal may have (CLEANUP_PLAN_LIMIT beyond).
    max_packages: int = 1000
    max_versions: int = 200_000
    max_open_plans: int = 20
    # Every replica runs a job runner: how often it looks for a job; a job it takes is leased
    # for lease_seconds (renewed after each package); each deletion call gets
    # call_deadline_seconds. A package that fails is retried after retry_seconds, doubling up
    # to retry_max_seconds; after max_attempts the job fails.
    interval_seconds: float = 5.0
    lease_seconds: float = 600.0
    call_deadline_seconds: float = 60.0
    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 20
    # Named rules, by name: each a table of rule fields (see the README) and `repositories`,
    # the DOMAIN/REPOSITORY globs it is for. The development profile: dev-prereleases.
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Notifications of deletion requests (created, approved, rejected, cancelled, expired,
    executed): an HTTP POST of a signed JSON event to `url`, from a durable outbox."""

    # https://... ("" = off); plain http only to loopback unless allow_plaintext.
    url: str = ""
    # The HMAC-SHA256 key of X-Pkggov-Signature, at least 32 bytes (from a Secret:
    # PKGGOV_WEBHOOKS_SECRET). Required with url.
    secret: str = ""
    # A CA bundle to verify the receiver's certificate ("" = the system's).
    ca_file: str = ""
    allow_plaintext: bool = False
    timeout_seconds: float = 10.0
    # How often each replica delivers what is due, and how many events a pass takes; a taken
    # event is leased for lease_seconds. A failed delivery is retried after retry_seconds,
    # doubling up to retry_max_seconds.
    interval_seconds: float = 5.0
    batch: int = 50
    lease_seconds: float = 300.0
    retry_seconds: float = 30.0
    retry_max_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus endpoint (/metrics over HTTP)."""

    # HOST:PORT to serve metrics on ("" = off). Loopback by default; 0.0.0.0:9464 in a pod.
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Log level and format (auto = JSON unless stderr is a terminal)."""

    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the composition root needs."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


_MAY_BE_ZERO = frozenset(
    {
        "deadline_margin_seconds",
        "retry_base_delay_seconds",
        "max_versions",
        "max_connection_age_seconds",
        "max_connection_age_grace_seconds",
        "max_streams",
        "workers",
    }
)

_Number = TypeVar("_Number", int, float)

_MOST_INT = 2**31 - 1
"""Any integer setting: what grpc's options and the databases' integers hold."""
_MOST_SECONDS = 2_000_000.0
"""Any number setting (seconds, rates): grpc and libpq take milliseconds as 32-bit integers."""
_MOST: dict[tuple[str, str], float] = {
    ("server", "workers"): 1024,  # processes
    ("server", "max_workers"): 10_000,  # threads
    ("server", "max_concurrent_rpcs"): 10_000,
    ("server", "max_streams"): 10_000,
    ("server", "max_streams_per_peer"): 10_000,
    ("upstream", "chunk_workers"): 10_000,  # threads
    ("upstream", "chunk_parallelism"): 10_000,
    ("upstream", "max_attempts"): 100,
    ("identity", "max_token_bytes"): 65_536,
    ("upstream", "replicas"): 10_000,
    ("quota", "window_seconds"): 366 * 86_400.0,
    ("recovery", "worker_batch"): 1000,
    ("recovery", "retry_max_seconds"): 30 * 86_400.0,
    ("approvals", "expire_hours"): 24 * 366.0,
    ("webhooks", "batch"): 1000,
    ("cleanup", "max_packages"): 100_000,
    ("cleanup", "max_versions"): 10_000_000,
    ("cleanup", "max_attempts"): 1000,
    ("cleanup", "plan_ttl_hours"): 24 * 30.0,
    ("cleanup", "plan_retention_days"): 3660.0,
    ("cleanup", "max_open_plans"): 100_000,
}
"""Sane upper bounds, so that an absurd value is refused by its own name (not by the check of
another setting derived from it, nor by an overflow deep in grpc at start-up)."""

_CHOICES = {
    ("logging", "level"): {"debug", "info", "warning", "error"},
    ("logging", "format"): {"auto", "json", "console"},
    ("identity", "mode"): {"mtls", "proxy", "dev"},
    ("identity", "tokens"): {"off", "accept", "only"},
    ("identity", "token_precedence"): {"certificate", "token"},
    ("recovery", "final_step"): {"delete", "dispose"},
}


def _coerce(section: str, key: str, kind: Any, value: Any, origin: str) -> Any:
    where = f"{origin}: {section}.{key}"
    if kind == dict[str, int]:
        return _coerce_limits(where, value)
    if kind == dict[str, float]:
        return _coerce_windows(where, value)
    if kind == dict[str, dict[str, Any]]:
        return _coerce_rules(where, value)
    if kind is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        try:
            result = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            result = None
        if result == 0 and key in _MAY_BE_ZERO:
            return result
        if result is None or result <= 0:
            raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
        return _at_most(section, key, result, where, _MOST_INT)
    if kind is float:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number) or number < 0:
            raise ConfigError(f"{where}: expected a finite, non-negative number, got {value!r}")
        if number == 0 and key in _MAY_BE_ZERO:
            return number
        if number == 0:
            raise ConfigError(f"{where}: must be greater than 0")
        return _at_most(section, key, number, where, _MOST_SECONDS)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: expected one of {sorted(choices)}, got {value!r}")
    return value


def _at_most(section: str, key: str, number: _Number, where: str, most: float) -> _Number:
    most = _MOST.get((section, key), most)
    if number > most:
        shown = f"{int(most):,}" if most == int(most) else f"{most:,}"
        raise ConfigError(f"{where}: must be at most {shown}, got {number!r}")
    return number


def _coerce_limits(where: str, value: Any) -> dict[str, int]:
    """A TOML table, or ``name=N,name=N`` from the environment, of positive integers."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{where}: expected name=N pairs separated by commas")
        value = {name.strip(): number.strip() for name, _, number in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table of positive integers")
    limits: dict[str, int] = {}
    for name, number in value.items():
        try:
            limits[str(name)] = int(number)
        except (TypeError, ValueError):
            limits[str(name)] = 0
        if limits[str(name)] <= 0 or isinstance(number, bool):
            raise ConfigError(f"{where}.{name}: expected a positive integer, got {number!r}")
        if limits[str(name)] > _MOST_INT:
            raise ConfigError(f"{where}.{name}: must be at most {_MOST_INT:,}, got {number!r}")
    return limits


_MOST_WINDOW_DAYS = 3650.0
_WINDOW_PATTERN = re.compile(r"[a-z0-9*?\[\]!-]+(/[a-zA-Z0-9*?\[\]!._-]+)?")
"""``DOMAIN/REPOSITORY`` or ``REPOSITORY`` as fnmatch globs over CodeArtifact's name
characters (domains: lower-case letters, digits and hyphens)."""


def _coerce_windows(where: str, value: Any) -> dict[str, float]:
    """A TOML table, or ``pattern=DAYS,pattern=DAYS`` from the environment, of recovery windows
    in days (0 to 3650) by ``DOMAIN/REPOSITORY`` glob; the order is kept (first match wins)."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{where}: expected PATTERN=DAYS pairs separated by commas")
        value = {name.strip(): days.strip() for name, _, days in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table of days by DOMAIN/REPOSITORY pattern")
    windows: dict[str, float] = {}
    for name, days in value.items():
        pattern = str(name)
        if not _WINDOW_PATTERN.fullmatch(pattern):
            raise ConfigError(
                f"{where}: {pattern!r} is not a DOMAIN/REPOSITORY (or REPOSITORY) pattern of "
                "name characters and the globs * ? [ ]"
            )
        try:
            number = float(days) if not isinstance(days, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or not 0 <= number <= _MOST_WINDOW_DAYS:
            raise ConfigError(
                f"{where}.{pattern}: expected a number of days from 0 to "
                f"{_MOST_WINDOW_DAYS:g}, got {days!r}"
            )
        windows[pattern] = number
    return windows


def _coerce_rules(where: str, value: Any) -> dict[str, dict[str, Any]]:
    """Named cleanup rules: a TOML table of tables, each a rule's fields and `repositories`
    (checked by domain.retention, every bad field named)."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a table of rules by name ([cleanup.rules.NAME]), set in the "
            "configuration file"
        )
    rules: dict[str, dict[str, Any]] = {}
    for name, fields in value.items():
        at = f"{where}.{name}"
        if RULE_NAME.fullmatch(str(name)) is None:
            raise ConfigError(f"{at}: a rule's name must match {RULE_NAME.pattern}")
        if not isinstance(fields, dict):
            raise ConfigError(f"{at}: expected a table of rule fields")
        repositories = fields.get("repositories")
        if (
            not isinstance(repositories, list)
            or not repositories
            or not all(isinstance(r, str) and _WINDOW_PATTERN.fullmatch(r) for r in repositories)
        ):
            raise ConfigError(
                f"{at}.repositories: expected a list of DOMAIN/REPOSITORY (or REPOSITORY) "
                "patterns of name characters and the globs * ? [ ]"
            )
        rule = {k: v for k, v in fields.items() if k != "repositories"}
        origin = where.rpartition(": ")[0]
        try:
            rule_from_mapping(rule, prefix=f"cleanup.rules.{name}")
        except InvalidRequestError as error:
            problems = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
            raise ConfigError(f"{origin}: {problems}") from error
        rules[str(name)] = dict(fields)
    return rules


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None, *, dev: bool = False
) -> Settings:
    """Build Settings from the defaults (the development profile if `dev`), the TOML file at
    `path`, then `environ`."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    sections: dict[str, Any] = {}
    hints = get_type_hints(Settings)
    unknown_sections = set(raw) - set(hints)
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(sorted(unknown_sections))}")
    env = {
        k: v
        for k, v in (environ or {}).items()
        if k.startswith(ENV_PREFIX)
        and k not in _NOT_SETTINGS
        and not k.startswith(CLIENT_ENV_PREFIX)
    }
    for section, section_type in hints.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        kinds = get_type_hints(section_type)
        unknown = set(given) - set(kinds)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}"
            )
        values = {k: _coerce(section, k, kinds[k], v, str(path)) for k, v in given.items()}
        if dev and section == "emulator":
            values.setdefault("enabled", True)
        if dev and section == "identity":
            values.setdefault("mode", "dev")
        if dev and section == "recovery":
            values.setdefault("windows", dict(DEV_RECOVERY_WINDOWS))
        if dev and section == "cleanup":
            values.setdefault("rules", dict(DEV_CLEANUP_RULES))
        for key, kind in kinds.items():
            name = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if name in env:
                values[key] = _coerce(section, key, kind, env.pop(name), f"${name}")
        sections[section] = section_type(**values)
    if env:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(sorted(env))}")
    settings = Settings(**sections)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    listeners = {
        "server.listen": settings.server.listen,
        "emulator.listen": settings.emulator.listen,
        "metrics.listen": settings.metrics.listen,
        "server.health_listen": settings.server.health_listen,
    }
    for name, listen in listeners.items():
        if not listen and name in {"metrics.listen", "server.health_listen"}:
            continue  # switched off
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{name}: expected HOST:PORT, got {listen!r}")
    health = settings.server.health_listen
    if health and health.rpartition(":")[2] == settings.server.listen.rpartition(":")[2] != "0":
        raise ConfigError("server.health_listen must use another port than server.listen")
    upstream, server, identity = settings.upstream, settings.server, settings.identity
    if identity.mode == "dev" and not is_loopback(server.listen):
        raise ConfigError(
            f"identity.mode = dev is allowed only on a loopback listener, not {server.listen!r}"
        )
    if identity.mode == "mtls":
        needed: tuple[str, ...] = ("server_cert", "server_key", "client_ca")
        if identity.tokens == "only":
            needed = ("server_cert", "server_key")  # no client certificate is asked for
        missing = [f"identity.{key}" for key in needed if not getattr(identity, key)]
        if missing:
            raise ConfigError(f"identity.mode = mtls needs {', '.join(missing)}")
    if identity.mode == "proxy" and not identity.trusted_proxies:
        raise ConfigError("identity.mode = proxy needs identity.trusted_proxies")
    for key in ("proxy_header", "dev_metadata_key", "token_metadata_key"):
        problem = metadata_key_problem(getattr(identity, key))
        if problem:
            raise ConfigError(f"identity.{key}: {problem}")
    _check_tokens(identity)
    if upstream.min_call_seconds <= upstream.deadline_margin_seconds:
        raise ConfigError(
            "upstream.min_call_seconds must be greater than upstream.deadline_margin_seconds"
        )
    if server.default_deadline_seconds > server.max_deadline_seconds:
        raise ConfigError(
            "server.default_deadline_seconds must not exceed server.max_deadline_seconds"
        )
    for limit in ("max_workers", "max_concurrent_rpcs"):
        if server.stream_budget >= getattr(server, limit):
            raise ConfigError(
                f"server.max_streams ({server.stream_budget}) must be less than server.{limit} "
                f"({getattr(server, limit)}): streams must leave room for unary calls"
            )
    attempt = upstream.connect_timeout_seconds + upstream.read_timeout_seconds
    if server.grace_seconds < attempt:
        raise ConfigError(
            f"server.grace_seconds ({server.grace_seconds:g}) must cover one upstream attempt, "
            f"upstream.connect_timeout_seconds + upstream.read_timeout_seconds ({attempt:g}): "
            "a delete in flight at shutdown must be allowed to finish"
        )
    audit = settings.audit
    if not audit.store.startswith(("sqlite:", "postgresql://", "postgres://")):
        raise ConfigError(
            f"audit.store: expected sqlite:PATH or postgresql://..., got {audit.store!r}"
        )
    if audit.store.startswith("sqlite:") and not audit.store.removeprefix("sqlite:").strip("/"):
        raise ConfigError("audit.store: sqlite: needs a file path")
    if not audit.store.startswith("sqlite:"):
        _check_postgres_url(audit.store)
    recovery = settings.recovery
    if recovery.purge_deadline_seconds >= recovery.lease_seconds:
        raise ConfigError(
            f"recovery.purge_deadline_seconds ({recovery.purge_deadline_seconds:g}) must be less "
            f"than recovery.lease_seconds ({recovery.lease_seconds:g}): a purge must end before "
            "its lease lets another replica take it"
        )
    if recovery.retry_seconds > recovery.retry_max_seconds:
        raise ConfigError("recovery.retry_seconds must not exceed recovery.retry_max_seconds")
    _check_webhooks(settings.webhooks)
    if bool(upstream.access_key_id) != bool(upstream.secret_access_key):
        raise ConfigError(
            "upstream.access_key_id and upstream.secret_access_key must be set together"
        )


def _check_tokens(identity: IdentitySettings) -> None:
    """The token settings against the mode: tokens need TLS (mtls), or development on loopback.
    The issuers file itself is read and checked when the gateway is built (adapters.tokens)."""
    if identity.tokens == "off":
        return
    setting = f"identity.tokens = {identity.tokens}"
    if not identity.token_issuers.strip():
        raise ConfigError(f"{setting} needs identity.token_issuers (the issuers file)")
    if identity.mode == "proxy":
        raise ConfigError(
            f"{setting} is not supported with identity.mode = proxy: tokens need the gateway's "
            "own TLS (identity.mode = mtls)"
        )
    if identity.mode == "dev" and identity.tokens == "only":
        raise ConfigError(
            "identity.tokens = only needs identity.mode = mtls (TLS with the server's "
            "certificate); in development (identity.mode = dev) use identity.tokens = accept"
        )
    if identity.tokens == "only" and identity.client_ca:
        raise ConfigError(
            "identity.client_ca is not used with identity.tokens = only (no client certificate "
            "is asked for); leave it empty, or use identity.tokens = accept"
        )
    key = identity.token_metadata_key.lower()
    others = {"dev_metadata_key": identity.dev_metadata_key, "proxy_header": identity.proxy_header}
    for name, other in others.items():
        if key == other.lower():
            raise ConfigError(f"identity.token_metadata_key must differ from identity.{name}")


def _check_webhooks(hooks: WebhookSettings) -> None:
    """The sender's own checks (adapters.webhooks), as configuration errors."""
    if not hooks.url:
        return
    if not hooks.secret:
        raise ConfigError("webhooks.url needs webhooks.secret (at least 32 bytes)")
    from pkggov_gateway.adapters.webhooks import WebhookSender  # noqa: PLC0415 - optional part

    try:
        WebhookSender(_NoOutbox(), **webhook_options(hooks)).close()
    except ValueError as error:
        raise ConfigError(f"webhooks: {error}") from error


def webhook_options(hooks: WebhookSettings) -> dict[str, Any]:
    """The webhook sender's settings as its keyword arguments (adapters.webhooks)."""
    return {
        "url": hooks.url,
        "secret": hooks.secret.encode(),
        "timeout_seconds": hooks.timeout_seconds,
        "lease_seconds": hooks.lease_seconds,
        "retry_seconds": hooks.retry_seconds,
        "retry_max_seconds": hooks.retry_max_seconds,
        "batch": hooks.batch,
        "ca_file": hooks.ca_file,
        "allow_plaintext": hooks.allow_plaintext,
    }


class _NoOutbox:
    """An outbox that holds nothing: the sender is built only to check the settings."""

    def claim_webhooks(self, *_: Any) -> list[Any]:
        return []

    def webhook_delivered(self, event_id: str) -> None:
        """Nothing to mark."""

    def webhook_failed(self, event_id: str, **_: Any) -> None:
        """Nothing to mark."""


_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_RESERVED_KEYS = frozenset({"content-type", "te", "host", "connection", "user-agent"})


def metadata_key_problem(key: str) -> str | None:
    """Why `key` (any case) cannot be the gRPC metadata key of a text value every client can
    send; None when it can."""
    lowered = key.lower()
    if not _METADATA_KEY.fullmatch(lowered):
        return f"{key!r} is not a gRPC metadata key (expected letters, digits, '_', '.' and '-')"
    if lowered.startswith("grpc-") or lowered in _RESERVED_KEYS:
        return f"{key!r} is reserved by gRPC and HTTP/2"
    if lowered.endswith("-bin"):
        return f"{key!r} names a binary value (the -bin suffix), not text"
    return None


def _check_postgres_url(store: str) -> None:
    """Parse a PostgreSQL audit.store as the gateway (urlsplit) and libpq will, so that start-up
    never meets a URL it cannot read. The ConfigError shows the URL and causes masked."""

    def invalid(reason: str) -> ConfigError:
        reason = " ".join(mask_store(reason, store).split())  # libpq's end with a line break
        return ConfigError(f"audit.store {masked_store(store)}: invalid PostgreSQL URL: {reason}")

    try:
        parts = urlsplit(store)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        # Not the message itself: "Port could not be cast to integer value as 'pa'" quotes what
        # follows a ':' (a password holding '/' ends up there), too short to be masked.
        text = str(error)
        if text.startswith("Port out of range"):
            reason = "the port must be a number from 0 to 65535"
        elif text.startswith("Port"):
            reason = (
                "the port is not a number (a user name or password holding ':', '/', '?', "
                "'#' or '@' must percent-encode it)"
            )
        elif text == "Invalid IPv6 URL":
            reason = "unbalanced '[' or ']' around the host"
        else:
            reason = f"the host is malformed ({text})"
        raise invalid(reason) from None
    # libpq's user info ends at the first '@' before any '/', urlsplit's at the last '@' before
    # any '/', '?' or '#': where they could differ, they would disagree on the host.
    libpq_authority = store.partition("://")[2].partition("/")[0]
    if parts.netloc.count("@") > 1 or ("@" in libpq_authority) != ("@" in parts.netloc):
        raise invalid(
            "ambiguous user info: percent-encode '@', '?' and '#' in a user name or password"
        )
    from psycopg import Error  # noqa: PLC0415 - only PostgreSQL deployments need it loaded
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - as above

    try:
        conninfo_to_dict(store)  # libpq's parser (it may quote the URL: masked by `invalid`)
    except Error as error:
        raise invalid(str(error)) from None


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as a mapping for logs, with secrets masked."""
    shown = dataclasses.asdict(settings)
    for key in ("secret_access_key", "session_token"):
        if shown["upstream"][key]:
            shown["upstream"][key] = "***"
    shown["audit"]["store"] = masked_store(settings.audit.store)
    if shown["webhooks"]["secret"]:
        shown["webhooks"]["secret"] = "***"  # noqa: S105 - the mask, not a secret
    if settings.webhooks.url:
        parts = urlsplit(settings.webhooks.url)
        shown["webhooks"]["url"] = f"{parts.scheme}://{parts.netloc}/***"
    return shown


_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_USERINFO_PASSWORD = re.compile(r"(://[^:@/?#\s]*:)\S*@")
"""``scheme://user:PASSWORD@`` in any text, up to the last '@' of the run (a password may
hold one), without parsing the URL: a malformed one is masked too."""


def _userinfo_password(store: str) -> str:
    """The password in ``scheme://user:password@`` as written ("" when none), found without
    parsing the URL: everything between the user's ':' and the last '@'."""
    _, scheme, rest = store.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    return userinfo.partition(":")[2] if scheme and at else ""


def masked_store(store: str) -> str:
    """audit.store as it may be shown: its passwords (user info, ``password=``) masked,
    whether or not the URL parses."""
    password = _userinfo_password(store)
    if password:
        head, _, tail = store.partition("://")
        store = f"{head}://{tail.partition(':')[0]}:***@{tail.rpartition('@')[2]}"
    return _QUERY_PASSWORD.sub(r"\1***", store)


def mask_store(text: str, store: str) -> str:
    """`text` (a message that may quote audit.store, a driver's included) with every password
    the store URL holds masked: as written, percent-decoded, and any ``user:PASSWORD@``."""
    text = _USERINFO_PASSWORD.sub(r"\1***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    for secret in store_secrets(store):
        text = text.replace(secret, "***")
    return text


def store_secrets(store: str) -> list[str]:
    """The passwords an audit.store URL holds (user info, ``password=``), as written and
    percent-decoded, longest first: what a message quoting the URL must mask. Found without
    parsing the URL, so that a malformed one gives them up too."""
    written = [_userinfo_password(store), *(m.group(2) for m in _QUERY_PASSWORD.finditer(store))]
    found = {secret for secret in (*written, *map(unquote, written)) if secret}
    return sorted(found, key=len, reverse=True)
