"""Workload identity tokens: OIDC / JWT bearer tokens from configured issuers, verified
strictly (PyJWT), as an identity source alone or beside the mode's own (certificate or dev
header).

The issuers file (``identity.token_issuers``, YAML) names each trusted issuer::

    issuers:
      github:                      # principal ids are "github:<rendered principal>"
        issuer: https://token.actions.githubusercontent.com   # the exact `iss`
        jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks
        # or: discovery: true      ({issuer}/.well-known/openid-configuration)
        # or: jwks_file: jwks.json (development only: identity.mode = dev)
        ca_file: ""                # CA bundle for the HTTPS fetches ("": the system's)
        audiences: [https://pkggov.example.org]   # at least one
        algorithms: [RS256]        # asymmetric only: RS*, PS*, ES*, EdDSA
        clock_skew_seconds: 30
        max_lifetime_seconds: 3600 # exp - iat (exp - nbf without iat) may not exceed it
        principal: "{sub}"         # a template over string claims
        attributes: [repository, ref]              # string claims -> Principal.attributes
        groups:                    # claim-derived groups -> Principal.claim_groups
          - group: ci
            when: {repository: acme/widgets, ref: refs/heads/main}
        jwks_cache_seconds: 300    # keys kept this long after a fetch, also through an outage
        jwks_refresh_seconds: 30   # an unknown kid refetches at most this often

Relative ``jwks_file`` and ``ca_file`` paths are relative to the issuers file's folder.

Verification of a token, every failure UNAUTHENTICATED with a message that never holds the
token: at most ``identity.max_token_bytes``; a compact JWS; the issuer chosen by the exact
``iss`` (read before verifying: it only chooses whose keys and rules apply); the header's
``alg`` among that issuer's algorithms; its ``kid`` among that issuer's keys only (see
`adapters.jwks`); signature, ``exp``, ``nbf``, ``iat`` (with the clock skew), ``aud`` (one of
the audiences), ``iss`` and ``sub`` required and checked by PyJWT; ``iat`` or ``nbf`` present
and the lifetime within the maximum; the principal template rendered from string claims.
A ``crit`` header (or ``b64``) is refused outright.

Namespaces: a token's principal is ``<issuer name>:<rendered>``. Issuer names are lower-case
words that cannot be ``spiffe``, ``dns``, ``cn`` (the certificate principals' namespaces),
``dev`` or ``pkggov`` (the gateway's own), so a token can never pass for a certificate
identity, nor for another issuer's subject.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import yaml
from jwt import PyJWK

from pkggov_gateway.adapters.jwks import FileJwks, HttpsJwks, JwksSource, KeySet, KeyState
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.ports import Authenticator, Metrics, NullMetrics

__all__ = [
    "ALLOWED_ALGORITHMS",
    "RESERVED_ISSUER_NAMES",
    "ClaimGroup",
    "IssuerConfig",
    "TokenAuthenticator",
    "TokenVerifier",
    "bearer_token",
    "load_issuers",
    "parse_issuers",
]

ALLOWED_ALGORITHMS: Final = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
"""Asymmetric signatures only: never HS* (a shared secret), never none."""

RESERVED_ISSUER_NAMES: Final = frozenset({"cn", "dns", "spiffe", "dev", "pkggov"})
"""The certificate principals' namespaces (``spiffe://``, ``dns:``, ``cn:``), development's,
and the gateway's own (``pkggov:approvals``...)."""

NO_ISSUER: Final = "-"
"""The metrics' issuer label when no configured issuer was identified."""

_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_BEARER: Final = "Bearer "
_MAX_PRINCIPAL_CHARS: Final = 1024
_MAX_JTI_CHARS: Final = 256
_MAX_KID_CHARS: Final = 256
_MOST_SKEW: Final = 300.0
_MOST_LIFETIME: Final = 400 * 86_400.0  # Kubernetes' extended tokens live a year
_MOST_CACHE: Final = 7 * 86_400.0
_ISSUER_KEYS: Final = frozenset(
    {
        "issuer",
        "jwks_uri",
        "discovery",
        "jwks_file",
        "ca_file",
        "audiences",
        "algorithms",
        "clock_skew_seconds",
        "max_lifetime_seconds",
        "principal",
        "attributes",
        "groups",
        "jwks_cache_seconds",
        "jwks_refresh_seconds",
    }
)


