"""Adapters: the ports (`pkggov_gateway.ports`) implemented on real things.

- `codeartifact` (the retrying boto3 adapter, with `rate_limit`) and `codeartifact_errors`
  (botocore's errors and transport exceptions -> domain errors, by table);
- `cedar` (deciding), `cedar_loading` (files -> validated policy set), `cedar_input` (what is
  sent to Cedar), `cedar_source` and `cedar_entities` (reading policy and entity files);
- `sql/` (the audit chain and other durable state on SQLite or PostgreSQL);
- `package_locks` (per-package turns: in-process, PostgreSQL advisory locks);
- `identity` and `tls` (who is calling: mTLS, a trusted proxy, development);
- `metrics` (Prometheus).

Adapters import the domain and the ports, never the service layer, the API or the tools.
"""

from __future__ import annotations
