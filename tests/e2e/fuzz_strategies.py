"""Hypothesis strategies for fuzzing DeletePackageVersions, RestorePackageVersions and
ListPendingPurges, and CodeArtifact's own rules.

The rules (lengths, patterns, enums, the most versions per call) are read from botocore's
CodeArtifact model here, not taken from the gateway, so that the fuzz tests hold the gateway
to CodeArtifact's contract. AWS model patterns are Java regular expressions: ``\\s`` there is
ASCII whitespace only, which ``re.ASCII`` reproduces.

The strategies cover every field of the request with valid values (drawn from the model's
patterns, and the demo packages so that deletions really happen), boundary lengths, and
invalid and adversarial values; `raw_messages` makes bytes that are not, or only nearly, a
request message.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import botocore.session
from botocore.model import ListShape, OperationModel, ServiceModel, Shape, StringShape
from google.protobuf.message import Message
from hypothesis import strategies as st

from pkggov.v1 import package_governance_pb2 as pb
from pkggov_emulator import DEMO_ACCOUNT_ID, load_demo_seed

__all__ = [
    "FILTER_LIMITS",
    "FORMAT_NAMES",
    "JAVA_WHITESPACE",
    "NAMESPACE_RULES",
    "REQUEST_STRING_RULES",
    "STATUS_NAMES",
    "TIMESTAMP_SECONDS",
    "UNICODE_ONLY_WHITESPACE",
    "StringRule",
    "as_restore",
    "delete_requests",
    "operation_model",
    "pending_purge_requests",
    "raw_messages",
    "restore_requests",
    "timestamps",
]

# --- CodeArtifact's rules, from botocore's model -------------------------------------------


@cache
def _model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("codeartifact")


def operation_model(name: str) -> OperationModel:
    """botocore's model of one CodeArtifact operation."""
    return _model().operation_model(name)


@dataclass(frozen=True, slots=True)
class StringRule:
    """A string shape's constraints: length bounds (in characters) and a full-match pattern."""

    shape: str
    min_length: int
    max_length: int
    pattern: str

    def holds(self, value: str) -> bool:
        """Whether CodeArtifact accepts `value` (Java semantics: ``\\s`` is ASCII only)."""
        return self.min_length <= len(value) <= self.max_length and bool(
            re.fullmatch(self.pattern, value, re.ASCII)
        )

    def holds_in_unicode(self, value: str) -> bool:
        """Whether `value` also matches with Python's Unicode ``\\s`` (a stricter reading)."""
        return self.holds(value) and bool(re.fullmatch(self.pattern, value))


def string_rule(shape: Shape) -> StringRule:
    """The constraints of a string shape of the model."""
    meta = shape.metadata
    pattern = str(meta["pattern"])
    assert "\\p" not in pattern, f"{shape.name}: Unicode classes need translating: {pattern}"
    return StringRule(shape.name, int(meta.get("min", 0)), int(meta["max"]), pattern)


def _delete_member(name: str) -> Shape:
    input_shape = operation_model("DeletePackageVersions").input_shape
    assert input_shape is not None
    return input_shape.members[name]


_VERSION_LIST = cast(ListShape, _delete_member("versions"))

REQUEST_STRING_RULES: dict[str, StringRule] = {
    "domain": string_rule(_delete_member("domain")),
    "domain_owner": string_rule(_delete_member("domainOwner")),
    "repository": string_rule(_delete_member("repository")),
    "namespace": string_rule(_delete_member("namespace")),
    "package": string_rule(_delete_member("package")),
    "versions": string_rule(_VERSION_LIST.member),
}
"""Request field (proto name) -> the model's rule; for versions, the rule of each element."""


def _enum_values(member: str) -> list[str]:
    return list(cast(StringShape, _delete_member(member)).enum)


FORMAT_NAMES: dict[int, str] = {
    number: name.removeprefix("PACKAGE_FORMAT_").lower()
    for name, number in pb.PackageFormat.items()
    if number
}
"""Proto enum number -> CodeArtifact's format name (PACKAGE_FORMAT_NPM -> npm)."""
assert sorted(FORMAT_NAMES.values()) == sorted(_enum_values("format"))

STATUS_NAMES: dict[int, str] = {
    number: name.removeprefix("PACKAGE_VERSION_STATUS_").capitalize()
    for name, number in pb.PackageVersionStatus.items()
    if number
}
"""Proto enum number -> CodeArtifact's status name (..._PUBLISHED -> Published)."""
assert sorted(STATUS_NAMES.values()) == sorted(_enum_values("expectedStatus"))

