"""The retention CronJob example agrees with the CLI it runs and with the gateway's Deployment.

deploy/k8s/cleanup-cronjob.yaml against pkggov_client.cli and deploy/k8s/pkggov.yaml.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from pkggov_client._cleanup_cli import EXIT_PARTIAL, EXIT_USAGE
from pkggov_client.cli import build_parser
from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"


@functools.cache
def _docs(name: str) -> tuple[dict[str, Any], ...]:
    docs = tuple(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None)
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def _one(name: str, kind: str) -> dict[str, Any]:
    [found] = [doc for doc in _docs(name) if doc["kind"] == kind]
    return found


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _one("cleanup-cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"][
        "template"
    ]["spec"]
    return pod


def test_runs_never_overlap_and_fail_at_once_on_usage_or_partial_exits() -> None:
    """concurrencyPolicy Forbid; the Job fails without retry on the CLI's exit codes for a usage
    error and for planned deletions not done, and restarts no container itself."""
    cron = _one("cleanup-cronjob.yaml", "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    [fail] = [rule for rule in job["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]

    assert "Forbid" == cron["spec"]["concurrencyPolicy"]
    assert sorted([EXIT_USAGE, EXIT_PARTIAL]) == sorted(fail["onExitCodes"]["values"])
    assert ("cleanup", "Never") == (fail["onExitCodes"]["containerName"], _pod()["restartPolicy"])


def test_the_command_is_a_cleanup_run_with_the_projected_token() -> None:
    """The container's command line parses as `pkggov cleanup run` with a named rule over TLS,
    and --token-file is the projected service-account token of an audience of its own; the
    service account it runs as mounts no other token."""
    [container] = _pod()["containers"]
    args = build_parser({}).parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [token] = [v for v in _pod()["volumes"] if v["name"] == "token"]
    [source] = token["projected"]["sources"]
    account = _one("cleanup-cronjob.yaml", "ServiceAccount")

    assert ["pkggov"] == container["command"]
    assert ("cleanup", "run", "dev-prereleases") == (
        args.command,
        args.cleanup_command,
        args.rule_name,
    )
    assert args.cacert is not None
    assert Path(mounts["token"]) / source["serviceAccountToken"]["path"] == args.token_file
    assert source["serviceAccountToken"]["audience"]
    assert 600 <= source["serviceAccountToken"]["expirationSeconds"] <= 3600
    assert (account["metadata"]["name"], False, False) == (
        _pod()["serviceAccountName"],
        account["automountServiceAccountToken"],
        _pod()["automountServiceAccountToken"],
    )


def test_it_runs_the_gateways_image_as_its_user() -> None:
    """The CronJob runs the gateway's image (which holds the CLI) as the image's non-root user,
    with a read-only root file system."""
    deployment = _one("pkggov.yaml", "Deployment")["spec"]["template"]["spec"]
    [gateway] = deployment["containers"]
    [container] = _pod()["containers"]

    assert gateway["image"] == container["image"]
    assert deployment["securityContext"]["runAsUser"] == _pod()["securityContext"]["runAsUser"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert ["ALL"] == container["securityContext"]["capabilities"]["drop"]
