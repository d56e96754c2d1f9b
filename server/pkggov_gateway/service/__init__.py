"""The service layer: use cases written against ports only.

- `governed_call`: a governed call and its record, from the request-id replay to the outcome
  (no intent, nothing leaves); every governed operation runs inside one;
- `audit`: the Auditor that opens governed calls on one store, and reconciliation of what a
  crash left open;
- `delete_versions`: the DeletePackageVersions use case (validate, decide, record, delete).
"""

from __future__ import annotations
