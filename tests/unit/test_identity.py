"""Authenticators: principal by source order, XFCC from trusted proxies only, dev header rules."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkggov_gateway.adapters.identity import (
    CertFacts,
    DevAuthenticator,
    MtlsAuthenticator,
    ProxyAuthenticator,
    build_authenticator,
    is_spiffe_id,
    parse_peer_ip,
    parse_sources,
    parse_trusted_proxies,
    parse_xfcc,
)
from pkggov_gateway.config import IdentitySettings
from pkggov_gateway.domain.errors import UnauthenticatedError
from pkggov_gateway.domain.identity import AuthMethod, Principal
from tests.certs import CA, issue_cert, make_ca

PEER = "ipv4:127.0.0.1:5555"
ALICE = "spiffe://pkggov.test/ops/alice"
NO_METADATA: Mapping[str, str | bytes] = {}


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca("unit test CA")


def tls_context(pem: bytes) -> Mapping[str, Sequence[bytes]]:
    """What grpc's auth_context() holds for a verified mTLS peer (the parts we read)."""
    return {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]}


def mtls_principal(ca: CA, sources: Sequence[str] = ("spiffe", "dns", "cn"), **cert: Any) -> str:
    pem, _ = issue_cert(ca, **cert)
    return MtlsAuthenticator(sources).authenticate(NO_METADATA, PEER, tls_context(pem)).id


# --- mTLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (("spiffe", "dns", "cn"), ALICE),
        (("dns", "spiffe", "cn"), "dns:alice.pkggov.test"),
        (("cn", "spiffe"), "cn:alice"),
        (("dns",), "dns:alice.pkggov.test"),
    ],
)
def test_mtls_takes_the_first_source_present(
    ca: CA, sources: tuple[str, ...], expected: str
) -> None:
    """With every kind of name in the certificate, the configured order decides."""
    actual = mtls_principal(
        ca, sources, cn="alice", uri_sans=[ALICE], dns_sans=["alice.pkggov.test"]
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ({"cn": "legacy", "dns_sans": ["svc.pkggov.test"]}, "dns:svc.pkggov.test"),
        ({"cn": "legacy"}, "cn:legacy"),
        ({"cn": "legacy", "dns_sans": ["*.pkggov.test"]}, "cn:legacy"),
        ({"uri_sans": ["https://pkggov.test/alice"], "dns_sans": ["b.test"]}, "dns:b.test"),
    ],
)
def test_mtls_falls_back_along_the_sources(ca: CA, cert: dict[str, Any], expected: str) -> None:
    """A missing (or unusable: wildcard DNS, non-SPIFFE URI) source falls to the next one."""
    assert expected == mtls_principal(ca, **cert)


@pytest.mark.parametrize(
    "bad",
    [
        "spiffe://Upper.Case/x",
        "spiffe://pkggov.test",
        "spiffe://pkggov.test/",
        "spiffe://pkggov.test/a/../b",
        "spiffe://pkggov.test/a?x=1",
        "spiffe://user@pkggov.test/a",
        "spiffe://pkggov.test:443/a",
        "SPIFFE://pkggov.test/a",
    ],
)
def test_mtls_passes_over_an_invalid_spiffe_uri(ca: CA, bad: str) -> None:
    """A SPIFFE URI SAN that is not a valid SPIFFE ID names no one: the next source counts."""
    cert = {"uri_sans": ["https://pkggov.test/x", bad], "dns_sans": ["alice.pkggov.test"]}
    assert "dns:alice.pkggov.test" == mtls_principal(ca, **cert)


@pytest.mark.parametrize(
    "uris",
    [
        ["spiffe://evil.test/x", ALICE],
        [ALICE, "spiffe://evil.test/x"],
        [ALICE, "SPIFFE://pkggov.test/ops/root"],
        ["spiffe://Upper.Case/x", ALICE],
    ],
)
def test_mtls_refuses_more_than_one_spiffe_uri(ca: CA, uris: list[str]) -> None:
    """An X.509-SVID has exactly one SPIFFE URI SAN: with two, whichever the order, no one is
    named (the principal must not depend on the SANs' order)."""
    with pytest.raises(UnauthenticatedError, match="2 SPIFFE URI SANs"):
        mtls_principal(ca, uri_sans=uris, dns_sans=["alice.pkggov.test"])


