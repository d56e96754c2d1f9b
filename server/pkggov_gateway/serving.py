"""A serving process's main thread: its signals, its start, its loop.

Three kinds of process serve: the gateway in one process (`__main__`), a supervisor of workers
(`workers.supervise`) and each worker (`workers.run_worker`). They share what is here: SIGTERM
(and, but for a worker, SIGINT) stops, SIGHUP reloads the policy; a start-up failure is one
line and an exit code; a gateway serves until it is asked to stop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from pkggov_gateway.startup import StartupError, unexpected_at_start

if TYPE_CHECKING:
    from pkggov_gateway.config import Settings
    from pkggov_gateway.runtime import Gateway

__all__ = ["SIGNAL_POLL_SECONDS", "Signals", "serve", "start_failure", "start_gateway"]

log = structlog.get_logger("pkggov.main")

SIGNAL_POLL_SECONDS = 0.5
"""How long a main thread waits at most before it looks at signals again: the kernel may hand
a signal to another thread (one that is creating a thread, say), and then nothing interrupts an
untimed wait, while Python runs its handler only in the main thread, once that runs again."""


class Signals:
    """The stop and reload signals of this process, set by their handlers and logged by the
    main loop (never by a handler: a second signal arriving while the first handler holds the
    log stream's lock would deadlock)."""

    def __init__(
        self, stopping: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        self.stop = threading.Event()
        """Set once by a stopping signal; never cleared."""
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._received: list[str] = []
        for signum in (*stopping, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signal.Signals(signum).name)
        (self._reload if signum == signal.SIGHUP else self.stop).set()
        self._wake.set()

    def wait(self, timeout: float = SIGNAL_POLL_SECONDS) -> None:
        """Until a signal comes or `timeout` passes; then log what came."""
        self._wake.wait(timeout)
        self._wake.clear()
        self.log_received()

    def log_received(self) -> None:
        """Log the signals received since the last call."""
        while self._received:
            log.info("gateway.signal", signal=self._received.pop(0))

    def reload_asked(self) -> bool:
        """Whether SIGHUP came since the last call (and no stop: a stop wins)."""
        if self._reload.is_set() and not self.stop.is_set():
            self._reload.clear()
            return True
        return False


def start_gateway(settings: Settings, *, sweeps_orphans: bool = True) -> Gateway:
    """Build and start a gateway (both release what they made when they fail), then freeze
    the start-up heap. Raises what they raise: `start_failure` says how to report it."""
    # Imported here: a supervisor, which never builds a gateway, does not load its adapters.
    from pkggov_gateway.bootstrap import build_gateway  # noqa: PLC0415
    from pkggov_gateway.runtime import freeze_startup_heap  # noqa: PLC0415

    gateway = build_gateway(settings)
    gateway.sweeps_orphans = sweeps_orphans
    gateway.start()
    freeze_startup_heap()
    return gateway


def start_failure(error: Exception) -> tuple[int, str]:
    """The exit code and the one line of a failed start: 2 for a setting (StartupError), else
    1 (a bug, most likely: its traceback is logged at debug level)."""
    if isinstance(error, StartupError):
        return 2, str(error)
    log.debug("gateway.start_failed", exc_info=error)
    return 1, unexpected_at_start(error)


def serve(
    gateway: Gateway, signals: Signals, *, orphaned: Callable[[], bool] = lambda: False
) -> None:
    """Serve until a stopping signal (or until `orphaned()`), reloading the policy at each
    SIGHUP; then stop the gateway (it drains in-flight calls)."""
    while not signals.stop.is_set():
        signals.wait()
        if orphaned():
            log.error("worker.orphaned", note="the supervisor is gone: stopping")
            break
        if signals.reload_asked():
            gateway.reload_policy()
    signals.log_received()
    gateway.stop()
