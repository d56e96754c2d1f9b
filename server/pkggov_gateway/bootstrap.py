"""The composition root: the one place that builds real adapters and wires them together."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import grpc
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, InvalidRegionError, ProfileNotFound

from pkggov_gateway import __version__
from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    default_policy_files,
)
from pkggov_gateway.adapters.codeartifact import BotoCodeArtifact, RetryPolicy
from pkggov_gateway.adapters.identity import build_authenticator
from pkggov_gateway.adapters.metrics import MetricsServer, PrometheusMetrics
from pkggov_gateway.adapters.package_locks import open_package_locks
from pkggov_gateway.adapters.rate_limit import RateLimits
from pkggov_gateway.adapters.sql import SqlAuditStore, open_audit_store, sqlite_path
from pkggov_gateway.adapters.tls import server_credentials
from pkggov_gateway.adapters.tokens import TokenAuthenticator
from pkggov_gateway.adapters.webhooks import WebhookSender
from pkggov_gateway.api.approvals import ApprovalServicer
from pkggov_gateway.api.cleanup import CleanupServicer
from pkggov_gateway.api.interceptors import recorded_status_of
from pkggov_gateway.api.server import GrpcServer, Keepalive
from pkggov_gateway.api.servicer import AuditServicer, PackageGovernanceServicer
from pkggov_gateway.api.stream_budget import StreamLimits
from pkggov_gateway.config import (
    EmulatorSettings,
    PolicySettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
    masked_store,
    webhook_options,
)
from pkggov_gateway.domain.deadline import DrainSignal
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.domain.recovery import RecoveryWindow, RecoveryWindows
from pkggov_gateway.domain.retention import rule_from_mapping
from pkggov_gateway.logs import audit_stream
from pkggov_gateway.ports import Authenticator
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.service.approvals import ApprovalDesk, ApprovalRules
from pkggov_gateway.service.audit import Auditor, QuotaLimits, default_replica
from pkggov_gateway.service.audit_reads import AuditReads
from pkggov_gateway.service.cleanup_jobs import CleanupRunner, JobSettings
from pkggov_gateway.service.cleanup_plans import CleanupDesk, CleanupLimits, NamedRule
from pkggov_gateway.service.delete_versions import DeleteLimits, DeletePackageVersions
from pkggov_gateway.service.purge_worker import PurgeSettings, PurgeWorker
from pkggov_gateway.service.restore_versions import RestorePackageVersions
from pkggov_gateway.startup import (
    StartupError,
    cause_of,
    check_listen,
    listen_failure,
    naming,
    sqlite_problem,
    store_error,
)

if TYPE_CHECKING:
    from mypy_boto3_codeartifact import CodeArtifactClient

    from pkggov_emulator import Emulator

__all__ = [
    "build_codeartifact_client",
    "build_emulator",
    "build_gateway",
    "credentials_of",
    "load_policy",
    "policy_files",
]

Clock = Callable[[], datetime]

log = structlog.get_logger("pkggov.bootstrap")


def build_codeartifact_client(upstream: UpstreamSettings, pool_size: int) -> CodeArtifactClient:
    """One thread-safe boto3 CodeArtifact client for the whole process.

    Its connection pool matches the number of threads that may call it at once; botocore's
    retries are off because the adapter retries within the caller's deadline itself; and its
    parameter validation is off because every field the gateway sends was validated against
    the same botocore model before (domain.validation, the use cases' own limits): validating
    again cost about 5 % of an allowed call's CPU.
    """
    session = boto3.session.Session(
        region_name=upstream.region or None,
        profile_name=upstream.profile or None,
        aws_access_key_id=upstream.access_key_id or None,
        aws_secret_access_key=upstream.secret_access_key or None,
        aws_session_token=upstream.session_token or None,
    )
    if session.get_credentials() is None:
        log.warning("upstream.no_credentials", hint="calls will fail with INTERNAL")
    config = Config(
        max_pool_connections=pool_size,
        connect_timeout=upstream.connect_timeout_seconds,
        read_timeout=upstream.read_timeout_seconds,
        retries={"total_max_attempts": 1},
        user_agent_extra=f"pkggov/{__version__}",
        tcp_keepalive=True,
        parameter_validation=False,
    )
    return session.client("codeartifact", endpoint_url=upstream.endpoint_url or None, config=config)


def build_emulator(settings: EmulatorSettings) -> Emulator:
    """The embedded emulator (development only) with its seed, not started.

    Raises StartupError naming emulator.enabled (not installed) or emulator.seed.
    """
    with naming("emulator.enabled"):
        from pkggov_emulator import (  # noqa: PLC0415 - a development dependency, loaded on demand
            DEMO_ACCESS_KEY_ID,
            DEMO_ACCOUNT_ID,
            DEMO_SECRET_ACCESS_KEY,
            Emulator,
            load_demo_seed,
            load_seed_file,
        )

    seed: Any
    with naming("emulator.seed"):
        if settings.seed == "demo":
            seed = load_demo_seed()
        elif settings.seed in ("", "none"):
            seed = None
        else:
            seed = load_seed_file(settings.seed)
        host, _, port = settings.listen.rpartition(":")
        return Emulator(
            host=host,
            port=int(port),
            seed=seed,
            credentials={DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY},
            account_id=DEMO_ACCOUNT_ID,
        )


def _start_emulator(settings: EmulatorSettings) -> tuple[Emulator, dict[str, Any]]:
    """Start the embedded emulator (development only) and return the upstream it stands for.

    Raises StartupError naming emulator.enabled when pkggov-emulator is not installed."""
    emulator = build_emulator(settings)  # first: it names emulator.enabled when not installed
    from pkggov_emulator import (  # noqa: PLC0415 - a development dependency, loaded on demand
        DEMO_ACCESS_KEY_ID,
        DEMO_REGION,
        DEMO_SECRET_ACCESS_KEY,
    )

    with naming("emulator.listen", settings.listen, doing="cannot listen"):
        emulator.start()
    log.warning(
        "emulator.started",
        endpoint=emulator.endpoint_url,
        note="development only: CodeArtifact is the local emulator, not AWS",
    )
    return emulator, {
        "endpoint_url": emulator.endpoint_url,
        "region": DEMO_REGION,
        "access_key_id": DEMO_ACCESS_KEY_ID,
        "secret_access_key": DEMO_SECRET_ACCESS_KEY,
        "session_token": "",
        "profile": "",
    }


def policy_files(settings: PolicySettings) -> PolicyFiles:
    """The configured policy files; each empty setting falls back to the shipped example."""
    shipped = default_policy_files()
    return PolicyFiles(
        schema=Path(settings.schema) if settings.schema else shipped.schema,
        policies=Path(settings.policies) if settings.policies else shipped.policies,
        entities=Path(settings.entities) if settings.entities else shipped.entities,
    )


def load_policy(settings: Settings, *, claim_groups: Iterable[str] = ()) -> CedarPolicyEngine:
    """The policy set the settings name, loaded by the real loader, and checked against the
    group limits naming its groups and the groups tokens' claims can put callers in (each one
    the entities file must define). Raises StartupError naming the setting at fault."""
    files = policy_files(settings.policy)
    try:
        policy = CedarPolicyEngine(files, claim_groups=claim_groups)
    except PolicyLoadError as error:
        setting = {files.schema: "policy.schema", files.entities: "policy.entities"}.get(
            error.path, "policy.policies"
        )
        raise StartupError(setting, str(error)) from error
    for setting, limits in (
        ("policy.max_versions_per_group", settings.policy.max_versions_per_group),
        ("quota.max_versions_per_group", settings.quota.max_versions_per_group),
    ):
        unknown = sorted(set(limits) - set(policy.known_groups()))
        if unknown:
            raise StartupError(
                setting,
                f"names group(s) the entities file does not define: {', '.join(unknown)}",
            )
    return policy


def credentials_of(settings: Settings) -> grpc.ServerCredentials | None:
    """The mTLS server credentials (None unless identity.mode = mtls): the PEM files read,
    parsed and matched. Raises StartupError naming the identity.* setting at fault."""
    if settings.identity.mode != "mtls":
        return None
    with naming("identity"):
        return server_credentials(settings.identity)


def _listeners(server: ServerSettings) -> list[tuple[str, str]]:
    """(setting, HOST:PORT) of each gRPC listener the settings ask for."""
    pairs = (("server.listen", server.listen), ("server.health_listen", server.health_listen))
    return [(setting, listen) for setting, listen in pairs if listen]


def _check_listeners(server: ServerSettings) -> None:
    """StartupError naming the gRPC listener that cannot bind, before grpcio tries (which
    would log its own multi-line failure first and say only "Failed to bind")."""
    for setting, listen in _listeners(server):
        check_listen(setting, listen)


def _listener_error(error: OSError, server: ServerSettings) -> StartupError:
    """The StartupError for GrpcServer's bind failure: which listener, and the system's reason.

    GrpcServer says ``cannot listen on LISTEN: <grpcio's message>`` for either listener.
    """
    text = str(error)
    setting, listen = next(
        (
            (setting, listen)
            for setting, listen in _listeners(server)
            if text.startswith(f"cannot listen on {listen}:")
        ),
        ("server.listen", server.listen),
    )
    reason = listen_failure(listen) or text.removeprefix(f"cannot listen on {listen}: ")
    return StartupError(setting, f"cannot listen: {reason}", value=listen)


def _serve_metrics(listen: str, metrics: PrometheusMetrics) -> MetricsServer | None:
    """The Prometheus endpoint on metrics.listen, serving (None when it is empty): what
    Gateway.start calls. Raises StartupError naming metrics.listen when it cannot listen."""
    if not listen:
        return None
    with naming("metrics.listen", listen, doing="cannot listen"):
        return MetricsServer(metrics.registry, listen)


def _upstream_setting(error: BotoCoreError | ValueError) -> str:
    """The upstream.* setting a boto3 session or client refused."""
    if isinstance(error, ProfileNotFound):
        return "upstream.profile"
    if isinstance(error, InvalidRegionError):
        return "upstream.region"
    return "upstream.endpoint_url" if "endpoint" in str(error).lower() else "upstream"


def _store_error(settings: Settings, error: AuditUnavailableError) -> StartupError:
    """The StartupError for an audit store that cannot be opened: for SQLite what is wrong
    with the path if it can be told, else the driver's message (any password masked)."""
    path = sqlite_path(settings.audit.store)
    cause = (sqlite_problem(path) if path is not None else None) or cause_of(error)
    return store_error(settings, f"cannot open: {cause}")