# --- the issuers file ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimGroup:
    """Tokens whose claims all match `when` (a claim -> the accepted values) are in `group`."""

    group: str
    when: tuple[tuple[str, tuple[str, ...]], ...]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        """True when every named claim is a string among its accepted values."""
        return all(
            isinstance(claims.get(claim), str) and claims[claim] in values
            for claim, values in self.when
        )


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted issuer, as the issuers file configures it."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_uri: str = ""
    discovery: bool = False
    jwks_file: Path | None = None
    ca_file: str = ""
    clock_skew_seconds: float = 30.0
    max_lifetime_seconds: float = 3600.0
    principal: str = "{sub}"
    attributes: tuple[str, ...] = ()
    groups: tuple[ClaimGroup, ...] = ()
    jwks_cache_seconds: float = 300.0
    jwks_refresh_seconds: float = 30.0

    def source(self) -> JwksSource:
        """Where its keys come from. Raises ValueError or OSError for a bad ca_file."""
        if self.jwks_file is not None:
            return FileJwks(self.jwks_file)
        if self.discovery:
            return HttpsJwks(discovery_issuer=self.issuer, ca_file=self.ca_file)
        return HttpsJwks(jwks_uri=self.jwks_uri, ca_file=self.ca_file)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_issuers(path: str | Path, *, allow_files: bool = False) -> tuple[IssuerConfig, ...]:
    """Read and check the issuers file at `path`. `allow_files` (development mode only)
    permits ``jwks_file``. Raises ValueError naming ``identity.token_issuers``, the file, the
    issuer and the key at fault."""
    path = Path(path)
    where = f"identity.token_issuers: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ValueError(f"{where}: cannot read: {reason}") from error
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{where}: invalid YAML{line}: {problem}") from error
    return parse_issuers(document, where=where, base=path.parent, allow_files=allow_files)


def parse_issuers(
    document: Any,
    *,
    where: str = "identity.token_issuers",
    base: Path | None = None,
    allow_files: bool = False,
) -> tuple[IssuerConfig, ...]:
    """The issuers of a parsed issuers file (see the module docstring); ValueError naming the
    issuer and key at fault."""
    if not isinstance(document, dict) or set(document) != {"issuers"}:
        raise ValueError(f"{where}: expected a mapping with one key, 'issuers'")
    issuers = document["issuers"]
    if not isinstance(issuers, dict) or not issuers:
        raise ValueError(f"{where}: 'issuers' must map at least one issuer name to its settings")
    parsed: list[IssuerConfig] = []
    for name, entry in issuers.items():
        config = _parse_issuer(name, entry, where, base or Path(), allow_files=allow_files)
        for other in parsed:
            if other.issuer == config.issuer:
                raise ValueError(
                    f"{where}: issuers {other.name} and {name} have the same issuer "
                    f"{config.issuer!r}: which one a token belongs to must be clear"
                )
        parsed.append(config)
    return tuple(parsed)


