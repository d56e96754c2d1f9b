"""Authenticators: the caller's principal from an mTLS certificate, a trusted proxy, or dev mode.

Each implements the `Authenticator` port and raises `UnauthenticatedError` when the call carries
no identity it accepts. The principal is chosen by an ordered list of sources:

- ``spiffe``: the URI SAN that is a valid SPIFFE ID (``spiffe://trust-domain/path``); a
  certificate with more than one ``spiffe:`` URI SAN is refused (an X.509-SVID has exactly one,
  and the principal must not depend on the SANs' order);
- ``dns``: the first DNS SAN that is a valid host name (wildcards name no one, so are skipped);
- ``cn``: the subject's common name, when it has exactly one.

Repeated headers: the gRPC edge joins a repeated text metadata key's values with ", " (as HTTP
does). Two identity headers mean something besides the trusted proxy (or the developer) added
one, so both header authenticators refuse them: a development principal may hold no ',' at
all; an XFCC value is refused when it holds ", " outside quotes, which Envoy never writes (it
joins elements with a bare ',' and quotes any value holding ','). Joined values cannot hide
the join inside quotes: Envoy's own value is balanced, so that would leave a quote unclosed,
and an unterminated value is refused as malformed.

Certificate verification (chain to the configured CA, validity period) is the TLS handshake's
job (see `adapters.tls`); `MtlsAuthenticator` only reads the certificate grpc verified.

Workload tokens (``identity.tokens``, `adapters.tokens`) wrap the mode's authenticator (accept)
or stand alone (only); `build_authenticator` builds either.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, unquote_to_bytes

from cryptography import x509
from cryptography.x509.oid import NameOID

from pkggov_gateway.adapters.tokens import TokenAuthenticator, TokenVerifier, load_issuers
from pkggov_gateway.config import IdentitySettings, metadata_key_problem
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.domain.identity import AuthMethod, Principal
from pkggov_gateway.ports import Authenticator, Metrics

__all__ = [
    "PRINCIPAL_SOURCES",
    "CertFacts",
    "DevAuthenticator",
    "IPNetwork",
    "MtlsAuthenticator",
    "ProxyAuthenticator",
    "build_authenticator",
    "is_spiffe_id",
    "parse_peer_ip",
    "parse_sources",
    "parse_trusted_proxies",
    "parse_xfcc",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PRINCIPAL_SOURCES: Final = frozenset({"spiffe", "dns", "cn"})

PEM_CERT_KEY: Final = "x509_pem_cert"  # where grpc puts the verified client certificate
_CACHE_SIZE: Final = 256
_MAX_ID_CHARS: Final = 2048  # SPIFFE's limit on an ID's length; longer values name no one
_MAX_DEV_CHARS: Final = 256
_DEV_PRINCIPAL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
"""Printable ASCII, no blank at either end (and then no ',', see DevAuthenticator)."""
_REPEATED: Final = ", "  # how the edge joins a repeated text metadata key's values

# SPIFFE ID spec: lower-case trust domain of [a-z0-9._-]; path segments of [A-Za-z0-9._-].
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(?:/[A-Za-z0-9._-]+)+")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_spiffe_id(value: str) -> bool:
    """True when `value` is a SPIFFE workload ID: ``spiffe://trust-domain/path``."""
    if len(value) > _MAX_ID_CHARS or not _SPIFFE_ID.fullmatch(value):
        return False
    segments = value[len("spiffe://") :].split("/")[1:]
    return all(segment not in {".", ".."} for segment in segments)


