"""DeletePackageVersions through the real gateway and emulator: results, bad input, faults."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, FaultRule
from pkggov_gateway.config import UpstreamSettings
from pkggov_gateway.runtime import Gateway
from tests.conftest import free_port
from tests.e2e.harness import (
    PRINCIPAL_KEY,
    GatewayFactory,
    bad_fields,
    failed_call,
    request,
    rich_error,
    stub_for,
    wait_for,
)

Stub = pb_grpc.PackageGovernanceServiceStub


def _deletes(emulator: Emulator) -> int:
    return len(emulator.calls("DeletePackageVersions"))


def test_deletes_and_reports_each_version_like_codeartifact(stub: Stub, emulator: Emulator) -> None:
    """One version deleted (revision + DELETED), one missing (NOT_FOUND): OK with both maps."""
    response = stub.DeletePackageVersions(request(versions=["1.0.0", "9.9.9"]), timeout=10)
    assert ["1.0.0"] == list(response.successful_versions)
    deleted = response.successful_versions["1.0.0"]
    assert pb.PACKAGE_VERSION_STATUS_DELETED == deleted.status
    assert deleted.revision
    assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND == response.failed_versions["9.9.9"].error_code
    assert None is emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0")
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.1.0"
    )


def test_expected_status_mismatch_is_a_per_version_failure(stub: Stub, emulator: Emulator) -> None:
    """expected_status ARCHIVED on a Published version: MISMATCHED_STATUS, nothing deleted."""
    response = stub.DeletePackageVersions(
        request(
            format=pb.PACKAGE_FORMAT_PYPI,
            package="requests-lite",
            versions=["0.1.0", "0.2.0"],
            expected_status=pb.PACKAGE_VERSION_STATUS_ARCHIVED,
        ),
        timeout=10,
    )
    assert ["0.2.0"] == list(response.successful_versions)
    failure = response.failed_versions["0.1.0"]
    assert pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS == failure.error_code
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "pypi", None, "requests-lite", "0.1.0"
    )


def test_namespaced_package(stub: Stub) -> None:
    """A Maven package is named by namespace (groupId) and name."""
    response = stub.DeletePackageVersions(
        request(format=pb.PACKAGE_FORMAT_MAVEN, namespace="com.acme", package="core"),
        timeout=10,
    )
    assert ["1.0.0"] == list(response.successful_versions)


def test_duplicates_collapse_before_forwarding(stub: Stub, emulator: Emulator) -> None:
    """The same version three times is sent once."""
    stub.DeletePackageVersions(request(versions=["1.0.0", "1.0.0", "1.1.0", "1.0.0"]), timeout=10)
    [call] = emulator.calls("DeletePackageVersions")
    assert ["1.0.0", "1.1.0"] == call.params["versions"]


def test_more_than_100_versions_are_split_and_merged(stub: Stub, emulator: Emulator) -> None:
    """300 versions: three upstream calls of at most 100, one merged response."""
    versions = [f"1.0.{i}" for i in range(300)]
    response = stub.DeletePackageVersions(
        request(
            domain="sandbox",
            repository="scratch",
            format=pb.PACKAGE_FORMAT_GENERIC,
            namespace="bulk",
            package="artifact",
            versions=versions,
        ),
        timeout=30,
    )
    assert set(versions) == set(response.successful_versions)
    sizes = sorted(len(c.params["versions"]) for c in emulator.calls("DeletePackageVersions"))
    assert [100, 100, 100] == sizes


def test_failed_chunk_after_success_is_skipped_not_hidden(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Chunk 2 of 3 denied upstream after chunk 1 succeeded: OK, chunk 1 deleted, rest SKIPPED."""
    with make_gateway(upstream={"chunk_parallelism": 1}) as gw, stub_for(gw) as stub:
        # The first call passes (a zero-latency rule consumes it), every later one is denied.
        emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="latency", count=1))
        emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="access_denied"))
        response = stub.DeletePackageVersions(
            request(
                domain="sandbox",
                repository="scratch",
                format=pb.PACKAGE_FORMAT_GENERIC,
                namespace="bulk",
                package="artifact",
                versions=[f"1.0.{i}" for i in range(250)],
            ),
            timeout=30,
        )
    assert 100 == len(response.successful_versions)
    skipped = response.failed_versions["1.0.150"]
    assert pb.PACKAGE_VERSION_ERROR_CODE_SKIPPED == skipped.error_code
    assert skipped.error_message.startswith("not deleted: chunk 2 of 3 failed")
    last = response.failed_versions["1.0.249"].error_message
    assert last.startswith("not attempted: an earlier chunk failed")


