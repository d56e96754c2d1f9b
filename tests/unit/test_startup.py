"""Start-up errors: StartupError's line, the table, the probes, an unexpected exception."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ProfileNotFound

from pkggov_gateway import __main__ as entry
from pkggov_gateway import bootstrap
from pkggov_gateway.adapters.cedar import PolicyLoadError
from pkggov_gateway.config import load_settings
from pkggov_gateway.domain.errors import AuditUnavailableError
from pkggov_gateway.startup import (
    KNOWN,
    StartupError,
    file_problem,
    listen_failure,
    naming,
    sqlite_problem,
    store_error,
)


def test_startup_error_is_one_line_naming_setting_and_value() -> None:
    """``setting value: cause``, line breaks in the cause made spaces."""
    error = StartupError("metrics.listen", "cannot listen:\n\taddress in use", value="h:1")
    assert "metrics.listen h:1: cannot listen: address in use" == str(error)
    assert "audit.store: gone" == str(StartupError("audit.store", "gone"))


def test_a_cause_that_names_a_narrower_setting_is_kept_whole() -> None:
    """The TLS adapter names identity.server_key itself: not repeated, and it is the setting."""
    error = StartupError("identity", "identity.server_key: k.pem holds no PEM data")
    assert ("identity.server_key: k.pem holds no PEM data", "identity.server_key") == (
        str(error),
        error.setting,
    )


_SAMPLES: dict[type[BaseException], tuple[BaseException, str]] = {
    AuditUnavailableError: (AuditUnavailableError("sqlite:x: disk I/O error"), "disk I/O error"),
    PolicyLoadError: (PolicyLoadError("p.cedar", 3, "unexpected token"), "p.cedar:3: unexpected"),
    OSError: (OSError(98, "Address already in use"), "address already in use"),
    BotoCoreError: (ProfileNotFound(profile="nope"), "(nope) could not be found"),
    ValueError: (ValueError("bad value"), "bad value"),
    ImportError: (ImportError(name="pkggov_emulator"), "pkggov_emulator is not installed"),
}


@pytest.mark.parametrize("kind", KNOWN, ids=lambda kind: kind.__name__)
def test_naming_translates_every_known_exception(kind: type[BaseException]) -> None:
    """Each type in the table becomes a StartupError naming the setting, from the original."""
    raised, said = _SAMPLES[kind]
    with pytest.raises(StartupError) as caught, naming("some.setting", "v", doing="cannot"):
        raise raised
    assert str(caught.value).startswith("some.setting v: cannot: ")
    assert said in str(caught.value)
    assert raised is caught.value.__cause__


def test_audit_unavailable_gives_the_drivers_words_not_the_per_call_text() -> None:
    """AuditUnavailableError's text is for a refused call; the driver's message is shown."""
    try:
        raise sqlite3.OperationalError("unable to open database file")
    except sqlite3.OperationalError as driver:
        error = AuditUnavailableError(f"sqlite:x: {driver}")
        error.__cause__ = driver
    with pytest.raises(StartupError) as caught, naming("audit.store", "sqlite:x"):
        raise error
    assert "audit.store sqlite:x: unable to open database file" == str(caught.value)


def test_store_error_masks_the_password_wherever_a_driver_quotes_it() -> None:
    """The driver may echo the URL, or the password percent-decoded: neither is shown."""
    store = "postgresql://pkggov:s3cret%40pw@127.0.0.1:1/audit"
    settings = load_settings(None, {"PKGGOV_AUDIT_STORE": store}, dev=True)
    cause = f'cannot open: bad "{store}"; password "s3cret@pw" refused'
    error = store_error(settings, cause)
    assert (
        "audit.store postgresql://pkggov:***@127.0.0.1:1/audit: cannot open: bad "
        '"postgresql://pkggov:***@127.0.0.1:1/audit"; password "***" refused'
    ) == str(error)


def test_an_unknown_exception_passes_through() -> None:
    """What the table does not know is not dressed up as a setting's fault."""
    with pytest.raises(RuntimeError, match="boom"), naming("some.setting"):
        raise RuntimeError("boom")


def test_listen_failure_gives_the_systems_reason() -> None:
    """A port something listens on: "address already in use"; a free one: None."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = f"127.0.0.1:{sock.getsockname()[1]}"
        assert "address already in use" == listen_failure(taken)
    assert listen_failure("127.0.0.1:0") is None
    assert (listen_failure("nosuchhost.invalid:1") or "").startswith("cannot resolve")


def test_file_problems(tmp_path: Path) -> None:
    """A missing directory, a directory for a file, a usable path."""
    assert f"directory {tmp_path}/no does not exist" == file_problem(tmp_path / "no" / "f")
    assert f"{tmp_path} is a directory" == sqlite_problem(tmp_path)
    assert file_problem(tmp_path / "f") is None
    assert sqlite_problem(tmp_path / "audit.db") is None


def test_main_reports_an_unexpected_error_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception no setting explains: exit 1, one line with its type, no traceback."""
    for name in [name for name in os.environ if name.startswith("PKGGOV_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # leave pytest's handlers alone
    monkeypatch.setattr(entry, "configure_logging", lambda *_: None)

    def boom(_settings: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(bootstrap, "build_gateway", boom)  # what start_gateway builds with
    assert 1 == entry.main(["--dev"])
    assert [
        "pkggov-gateway: unexpected error at start-up: RuntimeError: boom second line "
        "(logging.level = debug logs the traceback)"
    ] == capsys.readouterr().err.splitlines()


def test_dev_without_the_emulator_installed_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--dev` where pkggov-emulator (a development distribution) is not installed, as in the
    production image: exit 1, one line naming emulator.enabled and what to install."""
    for name in [name for name in os.environ if name.startswith("PKGGOV_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # leave pytest's handlers alone
    monkeypatch.setattr(entry, "configure_logging", lambda *_: None)
    monkeypatch.setitem(sys.modules, "pkggov_emulator", None)  # makes its import fail
    assert 2 == entry.main(["--dev"])
    assert [
        "pkggov-gateway: emulator.enabled: pkggov_emulator is not installed (a development "
        "dependency; make venv installs pkggov-emulator from ./emulator)"
    ] == capsys.readouterr().err.splitlines()