def test_two_spiffe_uris_matter_only_when_spiffe_is_consulted(ca: CA) -> None:
    """An earlier source that names the caller decides; a non-SPIFFE URI SAN beside one
    SPIFFE ID is no second one."""
    uris = ["spiffe://evil.test/x", ALICE]
    assert "dns:alice.pkggov.test" == mtls_principal(
        ca, ("dns", "spiffe"), uri_sans=uris, dns_sans=["alice.pkggov.test"]
    )
    assert ALICE == mtls_principal(ca, uri_sans=["https://pkggov.test/x", ALICE])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("spiffe://pkggov.test/ops/alice", True),
        ("spiffe://a-b_c.d/x.y-z_1/2", True),
        ("spiffe://pkggov.test", False),
        ("spiffe://pkggov.test/", False),
        ("spiffe://pkggov.test//a", False),
        ("spiffe://pkggov.test/a/", False),
        ("spiffe://pkggov.test/./a", False),
        ("spiffe://pkggov.test/a#frag", False),
        ("spiffe:///a", False),
        ("spiffe://pkggov.test/" + "a" * 2048, False),
        ("https://pkggov.test/a", False),
    ],
)
def test_is_spiffe_id(value: str, expected: bool) -> None:
    """The SPIFFE ID grammar: lower-case trust domain, non-empty clean path segments."""
    assert expected == is_spiffe_id(value)


def test_mtls_without_an_acceptable_name_is_unauthenticated(ca: CA) -> None:
    """A CN-only certificate where only SPIFFE IDs are accepted names no one; the message says."""
    with pytest.raises(UnauthenticatedError, match=r"looked for spiffe; found CN 'legacy'"):
        mtls_principal(ca, ("spiffe",), cn="legacy")


def test_mtls_with_an_empty_subject_and_no_sans_is_unauthenticated(ca: CA) -> None:
    """Nothing to name the caller with: unauthenticated."""
    with pytest.raises(UnauthenticatedError, match="no names at all"):
        mtls_principal(ca)


@pytest.mark.parametrize(
    "auth_context",
    [
        {},
        {"transport_security_type": [b"insecure"]},
        {"transport_security_type": [b"ssl"]},
        {"transport_security_type": [b"ssl"], "x509_pem_cert": []},
    ],
)
def test_mtls_without_a_certificate_is_unauthenticated(
    auth_context: Mapping[str, Sequence[bytes]],
) -> None:
    """No peer certificate in the auth context (plaintext, or TLS without one): refused."""
    with pytest.raises(UnauthenticatedError, match="no client certificate"):
        MtlsAuthenticator(["spiffe"]).authenticate(NO_METADATA, PEER, auth_context)


def test_mtls_with_an_unparseable_certificate_is_unauthenticated() -> None:
    """Bytes that are not a certificate are refused, not crashed on."""
    pem = b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"
    with pytest.raises(UnauthenticatedError, match="cannot be parsed"):
        MtlsAuthenticator(["cn"]).authenticate(NO_METADATA, PEER, tls_context(pem))


def test_mtls_ignores_the_dev_header(ca: CA) -> None:
    """A development-mode header sent to an mTLS server changes nothing: the cert decides."""
    pem, _ = issue_cert(ca, uri_sans=[ALICE])
    metadata = {"x-pkggov-principal": "root", "x-forwarded-client-cert": "URI=spiffe://x/root"}
    actual = MtlsAuthenticator(["spiffe", "dns", "cn"]).authenticate(
        metadata, PEER, tls_context(pem)
    )
    assert Principal(ALICE, AuthMethod.MTLS, PEER) == actual


