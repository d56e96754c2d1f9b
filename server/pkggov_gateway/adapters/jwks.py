"""Token issuers' signing keys (JSON Web Key Sets): fetched over HTTPS, or in development read
from a file; cached, refreshed, kept through an outage for their cache lifetime, then refused.

Per issuer, a `KeySet`:

- Keys are usable for ``cache_seconds`` after the fetch that brought them. A failed fetch changes
  nothing, so an outage of the issuer's endpoint shorter than that goes unnoticed by callers;
  after it the set fails closed: every token of that issuer is UNAUTHENTICATED until a fetch
  succeeds.
- A token naming a key id (``kid``) the set does not hold, or arriving while the set has no
  usable keys, fetches the set again on the calling thread, at most once per
  ``refresh_seconds`` (a flood of made-up key ids costs the issuer one request per interval).
  Callers arriving while a fetch runs wait for it instead of failing, so a rotation (a new key
  signing from now on) costs no call.
- From half the cache lifetime on, a call that uses the set refreshes it in the background (at
  most once per ``refresh_seconds``), so that steady traffic never sees its keys expire.
- `prefetch` makes the first fetch in the background; when the endpoint is down at start-up the
  gateway serves anyway and token calls fail closed until keys load (each call, rate-limited as
  above, tries again; so does `refresh_due`, for a periodic task).

A fetch fails, whatever the reason (connection, TLS, timeout, a status other than 200, a
redirect, which is never followed, a body over 1 MiB, not a JWK Set, no usable signing key),
as a whole. Only asymmetric signing keys with a ``kid`` are kept (RSA, EC, OKP; never ``oct``,
never one marked for encryption, never a private key).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
import urllib3
from jwt import PyJWK
from urllib3.exceptions import HTTPError

from pkggov_gateway import __version__
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.ports import Metrics, NullMetrics

__all__ = [
    "MAX_JWKS_BYTES",
    "FileJwks",
    "HttpsJwks",
    "JwksError",
    "JwksSource",
    "KeySet",
    "KeyState",
    "parse_jwk_set",
]

log = structlog.get_logger("pkggov.tokens")

MAX_JWKS_BYTES: Final = 1024 * 1024
_CHUNK_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS: Final = 5.0
"""One fetch (discovery or keys), connecting and reading: callers may be waiting for it."""
_MAX_KID_CHARS: Final = 256
_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JwksError(Exception):
    """A fetch of a key set (or of the discovery document) failed; the message says why."""


class JwksSource(Protocol):
    """Where an issuer's key set comes from."""

    @property
    def description(self) -> str:
        """Where, for messages and health (a URL or a file path)."""
        ...

    def fetch(self) -> Mapping[str, Any]:
        """The JWK Set document; raises JwksError."""
        ...


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JwksError(f"{what} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise JwksError(f"{what} is not a JSON object")
    return document


class FileJwks:
    """A key set in a local JSON file (development and tests only), read again at each fetch."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def description(self) -> str:
        """The file's path."""
        return str(self._path)

    def fetch(self) -> Mapping[str, Any]:
        """The file's JWK Set document."""
        try:
            with self._path.open("rb") as file:
                data = file.read(MAX_JWKS_BYTES + 1)
        except OSError as error:
            raise JwksError(f"cannot read {self._path}: {error.strerror}") from error
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"{self._path} is larger than {MAX_JWKS_BYTES} bytes")
        return _json_object(data, str(self._path))


