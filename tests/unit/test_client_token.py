"""PkggovClient sends a bearer token on every call, re-reads a token file that rotates, refuses
plaintext to another host, and never shows the token."""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov_client import PkggovClient, PkggovError, TokenError
from pkggov_client._token import FileToken, StaticToken, is_loopback_target
from pkggov_client.testing import FakeGateway, plain_status, serve

_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl"
_ROTATED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.cm90YXRlZDEy"  # same length as _TOKEN


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


def _authorization(metadata: tuple[tuple[str, str | bytes], ...]) -> list[str | bytes]:
    return [value for key, value in metadata if key == "authorization"]


def _delete(client: PkggovClient) -> None:
    client.delete_package_versions(
        domain="demo", repository="dev-shared", format="npm", package="widgets", versions=["1"]
    )


def _sent(fake: FakeGateway) -> list[list[str | bytes]]:
    """The authorization values of every DeletePackageVersions call, in order."""
    return [_authorization(call.metadata) for call in fake.calls]


def test_a_token_is_sent_as_bearer_metadata_on_every_call(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target, token=_TOKEN, metadata=[("x-team", "ci")]) as client:
        _delete(client)
        client.restore_package_versions(
            domain="demo", repository="dev-shared", format="npm", package="widgets", versions=["1"]
        )
        client.list_pending_purges()
        client.list_deletion_requests()

    bearer = f"Bearer {_TOKEN}"
    assert [[bearer]] == _sent(fake)
    assert [bearer] == _authorization(fake.restore_calls[0].metadata)
    assert [bearer] == _authorization(fake.pending_calls[0].metadata)
    assert [bearer] == _authorization(fake.approval_calls[0].metadata)
    assert ("x-team", "ci") in fake.calls[0].metadata


def test_no_token_sends_no_authorization(fake: FakeGateway, target: str) -> None:
    with PkggovClient(target) as client:
        _delete(client)

    assert [[]] == _sent(fake)


def test_a_token_file_is_read_without_its_surrounding_whitespace(
    fake: FakeGateway, target: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {_TOKEN}\r\n\n")

    with PkggovClient(target, token_file=token_file) as client:
        _delete(client)

    assert [[f"Bearer {_TOKEN}"]] == _sent(fake)


def test_a_rewritten_token_file_is_read_again_before_the_next_call(
    fake: FakeGateway, target: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.jwt"
    token_file.write_text(_TOKEN)
    with PkggovClient(target, token_file=str(token_file)) as client:
        _delete(client)
        before = token_file.stat()
        token_file.write_text(_ROTATED)  # in place: same inode, same size
        os.utime(token_file, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        _delete(client)
        token_file.write_text("short.er.token")  # a new size alone is a change too
        _delete(client)

    assert [
        [f"Bearer {_TOKEN}"],
        [f"Bearer {_ROTATED}"],
        ["Bearer short.er.token"],
    ] == _sent(fake)


def _kubelet_write(volume: Path, token: str, generation: int) -> None:
    """Write `token` as the kubelet's AtomicWriter updates a projected volume: into a new
    timestamped directory, then a ``..data_tmp`` symlink to it renamed over ``..data``
    (atomically), then the old directory removed; ``token`` is a fixed symlink to
    ``..data/token``."""
    directory = volume / f"..2026_01_0{generation}_10_00_00.{generation}"
    directory.mkdir()
    (directory / "token").write_text(token)
    data, staged = volume / "..data", volume / "..data_tmp"
    old = data.resolve() if data.is_symlink() else None
    if old is not None:  # the same size and mtime: only the inode tells them apart
        before = (old / "token").stat()
        os.utime(directory / "token", ns=(before.st_atime_ns, before.st_mtime_ns))
    staged.symlink_to(directory.name)
    staged.replace(data)
    link = volume / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    if old is not None:
        shutil.rmtree(old)


def test_a_kubernetes_symlink_swap_is_picked_up(
    fake: FakeGateway, target: str, tmp_path: Path
) -> None:
    _kubelet_write(tmp_path, _TOKEN, 1)
    with PkggovClient(target, token_file=tmp_path / "token") as client:
        _delete(client)
        _kubelet_write(tmp_path, _ROTATED, 2)
        _delete(client)
        _delete(client)

    assert [[f"Bearer {_TOKEN}"], [f"Bearer {_ROTATED}"], [f"Bearer {_ROTATED}"]] == _sent(fake)


def test_an_unchanged_token_file_is_not_read_again(
    fake: FakeGateway, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_TOKEN)
    opened: list[Path] = []
    real_open = pathlib.Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", counting_open)
    with PkggovClient(target, token_file=token_file) as client:
        for _ in range(3):
            _delete(client)

    assert ([token_file], 3) == (opened, len(fake.calls))


def test_a_token_file_that_goes_away_fails_the_call_before_it_is_sent_then_recovers(
    fake: FakeGateway, target: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_TOKEN)
    with PkggovClient(target, token_file=token_file) as client:
        token_file.unlink()
        with pytest.raises(TokenError) as missing:
            _delete(client)
        token_file.write_text("   \n")
        with pytest.raises(TokenError) as empty:
            _delete(client)
        token_file.write_text(_ROTATED)
        _delete(client)

    assert f"cannot read token file {token_file}: No such file or directory" == str(missing.value)
    assert f"token file {token_file} is empty: expected a token" == str(empty.value)
    assert [[f"Bearer {_ROTATED}"]] == _sent(fake)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read token file {path}: No such file or directory"),
        ("", "token file {path} is empty: expected a token"),
        (
            f"Bearer {_TOKEN}",
            "token file {path} does not hold one token: expected printable ASCII without "
            "spaces (the token alone, without a 'Bearer ' prefix)",
        ),
        (f"{_TOKEN}\n{_ROTATED}\n", "token file {path} does not hold one token"),
        (f"{_TOKEN}\u00e9", "token file {path} does not hold one token"),
        ("x" * (64 * 1024 + 1), "token file {path} is too large for a token"),
    ],
    ids=["missing", "empty", "bearer-prefix", "two-tokens", "not-ascii", "too-large"],
)
def test_a_token_file_without_one_token_is_refused_at_construction(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)

    with pytest.raises(TokenError) as error:
        PkggovClient("127.0.0.1:1", token_file=token_file)

    assert str(error.value).startswith(complaint.format(path=token_file))
    assert _TOKEN not in str(error.value)
    assert _ROTATED not in str(error.value)


def test_a_directory_is_not_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match=f"cannot read token file {tmp_path}: Is a directory"):
        PkggovClient("127.0.0.1:1", token_file=tmp_path)


