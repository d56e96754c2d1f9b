"""Operator tools: ``pkggov-admin audit verify`` and ``pkggov-admin policy validate|test``.

They read the audit store or the policy files directly, offline, and are run by the
`pkggov-admin` command (``cli``), never by the gateway. Tools may import adapters and domain;
adapters never import tools.
"""

from __future__ import annotations
