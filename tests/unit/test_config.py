"""Settings: defaults, the development profile, file and environment layering, validation."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import get_type_hints
from urllib.parse import unquote

import pytest

from pkggov_gateway.config import (
    ConfigError,
    Settings,
    describe,
    load_settings,
    mask_store,
    masked_store,
)
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "pkggov.toml"

MTLS_FILES = {
    "PKGGOV_IDENTITY_SERVER_CERT": "server.pem",
    "PKGGOV_IDENTITY_SERVER_KEY": "server.key",
    "PKGGOV_IDENTITY_CLIENT_CA": "ca.pem",
}


def test_production_defaults_need_mtls_files() -> None:
    """The production default identity is mTLS: without its files the gateway refuses."""
    with pytest.raises(ConfigError, match=r"identity\.mode = mtls needs identity\.server_cert"):
        load_settings(None, {})


def test_production_defaults_never_start_the_emulator() -> None:
    """Without the development profile the emulator is off."""
    settings = load_settings(None, MTLS_FILES)
    assert (False, "mtls") == (settings.emulator.enabled, settings.identity.mode)


def test_file_without_emulator_section_keeps_it_off(tmp_path: Path) -> None:
    """A production file that says nothing of the emulator does not get one."""
    config = tmp_path / "pkggov.toml"
    config.write_text('[upstream]\nregion = "eu-west-1"\n')
    settings = load_settings(config, MTLS_FILES)
    assert ("eu-west-1", False) == (settings.upstream.region, settings.emulator.enabled)


def test_development_profile_starts_the_emulator_unless_told_otherwise(tmp_path: Path) -> None:
    """--dev turns the emulator on; a file or the environment can still turn it off."""
    assert (True, "dev") == (
        load_settings(None, {}, dev=True).emulator.enabled,
        load_settings(None, {}, dev=True).identity.mode,
    )
    env = {"PKGGOV_EMULATOR_ENABLED": "false"}
    assert False is load_settings(None, env, dev=True).emulator.enabled


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """PKGGOV_<SECTION>_<KEY> wins over the file; values are converted to the field's type."""
    config = tmp_path / "pkggov.toml"
    config.write_text("[server]\nmax_workers = 8\n")
    env = {**MTLS_FILES, "PKGGOV_SERVER_MAX_WORKERS": "12", "PKGGOV_CONFIG": "x"}
    settings = load_settings(config, env)
    assert 12 == settings.server.max_workers