def test_mtls_parses_each_certificate_once(ca: CA) -> None:
    """Repeated calls with the same certificate hit the LRU; it stays bounded."""
    authenticator = MtlsAuthenticator(["spiffe"], cache_size=2)
    pems = [issue_cert(ca, uri_sans=[f"spiffe://pkggov.test/n{i}"])[0] for i in range(3)]
    for _ in range(5):
        authenticator.authenticate(NO_METADATA, PEER, tls_context(pems[0]))
    info = authenticator.facts_cache.cache_info()
    assert (4, 1) == (info.hits, info.misses)
    for pem in pems:
        authenticator.authenticate(NO_METADATA, PEER, tls_context(pem))
    assert 2 == authenticator.facts_cache.cache_info().currsize


@pytest.mark.parametrize("sources", ["", "spiffe,email", "cn,cn", " , "])
def test_bad_sources_are_refused(sources: str) -> None:
    """Unknown, repeated or no sources: a ValueError naming the setting."""
    with pytest.raises(ValueError, match=r"identity\.principal_sources"):
        parse_sources(sources)


def test_sources_are_trimmed_and_lowered() -> None:
    """The setting is forgiving about spaces and case."""
    assert ("dns", "spiffe") == parse_sources(" DNS , spiffe ")


# --- XFCC parsing ---------------------------------------------------------------------------


def test_xfcc_quoted_values_may_hold_commas_semicolons_and_escaped_quotes() -> None:
    """Quoted values are one value, whatever separators they contain."""
    header = (
        'By=spiffe://pkggov.test/gw;Hash=abc;Subject="CN=a\\, b;c,OU=say \\"hi\\"";'
        "URI=spiffe://pkggov.test/x;DNS=a.test;DNS=b.test"
    )
    [element] = parse_xfcc(header)
    expected = {
        "by": ["spiffe://pkggov.test/gw"],
        "hash": ["abc"],
        "subject": ['CN=a\\, b;c,OU=say \\"hi\\"'],
        "uri": ["spiffe://pkggov.test/x"],
        "dns": ["a.test", "b.test"],
    }
    assert expected == element


def test_xfcc_several_elements_in_order() -> None:
    """Elements are split on commas outside quotes, in the order the proxies appended them."""
    header = 'By=a;URI=spiffe://t/first;Subject="CN=x,O=y",By=b;URI="spiffe://t/last"'
    elements = parse_xfcc(header)
    assert [["spiffe://t/first"], ["spiffe://t/last"]] == [e["uri"] for e in elements]


@pytest.mark.parametrize("header", ['URI="spiffe://t/x', "URI", "=x", "a=b,,c=d"])
def test_xfcc_malformed(header: str) -> None:
    """Unterminated quotes, pairs without a key or value separator, empty elements."""
    with pytest.raises(ValueError, match=r"."):
        parse_xfcc(header)


# --- trusted proxy --------------------------------------------------------------------------

TRUSTED = parse_trusted_proxies("10.0.0.0/8, fd00::/8, 127.0.0.1")
XFCC = "x-forwarded-client-cert"


def proxy(sources: Sequence[str] = ("spiffe", "dns", "cn")) -> ProxyAuthenticator:
    return ProxyAuthenticator(XFCC, TRUSTED, sources)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:10.1.2.3:5678", "10.1.2.3"),
        ("ipv6:[::1]:5678", "::1"),
        ("ipv6:%5B::1%5D:5678", "::1"),
        ("ipv6:%5Bfd00::7%5D:1", "fd00::7"),
        ("ipv6:%5B::ffff:10.0.0.1%5D:1", "10.0.0.1"),
        ("unix:/run/envoy.sock", None),
        ("unix-abstract:envoy", None),
        ("ipv4:not-an-ip:1", None),
        ("", None),
    ],
)
def test_parse_peer_ip(peer: str, expected: str | None) -> None:
    """grpc peer strings: ipv4, ipv6 (bracketed, percent-encoded, v4-mapped), unix."""
    actual = parse_peer_ip(peer)
    assert expected == (None if actual is None else str(actual))


