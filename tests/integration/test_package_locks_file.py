"""FilePackageLocks: the package lock of the worker processes of one replica on SQLite
(server.workers > 1), with real processes (spawned) and threads.

POSIX record locks belong to a process: these tests hold packages from other processes, kill a
holder, and run threads of two processes on one package, so that a lock that let two holders
in (two threads of one process sharing the byte, one thread's unlock releasing another's) is
caught.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from pkggov_gateway.adapters.package_locks import (
    FilePackageLocks,
    LocalPackageLocks,
    lock_file_of,
    open_package_locks,
    slot_of,
)
from pkggov_gateway.domain.deadline import Deadline
from pkggov_gateway.domain.errors import PackageBusyError
from pkggov_gateway.domain.model import PackageFormat, PackageRef

PAD = PackageRef("demo", "dev-shared", PackageFormat.NPM, "left-pad")
WIDGETS = PackageRef("demo", "dev-shared", PackageFormat.NPM, "widgets", namespace="acme")
REQUESTS = PackageRef("demo", "dev-shared", PackageFormat.PYPI, "Requests_Lite")
REQUESTS_SPELLED = PackageRef("demo", "dev-shared", PackageFormat.PYPI, "requests.lite")

SPAWN = multiprocessing.get_context("spawn")


def _hold(path: str, package: PackageRef, held: Event, release: Event) -> None:
    """In another process: hold `package` until `release` is set."""
    locks = FilePackageLocks(Path(path))
    with locks.hold(package, Deadline.after(30)):
        held.set()
        release.wait(30)
    locks.close()


@contextmanager
def held_elsewhere(path: Path, package: PackageRef) -> Iterator[tuple[Event, Event, object]]:
    """`package` held by another process until the yielded release event is set."""
    held, release = SPAWN.Event(), SPAWN.Event()
    process = SPAWN.Process(target=_hold, args=(str(path), package, held, release))
    process.start()
    try:
        assert held.wait(30), "the other process did not get the lock"
        yield held, release, process
    finally:
        if process.is_alive():  # (setting the event a killed waiter slept on would hang)
            release.set()
        process.join(10)
        if process.is_alive():
            process.kill()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The lock file of a SQLite store in a fresh folder."""
    return lock_file_of(tmp_path / "audit.db")


@pytest.fixture
def locks(path: Path) -> Iterator[FilePackageLocks]:
    """This process's locks on `path`."""
    opened = FilePackageLocks(path)
    yield opened
    opened.close()


def test_a_held_package_is_busy_for_another_process_until_its_deadline(
    path: Path, locks: FilePackageLocks
) -> None:
    """PackageBusyError once the deadline passes, not before, naming the package; another
    package is free meanwhile."""
    with held_elsewhere(path, PAD):
        started = time.monotonic()
        with pytest.raises(PackageBusyError) as caught, locks.hold(PAD, Deadline.after(0.3)):
            pass
        assert 0.3 <= time.monotonic() - started < 2
        assert "demo/dev-shared/npm/left-pad" in str(caught.value)
        with locks.hold(WIDGETS, Deadline.after(0)):
            pass
    assert 0 == len(locks)


def test_every_spelling_of_a_package_shares_its_lock(path: Path, locks: FilePackageLocks) -> None:
    """PyPI's normalization: Requests_Lite held elsewhere makes requests.lite busy."""
    assert slot_of(REQUESTS) == slot_of(REQUESTS_SPELLED)
    with (
        held_elsewhere(path, REQUESTS),
        pytest.raises(PackageBusyError),
        locks.hold(REQUESTS_SPELLED, Deadline.after(0.1)),
    ):
        pass


def test_with_no_time_left_it_tries_once(path: Path, locks: FilePackageLocks) -> None:
    """Deadline spent: held elsewhere is busy at once; free is taken."""
    with held_elsewhere(path, PAD):
        started = time.monotonic()
        with pytest.raises(PackageBusyError), locks.hold(PAD, Deadline.after(0)):
            pass
        assert time.monotonic() - started < 0.2
    with locks.hold(PAD, Deadline.after(0)):
        pass


