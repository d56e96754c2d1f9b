"""BotoCodeArtifact against the emulator over HTTP: retries, deadlines and error translation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pkggov_emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_REGION,
    DEMO_SECRET_ACCESS_KEY,
    Emulator,
    FaultRule,
    load_demo_seed,
)
from pkggov_gateway.adapters.codeartifact import BotoCodeArtifact, RetryPolicy
from pkggov_gateway.bootstrap import build_codeartifact_client
from pkggov_gateway.config import UpstreamSettings
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    DeadlineTooShortError,
    GatewayCredentialsError,
    UpstreamError,
    UpstreamInternalError,
    UpstreamNotFoundError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    UpstreamValidationError,
)
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    PackageFormat,
    PackageRef,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.ports import NullMetrics
from tests.conftest import free_port

if TYPE_CHECKING:
    from mypy_boto3_codeartifact import CodeArtifactClient

OPERATION = "DeletePackageVersions"
READ_TIMEOUT = 5.0
RETRY = RetryPolicy(
    max_attempts=3,
    base_delay_seconds=0.01,
    read_timeout_seconds=READ_TIMEOUT,
    deadline_margin_seconds=0.05,
    min_attempt_seconds=0.1,
)
WIDGETS = PackageRef(
    domain="demo",
    repository="dev-shared",
    format=PackageFormat.NPM,
    package="widgets",
    namespace="acme",
)
LEFT_PAD = PackageRef(
    domain="demo", repository="dev-shared", format=PackageFormat.NPM, package="left-pad"
)


@dataclass
class SleepRecorder:
    """A `sleep` for the adapter that records each delay instead of waiting."""

    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Upstream:
    """An adapter over its own boto3 client, with the sleeps it asked for."""

    adapter: BotoCodeArtifact
    client: CodeArtifactClient
    sleeps: SleepRecorder

    def delete(
        self,
        versions: list[str],
        *,
        package: PackageRef = LEFT_PAD,
        expected_status: VersionStatus | None = None,
        seconds: float = 10.0,
    ) -> DeleteOutcome:
        """Delete `versions` of `package` within a deadline `seconds` from now."""
        return self.adapter.delete_package_versions(
            package, versions, expected_status, Deadline.after(seconds)
        )

    def update(
        self,
        versions: list[str],
        target_status: VersionStatus,
        *,
        package: PackageRef = LEFT_PAD,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
        seconds: float = 10.0,
    ) -> DeleteOutcome:
        """Move `versions` of `package` to `target_status` within `seconds` from now."""
        return self.adapter.update_package_versions_status(
            package,
            versions,
            target_status,
            Deadline.after(seconds),
            expected_status=expected_status,
            revisions=revisions,
        )

    def dispose(
        self,
        versions: list[str],
        *,
        package: PackageRef = LEFT_PAD,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
        seconds: float = 10.0,
    ) -> DeleteOutcome:
        """Dispose of `versions` of `package` within `seconds` from now."""
        return self.adapter.dispose_package_versions(
            package,
            versions,
            Deadline.after(seconds),
            expected_status=expected_status,
            revisions=revisions,
        )

    def archive_or_dispose(
        self,
        operation: str,
        versions: list[str],
        *,
        package: PackageRef = LEFT_PAD,
        seconds: float = 10.0,
    ) -> DeleteOutcome:
        """UpdatePackageVersionsStatus to Archived, or DisposePackageVersions, unguarded."""
        if operation == "UpdatePackageVersionsStatus":
            return self.update(versions, VersionStatus.ARCHIVED, package=package, seconds=seconds)
        return self.dispose(versions, package=package, seconds=seconds)


@dataclass
class RecordingMetrics(NullMetrics):
    """Metrics that keep the upstream attempts and rate-limit waits they were told of."""

    attempts: list[tuple[str, str]] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)

    def upstream_call(self, operation: str, outcome: str, seconds: float) -> None:
        """Keep (operation, outcome)."""
        self.attempts.append((operation, outcome))

    def rate_limit_wait(self, kind: str, seconds: float, *, refused: bool) -> None:
        """Keep the limit's kind."""
        self.waits.append(kind)


