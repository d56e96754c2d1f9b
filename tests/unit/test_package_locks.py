"""The package lock key and the in-process lock table: one holder per package, bounded waits,
release on every path, and a table that holds only the packages in use."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pkggov_gateway.adapters.package_locks import LocalPackageLocks
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import PackageBusyError
from pkggov_gateway.domain.model import PackageFormat, PackageRef
from pkggov_gateway.domain.package_key import package_key, package_key_id

PAD = PackageRef("demo", "dev-shared", PackageFormat.NPM, "left-pad")
WIDGETS = PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets", namespace="acme")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (
            PackageRef("demo", "prod", PackageFormat.PYPI, "Requests_Lite"),
            PackageRef("demo", "prod", PackageFormat.PYPI, "requests.lite"),
        ),
        (
            PackageRef("demo", "prod", PackageFormat.NUGET, "Newtonsoft.Json"),
            PackageRef("demo", "prod", PackageFormat.NUGET, "newtonsoft.json"),
        ),
        (
            PackageRef("demo", "prod", PackageFormat.SWIFT, "Pkg", namespace="Acme"),
            PackageRef("demo", "prod", PackageFormat.SWIFT, "pkg", namespace="acme"),
        ),
        (
            PAD,
            PackageRef("demo", "dev-shared", PackageFormat.NPM, "left-pad", None, "111122223333"),
        ),
    ],
)
def test_spellings_of_one_package_share_a_key(one: PackageRef, other: PackageRef) -> None:
    """CodeArtifact's name normalization, case and a named or defaulted domain owner: one key."""
    assert package_key(one) == package_key(other)
    assert package_key_id(one) == package_key_id(other)


def test_different_packages_have_different_keys() -> None:
    """Another name, namespace, format, repository or domain is another key."""
    others = [
        PackageRef("demo", "dev-shared", PackageFormat.NPM, "right-pad"),
        PackageRef("demo", "dev-shared", PackageFormat.NPM, "left-pad", namespace="acme"),
        PackageRef("demo", "dev-shared", PackageFormat.GENERIC, "left-pad", namespace="x"),
        PackageRef("demo", "prod-release", PackageFormat.NPM, "left-pad"),
        PackageRef("other", "dev-shared", PackageFormat.NPM, "left-pad"),
        PackageRef("dem", "odev-shared", PackageFormat.NPM, "left-pad"),  # parts stay apart
    ]
    keys = {package_key(p) for p in [PAD, *others]}
    assert 1 + len(others) == len(keys)


def test_key_id_is_a_negative_signed_64_bit_integer() -> None:
    """Negative, so it never equals the audit chain's (positive) advisory lock key."""
    ids = [package_key_id(PackageRef("d1", "repo", PackageFormat.NPM, f"p{i}")) for i in range(500)]
    assert all(-(2**63) <= i < 0 for i in ids)
    assert 500 == len(set(ids))


def test_second_holder_waits_until_the_deadline_then_is_busy() -> None:
    """While one thread holds a package, another's wait ends at its deadline: PackageBusyError."""
    locks = LocalPackageLocks()
    with locks.hold(PAD, Deadline.after(5)):
        started = time.monotonic()
        with pytest.raises(PackageBusyError) as caught, locks.hold(PAD, Deadline.after(0.2)):
            pytest.fail("acquired a held lock")
        waited = time.monotonic() - started
    assert 0.19 <= waited < 1.0
    assert "demo/dev-shared/npm/left-pad" in caught.value.message
    assert 0 == len(locks)


def test_no_time_left_is_one_try() -> None:
    """A spent deadline still gets a free lock (one try) and a held one at once refused."""
    locks = LocalPackageLocks()
    spent = Deadline(time.monotonic() - 1)
    with locks.hold(PAD, spent), pytest.raises(PackageBusyError), locks.hold(PAD, spent):
        pytest.fail("acquired a held lock")


def test_other_packages_do_not_wait() -> None:
    """A held package does not delay another one."""
    locks = LocalPackageLocks()
    with locks.hold(PAD, Deadline.after(5)), locks.hold(WIDGETS, Deadline.after(0)):
        assert 2 == len(locks)


def test_lock_is_released_when_the_block_raises() -> None:
    """An exception in the block releases the lock and leaves the table empty."""
    locks = LocalPackageLocks()
    with pytest.raises(RuntimeError), locks.hold(PAD, Deadline.after(5)):
        raise RuntimeError("boom")
    assert 0 == len(locks)
    with locks.hold(PAD, Deadline.after(0)):
        pass


def test_holders_take_turns_and_the_table_empties() -> None:
    """Many threads on a few packages: never two in one package at once, and afterwards the
    table holds nothing (it does not grow with the packages ever locked)."""
    locks = LocalPackageLocks()
    inside: dict[str, int] = {}
    overlaps: list[str] = []
    guard = threading.Lock()
    packages = [PackageRef("demo", "dev", PackageFormat.NPM, f"p{i}") for i in range(5)]

    def work(n: int) -> None:
        package = packages[n % len(packages)]
        with locks.hold(package, Deadline.after(10)):
            with guard:
                inside[package.package] = inside.get(package.package, 0) + 1
                if inside[package.package] > 1:
                    overlaps.append(package.package)
            time.sleep(0.001)
            with guard:
                inside[package.package] -= 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(400)))
    assert [] == overlaps
    assert 0 == len(locks)
