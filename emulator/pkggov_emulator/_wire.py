"""Transport-neutral HTTP request and response values passed between the server and the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["Request", "Response"]


@dataclass(frozen=True)
class Request:
    """One HTTP request as received: raw (still percent-encoded) path and query, headers, body."""

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), in order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def query_pairs(self) -> list[tuple[str, str]]:
        """Return the decoded query parameters in order (``+`` is kept literally, as in SigV4)."""
        pairs: list[tuple[str, str]] = []
        for part in self.query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
        return pairs

    def decoded_path(self) -> str:
        """Return the path with percent-escapes decoded."""
        return unquote(self.path)


@dataclass(frozen=True)
class Response:
    """One HTTP answer; ``drop`` means close the connection without writing anything."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    drop: bool = field(default=False)
