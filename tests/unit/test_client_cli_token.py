"""The pkggov CLI sends a bearer token from --token-file, --token-env or $PKGGOV_CLI_TOKEN_FILE,
refuses conflicting identities, unreadable files and plaintext to another host (exit 2), and
never prints the token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkggov_client import pb
from pkggov_client.cli import main
from pkggov_client.testing import FakeGateway, plain_status, serve

_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvd2lkZ2V0cyJ9.c2lnbmF0dXJl"
_ROTATED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvd2lkZ2V0cyJ9.cm90YXRlZDEy"


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def target(fake: FakeGateway) -> Iterator[str]:
    with serve(fake) as address:
        yield address


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token.jwt"
    path.write_text(f"{_TOKEN}\n")
    return path


def _delete_args(target: str, *extra: str) -> list[str]:
    return [
        "delete",
        "--target",
        target,
        "--domain",
        "demo",
        "--repository",
        "dev-shared",
        "--format",
        "npm",
        "--package",
        "widgets",
        *extra,
        "1.0.0",
    ]


def _authorization(metadata: tuple[tuple[str, str | bytes], ...]) -> list[str | bytes]:
    return [value for key, value in metadata if key == "authorization"]


def test_token_file_is_sent_as_a_bearer_token(
    fake: FakeGateway, target: str, token_file: Path
) -> None:
    status = main(_delete_args(target, "--token-file", str(token_file)), environ={})

    assert (0, [f"Bearer {_TOKEN}"]) == (status, _authorization(fake.calls[0].metadata))


def test_token_file_defaults_to_the_environment(
    fake: FakeGateway, target: str, token_file: Path
) -> None:
    status = main(_delete_args(target), environ={"PKGGOV_CLI_TOKEN_FILE": str(token_file)})

    assert (0, [f"Bearer {_TOKEN}"]) == (status, _authorization(fake.calls[0].metadata))


def test_token_env_names_the_variable_that_holds_the_token(fake: FakeGateway, target: str) -> None:
    status = main(
        _delete_args(target, "--token-env", "PKGGOV_TOKEN"),
        environ={"PKGGOV_TOKEN": f" {_TOKEN}\n"},
    )

    assert (0, [f"Bearer {_TOKEN}"]) == (status, _authorization(fake.calls[0].metadata))


def test_an_option_wins_over_the_environment(
    fake: FakeGateway, target: str, token_file: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    environ = {"PKGGOV_CLI_TOKEN_FILE": str(missing), "PKGGOV_TOKEN": _ROTATED}

    by_file = main(_delete_args(target, "--token-file", str(token_file)), environ=environ)
    by_env = main(_delete_args(target, "--token-env", "PKGGOV_TOKEN"), environ=environ)

    assert (0, 0) == (by_file, by_env)
    assert [[f"Bearer {_TOKEN}"], [f"Bearer {_ROTATED}"]] == [
        _authorization(call.metadata) for call in fake.calls
    ]


@pytest.mark.parametrize(
    "identity",
    [["--as", "alice"], ["--principal", "alice"], ["--header", "authorization=Bearer other"]],
    ids=["as", "principal", "header"],
)
def test_as_or_an_authorization_header_override_the_environment_token_file(
    fake: FakeGateway, target: str, token_file: Path, identity: list[str]
) -> None:
    status = main(
        _delete_args(target, *identity), environ={"PKGGOV_CLI_TOKEN_FILE": str(token_file)}
    )

    assert 0 == status
    assert [] == [v for v in _authorization(fake.calls[0].metadata) if _TOKEN in str(v)]


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (
            ["--token-file", "{file}", "--token-env", "PKGGOV_TOKEN"],
            "--token-file and --token-env both give the token; use one",
        ),
        (
            ["--as", "alice", "--token-file", "{file}"],
            "--as (a development principal) and --token-file (a token); use one",
        ),
        (
            ["--principal", "alice", "--token-env", "PKGGOV_TOKEN"],
            "--as (a development principal) and --token-env (a token); use one",
        ),
        (
            ["--header", "authorization=Bearer x", "--token-file", "{file}"],
            "--token-file and --header authorization=... both send a token; use one",
        ),
        (["--token-env", "UNSET"], "--token-env UNSET: the variable is not set"),
        (["--token-env", "EMPTY"], "--token-env EMPTY: the variable is empty: expected a token"),
        (
            ["--token-env", "TWO_WORDS"],
            "--token-env TWO_WORDS: the variable does not hold one token: expected printable "
            "ASCII without spaces (the token alone, without a 'Bearer ' prefix)",
        ),
    ],
    ids=["file-and-env", "as", "principal", "header", "unset", "empty", "two-words"],
)
def test_conflicting_or_missing_identities_are_usage_errors(
    fake: FakeGateway,
    target: str,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    extra: list[str],
    complaint: str,
) -> None:
    arguments = [arg.format(file=token_file) for arg in extra]
    environ = {"PKGGOV_TOKEN": _TOKEN, "EMPTY": " \n", "TWO_WORDS": f"Bearer {_TOKEN}"}

    status = main(_delete_args(target, *arguments), environ=environ)

    err = capsys.readouterr().err
    assert (2, []) == (status, fake.calls)
    assert err.endswith(f"pkggov: error: {complaint}\n")
    assert _TOKEN not in err


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read token file {file}: No such file or directory"),
        ("\n\n", "token file {file} is empty: expected a token"),
        (
            f"Bearer {_TOKEN}\n",
            "token file {file} does not hold one token: expected printable ASCII without spaces "
            "(the token alone, without a 'Bearer ' prefix)",
        ),
    ],
    ids=["missing", "empty", "bearer-prefix"],
)
def test_a_token_file_without_a_token_is_a_usage_error_for_every_command(
    fake: FakeGateway,
    target: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    content: str | None,
    complaint: str,
) -> None:
    path = tmp_path / "token.jwt"
    if content is not None:
        path.write_text(content)
    option = ["--token-file", str(path), "--target", target]

    statuses = [
        main(_delete_args(target, "--token-file", str(path)), environ={}),
        main(["pending", "list", *option], environ={}),
        main(["approvals", "list", *option], environ={}),
        main(["audit", "show", *option, "some-event"], environ={}),
        main(_delete_args(target), environ={"PKGGOV_CLI_TOKEN_FILE": str(path)}),
    ]

    err = capsys.readouterr().err
    expected = complaint.format(file=path)
    assert ([2] * 5, [], [], []) == (
        statuses,
        fake.calls,
        fake.pending_calls,
        fake.approval_calls,
    )
    assert [
        f"pkggov delete: error: {expected}",
        f"pkggov pending list: error: {expected}",
        f"pkggov approvals list: error: {expected}",
        f"pkggov audit show: error: {expected}",
        f"pkggov delete: error: {expected}",
    ] == err.splitlines()
    assert _TOKEN not in err


@pytest.mark.parametrize(
    "source",
    [["--token-file", "{file}"], ["--token-env", "PKGGOV_TOKEN"], []],
    ids=["token-file", "token-env", "environment"],
)
def test_a_token_is_not_sent_in_plaintext_to_another_host(
    token_file: Path, capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    arguments = [arg.format(file=token_file) for arg in source]
    environ = {"PKGGOV_TOKEN": _TOKEN, "PKGGOV_CLI_TOKEN_FILE": str(token_file)}

    status = main(_delete_args("pkggov.internal:50051", *arguments), environ=environ)

    err = capsys.readouterr().err
    given = arguments[0] if arguments else "$PKGGOV_CLI_TOKEN_FILE"
    assert 2 == status
    assert err.endswith(
        f"pkggov: error: refusing to send a bearer token ({given}) in plaintext to "
        "pkggov.internal:50051: use TLS (--cacert); plaintext is only for a loopback --target "
        "(development)\n"
    )
    assert _TOKEN not in err


def test_an_authorization_header_is_not_sent_in_plaintext_to_another_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        _delete_args("10.1.2.3:50051", "--header", f"authorization=Bearer {_TOKEN}"), environ={}
    )

    err = capsys.readouterr().err
    assert 2 == status
    assert "refusing to send a bearer token (--header) in plaintext to 10.1.2.3:50051" in err
    assert _TOKEN not in err


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.certs import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_a_token_goes_over_tls(pki: Any, token_file: Path) -> None:
    fake = FakeGateway()
    credentials = grpc.ssl_server_credentials([(pki.server.key_pem, pki.server.cert_pem)])
    with serve(fake, credentials=credentials) as address:
        port = address.rpartition(":")[2]
        status = main(
            _delete_args(
                f"localhost:{port}", "--cacert", str(pki.ca_pem), "--token-file", str(token_file)
            ),
            environ={},
        )

    assert (0, [f"Bearer {_TOKEN}"]) == (status, _authorization(fake.calls[0].metadata))


@pytest.mark.parametrize("json_output", [False, True])
def test_a_refused_token_is_not_printed(
    fake: FakeGateway,
    target: str,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    json_output: bool,
) -> None:
    fake.error = plain_status(grpc.StatusCode.UNAUTHENTICATED, "the token has expired")
    extra = ["--token-file", str(token_file), *(["--json"] if json_output else [])]

    status = main(_delete_args(target, *extra), environ={})

    out, err = capsys.readouterr()
    assert 1 == status
    assert "the token has expired" in out + err
    assert _TOKEN not in out + err


@dataclass
class _RotatingGateway(FakeGateway):
    """Rotates `token_file` (rename over it, as Kubernetes does) after the first listing."""

    token_file: Path | None = None

    def ListDeletionRequests(  # noqa: N802 - the name is fixed by the generated servicer.
        self, request: pb.ListDeletionRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeletionRequestsResponse:
        response = super().ListDeletionRequests(request, context)
        if self.token_file is not None and not request.page_token:
            staged = self.token_file.with_name("token.new")
            staged.write_text(_ROTATED)
            staged.replace(self.token_file)
        return response


def test_a_token_rotated_between_pages_is_picked_up(token_file: Path) -> None:
    fake = _RotatingGateway(token_file=token_file)
    fake.deletion_request_pages[""] = pb.ListDeletionRequestsResponse(next_page_token="p2")
    fake.deletion_request_pages["p2"] = pb.ListDeletionRequestsResponse()
    with serve(fake) as address:
        status = main(
            ["approvals", "list", "--all", "--json", "--target", address],
            environ={"PKGGOV_CLI_TOKEN_FILE": str(token_file)},
        )

    assert 0 == status
    assert [[f"Bearer {_TOKEN}"], [f"Bearer {_ROTATED}"]] == [
        _authorization(call.metadata) for call in fake.approval_calls
    ]


def test_help_documents_the_token_options_and_their_precedence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["delete", "--help"], environ={"PKGGOV_CLI_TOKEN_FILE": "/var/run/token"})

    text = " ".join(capsys.readouterr().out.split())
    assert 0 == status
    for phrase in (
        "workload identity (bearer token):",
        "--token-file FILE",
        "--token-env NAME",
        "sent over TLS (--cacert) only, or in plaintext to a loopback --target",
        "from --token-file or --token-env (not both)",
        "$PKGGOV_CLI_TOKEN_FILE names (now /var/run/token) unless --as or --header "
        "authorization=... is given",
        "refuses --as and --header authorization=...",
        "usage error (exit 2)",
        "read again whenever it changes",
    ):
        assert phrase in text
