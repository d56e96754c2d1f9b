"""The CodeArtifact port over one shared boto3 client, retrying within the caller's deadline.

Every call is bounded by the caller's deadline: a `before-call` hook sets botocore's
per-request `read_timeout` from the time the caller has left, and retries (of throttling,
internal errors and refused connections only) never sleep past it. botocore's own retries
are switched off so that this module alone decides what is retried.

Every attempt first takes a send slot from the rate limit of its kind (writes, reads) for the
account it addresses (rate_limit.py), so a burst queues within its deadline instead of being
throttled by CodeArtifact.

botocore errors become domain errors by the tables of codeartifact_errors.py.

The answers of the operations whose output is only strings in structures, lists and maps
(`PLAIN_JSON_OPERATIONS`: the listing of a package's versions and the per-version writes) are
decoded by one `json.loads` in a `before-parse` hook instead of botocore's modeled parser,
which for these outputs only copies each value but walks the model to do it (several µs per
version: a quarter of the gateway's CPU for a 1,000-version request). The adapter reads the
same keys either way; a null value is read as absent, as botocore drops it.
"""

from __future__ import annotations

import contextvars
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from botocore import exceptions as bce

from pkggov_gateway.adapters.codeartifact_errors import translate
from pkggov_gateway.adapters.rate_limit import Pacer, RateLimits
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    DeadlineTooShortError,
    GatewayDrainingError,
    UpstreamError,
    UpstreamInternalError,
    UpstreamNotFoundError,
    UpstreamRateLimitedError,
    UpstreamThrottledError,
    UpstreamUnavailableError,
)
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    FailedVersion,
    PackageFormat,
    PackageRef,
    PackageState,
    SuccessfulVersion,
    VersionErrorCode,
    VersionStatus,
)
from pkggov_gateway.ports import Metrics, NullMetrics

if TYPE_CHECKING:
    from mypy_boto3_codeartifact import CodeArtifactClient

__all__ = ["BotoCodeArtifact", "RetryPolicy"]

log = structlog.get_logger("pkggov.upstream")

_CALL_READ_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "pkggov_call_read_timeout", default=None
)
_CALL_SEND_SLOT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "pkggov_call_send_slot", default=None
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the adapter retries and bounds each attempt (values come from UpstreamSettings).

    `max_attempts` attempts in all, full-jitter exponential backoff from `base_delay_seconds`
    up to `max_delay_seconds`; each attempt's read timeout is the time left minus
    `deadline_margin_seconds`, at most `read_timeout_seconds`; no attempt starts with less than
    `min_attempt_seconds` left.
    """

    max_attempts: int
    base_delay_seconds: float
    read_timeout_seconds: float
    deadline_margin_seconds: float
    min_attempt_seconds: float
    max_delay_seconds: float = 2.0

    def backoff(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1-based), with full jitter."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def _set_read_timeout(context: dict[str, Any], **_: Any) -> None:
    """botocore `before-call` hook: bound this request's read timeout by the deadline."""
    timeout = _CALL_READ_TIMEOUT.get()
    if timeout is not None:
        context["read_timeout"] = timeout


def _await_send_slot(**_: Any) -> None:
    """botocore `before-send` hook: wait for the rate limit's send slot right before the
    request goes on the wire (after signing), so that the limit holds as close as possible to
    where CodeArtifact counts."""
    wait = _CALL_SEND_SLOT.get()
    if wait is not None:
        wait()


PLAIN_JSON_OPERATIONS = (
    "ListPackageVersions",
    "DeletePackageVersions",
    "UpdatePackageVersionsStatus",
    "DisposePackageVersions",
)
"""The operations whose successful answer `_decode_plain_json` decodes: their output (in
botocore's model) is only strings in structures, lists and maps, each member named in the JSON
as in the model and none in a header, so the JSON body *is* the output (a unit test checks the
model)."""