def build_gateway(settings: Settings, *, clock: Clock | None = None) -> Gateway:
    """Wire the gateway from settings; nothing is served until `start()`.

    `clock` is the wall clock of decisions, recovery windows and the purge worker (tests pass
    their own to make purges due without waiting).

    Raises StartupError naming the setting when something it names cannot be used (a policy,
    certificate or seed file, the audit store or its copy, a listen address), having released
    what it had made (the emulator, the store's threads).
    """
    with contextlib.ExitStack() as undo:
        gateway = _wire(settings, undo, clock or _utc_now)
        undo.pop_all()
    return gateway


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _wire(settings: Settings, undo: contextlib.ExitStack, clock: Clock) -> Gateway:
    """build_gateway's work; what must be released on failure is pushed on `undo`."""
    metrics = PrometheusMetrics()
    with naming("identity"):
        authenticator = build_authenticator(settings.identity, metrics=metrics)
    policy = load_policy(settings, claim_groups=claim_groups_of(authenticator))
    log.info("policy.loaded", policies=policy.policy_ids())
    quota = settings.quota
    credentials = credentials_of(settings)
    if isinstance(authenticator, TokenAuthenticator):
        # Keys load in the background: while an issuer's endpoint is down the gateway serves,
        # and that issuer's tokens fail closed until its keys load (each call tries again).
        authenticator.verifier.prefetch()
        log.info(
            "identity.tokens",
            tokens=settings.identity.tokens,
            issuers=[issuer.name for issuer in authenticator.verifier.issuers],
        )
    if settings.identity.mode == "dev":
        log.warning(
            "identity.development_mode",
            note="callers name themselves with the "
            f"{settings.identity.dev_metadata_key!r} metadata key; never use this in production",
        )
    audit_settings = settings.audit
    with naming("audit.log", audit_settings.log, doing="cannot open"):
        on_commit = audit_stream(audit_settings.log)
    try:
        audit_store = open_audit_store(
            audit_settings.store,
            replica=audit_settings.replica or default_replica(),
            on_commit=on_commit,
            metrics=metrics,
        )
    except AuditUnavailableError as error:
        raise _store_error(settings, error) from error
    undo.callback(audit_store.close)
    log.info("audit.store_opened", store=audit_store.dialect.description)
    auditor = Auditor(
        audit_store,
        quotas=QuotaLimits(quota.window_seconds, quota.max_versions, quota.max_versions_per_group),
        clock=clock,
        metrics=metrics,
    )
    emulator = None
    upstream = settings.upstream
    if settings.emulator.enabled:
        emulator, overrides = _start_emulator(settings.emulator)
        undo.callback(emulator.stop)
        upstream = dataclasses.replace(upstream, **overrides)
    server_settings = settings.server
    # A worker of a supervisor (server.workers > 1; the supervisor resolved 0 to the count).
    worker = server_settings.workers > 1
    try:
        client = build_codeartifact_client(
            upstream, pool_size=server_settings.max_workers + upstream.chunk_workers
        )
    except (BotoCoreError, ValueError) as error:
        raise StartupError(_upstream_setting(error), cause_of(error)) from error
    adapter = BotoCodeArtifact(
        client,
        RetryPolicy(
            max_attempts=upstream.max_attempts,
            base_delay_seconds=upstream.retry_base_delay_seconds,
            read_timeout_seconds=upstream.read_timeout_seconds,
            deadline_margin_seconds=upstream.deadline_margin_seconds,
            min_attempt_seconds=upstream.min_call_seconds,
        ),
        rate_limits=RateLimits(
            write_calls_per_second=upstream.write_calls_per_second,
            read_calls_per_second=upstream.read_calls_per_second,
            replicas=upstream.replicas,
        ),
        metrics=metrics,
    )
    chunk_executor = ThreadPoolExecutor(upstream.chunk_workers, thread_name_prefix="pkggov-chunk")
    undo.callback(chunk_executor.shutdown)
    # One connection per package a worker thread holds: max_workers is enough. With several
    # worker processes (server.workers) on SQLite, a lock file next to the database.
    with naming("audit.store", masked_store(audit_settings.store), doing="cannot open"):
        package_locks = open_package_locks(
            audit_settings.store,
            max_connections=server_settings.max_workers,
            processes=server_settings.workers if worker else 1,
        )
    undo.callback(package_locks.close)
    limits = DeleteLimits(
        max_versions=server_settings.max_versions_per_call,
        chunk_parallelism=upstream.chunk_parallelism,
        min_upstream_seconds=upstream.min_call_seconds,
        group_max_versions=settings.policy.max_versions_per_group,
    )
    drain = DrainSignal()
    approvals = settings.approvals
    desk = ApprovalDesk(
        audit_store,
        audit_store,
        auditor,
        policy,
        ApprovalRules(
            expire_seconds=approvals.expire_hours * 3600,
            rejection_ends=approvals.rejection_ends,
            auto_execute=approvals.auto_execute,
        ),
        status_of=recorded_status_of,
        drain=drain,
        clock=clock,
    )
    use_case = DeletePackageVersions(
        adapter,
        chunk_executor,
        limits,
        policy,
        locks=package_locks,
        windows=recovery_windows(settings.recovery.windows),
        purges=audit_store,
        approvals=desk,
        clock=clock,
        metrics=metrics,
    )
    desk.serve(use_case)
    reads = AuditReads(audit_store, policy, purges=audit_store, clock=clock)
    servicer = PackageGovernanceServicer(
        use_case,
        default_deadline=server_settings.default_deadline_seconds,
        max_deadline=server_settings.max_deadline_seconds,
        drain=drain,
        restore_versions=RestorePackageVersions(
            adapter,
            limits,
            policy,
            locks=package_locks,
            purges=audit_store,
            clock=clock,
            metrics=metrics,
        ),
        reads=reads,
        page_token_key=audit_store.page_token_key,
    )
    recovery = settings.recovery
    purge_worker = PurgeWorker(
        auditor,
        audit_store,
        adapter,
        package_locks,
        PurgeSettings(
            dispose=recovery.final_step == "dispose",
            batch=recovery.worker_batch,
            lease_seconds=recovery.lease_seconds,
            retry_seconds=recovery.retry_seconds,
            retry_max_seconds=recovery.retry_max_seconds,
            deadline_seconds=recovery.purge_deadline_seconds,
        ),
        status_of=recorded_status_of,
        drain=drain,
        clock=clock,
        metrics=metrics,
    )
    cleanup = settings.cleanup
    cleanup_desk = CleanupDesk(
        adapter,
        use_case,
        policy,
        audit_store,
        audit_store,
        rules=cleanup_rules(cleanup.rules),
        limits=CleanupLimits(
            plan_ttl_seconds=cleanup.plan_ttl_hours * 3600,
            max_packages=cleanup.max_packages,
            max_versions=cleanup.max_versions,
            max_open_plans=cleanup.max_open_plans,
        ),
        clock=clock,
    )
    cleanup_runner = CleanupRunner(
        auditor,
        audit_store,
        cleanup_desk,
        delete=use_case,
        upstream=adapter,
        settings=JobSettings(
            lease_seconds=cleanup.lease_seconds,
            call_deadline_seconds=cleanup.call_deadline_seconds,
            retry_seconds=cleanup.retry_seconds,
            retry_max_seconds=cleanup.retry_max_seconds,
            max_attempts=cleanup.max_attempts,
            plan_retention_seconds=cleanup.plan_retention_days * 86_400,
        ),
        status_of=recorded_status_of,
        drain=drain,
        clock=clock,
        metrics=metrics,
    )
    if not worker:
        # With several workers the supervisor checked them and holds their ports (workers.py)
        _check_listeners(server_settings)
    try:
        server = GrpcServer(
            servicer,
            authenticator=authenticator,
            credentials=credentials,
            listen=server_settings.listen,
            max_workers=server_settings.max_workers,
            max_concurrent_rpcs=server_settings.max_concurrent_rpcs,
            health_listen=server_settings.health_listen,
            keepalive=Keepalive(
                time_seconds=server_settings.keepalive_time_seconds,
                timeout_seconds=server_settings.keepalive_timeout_seconds,
                min_client_ping_interval_seconds=server_settings.min_client_ping_interval_seconds,
                max_connection_age_seconds=server_settings.max_connection_age_seconds,
                max_connection_age_grace_seconds=server_settings.max_connection_age_grace_seconds,
            ),
            max_versions=server_settings.max_versions_per_call,
            max_metadata_bytes=settings.identity.max_token_bytes + 8192,
            auditor=auditor,
            audit_servicer=AuditServicer(reads, audit_store.page_token_key),
            approval_servicer=ApprovalServicer(
                desk,
                audit_store.page_token_key,
                default_deadline=server_settings.default_deadline_seconds,
                max_deadline=server_settings.max_deadline_seconds,
                drain=drain,
            ),
            cleanup_servicer=CleanupServicer(
                cleanup_desk,
                audit_store.page_token_key,
                default_deadline=server_settings.default_deadline_seconds,
                max_deadline=server_settings.max_deadline_seconds,
                drain=drain,
            ),
            metrics=metrics,
            stream_limits=StreamLimits(
                max_streams=server_settings.stream_budget,
                max_per_peer=server_settings.max_streams_per_peer,
                idle_seconds=server_settings.stream_idle_seconds,
                max_seconds=server_settings.stream_max_seconds,
                message_seconds=server_settings.request_message_seconds,
            ),
            reuse_port=worker,  # the workers share the supervisor's port
        )
    except OSError as error:  # a listener; `undo` releases the rest
        raise _listener_error(error, server_settings) from error
    return Gateway(
        settings,
        server,
        chunk_executor,
        drain,
        policy,
        audit_store,
        auditor,
        adapter,
        metrics,
        functools.partial(_serve_metrics, settings.metrics.listen, metrics),
        emulator,
        package_locks=package_locks,
        purge_worker=purge_worker,
        approvals=desk,
        cleanup_runner=cleanup_runner,
        webhooks=_webhook_sender(settings, audit_store, clock, metrics),
        token_verifier=(
            authenticator.verifier if isinstance(authenticator, TokenAuthenticator) else None
        ),
    )


