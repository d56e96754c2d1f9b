"""`pkggov cleanup` without a gateway: following a job, its exit status, and the reports.

Following a job shows progress lines and rides out a gateway that does not answer for a while;
the reports join a plan with a job's results.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as gov_pb2
from pkggov_client import CleanupJob, CleanupJobPage, PackageCleanupPlan, PkggovError
from pkggov_client._cleanup_cli import (
    RESULT_COLUMNS,
    Progress,
    job_exit_status,
    report_text,
    result_rows,
    wait_for_job,
)
from pkggov_client._cleanup_model import PackageCleanupResult
from pkggov_client._client import PkggovClient

_JOB_ID = "0b9e4c1d-2a3f-4e5d-8c7b-1a2b3c4d5e6f"


def _job(state: int, done: int = 0, deleted: int = 0, denied: int = 0) -> CleanupJob:
    return CleanupJob.from_proto(
        gov_pb2.CleanupJob(
            job_id=_JOB_ID,
            state=state,  # type: ignore[arg-type]
            packages_total=2,
            packages_done=done,
            versions_planned=3,
            versions_deleted=deleted,
            versions_denied=denied,
        )
    )


QUEUED = gov_pb2.CLEANUP_JOB_STATE_QUEUED
RUNNING = gov_pb2.CLEANUP_JOB_STATE_RUNNING
SUCCEEDED = gov_pb2.CLEANUP_JOB_STATE_SUCCEEDED


class ScriptedJobs:
    """Answers get_cleanup_job with each scripted job in turn, or raises a scripted error."""

    def __init__(self, answers: list[CleanupJob | PkggovError]) -> None:
        self._answers: Iterator[CleanupJob | PkggovError] = iter(answers)
        self.calls = 0

    def get_cleanup_job(self, job_id: str) -> CleanupJobPage:
        self.calls += 1
        answer = next(self._answers)
        if isinstance(answer, PkggovError):
            raise answer
        return CleanupJobPage.from_proto(gov_pb2.GetCleanupJobResponse(job=answer.raw))


class Clock:
    """A monotonic clock that each sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_following_a_job_prints_one_line_per_change_off_a_terminal() -> None:
    """Off a terminal, each change of the job is one line; a reading that changed nothing
    prints nothing; the job is returned as it ended."""
    jobs = ScriptedJobs(
        [
            _job(RUNNING, 1, 2),
            _job(RUNNING, 1, 2),
            _job(SUCCEEDED, 2, 2, 1),
        ]
    )
    stream = io.StringIO()
    clock = Clock()

    final = wait_for_job(
        cast(PkggovClient, jobs),
        _job(QUEUED),
        0.5,
        Progress(stream),
        sleep=clock.sleep,
        clock=clock,
    )

    assert (3, 1.5) == (jobs.calls, clock.now)
    assert final.finished
    assert stream.getvalue().splitlines() == [
        f"cleanup job {_JOB_ID}: queued, packages 0/2, deleted 0/3",
        f"cleanup job {_JOB_ID}: running, packages 1/2, deleted 2/3",
        f"cleanup job {_JOB_ID}: succeeded, packages 2/2, deleted 2/3, not done 1",
    ]


def test_on_a_terminal_the_progress_is_one_line_rewritten_with_a_bar() -> None:
    """On a terminal each reading rewrites the line (carriage return, erase) with a bar of the
    packages done, and closing ends the line."""
    stream = Terminal()
    progress = Progress(stream)

    progress.update(_job(RUNNING, 1, 1))
    progress.update(_job(SUCCEEDED, 2, 3))
    progress.close()

    text = stream.getvalue()
    assert "\n" == text[-1]
    assert 1 == text.count("\n")
    first, second = text.rstrip("\n").split("\r\x1b[K")[1:]
    assert first.startswith("[" + "#" * 12 + "." * 12 + "] ")
    assert second.startswith("[" + "#" * 24 + "] ")
    assert second.endswith("succeeded, packages 2/2, deleted 3/3")


def test_a_gateway_that_does_not_answer_for_a_while_is_asked_again() -> None:
    """UNAVAILABLE while following is noted and the job read again; a NOT_FOUND is raised."""
    unavailable = PkggovError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    jobs = ScriptedJobs([unavailable, unavailable, _job(SUCCEEDED, 2, 3)])
    stream = io.StringIO()
    clock = Clock()

    final = wait_for_job(
        cast(PkggovClient, jobs),
        _job(QUEUED),
        1.0,
        Progress(stream),
        sleep=clock.sleep,
        clock=clock,
    )

    assert CleanupJob.from_proto(_job(SUCCEEDED, 2, 3).raw) == final
    assert 2 == stream.getvalue().count("the gateway did not answer (UNAVAILABLE)")
    missing = ScriptedJobs([PkggovError(grpc.StatusCode.NOT_FOUND, "no such job")])
    with pytest.raises(PkggovError, match="no such job"):
        wait_for_job(
            cast(PkggovClient, missing),
            _job(QUEUED),
            1.0,
            Progress(io.StringIO()),
            sleep=clock.sleep,
            clock=clock,
        )


