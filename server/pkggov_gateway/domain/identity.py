"""Who is calling: the authenticated principal and how it was established."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AuthMethod", "Principal"]


class AuthMethod(StrEnum):
    """How the caller's identity was established."""

    MTLS = "mtls"
    PROXY = "proxy"
    DEV = "dev"
    INTERNAL = "internal"
    """The gateway itself (the purge worker); never a caller's."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its id (SPIFFE URI, DNS name, CN, or dev name), method, peer."""

    id: str
    method: AuthMethod
    peer: str
