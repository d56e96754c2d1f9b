"""Identity and the shipped example policies through the real gateway and emulator.

Principals (shipped entities.yaml): `alice` and `dave` in release-admins, `ci-bot` in ci, `bob`
in no group.
Demo data: demo/dev-shared npm left-pad 1.0.0-1.3.0 (1.3.0 latest), npm acme/widgets 2.0.0,
2.1.0-beta.1 (Unlisted), 2.1.0; demo/prod-release npm left-pad 1.0.0, 1.3.0 and pypi
requests-lite 0.5.0 (its only version).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator
from pkggov_gateway.adapters.cedar import PolicyLoadError, default_policy_files
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.startup import StartupError
from tests.e2e.harness import (
    GatewayFactory,
    bad_fields,
    failed_call,
    gateway_settings,
    request,
    stub_for,
)

SHIPPED: dict[str, str] = {}  # empty PolicySettings: the shipped example set


def _calls(emulator: Emulator, operation: str | None = None) -> int:
    return len(emulator.calls(operation))


@pytest.fixture
def shipped(make_gateway: GatewayFactory) -> Iterator[Gateway]:
    """A gateway with the shipped example policies, in development identity mode."""
    with make_gateway(policy=SHIPPED) as gateway:
        yield gateway


def _denial(details: Mapping[str, Message]) -> pb.PolicyDenial:
    denial = details["PolicyDenial"]
    assert isinstance(denial, pb.PolicyDenial)
    return denial


def test_no_identity_is_unauthenticated_and_nothing_is_read(
    shipped: Gateway, emulator: Emulator
) -> None:
    """An anonymous call: UNAUTHENTICATED; the emulator sees no call at all."""
    with stub_for(shipped, principal=None) as stub:
        error = failed_call(stub, request())
    assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") == (error.code, error.reason)
    assert 0 == _calls(emulator)


def test_dev_header_is_ignored_outside_development_mode(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A server in trusted-proxy mode ignores the development header: UNAUTHENTICATED."""
    settings = {"mode": "proxy", "trusted_proxies": "192.0.2.10/32"}
    with make_gateway(identity=settings, policy=SHIPPED) as gw, stub_for(gw, "alice") as stub:
        error = failed_call(stub, request())
    assert grpc.StatusCode.UNAUTHENTICATED == error.code
    assert 0 == _calls(emulator)