def test_the_client_cli_variables_are_not_settings() -> None:
    """PKGGOV_CLI_* belong to the `pkggov` CLI (and PKGGOV_TARGET, its older name): the gateway
    starts with them set, and no section could ever read them."""
    env = {
        "PKGGOV_CLI_TARGET": "127.0.0.1:50051",
        "PKGGOV_CLI_PRINCIPAL_KEY": "x-dev-user",
        "PKGGOV_CLI_ANYTHING_LATER": "1",
        "PKGGOV_TARGET": "127.0.0.1:50051",
    }
    assert load_settings(None, {}, dev=True) == load_settings(None, env, dev=True)
    assert "cli" not in {field.name for field in dataclasses.fields(Settings)}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PKGGOV_SERVER_NOPE": "1"}, "unknown setting(s) in the environment: PKGGOV_SERVER_NOPE"),
        (
            {"PKGGOV_UPSTREAM_MAX_ATTEMPTS": "x"},
            "$PKGGOV_UPSTREAM_MAX_ATTEMPTS: upstream.max_attempts: expected a positive integer",
        ),
        (
            {"PKGGOV_UPSTREAM_READ_TIMEOUT_SECONDS": "nan"},
            "upstream.read_timeout_seconds: expected a finite, non-negative number",
        ),
        (
            {"PKGGOV_UPSTREAM_READ_TIMEOUT_SECONDS": "0"},
            "upstream.read_timeout_seconds: must be greater than 0",
        ),
        ({"PKGGOV_SERVER_LISTEN": "nowhere"}, "server.listen: expected HOST:PORT"),
        (
            {"PKGGOV_SERVER_GRACE_SECONDS": "5"},
            "server.grace_seconds (5) must cover one upstream attempt",
        ),
        (
            {"PKGGOV_SERVER_DEFAULT_DEADLINE_SECONDS": "400"},
            "server.default_deadline_seconds must not exceed server.max_deadline_seconds",
        ),
        (
            {"PKGGOV_UPSTREAM_DEADLINE_MARGIN_SECONDS": "0.5"},
            "upstream.min_call_seconds must be greater than upstream.deadline_margin_seconds",
        ),
        (
            {"PKGGOV_UPSTREAM_ACCESS_KEY_ID": "AKIA"},
            "must be set together",
        ),
        ({"PKGGOV_LOGGING_LEVEL": "loud"}, "logging.level: expected one of"),
        (
            {"PKGGOV_SERVER_MAX_WORKERS": "100000000000000000000"},
            "server.max_workers: must be at most 10,000, got 100000000000000000000",
        ),
        (
            {"PKGGOV_SERVER_MAX_CONCURRENT_RPCS": "20000"},
            "server.max_concurrent_rpcs: must be at most 10,000",
        ),
        ({"PKGGOV_UPSTREAM_CHUNK_WORKERS": "99999"}, "upstream.chunk_workers: must be at most"),
        (
            {"PKGGOV_SERVER_MAX_VERSIONS_PER_CALL": str(2**31)},
            "server.max_versions_per_call: must be at most 2,147,483,647",
        ),
        (
            {"PKGGOV_SERVER_KEEPALIVE_TIME_SECONDS": "1e12"},
            "server.keepalive_time_seconds: must be at most 2,000,000",
        ),
        (
            {"PKGGOV_QUOTA_MAX_VERSIONS_PER_GROUP": f"ci={2**40}"},
            "quota.max_versions_per_group.ci: must be at most",
        ),
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": "Bad Key"}, "identity.dev_metadata_key: 'Bad Key'"),
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": "grpc-timeout"}, "identity.dev_metadata_key: "),
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": "x-p-bin"}, "identity.dev_metadata_key: "),
        ({"PKGGOV_IDENTITY_DEV_METADATA_KEY": ""}, "identity.dev_metadata_key: "),
        ({"PKGGOV_IDENTITY_PROXY_HEADER": "x-fcc\n"}, "identity.proxy_header: "),
        ({"PKGGOV_IDENTITY_PROXY_HEADER": "grpc-status"}, "identity.proxy_header: "),
        ({"PKGGOV_IDENTITY_PROXY_HEADER": "xfcc-bin"}, "identity.proxy_header: "),
        ({"PKGGOV_IDENTITY_PROXY_HEADER": "content-type"}, "identity.proxy_header: "),
    ],
)
def test_bad_values_are_refused_with_their_name(environ: dict[str, str], message: str) -> None:
    """Each bad value is a ConfigError naming the setting."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**MTLS_FILES, **environ})
    assert message in str(caught.value)


def test_metadata_keys_are_case_insensitive() -> None:
    """grpc sends keys in lower case: a key written in any case is the same key."""
    env = {**MTLS_FILES, "PKGGOV_IDENTITY_PROXY_HEADER": "X-Client-Identity"}
    assert "X-Client-Identity" == load_settings(None, env).identity.proxy_header


_PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (f"postgresql://u:{_PASSWORD}@[::1/db", "unbalanced '[' or ']' around the host"),
        (f"postgresql://u:{_PASSWORD}@host:notaport/db", "the port is not a number"),
        (f"postgresql://u:{_PASSWORD}@host:99999/db", "the port must be a number from 0 to"),
        ("postgresql://u:s3cret/pw@host/db", "the port is not a number"),
        ("postgresql://u:s3cret?pw@host/db", "the port is not a number"),
        ("postgresql://u:s3cret@pw@host/db", "ambiguous user info"),
        ("postgresql://u:5432?s3cret=pw@host/db", "ambiguous user info"),
        (f"postgresql://u:{_PASSWORD}@[zz]/db", "the host is malformed"),
        (f"postgresql://u:{_PASSWORD}@ho\uff03st/db", "the host is malformed"),
        (f"postgresql://u:{_PASSWORD}@[::1]x/db", "unexpected character"),  # libpq's words
        (f"postgres://u:{_PASSWORD}@host/db?a=%zz", "invalid percent-encoded token"),
        (f"postgresql://u@host/db?password={_PASSWORD}&a=%zz", "invalid percent-encoded"),
    ],
)
def test_a_malformed_postgres_url_is_refused_with_the_password_masked(
    store: str, reason: str
) -> None:
    """audit.store is parsed as urlsplit and libpq read it, once, at load time: a URL either
    cannot read is one ConfigError naming audit.store, holding no part of the password."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"PKGGOV_AUDIT_STORE": store}, dev=True)
    message = str(caught.value)
    assert message.startswith("audit.store postgres"), message
    assert f"invalid PostgreSQL URL: {reason}" in message
    assert "\n" not in message
    for part in ("s3cret", "pw@"):
        assert part not in message


