"""Translate the Java regular expressions of AWS models into Python ``re`` patterns.

AWS models write patterns in Java syntax. Python's ``re`` lacks Unicode property classes such as
``\\p{C}``, ``\\P{C}`` and ``\\p{IsWhitespace}``, so they are expanded into explicit code point
ranges (computed once per property from ``unicodedata``). Patterns compile with ``re.ASCII`` so
that ``\\s``, ``\\S``, ``\\d`` and ``\\w`` keep Java's ASCII-only meaning. Callers must match with
``fullmatch``: AWS validates the whole value.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

__all__ = ["UnsupportedPatternError", "compile_java_pattern"]

# Java's \p{IsWhitespace}: the Unicode White_Space property.
_WHITE_SPACE = frozenset(
    [
        *range(0x09, 0x0E),
        0x20,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    ]
)

_Ranges = tuple[tuple[int, int], ...]


class UnsupportedPatternError(ValueError):
    """Raised when a model pattern uses Java regex syntax this translator does not handle."""


def _ranges_of(code_points: list[int]) -> _Ranges:
    """Collapse sorted code points into inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in code_points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return tuple(ranges)


@functools.cache
def _positive_ranges(name: str) -> _Ranges:
    """Return the code point ranges where the Java property ``name`` holds."""
    if name in ("IsWhitespace", "IsWhite_Space", "javaWhitespace"):
        return _ranges_of(sorted(_WHITE_SPACE))
    category = name.removeprefix("Is")
    if not (category.isalpha() and len(category) in (1, 2)):
        raise UnsupportedPatternError(f"unsupported Unicode property \\p{{{name}}}")
    width = len(category)
    # One pass over every code point (~0.25 s), paid once per property and process.
    categories = map(unicodedata.category, map(chr, range(sys.maxunicode + 1)))
    return _ranges_of([cp for cp, cat in enumerate(categories) if cat[:width] == category])


def _property_ranges(name: str, negated: bool) -> _Ranges:
    """Return the ranges where the property holds, or their complement if ``negated``."""
    ranges = _positive_ranges(name)
    if not negated:
        return ranges
    complement: list[tuple[int, int]] = []
    next_start = 0
    for low, high in ranges:
        if low > next_start:
            complement.append((next_start, low - 1))
        next_start = high + 1
    if next_start <= sys.maxunicode:
        complement.append((next_start, sys.maxunicode))
    return tuple(complement)


def _class_body(ranges: _Ranges) -> str:
    """Render code point ranges as the inside of a Python character class."""
    parts: list[str] = []
    for low, high in ranges:
        parts.append(f"\\U{low:08x}" if low == high else f"\\U{low:08x}-\\U{high:08x}")
    return "".join(parts)


def translate_java_pattern(pattern: str) -> str:
    """Return the Python equivalent of a Java pattern (see the module docstring)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped in "pP":
                if i + 2 < len(pattern) and pattern[i + 2] == "{":
                    end = pattern.find("}", i + 3)
                    if end < 0:
                        raise UnsupportedPatternError(f"unterminated property in {pattern!r}")
                    name = pattern[i + 3 : end]
                    i = end + 1
                else:
                    name = pattern[i + 2 : i + 3]
                    i += 3
                if in_class:
                    out.append(_class_body(_property_ranges(name, escaped == "P")))
                else:
                    out.append("[" + _class_body(_property_ranges(name, escaped == "P")) + "]")
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[":
            if in_class:
                raise UnsupportedPatternError(f"nested character classes in {pattern!r}")
            in_class = True
            out.append(char)
            # A leading ']' or '^]' is literal in both dialects; copy it as is.
            if pattern.startswith("^", i + 1):
                out.append("^")
                i += 1
            i += 1
            continue
        if char == "]" and in_class:
            in_class = False
        elif in_class and pattern.startswith("&&", i):
            raise UnsupportedPatternError(f"class intersection in {pattern!r}")
        out.append(char)
        i += 1
    return "".join(out)


@functools.cache
def compile_java_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a Java model pattern for ``fullmatch`` (cached per pattern)."""
    return re.compile(translate_java_pattern(pattern), re.ASCII)
