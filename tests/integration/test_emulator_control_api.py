"""The unsigned /_emulator/ control API drives faults, the call log, resets and state peeks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pkggov_emulator import Emulator

LEFT_PAD = {"domain": "demo", "repository": "dev-shared", "format": "npm", "package": "left-pad"}


@pytest.fixture
def control(raw_request: Callable[..., Any]) -> Callable[..., Any]:
    def send(method: str, route: str, document: Any = None, **kwargs: Any) -> Any:
        body = b"" if document is None else json.dumps(document).encode()
        return raw_request(method, f"/_emulator/{route}", body=body, sign_with=None, **kwargs)

    return send


def test_health(control: Callable[..., Any]) -> None:
    response = control("GET", "health")
    assert (200, {"status": "ok"}) == (response.status, response.json())
    assert response.headers["x-amzn-requestid"]


def test_add_list_and_clear_faults(
    control: Callable[..., Any], codeartifact: Any, emulator: Emulator
) -> None:
    rule = {"operation": "DeletePackageVersions", "kind": "throttle", "count": 1}
    added = control("POST", "faults", rule)
    with pytest.raises(ClientError) as caught:
        codeartifact.delete_package_versions(**LEFT_PAD, versions=["1.0.0"])
    control("POST", "faults", {"faults": [{"kind": "internal"}, {"kind": "drop", "rate": 0.5}]})
    listed = control("GET", "faults").json()["faults"]
    cleared = control("DELETE", "faults").json()
    assert 200 == added.status
    assert "ThrottlingException" == caught.value.response["Error"]["Code"]
    assert [("*", "internal", None), ("*", "drop", 0.5)] == [
        (r["operation"], r["kind"], r["rate"]) for r in listed
    ]
    assert {"faults": []} == cleared
    assert [] == emulator.faults()


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "explode"},
        {"kind": "drop", "count": 0},
        {"kind": "drop", "colour": "red"},
        {"operation": "NoSuchOperation", "kind": "drop"},
        ["not", "an", "object"],
    ],
)
def test_bad_fault_rules_are_refused(control: Callable[..., Any], document: Any) -> None:
    response = control("POST", "faults", document)
    assert 400 == response.status
    assert response.json()["message"]


def test_calls_are_listed_and_filtered(control: Callable[..., Any], codeartifact: Any) -> None:
    codeartifact.list_domains()
    codeartifact.delete_package_versions(**LEFT_PAD, versions=["1.0.0"])
    deletes = control("GET", "calls", query={"operation": "DeletePackageVersions"}).json()
    everything = control("GET", "calls").json()
    [call] = deletes["calls"]
    assert ["ListDomains", "DeletePackageVersions"] == [c["operation"] for c in everything["calls"]]
    assert (True, 200, ["1.0.0"], "left-pad") == (
        call["applied"],
        call["status"],
        call["params"]["versions"],
        call["params"]["package"],
    )


def test_zero_deletes_reached_the_emulator(control: Callable[..., Any], codeartifact: Any) -> None:
    codeartifact.list_package_versions(**LEFT_PAD)
    assert {"calls": []} == control(
        "GET", "calls", query={"operation": "DeletePackageVersions"}
    ).json()


def test_clear_calls(control: Callable[..., Any], codeartifact: Any, emulator: Emulator) -> None:
    codeartifact.list_domains()
    control("DELETE", "calls")
    assert [] == emulator.calls()


def test_reset_and_version_status(control: Callable[..., Any], codeartifact: Any) -> None:
    query = {**LEFT_PAD, "version": "1.0.0"}
    codeartifact.delete_package_versions(**LEFT_PAD, versions=["1.0.0"])
    deleted = control("GET", "version-status", query=query).json()
    control("POST", "reset")
    restored = control("GET", "version-status", query=query).json()
    scoped = control(
        "GET",
        "version-status",
        query={**LEFT_PAD, "namespace": "acme", "package": "widgets", "version": "2.1.0-beta.1"},
    ).json()
    assert ({"status": None}, {"status": "Published"}) == (deleted, restored)
    assert {"status": "Unlisted"} == scoped


def test_version_status_needs_coordinates(control: Callable[..., Any]) -> None:
    response = control("GET", "version-status", query={"domain": "demo"})
    assert 400 == response.status


def test_unknown_control_route(control: Callable[..., Any]) -> None:
    assert 404 == control("GET", "nothing-here").status


def test_throttle_update_status_through_the_control_api(
    control: Callable[..., Any], codeartifact: Any
) -> None:
    """A process without the Emulator object (e.g. a gateway test) throttles
    UpdatePackageVersionsStatus twice and DeletePackageVersions once by posting rules; the call
    log shows which calls met them."""
    control(
        "POST",
        "faults",
        {
            "faults": [
                {
                    "operation": "UpdatePackageVersionsStatus",
                    "kind": "throttle",
                    "count": 2,
                    "retry_after_seconds": 0,
                },
                {"operation": "DeletePackageVersions", "kind": "throttle", "count": 1},
            ]
        },
    )
    codes = []
    for _ in range(3):
        try:
            codeartifact.update_package_versions_status(
                **LEFT_PAD, versions=["1.0.0"], targetStatus="Archived"
            )
            codes.append("ok")
        except ClientError as error:
            codes.append(error.response["Error"]["Code"])
    with pytest.raises(ClientError):
        codeartifact.delete_package_versions(**LEFT_PAD, versions=["1.1.0"])
    calls = control("GET", "calls", query={"operation": "UpdatePackageVersionsStatus"}).json()
    assert ["ThrottlingException", "ThrottlingException", "ok"] == codes
    assert [("throttle", 429), ("throttle", 429), (None, 200)] == [
        (call["fault"], call["status"]) for call in calls["calls"]
    ]
    assert "Archived" == calls["calls"][2]["params"]["targetStatus"]
    assert {"faults": []} == control("GET", "faults").json()