def test_describe_masks_the_store_password() -> None:
    """The user-info and query passwords are masked; the rest of the URL is shown."""
    store = f"postgresql://pkggov:{_PASSWORD}@db.internal:5432/audit?sslmode=require"
    settings = load_settings(None, {"PKGGOV_AUDIT_STORE": store}, dev=True)
    shown = "postgresql://pkggov:***@db.internal:5432/audit?sslmode=require"
    assert shown == describe(settings)["audit"]["store"]
    query = f"postgresql://pkggov@db/audit?password={_PASSWORD}"
    assert "postgresql://pkggov@db/audit?password=***" == masked_store(query)


@pytest.mark.parametrize(
    "store",
    [
        "postgresql://u:s3cret@pw@[::1/db",
        "postgresql://u:s3cret/pw@host/db",
        "postgresql://u:s3cret%2Fpw@host/db",
        "postgresql://u:s3cret pw@host/db",
    ],
)
def test_masking_needs_no_parse(store: str) -> None:
    """Whether or not the URL parses, the store and any message quoting it (as written, or
    percent-decoded) lose the password."""
    password = unquote(store.partition("://u:")[2].rpartition("@")[0])
    message = f'cannot open: missing "=" after "{store}"; password "{password}" refused'
    for shown in (masked_store(store), mask_store(message, store)):
        assert "s3cret" not in shown, shown


def test_bad_file_is_refused(tmp_path: Path) -> None:
    """Unknown sections and keys, and invalid TOML, name the file."""
    config = tmp_path / "pkggov.toml"
    config.write_text("[server]\nlisten_on = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[server\]: listen_on"):
        load_settings(config, MTLS_FILES)
    config.write_text("[sever]\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\): sever"):
        load_settings(config, MTLS_FILES)
    config.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(config, MTLS_FILES)


def test_shipped_example_is_valid() -> None:
    """examples/pkggov.toml loads, keeps the emulator off and shows a fleet's audit and quotas."""
    settings = load_settings(EXAMPLE, {})
    assert ("0.0.0.0:50051", False) == (settings.server.listen, settings.emulator.enabled)
    assert settings.audit.store.startswith("postgresql://")
    assert {"ci": 500, "release-admins": 5000} == settings.quota.max_versions_per_group


def test_development_identity_only_on_loopback() -> None:
    """identity.mode = dev on a non-loopback listener is refused."""
    with pytest.raises(ConfigError, match="allowed only on a loopback listener"):
        load_settings(None, {"PKGGOV_SERVER_LISTEN": "0.0.0.0:50051"}, dev=True)