# --- bad input: INVALID_ARGUMENT naming every bad field, nothing forwarded -------------------

BAD_REQUESTS = {
    "missing everything": (
        pb.DeletePackageVersionsRequest(),
        ["domain", "repository", "package", "format", "versions"],
    ),
    "invalid names": (
        request(domain="Demo_1", repository="-x", package="a/b", versions=["1 0"]),
        ["domain", "repository", "package", "versions[0]"],
    ),
    "bad domain owner": (request(domain_owner="12ab"), ["domain_owner"]),
    "namespace forbidden for pypi": (
        request(format=pb.PACKAGE_FORMAT_PYPI, namespace="acme", package="requests-lite"),
        ["namespace"],
    ),
    "namespace required for maven": (
        request(format=pb.PACKAGE_FORMAT_MAVEN, package="core"),
        ["namespace"],
    ),
    "unknown format number": (request(format=99), ["format"]),
    "unknown status number": (request(expected_status=42), ["expected_status"]),
    "too many versions": (request(versions=[f"1.{i}" for i in range(1001)]), ["versions"]),
    "empty version": (request(versions=["1.0.0", ""]), ["versions[1]"]),
    "version too long": (request(versions=["v" * 256]), ["versions[0]"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_with_every_field_named(
    case: str, stub: Stub, emulator: Emulator
) -> None:
    """INVALID_ARGUMENT with reason INVALID_REQUEST and a BadRequest naming each bad field."""
    bad, fields = BAD_REQUESTS[case]
    error = failed_call(stub, bad, 10)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "pkggov.internal") == (
        error.code,
        error.reason,
        error.domain,
    )
    assert fields == bad_fields(error)
    assert 0 == _deletes(emulator)


def test_message_over_the_receive_limit_is_refused(stub: Stub, emulator: Emulator) -> None:
    """A request larger than the largest valid one: RESOURCE_EXHAUSTED, server unharmed."""
    huge = request(versions=["v" * 255] * 5000)  # about 1.3 MB, over the ~1 MB limit
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeletePackageVersions(huge, timeout=10)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED == caught.value.code()
    assert 0 == _deletes(emulator)
    assert ["1.0.0"] == list(stub.DeletePackageVersions(request(), timeout=10).successful_versions)


def test_largest_valid_request_is_accepted(stub: Stub) -> None:
    """1,000 versions of 255 four-byte characters fit under the receive limit (all NOT_FOUND)."""
    versions = [f"{i:04d}" + "\U0001d518" * 251 for i in range(1000)]
    response = stub.DeletePackageVersions(request(versions=versions), timeout=60)
    assert 1000 == len(response.failed_versions)


# --- upstream errors and faults -----------------------------------------------------------


def test_missing_domain_is_not_found_with_resource_info(stub: Stub) -> None:
    """ResourceNotFoundException -> NOT_FOUND with ResourceInfo and the AWS request id."""
    error = failed_call(stub, request(domain="nope"), 10)
    assert (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND") == (error.code, error.reason)
    info = error.details["ResourceInfo"]
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert ("domain", "nope") == (info.resource_type, info.resource_name)
    assert error.metadata["aws_request_id"]
    assert "ResourceNotFoundException" == error.metadata["aws_error_code"]


def test_missing_package_is_not_found(stub: Stub) -> None:
    """A package that does not exist is NOT_FOUND with resource type package."""
    info = failed_call(stub, request(package="no-such-package")).details["ResourceInfo"]
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert "package" == info.resource_type


def test_upstream_access_denied(stub: Stub, emulator: Emulator) -> None:
    """The gateway's own AWS identity denied: PERMISSION_DENIED, UPSTREAM_ACCESS_DENIED."""
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="access_denied"))
    error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.PERMISSION_DENIED, "UPSTREAM_ACCESS_DENIED") == (
        error.code,
        error.reason,
    )
    assert error.metadata["aws_request_id"]


