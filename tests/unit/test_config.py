"""Settings: defaults, the development profile, file and environment layering, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkggov_gateway.config import ConfigError, Settings, load_settings


def test_production_defaults_never_start_the_emulator() -> None:
    """Without the development profile the emulator is off, even with an empty file."""
    assert Settings() == load_settings(None, {})
    assert False is load_settings(None, {}).emulator.enabled


def test_file_without_emulator_section_keeps_it_off(tmp_path: Path) -> None:
    """A production file that says nothing of the emulator does not get one."""
    config = tmp_path / "pkggov.toml"
    config.write_text('[upstream]\nregion = "eu-west-1"\n')
    settings = load_settings(config, {})
    assert ("eu-west-1", False) == (settings.upstream.region, settings.emulator.enabled)


def test_development_profile_starts_the_emulator_unless_told_otherwise(tmp_path: Path) -> None:
    """--dev turns the emulator on; a file or the environment can still turn it off."""
    assert True is load_settings(None, {}, dev=True).emulator.enabled
    env = {"PKGGOV_EMULATOR_ENABLED": "false"}
    assert False is load_settings(None, env, dev=True).emulator.enabled


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """PKGGOV_<SECTION>_<KEY> wins over the file; values are converted to the field's type."""
    config = tmp_path / "pkggov.toml"
    config.write_text("[server]\nmax_workers = 8\n")
    settings = load_settings(config, {"PKGGOV_SERVER_MAX_WORKERS": "12", "PKGGOV_CONFIG": "x"})
    assert 12 == settings.server.max_workers


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
    ],
)
def test_bad_values_are_refused_with_their_name(environ: dict[str, str], message: str) -> None:
    """Each bad value is a ConfigError naming the setting."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    assert message in str(caught.value)


def test_bad_file_is_refused(tmp_path: Path) -> None:
    """Unknown sections and keys, and invalid TOML, name the file."""
    config = tmp_path / "pkggov.toml"
    config.write_text("[server]\nlisten_on = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[server\]: listen_on"):
        load_settings(config, {})
    config.write_text("[sever]\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\): sever"):
        load_settings(config, {})
    config.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(config, {})


def test_shipped_example_is_valid() -> None:
    """examples/pkggov.toml loads and keeps the emulator off."""
    example = Path(__file__).resolve().parents[2] / "examples" / "pkggov.toml"
    settings = load_settings(example, {})
    assert ("0.0.0.0:50051", False) == (settings.server.listen, settings.emulator.enabled)
