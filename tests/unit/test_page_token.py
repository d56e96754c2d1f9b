"""Page tokens: issued and read back with one key, refused when forged, foreign or altered."""

from __future__ import annotations

import base64
import json

import pytest

from pkggov_gateway.domain.errors import InvalidRequestError
from pkggov_gateway.domain.page_token import MAX_PAGE_TOKEN_LENGTH, MAX_POSITION, PageTokens

KEY = b"k" * 32
TOKENS = PageTokens(KEY)


def refusal(tokens: PageTokens, token: str, filters: str = "f") -> str:
    with pytest.raises(InvalidRequestError) as caught:
        tokens.read(token, filters)
    [violation] = caught.value.violations
    assert "page_token" == violation.field
    return violation.description


@pytest.mark.parametrize("position", [1, 12345, MAX_POSITION])
def test_a_token_reads_back_its_position(position: int) -> None:
    assert position == TOKENS.read(TOKENS.issue(position, "f"), "f")


def test_tokens_are_short_enough() -> None:
    assert len(TOKENS.issue(MAX_POSITION, "f" * 32)) < MAX_PAGE_TOKEN_LENGTH


@pytest.mark.parametrize("position", [0, -1, MAX_POSITION + 1])
def test_positions_out_of_range_are_not_issued(position: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        TOKENS.issue(position, "f")


def test_another_key_refuses_the_token() -> None:
    assert "not a page token" in refusal(PageTokens(b"x" * 32), TOKENS.issue(5, "f"))


def test_other_filters_are_named() -> None:
    assert "other filters" in refusal(TOKENS, TOKENS.issue(5, "f"), "g")


def _signed(payload: bytes) -> str:
    """A token with a valid signature over any payload (what only a key holder can make)."""
    mac = TOKENS._mac(payload)
    encode = base64.urlsafe_b64encode
    return f"{encode(payload).decode().rstrip('=')}.{encode(mac).decode().rstrip('=')}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        json.dumps({"v": 2, "before": 5, "filters": "f"}).encode(),
        json.dumps({"v": 1, "before": 10**30, "filters": "f"}).encode(),
        json.dumps({"v": 1, "before": 5.0, "filters": "f"}).encode(),
        json.dumps({"v": 1, "before": True, "filters": "f"}).encode(),
        b'{"v": 1, "before": Infinity, "filters": "f"}',
        json.dumps({"v": 1, "before": 0, "filters": "f"}).encode(),
    ],
)
def test_signed_nonsense_is_still_refused(payload: bytes) -> None:
    """Defence in depth: even a validly signed payload must hold a position in range."""
    assert "not a page token" in refusal(TOKENS, _signed(payload))


@pytest.mark.parametrize(
    "token",
    ["", ".", "a.b.c", "x" * (MAX_PAGE_TOKEN_LENGTH + 1), "@@@.@@@", "\x00.\x00"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert "not a page token" in refusal(TOKENS, token)


def test_each_cut_of_a_token_is_refused() -> None:
    token = TOKENS.issue(77, "f")
    for end in range(len(token)):
        refusal(TOKENS, token[:end])


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokens(b"short")
