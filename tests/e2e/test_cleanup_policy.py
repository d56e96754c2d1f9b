"""A cleanup plan's policy outcomes are its dry run's, for policies that read what a plan must
fetch for them: a policy on publication times decides a plan exactly as it decides a
DeletePackageVersions dry run of the same versions, and the job deletes what both allowed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import Emulator, load_demo_seed
from pkggov_gateway import policies
from tests.e2e.cleanup_helpers import Package, codeartifact_client, create_repository, seed
from tests.e2e.harness import (
    cleanup_stub_for,
    gateway_settings,
    running_gateway,
    stub_for,
    wait_for,
)

OLD_ENOUGH = """
// CI may delete any version in dev-* published more than 30 days ago.
@id("ci-may-delete-old")
permit (
  principal in Pkggov::Group::"ci",
  action == Pkggov::Action::"DeletePackageVersion",
  resource
)
when {
  resource.repository like "dev-*" &&
  resource has published_at &&
  resource.published_at < context.now - 2592000
};
"""


def test_a_policy_on_publication_times_decides_the_plan_as_its_dry_run(tmp_path: Path) -> None:
    """The shipped set plus a policy reading published_at: plan outcomes == the dry run's
    decisions (the plan fetches the times the policy reads), and applying deletes them."""
    shipped = Path(next(iter(policies.__path__)))
    folder = tmp_path / "policies"
    shutil.copytree(shipped / "policies", folder)
    (folder / "ci-may-delete-old.cedar").write_text(OLD_ENOUGH)
    now = datetime.now(UTC)
    package = Package("npm", "acme", "aged", repository="dev-aged")
    with Emulator(seed=load_demo_seed()) as emulator:
        create_repository(codeartifact_client(emulator), "dev-aged")
        seed(
            emulator,
            package,
            [
                ("1.0.0", "Published", now - timedelta(days=400)),
                ("1.1.0", "Published", now - timedelta(days=300)),
                ("1.2.0", "Published", now - timedelta(days=10)),
                ("2.0.0", "Published", now - timedelta(days=1)),
            ],
        )
        settings = gateway_settings(
            emulator.endpoint_url,
            policy={
                "policies": str(folder),
                "entities": str(shipped / "entities.yaml"),
                "schema": str(shipped / "pkggov.cedarschema"),
            },
        )
        with (
            running_gateway(settings) as gateway,
            cleanup_stub_for(gateway, "ci-bot") as cleanup,
            stub_for(gateway, "ci-bot") as governance,
        ):
            planned = cleanup.PlanCleanup(
                pb.PlanCleanupRequest(**package.fields(), rule=pb.CleanupRule(keep_newest=1)),
                timeout=30,
            )
            outcomes = {
                v.version: (v.policy_outcome, tuple(v.policy_ids))
                for p in planned.packages
                for v in p.versions
                if v.action == pb.CLEANUP_ACTION_DELETE
            }
            dry = governance.DeletePackageVersions(
                pb.DeletePackageVersionsRequest(
                    **package.fields(),
                    versions=sorted(outcomes),
                    validate_only=True,
                    allow_partial=True,
                ),
                timeout=30,
            )
            assert {
                v: (d.outcome, tuple(d.policy_ids)) for v, d in dry.decisions.items()
            } == outcomes
            allowed = (pb.VERSION_OUTCOME_WOULD_DELETE, ("ci-may-delete-old",))
            assert {"1.0.0": allowed, "1.1.0": allowed} == {
                v: o for v, o in outcomes.items() if o == allowed
            }
            job = cleanup.ApplyCleanup(
                pb.ApplyCleanupRequest(plan_id=planned.plan.plan_id), timeout=30
            ).job

            def done() -> bool:
                state = cleanup.GetCleanupJob(
                    pb.GetCleanupJobRequest(job_id=job.job_id), timeout=30
                ).job.state
                return bool(state == pb.CLEANUP_JOB_STATE_SUCCEEDED)

            assert wait_for(done, timeout=20)
            finished = cleanup.GetCleanupJob(
                pb.GetCleanupJobRequest(job_id=job.job_id), timeout=30
            ).job
            assert 2 == finished.versions_deleted