class HttpsJwks:
    """A key set fetched over HTTPS (certificates verified against `ca_file`, or the system's
    trust store), from `jwks_uri`, or from the ``jwks_uri`` of the issuer's OpenID discovery
    document (``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must be the
    issuer exactly). The discovered URL is kept until a fetch from it fails.
    """

    def __init__(
        self,
        *,
        jwks_uri: str = "",
        discovery_issuer: str = "",
        ca_file: str = "",
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        if bool(jwks_uri) == bool(discovery_issuer):
            raise ValueError("give either jwks_uri or discovery_issuer")
        for url in (jwks_uri, discovery_issuer):
            if url and not url.startswith("https://"):
                raise ValueError(f"{url!r} is not an https:// URL")
        self._jwks_uri = jwks_uri
        self._issuer = discovery_issuer
        self._discovered = ""
        self._fetch_seconds = timeout_seconds
        context = ssl.create_default_context(cafile=ca_file or None)  # OSError/SSLError: bad file
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=1,
            ssl_context=context,
            cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(total=timeout_seconds),
            retries=False,
            headers={"User-Agent": f"pkggov/{__version__}", "Accept": "application/json"},
        )

    @property
    def description(self) -> str:
        """The JWKS URL, or where it is discovered."""
        if self._jwks_uri:
            return self._jwks_uri
        return f"{self._discovery_url()} -> {self._discovered or '(not yet discovered)'}"

    def _discovery_url(self) -> str:
        return f"{self._issuer.rstrip('/')}/.well-known/openid-configuration"

    def fetch(self) -> Mapping[str, Any]:
        """The JWK Set document (discovering its URL first when needed)."""
        url = self._jwks_uri or self._discovered or self._discover()
        try:
            return self._get(url, "the JWK Set")
        except JwksError:
            self._discovered = ""  # discover again next time: the issuer may have moved it
            raise

    def _discover(self) -> str:
        url = self._discovery_url()
        document = self._get(url, "the discovery document")
        if document.get("issuer") != self._issuer:
            raise JwksError(
                f"the discovery document at {url} names another issuer "
                f"({str(document.get('issuer'))[:200]!r})"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise JwksError(f"the discovery document at {url} has no https:// jwks_uri")
        self._discovered = jwks_uri
        return jwks_uri

    def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._pool.request(
                "GET", url, redirect=False, retries=False, preload_content=False
            )
        except (HTTPError, OSError) as error:
            raise JwksError(f"cannot fetch {what} from {url}: {error}") from error
        try:
            if response.status != 200:
                redirect = " (a redirect, not followed)" if 300 <= response.status < 400 else ""
                raise JwksError(f"HTTP {response.status}{redirect} from {url}")
            data = self._read_within(response, url, what)
        except (HTTPError, OSError) as error:
            raise JwksError(f"cannot read {what} from {url}: {error}") from error
        finally:
            response.release_conn()
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"{what} at {url} is larger than {MAX_JWKS_BYTES} bytes")
        return _json_object(data, f"{what} at {url}")

    def _read_within(self, response: Any, url: str, what: str) -> bytes:
        """The body, read in chunks against one wall-clock deadline: urllib3's timeout bounds
        each socket read, not the whole, so a server trickling a byte at a time would hold the
        fetch (and every call waiting on it) indefinitely."""
        deadline = time.monotonic() + self._fetch_seconds
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise JwksError(f"{what} at {url} did not arrive within {self._fetch_seconds:g} s")
            chunk = response.read1(_CHUNK_BYTES)  # what has arrived, not a full chunk
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                return b"".join(chunks)  # refused by the caller: larger than allowed

    def close(self) -> None:
        """Close the connections."""
        self._pool.clear()


def _key_problem(jwk: Any) -> str | None:
    """Why `jwk` (one entry of a set) is not a usable signing key; None when it is."""
    if not isinstance(jwk, dict):
        return "not an object"
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
        return "no kid"
    if jwk.get("kty") not in _KEY_TYPES:
        return f"{kid}: key type {str(jwk.get('kty'))[:20]!r} is not an asymmetric one"
    if jwk.get("use", "sig") != "sig":
        return f"{kid}: not a signing key (use {str(jwk.get('use'))[:20]!r})"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return f"{kid}: key_ops does not allow verify"
    if _PRIVATE_MEMBERS & jwk.keys():
        return f"{kid}: holds private key material"
    try:
        PyJWK(jwk)
    except Exception as error:  # noqa: BLE001 - PyJWT and cryptography raise many kinds
        return f"{kid}: {type(error).__name__}"
    return None


