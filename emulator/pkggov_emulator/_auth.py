"""AWS Signature Version 4 verification: recompute the signature with the caller's secret."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from ._errors import (
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationTokenError,
    UnrecognizedClientError,
)
from ._wire import Request

__all__ = ["ALGORITHM", "MAX_CLOCK_SKEW", "UNSIGNED_PAYLOAD", "SigV4Verifier"]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_CLOCK_SKEW = dt.timedelta(minutes=15)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_PART = re.compile(r"\s*(Credential|SignedHeaders|Signature)=([^,\s]*)\s*")

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def _parse_authorization(header: str) -> _Authorization:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureError(
            f"Unsupported authorization algorithm {algorithm!r}; expected {ALGORITHM}."
        )
    parts: dict[str, str] = {}
    for chunk in rest.split(","):
        match = _AUTH_PART.fullmatch(chunk)
        if match is None:
            raise IncompleteSignatureError(
                f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters. Authorization={header}"
            )
        parts[match.group(1)] = match.group(2)
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in parts]
    if missing:
        raise IncompleteSignatureError(
            f"Authorization header requires {', '.join(repr(m) for m in missing)} parameter(s). "
            f"Authorization={header}"
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5:
        raise IncompleteSignatureError(
            f"Credential should be of the form ACCESS_KEY/DATE/REGION/SERVICE/aws4_request, "
            f"got {parts['Credential']!r}."
        )
    access_key_id, date, region, service, terminator = scope
    return _Authorization(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=tuple(parts["SignedHeaders"].split(";")),
        signature=parts["Signature"],
    )


def _canonical_uri(raw_path: str) -> str:
    """Mirror botocore: drop dot segments and empty segments, then percent-encode once more."""
    if not raw_path:
        return "/"
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    first = "/" if raw_path.startswith("/") else ""
    last = "/" if raw_path.endswith("/") and segments else ""
    return quote(first + "/".join(segments) + last, safe="/~")


def _canonical_query(raw_query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _request_time(request: Request) -> tuple[str, dt.datetime]:
    amz_date = request.header("x-amz-date")
    if amz_date is not None:
        try:
            parsed = dt.datetime.strptime(amz_date.strip(), _AMZ_DATE).replace(tzinfo=dt.UTC)
        except ValueError as error:
            raise IncompleteSignatureError(
                f"X-Amz-Date must be in the ISO8601 basic format, got {amz_date!r}."
            ) from error
        return amz_date.strip(), parsed
    date = request.header("date")
    if date is None:
        raise IncompleteSignatureError(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        parsed = parsedate_to_datetime(date).astimezone(dt.UTC)
    except (TypeError, ValueError) as error:
        raise IncompleteSignatureError(f"Date header is malformed: {date!r}.") from error
    return parsed.strftime(_AMZ_DATE), parsed


@dataclass(frozen=True)
class SigV4Verifier:
    """Verifies SigV4 ``Authorization`` headers against known access keys.

    ``region`` None accepts any region in the credential scope.
    """

    credentials: Mapping[str, str]
    service: str
    region: str | None

    def verify(self, request: Request, *, now: dt.datetime, check_payload_hash: bool) -> str:
        """Return the caller's access key id, or raise an AuthError subclass.

        ``check_payload_hash`` also rejects a body whose SHA-256 differs from a signed
        ``x-amz-content-sha256`` header (off where that header is a modeled input, as in
        PublishPackageVersion, whose operation checks it itself).
        """
        header = request.header("authorization")
        if header is None:
            raise MissingAuthenticationTokenError("Missing Authentication Token")
        auth = _parse_authorization(header)
        secret = self.credentials.get(auth.access_key_id)
        if secret is None:
            raise UnrecognizedClientError("The security token included in the request is invalid.")
        self._check_scope(auth)
        amz_date, when = _request_time(request)
        if amz_date[:8] != auth.date:
            raise InvalidSignatureError(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{auth.date}' != '{amz_date[:8]}', from 'X-Amz-Date'."
            )
        self._check_clock(amz_date, when, now)
        signed = [name.lower() for name in auth.signed_headers]
        if "host" not in signed:
            raise IncompleteSignatureError(
                "'Host' must be a 'SignedHeader' in the AWS Authorization."
            )
        canonical_headers = ""
        for name in signed:
            values = request.header_values(name)
            if not values:
                raise IncompleteSignatureError(
                    f"Signed header {name!r} is missing from the request."
                )
            joined = ",".join(" ".join(value.split()) for value in values)
            canonical_headers += f"{name}:{joined}\n"
        body_hash = hashlib.sha256(request.body).hexdigest()
        claimed_hash = request.header("x-amz-content-sha256")
        payload_hash = body_hash if claimed_hash is None else claimed_hash.strip()
        canonical_request = "\n".join(
            [
                request.method.upper(),
                _canonical_uri(request.path),
                _canonical_query(request.query),
                canonical_headers,
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = f"{auth.date}/{auth.region}/{auth.service}/{auth.terminator}"
        string_to_sign = "\n".join(
            [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
        )
        key = _signing_key(secret, auth.date, auth.region, auth.service)
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, auth.signature):
            raise InvalidSignatureError(_SIGNATURE_MISMATCH)
        if check_payload_hash and payload_hash not in (body_hash, UNSIGNED_PAYLOAD):
            raise InvalidSignatureError(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        return auth.access_key_id

    def _check_scope(self, auth: _Authorization) -> None:
        if auth.terminator != "aws4_request":
            raise IncompleteSignatureError(
                f"Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not '{auth.terminator}'."
            )
        if auth.service != self.service:
            raise InvalidSignatureError(
                f"Credential should be scoped to correct service: '{self.service}'."
            )
        if self.region is not None and auth.region != self.region:
            raise InvalidSignatureError(
                f"Credential should be scoped to a valid region, not '{auth.region}'."
            )

    @staticmethod
    def _check_clock(amz_date: str, when: dt.datetime, now: dt.datetime) -> None:
        if when < now - MAX_CLOCK_SKEW:
            earliest = (now - MAX_CLOCK_SKEW).strftime(_AMZ_DATE)
            raise InvalidSignatureError(
                f"Signature expired: {amz_date} is now earlier than {earliest} "
                f"({now.strftime(_AMZ_DATE)} - 15 min.)"
            )
        if when > now + MAX_CLOCK_SKEW:
            latest = (now + MAX_CLOCK_SKEW).strftime(_AMZ_DATE)
            raise InvalidSignatureError(
                f"Signature not yet current: {amz_date} is still later than {latest} "
                f"({now.strftime(_AMZ_DATE)} + 15 min.)"
            )