def _is_host_name(value: str) -> bool:
    labels = value.removesuffix(".").split(".")
    return len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _is_name(value: str) -> bool:
    return 0 < len(value) <= _MAX_ID_CHARS and value.isprintable() and value.strip() == value


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What a certificate (or an XFCC element) says about its subject, in the order given."""

    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()

    def principal_id(self, sources: Sequence[str]) -> str | None:
        """The first acceptable name by `sources`, or None when there is none; raises
        UnauthenticatedError for a certificate with more than one SPIFFE URI SAN when the
        spiffe source is consulted.

        Each source has its own namespace, so that no certificate can take another source's
        name (nor a development-mode name): a SPIFFE ID is itself (``spiffe://...``), a DNS
        SAN becomes ``dns:<name>``, a CN ``cn:<name>``.
        """
        for source in sources:
            if source == "spiffe":
                spiffe = [u for u in self.uris if u[:7].lower() == "spiffe:"]
                if len(spiffe) > 1:
                    raise UnauthenticatedError(
                        f"the certificate has {len(spiffe)} SPIFFE URI SANs; an X.509-SVID has "
                        f"exactly one (found {self.describe()})"
                    )
                found = next((u for u in spiffe if is_spiffe_id(u)), None)
            elif source == "dns":
                dns = next((d for d in self.dns_names if _is_host_name(d)), None)
                found = f"dns:{dns}" if dns is not None else None
            else:
                names = [cn for cn in self.common_names if _is_name(cn)]
                found = f"cn:{names[0]}" if len(self.common_names) == 1 and names else None
            if found is not None:
                return found
        return None

    def describe(self) -> str:
        """A short account of the names seen, for error messages: at most six, each quoted
        to at most 100 characters."""

        def quoted(name: str) -> str:
            return repr(name) if len(name) <= 100 else f"{name[:100]!r}… ({len(name)} chars)"

        shown = [f"URI {quoted(u)}" for u in self.uris]
        shown += [f"DNS {quoted(d)}" for d in self.dns_names]
        shown += [f"CN {quoted(c)}" for c in self.common_names]
        return ", ".join(shown[:6]) or "no names at all"


def _common_names(name: x509.Name) -> tuple[str, ...]:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(v.value if isinstance(v.value, str) else "" for v in values)


def _facts_from_pem(pem: bytes) -> CertFacts:
    """Parse one PEM certificate; raises UnauthenticatedError when it cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        common_names = _common_names(cert.subject)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return CertFacts(common_names=common_names)
        return CertFacts(
            uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
            dns_names=tuple(san.get_values_for_type(x509.DNSName)),
            common_names=common_names,
        )
    # cryptography raises ValueError, DuplicateExtension, UnsupportedGeneralNameType and more
    # for a certificate it cannot read: to the caller all mean one thing, no identity.
    except Exception as error:
        raise UnauthenticatedError(
            f"the client certificate cannot be parsed: {type(error).__name__}: {error}"
        ) from error


def _metadata_text(metadata: Mapping[str, str | bytes], key: str) -> str | None:
    """The value of `key` as text (binary values are read as UTF-8), None when absent."""
    value = metadata.get(key)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UnauthenticatedError(f"the {key} metadata value is not UTF-8 text") from error
    return value


def parse_sources(sources: str | Sequence[str]) -> tuple[str, ...]:
    """Validate principal sources (a comma-separated string or a sequence); ValueError if bad."""
    items = sources.split(",") if isinstance(sources, str) else list(sources)
    parsed = tuple(item.strip().lower() for item in items if item.strip())
    unknown = [item for item in parsed if item not in PRINCIPAL_SOURCES]
    if unknown:
        raise ValueError(
            f"identity.principal_sources: unknown source(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(sorted(PRINCIPAL_SOURCES))}"
        )
    if not parsed:
        raise ValueError("identity.principal_sources: name at least one of spiffe, dns, cn")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"identity.principal_sources: a source is repeated in {sources!r}")
    return parsed