MakeUpstream = Callable[..., Upstream]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh demo-seeded emulator per test, so that no late call leaks into another test."""
    with Emulator(seed=load_demo_seed()) as emulator:
        yield emulator


@pytest.fixture
def make_upstream(emu: Emulator) -> Iterator[MakeUpstream]:
    """Build adapters the way bootstrap does (one pooled client each), closing them after."""
    clients: list[CodeArtifactClient] = []

    def make(
        endpoint_url: str | None = None,
        *,
        access_key_id: str = DEMO_ACCESS_KEY_ID,
        secret_access_key: str = DEMO_SECRET_ACCESS_KEY,
        metrics: RecordingMetrics | None = None,
    ) -> Upstream:
        settings = UpstreamSettings(
            endpoint_url=endpoint_url or emu.endpoint_url,
            region=DEMO_REGION,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            connect_timeout_seconds=1.0,
            read_timeout_seconds=READ_TIMEOUT,
        )
        client = build_codeartifact_client(settings, pool_size=4)
        clients.append(client)
        sleeps = SleepRecorder()
        adapter = BotoCodeArtifact(client, RETRY, sleep=sleeps, metrics=metrics)
        return Upstream(adapter, client, sleeps)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def upstream(make_upstream: MakeUpstream) -> Upstream:
    """An adapter for the test's emulator with the demo credentials."""
    return make_upstream()


def status_of(emu: Emulator, package: PackageRef, version: str) -> str | None:
    """The emulator's status of one version of `package` (None when it does not exist)."""
    return emu.version_status(
        package.domain,
        package.repository,
        package.format.value,
        package.namespace,
        package.package,
        version,
    )


def test_deletes_versions_and_reports_each_outcome(emu: Emulator, upstream: Upstream) -> None:
    """A delete returns per-version results and the request id, sending namespace and status."""
    outcome = upstream.delete(
        ["2.0.0", "9.9.9"], package=WIDGETS, expected_status=VersionStatus.PUBLISHED
    )

    calls = emu.calls(OPERATION)
    assert 1 == len(calls)
    assert {
        "2.0.0": SuccessfulVersion(
            revision="rENBbyg200Bb6PRyV64puiI6Zk7S4SN4uqB92OH/OIY=", status=VersionStatus.DELETED
        )
    } == outcome.successful
    assert ["9.9.9"] == list(outcome.failed)
    assert VersionErrorCode.NOT_FOUND == outcome.failed["9.9.9"].code
    assert (calls[0].request_id,) == outcome.aws_request_ids
    assert "acme" == calls[0].params["namespace"]
    assert "Published" == calls[0].params["expectedStatus"]
    assert status_of(emu, WIDGETS, "2.0.0") is None


def test_throttled_once_honours_retry_after(emu: Emulator, upstream: Upstream) -> None:
    """One 429 with Retry-After 2 is retried after at least 2 s, then the delete succeeds."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="throttle", count=1, retry_after_seconds=2))

    outcome = upstream.delete(["1.0.0"])

    assert ["1.0.0"] == list(outcome.successful)
    assert 1 == len(upstream.sleeps.delays)
    assert upstream.sleeps.delays[0] >= 2.0
    assert 2 == len(emu.calls(OPERATION))


def test_throttled_forever_raises_after_max_attempts(emu: Emulator, upstream: Upstream) -> None:
    """Throttling on every attempt raises UpstreamThrottledError carrying the Retry-After."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="throttle", retry_after_seconds=1))

    with pytest.raises(UpstreamThrottledError) as caught:
        upstream.delete(["1.0.0"])

    assert 1.0 == caught.value.retry_after_seconds
    assert "ThrottlingException" == caught.value.aws_error_code
    assert RETRY.max_attempts == len(emu.calls(OPERATION))
    assert RETRY.max_attempts - 1 == len(upstream.sleeps.delays)


