"""The real gateway in mTLS mode with the shipped policies: certificates decide who calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator
from pkggov_gateway.bootstrap import build_gateway
from pkggov_gateway.runtime import Gateway
from pkggov_gateway.startup import StartupError
from tests.certs import CertFiles, TestPKI, make_test_pki
from tests.e2e.harness import GatewayFactory, failed_call, gateway_settings, request


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A test CA with good and bad client certificates."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls_gateway(make_gateway: GatewayFactory, pki: TestPKI) -> Iterator[Gateway]:
    """A gateway requiring client certificates, with the shipped example policies."""
    identity = dataclasses.asdict(pki.identity_settings())
    with make_gateway(identity=identity, policy={}) as gateway:
        yield gateway


def _stub(
    gateway: Gateway, pki: TestPKI, client: CertFiles | None
) -> pb_grpc.PackageGovernanceServiceStub:
    channel = grpc.secure_channel(gateway.address, pki.channel_credentials(client))
    return pb_grpc.PackageGovernanceServiceStub(channel)


def test_alice_certificate_is_a_release_admin(
    mtls_gateway: Gateway, pki: TestPKI, emulator: Emulator
) -> None:
    """alice's SPIFFE certificate maps to release-admins: 1.0.0 is deleted."""
    response = _stub(mtls_gateway, pki, pki.alice).DeletePackageVersions(request(), timeout=10)
    assert ["1.0.0"] == list(response.successful_versions)


def test_a_cn_named_like_a_dev_principal_gets_no_group(
    mtls_gateway: Gateway, pki: TestPKI, emulator: Emulator
) -> None:
    """A valid certificate whose CN is "legacy-client" is "cn:legacy-client": no policy permits."""
    error = failed_call(_stub(mtls_gateway, pki, pki.cn_only), request())
    assert (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED") == (error.code, error.reason)
    assert 0 == len(emulator.calls("DeletePackageVersions"))


@pytest.mark.parametrize("which", ["none", "expired", "not_yet_valid", "other_ca"])
def test_bad_certificates_never_reach_the_gateway(
    which: str, mtls_gateway: Gateway, pki: TestPKI, emulator: Emulator
) -> None:
    """No, expired, not-yet-valid and foreign-CA certificates fail the handshake: nothing runs."""
    client = None if which == "none" else getattr(pki, which)
    with pytest.raises(grpc.RpcError) as caught:
        _stub(mtls_gateway, pki, client).DeletePackageVersions(request(), timeout=5)
    assert grpc.StatusCode.UNAVAILABLE == caught.value.code()
    assert [] == emulator.calls()


def test_dev_header_means_nothing_under_mtls(
    mtls_gateway: Gateway, pki: TestPKI, emulator: Emulator
) -> None:
    """A cn-only caller sending x-pkggov-principal: alice is still cn:legacy-client."""
    stub = _stub(mtls_gateway, pki, pki.cn_only)
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeletePackageVersions(
            request(), timeout=10, metadata=(("x-pkggov-principal", "alice"),)
        )
    assert grpc.StatusCode.PERMISSION_DENIED == caught.value.code()


def test_unknown_group_in_limits_refuses_to_start(emulator: Emulator) -> None:
    """policy.max_versions_per_group naming a group the entities do not define: refused."""
    settings = gateway_settings(
        emulator.endpoint_url, policy={"max_versions_per_group": {"cii": 2}}
    )
    with pytest.raises(
        StartupError, match=r"^policy\.max_versions_per_group: .*does not define: cii"
    ):
        build_gateway(settings)


def test_probes_ask_the_health_only_port_without_a_certificate(
    make_gateway: GatewayFactory, pki: TestPKI
) -> None:
    """Under mTLS, a plaintext probe cannot reach health on the main port, but the health-only
    port answers Check for the server and for pkggov.liveness; it offers nothing else (no Watch,
    no pkggov service, no reflection) and closes with the gateway."""
    identity = dataclasses.asdict(pki.identity_settings())
    with make_gateway(identity=identity, server={"health_listen": "127.0.0.1:0"}) as gw:
        assert gw.server.health_address is not None
        with grpc.insecure_channel(gw.address) as main, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(main).Check(health_pb2.HealthCheckRequest(), timeout=2)
        with grpc.insecure_channel(gw.server.health_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "pkggov.liveness", "pkggov.audit"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert health_pb2.HealthCheckResponse.SERVING == reply.status, service
            with pytest.raises(grpc.RpcError) as watch:
                next(health.Watch(health_pb2.HealthCheckRequest(), timeout=5))
            assert grpc.StatusCode.UNIMPLEMENTED == watch.value.code()
            with pytest.raises(grpc.RpcError) as delete:
                pb_grpc.PackageGovernanceServiceStub(channel).DeletePackageVersions(
                    request(), timeout=5
                )
            assert grpc.StatusCode.UNIMPLEMENTED == delete.value.code()
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as listing:
                list(
                    reflect.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                    )
                )
            assert grpc.StatusCode.UNIMPLEMENTED == listing.value.code()
        address = gw.server.health_address
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
