"""PostgreSQL advisory package locks: two adapter instances (two replicas) on one database
exclude each other, wait no longer than the deadline, and release on every path.

Needs PostgreSQL at postgresql://postgres@127.0.0.1:5432/test (trust auth). Skipped when it
is unreachable, unless the CI environment variable is set (then the tests fail). Advisory
locks are per database, not per schema, so every test locks packages of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pkggov_gateway.adapters.package_locks import PostgresPackageLocks
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import AuditUnavailableError, PackageBusyError
from pkggov_gateway.domain.model import PackageFormat, PackageRef
from pkggov_gateway.domain.package_key import package_key_id
from tests.conftest import PG_HOST, free_port


@pytest.fixture
def package() -> PackageRef:
    """A package no other test (or test run) locks."""
    return PackageRef("demo", "dev-shared", PackageFormat.NPM, f"lock-{uuid.uuid4().hex}")


@pytest.fixture
def replicas(postgres: str) -> Iterator[tuple[PostgresPackageLocks, PostgresPackageLocks]]:
    """Two replicas' locks on the test database."""
    one = PostgresPackageLocks(postgres, max_connections=8)
    other = PostgresPackageLocks(postgres, max_connections=8)
    yield one, other
    one.close()
    other.close()


Replicas = tuple[PostgresPackageLocks, PostgresPackageLocks]


def test_a_held_package_is_busy_for_another_replica_until_its_deadline(
    replicas: Replicas, package: PackageRef
) -> None:
    """Replica B waits for the package replica A holds until B's deadline: PackageBusyError;
    once A is done B gets it."""
    a, b = replicas
    with a.hold(package, Deadline.after(5)):
        started = time.monotonic()
        with pytest.raises(PackageBusyError), b.hold(package, Deadline.after(0.3)):
            pytest.fail("two replicas held one package")
        waited = time.monotonic() - started
    assert 0.28 <= waited < 1.5
    with b.hold(package, Deadline.after(0)):  # free again: one try is enough
        pass


def test_a_waiting_replica_gets_the_package_when_it_is_released(
    replicas: Replicas, package: PackageRef
) -> None:
    """B, waiting within its deadline, goes on as soon as A releases."""
    a, b = replicas
    held = threading.Event()

    def hold_briefly() -> None:
        with a.hold(package, Deadline.after(5)):
            held.set()
            time.sleep(0.3)

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(hold_briefly)
        assert held.wait(5)
        started = time.monotonic()
        with b.hold(package, Deadline.after(5)):
            waited = time.monotonic() - started
        done.result()
    assert 0.1 <= waited < 2.0


def test_the_lock_is_released_when_the_block_raises(
    replicas: Replicas, package: PackageRef
) -> None:
    """An exception inside the block rolls the lock's transaction back: free at once."""
    a, b = replicas
    with pytest.raises(RuntimeError), a.hold(package, Deadline.after(5)):
        raise RuntimeError("boom")
    with b.hold(package, Deadline.after(0)):
        pass


def test_a_lost_connection_releases_the_lock(
    postgres: str, replicas: Replicas, package: PackageRef
) -> None:
    """The holder's session ended (here by pg_terminate_backend): the server releases the
    lock, the other replica gets it, and the holder's block ends without an error."""
    a, b = replicas
    key = package_key_id(package) & 0xFFFF_FFFF_FFFF_FFFF
    with a.hold(package, Deadline.after(5)):
        with psycopg.connect(postgres, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
                (key >> 32, key & 0xFFFF_FFFF),
            ).fetchall()
        assert [(True,)] == ended
        with b.hold(package, Deadline.after(5)):
            pass


def test_a_holder_past_its_deadline_and_grace_loses_the_lock(
    postgres: str, package: PackageRef
) -> None:
    """A holder that hangs (here: sleeps) past its deadline plus the grace has its session
    ended by the server, so the package is not locked forever."""
    stuck = PostgresPackageLocks(postgres, max_connections=2, hold_grace_seconds=0.2)
    other = PostgresPackageLocks(postgres, max_connections=2)
    try:
        entered = threading.Event()

        def hang() -> None:
            with stuck.hold(package, Deadline.after(0.2)):
                entered.set()
                time.sleep(1.5)

        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(hang)
            assert entered.wait(5)
            started = time.monotonic()
            with other.hold(package, Deadline.after(5)):
                waited = time.monotonic() - started
            done.result()  # its release found the session gone: logged, not raised
        assert waited < 1.2
    finally:
        stuck.close()
        other.close()


def test_threads_of_two_replicas_never_share_a_package(
    replicas: Replicas, package: PackageRef
) -> None:
    """Eight threads per replica on one package: one holder at a time, every one served."""
    a, b = replicas
    inside = 0
    most = 0
    served = 0
    guard = threading.Lock()

    def work(n: int) -> None:
        nonlocal inside, most, served
        with (a if n % 2 else b).hold(package, Deadline.after(20)):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.005)
            with guard:
                inside -= 1
                served += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(80)))
    assert (1, 80) == (most, served)


def test_an_unreachable_database_fails_closed(package: PackageRef) -> None:
    """Nothing listens at the database's address: AuditUnavailableError, the block never runs."""
    locks = PostgresPackageLocks(
        f"postgresql://postgres@{PG_HOST}:{free_port()}/test",
        max_connections=2,
        connect_timeout_seconds=1.0,
    )
    try:
        with pytest.raises(AuditUnavailableError), locks.hold(package, Deadline.after(5)):
            pytest.fail("ran without the lock")
    finally:
        locks.close()
