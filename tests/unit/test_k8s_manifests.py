"""The Kubernetes example (deploy/k8s/pkggov.yaml) agrees with the gateway's code.

The settings are loaded the way the pod loads them: the file the container gets at its
``--config`` path (from the ConfigMap), with the Deployment's environment applied on top.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pkggov_gateway.adapters.cedar import CedarPolicyEngine
from pkggov_gateway.adapters.sql import SqlAuditStore
from pkggov_gateway.api.server import (
    AUDIT_HEALTH_NAME,
    AUDIT_SERVICE_NAME,
    LIVENESS_HEALTH_NAME,
    POLICY_HEALTH_NAME,
    SERVICE_NAME,
)
from pkggov_gateway.bootstrap import policy_files
from pkggov_gateway.config import ConfigError, Settings, load_settings
from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
MANIFEST = K8S / "pkggov.yaml"
NAMESPACE = "pkggov"

RSS_GOAL_BYTES = 150 * 1000 * 1000


# --- reading the manifests -------------------------------------------------------------------


@functools.cache
def _docs() -> tuple[dict[str, Any], ...]:
    """The manifest's documents, parsed once (no test changes them)."""
    docs = tuple(doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None)
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in _docs()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert 1 == len(found), f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _all(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _docs() if doc["kind"] == kind]


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    containers = _pod()["containers"]
    assert 1 == len(containers)
    container: dict[str, Any] = containers[0]
    return container