def test_group_limits_from_file_and_environment(tmp_path: Path) -> None:
    """policy.max_versions_per_group comes from a TOML table or name=N pairs."""
    config = tmp_path / "pkggov.toml"
    config.write_text("[policy.max_versions_per_group]\nci = 50\n")
    assert {"ci": 50} == load_settings(config, MTLS_FILES).policy.max_versions_per_group
    env = {**MTLS_FILES, "PKGGOV_POLICY_MAX_VERSIONS_PER_GROUP": "ci=5, admins=500"}
    assert {"ci": 5, "admins": 500} == load_settings(None, env).policy.max_versions_per_group
    with pytest.raises(ConfigError, match="expected a positive integer"):
        load_settings(None, {**MTLS_FILES, "PKGGOV_POLICY_MAX_VERSIONS_PER_GROUP": "ci=0"})


def test_rates_and_connection_age_are_checked() -> None:
    """A zero rate is refused by name; a zero connection age means "never" and is allowed."""
    with pytest.raises(ConfigError, match=r"upstream\.write_calls_per_second"):
        load_settings(None, {"PKGGOV_UPSTREAM_WRITE_CALLS_PER_SECOND": "0"}, dev=True)
    with pytest.raises(ConfigError, match=r"upstream\.replicas"):
        load_settings(None, {"PKGGOV_UPSTREAM_REPLICAS": "0"}, dev=True)
    settings = load_settings(None, {"PKGGOV_SERVER_MAX_CONNECTION_AGE_SECONDS": "0"}, dev=True)
    assert 0 == settings.server.max_connection_age_seconds


def test_streams_leave_threads_for_unary_calls() -> None:
    """server.max_streams defaults (0) to a quarter of max_workers, at least 1; set or derived,
    it must stay below max_workers and max_concurrent_rpcs."""
    derived = load_settings(None, {"PKGGOV_SERVER_MAX_WORKERS": "10"}, dev=True).server
    assert (0, 2) == (derived.max_streams, derived.stream_budget)
    two = load_settings(None, {"PKGGOV_SERVER_MAX_WORKERS": "2"}, dev=True).server
    assert 1 == two.stream_budget
    refused = r"server\.max_streams \(1\) .* server\.max_workers \(1\)"
    with pytest.raises(ConfigError, match=refused):
        load_settings(None, {"PKGGOV_SERVER_MAX_WORKERS": "1"}, dev=True)
    env = {"PKGGOV_SERVER_MAX_STREAMS": "16", "PKGGOV_SERVER_MAX_CONCURRENT_RPCS": "16"}
    with pytest.raises(ConfigError, match=r"less than server\.max_concurrent_rpcs \(16\)"):
        load_settings(None, env, dev=True)
    with pytest.raises(ConfigError, match=r"server\.stream_idle_seconds"):
        load_settings(None, {"PKGGOV_SERVER_STREAM_IDLE_SECONDS": "0"}, dev=True)
    with pytest.raises(ConfigError, match=r"server\.request_message_seconds"):
        load_settings(None, {"PKGGOV_SERVER_REQUEST_MESSAGE_SECONDS": "0"}, dev=True)


def test_shipped_example_shows_every_setting() -> None:
    """examples/pkggov.toml is complete: every key of every section appears in it."""
    given = tomllib.loads(EXAMPLE.read_text())
    missing = {
        f"{section}.{f.name}"
        for section, kind in get_type_hints(Settings).items()
        for f in dataclasses.fields(kind)
        if f.name not in given.get(section, {})
    }
    assert set() == missing


DEV_IDENTITY = {"PKGGOV_IDENTITY_MODE": "dev"}
"""Production defaults with development identity (no certificates needed)."""