def _parse_issuer(
    name: Any, entry: Any, where: str, base: Path, *, allow_files: bool
) -> IssuerConfig:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}: issuer name {name!r} must be 1 to 63 lower-case letters, digits and "
            "'-', starting with a letter"
        )
    if name in RESERVED_ISSUER_NAMES:
        reserved = ", ".join(sorted(RESERVED_ISSUER_NAMES))
        raise ValueError(
            f"{where}: issuer name {name!r} is reserved ({reserved} are other identities' "
            "namespaces)"
        )
    here = f"{where}: issuer {name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{here}: expected a mapping of settings")
    unknown = sorted(str(key) for key in set(entry) - _ISSUER_KEYS)
    if unknown:
        raise ValueError(f"{here}: unknown key(s) {', '.join(unknown)}")

    def text(key: str, default: str = "") -> str:
        value = entry.get(key, default)
        if not isinstance(value, str):
            raise ValueError(f"{here}: {key} must be a string, got {value!r}")
        return value.strip()

    def number(key: str, default: float, *, most: float, zero: bool = False) -> float:
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{here}: {key} must be a number, got {value!r}")
        if not math.isfinite(value) or not 0 <= value <= most or (value == 0 and not zero):
            bound = "from 0" if zero else "greater than 0 and"
            raise ValueError(f"{here}: {key} must be {bound} at most {most:g}, got {value!r}")
        return float(value)

    def strings(key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{here}: {key} must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError(f"{here}: {key} lists a value twice")
        for item in value:
            if pattern is not None and not pattern.fullmatch(item):
                raise ValueError(f"{here}: {key}: {item!r} is not a claim name ([A-Za-z0-9_])")
        return tuple(value)

    issuer = text("issuer")
    if not issuer:
        raise ValueError(f"{here}: issuer (the tokens' exact iss) is required")
    jwks_uri, jwks_file, ca_file = text("jwks_uri"), text("jwks_file"), text("ca_file")
    discovery = entry.get("discovery", False)
    if not isinstance(discovery, bool):
        raise ValueError(f"{here}: discovery must be true or false, got {discovery!r}")
    sources = [key for key, on in (("jwks_uri", jwks_uri), ("discovery", discovery)) if on]
    sources += ["jwks_file"] if jwks_file else []
    if len(sources) != 1:
        raise ValueError(
            f"{here}: give exactly one of jwks_uri, discovery: true and jwks_file"
            + (f" (got {', '.join(sources)})" if sources else "")
        )
    if jwks_uri and not jwks_uri.startswith("https://"):
        raise ValueError(f"{here}: jwks_uri must be an https:// URL, got {jwks_uri!r}")
    if discovery and not issuer.startswith("https://"):
        raise ValueError(f"{here}: discovery needs an https:// issuer, got {issuer!r}")
    file_path: Path | None = None
    if jwks_file:
        if not allow_files:
            raise ValueError(
                f"{here}: jwks_file is for development only (identity.mode = dev); use "
                "jwks_uri or discovery"
            )
        file_path = base / jwks_file
        if not file_path.is_file():
            raise ValueError(f"{here}: jwks_file {str(file_path)!r} is not a readable file")
    if ca_file:
        if jwks_file:
            raise ValueError(f"{here}: ca_file applies to HTTPS fetches, not to jwks_file")
        ca_file = str(base / ca_file)
        if not Path(ca_file).is_file():
            raise ValueError(f"{here}: ca_file {ca_file!r} is not a readable file")

    audiences = strings("audiences")
    if not audiences:
        raise ValueError(f"{here}: audiences must name at least one accepted audience")
    algorithms = strings("algorithms") if "algorithms" in entry else ("RS256",)
    if not algorithms:
        raise ValueError(f"{here}: algorithms must name at least one algorithm")
    for algorithm in algorithms:
        if algorithm not in ALLOWED_ALGORITHMS:
            why = (
                " (symmetric and unsigned tokens are never accepted)"
                if algorithm.upper().startswith("HS") or algorithm.lower() == "none"
                else ""
            )
            raise ValueError(
                f"{here}: algorithms: {algorithm!r} is not allowed{why}; expected some of "
                f"{', '.join(ALLOWED_ALGORITHMS)}"
            )
    principal = text("principal", "{sub}")
    _template_claims(principal, f"{here}: principal")
    cache = number("jwks_cache_seconds", 300.0, most=_MOST_CACHE)
    refresh = number("jwks_refresh_seconds", 30.0, most=_MOST_CACHE)
    if refresh > cache:
        raise ValueError(
            f"{here}: jwks_refresh_seconds ({refresh:g}) must not exceed jwks_cache_seconds "
            f"({cache:g})"
        )
    return IssuerConfig(
        name=name,
        issuer=issuer,
        audiences=audiences,
        algorithms=algorithms,
        jwks_uri=jwks_uri,
        discovery=discovery,
        jwks_file=file_path,
        ca_file=ca_file,
        clock_skew_seconds=number("clock_skew_seconds", 30.0, most=_MOST_SKEW, zero=True),
        max_lifetime_seconds=number("max_lifetime_seconds", 3600.0, most=_MOST_LIFETIME),
        principal=principal,
        attributes=strings("attributes", _CLAIM),
        groups=_parse_groups(entry.get("groups", []), here),
        jwks_cache_seconds=cache,
        jwks_refresh_seconds=refresh,
    )


def _template_claims(template: str, here: str) -> tuple[str, ...]:
    """The claims a principal template names, in order; ValueError if it is malformed."""
    claims = tuple(_PLACEHOLDER.findall(template))
    literal = _PLACEHOLDER.sub("", template)
    if "{" in literal or "}" in literal:
        raise ValueError(f"{here}: {template!r} has an unmatched brace")
    if not claims:
        raise ValueError(f'{here}: {template!r} names no claim (e.g. "{{sub}}")')
    for claim in claims:
        if not _CLAIM.fullmatch(claim):
            raise ValueError(f"{here}: {{{claim}}} is not a claim name ([A-Za-z0-9_])")
    return claims


def _parse_groups(value: Any, here: str) -> tuple[ClaimGroup, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{here}: groups must be a list of {{group: NAME, when: {{...}}}}")
    groups: list[ClaimGroup] = []
    for index, item in enumerate(value):
        at = f"{here}: groups[{index}]"
        if not isinstance(item, dict) or set(item) != {"group", "when"}:
            raise ValueError(f"{at}: expected exactly the keys group and when")
        group, when = item["group"], item["when"]
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise ValueError(f"{at}: group {group!r} is not a group name ([A-Za-z0-9_.-])")
        if not isinstance(when, dict) or not when:
            raise ValueError(f"{at}: when must map at least one claim to its value(s)")
        conditions: list[tuple[str, tuple[str, ...]]] = []
        for claim, accepted in when.items():
            if not isinstance(claim, str) or not _CLAIM.fullmatch(claim):
                raise ValueError(f"{at}: when: {claim!r} is not a claim name ([A-Za-z0-9_])")
            values = [accepted] if isinstance(accepted, str) else accepted
            if not isinstance(values, list) or not values:
                raise ValueError(f"{at}: when.{claim} must be a string or a list of strings")
            if not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"{at}: when.{claim} must be a string or a list of strings")
            conditions.append((claim, tuple(values)))
        groups.append(ClaimGroup(group, tuple(conditions)))
    return tuple(groups)


# --- verification --------------------------------------------------------------------------


class _RefusedError(Exception):
    """A token refused: why (the metrics' result), by which issuer, and the caller's message."""

    def __init__(self, result: str, message: str, issuer: str = NO_ISSUER) -> None:
        super().__init__(message)
        self.result = result
        self.message = message
        self.issuer = issuer


def bearer_token(metadata: Mapping[str, str | bytes], key: str) -> str | None:
    """The token of ``<key>: Bearer <token>``, None when `key` is absent. UnauthenticatedError
    when the value does not start with exactly "Bearer " (one space; the scheme as gRPC
    clients write it), or holds two tokens (the edge joins a repeated key's values with ", ").
    Whether the rest is a token is the verifier's to say."""
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bytes) or not value.startswith(_BEARER):
        raise UnauthenticatedError(f"the {key} metadata value must be exactly 'Bearer <token>'")
    token = value[len(_BEARER) :]
    if ", " in token and token.partition(", ")[2].startswith(_BEARER):
        raise UnauthenticatedError(f"the {key} metadata key is repeated; send one token")
    return token


