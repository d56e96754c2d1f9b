"""Fixtures shared by every tier: free ports and the repository's tool paths."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The virtualenv's bin folder (grpcurl, aws, pkggov, pkggov-gateway)."""
    return BIN