@pytest.mark.parametrize(
    "peer", ["ipv4:10.9.8.7:40000", "ipv6:%5Bfd00::1%5D:40000", "ipv4:127.0.0.1:1"]
)
def test_proxy_honours_the_header_from_trusted_peers(peer: str) -> None:
    """From a trusted peer the last XFCC element names the principal."""
    header = f'By=spiffe://pkggov.test/envoy;Hash=deadbeef;URI={ALICE};Subject="CN=alice"'
    actual = proxy().authenticate({XFCC: header}, peer, {})
    assert Principal(ALICE, AuthMethod.PROXY, peer) == actual


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:192.168.1.10:40000",
        "ipv4:127.0.0.2:40000",
        "ipv6:%5B::1%5D:40000",
        "ipv6:[2001:db8::1]:40000",
        "unix:/run/envoy.sock",
        "garbage",
    ],
)
def test_proxy_ignores_a_spoofed_header_from_untrusted_peers(peer: str) -> None:
    """From any other peer the header is ignored and the call is unauthenticated."""
    with pytest.raises(UnauthenticatedError, match="not a trusted proxy"):
        proxy().authenticate({XFCC: f"URI={ALICE}"}, peer, {})


def test_proxy_uses_the_last_element() -> None:
    """The nearest (trusted) proxy appended the last element; earlier ones are the client's."""
    header = (
        'By=x;URI=spiffe://pkggov.test/ops/root;Subject="CN=root, O=evil",'
        'By=y;Hash=1;Subject="CN=ci,O=Acme";URI=spiffe://pkggov.test/ci/builder'
    )
    actual = proxy().authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {})
    assert "spiffe://pkggov.test/ci/builder" == actual.id


@pytest.mark.parametrize(
    ("sources", "header", "expected"),
    [
        (("dns", "spiffe"), f"URI={ALICE};DNS=a.test;DNS=b.test", "dns:a.test"),
        (
            ("spiffe", "cn"),
            'URI=https://x/y;Subject="CN=alice\\, the admin,OU=ops"',
            "cn:alice, the admin",
        ),
        (("cn",), 'Subject="OU=ops,CN=alice"', "cn:alice"),
        (("spiffe", "dns"), "URI=https://x/y;URI=spiffe://good.test/x", "spiffe://good.test/x"),
        (("spiffe", "dns"), "URI=spiffe://BAD/x;DNS=a.test", "dns:a.test"),
    ],
)
def test_proxy_source_order(sources: tuple[str, ...], header: str, expected: str) -> None:
    """URI gives spiffe, DNS gives dns, the Subject's CN gives cn, in the configured order."""
    assert expected == proxy(sources).authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {}).id


@pytest.mark.parametrize(
    "header",
    [
        "URI=spiffe://evil.test/x;URI=spiffe://pkggov.test/ops/alice",
        "URI=spiffe://pkggov.test/ops/alice;URI=spiffe://evil.test/x",
    ],
)
def test_proxy_refuses_more_than_one_spiffe_uri(header: str) -> None:
    """As for mTLS: an element with two SPIFFE URIs names no one, whichever comes first."""
    with pytest.raises(UnauthenticatedError, match="2 SPIFFE URI SANs"):
        proxy().authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {})


@pytest.mark.parametrize(
    "header",
    [
        # What the edge makes of two headers (their values joined with ", "), either order.
        f"By=x;URI=spiffe://evil.test/x, By=y;URI={ALICE}",
        f"By=y;URI={ALICE}, By=x;URI=spiffe://evil.test/x",
        # A quote cannot hide the join: Envoy's own value is balanced, so one stays open.
        f'URI=spiffe://evil.test/x;By=", By=y;URI={ALICE}',
        f'By=y;URI={ALICE}, URI=spiffe://evil.test/x;By="',
    ],
)
def test_proxy_refuses_a_repeated_header(header: str) -> None:
    """Two XFCC headers mean something besides the trusted proxy added one: unauthenticated,
    rather than trusting whichever element ends up last."""
    with pytest.raises(UnauthenticatedError, match=r"repeated|malformed"):
        proxy().authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {})


def test_proxy_accepts_a_comma_and_blank_inside_quotes() -> None:
    """Envoy's own elements are joined by a bare ','; ", " inside a quoted subject is data."""
    header = f'By=a;URI=spiffe://t/x,By=b;Subject="CN=alice\\, the admin";URI={ALICE}'
    assert ALICE == proxy().authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {}).id