def test_retry_after_beyond_the_deadline_is_not_waited_for(
    emu: Emulator, upstream: Upstream
) -> None:
    """A Retry-After longer than the time left raises at once: one call, no sleep."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="throttle", retry_after_seconds=5))

    with pytest.raises(UpstreamThrottledError):
        upstream.delete(["1.0.0"], seconds=2.0)

    assert 1 == len(emu.calls(OPERATION))
    assert [] == upstream.sleeps.delays


def test_internal_error_once_is_retried(emu: Emulator, upstream: Upstream) -> None:
    """One 500 InternalServerException is retried and the delete then succeeds."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="internal", count=1))

    outcome = upstream.delete(["1.0.0"])

    assert ["1.0.0"] == list(outcome.successful)
    assert 2 == len(emu.calls(OPERATION))
    assert 1 == len(upstream.sleeps.delays)


def test_internal_error_forever_raises_after_max_attempts(
    emu: Emulator, upstream: Upstream
) -> None:
    """A 500 on every attempt raises UpstreamInternalError after max_attempts calls."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="internal"))

    with pytest.raises(UpstreamInternalError) as caught:
        upstream.delete(["1.0.0"])

    assert "InternalServerException" == caught.value.aws_error_code
    assert caught.value.aws_request_id is not None
    assert RETRY.max_attempts == len(emu.calls(OPERATION))


def test_answers_lost_on_every_attempt_end_outcome_unknown(
    emu: Emulator, upstream: Upstream
) -> None:
    """Every attempt applied and its connection dropped: each lost answer is retried, then the
    error says the outcome is unknown; the first attempt deleted the version."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="drop_after_apply"))

    with pytest.raises(UpstreamUnavailableError) as caught:
        upstream.delete(["1.0.0"])

    assert caught.value.outcome_unknown is True
    assert RETRY.max_attempts == len(emu.calls(OPERATION))
    assert RETRY.max_attempts - 1 == len(upstream.sleeps.delays)
    assert status_of(emu, LEFT_PAD, "1.0.0") is None


def test_a_retry_after_a_lost_answer_is_marked(emu: Emulator, upstream: Upstream) -> None:
    """The first attempt applied, its answer lost: the retry's NOT_FOUND comes back marked
    after_lost_response, for the use case to read as "deleted by the lost attempt"."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="drop_after_apply", count=1))

    outcome = upstream.delete(["1.0.0"])

    assert outcome.after_lost_response is True
    assert {"1.0.0": VersionErrorCode.NOT_FOUND} == {v: f.code for v, f in outcome.failed.items()}
    assert 2 == len(emu.calls(OPERATION))


def test_a_drop_before_apply_is_retried_and_applies_once(emu: Emulator, upstream: Upstream) -> None:
    """A connection dropped before applying looks the same to the client: retried, and the
    retry deletes the version (still marked, since the client cannot tell)."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="drop", count=1))

    outcome = upstream.delete(["1.0.0"])

    assert ["1.0.0"] == list(outcome.successful)
    assert outcome.after_lost_response is True
    assert [False, True] == [call.applied for call in emu.calls(OPERATION)]


def test_a_clean_failure_after_a_lost_answer_raises_the_lost_one(
    emu: Emulator, upstream: Upstream
) -> None:
    """Applied and dropped, then 500s until the attempts run out: the error raised is the
    lost answer's (outcome unknown), not the 500 (which would say nothing was applied)."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="drop_after_apply", count=1))
    emu.add_fault(FaultRule(operation=OPERATION, kind="internal"))

    with pytest.raises(UpstreamUnavailableError) as caught:
        upstream.delete(["1.0.0"])

    assert caught.value.outcome_unknown is True
    assert isinstance(caught.value.__cause__, UpstreamInternalError)
    assert status_of(emu, LEFT_PAD, "1.0.0") is None


def test_deadline_bounds_the_read_without_changing_the_client(
    emu: Emulator, upstream: Upstream
) -> None:
    """A 1 s deadline cuts a 3 s answer short; a later call on the same client keeps its time."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="latency", latency_seconds=3.0, count=1))
    emu.add_fault(FaultRule(operation=OPERATION, kind="latency", latency_seconds=1.2, count=1))

    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        upstream.delete(["1.0.0"], seconds=1.0)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert caught.value.outcome_unknown is True
    assert [] == upstream.sleeps.delays
    # 1.2 s is longer than the first call's read timeout: it would fail had that leaked.
    outcome = upstream.delete(["1.1.0"], seconds=10.0)
    assert ["1.1.0"] == list(outcome.successful)
    config: Any = upstream.client.meta.config  # the stubs do not declare read_timeout
    assert READ_TIMEOUT == config.read_timeout


