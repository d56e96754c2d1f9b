"""The pure core: no grpc, boto3, SQL or I/O.

- `model`, `validation`, `versions`, `package_key`: packages, versions and their rules;
- `policy` and `identity`: what policy decides on, and who asks;
- `audit` (entries, the hash chain, indexed columns, queries) and `records` (the typed
  intent, outcome and reconciliation records: the only code that knows a body's keys);
- `errors`: every error the gateway reports, one class each; `deadline`; `page_token`.
"""

from __future__ import annotations
