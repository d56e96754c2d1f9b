"""translate(): every botocore exception and AWS error code becomes the right domain error."""

from __future__ import annotations

import string
from typing import Any

import pytest
from botocore import exceptions as bce

from pkggov_gateway.adapters import codeartifact_errors
from pkggov_gateway.adapters.codeartifact_errors import (
    _CREDENTIAL_ERROR_CODES,
    _TRANSIENT_SERVER_CODES,
    TRANSPORT_ERROR_TABLE,
    translate,
)
from pkggov_gateway.domain.errors import (
    GatewayCredentialsError,
    UpstreamError,
    UpstreamInternalError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamUnknownError,
    UpstreamValidationError,
)

ENDPOINT = "http://codeartifact.invalid:4566/"
FMT_VALUES = {
    "endpoint_url": ENDPOINT,
    "proxy_url": "http://proxy.invalid:3128/",
    "error": f"HTTPConnectionPool(host='codeartifact.invalid'): Max retries for url {ENDPOINT}",
    "report": "Invalid type for parameter versions, value: 1, type: <class 'int'>",
    "provider": "container-role",
    "cred_var": "aws_secret_access_key",
    "error_msg": "Received non 200 response from http://169.254.170.2/v2/credentials",
}
"""A value for every field botocore's exception messages (`fmt`) use, URLs included."""

EXPECTED: dict[type[Exception], tuple[type[UpstreamError], bool]] = {
    bce.ReadTimeoutError: (UpstreamTimeoutError, True),
    bce.ConnectTimeoutError: (UpstreamUnavailableError, False),
    bce.EndpointConnectionError: (UpstreamUnavailableError, False),
    bce.ConnectionClosedError: (UpstreamUnavailableError, True),
    bce.SSLError: (UpstreamUnavailableError, True),
    bce.ConnectionError: (UpstreamUnavailableError, False),
    bce.HTTPClientError: (UpstreamUnavailableError, True),
    bce.NoCredentialsError: (GatewayCredentialsError, False),
    bce.PartialCredentialsError: (GatewayCredentialsError, False),
    bce.CredentialRetrievalError: (GatewayCredentialsError, False),
    bce.ParamValidationError: (UpstreamValidationError, False),
    bce.BotoCoreError: (UpstreamUnknownError, False),
}
"""botocore class -> (domain class, outcome_unknown): what each table row must produce."""

TABLE_CLASSES = list(TRANSPORT_ERROR_TABLE)


def botocore_error(exc_type: type[Exception]) -> Exception:
    """An instance of a botocore exception, built with the kwargs its `fmt` needs."""
    fmt: str = getattr(exc_type, "fmt", "")
    needed = {name for _, name, _, _ in string.Formatter().parse(fmt) if name}
    return exc_type(**{name: FMT_VALUES[name] for name in needed})


def client_error(code: str, message: str = "it went wrong", **extra: Any) -> bce.ClientError:
    """A ClientError as botocore parses a CodeArtifact error answer."""
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 400, "HTTPHeaders": {}},
        **extra,
    }
    return bce.ClientError(response, "DeletePackageVersions")


def test_every_table_row_has_an_expectation() -> None:
    """The expectations below cover exactly the rows of TRANSPORT_ERROR_TABLE."""
    assert set(EXPECTED) == set(TABLE_CLASSES)
    assert len(TABLE_CLASSES) == len(set(TABLE_CLASSES))


@pytest.mark.parametrize("exc_type", TABLE_CLASSES, ids=lambda t: t.__name__)
def test_transport_error_maps_to_domain_error(exc_type: type[Exception]) -> None:
    """Each botocore exception of the table becomes its domain error and outcome_unknown."""
    expected_type, expected_unknown = EXPECTED[exc_type]

    error = translate(botocore_error(exc_type))

    assert expected_type is type(error)
    assert expected_unknown is error.outcome_unknown


