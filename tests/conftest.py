"""Fixtures shared by every tier: free ports, the repository's tool paths, PostgreSQL."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
"""The tests' PostgreSQL server: user ``postgres`` (trust auth), database ``test``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The virtualenv's bin folder (grpcurl, aws, pkggov, pkggov-gateway)."""
    return BIN


def pg_schema_url(schema: str, port: int = PG_PORT) -> str:
    """PG_URL (on `port`, e.g. a proxy's) with `schema` as the search path."""
    return f"postgresql://postgres@{PG_HOST}:{port}/test?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres() -> str:
    """The server's URL, probed once per session; skips (or, when the CI environment variable
    is set, fails) when it cannot be reached."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at {PG_URL}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def pg_schema(postgres: str) -> Iterator[str]:
    """A fresh schema for this test, dropped afterwards (see pg_schema_url)."""
    name = f"pkggov_t_{uuid.uuid4().hex}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
