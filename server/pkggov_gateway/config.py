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
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from pkggov_gateway.netaddr import is_loopback

__all__ = [
    "AuditSettings",
    "ConfigError",
    "EmulatorSettings",
    "LoggingSettings",
    "QuotaSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "describe",
    "load_settings",
    "store_secrets",
]

ENV_PREFIX = "PKGGOV_"
CLIENT_ENV_PREFIX = "PKGGOV_CLI_"
"""The `pkggov` client CLI's variables (PKGGOV_CLI_TARGET, PKGGOV_CLI_PRINCIPAL_KEY): never
settings, so that the shell that runs the gateway may set them. No section is named "cli"."""
_NOT_SETTINGS = frozenset({"PKGGOV_CONFIG", "PKGGOV_TARGET"})  # read by the entry points


class ConfigError(Exception):
    """Raised when the configuration file or environment holds an unknown key or bad value."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The gRPC listener and its limits."""

    listen: str = "127.0.0.1:50051"
    # A plaintext listener serving only grpc.health.v1 Check, for probes that cannot present a
    # client certificate (the kubelet's); "" = none. Must differ from listen.
    health_listen: str = ""
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
    }
)

_CHOICES = {
    ("logging", "level"): {"debug", "info", "warning", "error"},
    ("logging", "format"): {"auto", "json", "console"},
    ("identity", "mode"): {"mtls", "proxy", "dev"},
}


def _coerce(section: str, key: str, kind: Any, value: Any, origin: str) -> Any:
    where = f"{origin}: {section}.{key}"
    if kind == dict[str, int]:
        return _coerce_limits(where, value)
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
        return result
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
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: expected one of {sorted(choices)}, got {value!r}")
    return value


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
    return limits


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
        missing = [
            f"identity.{key}"
            for key in ("server_cert", "server_key", "client_ca")
            if not getattr(identity, key)
        ]
        if missing:
            raise ConfigError(f"identity.mode = mtls needs {', '.join(missing)}")
    if identity.mode == "proxy" and not identity.trusted_proxies:
        raise ConfigError("identity.mode = proxy needs identity.trusted_proxies")
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
    if bool(upstream.access_key_id) != bool(upstream.secret_access_key):
        raise ConfigError(
            "upstream.access_key_id and upstream.secret_access_key must be set together"
        )


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as a mapping for logs, with secrets masked."""
    shown = dataclasses.asdict(settings)
    for key in ("secret_access_key", "session_token"):
        if shown["upstream"][key]:
            shown["upstream"][key] = "***"
    store = urlsplit(settings.audit.store)
    if store.password:
        shown["audit"]["store"] = settings.audit.store.replace(f":{store.password}@", ":***@")
    shown["audit"]["store"] = _QUERY_PASSWORD.sub(r"\1***", shown["audit"]["store"])
    return shown


_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def store_secrets(store: str) -> list[str]:
    """The passwords an audit.store URL holds (user info, ``password=``), as written: what
    a message quoting the URL must mask."""
    found = [urlsplit(store).password, *(m.group(2) for m in _QUERY_PASSWORD.finditer(store))]
    return [secret for secret in found if secret]