class TokenVerifier:
    """Verifies bearer tokens against the configured issuers (one KeySet each)."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        max_token_bytes: int = 8192,
        metrics: Metrics | None = None,
        key_sets: Mapping[str, KeySet] | None = None,
    ) -> None:
        """`key_sets` (by issuer name) replaces the fetched ones (tests); otherwise each
        issuer's source is built here (ValueError or OSError for a bad ca_file)."""
        self._metrics = metrics or NullMetrics()
        self._max_bytes = max_token_bytes
        self._by_iss = {issuer.issuer: issuer for issuer in issuers}
        self._key_sets: dict[str, KeySet] = dict(key_sets or {})
        for issuer in issuers:
            if issuer.name not in self._key_sets:
                self._key_sets[issuer.name] = KeySet(
                    issuer.name,
                    issuer.source(),
                    cache_seconds=issuer.jwks_cache_seconds,
                    refresh_seconds=issuer.jwks_refresh_seconds,
                    metrics=self._metrics,
                )

    @property
    def issuers(self) -> tuple[IssuerConfig, ...]:
        """The configured issuers."""
        return tuple(self._by_iss.values())

    def count(self, result: str, issuer: str = NO_ISSUER) -> None:
        """Count a token refused before verification (missing, malformed metadata)."""
        self._metrics.token_checked(issuer, result)

    def verify(self, token: str, peer: str) -> Principal:
        """The token's principal; UnauthenticatedError (counted by why) when it is refused."""
        try:
            principal = self._verify(token, peer)
        except _RefusedError as refused:
            self._metrics.token_checked(refused.issuer, refused.result)
            raise UnauthenticatedError(refused.message) from None
        self._metrics.token_checked(principal.issuer or NO_ISSUER, "ok")
        return principal

    def _verify(self, token: str, peer: str) -> Principal:
        size = len(token.encode("utf-8", "replace"))
        if size > self._max_bytes:
            raise _RefusedError(
                "oversized",
                f"the bearer token is {size} bytes, more than identity.max_token_bytes "
                f"({self._max_bytes})",
            )
        if not _JWS.fullmatch(token):
            raise _RefusedError("malformed", "the bearer token is not a signed JWT (compact JWS)")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _RefusedError("malformed", "the bearer token is not a readable JWT") from None
        iss = unverified.get("iss")
        config = self._by_iss.get(iss) if isinstance(iss, str) else None
        if config is None:
            shown = f" ({iss[:100]!r})" if isinstance(iss, str) else ""
            raise _RefusedError(
                "unknown_issuer", f"the token's issuer{shown} is not one this gateway trusts"
            )
        name = config.name
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in config.algorithms:
            shown = repr(algorithm)[:20]
            raise _RefusedError(
                "algorithm",
                f"issuer {name} tokens must be signed with {', '.join(config.algorithms)}, "
                f"not {shown}",
                name,
            )
        if "crit" in header or "b64" in header:
            raise _RefusedError("malformed", "the token has a crit or b64 header: refused", name)
        if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
            raise _RefusedError("unknown_key", "the token's header names no key (kid)", name)
        try:
            key = self._key_sets[name].key(kid, algorithm)
        except UnauthenticatedError as error:
            result = "no_keys" if "not available" in error.message else "unknown_key"
            raise _RefusedError(result, error.message, name) from None
        claims = self._decode(token, key, algorithm, config)
        _check_lifetime(claims, config)
        return Principal(
            id=f"{name}:{_render(config, claims)}",
            method=AuthMethod.TOKEN,
            peer=peer,
            issuer=name,
            token_id=_token_id(token, claims),
            attributes={
                claim: claims[claim]
                for claim in config.attributes
                if _attribute_value(claims.get(claim))
            },
            claim_groups=tuple(dict.fromkeys(g.group for g in config.groups if g.matches(claims))),
        )

    def _decode(
        self, token: str, key: PyJWK, algorithm: str, config: IssuerConfig
    ) -> dict[str, Any]:
        name = config.name
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(config.audiences),
                issuer=config.issuer,
                leeway=config.clock_skew_seconds,
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _RefusedError("expired", f"the issuer {name} token has expired", name) from None
        except jwt.ImmatureSignatureError:
            raise _RefusedError(
                "not_yet_valid",
                f"the issuer {name} token is not valid yet (nbf or iat in the future)",
                name,
            ) from None
        except jwt.MissingRequiredClaimError as error:
            result = "audience" if error.claim == "aud" else "claims"
            raise _RefusedError(
                result, f"the issuer {name} token has no {error.claim} claim", name
            ) from None
        except jwt.InvalidAudienceError:
            raise _RefusedError(
                "audience",
                f"the issuer {name} token is not for this gateway (aud must be one of "
                f"{', '.join(config.audiences)})",
                name,
            ) from None
        except jwt.InvalidSignatureError:
            raise _RefusedError(
                "signature", f"the issuer {name} token's signature does not verify", name
            ) from None
        except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError):
            raise _RefusedError(
                "signature", f"the issuer {name} token cannot be verified with its key", name
            ) from None
        except jwt.PyJWTError as error:
            raise _RefusedError(
                "claims", f"the issuer {name} token is invalid ({type(error).__name__})", name
            ) from None
        return claims

    # --- keys' health ----------------------------------------------------------------------

    def key_states(self) -> tuple[KeyState, ...]:
        """Each issuer's keys now (loaded, ages, last success and failure), in file order."""
        return tuple(self._key_sets[issuer.name].state() for issuer in self.issuers)

    def ready(self) -> bool:
        """True when every issuer has usable keys."""
        return all(state.ready for state in self.key_states())

    def prefetch(self) -> None:
        """Start fetching every issuer's keys in the background (at start-up)."""
        for key_set in self._key_sets.values():
            key_set.prefetch()

    def refresh_due(self) -> bool:
        """Fetch the keys that are missing, expired or past half their lifetime (on this
        thread, rate-limited); True when every issuer has usable keys. For a periodic task."""
        ready = [key_set.refresh_due() for key_set in self._key_sets.values()]  # each one
        return all(ready)


