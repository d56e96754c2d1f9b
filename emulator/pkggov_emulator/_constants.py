"""Demo identity constants and the fixed service facts the emulator answers with."""

from __future__ import annotations

__all__ = [
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCOUNT_ID",
    "DEMO_REGION",
    "DEMO_SECRET_ACCESS_KEY",
    "SERVICE_NAME",
]

DEMO_ACCOUNT_ID = "111122223333"
DEMO_ACCESS_KEY_ID = "AKIAPKGGOVDEMO000001"
DEMO_SECRET_ACCESS_KEY = "pkggov-demo-secret-key"  # noqa: S105 - a published demo credential, not a secret.
DEMO_REGION = "us-east-1"

# SigV4 signing name and botocore model name of AWS CodeArtifact.
SERVICE_NAME = "codeartifact"
