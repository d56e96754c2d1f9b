"""Reloading: a good set replaces the old one whole; a bad one leaves the old one in force."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    default_policy_files,
)
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.domain.model import PackageFormat, PackageRef, VersionStatus
from pkggov_gateway.domain.policy import PolicyContext, PolicyRequest, VersionFacts


def copy_shipped(tmp_path: Path) -> PolicyFiles:
    root = tmp_path / "set"
    shutil.copytree(default_policy_files().schema.parent, root)
    return PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")


def bob_deletes() -> PolicyRequest:
    """bob (in no group) deletes an old release in dev."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return PolicyRequest(
        principal=Principal("bob", AuthMethod.DEV, "ipv4:127.0.0.1:1"),
        package=PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets"),
        versions=(VersionFacts("1.0.0", VersionStatus.PUBLISHED, False),),
        version_count=3,
        remaining_after_request=2,
        context=PolicyContext("", False, 1, now, "ipv4:127.0.0.1:1"),
    )


def allowed(engine: CedarPolicyEngine) -> bool:
    (decision,) = engine.decide(bob_deletes())
    return decision.allowed


def test_good_reload_puts_the_new_set_in_force(tmp_path: Path) -> None:
    """A changed entities file takes effect on reload (bob joins release-admins)."""
    files = copy_shipped(tmp_path)
    engine = CedarPolicyEngine(files)
    assert False is allowed(engine)
    text = files.entities.read_text()
    files.entities.write_text(text.replace("    groups: []", "    groups: [release-admins]"))
    engine.reload()
    assert True is allowed(engine)
    assert ("release-admins",) == engine.groups_of("bob")
    assert (1, 0, None) == (engine.reloads_ok, engine.reloads_failed, engine.last_reload_error)


def test_bad_reload_keeps_the_old_set_records_and_reraises(tmp_path: Path) -> None:
    """A syntax error at reload: the error is raised and recorded, the old set stays."""
    files = copy_shipped(tmp_path)
    engine = CedarPolicyEngine(files)
    (files.policies / "zz-grant.cedar").write_text(
        '@id("grant")\npermit (principal, action, resource);\n'
    )
    text = files.entities.read_text()
    files.entities.write_text(text.replace("    groups: []", "    groups: [release-admins]"))
    bad = files.policies / "zz-bad.cedar"
    bad.write_text('@id("bad")\npermit (principal, action, resource) when { resource. };\n')
    with pytest.raises(PolicyLoadError) as caught:
        engine.reload()
    assert (bad, 2) == (caught.value.path, caught.value.line)
    assert caught.value is engine.last_reload_error
    assert (0, 1) == (engine.reloads_ok, engine.reloads_failed)
    assert False is allowed(engine)  # neither the new policy nor the new entities
    assert "grant" not in engine.policy_ids()
    assert () == engine.groups_of("bob")

    bad.unlink()
    engine.reload()
    assert True is allowed(engine)
    assert (1, 1) == (engine.reloads_ok, engine.reloads_failed)
    assert None is engine.last_reload_error


def test_schema_violation_at_reload_is_refused_like_at_start(tmp_path: Path) -> None:
    """The same validation runs at reload: a schema-violating policy is refused."""
    files = copy_shipped(tmp_path)
    engine = CedarPolicyEngine(files)
    before = engine.policy_ids()
    (files.policies / "zz-bad.cedar").write_text(
        '@id("bad")\npermit (principal, action, resource) when { resource.owner == "x" };\n'
    )
    with pytest.raises(PolicyLoadError, match="does not conform to the schema"):
        engine.reload()
    assert before == engine.policy_ids()


def test_decisions_during_reloads_see_one_whole_set(tmp_path: Path) -> None:
    """Decisions racing reloads get the old or the new set's answer, never an error."""
    files = copy_shipped(tmp_path)
    engine = CedarPolicyEngine(files)
    grant = files.policies / "zz-grant.cedar"
    stop = threading.Event()
    seen: set[tuple[bool, tuple[str, ...], tuple[str, ...]]] = set()

    def decide_until_stopped() -> None:
        while not stop.is_set():
            (decision,) = engine.decide(bob_deletes())
            seen.add((decision.allowed, decision.policy_ids, decision.errors))
            time.sleep(0)  # let the reloading thread have the GIL too

    worker = threading.Thread(target=decide_until_stopped)
    worker.start()
    try:
        for round_ in range(10):
            if round_ % 2:
                grant.unlink()
            else:
                grant.write_text('@id("grant")\npermit (principal, action, resource);\n')
            engine.reload()
    finally:
        stop.set()
        worker.join()
    assert seen <= {(False, (), ()), (True, ("grant",), ())}
    assert 10 == engine.reloads_ok


def test_a_pinned_view_is_not_changed_by_a_reload(tmp_path: Path) -> None:
    """A request's view keeps its set: groups and decisions do not mix two sets."""
    files = copy_shipped(tmp_path)
    engine = CedarPolicyEngine(files)
    pinned = engine.current()
    text = files.entities.read_text()
    files.entities.write_text(text.replace("    groups: []", "    groups: [release-admins]"))
    engine.reload()
    (old,) = pinned.decide(bob_deletes())
    (new,) = engine.current().decide(bob_deletes())
    assert ((), False) == (pinned.groups_of("bob"), old.allowed)
    assert (("release-admins",), True) == (engine.current().groups_of("bob"), new.allowed)