def _decode_plain_json(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore `before-parse` hook of `PLAIN_JSON_OPERATIONS`: hand a successful answer's
    JSON body over as the parsed output and leave botocore an empty body to parse (it still
    parses the headers: ResponseMetadata). An error answer, or a body that is not a JSON
    object, is left to botocore's parser, which reports it as it always does.

    What differs from the modeled parse: a member the model does not know, and a null, are
    passed on (botocore drops both); the adapter reads only the members it knows, and reads
    null as absent."""
    if not 200 <= response_dict.get("status_code", 0) < 300:
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes) or not body:
        return
    try:
        decoded = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError too
        return
    if not isinstance(decoded, dict):
        return
    decoded.pop("ResponseMetadata", None)  # botocore's, from the headers
    customized_response_dict.update(decoded)
    response_dict["body"] = b"{}"


_STATUSES = {status.value: status for status in VersionStatus}
_ERROR_CODES = {code.value: code for code in VersionErrorCode}


def _parse_status(value: Any) -> VersionStatus | None:
    return _STATUSES.get(value) if isinstance(value, str) else None


# --- the adapter ----------------------------------------------------------------------------


class BotoCodeArtifact:
    """CodeArtifactPort over a shared, thread-safe boto3 CodeArtifact client."""

    def __init__(
        self,
        client: CodeArtifactClient,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        rate_limits: RateLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics or NullMetrics()
        self._retry = retry
        self._sleep = sleep
        self._rate_limits = rate_limits or RateLimits()
        self._limiters: dict[tuple[str, str], Pacer] = {}
        self._limiters_lock = threading.Lock()
        client.meta.events.register(
            "before-call.codeartifact.*", _set_read_timeout, unique_id="pkggov-read-timeout"
        )
        client.meta.events.register(
            "before-send.codeartifact.*", _await_send_slot, unique_id="pkggov-send-slot"
        )
        for operation in PLAIN_JSON_OPERATIONS:
            client.meta.events.register(
                f"before-parse.codeartifact.{operation}",
                _decode_plain_json,
                unique_id=f"pkggov-plain-json-{operation}",
            )

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Delete `versions` (at most 100) of `package`, retrying within `deadline`.

        An attempt whose answer was lost (dropped connection, timeout) is retried too; the
        outcome is then marked `after_lost_response`, because the retry reports NOT_FOUND for
        the versions the lost attempt deleted. If a later attempt fails cleanly, the lost
        attempt's error is raised: the outcome is unknown, not "nothing deleted".
        """
        params = _batch_params(package, versions, expected_status, None)
        return self._batch_write(
            "delete_package_versions", params, versions, deadline, may_remove_package=True
        )

    def update_package_versions_status(
        self,
        package: PackageRef,
        versions: Sequence[str],
        target_status: VersionStatus,
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """UpdatePackageVersionsStatus: move `versions` (at most 100) to `target_status`,
        guarded by `expected_status` and each version's revision in `revisions`; retried
        within `deadline` as a delete is.

        After a lost answer the retry reports what the lost attempt left: a version it moved
        fails MISMATCHED_REVISION (or MISMATCHED_STATUS) when guarded, or succeeds again with
        the same revision when not; the outcome is marked `after_lost_response`.
        """
        params = _batch_params(package, versions, expected_status, revisions)
        params["targetStatus"] = target_status.value
        return self._batch_write("update_package_versions_status", params, versions, deadline)

    def dispose_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        deadline: Deadline,
        *,
        expected_status: VersionStatus | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> DeleteOutcome:
        """DisposePackageVersions: delete the assets of `versions` (at most 100) and keep them
        as Disposed, guarded and retried as a status update is."""
        params = _batch_params(package, versions, expected_status, revisions)
        return self._batch_write("dispose_package_versions", params, versions, deadline)

    def _batch_write(
        self,
        method: str,
        params: Mapping[str, Any],
        versions: Sequence[str],
        deadline: Deadline,
        *,
        may_remove_package: bool = False,
    ) -> DeleteOutcome:
        """One per-version write (delete, status update, disposal), retried within
        `deadline`, lost answers included (see `delete_package_versions`).

        `may_remove_package`: the operation can remove the package with its last versions
        (a delete), so a package reported missing after a lost answer means every version was
        removed by the lost attempt. For the others a missing package is a clean failure.
        """
        lost: list[UpstreamError] = []
        try:
            response = self._call_with_retries(method, params, deadline, lost_answers=lost)
        except UpstreamNotFoundError as error:
            if not lost:
                raise
            gone = error.resource_type in {"package", "package-version"}
            if not (may_remove_package and gone):
                raise lost[-1] from error
            # The attempt whose answer was lost deleted the package's last versions, and
            # the package with them: every version is reported NOT_FOUND, as CodeArtifact
            # reports a version that is gone.
            log.info("upstream.package_gone_after_lost_answer", versions=len(versions))
            return replace(_not_found(versions, error.aws_request_id), after_lost_response=True)
        except (UpstreamError, GatewayDrainingError) as error:
            if lost and not getattr(error, "outcome_unknown", False):
                # A later attempt failed cleanly, but an earlier one may have been applied:
                # the caller must hear that the outcome is unknown, not that nothing happened.
                raise lost[-1] from error
            raise
        outcome = _to_outcome(response)
        return replace(outcome, after_lost_response=True) if lost else outcome

    def package_state(
        self,
        package: PackageRef,
        deadline: Deadline,
        *,
        published_time_for: Sequence[str] = (),
        by_published: bool = False,
    ) -> PackageState:
        """Every version's status (ListPackageVersions, all pages; in publication order with
        `by_published`) and the default display version; DescribePackageVersion for the
        publication times asked for."""
        params = _package_params(package)
        listing = {**params, "sortBy": "PUBLISHED_TIME"} if by_published else params
        statuses: dict[str, VersionStatus] = {}
        revisions: dict[str, str] = {}
        latest: str | None = None
        token: str | None = None
        while True:
            page_params = {**listing, "maxResults": 1000, **({"nextToken": token} if token else {})}
            page = self._call_with_retries("list_package_versions", page_params, deadline)
            latest = page.get("defaultDisplayVersion") or latest
            for summary in page.get("versions") or ():
                version = str(summary["version"])
                status = _parse_status(summary.get("status"))
                if status is None:
                    log.warning("upstream.unknown_status", status=summary.get("status"))
                    status = VersionStatus.PUBLISHED  # the most protected reading
                statuses[version] = status
                revision = summary.get("revision")
                if revision:
                    revisions[version] = str(revision)
            token = page.get("nextToken")
            if not token:
                break
        published: dict[str, datetime] = {}
        for version in published_time_for:
            if version not in statuses:
                continue
            when = self.published_time(package, version, deadline)
            if when is not None:
                published[version] = when
        return PackageState(statuses, latest, published, revisions)

    def published_time(
        self, package: PackageRef, version: str, deadline: Deadline
    ) -> datetime | None:
        """DescribePackageVersion's publishedTime of `version`."""
        described = self._call_with_retries(
            "describe_package_version",
            {**_package_params(package), "packageVersion": version},
            deadline,
        )
        when = described.get("packageVersion", {}).get("publishedTime")
        return when if isinstance(when, datetime) else None

    def list_packages(
        self,
        domain: str,
        repository: str,
        deadline: Deadline,
        *,
        domain_owner: str | None = None,
        format: PackageFormat | None = None,
        namespace: str | None = None,
        prefix: str | None = None,
    ) -> list[PackageRef]:
        """ListPackages, every page, with CodeArtifact's own filters."""
        params: dict[str, Any] = {"domain": domain, "repository": repository, "maxResults": 1000}
        for key, value in (
            ("domainOwner", domain_owner),
            ("format", format.value if format else None),
            ("namespace", namespace),
            ("packagePrefix", prefix),
        ):
            if value:
                params[key] = value
        found: list[PackageRef] = []
        token: str | None = None
        while True:
            page = self._call_with_retries(
                "list_packages", {**params, **({"nextToken": token} if token else {})}, deadline
            )
            for summary in page.get("packages", []):
                try:
                    fmt = PackageFormat(summary.get("format"))
                except ValueError:
                    log.warning("upstream.unknown_format", format=summary.get("format"))
                    continue  # a format this gateway does not know is never cleaned up
                found.append(
                    PackageRef(
                        domain=domain,
                        repository=repository,
                        format=fmt,
                        package=str(summary["package"]),
                        namespace=summary.get("namespace") or None,
                        domain_owner=domain_owner,
                    )
                )
            token = page.get("nextToken")
            if not token:
                return found

    def _call_with_retries(
        self,
        method: str,
        params: Mapping[str, Any],
        deadline: Deadline,
        *,
        lost_answers: list[UpstreamError] | None = None,
    ) -> Mapping[str, Any]:
        """Call `method`, retrying what may be retried within `deadline`.

        With `lost_answers` (a per-version write: its repetition cannot change more than the
        first attempt meant to, and reports per version what the first attempt left), an
        attempt whose answer was lost is retried too, and its error is appended there so that
        the caller can read the final answer (NOT_FOUND, MISMATCHED_*) correctly.
        """
        policy = self._retry
        left = deadline.remaining() - policy.deadline_margin_seconds
        if left < policy.min_attempt_seconds:
            raise DeadlineTooShortError(deadline.remaining(), policy.min_attempt_seconds)
        # A read changes nothing, and a write that reports its lost answers can be repeated.
        retry_unknown = lost_answers is not None or method not in _WRITE_METHODS
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call_once(method, params, deadline)
            except UpstreamError as error:
                if error.outcome_unknown and lost_answers is not None:
                    lost_answers.append(error)
                delay = self._retry_delay(error, attempt, retry_unknown=retry_unknown)
                left = deadline.remaining() - policy.deadline_margin_seconds
                if delay is None or attempt >= policy.max_attempts:
                    raise
                if left - delay < policy.min_attempt_seconds:
                    log.info("upstream.retry_abandoned", reason="deadline", attempt=attempt)
                    raise
                if deadline.is_draining():
                    log.info("upstream.retry_abandoned", reason="draining", attempt=attempt)
                    raise
                log.info(
                    "upstream.retry",
                    operation=method,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=type(error).__name__,
                )
                self._sleep(delay)
                if deadline.is_draining():  # shutting down: start no further attempt
                    log.info("upstream.retry_abandoned", reason="draining", attempt=attempt)
                    raise

    def _retry_delay(
        self, error: UpstreamError, attempt: int, *, retry_unknown: bool
    ) -> float | None:
        """Seconds to wait before retrying `error`, or None when it must not be retried. An
        error whose outcome is unknown (the answer was lost) is retried only with
        `retry_unknown`."""
        if error.outcome_unknown:
            return self._retry.backoff(attempt) if retry_unknown else None
        if isinstance(error, UpstreamThrottledError):
            return max(error.retry_after_seconds or 0.0, self._retry.backoff(attempt))
        if isinstance(error, UpstreamInternalError | UpstreamUnavailableError):
            return self._retry.backoff(attempt)
        return None

    def _limiter(self, kind: str, params: Mapping[str, Any]) -> Pacer:
        """The limiter for calls of `kind` (write, read) to the account they address (the
        domain owner; "" for the gateway's own account). The Region is the client's."""
        key = (kind, str(params.get("domainOwner", "")))
        with self._limiters_lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limits = self._rate_limits
                per_second = (
                    limits.write_calls_per_second
                    if kind == "write"
                    else limits.read_calls_per_second
                )
                limiter = Pacer(limits.share(per_second))
                self._limiters[key] = limiter
            return limiter

    def _await_send_slot(self, method: str, params: Mapping[str, Any], deadline: Deadline) -> None:
        """Wait for this call's turn under the rate limit; refuse when it cannot come in time."""
        kind = _kind_of(method)
        limiter = self._limiter(kind, params)
        policy = self._retry
        budget = deadline.remaining() - policy.deadline_margin_seconds - policy.min_attempt_seconds
        waited = limiter.acquire(max(0.0, budget))
        self._metrics.rate_limit_wait(kind, waited or 0.0, refused=waited is None)
        if waited is None:
            retry_after = max(limiter.interval, limiter.expected_wait())
            log.info("upstream.rate_limited", operation=method, retry_after_s=round(retry_after, 3))
            raise UpstreamRateLimitedError(
                f"the gateway's limit of {limiter.per_second:g} CodeArtifact calls per second "
                "has no turn free before the deadline; nothing was sent",
                retry_after_seconds=retry_after,
            )
        if waited > 0 and deadline.is_draining():  # shutting down while queued: send nothing
            raise GatewayDrainingError

    def _call_once(
        self, method: str, params: Mapping[str, Any], deadline: Deadline
    ) -> Mapping[str, Any]:
        left = deadline.remaining() - self._retry.deadline_margin_seconds
        timeout = max(0.001, min(self._retry.read_timeout_seconds, left))
        token = _CALL_READ_TIMEOUT.set(timeout)
        slot = _CALL_SEND_SLOT.set(lambda: self._await_send_slot(method, params, deadline))
        operation = _OPERATION_NAMES.get(method, method)
        started = time.perf_counter()
        try:
            result: Mapping[str, Any] = getattr(self._client, method)(**params)
        except (UpstreamRateLimitedError, GatewayDrainingError):
            raise  # raised by the send-slot hook: nothing was sent
        except Exception as exc:
            error = translate(exc)
            self._metrics.upstream_call(
                operation, _error_kind(error), time.perf_counter() - started
            )
            if not isinstance(exc, bce.ClientError):
                log.warning(
                    "upstream.transport_error", error=repr(exc), mapped=type(error).__name__
                )
            raise error from exc
        finally:
            _CALL_SEND_SLOT.reset(slot)
            _CALL_READ_TIMEOUT.reset(token)
        self._metrics.upstream_call(operation, "ok", time.perf_counter() - started)
        return result


_WRITE_METHODS = frozenset(
    {"delete_package_versions", "update_package_versions_status", "dispose_package_versions"}
)
"""The operations that count against CodeArtifact's write limit; every other is a read."""

_OPERATION_NAMES = {
    "delete_package_versions": "DeletePackageVersions",
    "update_package_versions_status": "UpdatePackageVersionsStatus",
    "dispose_package_versions": "DisposePackageVersions",
    "list_package_versions": "ListPackageVersions",
    "describe_package_version": "DescribePackageVersion",
    "list_packages": "ListPackages",
}
"""boto3 method -> CodeArtifact operation name, for metrics."""


def _kind_of(method: str) -> str:
    """Which rate limit a call counts against: write or read."""
    return "write" if method in _WRITE_METHODS else "read"


def _error_kind(error: UpstreamError) -> str:
    """A metric label for an upstream error: UpstreamThrottledError -> "throttled"."""
    name = type(error).__name__.removeprefix("Upstream").removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _package_params(package: PackageRef) -> dict[str, Any]:
    """The parameters that name `package` in every CodeArtifact package operation."""
    params: dict[str, Any] = {
        "domain": package.domain,
        "repository": package.repository,
        "format": package.format.value,
        "package": package.package,
    }
    if package.domain_owner:
        params["domainOwner"] = package.domain_owner
    if package.namespace:
        params["namespace"] = package.namespace
    return params


def _batch_params(
    package: PackageRef,
    versions: Sequence[str],
    expected_status: VersionStatus | None,
    revisions: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The parameters of a per-version write: the package, `versions` and the guards given."""
    params = {**_package_params(package), "versions": list(versions)}
    if expected_status is not None:
        params["expectedStatus"] = expected_status.value
    if revisions:
        params["versionRevisions"] = dict(revisions)
    return params


def _not_found(versions: Sequence[str], request_id: str | None) -> DeleteOutcome:
    failed = {
        version: FailedVersion(VersionErrorCode.NOT_FOUND, "the package no longer exists")
        for version in versions
    }
    return DeleteOutcome(failed=failed, aws_request_ids=(request_id,) if request_id else ())


def _to_outcome(response: Mapping[str, Any]) -> DeleteOutcome:
    successful: dict[str, SuccessfulVersion] = {}
    for version, info in (response.get("successfulVersions") or {}).items():
        revision = info.get("revision")
        successful[version] = SuccessfulVersion(
            "" if revision is None else str(revision), _parse_status(info.get("status"))
        )
    failed: dict[str, FailedVersion] = {}
    for version, info in (response.get("failedVersions") or {}).items():
        raw_code = info.get("errorCode")
        raw_message = info.get("errorMessage")
        text = "" if raw_message is None else str(raw_message)
        code = _ERROR_CODES.get(raw_code) if isinstance(raw_code, str) else None
        failed[version] = FailedVersion(code, text if code is not None else f"{raw_code}: {text}")
    request_id = response.get("ResponseMetadata", {}).get("RequestId")
    return DeleteOutcome(successful, failed, (request_id,) if request_id else ())