@pytest.mark.parametrize("token", ["", "  \n", "two words", "Bearer x.y.z", "caf\u00e9"])
def test_a_token_that_is_not_one_token_is_refused(token: str) -> None:
    with pytest.raises(TokenError, match=r"^token (is empty|does not hold one token)"):
        PkggovClient("127.0.0.1:1", token=token)


def test_a_pipe_is_read_once(tmp_path: Path) -> None:
    """``--token-file <(command)``: a pipe cannot be read again, so it is not stat'ed again."""
    read_end, write_end = os.pipe()
    os.write(write_end, _TOKEN.encode())
    os.close(write_end)
    try:
        source = FileToken(f"/dev/fd/{read_end}")
        assert (_TOKEN, _TOKEN) == (source.token(), source.token())
    finally:
        os.close(read_end)


@pytest.mark.parametrize(
    "remote",
    [
        "pkggov.internal:443",
        "dns:///pkggov.internal:443",
        "10.0.0.7:50051",
        "[2001:db8::1]:50051",
        "ipv4:127.0.0.1:50051,10.0.0.7:50051",
        "0.0.0.0:50051",
        "localhost.example.com:50051",
        "xds:///pkggov",
    ],
)
def test_a_token_is_never_sent_in_plaintext_to_another_host(tmp_path: Path, remote: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_TOKEN)

    refusals = []
    for kwargs in ({"token": _TOKEN}, {"token_file": token_file}):
        with pytest.raises(TokenError) as error:
            PkggovClient(remote, **kwargs)
        refusals.append(str(error.value))
    with pytest.raises(TokenError):
        PkggovClient(remote, metadata=[("authorization", f"Bearer {_TOKEN}")])

    expected = (
        f"refusing to send a bearer token in plaintext to {remote!r}: pass TLS credentials "
        "(plaintext is only allowed to a loopback or Unix-socket target, for development)"
    )
    assert [expected, expected] == refusals


def test_a_token_may_go_to_another_host_over_tls() -> None:
    credentials = grpc.ssl_channel_credentials()

    with PkggovClient("pkggov.internal:443", credentials=credentials, token=_TOKEN) as client:
        assert "PkggovClient('pkggov.internal:443')" == repr(client)


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:50051", True),
        ("localhost:50051", True),
        ("LOCALHOST.:50051", True),
        ("localhost", True),
        ("[::1]:50051", True),
        ("::1", True),
        ("[::ffff:127.0.0.1]:50051", True),
        ("dns:///localhost:50051", True),
        ("dns://8.8.8.8/localhost:50051", True),
        ("ipv4:127.0.0.1:1,127.0.0.2:2", True),
        ("ipv6:[::1]:50051", True),
        ("unix:/run/pkggov.sock", True),
        ("unix:///run/pkggov.sock", True),
        ("unix-abstract:pkggov", True),
        ("pkggov.internal:443", False),
        ("dns:///pkggov.internal:443", False),
        ("192.168.1.5:50051", False),
        ("[fe80::1%eth0]:50051", False),
        ("0.0.0.0:50051", False),
        ("ipv4:127.0.0.1:1,10.0.0.1:2", False),
        ("localhost.evil.example:50051", False),
        ("", False),
    ],
)
def test_loopback_targets(target: str, *, loopback: bool) -> None:
    assert loopback == is_loopback_target(target)


def test_token_and_token_file_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass token or token_file, not both"):
        PkggovClient("127.0.0.1:1", token=_TOKEN, token_file=tmp_path / "token")


def test_a_token_and_authorization_metadata_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="metadata already holds 'authorization'") as error:
        PkggovClient("127.0.0.1:1", token=_TOKEN, metadata=[("authorization", "Bearer other")])

    assert _TOKEN not in str(error.value)


def test_the_token_is_in_no_repr_nor_error(fake: FakeGateway, target: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_TOKEN)
    fake.error = plain_status(grpc.StatusCode.UNAUTHENTICATED, "token signature is invalid")

    with PkggovClient(target, token_file=token_file) as client, pytest.raises(PkggovError) as err:
        _delete(client)

    shown = [
        repr(client),
        repr(FileToken(token_file)),
        repr(StaticToken(_TOKEN)),
        str(err.value),
        repr(err.value),
    ]
    assert [] == [text for text in shown if _TOKEN in text]
    assert "StaticToken(<redacted>)" == repr(StaticToken(_TOKEN))