def _number(claims: Mapping[str, Any], claim: str, name: str) -> float | None:
    value = claims.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RefusedError("claims", f"the issuer {name} token's {claim} is not a number", name)
    return float(value)


def _check_lifetime(claims: Mapping[str, Any], config: IssuerConfig) -> None:
    name = config.name
    expires = _number(claims, "exp", name)
    issued = _number(claims, "iat", name)
    start = issued if issued is not None else _number(claims, "nbf", name)
    if expires is None or start is None:
        raise _RefusedError(
            "claims",
            f"the issuer {name} token has neither iat nor nbf: its lifetime cannot be checked",
            name,
        )
    lifetime = expires - start
    if lifetime > config.max_lifetime_seconds:
        raise _RefusedError(
            "lifetime",
            f"the issuer {name} token lives {lifetime:g}s, more than its max_lifetime_seconds "
            f"({config.max_lifetime_seconds:g})",
            name,
        )
    if lifetime <= 0:
        raise _RefusedError("claims", f"the issuer {name} token expires before it starts", name)


_MAX_ATTRIBUTE_CHARS = 1024


def _attribute_value(value: Any) -> bool:
    """Whether a claim's value becomes an attribute: a printable string of at most 1,024
    characters (what policy and the audit record can show as it is); others are left out."""
    return isinstance(value, str) and len(value) <= _MAX_ATTRIBUTE_CHARS and value.isprintable()