def test_concurrent_calls_each_get_their_own_read_timeout(
    emu: Emulator, upstream: Upstream
) -> None:
    """On one shared client, a short deadline times out while a long one waits and succeeds."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="latency", latency_seconds=1.5))
    start = threading.Barrier(2)

    def delete(version: str, seconds: float) -> tuple[float, DeleteOutcome | UpstreamError]:
        start.wait(timeout=5)
        began = time.monotonic()
        try:
            result: DeleteOutcome | UpstreamError = upstream.delete([version], seconds=seconds)
        except UpstreamError as error:
            result = error
        return time.monotonic() - began, result

    with ThreadPoolExecutor(2) as pool:
        short = pool.submit(delete, "1.0.0", 0.5)
        long = pool.submit(delete, "1.1.0", 5.0)
        short_took, short_result = short.result(timeout=10)
        long_took, long_result = long.result(timeout=10)

    assert isinstance(short_result, UpstreamTimeoutError)
    assert short_took < 1.0
    assert isinstance(long_result, DeleteOutcome)
    assert ["1.1.0"] == list(long_result.successful)
    assert long_took > 1.0  # it waited out the latency that timed the short call out
    assert status_of(emu, LEFT_PAD, "1.1.0") is None


def test_upstream_down_is_retried_and_not_outcome_unknown(make_upstream: MakeUpstream) -> None:
    """A refused connection is retried max_attempts times, then UpstreamUnavailableError."""
    upstream = make_upstream(f"http://127.0.0.1:{free_port()}")

    with pytest.raises(UpstreamUnavailableError) as caught:
        upstream.delete(["1.0.0"])

    assert caught.value.outcome_unknown is False
    assert RETRY.max_attempts - 1 == len(upstream.sleeps.delays)


@pytest.mark.parametrize(
    ("access_key_id", "secret_access_key", "aws_error_code"),
    [
        pytest.param(
            DEMO_ACCESS_KEY_ID, "not-the-secret", "InvalidSignatureException", id="wrong-secret"
        ),
        pytest.param(
            "AKIAUNKNOWNUNKNOWN00",
            DEMO_SECRET_ACCESS_KEY,
            "UnrecognizedClientException",
            id="unknown-key",
        ),
    ],
)
def test_rejected_credentials_are_the_gateways_fault(
    emu: Emulator,
    make_upstream: MakeUpstream,
    access_key_id: str,
    secret_access_key: str,
    aws_error_code: str,
) -> None:
    """A request signed with a wrong secret or an unknown key raises GatewayCredentialsError."""
    upstream = make_upstream(access_key_id=access_key_id, secret_access_key=secret_access_key)

    with pytest.raises(GatewayCredentialsError) as caught:
        upstream.delete(["1.0.0"])

    assert aws_error_code == caught.value.aws_error_code
    assert [] == upstream.sleeps.delays
    assert 1 == len(emu.calls(OPERATION))
    assert "Published" == status_of(emu, LEFT_PAD, "1.0.0")


@pytest.mark.parametrize(
    ("package", "resource_type", "resource_id"),
    [
        pytest.param(
            PackageRef("no-such-domain", "dev-shared", PackageFormat.NPM, "left-pad"),
            "domain",
            "no-such-domain",
            id="domain",
        ),
        pytest.param(
            PackageRef("demo", "dev-shared", PackageFormat.NPM, "no-such-package"),
            "package",
            "no-such-package",
            id="package",
        ),
    ],
)
def test_missing_resource_is_named(
    upstream: Upstream, package: PackageRef, resource_type: str, resource_id: str
) -> None:
    """A missing domain or package raises UpstreamNotFoundError naming the resource."""
    with pytest.raises(UpstreamNotFoundError) as caught:
        upstream.delete(["1.0.0"], package=package)

    assert resource_type == caught.value.resource_type
    assert resource_id == caught.value.resource_id
    assert "ResourceNotFoundException" == caught.value.aws_error_code


def test_transport_error_messages_do_not_name_the_endpoint(
    emu: Emulator, make_upstream: MakeUpstream
) -> None:
    """Messages of a dropped connection and of an unreachable endpoint never quote the URL."""
    emu.add_fault(FaultRule(operation=OPERATION, kind="drop"))
    down_url = f"http://127.0.0.1:{free_port()}"
    errors: list[tuple[str, UpstreamError]] = []
    for endpoint_url in (emu.endpoint_url, down_url):
        with pytest.raises(UpstreamUnavailableError) as caught:
            make_upstream(endpoint_url).delete(["1.0.0"])
        errors.append((endpoint_url, caught.value))

    for endpoint_url, error in errors:
        assert endpoint_url not in str(error)
        assert "127.0.0.1" not in error.message


def test_no_attempt_starts_without_time_left(emu: Emulator, upstream: Upstream) -> None:
    """With less than min_attempt_seconds left, nothing is sent: DeadlineTooShortError."""
    with pytest.raises(DeadlineTooShortError):
        upstream.adapter.delete_package_versions(LEFT_PAD, ["1.0.0"], None, Deadline.after(0.0))
    assert [] == emu.calls("DeletePackageVersions")


# --- UpdatePackageVersionsStatus and DisposePackageVersions ---------------------------------

UPDATE = "UpdatePackageVersionsStatus"
DISPOSE = "DisposePackageVersions"
LEFT_PAD_1_0_0 = "QuRIg163sWPQbywhzq6TW6jWiJ3fnyGc+MM7RYE4rfw="
"""The demo seed's revision of left-pad 1.0.0."""