class MtlsAuthenticator:
    """The principal from the client certificate grpc verified during the TLS handshake.

    grpc (TLS with client auth required) puts the verified leaf certificate in the auth
    context as ``x509_pem_cert`` (a one-element list of PEM bytes). Parsed certificates are
    kept in a bounded LRU keyed by their PEM, so a client's calls parse its certificate once.
    """

    def __init__(self, sources: Sequence[str], *, cache_size: int = _CACHE_SIZE) -> None:
        self._sources = parse_sources(sources)
        self._facts = functools.lru_cache(maxsize=cache_size)(_facts_from_pem)

    @property
    def facts_cache(self) -> functools._lru_cache_wrapper[CertFacts]:
        """The LRU-cached certificate parser (its ``cache_info()`` shows hits and misses)."""
        return self._facts

    @staticmethod
    def presented(
        metadata: Mapping[str, str | bytes], auth_context: Mapping[str, Sequence[bytes]]
    ) -> bool:
        """True when the call came with a client certificate (beside a token: who wins)."""
        return bool(auth_context.get(PEM_CERT_KEY))

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        """The principal named by the peer certificate; `metadata` is never consulted."""
        pems = auth_context.get(PEM_CERT_KEY) or ()
        if not pems:
            raise UnauthenticatedError(
                "no client certificate: connect over TLS with a client certificate issued by "
                "the CA the gateway trusts"
            )
        facts = self._facts(bytes(pems[0]))
        principal = facts.principal_id(self._sources)
        if principal is None:
            raise UnauthenticatedError(
                "the client certificate names no acceptable principal (looked for "
                f"{', '.join(self._sources)}; found {facts.describe()})"
            )
        return Principal(id=principal, method=AuthMethod.MTLS, peer=peer)


# --- trusted proxy ---------------------------------------------------------------------------


def parse_peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in a grpc peer string, or None (unix sockets, anything unparseable).

    grpc writes ``ipv4:10.0.0.1:5678`` and ``ipv6:%5B::1%5D:5678`` (older releases
    ``ipv6:[::1]:5678``). An IPv4-mapped IPv6 address counts as its IPv4 address.
    """
    scheme, _, rest = peer.partition(":")
    rest = unquote(rest)
    try:
        if scheme == "ipv4":
            return ipaddress.IPv4Address(rest.rpartition(":")[0])
        if scheme == "ipv6":
            host = rest.rpartition(":")[0] if rest.startswith("[") else rest
            address = ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
            return address.ipv4_mapped or address
    except ValueError:
        return None
    return None


def parse_trusted_proxies(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated IP addresses or CIDR ranges; ValueError naming the first bad entry."""
    networks: list[IPNetwork] = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as error:
            raise ValueError(
                f"identity.trusted_proxies: {entry!r} is not an IP address or CIDR range ({error})"
            ) from error
    return tuple(networks)


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes; a backslash escapes inside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError("unterminated quoted value")
    parts.append("".join(current))
    return parts


