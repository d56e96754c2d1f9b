"""structlog configuration: JSON lines when not on a TTY, a readable console otherwise."""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Literal, TextIO

import structlog

from pkggov_gateway.domain.audit import StoredEntry

__all__ = ["audit_stream", "configure_logging"]

LogFormat = Literal["auto", "json", "console"]
_COPY_BACKLOG = 10_000


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger) once, at start-up."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Records of other libraries (grpc, botocore) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def audit_stream(destination: str) -> Callable[[StoredEntry], None] | None:
    """A dedicated structlog logger copying each committed audit entry as one JSON line to
    ``stdout`` or a file path (``off``: none). The store is the record; this is a copy."""
    if destination in ("", "off"):
        return None
    stream: TextIO = (
        sys.stdout if destination == "stdout" else open(destination, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    )
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=stream),
        # Not the configured wrapper, which filters by logging.level: at "warning" it would
        # drop every line of the copy (logger.msg is info level).
        wrapper_class=structlog.BoundLogger,
        processors=[structlog.processors.JSONRenderer(sort_keys=True)],
        context_class=dict,
    )

    # Written by its own thread so that a slow reader of the stream never delays a commit;
    # past `_COPY_BACKLOG` waiting lines, lines are dropped and counted (the store has them).
    pending: queue.Queue[StoredEntry] = queue.Queue(maxsize=_COPY_BACKLOG)
    dropped = 0

    def write() -> None:
        while True:
            entry = pending.get()
            logger.msg(
                "audit", seq=entry.seq, hash=entry.hash, prev_hash=entry.prev_hash, entry=entry.body
            )

    threading.Thread(target=write, name="pkggov-audit-copy", daemon=True).start()

    def emit(entry: StoredEntry) -> None:
        nonlocal dropped
        try:
            pending.put_nowait(entry)
        except queue.Full:
            dropped += 1
            if dropped == 1 or dropped % 1000 == 0:
                structlog.get_logger("pkggov.audit").error(
                    "audit.copy_dropped", dropped=dropped, note="the audit store has them"
                )

    return emit
