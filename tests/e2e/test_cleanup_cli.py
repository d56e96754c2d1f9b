"""`pkggov cleanup` as operators and scheduled jobs run it, against the real gateway binary.

The CLI runs as a subprocess against the gateway started as `make run` starts it (the shipped
policies and the development profile's rule dev-prereleases), on the demo's dev-nightly.

The demo's npm package acme/web-app in demo/dev-nightly has releases 1.0.0, 1.1.0, 1.2.0 and
pre-releases 1.3.0-nightly.1..7 (nightly.2 and nightly.3 Published, nightly.3 the latest; the
others Unlisted). Planned as ci-bot (group ci) with dev-prereleases, nightly.1, .2, .4 and .5
are to be deleted; policy lets ci delete only Unlisted pre-releases, so nightly.2 is denied.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import GatewayProcess

NIGHTLY = ("--domain", "demo", "--repository", "dev-nightly")
PLAN = ("--as", "ci-bot", *NIGHTLY, "--rule", "dev-prereleases")
VERSIONS = [f"1.3.0-nightly.{n}" for n in range(7, 0, -1)] + ["1.2.0", "1.1.0", "1.0.0"]
DELETED = ["1.3.0-nightly.5", "1.3.0-nightly.4", "1.3.0-nightly.1"]
DENIED = "1.3.0-nightly.2"


@pytest.fixture(scope="module")
def gateway(bin_dir: Path) -> Iterator[GatewayProcess]:
    """One gateway binary for the module, as `make run` starts it, whose job runner looks for
    jobs every 0.2 s (instead of 5) so that --wait returns soon."""
    with spawn_gateway(bin_dir, PKGGOV_CLEANUP_INTERVAL_SECONDS="0.2") as process:
        yield process


def _control(gateway: GatewayProcess, path: str, *, method: str = "GET") -> Any:
    """Call the embedded emulator's control API."""
    request = urllib.request.Request(  # noqa: S310 - our loopback emulator
        f"{gateway.emulator_url}/_emulator/{path}", method=method
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - our loopback
        return json.loads(answer.read() or b"{}")


@pytest.fixture(autouse=True)
def _fresh_demo_data(gateway: GatewayProcess) -> None:
    """Every test starts from the demo seed (deletions of an earlier test undone)."""
    _control(gateway, "reset", method="POST")


def status_of(gateway: GatewayProcess, version: str) -> str | None:
    """The status of a version of acme/web-app in dev-nightly, None when it is gone."""
    query = urllib.parse.urlencode(
        {
            "domain": "demo",
            "repository": "dev-nightly",
            "format": "npm",
            "namespace": "acme",
            "package": "web-app",
            "version": version,
        }
    )
    status: str | None = _control(gateway, f"version-status?{query}")["status"]
    return status


def pkggov(
    bin_dir: Path, gateway: GatewayProcess, *args: str, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """Run the installed `pkggov` console script against `gateway` ($PKGGOV_CLI_TARGET)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKGGOV_")}
    env["PKGGOV_CLI_TARGET"] = gateway.address
    return subprocess.run(
        [str(bin_dir / "pkggov"), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def plan_id(bin_dir: Path, gateway: GatewayProcess) -> tuple[str, str]:
    """Plan dev-nightly as ci-bot with dev-prereleases; the plan's id and hash."""
    result = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--json")
    assert 0 == result.returncode, result.stderr
    plan = json.loads(result.stdout)["plan"]
    return plan["planId"], plan["planHash"]


def table(stdout: str, first: str) -> list[list[str]]:
    """The rows (cells split on runs of 2+ spaces) of the table whose header starts `first`."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def fields(stdout: str) -> dict[str, str]:
    """The `label  value` lines of the summaries, by label (the first of a label wins: the
    plan's, when a plan's summary comes before a job's)."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"([a-z][a-z0-9 ]*?)\s{2,}(\S.*)", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def test_plan_prints_every_version_with_its_clause_and_the_summary(
    bin_dir: Path, gateway: GatewayProcess
) -> None:
    """`cleanup plan`: a row per version (newest first) with action, clause and the policy's
    outcome; the summary names the plan, its hash, the counts and the upstream calls; nothing
    is deleted; exit 0."""
    result = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--justification", "nightly")

    assert 0 == result.returncode, result.stderr
    rows = table(result.stdout, "FORMAT")
    assert ["FORMAT", "PACKAGE", "VERSION", "STATUS", "ACTION", "CLAUSE", "POLICY", "REASON"] == (
        rows[0]
    )
    decided = {row[2]: (row[3], row[4], row[5], row[6]) for row in rows[1:]}
    assert VERSIONS == [row[2] for row in rows[1:]]
    assert {"acme/web-app"} == {row[1] for row in rows[1:]}
    assert ("Unlisted", "keep", "KEEP_NEWEST_PRERELEASES", "-") == decided["1.3.0-nightly.7"]
    assert ("Published", "keep", "LATEST", "-") == decided["1.3.0-nightly.3"]
    assert ("Published", "delete", "SELECTED", "denied") == decided[DENIED]
    assert ("Published", "keep", "PRERELEASE_SCOPE", "-") == decided["1.0.0"]
    for version in DELETED:
        assert ("Unlisted", "delete", "SELECTED", "would delete") == decided[version]
    summary = fields(result.stdout)
    assert re.fullmatch(r"[0-9a-f-]{36}", summary["plan"])
    assert re.fullmatch(r"[0-9a-f]{64}", summary["plan sha256"])
    assert "ci-bot" == summary["requester"]
    assert summary["rule"].startswith("dev-prereleases: prerelease=only ")
    assert (
        "10 in 1 package: 4 to delete (3 allowed, 1 denied, 0 need approval), 6 kept"
        == summary["versions"]
    )
    assert int(summary["upstream calls"]) > 0
    assert "none" == summary["warnings"]
    assert f"cleanup apply {summary['plan']} --plan-hash {summary['plan sha256']}" in (
        result.stdout
    )
    assert "Unlisted" == status_of(gateway, "1.3.0-nightly.1")


def test_plan_json_and_reports_hold_every_version(
    bin_dir: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    """--json prints the plan and all its packages in proto3 JSON; --report writes every
    version to CSV or JSON with the named columns."""
    as_csv, as_json = tmp_path / "plan.csv", tmp_path / "plan.json"
    first = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--json", "--report", str(as_csv))
    second = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--report", str(as_json))

    assert (0, 0) == (first.returncode, second.returncode), first.stderr + second.stderr
    output = json.loads(first.stdout)
    assert {"plan", "packages", "nextPageToken"} == set(output)
    assert (4, 3, 1, "dev-prereleases") == (
        output["plan"]["deleteCount"],
        output["plan"]["allowedCount"],
        output["plan"]["deniedCount"],
        output["plan"]["ruleName"],
    )
    assert {"CLEANUP_CLAUSE_SELECTED": 4, "CLEANUP_CLAUSE_PRERELEASE_SCOPE": 3} == {
        k: v for k, v in output["plan"]["clauseCounts"].items() if v > 2
    }
    [package] = output["packages"]
    assert VERSIONS == [v["version"] for v in package["versions"]]
    by_version = {v["version"]: v for v in package["versions"]}
    assert ("CLEANUP_ACTION_DELETE", "VERSION_OUTCOME_DENIED") == (
        by_version[DENIED]["action"],
        by_version[DENIED]["policyOutcome"],
    )

    with as_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [
        "format",
        "namespace",
        "package",
        "version",
        "status",
        "revision",
        "action",
        "clause",
        "reason",
        "prerelease",
        "policy_outcome",
        "policy_ids",
    ] == list(rows[0])
    assert VERSIONS == [row["version"] for row in rows]
    deleted = {row["version"]: row for row in rows if row["action"] == "DELETE"}
    assert {*DELETED, DENIED} == set(deleted)
    assert ("npm", "acme", "web-app", "WOULD_DELETE", "ci-may-delete-dev-prereleases", "true") == (
        deleted["1.3.0-nightly.1"]["format"],
        deleted["1.3.0-nightly.1"]["namespace"],
        deleted["1.3.0-nightly.1"]["package"],
        deleted["1.3.0-nightly.1"]["policy_outcome"],
        deleted["1.3.0-nightly.1"]["policy_ids"],
        deleted["1.3.0-nightly.1"]["prerelease"],
    )
    assert ("DENIED", "") == (deleted[DENIED]["policy_outcome"], deleted[DENIED]["policy_ids"])
    assert all(row["revision"] for row in rows)

    report = json.loads(as_json.read_text())
    assert VERSIONS == [row["version"] for row in report]
    kept = {row["version"]: row for row in report if row["action"] == "KEEP"}
    assert ("LATEST", True, [], "") == (
        kept["1.3.0-nightly.3"]["clause"],
        kept["1.3.0-nightly.3"]["prerelease"],
        kept["1.3.0-nightly.3"]["policy_ids"],
        kept["1.3.0-nightly.3"]["policy_outcome"],
    )
    assert ("PRERELEASE_SCOPE", False) == (kept["1.0.0"]["clause"], kept["1.0.0"]["prerelease"])


def test_apply_wait_deletes_what_policy_allows_and_exits_3_for_the_denied_version(
    bin_dir: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    """`cleanup apply --wait` (as the plan's requester, with the reviewed hash): progress lines
    on stderr, the results table and the job's summary; nightly.1, .4, .5 are gone, nightly.2
    is denied and stays, so exit 3; the report holds the kept versions too."""
    identifier, digest = plan_id(bin_dir, gateway)
    report = tmp_path / "job.csv"

    result = pkggov(
        bin_dir,
        gateway,
        "cleanup",
        "apply",
        "--as",
        "ci-bot",
        identifier,
        "--plan-hash",
        digest,
        "--wait",
        "--report",
        str(report),
    )

    assert 3 == result.returncode, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("cleanup job ")]
    assert progress[-1].endswith(": succeeded, packages 1/1, deleted 3/4, not done 1")
    results = table(result.stdout, "FORMAT")
    assert [
        ["npm", "acme/web-app", "1.3.0-nightly.5", "deleted", "deleted"],
        ["npm", "acme/web-app", "1.3.0-nightly.4", "deleted", "deleted"],
        ["npm", "acme/web-app", DENIED, "denied", "denied when planned"],
        ["npm", "acme/web-app", "1.3.0-nightly.1", "deleted", "deleted"],
    ] == results[1:]
    summary = fields(result.stdout)
    assert ("succeeded", "1 of 1 done") == (summary["state"], summary["packages"])
    assert summary["versions"].startswith("4 planned: 3 deleted, 0 archived, 1 denied,")
    assert summary["plan"].startswith(f"{identifier} (sha256 {digest})")
    assert "1 planned deletion not done (1 denied)" in result.stdout
    assert [None, None, None] == [status_of(gateway, version) for version in DELETED]
    assert "Published" == status_of(gateway, DENIED)

    with report.open(newline="") as handle:
        rows = {row["version"]: row for row in csv.DictReader(handle)}
    assert VERSIONS == list(rows)
    assert ("KEPT", "LATEST") == (
        rows["1.3.0-nightly.3"]["result"],
        rows["1.3.0-nightly.3"]["clause"],
    )
    assert ("DELETED", "SELECTED") == (
        rows["1.3.0-nightly.1"]["result"],
        rows["1.3.0-nightly.1"]["clause"],
    )
    assert ("DENIED", "denied when planned") == (
        rows[DENIED]["result"],
        rows[DENIED]["result_message"],
    )


def test_status_results_and_cancel_of_a_finished_job(
    bin_dir: Path, gateway: GatewayProcess
) -> None:
    """`cleanup status --results` shows each planned deletion's result (exit 3: one was
    denied), for the requester and for an auditor; cancelling the finished job fails with
    CLEANUP_JOB_FINISHED (exit 1); another principal may neither read nor cancel it."""
    identifier, _ = plan_id(bin_dir, gateway)
    started = pkggov(bin_dir, gateway, "cleanup", "apply", "--as", "ci-bot", identifier, "--json")
    assert 0 == started.returncode, started.stderr
    output = json.loads(started.stdout)
    job = output["job"]["jobId"]
    assert ("CLEANUP_JOB_STATE_QUEUED", identifier) == (
        output["job"]["state"],
        output["job"]["planId"],
    )
    assert re.fullmatch(r"[0-9a-f-]{36}", output["requestId"])
    waited = pkggov(
        bin_dir,
        gateway,
        "cleanup",
        "apply",
        "--as",
        "ci-bot",
        identifier,
        "--wait",
        "--request-id",
        output["requestId"],
    )
    assert 3 == waited.returncode, waited.stderr  # a retry with the request id: the same job
    assert job == fields(waited.stdout)["cleanup job"]

    status = pkggov(bin_dir, gateway, "cleanup", "status", "--as", "ci-bot", job, "--results")
    audited = pkggov(bin_dir, gateway, "cleanup", "status", "--as", "carol", job, "--json")
    refused = pkggov(bin_dir, gateway, "cleanup", "status", "--as", "bob", job)
    cancel = pkggov(bin_dir, gateway, "cleanup", "cancel", "--as", "ci-bot", job, "--reason", "x")
    other = pkggov(bin_dir, gateway, "cleanup", "cancel", "--as", "alice", job)

    assert 3 == status.returncode, status.stderr
    assert [row[2:4] for row in table(status.stdout, "FORMAT")[1:]] == [
        ["1.3.0-nightly.5", "deleted"],
        ["1.3.0-nightly.4", "deleted"],
        [DENIED, "denied"],
        ["1.3.0-nightly.1", "deleted"],
    ]
    assert "succeeded" == fields(status.stdout)["state"]
    assert 3 == audited.returncode, audited.stderr
    assert (3, 1, "CLEANUP_JOB_STATE_SUCCEEDED") == (
        json.loads(audited.stdout)["job"]["versionsDeleted"],
        json.loads(audited.stdout)["job"]["versionsDenied"],
        json.loads(audited.stdout)["job"]["state"],
    )
    assert 1 == refused.returncode
    assert refused.stderr.startswith("error: PERMISSION_DENIED NOT_REQUESTER: ")
    assert 1 == cancel.returncode
    assert cancel.stderr.startswith("error: FAILED_PRECONDITION CLEANUP_JOB_FINISHED: ")
    assert "the job has ended: there is nothing to cancel" in cancel.stderr
    assert 1 == other.returncode
    assert other.stderr.startswith("error: PERMISSION_DENIED NOT_REQUESTER: ")


def test_a_queued_job_cancelled_deletes_nothing(bin_dir: Path) -> None:
    """With a job runner that looks for jobs once an hour, an applied job stays queued (status
    exit 0); its requester cancels it (exit 0), then status says cancelled, by whom and why
    (exit 1), and nothing was deleted."""
    with spawn_gateway(bin_dir, PKGGOV_CLEANUP_INTERVAL_SECONDS="3600") as idle:
        identifier, _ = plan_id(bin_dir, idle)
        started = pkggov(bin_dir, idle, "cleanup", "apply", "--as", "ci-bot", identifier)
        job = started.stdout.split()[2]
        queued = pkggov(bin_dir, idle, "cleanup", "status", "--as", "ci-bot", job)
        cancel = pkggov(
            bin_dir, idle, "cleanup", "cancel", "--as", "ci-bot", job, "--reason", "not tonight"
        )
        cancelled = pkggov(bin_dir, idle, "cleanup", "status", "--as", "ci-bot", job, "--results")

        assert 0 == started.returncode, started.stderr
        assert started.stdout.startswith(f"cleanup job {job} queued: plan {identifier} ")
        assert (0, "queued") == (queued.returncode, fields(queued.stdout)["state"])
        assert 0 == cancel.returncode, cancel.stderr
        assert cancel.stdout.startswith(f"cancelled cleanup job {job}; state cancelled ")
        assert 1 == cancelled.returncode
        summary = fields(cancelled.stdout)
        assert ("cancelled", "cancelled by ci-bot: not tonight", "0 of 1 done") == (
            summary["state"],
            summary["cancelled"],
            summary["packages"],
        )
        assert ["Unlisted"] * 3 == [status_of(idle, version) for version in DELETED]


def test_only_the_plans_requester_may_apply_it(bin_dir: Path, gateway: GatewayProcess) -> None:
    """Applying ci-bot's plan as bob fails with NOT_REQUESTER (exit 1) and deletes nothing; a
    wrong --plan-hash fails with PLAN_HASH_MISMATCH."""
    identifier, _ = plan_id(bin_dir, gateway)

    other = pkggov(bin_dir, gateway, "cleanup", "apply", "--as", "bob", identifier)
    mismatch = pkggov(
        bin_dir, gateway, "cleanup", "apply", "--as", "ci-bot", identifier, "--plan-hash", "0" * 64
    )

    assert (1, 1) == (other.returncode, mismatch.returncode)
    assert "error: PERMISSION_DENIED NOT_REQUESTER: " in other.stderr
    assert "error: FAILED_PRECONDITION PLAN_HASH_MISMATCH: " in mismatch.stderr
    assert "Unlisted" == status_of(gateway, "1.3.0-nightly.1")


def test_run_plans_applies_and_waits(bin_dir: Path, gateway: GatewayProcess) -> None:
    """`cleanup run` (what a CronJob runs): the plan's summary, the job's progress and results,
    exit 3 for the denied version; run again, only the denied version is left to delete, and
    with an inline rule that keeps everything no job is started (exit 0)."""
    first = pkggov(bin_dir, gateway, "cleanup", "run", *PLAN, "--justification", "nightly")
    again = pkggov(bin_dir, gateway, "cleanup", "run", *PLAN, "--json")
    nothing = pkggov(
        bin_dir, gateway, "cleanup", "run", "--as", "ci-bot", *NIGHTLY, "--keep-newest", "100"
    )

    assert 3 == first.returncode, first.stderr
    assert first.stdout.startswith("plan ")
    summary = fields(first.stdout)
    assert (
        "10 in 1 package: 4 to delete (3 allowed, 1 denied, 0 need approval), 6 kept"
        == (summary["versions"])
    )
    assert ("succeeded", "nightly") == (summary["state"], summary["justification"])
    assert re.search(r"^cleanup job \S+: succeeded, packages 1/1, deleted 3/4", first.stderr, re.M)
    assert [None, None, None] == [status_of(gateway, version) for version in DELETED]

    assert 3 == again.returncode, again.stderr
    output = json.loads(again.stdout)
    assert (1, 0, 1) == (
        output["plan"]["plan"]["deleteCount"],
        output["job"]["job"]["versionsDeleted"],
        output["job"]["job"]["versionsDenied"],
    )
    assert [DENIED] == [v["version"] for v in output["job"]["results"][0]["versions"]]

    assert (0, "nothing to delete: no job started") == (
        nothing.returncode,
        nothing.stdout.splitlines()[-1],
    ), nothing.stderr


def test_a_named_rule_and_an_inline_rule_together_are_refused_by_the_gateway(
    bin_dir: Path, gateway: GatewayProcess
) -> None:
    """--rule with --keep-newest: INVALID_ARGUMENT naming rule_name (exit 1), with a hint; an
    unknown rule: UNKNOWN_CLEANUP_RULE; neither: rule_name again."""
    both = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--keep-newest", "3")
    unknown = pkggov(bin_dir, gateway, "cleanup", "plan", "--as", "ci-bot", *NIGHTLY, "--rule", "x")
    neither = pkggov(bin_dir, gateway, "cleanup", "plan", "--as", "ci-bot", *NIGHTLY, "--json")

    assert (1, 1, 1) == (both.returncode, unknown.returncode, neither.returncode)
    assert "error: INVALID_ARGUMENT INVALID_REQUEST: " in both.stderr
    assert "  rule_name: set exactly one of rule_name and rule" in both.stderr
    assert "--rule NAME or an inline rule" in both.stderr
    assert "error: INVALID_ARGUMENT UNKNOWN_CLEANUP_RULE: " in unknown.stderr
    error = json.loads(neither.stdout)["error"]
    assert ("INVALID_ARGUMENT", "INVALID_REQUEST") == (error["status"], error["reason"])
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert ["rule_name"] == [v["field"] for v in bad_request["fieldViolations"]]


def test_a_rule_for_dev_repositories_is_refused_on_prod_release(
    bin_dir: Path, gateway: GatewayProcess
) -> None:
    """dev-prereleases is for dev-*: planning prod-release with it is CLEANUP_RULE_NOT_APPLICABLE
    (exit 1); an inline rule there plans (alice, a release admin) and deletes nothing."""
    refused = pkggov(
        bin_dir,
        gateway,
        "cleanup",
        "plan",
        "--as",
        "alice",
        "--domain",
        "demo",
        "--repository",
        "prod-release",
        "--rule",
        "dev-prereleases",
    )
    inline = pkggov(
        bin_dir,
        gateway,
        "cleanup",
        "plan",
        "--as",
        "alice",
        "--domain",
        "demo",
        "--repository",
        "prod-release",
        "--format",
        "npm",
        "--package",
        "left-pad",
        "--keep-newest",
        "1",
        "--justification",
        "retention",
    )

    assert 1 == refused.returncode
    assert "error: INVALID_ARGUMENT CLEANUP_RULE_NOT_APPLICABLE: " in refused.stderr
    assert "the rule's repositories do not include this repository" in refused.stderr
    assert 0 == inline.returncode, inline.stderr
    decided = {row[2]: row[4:7] for row in table(inline.stdout, "FORMAT")[1:]}
    assert {"1.3.0": ["keep", "LATEST", "-"], "1.0.0": ["delete", "SELECTED", "would archive"]} == (
        decided
    )


def test_usage_errors_exit_2_before_any_call(bin_dir: Path, gateway: GatewayProcess) -> None:
    """A report that is neither CSV nor JSON, --report on apply without --wait, a negative
    count and a bad plan hash are usage errors (exit 2) that name the option."""
    results = [
        pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, "--report", "plan.txt"),
        pkggov(bin_dir, gateway, "cleanup", "apply", "--as", "ci-bot", "x", "--report", "r.csv"),
        pkggov(bin_dir, gateway, "cleanup", "plan", *NIGHTLY, "--keep-newest", "-1"),
        pkggov(bin_dir, gateway, "cleanup", "apply", "x", "--plan-hash", "abc"),
    ]

    assert [2, 2, 2, 2] == [result.returncode for result in results]
    assert "a report is CSV or JSON" in results[0].stderr
    assert "--report needs --wait" in results[1].stderr
    assert "argument --keep-newest: invalid number '-1'" in results[2].stderr
    assert "argument --plan-hash: expected a SHA-256" in results[3].stderr


def test_a_closed_stdout_does_not_turn_a_plan_into_a_failure(
    bin_dir: Path, gateway: GatewayProcess
) -> None:
    """`pkggov cleanup plan ... | head -1` with the reader gone: exit 0, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = pkggov(bin_dir, gateway, "cleanup", "plan", *PLAN, stdout=write_end)
    finally:
        os.close(write_end)

    assert 0 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
