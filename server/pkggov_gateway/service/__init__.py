"""Use cases: the gateway's operations, written against ports only."""

from __future__ import annotations
