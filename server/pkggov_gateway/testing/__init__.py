"""Fakes of the gateway's ports, shipped for tests (as structlog ships structlog.testing).

Each implements a port of `pkggov_gateway.ports` in memory, records what it was asked, and
can be told to fail, so the governed call can be tested without a database, CodeArtifact or
Cedar:

- `InMemoryAuditStore`: the AuditStore, answering as the SQL store does (the contract test in
  tests/integration/test_audit_store_contract.py runs one suite on both); `fail_next` / `heal`.
- `FakeCodeArtifact`: the CodeArtifactPort over packages in memory; `fail_next`,
  `lose_next_answer`, `calls` / `sent`.
- `FakePolicy`: the PolicyEngine and its PolicyView with deny lists and groups.
- `FakePackageLocks`: PackageLocks that record their holds and can be busy.

Importing this package loads neither grpc, boto3 nor a SQL driver, and the production wiring
(`bootstrap`) never imports it.
"""

from __future__ import annotations

from pkggov_gateway.testing._audit_store import InMemoryAuditStore
from pkggov_gateway.testing._codeartifact import (
    DELETE,
    DISPOSE,
    READ,
    UPDATE_STATUS,
    WRITES,
    FakeCodeArtifact,
    Operation,
    UpstreamCall,
)
from pkggov_gateway.testing._policy import FakePackageLocks, FakePolicy

__all__ = [
    "DELETE",
    "DISPOSE",
    "READ",
    "UPDATE_STATUS",
    "WRITES",
    "FakeCodeArtifact",
    "FakePackageLocks",
    "FakePolicy",
    "InMemoryAuditStore",
    "Operation",
    "UpstreamCall",
]