def _render(config: IssuerConfig, claims: Mapping[str, Any]) -> str:
    """The principal template filled in with string claims."""
    name = config.name

    def fill(match: re.Match[str]) -> str:
        value = claims.get(match.group(1))
        if not isinstance(value, str) or not value:
            raise _RefusedError(
                "principal",
                f"the issuer {name} token has no string claim {match.group(1)} (needed by its "
                "principal)",
                name,
            )
        return value

    rendered = _PLACEHOLDER.sub(fill, config.principal)
    if (
        len(rendered) > _MAX_PRINCIPAL_CHARS
        or not rendered.isprintable()
        or rendered.strip() != rendered
    ):
        raise _RefusedError(
            "principal",
            f"the issuer {name} token's principal must be 1 to {_MAX_PRINCIPAL_CHARS} "
            "printable characters without blanks at either end",
            name,
        )
    return rendered


def _token_id(token: str, claims: Mapping[str, Any]) -> str:
    """The token's ``jti`` when it has a printable one, else a SHA-256 prefix of the token."""
    jti = claims.get("jti")
    if isinstance(jti, str) and 0 < len(jti) <= _MAX_JTI_CHARS and jti.isprintable():
        return jti
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]


# --- the authenticator ---------------------------------------------------------------------


class TokenAuthenticator:
    """Bearer tokens as an identity source, alone (`base` None: ``identity.tokens = only``) or
    beside the mode's own authenticator (``accept``).

    A token that is sent is always verified: a bad one fails the call whichever identity would
    have won. With both a token and the mode's own identity, `precedence` decides whose
    principal the call has ("certificate": the mode's; "token"); the other is not mixed in.
    With no token, the mode's own authenticator decides, as without tokens.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        metadata_key: str = "authorization",
        base: Authenticator | None = None,
        base_presented: Callable[[Mapping[str, str | bytes], Mapping[str, Sequence[bytes]]], bool]
        | None = None,
        precedence: str = "certificate",
    ) -> None:
        if precedence not in {"certificate", "token"}:
            raise ValueError(
                f"identity.token_precedence: expected certificate or token, got {precedence!r}"
            )
        if base is not None and base_presented is None:
            raise ValueError("a base authenticator needs base_presented")
        self.verifier = verifier
        self._key = metadata_key.lower()
        self._base = base
        self._presented = base_presented
        self._token_wins = precedence == "token"

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        """The token's principal, or the mode's own, as described in the class docstring."""
        try:
            token = bearer_token(metadata, self._key)
        except UnauthenticatedError:
            self.verifier.count("malformed")
            raise
        if token is None:
            if self._base is None:
                self.verifier.count("missing")
                raise UnauthenticatedError(
                    f"no bearer token: send '{self._key}: Bearer <token>' with a token from "
                    "an issuer this gateway trusts"
                )
            return self._base.authenticate(metadata, peer, auth_context)
        principal = self.verifier.verify(token, peer)
        if self._base is None or self._token_wins or self._presented is None:
            return principal
        if self._presented(metadata, auth_context):
            return self._base.authenticate(metadata, peer, auth_context)
        return principal
