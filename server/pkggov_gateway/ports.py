"""Ports: the interfaces the core needs from the outside world, implemented by adapters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.model import DeleteOutcome, PackageRef, VersionStatus

__all__ = ["CodeArtifactPort"]


class CodeArtifactPort(Protocol):
    """CodeArtifact as the core sees it: one DeletePackageVersions call of at most 100 versions."""

    def delete_package_versions(
        self,
        package: PackageRef,
        versions: Sequence[str],
        expected_status: VersionStatus | None,
        deadline: Deadline,
    ) -> DeleteOutcome:
        """Delete `versions` of `package` within `deadline`.

        Returns the per-version maps as CodeArtifact reported them. Raises an
        `UpstreamError` subclass (see `domain.errors`) when the call as a whole fails, or
        `DeadlineTooShortError` when too little time is left to send it.
        """
        ...