def claim_groups_of(authenticator: Authenticator) -> tuple[str, ...]:
    """Every group the token issuers' claim rules can put a caller in (none without tokens)."""
    if not isinstance(authenticator, TokenAuthenticator):
        return ()
    issuers = authenticator.verifier.issuers
    return tuple(dict.fromkeys(rule.group for issuer in issuers for rule in issuer.groups))


def _webhook_sender(
    settings: Settings, outbox: SqlAuditStore, clock: Clock, metrics: PrometheusMetrics
) -> WebhookSender | None:
    """The webhook sender when webhooks.url is set (the settings were checked on load)."""
    hooks = settings.webhooks
    if not hooks.url:
        return None
    return WebhookSender(
        outbox, clock=clock, metrics=metrics.webhook_attempt, **webhook_options(hooks)
    )


def cleanup_rules(rules: dict[str, dict[str, Any]]) -> list[NamedRule]:
    """The configured named cleanup rules (checked when the configuration was loaded)."""
    return [
        NamedRule(
            name,
            tuple(fields["repositories"]),
            rule_from_mapping(
                {k: v for k, v in fields.items() if k != "repositories"},
                prefix=f"cleanup.rules.{name}",
            ),
        )
        for name, fields in rules.items()
    ]


def recovery_windows(windows: dict[str, float]) -> RecoveryWindows:
    """recovery.windows as the domain's windows, in order: "DOMAIN/REPOSITORY" or
    "REPOSITORY" (any domain) -> days."""
    parsed = []
    for pattern, days in windows.items():
        domain, _, repository = pattern.rpartition("/")
        parsed.append(RecoveryWindow(domain or "*", repository, timedelta(days=days)))
    return RecoveryWindows(tuple(parsed))