def test_a_gateway_down_for_too_long_ends_the_wait() -> None:
    """UNAVAILABLE for more than a minute is raised (the job goes on in the gateway)."""
    unavailable = PkggovError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    jobs = ScriptedJobs([unavailable] * 100)
    clock = Clock()

    with pytest.raises(PkggovError, match="connection refused"):
        wait_for_job(
            cast(PkggovClient, jobs),
            _job(QUEUED),
            10.0,
            Progress(io.StringIO()),
            sleep=clock.sleep,
            clock=clock,
        )

    assert 8 == jobs.calls  # read at 10 s, ..., 80 s: failing for 70 s > 60 s


def test_the_exit_status_of_a_job_follows_its_state_and_what_was_not_done() -> None:
    """0 while queued or running and when all was done, 3 when some was not, 1 for a job that
    failed or was cancelled."""
    assert [0, 0, 0, 3, 1, 1] == [
        job_exit_status(job)
        for job in (
            _job(QUEUED),
            _job(RUNNING),
            _job(SUCCEEDED, 2, 3),
            _job(SUCCEEDED, 2, 2, 1),
            _job(gov_pb2.CLEANUP_JOB_STATE_FAILED),
            _job(gov_pb2.CLEANUP_JOB_STATE_CANCELLED),
        )
    ]


def _plan() -> list[PackageCleanupPlan]:
    package = gov_pb2.PackageCleanupPlan(
        format=gov_pb2.PACKAGE_FORMAT_NPM, namespace="acme", package="web-app"
    )
    package.versions.add(
        version="3",
        revision="R3",
        status=gov_pb2.PACKAGE_VERSION_STATUS_PUBLISHED,
        action=gov_pb2.CLEANUP_ACTION_KEEP,
        clause=gov_pb2.CLEANUP_CLAUSE_LATEST,
        reason="the package's latest version",
    )
    for version, outcome in (("2", "WOULD_DELETE"), ("1", "NEEDS_APPROVAL")):
        package.versions.add(
            version=version,
            revision=f"R{version}",
            status=gov_pb2.PACKAGE_VERSION_STATUS_UNLISTED,
            action=gov_pb2.CLEANUP_ACTION_DELETE,
            clause=gov_pb2.CLEANUP_CLAUSE_SELECTED,
            reason='older, with a comma, and a "quote"',
            prerelease=True,
            policy_outcome=gov_pb2.VersionOutcome.Value(f"VERSION_OUTCOME_{outcome}"),
            policy_ids=["p1", "p2"],
        )
    broken = gov_pb2.PackageCleanupPlan(
        format=gov_pb2.PACKAGE_FORMAT_PYPI, package="gone", error="could not be read"
    )
    return [PackageCleanupPlan.from_proto(package), PackageCleanupPlan.from_proto(broken)]


def _results() -> list[PackageCleanupResult]:
    result = gov_pb2.PackageCleanupResult(
        format=gov_pb2.PACKAGE_FORMAT_NPM,
        namespace="acme",
        package="web-app",
        deletion_request_id="req-1",
    )
    result.versions.add(version="2", result=gov_pb2.CLEANUP_RESULT_ARCHIVED, message="archived")
    result.versions[0].purge_time.FromSeconds(4_070_908_800)  # 2099-01-01T00:00:00Z
    result.versions.add(
        version="1", result=gov_pb2.CLEANUP_RESULT_AWAITING_APPROVAL, message="needs approval"
    )
    return [PackageCleanupResult.from_proto(result)]


def test_a_job_report_holds_every_planned_version_with_its_result(tmp_path: Path) -> None:
    """The CSV report has every version of the plan in plan order: kept ones as KEPT with their
    clause, planned deletions with their result (the deletion request of one awaiting
    approval, the purge time of an archived one), and a package not planned as one row."""
    rows = result_rows(_plan(), _results())
    text = report_text(tmp_path / "r.csv", rows, RESULT_COLUMNS)

    read = list(csv.DictReader(io.StringIO(text)))
    assert list(RESULT_COLUMNS) == list(read[0])
    assert [
        (r["version"], r["action"], r["clause"], r["result"], r["policy_outcome"]) for r in read
    ] == [
        ("3", "KEEP", "LATEST", "KEPT", ""),
        ("2", "DELETE", "SELECTED", "ARCHIVED", "WOULD_DELETE"),
        ("1", "DELETE", "SELECTED", "AWAITING_APPROVAL", "NEEDS_APPROVAL"),
        ("", "", "", "", ""),
    ]
    assert ("2099-01-01T00:00:00Z", "p1 p2", "true") == (
        read[1]["purge_time"],
        read[1]["policy_ids"],
        read[1]["prerelease"],
    )
    assert "needs approval (deletion request req-1)" == read[2]["result_message"]
    assert 'older, with a comma, and a "quote"' == read[1]["reason"]
    assert ("pypi", "gone", "not planned: could not be read") == (
        read[3]["format"],
        read[3]["package"],
        read[3]["reason"],
    )


def test_a_json_report_is_an_array_of_objects_with_lists_and_booleans(tmp_path: Path) -> None:
    """The JSON report holds the same rows: policy ids as a list, prerelease as a boolean."""
    rows = result_rows(_plan(), [])

    read = json.loads(report_text(tmp_path / "r.JSON", rows, RESULT_COLUMNS))

    assert [list(RESULT_COLUMNS)] == [list(row) for row in read[:1]]
    assert (["p1", "p2"], True, "") == (
        read[1]["policy_ids"],
        read[1]["prerelease"],
        read[1]["result"],
    )
    assert ["KEPT", "", "", ""] == [row["result"] for row in read]