def test_a_waiting_process_gets_the_package_when_it_is_released(
    path: Path, locks: FilePackageLocks
) -> None:
    """The waiter polls: it gets the package soon after the holder lets go."""
    with held_elsewhere(path, PAD) as (_, release, _process):
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with locks.hold(PAD, Deadline.after(10)):
            waited = time.monotonic() - started
    assert 0.25 <= waited < 1.5


def test_a_holder_that_dies_releases_the_package(path: Path, locks: FilePackageLocks) -> None:
    """The kernel drops a dead process's record locks: a crashed worker blocks nobody."""
    with held_elsewhere(path, PAD) as (_, _release, process):
        pid = process.pid  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        process.join(10)  # type: ignore[attr-defined]
        with locks.hold(PAD, Deadline.after(5)):
            pass


def test_threads_of_one_process_take_turns_on_the_byte(path: Path, locks: FilePackageLocks) -> None:
    """A second thread of the holder's process does not get in beside it (record locks would
    let it), and its wait ends when the first lets go, not before."""
    first_in, first_out = threading.Event(), threading.Event()

    def first() -> None:
        with locks.hold(PAD, Deadline.after(5)):
            first_in.set()
            first_out.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(5)
    with pytest.raises(PackageBusyError), locks.hold(PAD, Deadline.after(0.2)):
        pass
    threading.Timer(0.2, first_out.set).start()
    with locks.hold(PAD, Deadline.after(5)):
        pass
    thread.join(5)


def _count(path: str, counter: str, rounds: int, threads: int) -> None:
    """In another process: `threads` threads each add 1 to the counter file `rounds` times,
    read-sleep-write under the lock, and fail loudly on a second holder inside."""
    locks = FilePackageLocks(Path(path))
    inside = Path(f"{counter}.inside")

    def work() -> None:
        for _ in range(rounds):
            with locks.hold(PAD, Deadline.after(30)):
                fd = os.open(inside, os.O_CREAT | os.O_EXCL)  # FileExistsError: two inside
                os.close(fd)
                value = int(Path(counter).read_text())
                time.sleep(0.001)
                Path(counter).write_text(str(value + 1))
                inside.unlink()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    locks.close()


@pytest.mark.slow
def test_threads_of_several_processes_never_hold_a_package_together(
    path: Path, tmp_path: Path
) -> None:
    """3 processes x 4 threads x 25 rounds of read-modify-write under the lock: nothing lost,
    never two inside (the marker file would exist), every process ends cleanly."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    processes = [
        SPAWN.Process(target=_count, args=(str(path), str(counter), 25, 4)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [0, 0, 0] == [process.exitcode for process in processes]
    assert 3 * 4 * 25 == int(counter.read_text())


def test_sqlite_with_several_workers_locks_in_a_file_next_to_the_database(
    tmp_path: Path,
) -> None:
    """One process: in-process locks, as before; several: the file beside the database (made
    0600); PostgreSQL's are unchanged (tests/integration/test_package_locks_postgres.py)."""
    store = f"sqlite:{tmp_path}/audit.db"
    assert isinstance(open_package_locks(store, max_connections=4), LocalPackageLocks)
    shared = open_package_locks(store, max_connections=4, processes=2)
    try:
        assert isinstance(shared, FilePackageLocks)
        assert tmp_path / "audit.db-package-locks" == shared.path
        assert 0o600 == shared.path.stat().st_mode & 0o777
    finally:
        shared.close()


def test_a_lock_file_that_cannot_be_made_is_an_os_error(tmp_path: Path) -> None:
    """bootstrap names audit.store for it (cannot open: ...)."""
    with pytest.raises(OSError, match="No such file or directory"):
        open_package_locks(f"sqlite:{tmp_path}/missing/audit.db", max_connections=4, processes=2)
