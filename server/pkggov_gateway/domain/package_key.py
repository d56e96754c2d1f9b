"""The key that names one package for locking: equal for every spelling CodeArtifact merges.

Two calls about the same package must get the same key, or they would not exclude each
other. The key is therefore deliberately coarse: it starts from `canonical_package` (PyPI's
PEP 503 names, Swift's lower case), then folds the case of every part (CodeArtifact also treats
NuGet names case-insensitively, and a coarser key only ever makes two packages share a lock),
and leaves the domain owner out (a call may name it or leave it to default to the gateway's
own account: both are the same package). Two packages sharing a key merely take turns.
"""

from __future__ import annotations

import hashlib

from pkggov_gateway.domain.model import PackageRef, canonical_package

__all__ = ["package_identity", "package_key", "package_key_id"]

_SEPARATOR = "\x1f"  # no part of a valid name can hold it (the patterns exclude \s)


def package_key(package: PackageRef) -> str:
    """The package's lock key: domain, repository, format, namespace and name, case-folded."""
    return _SEPARATOR.join(part.casefold() for part in _parts(package))


def package_identity(package: PackageRef) -> str:
    """The package exactly, as CodeArtifact names it (`canonical_package`, case kept): what
    records about one package (pending purges) are keyed by. Unlike `package_key` it never
    merges two packages (generic and Maven names are case-sensitive); like it, it leaves the
    domain owner out, which a call may name or leave to default to the gateway's account."""
    return _SEPARATOR.join(_parts(package))


def _parts(package: PackageRef) -> tuple[str, ...]:
    """Domain, repository, format, namespace and name, as CodeArtifact names the package."""
    named = canonical_package(package)
    return (
        named.domain,
        named.repository,
        named.format.value,
        named.namespace or "",
        named.package,
    )


def package_key_id(package: PackageRef) -> int:
    """`package_key` hashed to a negative signed 64-bit integer (a PostgreSQL advisory lock
    key): 63 bits of BLAKE2b with the sign bit set, so it never equals a non-negative key
    such as the audit chain's."""
    digest = hashlib.blake2b(package_key(package).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=False) % (1 << 63) - (1 << 63)
