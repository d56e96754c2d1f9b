"""Who is calling: the authenticated principal and how it was established."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["AuthMethod", "Principal"]


class AuthMethod(StrEnum):
    """How the caller's identity was established."""

    MTLS = "mtls"
    PROXY = "proxy"
    DEV = "dev"
    TOKEN = "token"  # noqa: S105 - a way of identifying, not a secret
    """A signed workload token (OIDC / JWT bearer) from a configured issuer."""
    INTERNAL = "internal"
    """The gateway itself (the purge worker); never a caller's."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its id (SPIFFE URI, DNS name, CN, or dev name), method, peer."""

    id: str
    method: AuthMethod
    peer: str
    issuer: str | None = None
    """For a token: the configured issuer's name (its ids are ``<issuer>:<subject>``)."""
    token_id: str | None = None
    """For a token: its ``jti``, or a SHA-256 prefix of it (never the token itself)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """For a token: the claims configured to become Cedar attributes (`claims` record)."""
    claim_groups: tuple[str, ...] = ()
    """For a token: the groups its claims put it in (besides the entities file's)."""
