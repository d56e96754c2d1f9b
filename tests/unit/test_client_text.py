"""Every text output of the pkggov CLI shows control and other non-printable characters from the
gateway as visible escapes (`printable`), so a recorded field cannot drive the terminal."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import grpc
import pytest

from pkggov_client import PkggovError, pb
from pkggov_client._audit_cli import render_event, render_events
from pkggov_client._connection import report_error
from pkggov_client._model import DeleteResult
from pkggov_client._render import render_plan, render_table
from pkggov_client._text import printable
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, add_decision, rich_status, serve

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
LINK = "\x1b]8;;https://evil.example\x1b\\"
RLO = "\u202e"
HOSTILE = f"1.0{CLEAR}{TITLE}{RLO}\x9b\x7f\nforged"
"""A version a caller may record: screen clear, window title, bidi override, C1, DEL, newline."""
SHOWN = r"1.0\x1b[2J\x1b]0;pwned\x07\u202e\x9b\x7f\nforged"


def _assert_terminal_safe(text: str) -> None:
    """`text` holds no character a terminal acts on, bar the newlines between its lines."""
    unsafe = sorted({char for char in text if char != "\n" and not char.isprintable()})
    assert [] == unsafe, text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("1.0.0-beta+build.7", "1.0.0-beta+build.7"),
        ("caf\u00e9 \u03b2 \u00ff \u4e2d", "caf\u00e9 \u03b2 \u00ff \u4e2d"),  # printable
        (CLEAR, r"\x1b[2J"),
        (TITLE, r"\x1b]0;pwned\x07"),
        (LINK, "\\x1b]8;;https://evil.example\\x1b\\"),  # the backslash stays
        ("a\tb\r\nc\x00", r"a\tb\r\nc\x00"),
        ("\x7f\x85\x9b", r"\x7f\x85\x9b"),  # DEL and C1
        (f"gpl{RLO}exe.js", r"gpl\u202eexe.js"),  # bidi override
        ("\u200b\u2066\u2028\ufeff", r"\u200b\u2066\u2028\ufeff"),  # format, isolate, line sep
        ("\U000e0041", r"\U000e0041"),  # a tag character (format, beyond the BMP)
        ("\udcff", r"\xff"),  # a byte of a non-UTF-8 argument (surrogateescape)
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert shown == printable(text)


def test_the_delete_table_escapes_versions_revisions_and_messages() -> None:
    response = pb.DeletePackageVersionsResponse()
    response.successful_versions[HOSTILE].revision = f"REV{TITLE}"
    failed = response.failed_versions[f"2.0{LINK}"]
    failed.error_code = pb.PackageVersionErrorCode.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND
    failed.error_message = f"not {CLEAR}found"

    text = render_table(DeleteResult.from_proto(response))

    _assert_terminal_safe(text)
    lines = text.splitlines()
    assert 4 == len(lines)  # header, two rows, summary: no forged row
    assert lines[1].startswith(f"{SHOWN}  deleted")
    assert lines[1].endswith(r"REV\x1b]0;pwned\x07")
    assert ["2.0\\x1b]8;;https://evil.example\\x1b\\", "failed"] == lines[2].split()[:2]
    assert lines[2].endswith(r"not \x1b[2Jfound")


def test_the_dry_run_plan_escapes_versions_policy_ids_and_messages() -> None:
    response = pb.DeletePackageVersionsResponse()
    add_decision(response, HOSTILE, "DENIED", policy_ids=[f"p{CLEAR}"], message=f"no{RLO}pe")

    text = render_plan(DeleteResult.from_proto(response))

    _assert_terminal_safe(text)
    row = text.splitlines()[1]
    assert row.startswith(f"{SHOWN}  denied")
    assert row.endswith(r"p\x1b[2J: no\u202epe")


def _event() -> pb.AuditEvent:
    event = pb.AuditEvent(
        event_id=f"e{CLEAR}",
        principal=f"mallory{TITLE}",
        method=f"/pkggov.v1.PackageGovernanceService/Delete{RLO}",
        decision=f"allowed{LINK}",
        status_code="OK\x9b",
        reason="R\x7f",
    )
    entry = event.entries.add(seq=1, kind=f"intent{CLEAR}", hash=f"ab{RLO}")
    entry.body.update(
        {
            "request": {
                "domain": f"demo{CLEAR}",
                "repository": "dev",
                "package": "left-pad",
                "versions": [HOSTILE, "1.1"],
            },
            "justification": f"cleanup{TITLE}",
        }
    )
    return event


def test_audit_list_escapes_every_recorded_field() -> None:
    text = render_events([_event()])

    _assert_terminal_safe(text)
    lines = text.splitlines()
    assert 2 == len(lines)
    row = lines[1].split()
    assert [r"e\x1b[2J", r"mallory\x1b]0;pwned\x07", r"Delete\u202e"] == row[1:4]
    assert ["allowed\\x1b]8;;https://evil.example\\x1b\\", r"OK\x9b"] == row[4:6]
    assert r"demo\x1b[2J/dev/left-pad" == row[6]
    assert lines[1].endswith(f"{SHOWN}, 1.1")


def test_audit_show_escapes_the_summary_and_the_bodies() -> None:
    text = render_event(_event())

    _assert_terminal_safe(text)
    assert r"principal mallory\x1b]0;pwned\x07" in text.splitlines()
    assert r"status    OK\x9b R\x7f" in text.splitlines()
    assert r"intent\x1b[2J (seq 1, hash ab\u202e)" in text.splitlines()
    assert r'"justification": "cleanup\u001b]0;pwned\u0007"' in text  # JSON's own escapes


def test_an_error_escapes_its_message_and_every_detail() -> None:
    error = PkggovError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"denied{CLEAR}\nforged",
        reason=f"POLICY_DENIED{RLO}",
        metadata={f"k{TITLE}": f"v{LINK}"},
        field_violations=[(f"versions[0]{CLEAR}", "bad\x9b")],
        resource=(f"package{RLO}", f"p{CLEAR}", f"d{TITLE}"),
        denied_versions=[(HOSTILE, ["never"], f"by{CLEAR} policy")],
        quota_violations=[(f"s{RLO}", f"q{CLEAR}")],
    )

    text = str(error)

    _assert_terminal_safe(text)
    assert [
        r"PERMISSION_DENIED POLICY_DENIED\u202e: denied\x1b[2J\nforged",
        r"  versions[0]\x1b[2J: bad\x9b",
        f"  denied {SHOWN}: by\\x1b[2J policy",
        r"  quota: s\u202e: q\x1b[2J",
        r"  resource: package\u202e p\x1b[2J: d\x1b]0;pwned\x07",
        "  metadata: k\\x1b]0;pwned\\x07=v\\x1b]8;;https://evil.example\\x1b\\",
    ] == text.splitlines()


def test_a_connection_hint_quoting_the_error_is_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = PkggovError(
        grpc.StatusCode.UNAVAILABLE, f"ssl: CERTIFICATE_VERIFY_FAILED: bad {CLEAR} ca"
    )
    args = argparse.Namespace(json=False, cacert="ca.pem", cert=None)

    report_error(error, args)

    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    assert err.startswith(r"error: we do not trust the gateway's certificate (bad \x1b[2J ca)")


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _delete(target: str, *extra: str) -> list[str]:
    return [
        *("delete", "--target", target, "--domain", "demo", "--repository", "dev"),
        *("--format", "npm", "--package", "left-pad", *extra),
    ]


def test_the_cli_escapes_the_table_and_the_audit_event_id(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.response.successful_versions[HOSTILE].revision = "R"
    fake.response.audit_event_id = f"id{TITLE}"

    assert 0 == main(_delete(target, "1.0"))

    out, err = capsys.readouterr()
    _assert_terminal_safe(out + err)
    assert out.splitlines()[1].startswith(SHOWN)
    assert r"audit event id\x1b]0;pwned\x07" == err.splitlines()[-1]


def test_the_cli_escapes_a_dry_run_s_denied_versions(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_decision(fake.response, HOSTILE, "DENIED", message="no")

    assert 1 == main(_delete(target, "--dry-run", "1.0"))

    out, err = capsys.readouterr()
    _assert_terminal_safe(out + err)
    assert f"policy denies 1 of 1 version(s) ({SHOWN})" in err


def test_the_cli_escapes_a_policy_denial(
    fake: FakeGateway, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        f"policy denies {CLEAR}",
        reason="POLICY_DENIED",
        denied_versions=[(HOSTILE, [f"p{TITLE}"], "")],
        field_violations=[("versions[0]", f"bad {RLO}")],
    )

    assert 1 == main(_delete(target, "1.0"))

    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    assert [
        r"error: PERMISSION_DENIED POLICY_DENIED: policy denies \x1b[2J",
        r"  versions[0]: bad \u202e",
        f"  denied {SHOWN}: denied by p\\x1b]0;pwned\\x07",
    ] == err.splitlines()[1:]