def _unquote_value(value: str, *, keep_escapes: bool = False) -> str:
    """Strip a value's double quotes and, unless `keep_escapes`, its backslash escapes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        return inner if keep_escapes else re.sub(r"\\(.)", r"\1", inner)
    return value


def parse_xfcc(header: str) -> list[dict[str, list[str]]]:
    """Parse an Envoy ``x-forwarded-client-cert`` value into its elements, in order.

    Each element maps a lower-cased key (``by``, ``hash``, ``cert``, ``chain``, ``subject``,
    ``uri``, ``dns``) to its values in order (URI and DNS may repeat). Values may be quoted,
    and then may hold ``,`` ``;`` ``=`` and backslash-escaped quotes. A Subject keeps its
    backslashes: Envoy quotes the RFC 4514 string as is, whose own escapes use them. ValueError
    if malformed.
    """
    elements: list[dict[str, list[str]]] = []
    for raw_element in _split_unquoted(header, ","):
        element: dict[str, list[str]] = {}
        for pair in _split_unquoted(raw_element, ";"):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected KEY=VALUE, got {pair.strip()!r}")
            name = key.strip().lower()
            unquoted = _unquote_value(value, keep_escapes=name == "subject")
            element.setdefault(name, []).append(unquoted)
        if not element:
            raise ValueError("empty element")
        elements.append(element)
    return elements


def _subject_common_names(subject: str) -> tuple[str, ...]:
    try:
        return _common_names(x509.Name.from_rfc4514_string(subject))
    except Exception:  # noqa: BLE001 - an unreadable subject names no one, whatever raised
        return ()


class ProxyAuthenticator:
    """The principal from a trusted proxy's client-certificate header (Envoy XFCC format).

    The header is honoured only when the call's peer address lies in a trusted network; from
    any other peer (including unix sockets) it is ignored and the call is unauthenticated.
    The LAST element counts: it is the one the nearest proxy (the trusted one) appended. A
    repeated header (", " outside quotes, see the module docstring) is refused. Its
    URI, DNS and Subject (CN) fields are read; when it has none of them, its URL-encoded Cert.
    """

    def __init__(
        self,
        header: str,
        trusted: Sequence[IPNetwork],
        sources: Sequence[str],
        *,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        problem = metadata_key_problem(header)
        if problem:
            raise ValueError(f"identity.proxy_header: {problem}")
        self._header = header.lower()
        self._trusted = tuple(trusted)
        self._sources = parse_sources(sources)
        self._facts = functools.lru_cache(maxsize=cache_size)(_facts_from_pem)

    def is_trusted(self, peer: str) -> bool:
        """True when `peer` (a grpc peer string) is an address in a trusted network."""
        address = parse_peer_ip(peer)
        return address is not None and any(address in network for network in self._trusted)

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        """The principal in the header's last element, if the peer is a trusted proxy."""
        if not self.is_trusted(peer):
            raise UnauthenticatedError(
                f"the call came from {peer}, which is not a trusted proxy; its "
                f"{self._header} header (if any) was ignored"
            )
        header = (_metadata_text(metadata, self._header) or "").strip()
        if not header:
            raise UnauthenticatedError(f"the trusted proxy sent no {self._header} header")
        try:
            repeated = any(e.startswith(" ") for e in _split_unquoted(header, ",")[1:])
            element = parse_xfcc(header)[-1]
        except ValueError as error:
            raise UnauthenticatedError(f"malformed {self._header} header: {error}") from error
        if repeated:
            raise UnauthenticatedError(
                f"the {self._header} header is repeated (', ' between elements, which the "
                "trusted proxy never writes): something besides the proxy added one"
            )
        facts = self._element_facts(element)
        principal = facts.principal_id(self._sources)
        if principal is None:
            raise UnauthenticatedError(
                f"the {self._header} header names no acceptable principal (looked for "
                f"{', '.join(self._sources)}; found {facts.describe()})"
            )
        return Principal(id=principal, method=AuthMethod.PROXY, peer=peer)

    def _element_facts(self, element: Mapping[str, list[str]]) -> CertFacts:
        if not {"uri", "dns", "subject"} & element.keys() and element.get("cert"):
            return self._facts(unquote_to_bytes(_unquote_value(element["cert"][0])))
        common_names: tuple[str, ...] = ()
        for subject in element.get("subject", []):
            common_names += _subject_common_names(subject)
        return CertFacts(
            uris=tuple(element.get("uri", [])),
            dns_names=tuple(element.get("dns", [])),
            common_names=common_names,
        )


# --- development ---------------------------------------------------------------------------


