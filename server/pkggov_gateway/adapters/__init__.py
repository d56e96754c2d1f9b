"""Adapters: implementations of the ports for CodeArtifact (boto3)."""

from __future__ import annotations