def test_proxy_reads_the_cert_when_no_names_are_forwarded(ca: CA) -> None:
    """An element with only Hash and Cert (URL-encoded PEM) is read from the certificate."""
    pem, _ = issue_cert(ca, cn="alice", uri_sans=[ALICE])
    header = f'By=spiffe://pkggov.test/envoy;Hash=ff;Cert="{quote(pem.decode(), safe="")}"'
    assert ALICE == proxy().authenticate({XFCC: header}, "ipv4:10.0.0.1:1", {}).id


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, "sent no x-forwarded-client-cert"),
        ({XFCC: "  "}, "sent no x-forwarded-client-cert"),
        ({"x-pkggov-principal": "alice"}, "sent no x-forwarded-client-cert"),
        ({XFCC: 'URI="spiffe://t/x'}, "malformed"),
        ({XFCC: "By=x;Hash=y"}, "names no acceptable principal"),
        ({XFCC: b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_proxy_from_a_trusted_peer_without_a_usable_header(
    metadata: Mapping[str, str | bytes], message: str
) -> None:
    """Missing, blank, malformed or nameless headers (and a dev header) are unauthenticated."""
    with pytest.raises(UnauthenticatedError, match=message):
        proxy().authenticate(metadata, "ipv4:10.0.0.1:1", {})


def test_proxy_accepts_a_binary_metadata_value() -> None:
    """grpc may hand metadata values over as bytes; UTF-8 ones are read."""
    actual = proxy().authenticate({XFCC: f"URI={ALICE}".encode()}, "ipv4:10.0.0.1:1", {})
    assert ALICE == actual.id


# --- development ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(" alice ", "alice"), ("x" * 256, "x" * 256)])
def test_dev_takes_the_trimmed_header(value: str, expected: str) -> None:
    """The metadata value, trimmed, is the principal, marked as a development identity."""
    actual = DevAuthenticator("X-PkgGov-Principal").authenticate(
        {"x-pkggov-principal": value}, PEER, {}
    )
    assert Principal(expected, AuthMethod.DEV, PEER) == actual


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"x-pkggov-principal": ""},
        {"x-pkggov-principal": "   "},
        {"x-pkggov-principal": "x" * 257},
        {"x-pkggov-principal": "ali\x07ce"},
        {"x-pkggov-principal": "ali\nce"},
        {"x-other": "alice"},
        {"x-pkggov-principal": "alice, bob"},  # the edge's join of a repeated header
        {"x-pkggov-principal": "alice,bob"},
        {"x-pkggov-principal": "al\u00e9"},  # grpcio's Latin-1 reading of b"al\xe9", too
        {"x-pkggov-principal": "ali\u00a0ce"},
        {"x-pkggov-principal": "\uff41lice"},
        {"x-pkggov-principal": b"al\xe9"},
    ],
)
def test_dev_refuses_missing_or_bad_values(metadata: Mapping[str, str | bytes]) -> None:
    """Absent, empty, too long, repeated, non-printable or non-ASCII values (one principal must
    have one spelling) are unauthenticated."""
    with pytest.raises(UnauthenticatedError, match="x-pkggov-principal"):
        DevAuthenticator("x-pkggov-principal").authenticate(metadata, PEER, {})


# --- build_authenticator --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        (IdentitySettings(mode="mtls"), MtlsAuthenticator),
        (IdentitySettings(mode="proxy", trusted_proxies="10.0.0.1"), ProxyAuthenticator),
        (IdentitySettings(mode="dev"), DevAuthenticator),
    ],
)
def test_build_authenticator_by_mode(settings: IdentitySettings, kind: type) -> None:
    """The mode picks the implementation."""
    assert isinstance(build_authenticator(settings), kind)