@pytest.mark.parametrize("exc_type", TABLE_CLASSES, ids=lambda t: t.__name__)
def test_transport_error_message_does_not_quote_the_endpoint(exc_type: type[Exception]) -> None:
    """Caller-facing messages never contain a URL, though the botocore messages do."""
    error = translate(botocore_error(exc_type))

    assert "http://" not in str(error)
    assert "codeartifact.invalid" not in error.message


def test_the_most_specific_row_wins_whatever_the_order_of_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the rows reversed (every base before its subclasses), each class still gets its
    own row: the lookup walks the exception's MRO, it does not take the first isinstance."""
    reversed_table = dict(reversed(TRANSPORT_ERROR_TABLE.items()))
    order = list(reversed_table)
    assert order.index(bce.HTTPClientError) < order.index(bce.ReadTimeoutError)
    monkeypatch.setattr(codeartifact_errors, "TRANSPORT_ERROR_TABLE", reversed_table)

    errors = {exc_type: translate(botocore_error(exc_type)) for exc_type in EXPECTED}

    assert EXPECTED == {t: (type(e), e.outcome_unknown) for t, e in errors.items()}


def test_read_timeout_is_a_timeout_although_it_is_an_http_client_error() -> None:
    """ReadTimeoutError subclasses HTTPClientError yet maps to UpstreamTimeoutError."""
    assert issubclass(bce.ReadTimeoutError, bce.HTTPClientError)

    error = translate(bce.ReadTimeoutError(endpoint_url=ENDPOINT))

    assert UpstreamTimeoutError is type(error)
    assert error.outcome_unknown is True


def test_connect_timeout_is_unavailable_and_not_outcome_unknown() -> None:
    """A ConnectTimeoutError never reached CodeArtifact: unavailable, safe to retry."""
    error = translate(bce.ConnectTimeoutError(endpoint_url=ENDPOINT))

    assert UpstreamUnavailableError is type(error)
    assert error.outcome_unknown is False


@pytest.mark.parametrize(
    ("exc_type", "expected_unknown"),
    [
        pytest.param(bce.ProxyConnectionError, False, id="ProxyConnectionError"),  # a connect
        pytest.param(bce.ResponseStreamingError, True, id="ResponseStreamingError"),  # a read
    ],
)
def test_subclass_outside_the_table_takes_its_base_row(
    exc_type: type[Exception], expected_unknown: bool
) -> None:
    """A transport subclass not listed falls to its base's row (here: unavailable)."""
    error = translate(botocore_error(exc_type))

    assert UpstreamUnavailableError is type(error)
    assert expected_unknown is error.outcome_unknown
    assert "http://" not in str(error)


def test_non_botocore_exception_is_unknown() -> None:
    """An exception botocore did not raise becomes UpstreamUnknownError named by its type."""
    error = translate(RuntimeError(f"socket to {ENDPOINT} exploded"))

    assert UpstreamUnknownError is type(error)
    assert "RuntimeError" == error.aws_error_code
    assert "http://" not in str(error)


@pytest.mark.parametrize("code", _CREDENTIAL_ERROR_CODES)
def test_credential_error_code_is_the_gateways_fault(code: str) -> None:
    """Every AWS answer to bad, unknown or expired credentials is GatewayCredentialsError."""
    error = translate(client_error(code, "The security token included in the request is invalid."))

    assert GatewayCredentialsError is type(error)
    assert code == error.aws_error_code
    assert "req-1" == error.aws_request_id


def test_unknown_aws_error_code_is_unknown_with_the_code() -> None:
    """A ClientError with a code the gateway does not know keeps the code and request id."""
    error = translate(client_error("ServiceQuotaExceededException", "too many"))

    assert UpstreamUnknownError is type(error)
    assert "ServiceQuotaExceededException" == error.aws_error_code
    assert "req-1" == error.aws_request_id
    assert "ServiceQuotaExceededException" in error.message


@pytest.mark.parametrize("code", _TRANSIENT_SERVER_CODES)
def test_bare_server_failure_is_a_retryable_internal_error(code: str) -> None:
    """A 5xx without a modeled shape (e.g. a load balancer page) is handled like a 500."""
    assert isinstance(translate(client_error(code)), UpstreamInternalError)