class DevAuthenticator:
    """Development only: the principal is whatever the caller puts in a metadata key, if it is
    a plain name: 1 to 256 printable ASCII characters, trimmed, without ','.

    ASCII only: grpcio reads a text value that is not UTF-8 as Latin-1, so b"al\\xe9" and the
    UTF-8 "alé" would be one principal. No ',': the edge joins a repeated key's values with
    ", ", so a repeated header is refused rather than read as the principal "alice, bob".
    """

    def __init__(self, metadata_key: str) -> None:
        problem = metadata_key_problem(metadata_key)
        if problem:
            raise ValueError(f"identity.dev_metadata_key: {problem}")
        self._key = metadata_key.lower()

    def presented(
        self, metadata: Mapping[str, str | bytes], auth_context: Mapping[str, Sequence[bytes]]
    ) -> bool:
        """True when the call came with the development header (beside a token: who wins)."""
        return self._key in metadata

    def authenticate(
        self,
        metadata: Mapping[str, str | bytes],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        """The trimmed metadata value: 1 to 256 printable ASCII characters, no ','."""
        value = _metadata_text(metadata, self._key)
        if value is None:
            raise UnauthenticatedError(
                f"development identity: send the principal in the {self._key} metadata key"
            )
        value = value.strip()
        if _REPEATED in value:
            raise UnauthenticatedError(
                f"development identity: the {self._key} metadata key is repeated; send it once"
            )
        if len(value) > _MAX_DEV_CHARS or not _DEV_PRINCIPAL.fullmatch(value) or "," in value:
            raise UnauthenticatedError(
                f"development identity: {self._key} must be 1 to {_MAX_DEV_CHARS} printable "
                "ASCII characters, without ','"
            )
        return Principal(id=value, method=AuthMethod.DEV, peer=peer)


def build_authenticator(
    settings: IdentitySettings, *, metrics: Metrics | None = None
) -> Authenticator:
    """The authenticator for ``settings.mode`` and ``settings.tokens``; ValueError (or OSError,
    for an issuers file or CA bundle that cannot be read) naming the bad setting if any.

    With tokens the result is a `TokenAuthenticator` (its ``verifier`` reports the issuers'
    key states; nothing is fetched until `TokenVerifier.prefetch` or the first token)."""
    if settings.tokens == "off":
        return _mode_authenticator(settings)
    if settings.tokens not in {"accept", "only"}:
        raise ValueError(f"identity.tokens: expected off, accept or only, got {settings.tokens!r}")
    if not settings.token_issuers.strip():
        raise ValueError(f"identity.tokens = {settings.tokens} needs identity.token_issuers")
    problem = metadata_key_problem(settings.token_metadata_key)
    if problem:
        raise ValueError(f"identity.token_metadata_key: {problem}")
    issuers = load_issuers(settings.token_issuers, allow_files=settings.mode == "dev")
    try:
        verifier = TokenVerifier(issuers, max_token_bytes=settings.max_token_bytes, metrics=metrics)
    except (OSError, ValueError) as error:  # a ca_file that does not load
        raise ValueError(f"identity.token_issuers: {settings.token_issuers}: {error}") from error
    if settings.tokens == "only":
        return TokenAuthenticator(verifier, metadata_key=settings.token_metadata_key)
    base = _mode_authenticator(settings)
    if not isinstance(base, MtlsAuthenticator | DevAuthenticator):
        raise ValueError(
            f"identity.tokens = accept is not supported with identity.mode = {settings.mode}"
        )
    return TokenAuthenticator(
        verifier,
        metadata_key=settings.token_metadata_key,
        base=base,
        base_presented=base.presented,
        precedence=settings.token_precedence,
    )


def _mode_authenticator(settings: IdentitySettings) -> Authenticator:
    """The authenticator of ``settings.mode`` alone."""
    if settings.mode == "mtls":
        return MtlsAuthenticator(parse_sources(settings.principal_sources))
    if settings.mode == "proxy":
        trusted = parse_trusted_proxies(settings.trusted_proxies)
        if not trusted:
            raise ValueError(
                "identity.trusted_proxies: proxy mode needs at least one trusted proxy address "
                "or CIDR range"
            )
        return ProxyAuthenticator(
            settings.proxy_header, trusted, parse_sources(settings.principal_sources)
        )
    if settings.mode == "dev":
        return DevAuthenticator(settings.dev_metadata_key)
    raise ValueError(f"identity.mode: expected mtls, proxy or dev, got {settings.mode!r}")