def parse_jwk_set(document: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The usable signing keys of a JWK Set by kid (the first of a repeated kid), and why each
    other entry was skipped. Raises JwksError when the document is not a set, or none is
    usable."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JwksError("not a JWK Set (no 'keys' list)")
    keys: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for jwk in entries:
        problem = _key_problem(jwk)
        if problem is None and jwk["kid"] in keys:
            problem = f"{jwk['kid']}: repeated kid"
        if problem is not None:
            skipped.append(problem)
            continue
        keys[jwk["kid"]] = dict(jwk)
    if not keys:
        reasons = f" (skipped: {'; '.join(skipped[:5])})" if skipped else ""
        raise JwksError(f"no usable signing key in {len(entries)} entries{reasons}")
    return keys, skipped


@dataclass(frozen=True, slots=True)
class KeyState:
    """An issuer's keys as health reports them."""

    issuer: str
    source: str
    keys: int
    """Usable now: 0 before the first successful fetch, and once the keys' cache has ended."""
    kids: tuple[str, ...]
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    age_seconds: float | None
    """Since the last successful fetch (None: never)."""
    expires_in_seconds: float
    """How long the keys stay usable without another successful fetch (0: they are not)."""

    @property
    def ready(self) -> bool:
        """True when tokens of this issuer can be verified now."""
        return self.keys > 0

    def as_dict(self) -> dict[str, Any]:
        """For health output and logs (timestamps as ISO 8601 UTC)."""
        return {
            "issuer": self.issuer,
            "source": self.source,
            "ready": self.ready,
            "keys": self.keys,
            "kids": list(self.kids),
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_failure": self.last_failure.isoformat() if self.last_failure else None,
            "last_error": self.last_error,
            "age_seconds": self.age_seconds,
            "expires_in_seconds": self.expires_in_seconds,
        }


class KeySet:
    """One issuer's signing keys (see the module docstring for when they are fetched)."""

    def __init__(
        self,
        issuer: str,
        source: JwksSource,
        *,
        cache_seconds: float,
        refresh_seconds: float,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if cache_seconds <= 0 or refresh_seconds <= 0:
            raise ValueError("cache_seconds and refresh_seconds must be positive")
        self.issuer = issuer
        self._source = source
        self._cache = cache_seconds
        self._refresh = refresh_seconds
        self._metrics = metrics or NullMetrics()
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()  # the state below
        self._fetching = threading.Lock()  # one fetch at a time; waiters use its result
        self._keys: dict[str, dict[str, Any]] = {}
        self._verifiers: dict[tuple[str, str], PyJWK] = {}
        self._loaded_at: float | None = None
        self._fetches = 0
        self._last_demand: float | None = None
        self._last_background: float | None = None
        self._background: threading.Thread | None = None
        self._last_success: float | None = None
        self._last_failure: float | None = None
        self._last_error: str | None = None

    # --- verification ----------------------------------------------------------------------

    def key(self, kid: str, algorithm: str) -> PyJWK:
        """The key `kid` of this issuer, bound to `algorithm`; raises UnauthenticatedError
        when it is unknown (after a refetch, if one is allowed), when the set has no usable
        keys, or when the key is not one for `algorithm`."""
        now = self._monotonic()
        with self._lock:
            usable = self._usable(now)
            known = usable and kid in self._keys
            aging = usable and now - (self._loaded_at or now) >= self._cache / 2
        if known:
            if aging:
                self._refresh_in_background(now)
            return self._verifier(kid, algorithm)
        self._refresh_on_demand()
        with self._lock:
            usable = self._usable(self._monotonic())
            known = usable and kid in self._keys
            error = self._last_error
        if not usable:
            cause = f": the last fetch failed ({error})" if error else ""
            raise UnauthenticatedError(
                f"issuer {self.issuer}: its signing keys are not available{cause}; tokens "
                "of this issuer are refused until they load"
            )
        if not known:
            raise UnauthenticatedError(
                f"issuer {self.issuer} has no signing key {kid[:_MAX_KID_CHARS]!r}"
            )
        return self._verifier(kid, algorithm)

    def _usable(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._cache

    def _verifier(self, kid: str, algorithm: str) -> PyJWK:
        with self._lock:
            jwk = self._keys.get(kid)
            cached = self._verifiers.get((kid, algorithm))
        if cached is not None:
            return cached
        if jwk is None:  # replaced by a fetch meanwhile
            raise UnauthenticatedError(f"issuer {self.issuer} has no signing key {kid!r}")
        declared = jwk.get("alg")
        if declared is not None and declared != algorithm:
            raise UnauthenticatedError(
                f"issuer {self.issuer}'s key {kid!r} is for {str(declared)[:20]}, not for the "
                f"token's algorithm {algorithm}"
            )
        try:
            verifier = PyJWK(jwk, algorithm=algorithm)
        except Exception as error:  # PyJWT and cryptography raise many kinds
            raise UnauthenticatedError(
                f"issuer {self.issuer}'s key {kid!r} ({jwk.get('kty')}) cannot verify "
                f"{algorithm} signatures"
            ) from error
        with self._lock:
            if self._keys.get(kid) is jwk:
                self._verifiers[(kid, algorithm)] = verifier
        return verifier

    # --- fetching --------------------------------------------------------------------------

    def _refresh_on_demand(self) -> None:
        """Fetch now, unless another fetch ended while this one waited (its result counts) or
        an on-demand fetch started less than refresh_seconds ago."""
        seen = self._fetches
        with self._fetching:
            if self._fetches != seen:
                return
            now = self._monotonic()
            if self._last_demand is not None and now - self._last_demand < self._refresh:
                return
            self._last_demand = now
            self._fetch()

    def _refresh_in_background(self, now: float) -> None:
        with self._lock:
            running = self._background is not None and self._background.is_alive()
            recent = self._last_background is not None and now - self._last_background < (
                self._refresh
            )
            if running or recent:
                return
            self._last_background = now
            self._background = threading.Thread(
                target=self._fetch_locked, name=f"pkggov-jwks-{self.issuer}", daemon=True
            )
            self._background.start()

    def _fetch_locked(self) -> None:
        with self._fetching:
            self._fetch()

    def prefetch(self) -> None:
        """Fetch in the background now (at start-up), unless a fetch is under way."""
        self._refresh_in_background(self._monotonic())

    def refresh_due(self) -> bool:
        """Fetch now (on this thread) when the keys are missing, expired or past half their
        lifetime, at most once per refresh_seconds; True when the set is usable afterwards.
        For a periodic task."""
        now = self._monotonic()
        with self._lock:
            fresh = self._usable(now) and now - (self._loaded_at or now) < self._cache / 2
            recent = self._last_background is not None and now - self._last_background < (
                self._refresh
            )
            if not fresh and not recent:
                self._last_background = now
            seen = self._fetches
        if not fresh and not recent:
            with self._fetching:
                if self._fetches == seen:  # else a fetch just ended: its result counts
                    self._fetch()
        with self._lock:
            return self._usable(self._monotonic())

    def _fetch(self) -> bool:
        """One fetch (the caller holds `_fetching`): replace the keys, or keep them."""
        try:
            keys, skipped = parse_jwk_set(self._source.fetch())
        except Exception as error:  # noqa: BLE001 - any failure keeps the keys (fail closed later)
            message = (
                str(error) if isinstance(error, JwksError) else f"{type(error).__name__}: {error}"
            )
            with self._lock:
                self._fetches += 1
                self._last_failure = self._wall()
                self._last_error = message[:500]
                now = self._monotonic()
                held = len(self._keys) if self._usable(now) else 0
                left = self._cache - (now - self._loaded_at) if held and self._loaded_at else 0.0
            self._metrics.jwks_fetched(self.issuer, ok=False, keys=held, usable_seconds=left)
            log.warning(
                "tokens.jwks_fetch_failed",
                issuer=self.issuer,
                source=self._source.description,
                error=message[:500],
                keys_kept=held,
                usable_for_s=round(left, 1),
            )
            return False
        with self._lock:
            self._fetches += 1
            self._keys = keys
            self._verifiers = {}
            self._loaded_at = self._monotonic()
            self._last_success = self._wall()
            self._last_error = None
        self._metrics.jwks_fetched(self.issuer, ok=True, keys=len(keys), usable_seconds=self._cache)
        log.info(
            "tokens.jwks_loaded",
            issuer=self.issuer,
            kids=sorted(keys),
            skipped=skipped[:10] or None,
        )
        return True

    # --- health ----------------------------------------------------------------------------

    def state(self) -> KeyState:
        """The keys' state now."""
        now = self._monotonic()
        with self._lock:
            usable = self._usable(now)
            age = now - self._loaded_at if self._loaded_at is not None else None
            return KeyState(
                issuer=self.issuer,
                source=self._source.description,
                keys=len(self._keys) if usable else 0,
                kids=tuple(sorted(self._keys)) if usable else (),
                last_success=_utc(self._last_success),
                last_failure=_utc(self._last_failure),
                last_error=self._last_error,
                age_seconds=age,
                expires_in_seconds=(
                    max(0.0, self._cache - age) if usable and age is not None else 0.0
                ),
            )


def _utc(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