def revision_of(upstream: Upstream, package: PackageRef, version: str) -> str:
    """The revision CodeArtifact lists now for one version of `package`."""
    return upstream.adapter.package_state(package, Deadline.after(10)).revisions[version]


def test_archive_pinned_to_revisions_reports_each_version(
    emu: Emulator, upstream: Upstream
) -> None:
    """An archive sends targetStatus, expectedStatus and versionRevisions; a pinned version
    comes back Archived with a new revision, a stale pin MISMATCHED_REVISION, a missing one
    NOT_FOUND, each with the request id."""
    outcome = upstream.update(
        ["1.0.0", "1.1.0", "9.9.9"],
        VersionStatus.ARCHIVED,
        expected_status=VersionStatus.PUBLISHED,
        revisions={"1.0.0": LEFT_PAD_1_0_0, "1.1.0": "stale-revision"},
    )

    [call] = emu.calls(UPDATE)
    assert "Archived" == call.params["targetStatus"]
    assert "Published" == call.params["expectedStatus"]
    assert {"1.0.0": LEFT_PAD_1_0_0, "1.1.0": "stale-revision"} == call.params["versionRevisions"]
    archived = outcome.successful["1.0.0"]
    assert VersionStatus.ARCHIVED == archived.status
    assert archived.revision not in ("", LEFT_PAD_1_0_0)
    assert archived.revision == revision_of(upstream, LEFT_PAD, "1.0.0")
    assert {
        "1.1.0": VersionErrorCode.MISMATCHED_REVISION,
        "9.9.9": VersionErrorCode.NOT_FOUND,
    } == {v: f.code for v, f in outcome.failed.items()}
    assert (call.request_id,) == outcome.aws_request_ids
    assert outcome.after_lost_response is False
    assert ("Archived", "Published") == (
        status_of(emu, LEFT_PAD, "1.0.0"),
        status_of(emu, LEFT_PAD, "1.1.0"),
    )


