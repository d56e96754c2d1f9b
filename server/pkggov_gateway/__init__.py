"""pkggov gateway: governed DeletePackageVersions for AWS CodeArtifact over gRPC."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
