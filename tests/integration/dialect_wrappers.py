"""Dialects wrapping a real one, for store tests: one that passes everything through (each
wrapper changes one part), and one that knows only the first migrations (an older gateway)."""

from __future__ import annotations

import contextlib
from typing import Any

from pkggov_gateway.adapters.sql import Dialect
from pkggov_gateway.adapters.sql.migrations import Migration

__all__ = ["DelegatingDialect", "OldDialect"]


class DelegatingDialect:
    """`inner`, every call passed through: a subclass overrides what it changes."""

    def __init__(self, inner: Dialect) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description

    def connect(self) -> Any:
        return self.inner.connect()

    def sql(self, text: str) -> str:
        return self.inner.sql(text)

    def begin_locked(self, conn: Any) -> None:
        self.inner.begin_locked(conn)

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        return self.inner.pipeline(conn)

    def migrations(self) -> list[Migration]:
        return self.inner.migrations()

    def reader(self) -> contextlib.AbstractContextManager[Any]:
        return self.inner.reader()

    def close(self) -> None:
        self.inner.close()


class OldDialect(DelegatingDialect):
    """`inner` as a gateway that knows only migrations 1 to `last` sees it."""

    def __init__(self, inner: Dialect, last: int) -> None:
        super().__init__(inner)
        self.last = last

    def migrations(self) -> list[Migration]:
        return [m for m in self.inner.migrations() if m[0] <= self.last]