def test_transient_throttling_is_retried(stub: Stub, emulator: Emulator) -> None:
    """One 429 then success: the caller sees OK; the emulator saw two calls."""
    emulator.add_fault(
        FaultRule(
            operation="DeletePackageVersions", kind="throttle", count=1, retry_after_seconds=0
        )
    )
    response = stub.DeletePackageVersions(request(), timeout=10)
    assert ["1.0.0"] == list(response.successful_versions)
    assert 2 == _deletes(emulator)


def test_persistent_throttling_is_resource_exhausted_with_retry_info(
    stub: Stub, emulator: Emulator
) -> None:
    """Always 429: bounded retries (3 attempts), then RESOURCE_EXHAUSTED with RetryInfo."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="throttle", retry_after_seconds=0)
    )
    error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_THROTTLED") == (error.code, error.reason)
    assert "RetryInfo" in error.details
    assert 3 == _deletes(emulator)


def test_retry_after_longer_than_the_deadline_is_not_waited_for(
    stub: Stub, emulator: Emulator
) -> None:
    """Retry-After 30 s with a 2 s deadline: RESOURCE_EXHAUSTED at once, RetryInfo says 30 s."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="throttle", retry_after_seconds=30)
    )
    started = time.monotonic()
    error = failed_call(stub, request(), 2)
    retry = error.details["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, 30) == (error.code, retry.retry_delay.seconds)
    assert 1 == _deletes(emulator)
    assert time.monotonic() - started < 2


def test_persistent_500_is_unavailable(stub: Stub, emulator: Emulator) -> None:
    """Always 500: bounded retries, then UNAVAILABLE with UPSTREAM_INTERNAL_ERROR."""
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="internal"))
    error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_INTERNAL_ERROR") == (error.code, error.reason)
    assert 3 == _deletes(emulator)


def test_transient_500_is_retried(stub: Stub, emulator: Emulator) -> None:
    """One 500 then success: OK."""
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="internal", count=1))
    assert ["1.0.0"] == list(stub.DeletePackageVersions(request(), timeout=10).successful_versions)


def test_dropped_connection_is_unavailable_with_unknown_outcome(
    stub: Stub, emulator: Emulator
) -> None:
    """Every attempt's connection closes after the delete applied: the lost answers are retried
    (max_attempts in all), then UNAVAILABLE with the outcome unknown."""
    emulator.add_fault(FaultRule(operation="DeletePackageVersions", kind="drop_after_apply"))
    error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE") == (error.code, error.reason)
    assert "outcome is unknown" in error.message
    assert UpstreamSettings().max_attempts == _deletes(emulator)
    assert emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0") is None


def test_upstream_down_is_unavailable(make_gateway: GatewayFactory) -> None:
    """Nothing listens at the endpoint: UNAVAILABLE with UPSTREAM_UNAVAILABLE."""
    with make_gateway(f"http://127.0.0.1:{free_port()}") as gw, stub_for(gw) as stub:
        error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE") == (error.code, error.reason)


