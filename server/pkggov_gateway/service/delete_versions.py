"""The DeletePackageVersions use case: validate, split into calls of at most 100, merge.

Chunk rule (also in the README). A request of more than 100 distinct versions is split, in
request order, into chunks of at most 100 that run with bounded parallelism. Then:

* If every chunk returns a result, the maps are merged: the call is OK.
* If no chunk returns a result (every attempted chunk raised), the call fails with the
  error of the first chunk, in request order, whose outcome is unknown (a timeout or a
  dropped connection: it may have deleted versions, and the caller must be told), else with
  the error of the first failed chunk, exactly as a single call would.
* If some chunks return results and others raise, the call is OK so that no deletion is
  hidden: the merged maps hold every returned version, and every version of a chunk that
  raised, or that was not started, is in failed_versions with code SKIPPED and a message
  saying which of three cases applies: "not deleted" (the chunk failed and CodeArtifact
  applied nothing), "outcome unknown" (the chunk timed out or its connection dropped:
  it may have been applied), or "not attempted" (an earlier chunk failed, or the gateway
  began to shut down, so it started no new chunk).
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import (
    DeadlineTooShortError,
    GatewayDrainingError,
    PkggovError,
    UpstreamError,
)
from pkggov_gateway.domain.model import (
    DeleteOutcome,
    DeleteRequest,
    FailedVersion,
    SuccessfulVersion,
    VersionErrorCode,
)
from pkggov_gateway.domain.validation import (
    CODEARTIFACT_MAX_VERSIONS_PER_CALL,
    RawDeleteRequest,
    validate_delete_request,
)
from pkggov_gateway.ports import CodeArtifactPort

__all__ = ["DeleteLimits", "DeletePackageVersions"]


@dataclass(frozen=True, slots=True)
class DeleteLimits:
    """The limits the use case enforces."""

    max_versions: int = 1000
    chunk_size: int = CODEARTIFACT_MAX_VERSIONS_PER_CALL
    chunk_parallelism: int = 4
    min_upstream_seconds: float = 0.2


@dataclass(slots=True)
class _ChunkResult:
    versions: Sequence[str]
    outcome: DeleteOutcome | None = None
    error: Exception | None = None


class DeletePackageVersions:
    """Validates a raw request and deletes its versions through the CodeArtifact port."""

    def __init__(self, upstream: CodeArtifactPort, executor: Executor, limits: DeleteLimits):
        self._upstream = upstream
        self._executor = executor
        self._limits = limits

    def validate(self, raw: RawDeleteRequest) -> DeleteRequest:
        """Check the request's fields; raise InvalidRequestError naming every bad field."""
        return validate_delete_request(raw, max_versions=self._limits.max_versions)

    def execute(self, raw: RawDeleteRequest, deadline: Deadline) -> DeleteOutcome:
        """Validate, then delete within `deadline`; see the module docstring for chunks."""
        request = self.validate(raw)
        remaining = deadline.remaining()
        if remaining < self._limits.min_upstream_seconds:
            raise DeadlineTooShortError(remaining, self._limits.min_upstream_seconds)
        size = self._limits.chunk_size
        chunks = [request.versions[i : i + size] for i in range(0, len(request.versions), size)]
        if len(chunks) == 1:
            return self._call(request, chunks[0], deadline)
        results = self._run_chunks(request, chunks, deadline)
        return _merge(results, draining=deadline.is_draining())

    def _call(
        self, request: DeleteRequest, versions: Sequence[str], deadline: Deadline
    ) -> DeleteOutcome:
        if deadline.is_draining():
            raise GatewayDrainingError
        remaining = deadline.remaining()
        if remaining < self._limits.min_upstream_seconds:
            raise DeadlineTooShortError(remaining, self._limits.min_upstream_seconds)
        return self._upstream.delete_package_versions(
            request.package, versions, request.expected_status, deadline
        )

    def _run_chunks(
        self, request: DeleteRequest, chunks: Sequence[Sequence[str]], deadline: Deadline
    ) -> list[_ChunkResult]:
        results = [_ChunkResult(chunk) for chunk in chunks]
        pending = deque(results)
        lock = threading.Lock()
        failed = threading.Event()

        def lane() -> None:
            while not failed.is_set():
                with lock:
                    if not pending:
                        return
                    result = pending.popleft()
                try:
                    result.outcome = self._call(request, result.versions, deadline)
                except Exception as exc:  # noqa: BLE001 - any failure must not hide other chunks
                    result.error = exc
                    failed.set()

        lanes = min(self._limits.chunk_parallelism, len(chunks))
        futures: list[Future[None]] = [
            self._executor.submit(contextvars.copy_context().run, lane) for _ in range(lanes)
        ]
        for future in futures:
            future.result()
        return results


def _merge(results: list[_ChunkResult], *, draining: bool) -> DeleteOutcome:
    returned = [r for r in results if r.outcome is not None]
    if not returned:
        errors = [r.error for r in results if r.error is not None]
        unknown = [e for e in errors if isinstance(e, UpstreamError) and e.outcome_unknown]
        raise (unknown or errors)[0]
    successful: dict[str, SuccessfulVersion] = {}
    failed: dict[str, FailedVersion] = {}
    request_ids: list[str] = []
    for index, result in enumerate(results, start=1):
        if result.outcome is not None:
            successful.update(result.outcome.successful)
            failed.update(result.outcome.failed)
            request_ids.extend(result.outcome.aws_request_ids)
            continue
        message = _skipped_message(index, len(results), result.error, draining=draining)
        for version in result.versions:
            failed[version] = FailedVersion(VersionErrorCode.SKIPPED, message)
    return DeleteOutcome(successful, failed, tuple(request_ids))


def _skipped_message(index: int, total: int, error: Exception | None, *, draining: bool) -> str:
    where = f"chunk {index} of {total}"
    if isinstance(error, GatewayDrainingError) or (error is None and draining):
        return f"not attempted: the gateway is shutting down, so {where} was not sent"
    if error is None:
        return f"not attempted: an earlier chunk failed, so {where} was not sent"
    detail = error.message if isinstance(error, PkggovError) else "internal gateway error"
    if isinstance(error, UpstreamError) and error.outcome_unknown:
        return (
            f"outcome unknown: {where} may have been applied ({detail}); "
            "check the version before retrying"
        )
    if isinstance(error, UpstreamError | DeadlineTooShortError):
        return f"not deleted: {where} failed ({detail})"
    return f"outcome unknown: {where} failed ({detail})"
