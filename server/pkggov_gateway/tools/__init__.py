"""Operator tools: ``pkggov audit verify`` and ``pkggov policy test``.

They read the audit store or the policy files directly, offline, and are run by the `pkggov`
CLI, never by the gateway. Tools may import adapters and domain; adapters never import tools.
"""

from __future__ import annotations
