"""Opaque, tamper-proof page tokens: a listing position signed with the deployment's key.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))`` where the payload
is the position and a digest of the filters it was issued for. Only a holder of the key (the
gateways sharing one audit store) can make one, so a token's position is never taken from
the caller: a forged, truncated or foreign token is refused before anything reads it, and a
position is also range-checked after the signature holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from pkggov_gateway.domain.errors import FieldViolation, InvalidRequestError

__all__ = ["MAX_PAGE_TOKEN_LENGTH", "MAX_POSITION", "PageTokens"]

MAX_POSITION = 2**63 - 1
"""The largest position a token may carry (a signed 64-bit sequence number)."""

MAX_PAGE_TOKEN_LENGTH = 512
"""Tokens this service issues are about 150 characters; anything longer is refused unread."""

_MAC_BYTES = 32
_FOREIGN = "is not a page token this service issued (forged, truncated or foreign)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issues and reads page tokens with one key (per deployment: see the audit store)."""

    def __init__(self, key: bytes, field: str = "page_token") -> None:
        if len(key) < 16:
            raise ValueError("a page token key needs at least 16 bytes")
        self._key = key
        self._field = field

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, position: int, filters: str) -> str:
        """A token for the page that starts after `position`, valid for `filters` only."""
        if not 0 < position <= MAX_POSITION:
            raise ValueError(f"position out of range: {position}")
        payload = json.dumps({"v": 1, "before": position, "filters": filters}).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, token: str, filters: str) -> int:
        """The position in `token`; InvalidRequestError naming the field when the token is
        not one this deployment issued, or was issued for other filters."""
        position = self._position(token, filters)
        if isinstance(position, str):
            raise InvalidRequestError([FieldViolation(self._field, position)])
        return position

    def issue_after(self, cursor: tuple[str, str], filters: str) -> str:
        """A token for the page that starts after the keyset `cursor` (e.g. a time and an id),
        valid for `filters` only."""
        payload = json.dumps({"v": 1, "after": list(cursor), "filters": filters}).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read_after(self, token: str, filters: str) -> tuple[str, str]:
        """The keyset cursor in `token` (see `issue_after`); InvalidRequestError as `read`."""
        data = self._payload(token, filters)
        if isinstance(data, dict):
            after = data.get("after")
            if (
                isinstance(after, list)
                and len(after) == 2
                and all(isinstance(part, str) and len(part) <= 64 for part in after)
            ):
                return str(after[0]), str(after[1])
            data = _FOREIGN
        raise InvalidRequestError([FieldViolation(self._field, data)])

    def _position(self, token: str, filters: str) -> int | str:
        data = self._payload(token, filters)
        if isinstance(data, str):
            return data
        position = data.get("before")
        if type(position) is not int or not 0 < position <= MAX_POSITION:
            return _FOREIGN
        return position

    def _payload(self, token: str, filters: str) -> dict[str, object] | str:
        """The signed payload of `token` issued for `filters`, or why it is refused."""
        foreign = _FOREIGN
        if len(token) > MAX_PAGE_TOKEN_LENGTH or token.count(".") != 1:
            return foreign
        encoded_payload, _, encoded_mac = token.partition(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            return foreign
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            return foreign
        try:
            data = json.loads(payload)
        except ValueError:
            return foreign
        if not isinstance(data, dict) or data.get("v") != 1:
            return foreign
        if data.get("filters") != filters:
            return "was issued for other filters; keep every filter as it was for the first page"
        return data