NAMESPACE_RULES: dict[str, str] = {
    "npm": "optional",
    "pypi": "forbidden",
    "maven": "required",
    "nuget": "forbidden",
    "generic": "required",
    "ruby": "forbidden",
    "swift": "required",
    "cargo": "forbidden",
}
"""Whether a format's packages have a namespace (CodeArtifact's documentation, the proto)."""

JAVA_WHITESPACE = " \t\n\x0b\x0c\r"
"""What ``\\s`` matches in a Java pattern."""

UNICODE_ONLY_WHITESPACE = (
    "\x1c\x1d\x1e\x1f\x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
"""What Python's ``\\s`` (str.isspace) matches beyond Java's."""
assert all(c.isspace() for c in UNICODE_ONLY_WHITESPACE)

# --- the demo packages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A package of the demo seed, named as a request names it."""

    domain: str
    repository: str
    format: int
    namespace: str
    package: str
    versions: tuple[str, ...]


def _targets() -> tuple[Target, ...]:
    numbers = {name: number for number, name in FORMAT_NAMES.items()}
    found = []
    for domain in load_demo_seed()["domains"]:
        for repository in domain["repositories"]:
            for package in repository["packages"]:
                found.append(
                    Target(
                        domain["name"],
                        repository["name"],
                        numbers[package["format"]],
                        package.get("namespace") or "",
                        package["name"],
                        tuple(v["version"] for v in package["versions"]),
                    )
                )
    return tuple(found)


TARGETS = _targets()
BULK = max(TARGETS, key=lambda t: len(t.versions))
"""The demo package with the most versions (sandbox/scratch generic bulk/artifact, 300)."""

# --- field values ----------------------------------------------------------------------------

ADVERSARIAL: tuple[str, ...] = (
    "",
    " ",
    "\t",
    "\r\n",
    "\x00",
    "a\x00b",
    "\x7f",
    "\x1b[31mred\x1b[0m",
    "\u202e",  # right-to-left override
    "abc\u202egpj.exe",
    "\u200f\u200e",  # right-to-left and left-to-right marks
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "a\u2028b",  # line separator
    "e\u0301",  # e + combining acute
    "\u0301\u0302\u0303",  # combining marks alone
    "Z\u0335\u0321\u032a\u0344a\u0335\u031b\u0316l\u0338\u0322g\u0337\u0323o\u0338\u035a",
    "\uffff",
    "\ufffd",
    "\U0010ffff",
    "\U000e0001",  # language tag
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family emoji (zero-width joiners)
    "\U0001d518" * 4,
    "\u0130",  # dotted capital I
    "\u00df",  # sharp s
    "\ufb00",  # ff ligature
    "\uff21\uff22",  # full-width letters
    "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11\uff12",  # 12 wide digits
    "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662",  # Arabic digits
    "..",
    ".",
    "../..",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/",
    "#",
    "a/b",
    "a#b",
    "%2e%2e%2f",
    "%00",
    "%",
    "?x=1&y=2",
    "' OR '1'='1",
    "'; DROP TABLE audit_entries; --",
    '" OR 1=1 --',
    "*",
    "?",
    "[a-z]*",
    "**/*",
    "{a,b}",
    "$(id)",
    "`id`",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "null",
    "None",
    "NaN",
    "-1",
    "0",
    "true",
    "\\",
    "@scope",
    "@",
    "-",
    "a-",
    "-a",
    "a" * 256,
)
"""Values that have broken parsers, shells, SQL, paths, logs or terminals somewhere."""

ANY_CHAR = st.characters(codec="utf-8")
"""Every code point but surrogates (which protobuf strings cannot carry)."""

NAME_CHAR = st.characters(
    codec="utf-8", exclude_characters="#/" + JAVA_WHITESPACE + UNICODE_ONLY_WHITESPACE
)
"""A character of PackageName, PackageNamespace and PackageVersion (``[^#/\\s]``)."""

BAD_CHAR = st.sampled_from(
    "#/_.-:@AZaz09\x00\x7f"
    + JAVA_WHITESPACE
    + UNICODE_ONLY_WHITESPACE
    + "\u202e\u200b\u0301\uff41\u00e9\U0001d518"
)
"""Characters that break, or nearly break, some field's pattern."""


def _boundaries(
    rule: StringRule, fill: Callable[[int], st.SearchStrategy[str]]
) -> st.SearchStrategy[str]:
    """Values one character either side of the length bounds."""
    lengths = sorted({rule.min_length - 1, rule.min_length, rule.max_length, rule.max_length + 1})
    return st.sampled_from([n for n in lengths if n > 0]).flatmap(fill)


def _names(n: int) -> st.SearchStrategy[str]:
    """Names of exactly n characters: random ones, or 4-byte ones (the most bytes)."""
    return st.one_of(st.text(NAME_CHAR, min_size=n, max_size=n), st.just("\U0001d518" * n))


_FILLERS: dict[str, Callable[[int], st.SearchStrategy[str]]] = {
    "domain": lambda n: st.just(("a" + "-0" * n)[: n - 1] + "z"),
    "domain_owner": lambda n: st.just("1" * n),
    "repository": lambda n: st.just(("R" + "._-9" * n)[:n]),
    "namespace": _names,
    "package": _names,
    "versions": _names,
}


@st.composite
def _near(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A value of `base` with one character inserted, replaced or removed, often at an end
    (where patterns anchor): valid values one edit away from invalid ones, and back."""
    value = draw(base)
    at = draw(st.one_of(st.just(0), st.just(len(value)), st.integers(0, len(value))))
    char = draw(BAD_CHAR)
    how = draw(st.sampled_from(["insert", "replace", "remove"]))
    if how == "insert":
        return value[:at] + char + value[at:]
    if how == "replace":
        return value[:at] + char + value[at + 1 :]
    return value[:at] + value[at + 1 :]


def valid_value(field: str) -> st.SearchStrategy[str]:
    """A value CodeArtifact accepts for `field`, drawn from its model pattern."""
    rule = REQUEST_STRING_RULES[field]
    if rule.pattern == "[^#/\\s]+":  # valid in both Java's and Python's reading of \s
        return st.text(NAME_CHAR, min_size=rule.min_length, max_size=40)
    return st.from_regex(rule.pattern, fullmatch=True).filter(
        lambda s: rule.min_length <= len(s) <= rule.max_length
    )


def fuzzed_value(field: str) -> st.SearchStrategy[str]:
    """Any value for `field`: valid, boundary lengths, adversarial, arbitrary, nearly valid."""
    rule = REQUEST_STRING_RULES[field]
    valid = valid_value(field)
    return st.one_of(
        valid,
        _boundaries(rule, _FILLERS[field]),
        st.sampled_from(ADVERSARIAL),
        st.text(ANY_CHAR, max_size=rule.max_length + 2),
        _near(valid),
        _near(valid),
    )


def _enum_numbers(count: int) -> st.SearchStrategy[int]:
    """Enum numbers: the defined ones (0..count-1), unknown ones and any int32."""
    return st.one_of(
        st.integers(0, count - 1),
        st.integers(count, count + 3),
        st.sampled_from([-1, 2**31 - 1, -(2**31)]),
        st.integers(-(2**31), 2**31 - 1),
    )


FORMATS = _enum_numbers(len(pb.PackageFormat.keys()))
STATUSES = _enum_numbers(len(pb.PackageVersionStatus.keys()))

PRINTABLE = st.characters(
    codec="utf-8", categories=["L", "M", "N", "P", "S"], include_characters=" "
)
"""Characters that str.isprintable accepts."""


def justifications() -> st.SearchStrategy[str]:
    """Justifications: printable, boundary lengths, control characters, adversarial, huge."""
    return st.one_of(
        st.just(""),
        st.text(PRINTABLE, max_size=80),
        st.text(ANY_CHAR, max_size=80),
        st.sampled_from(ADVERSARIAL),
        st.integers(1020, 1030).map(lambda n: "j" * n),
        st.integers(1020, 1030).map(lambda n: "  " + "\U0001f600" * n + "\n\t"),
        st.integers(2_000, 200_000).map(lambda n: "x" * n),
        st.tuples(
            st.text(PRINTABLE, max_size=20), st.sampled_from("\x00\x07\n\r\t\x1b\x7f\x85")
        ).map(lambda t: t[0] + t[1] + t[0]),
    )


def request_ids() -> st.SearchStrategy[str]:
    """request_id values: UUIDs in several spellings, near misses and garbage."""
    uuids = st.uuids()
    return st.one_of(
        st.just(""),
        uuids.map(str),
        uuids.map(lambda u: str(u).upper()),
        uuids.map(lambda u: "{" + str(u) + "}"),
        uuids.map(lambda u: u.urn),
        uuids.map(lambda u: u.hex),
        st.tuples(uuids, st.integers(0, 35), ANY_CHAR).map(
            lambda t: str(t[0])[: t[1]] + t[2] + str(t[0])[t[1] + 1 :]
        ),
        uuids.map(lambda u: str(u)[:-1]),
        uuids.map(lambda u: str(u) + "0"),
        uuids.map(lambda u: " " + str(u)),
        st.sampled_from(ADVERSARIAL),
        st.text(ANY_CHAR, max_size=40),
    )


def version_lists(
    known: Sequence[str], max_versions: int, one: st.SearchStrategy[str]
) -> st.SearchStrategy[list[str]]:
    """Version lists: short mixes of `known` and `one`, duplicates, lists that need several
    upstream calls, lists at and over the gateway's limit, many bad versions at once."""
    element = st.one_of(st.sampled_from(known), one) if known else one
    return st.one_of(
        st.lists(element, max_size=6),
        st.lists(element, max_size=6),
        st.lists(element, min_size=1, max_size=4).flatmap(
            lambda vs: st.lists(st.sampled_from(vs), min_size=len(vs) + 1, max_size=12)
        ),
        # The bulk package has 1.0.0 .. 1.0.299: deleting them takes up to three upstream calls.
        st.integers(95, 320).map(lambda n: [f"1.0.{i}" for i in range(n)]),
        st.integers(max_versions - 1, max_versions + 2).map(lambda n: [f"9.{i}" for i in range(n)]),
        st.integers(1, 3).map(lambda k: ["1.0.0"] * (max_versions + k)),
        st.lists(st.sampled_from(ADVERSARIAL), min_size=18, max_size=40),
    )


def _valid_namespace(fmt: int) -> st.SearchStrategy[str]:
    rule = NAMESPACE_RULES[FORMAT_NAMES[fmt]]
    named = valid_value("namespace").filter(lambda s: not s.startswith("@"))
    if rule == "forbidden":
        return st.just("")
    if rule == "required":
        return named
    return st.one_of(st.just(""), named)


MODES = ("target",) * 4 + ("bulk",) + ("one_bad",) * 6 + ("valid",) * 2 + ("chaos",) * 2
"""The modes of delete_requests, weighted (bulk requests cost the most: one in fifteen)."""


@st.composite
def delete_requests(draw: st.DrawFn, max_versions: int) -> pb.DeletePackageVersionsRequest:
    """A request in one of five modes:

    target: a demo package, every field valid (versions, flags, status and justification vary);
    bulk: the demo package with 300 versions, asked for 95 to 320 of them (several upstream
    calls of at most 100 versions);
    one_bad: a demo package with exactly one field fuzzed (so any error must name that one);
    valid: every field drawn valid from the model (the package rarely exists);
    chaos: every field fuzzed independently.
    """
    mode = draw(st.sampled_from(MODES))
    target = draw(st.sampled_from(TARGETS))
    fields: dict[str, Any] = {
        "domain": target.domain,
        "domain_owner": draw(st.sampled_from(["", DEMO_ACCOUNT_ID])),
        "repository": target.repository,
        "format": target.format,
        "namespace": target.namespace,
        "package": target.package,
        "versions": draw(
            st.lists(
                st.one_of(st.sampled_from(target.versions), valid_value("versions")),
                min_size=1,
                max_size=8,
            )
        ),
        "expected_status": draw(st.integers(0, len(STATUS_NAMES))),
        "justification": draw(st.text(PRINTABLE, max_size=40)),
        "validate_only": draw(st.booleans()),
        "allow_partial": draw(st.booleans()),
        "request_id": draw(st.one_of(st.just(""), st.uuids().map(str))),
    }
    fuzz: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "domain": lambda: fuzzed_value("domain"),
        "domain_owner": lambda: st.one_of(st.just(""), fuzzed_value("domain_owner")),
        "repository": lambda: fuzzed_value("repository"),
        "format": lambda: FORMATS,
        "namespace": lambda: st.one_of(st.just(""), fuzzed_value("namespace")),
        "package": lambda: fuzzed_value("package"),
        "versions": lambda: version_lists(target.versions, max_versions, fuzzed_value("versions")),
        "expected_status": lambda: STATUSES,
        "justification": justifications,
        "request_id": request_ids,
    }
    if mode == "one_bad":
        name = draw(st.sampled_from(sorted(fuzz)))
        fields[name] = draw(fuzz[name]())
    elif mode == "chaos":
        for name, strategy in fuzz.items():
            fields[name] = draw(strategy())
    elif mode == "bulk":
        start = draw(st.integers(0, len(BULK.versions) - 1))
        count = draw(st.integers(95, 320))
        fields.update(
            domain=BULK.domain,
            repository=BULK.repository,
            format=BULK.format,
            namespace=BULK.namespace,
            package=BULK.package,
            versions=[
                *BULK.versions[start : start + count],
                *(f"9.{i}" for i in range(count // 10)),
            ],
            expected_status=draw(st.sampled_from([0, 0, 1, 4])),
            validate_only=draw(st.sampled_from([False, False, False, True])),
        )
    elif mode == "valid":
        fmt = draw(st.sampled_from(sorted(FORMAT_NAMES)))
        fields.update(
            domain=draw(valid_value("domain")),
            domain_owner=draw(st.one_of(st.just(""), valid_value("domain_owner"))),
            repository=draw(valid_value("repository")),
            format=fmt,
            namespace=draw(_valid_namespace(fmt)),
            package=draw(valid_value("package")),
            versions=draw(st.lists(valid_value("versions"), min_size=1, max_size=5)),
        )
    return pb.DeletePackageVersionsRequest(**fields)


# --- raw bytes -------------------------------------------------------------------------------


def varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative number."""
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


INVALID_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xe2\x82",  # truncated
    b"a\x80b",  # stray continuation byte
)


@st.composite
def _raw_field(draw: st.DrawFn) -> bytes:
    """One field of any number and wire type, its payload possibly wrong for either."""
    number = draw(st.one_of(st.integers(0, 13), st.integers(0, 2**29 - 1)))
    wire = draw(st.integers(0, 7))
    key = varint(number << 3 | wire)
    if wire == 0:
        payload = draw(
            st.one_of(
                st.integers(0, 2**64 - 1).map(varint),
                st.just(b"\xff" * 11),  # a varint longer than ten bytes
                st.just(b"\x80"),  # a varint that never ends
            )
        )
    elif wire == 2:
        data = draw(
            st.one_of(
                st.binary(max_size=40),
                st.text(ANY_CHAR, max_size=20).map(lambda s: s.encode()),
                st.sampled_from(INVALID_UTF8),
            )
        )
        length = draw(st.one_of(st.just(len(data)), st.integers(0, 2**35)))
        payload = varint(length) + data
    else:  # fixed64, fixed32, groups and the reserved wire types, payloads of any length
        payload = draw(st.binary(max_size=9))
    return key + payload


@st.composite
def _mutated(
    draw: st.DrawFn, max_versions: int, requests: st.SearchStrategy[Message] | None = None
) -> bytes:
    """A serialized request (of `requests`, by default delete requests), then truncated,
    bit-flipped, spliced or extended."""
    message = draw(requests if requests is not None else delete_requests(max_versions))
    data = bytearray(message.SerializeToString())
    at = draw(st.integers(0, len(data)))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "append", "bad_utf8"]))
    if how == "truncate":
        del data[at:]
    elif how == "flip" and data:
        data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
    elif how == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif how == "append":
        data += draw(_raw_field())
    else:
        bad = draw(st.sampled_from(INVALID_UTF8))
        field = draw(st.sampled_from([1, 2, 3, 5, 6, 7, 9, 12]))
        data += varint(field << 3 | 2) + varint(len(bad)) + bad
    return bytes(data)


def raw_messages(
    max_versions: int, requests: st.SearchStrategy[Message] | None = None
) -> st.SearchStrategy[bytes]:
    """Bytes sent as a request message (by default a DeletePackageVersionsRequest, else one of
    `requests`): arbitrary, hand-built fields of any wire type, and mutated serializations of
    real requests."""
    return st.one_of(
        st.binary(max_size=300),
        st.lists(_raw_field(), max_size=8).map(b"".join),
        _mutated(max_versions, requests),
    )


# --- RestorePackageVersions and ListPendingPurges ----------------------------------------------

_RESTORE_FIELDS = (
    "domain",
    "domain_owner",
    "repository",
    "format",
    "namespace",
    "package",
    "versions",
    "justification",
    "validate_only",
    "request_id",
)
"""The fields a RestorePackageVersionsRequest shares with a DeletePackageVersionsRequest."""


def as_restore(request: pb.DeletePackageVersionsRequest) -> pb.RestorePackageVersionsRequest:
    """The restore of the versions `request` names (its shared fields, by name)."""
    restore = pb.RestorePackageVersionsRequest()
    for name in _RESTORE_FIELDS:
        value = getattr(request, name)
        if name == "versions":
            restore.versions.extend(value)
        else:
            setattr(restore, name, value)
    return restore


def restore_requests(max_versions: int) -> st.SearchStrategy[pb.RestorePackageVersionsRequest]:
    """Restore requests in every mode of `delete_requests` (a restore names its package and
    versions by the same rules), plus the archived versions of prod-release."""
    return st.one_of(
        delete_requests(max_versions).map(as_restore),
        st.builds(
            pb.RestorePackageVersionsRequest,
            domain=st.just("demo"),
            repository=st.just("prod-release"),
            format=st.just(pb.PACKAGE_FORMAT_NPM),
            package=st.just("left-pad"),
            versions=st.lists(st.sampled_from(["1.0.0", "1.3.0", "9.9.9"]), min_size=1, max_size=5),
            validate_only=st.booleans(),
        ),
    )


TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
"""google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z."""


def timestamps() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) pairs: inside Timestamp's range, at its ends, just past them, and any
    int64 / int32 (what the wire can carry)."""
    low, high = TIMESTAMP_SECONDS
    return st.tuples(
        st.one_of(
            st.integers(low, high),
            st.sampled_from([low, high, low - 1, high + 1, 0, -1]),
            st.integers(-(2**63), 2**63 - 1),
            # Years 1 to 999: inside the range, and four digits in the record only when padded.
            st.integers(low, -30_610_224_001),
        ),
        st.one_of(
            st.integers(0, 999_999_999),
            st.sampled_from([0, 999_999_999, -1, 1_000_000_000]),
            st.integers(-(2**31), 2**31 - 1),
        ),
    )


FILTER_LIMITS = {"domain": 50, "repository": 100, "package": 255, "requester": 2048}
"""The longest value each ListPendingPurges text filter takes (longer never matches)."""


def _filter_values(name: str) -> st.SearchStrategy[str]:
    longest = FILTER_LIMITS[name]
    return st.one_of(
        st.just(""),
        st.just(""),
        st.just(""),
        st.sampled_from(["demo", "prod-release", "left-pad", "tool", "alice", "carol"]),
        st.sampled_from(ADVERSARIAL),
        st.text(ANY_CHAR, max_size=40),
        st.sampled_from([longest, longest + 1]).map(lambda n: "f" * n),
        st.integers(longest + 2, 20_000).map(lambda n: "\U0001d518" * n),
    )


def _page_tokens() -> st.SearchStrategy[str]:
    """Page tokens no deployment issued: empty (none), shaped like a real one, garbage."""
    part = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=200)
    return st.one_of(
        st.just(""),
        st.just(""),
        st.just(""),
        st.just(""),
        st.tuples(part, part).map(".".join),
        st.sampled_from(ADVERSARIAL),
        st.text(ANY_CHAR, max_size=60),
        st.integers(500, 70_000).map(lambda n: "A" * n),
    )


_PLAIN_FILTERS = st.sampled_from(["", "", "demo", "prod-release", "left-pad", "tool", "alice"])


@st.composite
def pending_purge_requests(draw: st.DrawFn) -> pb.ListPendingPurgesRequest:
    """ListPendingPurges requests in three modes: plain (filters unset or naming what exists,
    no page token), one field fuzzed, or every field fuzzed (filters long, adversarial or
    unset; due_before unset or any (seconds, nanos); any page size; forged page tokens)."""
    mode = draw(st.sampled_from(["plain", "plain", "one_bad", "one_bad", "chaos"]))
    fuzzed = {name: _filter_values(name) for name in FILTER_LIMITS}
    fields: dict[str, Any] = {name: draw(_PLAIN_FILTERS) for name in FILTER_LIMITS}
    fields["page_size"] = draw(st.sampled_from([0, 1, 2, 50]))
    sizes = st.one_of(st.just(0), st.integers(-3, 600), st.sampled_from([2**31 - 1, -(2**31)]))
    every = {**fuzzed, "page_size": sizes, "page_token": _page_tokens()}
    due = draw(st.booleans())
    if mode == "one_bad":
        name = draw(st.sampled_from([*sorted(every), "due_before"]))
        if name == "due_before":
            due = True
        else:
            fields[name] = draw(every[name])
    elif mode == "chaos":
        fields.update({name: draw(strategy) for name, strategy in every.items()})
    request = pb.ListPendingPurgesRequest(**fields)
    if due:
        request.due_before.seconds, request.due_before.nanos = draw(timestamps())
    return request