def test_recovery_windows_from_toml_and_environment(tmp_path: Path) -> None:
    """Windows keep their order (first match wins); the environment's PATTERN=DAYS pairs too;
    the development profile gives prod-* 30 days, production none."""
    path = tmp_path / "pkggov.toml"
    path.write_text('[recovery.windows]\n"prod-scratch" = 0\n"demo/prod-*" = 7.5\n')
    assert {"prod-scratch": 0.0, "demo/prod-*": 7.5} == load_settings(
        path, DEV_IDENTITY
    ).recovery.windows
    assert ["prod-scratch", "demo/prod-*"] == list(
        load_settings(path, DEV_IDENTITY).recovery.windows
    )
    env = {"PKGGOV_RECOVERY_WINDOWS": "a/b*=1, *=0"}
    assert {"a/b*": 1.0, "*": 0.0} == load_settings(None, {**env, **DEV_IDENTITY}).recovery.windows
    assert {"prod-*": 30.0} == load_settings(None, {}, dev=True).recovery.windows
    assert {} == load_settings(None, DEV_IDENTITY).recovery.windows


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("prod-*=-1", r"recovery\.windows\.prod-\*: expected a number of days from 0 to 3650"),
        ("prod-*=3651", r"from 0 to 3650, got '3651'"),
        ("prod-*=nan", r"from 0 to 3650"),
        ("prod-*", r"expected PATTERN=DAYS pairs"),
        ("Prod/x=1", r"'Prod/x' is not a DOMAIN/REPOSITORY"),
        ("a/b/c=1", r"'a/b/c' is not a DOMAIN/REPOSITORY"),
        ("a b=1", r"'a b' is not a DOMAIN/REPOSITORY"),
    ],
)
def test_bad_recovery_windows_are_refused_by_name(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, {"PKGGOV_RECOVERY_WINDOWS": value}, dev=True)


def test_recovery_worker_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"recovery\.final_step: expected one of"):
        load_settings(None, {"PKGGOV_RECOVERY_FINAL_STEP": "shred"}, dev=True)
    with pytest.raises(ConfigError, match=r"purge_deadline_seconds \(300\) must be less than"):
        load_settings(None, {"PKGGOV_RECOVERY_PURGE_DEADLINE_SECONDS": "300"}, dev=True)
    with pytest.raises(ConfigError, match=r"retry_seconds must not exceed"):
        load_settings(None, {"PKGGOV_RECOVERY_RETRY_SECONDS": "7200"}, dev=True)
    with pytest.raises(ConfigError, match=r"recovery\.worker_batch: must be at most 1,000"):
        load_settings(None, {"PKGGOV_RECOVERY_WORKER_BATCH": "5000"}, dev=True)
    with pytest.raises(ConfigError, match=r"recovery\.worker_interval_seconds: must be greater"):
        load_settings(None, {"PKGGOV_RECOVERY_WORKER_INTERVAL_SECONDS": "0"}, dev=True)
    assert (
        "dispose"
        == load_settings(
            None, {"PKGGOV_RECOVERY_FINAL_STEP": "dispose"}, dev=True
        ).recovery.final_step
    )


def test_webhook_settings_are_checked_and_masked() -> None:
    """A url needs a secret of at least 32 bytes and an https (or loopback http) target; the
    settings shown never hold the secret or the url's path (chat webhooks put a token there)."""
    with pytest.raises(ConfigError, match=r"webhooks\.url needs webhooks\.secret"):
        load_settings(None, {"PKGGOV_WEBHOOKS_URL": "https://hooks.example/x"}, dev=True)
    short = {"PKGGOV_WEBHOOKS_URL": "https://hooks.example/x", "PKGGOV_WEBHOOKS_SECRET": "short"}
    with pytest.raises(ConfigError, match=r"webhooks: .*32"):
        load_settings(None, short, dev=True)
    plain = {"PKGGOV_WEBHOOKS_URL": "http://hooks.example/x", "PKGGOV_WEBHOOKS_SECRET": "s" * 32}
    with pytest.raises(ConfigError, match=r"webhooks: "):
        load_settings(None, plain, dev=True)
    good = {
        "PKGGOV_WEBHOOKS_URL": "https://hooks.example/services/T0/B0/token",
        "PKGGOV_WEBHOOKS_SECRET": "s" * 32,
    }
    shown = describe(load_settings(None, good, dev=True))["webhooks"]
    assert ("https://hooks.example/***", "***") == (shown["url"], shown["secret"])
