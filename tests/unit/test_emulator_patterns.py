"""AWS model patterns (Java syntax) translate to Python regexes with the same full-match meaning."""

from __future__ import annotations

import pytest

from pkggov_emulator._model import service_model
from pkggov_emulator._patterns import (
    UnsupportedPatternError,
    compile_java_pattern,
    translate_java_pattern,
)


def test_every_pattern_in_the_codeartifact_model_compiles() -> None:
    model = service_model()
    patterns = {
        model.shape_for(name).metadata["pattern"]
        for name in model.shape_names
        if "pattern" in model.shape_for(name).metadata
    }
    compiled = [compile_java_pattern(pattern) for pattern in sorted(patterns)]
    assert len(patterns) == len(compiled)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("[a-z][a-z0-9\\-]{0,48}[a-z0-9]", "demo", True),
        ("[a-z][a-z0-9\\-]{0,48}[a-z0-9]", "demo-", False),
        ("[a-z][a-z0-9\\-]{0,48}[a-z0-9]", "xdemox-", False),
        ("[^#/\\s]+", "2.1.0-beta.1", True),
        ("[^#/\\s]+", "a/b", False),
        ("[^#/\\s]+", "a b", False),
        ("\\P{C}+", "héllo wörld ☃", True),
        ("\\P{C}+", "bell\x07", False),
        ("\\P{C}*", "", True),
        ("[^\\p{C}\\p{IsWhitespace}]+", "abc", True),
        ("[^\\p{C}\\p{IsWhitespace}]+", "a\u00a0b", False),
        ("[\\P{C}\\s]+", "tab\there", True),
        ("[\\P{C}\\s]+", "nul\x00", False),
        ("\\S+", "Ciqe5/9yicvkJT13b5/LdLpCyE6fqA7poa9qp+FilPs=", True),
        ("[0-9]{12}", "111122223333", True),
        ("[0-9]{12}", "1111222233334", False),
    ],
)
def test_full_match_semantics(pattern: str, value: str, matches: bool) -> None:
    assert matches == (compile_java_pattern(pattern).fullmatch(value) is not None)


def test_plain_patterns_are_left_alone() -> None:
    assert "[A-Za-z0-9][A-Za-z0-9._\\-]{1,99}" == translate_java_pattern(
        "[A-Za-z0-9][A-Za-z0-9._\\-]{1,99}"
    )


@pytest.mark.parametrize("pattern", ["\\p{InGreek}", "[a-z&&[^e]]", "[[a-z]]"])
def test_unsupported_syntax_is_refused(pattern: str) -> None:
    with pytest.raises(UnsupportedPatternError):
        translate_java_pattern(pattern)
