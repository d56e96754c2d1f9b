"""The pure core: package model, validation, deadlines and domain errors (no gRPC, boto3 or SQL)."""

from __future__ import annotations