def test_restore_pinned_to_the_archived_revision(emu: Emulator, upstream: Upstream) -> None:
    """A restore pinned to the revision the archive reported moves the version back; pinned to
    the revision from before the archive it fails MISMATCHED_REVISION. No guard is sent when
    none is given."""
    archived = upstream.update(["1.0.0", "1.1.0"], VersionStatus.ARCHIVED).successful
    [first] = emu.calls(UPDATE)

    outcome = upstream.update(
        ["1.0.0", "1.1.0"],
        VersionStatus.PUBLISHED,
        expected_status=VersionStatus.ARCHIVED,
        revisions={"1.0.0": archived["1.0.0"].revision, "1.1.0": "3bqiF2ipBlErHj3d6yViwSU="},
    )

    assert {"versions", "targetStatus"} <= set(first.params)
    assert not {"expectedStatus", "versionRevisions"} & set(first.params)
    assert VersionStatus.PUBLISHED == outcome.successful["1.0.0"].status
    assert outcome.successful["1.0.0"].revision != archived["1.0.0"].revision
    assert VersionErrorCode.MISMATCHED_REVISION == outcome.failed["1.1.0"].code
    assert ("Published", "Archived") == (
        status_of(emu, LEFT_PAD, "1.0.0"),
        status_of(emu, LEFT_PAD, "1.1.0"),
    )


def test_dispose_reports_disposed_and_guards(emu: Emulator, upstream: Upstream) -> None:
    """A disposal pinned to the current revision reports Disposed; another status than the
    expected one is MISMATCHED_STATUS; a Disposed version cannot be restored (NOT_ALLOWED)."""
    outcome = upstream.dispose(
        ["1.0.0", "1.1.0"],
        expected_status=VersionStatus.PUBLISHED,
        revisions={"1.0.0": LEFT_PAD_1_0_0},
    )
    mismatched = upstream.dispose(["1.0.0"], expected_status=VersionStatus.ARCHIVED)
    restore = upstream.update(["1.0.0"], VersionStatus.PUBLISHED)

    assert {VersionStatus.DISPOSED} == {v.status for v in outcome.successful.values()}
    assert ["1.0.0", "1.1.0"] == sorted(outcome.successful)
    assert VersionErrorCode.MISMATCHED_STATUS == mismatched.failed["1.0.0"].code
    assert VersionErrorCode.NOT_ALLOWED == restore.failed["1.0.0"].code
    assert LEFT_PAD_1_0_0 == emu.calls(DISPOSE)[0].params["versionRevisions"]["1.0.0"]
    assert "Disposed" == status_of(emu, LEFT_PAD, "1.0.0")


def test_an_invalid_target_status_is_a_validation_error(emu: Emulator, upstream: Upstream) -> None:
    """Disposed is not a target of UpdatePackageVersionsStatus: UpstreamValidationError, sent
    once (not retried), nothing changed."""
    with pytest.raises(UpstreamValidationError) as caught:
        upstream.update(["1.0.0"], VersionStatus.DISPOSED)

    assert ("ValidationException", "FIELD_VALIDATION_FAILED") == (
        caught.value.aws_error_code,
        caught.value.reason,
    )
    assert 1 == len(emu.calls(UPDATE))
    assert "Published" == status_of(emu, LEFT_PAD, "1.0.0")


@pytest.mark.parametrize("operation", [UPDATE, DISPOSE])
def test_a_missing_package_is_named(upstream: Upstream, operation: str) -> None:
    """A status update or disposal of a package that does not exist raises
    UpstreamNotFoundError naming it."""
    missing = PackageRef("demo", "dev-shared", PackageFormat.NPM, "no-such-package")
    with pytest.raises(UpstreamNotFoundError) as caught:
        upstream.archive_or_dispose(operation, ["1.0.0"], package=missing)

    assert ("package", "no-such-package") == (
        caught.value.resource_type,
        caught.value.resource_id,
    )


