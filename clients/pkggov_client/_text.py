"""Text from the gateway made safe to show on a terminal (`printable`)."""

from __future__ import annotations

__all__ = ["printable"]


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    """One character that is not printable, as a visible Python-style escape."""
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every character that is not printable written as an escape: tab, newline
    and carriage return as ``\\t``, ``\\n``, ``\\r``, other C0 controls, DEL and C1 controls as
    ``\\x1b``, Unicode format, bidi and line-separator characters as ``\\u202e``, and so on
    (what `str.isprintable` refuses, ASCII space aside). A byte of a non-UTF-8 argument (kept
    as a surrogate) shows as ``\\xff``.

    Every text output of the CLI passes each value that came from the gateway or its caller
    through this, so that no recorded field can move the cursor, clear the screen, set the
    window title, add a hyperlink, reorder a line or start a new one on an operator's terminal.
    A backslash is left as it is (an escape in the text reads as such, but does nothing).
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)