def test_slow_upstream_is_deadline_exceeded_with_unknown_outcome(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """The upstream answers after the caller's deadline: DEADLINE_EXCEEDED, UPSTREAM_TIMEOUT."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=5.0)
    )
    with make_gateway(upstream={"deadline_margin_seconds": 0.5}) as gw, stub_for(gw) as stub:
        started = time.monotonic()
        error = failed_call(stub, request(), 2)
        elapsed = time.monotonic() - started
    assert (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT") == (error.code, error.reason)
    assert "outcome is unknown" in error.message
    assert elapsed < 2
    # The delete was in flight: it lands after the caller gave up, which is why it is "unknown".
    waited = time.monotonic()
    while not _deletes(emulator) and time.monotonic() - waited < 10:
        time.sleep(0.1)
    assert None is emulator.version_status("demo", "dev-shared", "npm", None, "left-pad", "1.0.0")


def test_deadline_too_short_fails_before_calling_upstream(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Less time left than min_call_seconds: DEADLINE_EXCEEDED, DEADLINE_TOO_SHORT, no call."""
    with make_gateway(upstream={"min_call_seconds": 5.0}) as gw, stub_for(gw) as stub:
        error = failed_call(stub, request(), 2)
    assert (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT") == (error.code, error.reason)
    assert 0 == _deletes(emulator)


def test_bad_gateway_credentials_are_internal(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """The gateway's AWS secret is wrong: INTERNAL, GATEWAY_CREDENTIALS, operator message."""
    with make_gateway(upstream={"secret_access_key": "wrong"}) as gw, stub_for(gw) as stub:
        error = failed_call(stub, request(), 10)
    assert (grpc.StatusCode.INTERNAL, "GATEWAY_CREDENTIALS") == (error.code, error.reason)
    assert "operator" in error.message
    assert None is not emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_request_id_is_echoed(stub: Stub) -> None:
    """The caller's x-request-id comes back as initial metadata."""
    _, call = stub.DeletePackageVersions.with_call(
        request(versions=["9.9.9"]), timeout=10, metadata=(("x-request-id", "abc-123"),)
    )
    assert ("x-request-id", "abc-123") in tuple(call.initial_metadata())


def test_server_survives_garbage_bytes(gateway: Gateway, stub: Stub) -> None:
    """Raw garbage on the gRPC port does not crash the server."""
    host, _, port = gateway.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x00garbage\r\n\r\n" * 100)
    assert ["1.0.0"] == list(stub.DeletePackageVersions(request(), timeout=10).successful_versions)


def test_a_thousand_invalid_versions_still_get_rich_details(stub: Stub, emulator: Emulator) -> None:
    """1,000 bad versions: INVALID_ARGUMENT with ErrorInfo and a BadRequest capped at 21 rows."""
    error = failed_call(stub, request(versions=[f"bad version {i}" for i in range(1000)]))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST") == (error.code, error.reason)
    fields = bad_fields(error)
    assert 21 == len(fields)
    assert ["versions[0]", "versions[19]", "versions"] == [fields[0], fields[19], fields[20]]
    bad = error.details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert "and 980 more violation(s) of the same rules" == bad.field_violations[20].description
    assert 0 == _deletes(emulator)


def test_malformed_bytes_are_invalid_argument(gateway: Gateway, emulator: Emulator) -> None:
    """Bytes that are not a request message: INVALID_ARGUMENT, MALFORMED_REQUEST, not INTERNAL."""
    with grpc.insecure_channel(gateway.address) as channel:
        raw = channel.unary_unary(
            "/pkggov.v1.PackageGovernanceService/DeletePackageVersions",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10, metadata=((PRINCIPAL_KEY, "alice"),))
    error = rich_error(caught.value)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST") == (error.code, error.reason)
    assert 0 == _deletes(emulator)


def test_shutdown_lets_the_chunk_in_flight_finish_and_starts_no_other(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Stop during chunk 1 of 3: the caller gets OK, chunk 1 deleted, chunks 2-3 SKIPPED."""
    emulator.add_fault(
        FaultRule(operation="DeletePackageVersions", kind="latency", latency_seconds=1.0)
    )
    outcome: dict[str, object] = {}
    with (
        make_gateway(
            server={"grace_seconds": 4.0},
            upstream={"chunk_parallelism": 1, "read_timeout_seconds": 3.0},
        ) as gw,
        stub_for(gw) as stub,
    ):

        def call() -> None:
            outcome["response"] = stub.DeletePackageVersions(
                request(
                    domain="sandbox",
                    repository="scratch",
                    format=pb.PACKAGE_FORMAT_GENERIC,
                    namespace="bulk",
                    package="artifact",
                    versions=[f"1.0.{i}" for i in range(250)],
                ),
                timeout=30,
            )

        worker = threading.Thread(target=call)
        worker.start()
        # The intent is committed just before chunk 1 is sent; it then waits 1 s upstream.
        assert wait_for(lambda: len(gw.audit_store.open_intents()) == 1)
        time.sleep(0.3)
        started = time.monotonic()
        gw.stop()
        stopped_in = time.monotonic() - started
        worker.join(timeout=10)
    response = outcome["response"]
    assert isinstance(response, pb.DeletePackageVersionsResponse)
    assert 100 == len(response.successful_versions)
    skipped = response.failed_versions["1.0.249"]
    assert (
        pb.PACKAGE_VERSION_ERROR_CODE_SKIPPED,
        "not attempted: the gateway is shutting down, so chunk 3 of 3 was not sent",
    ) == (skipped.error_code, skipped.error_message)
    assert 1 == _deletes(emulator)
    assert stopped_in < 4.0