@pytest.mark.parametrize("operation", [UPDATE, DISPOSE])
def test_new_writes_are_throttled_and_retried_like_deletes(
    emu: Emulator, make_upstream: MakeUpstream, operation: str
) -> None:
    """Two 429s with Retry-After 1 are waited out (at least 1 s each) and the third attempt
    applies; every attempt took a turn of the write rate limit and is counted under its
    operation's name."""
    metrics = RecordingMetrics()
    upstream = make_upstream(metrics=metrics)
    emu.add_fault(FaultRule(operation=operation, kind="throttle", count=2, retry_after_seconds=1))

    outcome = upstream.archive_or_dispose(operation, ["1.0.0"])

    assert ["1.0.0"] == list(outcome.successful)
    assert outcome.after_lost_response is False
    assert [429, 429, 200] == [call.status for call in emu.calls(operation)]
    assert 2 == len(upstream.sleeps.delays)
    assert min(upstream.sleeps.delays) >= 1.0
    assert [(operation, "throttled"), (operation, "throttled"), (operation, "ok")] == (
        metrics.attempts
    )
    assert ["write", "write", "write"] == metrics.waits


@pytest.mark.parametrize("operation", [UPDATE, DISPOSE])
def test_new_writes_retry_internal_errors_until_max_attempts(
    emu: Emulator, upstream: Upstream, operation: str
) -> None:
    """A 500 on every attempt raises UpstreamInternalError after max_attempts calls."""
    emu.add_fault(FaultRule(operation=operation, kind="internal"))

    with pytest.raises(UpstreamInternalError):
        upstream.archive_or_dispose(operation, ["1.0.0"])

    assert RETRY.max_attempts == len(emu.calls(operation))


def test_a_pinned_archive_retried_after_a_lost_answer_is_marked(
    emu: Emulator, upstream: Upstream
) -> None:
    """The first attempt archived the version and its answer was lost: the retry's
    MISMATCHED_REVISION (the pin is now stale) comes back marked after_lost_response, for the
    caller to check the version's state rather than read it as a failure."""
    emu.add_fault(FaultRule(operation=UPDATE, kind="drop_after_apply", count=1))

    outcome = upstream.update(
        ["1.0.0"], VersionStatus.ARCHIVED, revisions={"1.0.0": LEFT_PAD_1_0_0}
    )

    assert outcome.after_lost_response is True
    assert {"1.0.0": VersionErrorCode.MISMATCHED_REVISION} == {
        v: f.code for v, f in outcome.failed.items()
    }
    assert [True, True] == [call.applied for call in emu.calls(UPDATE)]
    assert "Archived" == status_of(emu, LEFT_PAD, "1.0.0")


def test_an_unguarded_archive_retried_after_a_lost_answer_succeeds_again(
    emu: Emulator, upstream: Upstream
) -> None:
    """Without guards the retry of an applied archive is a no-op: the version is reported
    Archived with the revision the lost attempt issued, and the outcome is marked."""
    emu.add_fault(FaultRule(operation=UPDATE, kind="drop_after_apply", count=1))

    outcome = upstream.update(["1.0.0"], VersionStatus.ARCHIVED)

    revision = revision_of(upstream, LEFT_PAD, "1.0.0")
    assert outcome.after_lost_response is True
    assert {"1.0.0": SuccessfulVersion(revision, VersionStatus.ARCHIVED)} == outcome.successful