def test_spoofed_proxy_header_from_untrusted_peer_is_ignored(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """An XFCC header from a peer that is not a trusted proxy does not identify anyone."""
    settings = {"mode": "proxy", "trusted_proxies": "192.0.2.10/32"}
    xfcc = "By=spiffe://pkggov.test/gw;URI=spiffe://pkggov.test/ops/alice"
    with (
        make_gateway(identity=settings, policy=SHIPPED) as gw,
        stub_for(gw, None) as stub,
        pytest.raises(grpc.RpcError) as caught,
    ):
        stub.DeletePackageVersions(
            request(), timeout=10, metadata=(("x-forwarded-client-cert", xfcc),)
        )
    assert grpc.StatusCode.UNAUTHENTICATED == caught.value.code()
    assert 0 == _calls(emulator)


def test_proxy_header_from_trusted_peer_identifies(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """From a trusted proxy (loopback here) the XFCC URI is the principal."""
    settings = {"mode": "proxy", "trusted_proxies": "127.0.0.1/32"}
    xfcc = "By=spiffe://pkggov.test/gw;URI=spiffe://pkggov.test/ops/alice"
    with make_gateway(identity=settings, policy=SHIPPED) as gw, stub_for(gw, None) as stub:
        response = stub.DeletePackageVersions(
            request(), timeout=10, metadata=(("x-forwarded-client-cert", xfcc),)
        )
    assert ["1.0.0"] == list(response.successful_versions)


def test_a_repeated_dev_header_is_unauthenticated(shipped: Gateway, emulator: Emulator) -> None:
    """Two development headers are not the principal "alice, bob": UNAUTHENTICATED."""
    repeated = (("x-pkggov-principal", "alice"), ("x-pkggov-principal", "bob"))
    with stub_for(shipped, None) as stub, pytest.raises(grpc.RpcError) as caught:
        stub.DeletePackageVersions(request(), timeout=10, metadata=repeated)
    assert grpc.StatusCode.UNAUTHENTICATED == caught.value.code()
    assert "repeated" in (caught.value.details() or "")
    assert 0 == _calls(emulator)


def test_a_repeated_proxy_header_is_unauthenticated(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Two XFCC headers from the trusted proxy: something else added one, so neither counts."""
    settings = {"mode": "proxy", "trusted_proxies": "127.0.0.1/32"}
    repeated = (
        ("x-forwarded-client-cert", "By=spiffe://pkggov.test/gw;URI=spiffe://pkggov.test/ops/bob"),
        (
            "x-forwarded-client-cert",
            "By=spiffe://pkggov.test/gw;URI=spiffe://pkggov.test/ops/alice",
        ),
    )
    with (
        make_gateway(identity=settings, policy=SHIPPED) as gw,
        stub_for(gw, None) as stub,
        pytest.raises(grpc.RpcError) as caught,
    ):
        stub.DeletePackageVersions(request(), timeout=10, metadata=repeated)
    assert grpc.StatusCode.UNAUTHENTICATED == caught.value.code()
    assert 0 == _calls(emulator)


def test_principal_in_no_group_is_denied(shipped: Gateway, emulator: Emulator) -> None:
    """bob is in no group: PERMISSION_DENIED, POLICY_DENIED, "no policy permits", no delete."""
    with stub_for(shipped, "bob") as stub:
        error = failed_call(stub, request())
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    [denied] = _denial(error.details).denied_versions
    assert ("1.0.0", [], "denied: no policy permits it") == (
        denied.version,
        list(denied.policy_ids),
        denied.reason,
    )
    assert 0 == _calls(emulator, "DeletePackageVersions")


def test_ci_may_delete_an_unlisted_prerelease_in_dev(shipped: Gateway, emulator: Emulator) -> None:
    """ci-bot deletes widgets 2.1.0-beta.1 (Unlisted pre-release in dev-shared)."""
    with stub_for(shipped, "ci-bot") as stub:
        response = stub.DeletePackageVersions(
            request(namespace="acme", package="widgets", versions=["2.1.0-beta.1"]), timeout=10
        )
    assert ["2.1.0-beta.1"] == list(response.successful_versions)
    [call] = emulator.calls("DeletePackageVersions")
    assert "Unlisted" == call.params["expectedStatus"]  # the status the decision was made on


def test_ci_may_not_delete_a_published_release(shipped: Gateway) -> None:
    """ci-bot may not delete a Published release."""
    with stub_for(shipped, "ci-bot") as stub:
        error = failed_call(stub, request(versions=["1.0.0"]))
    assert "POLICY_DENIED" == error.reason


def test_mixed_request_all_or_nothing(shipped: Gateway, emulator: Emulator) -> None:
    """alice asks for 1.0.0 and the latest 1.3.0: denied whole, 1.3.0 named with its policy."""
    with stub_for(shipped, "alice") as stub:
        error = failed_call(stub, request(versions=["1.0.0", "1.3.0"]))
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    [denied] = _denial(error.details).denied_versions
    assert ("1.3.0", ["never-delete-latest"]) == (denied.version, list(denied.policy_ids))
    assert 0 == _calls(emulator, "DeletePackageVersions")
    assert "Published" == emulator.version_status(
        "demo", "dev-shared", "npm", None, "left-pad", "1.0.0"
    )


def test_mixed_request_partial(shipped: Gateway, emulator: Emulator) -> None:
    """With allow_partial: 1.0.0 deleted, 1.3.0 NOT_ALLOWED naming never-delete-latest."""
    with stub_for(shipped, "alice") as stub:
        response = stub.DeletePackageVersions(
            request(versions=["1.0.0", "1.3.0"], allow_partial=True), timeout=10
        )
    assert ["1.0.0"] == list(response.successful_versions)
    refused = response.failed_versions["1.3.0"]
    assert pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED == refused.error_code
    assert "never-delete-latest" in refused.error_message
    [call] = emulator.calls("DeletePackageVersions")
    assert ["1.0.0"] == call.params["versions"]


def test_prod_needs_a_justification(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """alice in prod-release under a recovery window: denied without a justification,
    archived with one (archiving needs no approval)."""
    prod = request(repository="prod-release", versions=["1.0.0"])
    with (
        make_gateway(policy=SHIPPED, recovery={"windows": {"prod-*": 30.0}}) as gateway,
        stub_for(gateway, "alice") as stub,
    ):
        error = failed_call(stub, prod)
        prod.justification = "CVE-2026-0001: withdrawn build"
        response = stub.DeletePackageVersions(prod, timeout=10)
    [denied] = _denial(error.details).denied_versions
    assert ["prod-needs-release-admin-and-justification"] == list(denied.policy_ids)
    assert ["1.0.0"] == list(response.successful_versions)
    assert pb.PACKAGE_VERSION_STATUS_ARCHIVED == response.successful_versions["1.0.0"].status
    assert 0 == _calls(emulator, "DeletePackageVersions")


def test_deleting_for_good_in_prod_is_not_done_on_one_say(
    shipped: Gateway, emulator: Emulator
) -> None:
    """Where no recovery window applies, a justified delete by a release admin in prod-*
    needs another release admin's approval (prod-irreversible-needs-release-admin-approval):
    the call fails APPROVAL_REQUIRED and deletes nothing (the deletion request it creates is
    tested with the approvals)."""
    prod = request(
        repository="prod-release", versions=["1.0.0"], justification="CVE-2026-0001: withdrawn"
    )
    with stub_for(shipped, "alice") as stub:
        error = failed_call(stub, prod)
    assert (grpc.StatusCode.FAILED_PRECONDITION, "APPROVAL_REQUIRED") == (error.code, error.reason)
    assert "prod-irreversible-needs-release-admin-approval" in error.message
    assert 0 == _calls(emulator, "DeletePackageVersions")


def test_never_delete_the_only_remaining_version(shipped: Gateway) -> None:
    """requests-lite has one version in prod-release: denied even with a justification."""
    only = request(
        repository="prod-release",
        format=pb.PACKAGE_FORMAT_PYPI,
        package="requests-lite",
        versions=["0.5.0"],
        justification="cleanup",
    )
    with stub_for(shipped, "alice") as stub:
        error = failed_call(stub, only)
    [denied] = _denial(error.details).denied_versions
    assert "never-delete-only-remaining-version" in list(denied.policy_ids)


def test_dry_run_plan_equals_the_real_outcome(shipped: Gateway, emulator: Emulator) -> None:
    """A dry run plans each version, deletes nothing; the real call then does exactly that."""
    mixed = request(versions=["1.0.0", "1.3.0", "9.9.9"], allow_partial=True)
    with stub_for(shipped, "alice") as stub:
        mixed.validate_only = True
        plan = stub.DeletePackageVersions(mixed, timeout=10)
        assert 0 == _calls(emulator, "DeletePackageVersions")
        mixed.validate_only = False
        real = stub.DeletePackageVersions(mixed, timeout=10)
    outcomes = {v: d.outcome for v, d in plan.decisions.items()}
    assert {
        "1.0.0": pb.VERSION_OUTCOME_WOULD_DELETE,
        "1.3.0": pb.VERSION_OUTCOME_DENIED,
        "9.9.9": pb.VERSION_OUTCOME_NOT_FOUND,
    } == outcomes
    assert ({}, {}) == (dict(plan.successful_versions), dict(plan.failed_versions))
    assert ["never-delete-latest"] == list(plan.decisions["1.3.0"].policy_ids)
    assert plan.decisions["1.3.0"].is_latest
    would = {v for v, o in outcomes.items() if o == pb.VERSION_OUTCOME_WOULD_DELETE}
    assert would == set(real.successful_versions)
    assert {
        "1.3.0": pb.PACKAGE_VERSION_ERROR_CODE_NOT_ALLOWED,
        "9.9.9": pb.PACKAGE_VERSION_ERROR_CODE_NOT_FOUND,
    } == {v: f.error_code for v, f in real.failed_versions.items()}
    assert 0 == len(real.decisions)


def test_dry_run_fails_when_the_real_call_would(shipped: Gateway, emulator: Emulator) -> None:
    """All-or-nothing dry run with a denied version: PERMISSION_DENIED, like the real call."""
    with stub_for(shipped, "alice") as stub:
        error = failed_call(stub, request(versions=["1.0.0", "1.3.0"], validate_only=True))
    assert "POLICY_DENIED" == error.reason
    assert 0 == _calls(emulator, "DeletePackageVersions")


def test_status_mismatch_is_planned_and_not_sent(shipped: Gateway, emulator: Emulator) -> None:
    """expected_status Archived on a Published version: STATUS_MISMATCH, nothing sent."""
    with stub_for(shipped, "alice") as stub:
        response = stub.DeletePackageVersions(
            request(expected_status=pb.PACKAGE_VERSION_STATUS_ARCHIVED), timeout=10
        )
    assert pb.PACKAGE_VERSION_ERROR_CODE_MISMATCHED_STATUS == (
        response.failed_versions["1.0.0"].error_code
    )
    assert 0 == _calls(emulator, "DeletePackageVersions")


def test_group_version_limit(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """ci may name at most 2 versions per call: 3 is PERMISSION_DENIED with QuotaFailure."""
    with (
        make_gateway(policy={"max_versions_per_group": {"ci": 2}}) as gw,
        stub_for(gw, "ci-bot") as stub,
    ):
        error = failed_call(stub, request(versions=["1.0.0", "1.1.0", "1.2.0"]))
    assert (grpc.StatusCode.PERMISSION_DENIED, "VERSION_LIMIT_EXCEEDED") == (
        error.code,
        error.reason,
    )
    assert 0 == _calls(emulator)


def test_justification_is_bounded(shipped: Gateway) -> None:
    """A justification over 1,024 characters is INVALID_ARGUMENT on `justification`."""
    with stub_for(shipped, "alice") as stub:
        error = failed_call(stub, request(justification="x" * 1025))
    assert ["justification"] == bad_fields(error)


def _health(gateway: Gateway, service: str) -> int:
    with grpc.insecure_channel(gateway.address) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            .status
        )


def test_bad_policy_at_start_refuses_with_file_and_line(tmp_path: Path, emulator: Emulator) -> None:
    """A syntax error in a policy file: build_gateway raises naming the file and line."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    (policies / "zz-broken.cedar").write_text(
        '@id("broken")\npermit(principal,\n  action resource);\n'
    )
    settings = gateway_settings(emulator.endpoint_url, policy={"policies": str(policies)})
    with pytest.raises(StartupError) as caught:
        build_gateway(settings)
    assert "policy.policies" == caught.value.setting
    assert isinstance(caught.value.__cause__, PolicyLoadError)
    assert f"{policies / 'zz-broken.cedar'}:3: " in str(caught.value)


def test_bad_reload_keeps_the_old_policy(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A broken policy at reload: old set stays in force, pkggov.policy NOT_SERVING; a fix heals."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_files().policies, policies)
    with make_gateway(policy={"policies": str(policies)}) as gw:
        broken = policies / "zz-broken.cedar"
        broken.write_text('@id("broken")\nforbid(principal, action, resource) when { nope };\n')
        assert False is gw.reload_policy()
        assert health_pb2.HealthCheckResponse.NOT_SERVING == _health(gw, "pkggov.policy")
        assert health_pb2.HealthCheckResponse.SERVING == _health(gw, "")
        with stub_for(gw, "alice") as stub:
            assert ["1.0.0"] == list(
                stub.DeletePackageVersions(request(), timeout=10).successful_versions
            )
        broken.unlink()
        assert True is gw.reload_policy()
        assert health_pb2.HealthCheckResponse.SERVING == _health(gw, "pkggov.policy")


def test_quota_failure_detail(make_gateway: GatewayFactory) -> None:
    """The version-limit error carries a QuotaFailure naming the groups."""
    with (
        make_gateway(policy={"max_versions_per_group": {"ci": 1}}) as gw,
        stub_for(gw, "ci-bot") as stub,
    ):
        error = failed_call(stub, request(versions=["1.0.0", "1.1.0"]))
    quota = error.details["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert "versions per call for groups: ci" == quota.violations[0].subject