def test_built_proxy_uses_the_configured_header_and_sources() -> None:
    """proxy_header (any case) and principal_sources reach the proxy authenticator."""
    settings = IdentitySettings(
        mode="proxy",
        proxy_header="X-Client-Identity",
        trusted_proxies="10.0.0.0/8",
        principal_sources="cn",
    )
    actual = build_authenticator(settings).authenticate(
        {"x-client-identity": f'URI={ALICE};Subject="CN=alice"'}, "ipv4:10.0.0.1:1", {}
    )
    assert "cn:alice" == actual.id


def test_built_dev_authenticator_uses_the_configured_key() -> None:
    """dev_metadata_key names the metadata key read."""
    authenticator = build_authenticator(IdentitySettings(mode="dev", dev_metadata_key="x-who"))
    assert "bob" == authenticator.authenticate({"x-who": "bob"}, PEER, {}).id


@pytest.mark.parametrize(
    ("entries", "bad"),
    [
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.1, envoy.local", "envoy.local"),
        ("10.0.0.1/8", "10.0.0.1/8"),
        ("::1, fd00::/129", "fd00::/129"),
        ("10.0.0.1;10.0.0.2", "10.0.0.1;10.0.0.2"),
    ],
)
def test_bad_trusted_proxies_entries_are_named(entries: str, bad: str) -> None:
    """A bad entry fails start-up with a ValueError quoting it."""
    settings = IdentitySettings(mode="proxy", trusted_proxies=entries)
    with pytest.raises(ValueError, match=rf"identity\.trusted_proxies: '{bad}'"):
        build_authenticator(settings)


def test_trusted_proxies_parse() -> None:
    """Addresses become single-host networks; blanks between commas are ignored."""
    expected = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.5/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert expected == parse_trusted_proxies(" 10.0.0.0/8, 192.168.1.5 ,, ::1,")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (IdentitySettings(mode="proxy"), r"identity\.trusted_proxies: proxy mode needs"),
        (IdentitySettings(mode="ldap"), r"identity\.mode"),
        (IdentitySettings(principal_sources="upn"), r"identity\.principal_sources"),
        (IdentitySettings(mode="proxy", proxy_header=" ", trusted_proxies="::1"), "proxy_header"),
        (IdentitySettings(mode="dev", dev_metadata_key=""), "dev_metadata_key"),
        (IdentitySettings(mode="dev", dev_metadata_key="Bad Key"), "dev_metadata_key"),
        (
            IdentitySettings(mode="proxy", proxy_header="x-xfcc-bin", trusted_proxies="::1"),
            "proxy_header",
        ),
    ],
)
def test_build_authenticator_refuses_bad_settings(settings: IdentitySettings, message: str) -> None:
    """Unusable settings fail at start-up, naming the setting."""
    with pytest.raises(ValueError, match=message):
        build_authenticator(settings)


def test_no_certificate_name_can_stand_for_a_development_name() -> None:
    """A CN or DNS SAN "alice" is "cn:alice" / "dns:alice", never the dev principal "alice"."""
    cn_only = CertFacts(common_names=("alice",))
    dns_only = CertFacts(dns_names=("alice",))
    assert ("cn:alice", "dns:alice") == (
        cn_only.principal_id(("spiffe", "dns", "cn")),
        dns_only.principal_id(("spiffe", "dns", "cn")),
    )


_FUZZ_PROXY = ProxyAuthenticator(
    "x-forwarded-client-cert", parse_trusted_proxies("127.0.0.1/32"), ("spiffe", "dns", "cn")
)


@settings(max_examples=400, deadline=None, database=None)
@given(
    header=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: f'Cert="{quote(b, safe="")}"'),
        st.binary(max_size=300).map(
            lambda b: (
                'Cert="'
                + quote(b"-----BEGIN CERTIFICATE-----\n" + b + b"\n-----END CERTIFICATE-----\n")
                + '"'
            )
        ),
    )
)
def test_any_forwarded_header_is_a_principal_or_unauthenticated(header: str) -> None:
    """Whatever a trusted proxy forwards, the answer is a principal or UnauthenticatedError
    (never another exception, which the edge would report as INTERNAL)."""
    try:
        principal = _FUZZ_PROXY.authenticate({"x-forwarded-client-cert": header}, PEER, {})
    except UnauthenticatedError:
        return
    assert principal.id