def test_a_dispose_dropped_before_applying_is_retried_and_marked(
    emu: Emulator, upstream: Upstream
) -> None:
    """A connection dropped before applying looks like a lost answer: retried, the retry
    disposes the version, and the outcome is marked since the client cannot tell."""
    emu.add_fault(FaultRule(operation=DISPOSE, kind="drop", count=1))

    outcome = upstream.dispose(["1.0.0"], revisions={"1.0.0": LEFT_PAD_1_0_0})

    assert VersionStatus.DISPOSED == outcome.successful["1.0.0"].status
    assert outcome.after_lost_response is True
    assert [False, True] == [call.applied for call in emu.calls(DISPOSE)]


@pytest.mark.parametrize("operation", [UPDATE, DISPOSE])
def test_a_clean_failure_after_a_lost_answer_of_a_new_write_raises_the_lost_one(
    emu: Emulator, upstream: Upstream, operation: str
) -> None:
    """Applied and dropped, then 500s: the error raised says the outcome is unknown."""
    emu.add_fault(FaultRule(operation=operation, kind="drop_after_apply", count=1))
    emu.add_fault(FaultRule(operation=operation, kind="internal"))

    with pytest.raises(UpstreamUnavailableError) as caught:
        upstream.archive_or_dispose(operation, ["1.0.0"])

    assert caught.value.outcome_unknown is True
    assert "outcome is unknown" in caught.value.message
    assert isinstance(caught.value.__cause__, UpstreamInternalError)


def test_a_missing_package_after_a_lost_status_update_is_outcome_unknown(
    emu: Emulator, upstream: Upstream
) -> None:
    """A status update cannot remove a package (unlike a delete of its last versions), so a
    package missing on the retry is a clean failure after a lost answer: outcome unknown."""
    emu.add_fault(FaultRule(operation=UPDATE, kind="drop", count=1))
    missing = PackageRef("demo", "dev-shared", PackageFormat.NPM, "no-such-package")

    with pytest.raises(UpstreamUnavailableError) as caught:
        upstream.update(["1.0.0"], VersionStatus.ARCHIVED, package=missing)

    assert caught.value.outcome_unknown is True
    assert isinstance(caught.value.__cause__, UpstreamNotFoundError)


@pytest.mark.parametrize("operation", [UPDATE, DISPOSE])
def test_new_writes_start_no_attempt_without_time_left(
    emu: Emulator, upstream: Upstream, operation: str
) -> None:
    """With less than min_attempt_seconds left, nothing is sent: DeadlineTooShortError."""
    with pytest.raises(DeadlineTooShortError):
        upstream.archive_or_dispose(operation, ["1.0.0"], seconds=0.0)
    assert [] == emu.calls(operation)


def test_the_deadline_bounds_a_status_update(emu: Emulator, upstream: Upstream) -> None:
    """A 1 s deadline cuts a 3 s answer short: UpstreamTimeoutError, outcome unknown."""
    emu.add_fault(FaultRule(operation=UPDATE, kind="latency", latency_seconds=3.0, count=1))

    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        upstream.update(["1.0.0"], VersionStatus.ARCHIVED, seconds=1.0)

    assert time.monotonic() - started < 2.0
    assert caught.value.outcome_unknown is True


def test_package_state_has_every_versions_revision_in_every_status(
    emu: Emulator, upstream: Upstream
) -> None:
    """package_state reads all pages: a revision and a status for each of 1,003 versions,
    Archived and Disposed included, matching what the emulator holds."""
    package = PackageRef("demo", "dev-shared", PackageFormat.NPM, "many")
    statuses = ("Published", "Unlisted", "Archived", "Disposed")
    expected = {
        f"1.0.{n}": (
            statuses[n % 4],
            emu.put_version(
                "demo", "dev-shared", "npm", None, "many", f"1.0.{n}", status=statuses[n % 4]
            ),
        )
        for n in range(1003)
    }

    state = upstream.adapter.package_state(package, Deadline.after(30))

    assert 2 == len(emu.calls("ListPackageVersions"))
    assert {v: status for v, (status, _) in expected.items()} == {
        v: s.value for v, s in state.statuses.items()
    }
    assert {v: revision for v, (_, revision) in expected.items()} == dict(state.revisions)
    assert "1.0.1000" == state.latest  # the newest Published version