def _container_port(name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    return int(ports[name])


def _files_in_container() -> dict[str, str | None]:
    """Every file the volume mounts put in the container: path -> content (None for Secret
    files, whose content is not in the manifests)."""
    volumes = {volume["name"]: volume for volume in _pod()["volumes"]}
    files: dict[str, str | None] = {}
    for mount in _container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        if "configMap" in volume:
            data = _one("ConfigMap", volume["configMap"]["name"])["data"]
            if "subPath" in mount:
                files[target] = data[mount["subPath"]]
            else:
                files.update({f"{target}/{key}": text for key, text in data.items()})
        else:
            for source in volume["projected"]["sources"]:
                for item in source["secret"]["items"]:
                    files[f"{target}/{item['path']}"] = None
    return files


def _config_path() -> str:
    args = _container()["args"]
    return str(args[args.index("--config") + 1])


def _config_text() -> str:
    text = _files_in_container()[_config_path()]
    assert text is not None
    return text


def _environment() -> dict[str, str]:
    """The container's literal environment; values from Secrets must not be settings."""
    env: dict[str, str] = {}
    for variable in _container()["env"]:
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:
            assert not variable["name"].startswith("PKGGOV_"), variable["name"]
    return env


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "M": 1000**2, "G": 1000**3}
    match = re.fullmatch(r"(\d+)([KMG]i?)", quantity)
    assert match is not None, quantity
    return int(match.group(1)) * units[match.group(2)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The settings the gateway in the pod starts with."""
    path = tmp_path / "pkggov.toml"
    path.write_text(_config_text())
    return load_settings(path, _environment())


# --- tests -----------------------------------------------------------------------------------


def test_every_document_is_a_named_object_in_the_namespace() -> None:
    """Each YAML document is a Kubernetes object; all but the Namespace live in it."""
    docs = _docs()
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service"} <= {
        doc["kind"] for doc in docs
    }
    for doc in docs:
        assert doc["apiVersion"], doc
        assert doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert NAMESPACE == doc["metadata"]["namespace"], doc["metadata"]["name"]
    assert NAMESPACE == _one("Namespace")["metadata"]["name"]


def test_config_is_a_production_fleet(settings: Settings) -> None:
    """mTLS identity, a shared PostgreSQL store without a password in the URL (libpq reads
    PGPASSWORD from the Secret), one audit name per pod, no emulator."""
    assert "mtls" == settings.identity.mode
    assert settings.audit.store.startswith("postgresql://")
    assert urlsplit(settings.audit.store).password is None
    passwords = [v for v in _container()["env"] if v["name"] == "PGPASSWORD"]
    assert ["secretKeyRef"] == [next(iter(v["valueFrom"])) for v in passwords]
    assert "" == settings.audit.replica  # the host name: the pod's name
    assert not settings.emulator.enabled


def test_upstream_replicas_equals_the_deployment_replicas(settings: Settings) -> None:
    """Each pod takes 1/upstream.replicas of the fleet's CodeArtifact budget, so it must be
    the replica count, and a rollout must not surge above it."""
    deployment = _one("Deployment")["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["replicas"] == settings.upstream.replicas
    assert 0 == deployment["strategy"]["rollingUpdate"]["maxSurge"]


def test_ports_agree(settings: Settings) -> None:
    """The config's ports are the container's, the Services' and the scrape annotation's;
    listeners bind all interfaces so the Services, kubelet and Prometheus reach them."""
    grpc_port = _port(settings.server.listen)
    assert grpc_port == _container_port("tls-grpc")
    for service in _all("Service"):
        for port in service["spec"]["ports"]:
            assert grpc_port == port["port"]
            assert grpc_port == _container_port(port["targetPort"])
    metrics_port = _port(settings.metrics.listen)
    assert metrics_port == _container_port("metrics")
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert str(metrics_port) == annotations["prometheus.io/port"]
    assert "/metrics" == annotations["prometheus.io/path"]
    for listen in (settings.server.listen, settings.metrics.listen):
        assert listen.startswith("0.0.0.0:")


def test_probes_use_the_health_port_and_the_right_names() -> None:
    """Every probe asks grpc.health.v1 on the health-only port. Readiness asks "" (not
    serving while the audit store is down or the pod is stopping); liveness and start-up ask
    a name that follows neither the audit store nor policy reloads, since a restart cures
    neither."""
    health_listen = tomllib.loads(_config_text())["server"]["health_listen"]
    assert health_listen.startswith("0.0.0.0:")  # the kubelet dials the pod's IP
    health_port = _port(health_listen)
    assert health_port == _container_port("grpc-health")
    container = _container()
    probes = {kind: container[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    assert all(health_port == probe["grpc"]["port"] for probe in probes.values())
    assert "" == probes["readiness"]["grpc"]["service"]
    follows_state = {"", SERVICE_NAME, AUDIT_SERVICE_NAME, AUDIT_HEALTH_NAME, POLICY_HEALTH_NAME}
    for kind in ("startup", "liveness"):
        assert probes[kind]["grpc"]["service"] not in follows_state
        assert LIVENESS_HEALTH_NAME == probes[kind]["grpc"]["service"]


def test_mounted_files_are_the_configured_paths(settings: Settings) -> None:
    """The config, TLS and policy paths in the config are files the mounts provide."""
    files = _files_in_container()
    assert _config_path() in files
    identity = settings.identity
    for path in (identity.server_cert, identity.server_key, identity.client_ca):
        assert path in files, path
    assert settings.policy.entities in files
    cedar = [path for path in files if path.startswith(f"{settings.policy.policies}/")]
    assert any(path.endswith(".cedar") for path in cedar)
    assert all(mount.get("readOnly") for mount in _container()["volumeMounts"])
    tls = next(volume for volume in _pod()["volumes"] if volume["name"] == "tls")
    names = [source["secret"]["name"] for source in tls["projected"]["sources"]]
    assert "pkggov-tls" in names


def test_policy_configmap_loads(settings: Settings, tmp_path: Path) -> None:
    """The policy ConfigMap, laid out as the pod sees it, is a valid policy set with the
    shipped schema, and defines every group the config gives limits to (the gateway refuses
    to start otherwise)."""
    files = _files_in_container()
    policies = tmp_path / "policy"
    policies.mkdir()
    prefix = f"{settings.policy.policies}/"
    for path, text in files.items():
        if path.startswith(prefix):
            assert text is not None
            (policies / path.removeprefix(prefix)).write_text(text)
    local = dataclasses.replace(
        settings.policy,
        policies=str(policies),
        entities=str(policies / settings.policy.entities.removeprefix(prefix)),
    )
    assert "" == settings.policy.schema  # the schema that ships with the gateway
    engine = CedarPolicyEngine(policy_files(local))
    groups = set(engine.known_groups())
    assert set(settings.policy.max_versions_per_group) <= groups
    assert set(settings.quota.max_versions_per_group) <= groups


def test_termination_grace_covers_the_drain(settings: Settings) -> None:
    """The kubelet's grace period (which includes preStop) outlasts preStop, the gateway's
    drain and the audit store's final flush, so no call is cut off by SIGKILL."""
    pod = _pod()
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert "/bin/sleep" == command[0]
    pre_stop = float(command[1])
    flush = inspect.signature(SqlAuditStore.close).parameters["timeout"].default
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.server.grace_seconds + flush


def test_pod_runs_locked_down() -> None:
    """Non-root as the image's user, read-only root, no privileges, no service links."""
    pod, container = _pod(), _container()
    user = re.search(r"(?m)^USER (\d+)", (REPO / "Dockerfile").read_text())
    assert user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert int(user.group(1)) == pod["securityContext"]["runAsUser"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert ["ALL"] == container["securityContext"]["capabilities"]["drop"]
    assert pod["automountServiceAccountToken"] is False


def test_service_links_are_off() -> None:
    """With service links the kubelet would set PKGGOV_SERVICE_HOST (for the Service named
    pkggov), which the gateway refuses as an unknown setting."""
    assert _pod()["enableServiceLinks"] is False
    assert any(s["metadata"]["name"] == "pkggov" for s in _all("Service"))
    with pytest.raises(ConfigError, match="PKGGOV_SERVICE_HOST"):
        load_settings(None, {"PKGGOV_SERVICE_HOST": "10.0.0.1"})


def test_aws_credentials_come_from_irsa(settings: Settings) -> None:
    """The pod's ServiceAccount names an IAM role; no keys in the config or environment."""
    account = _one("ServiceAccount")
    assert account["metadata"]["name"] == _pod()["serviceAccountName"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert "" == settings.upstream.access_key_id == settings.upstream.secret_access_key
    assert not any(v["name"].startswith("AWS_") for v in _container()["env"])


def test_selectors_match_the_pods() -> None:
    """The Deployment, Services and PodDisruptionBudget select the pods' labels, and the
    budget leaves a pod serving."""
    deployment = _one("Deployment")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    for service in _all("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    budget = _one("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] < deployment["replicas"]
    spread = _pod()["topologySpreadConstraints"]
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)


def test_resources_fit_the_memory_goal() -> None:
    """Requests and limits are set, and the memory limit leaves room above the RSS goal."""
    resources = _container()["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    limit = _memory_bytes(resources["limits"]["memory"])
    assert _memory_bytes(resources["requests"]["memory"]) <= limit
    assert limit > RSS_GOAL_BYTES


def test_readme_section_creates_the_referenced_secrets() -> None:
    """The README text fits its 40 lines and creates every Secret the pod uses."""
    lines = (K8S / "README.md").read_text().splitlines()
    assert len(lines) <= 40
    pod = _pod()
    secrets = {
        v["valueFrom"]["secretKeyRef"]["name"] for v in _container()["env"] if "valueFrom" in v
    }
    for volume in pod["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            secrets.add(source["secret"]["name"])
    created = {
        match.group(1)
        for line in lines
        if (match := re.search(rf"kubectl -n {NAMESPACE} create secret \S+ (\S+)", line))
    }
    assert secrets == created
    assert any(f"kubectl apply -f {MANIFEST.relative_to(REPO)}" in line for line in lines)
