"""Cedar source text: split files into statements and find the line an error is on.

Cedar's parser (through cedarpy) reports errors without positions. This module finds them
without parsing Cedar itself: it splits a file into top-level statements at each ``;``
outside strings and comments, and for a failing statement asks Cedar about ever longer
prefixes of it (the first prefix that fails the same way holds the bad token), or searches
the statement for the name the message quotes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PolicyLoadError", "Statement", "code_only", "locate_error", "split_statements"]

_EOF = "unexpected end of input"
_QUOTED = re.compile(r"`([^`]+)`")
_TRAILING_NAME = re.compile(r":\s*([A-Za-z_][\w:]*)\s*$")


class PolicyLoadError(Exception):
    """Raised when a schema, policy, entities or policy test file cannot be loaded.

    `str()` is ``path:line: message`` (``path: message`` when no line is known).
    """

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = str(self.path) if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Statement:
    """One top-level statement of a Cedar file: its text and where it is."""

    text: str
    """The statement from just after the previous one up to and including its ``;``."""
    start: int
    """Offset of `text` in the file."""
    first_line: int
    """1-based line `text` begins on (the previous statement may end on it)."""
    line: int
    """1-based line of the statement's first token (comments and blank lines skipped)."""
    terminated: bool
    """False for trailing text with no closing ``;``."""


def code_only(text: str) -> str:
    """`text` with every ``//`` comment blanked out (offsets and newlines kept).

    Strings are double-quoted with backslash escapes, in policies and schemas alike.
    """
    out = list(text)
    in_string = in_comment = escaped = False
    for index, char in enumerate(text):
        if in_comment:
            if char == "\n":
                in_comment = False
            else:
                out[index] = " "
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "/" and text.startswith("//", index):
            in_comment = True
            out[index] = " "
    return "".join(out)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def split_statements(text: str) -> list[Statement]:
    """Split Cedar policy text at each ``;`` outside strings and comments.

    Trailing whitespace and comments are dropped; trailing code without a ``;`` is returned
    as an unterminated statement so that its error can be reported.
    """
    code = code_only(text)
    statements: list[Statement] = []
    start = 0
    in_string = escaped = False
    for index, char in enumerate(code):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ";":
            statements.append(_statement(text, code, start, index + 1, terminated=True))
            start = index + 1
    if code[start:].strip():
        statements.append(_statement(text, code, start, len(text), terminated=False))
    return statements


def _statement(text: str, code: str, start: int, end: int, *, terminated: bool) -> Statement:
    body = code[start:end]
    first = len(body) - len(body.lstrip())
    return Statement(
        text[start:end], start, _line_at(text, start), _line_at(text, start + first), terminated
    )


def locate_error(
    text: str,
    message: str,
    parse: Callable[[str], object] | None = None,
    *,
    first_line: int = 1,
    skip_names: frozenset[str] = frozenset(),
) -> int:
    """The 1-based line of `text` (which starts on line `first_line`) that `message` is about.

    With `parse` (a function that raises ValueError with Cedar's message), the shortest
    prefix of whole lines that fails with the same message, unless only the whole text
    does; then the first line naming something `message` quotes (except `skip_names`);
    then the first line holding code.
    """
    lines = text.split("\n")
    code_lines = code_only(text).split("\n")
    holding_code = [number for number, line in enumerate(code_lines, start=1) if line.strip()]
    if parse is not None and message != _EOF and len(holding_code) > 1:
        last = holding_code[-1]
        found = _shortest_failing_prefix(lines[:last], message, parse)
        if found < last:  # the error shows before the end: the bad token is on that line
            return first_line + found - 1
    for name in _names_in(message):
        if name in skip_names:
            continue
        pattern = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
        for number, line in enumerate(code_lines):
            if pattern.search(line):
                return first_line + number
    return first_line + (holding_code[0] - 1 if holding_code else 0)


def _names_in(message: str) -> list[str]:
    names = _QUOTED.findall(message)
    trailing = _TRAILING_NAME.search(message)
    if trailing:
        names.append(trailing.group(1))
    return names


def _error_of(parse: Callable[[str], object], text: str) -> str | None:
    try:
        parse(text)
    except ValueError as err:
        return str(err)
    return None


def _shortest_failing_prefix(lines: list[str], message: str, parse: Callable[[str], object]) -> int:
    """The fewest leading lines that fail with `message` (binary search; whole text fails)."""
    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        if _error_of(parse, "\n".join(lines[:middle])) == message:
            high = middle
        else:
            low = middle + 1
    return low
