"""Property-based fuzzing of DeletePackageVersions through real gRPC (hypothesis).

Generated requests (every field: valid, boundary, invalid and adversarial values; see
fuzz_strategies.py) and raw bytes that are not, or only nearly, a request message go to the
session's gateway (permit-all policy) in front of the session's emulator. Per example:

* the status is never UNKNOWN or INTERNAL (the emulator returns no unmapped upstream codes);
* every error carries exactly one ErrorInfo (domain pkggov.internal, with the audit event id);
* a request that breaks a rule of CodeArtifact's model (read from botocore, not from the
  gateway) or one of the gateway's documented rules (format and status set, namespace per
  format, 1 to max_versions_per_call versions, justification at most 1,024 characters without
  control characters, request_id a UUID) is INVALID_ARGUMENT / INVALID_REQUEST with a
  BadRequest naming every bad field and no good one, and nothing at all is read or sent
  upstream. A request that breaks no rule is not refused as invalid, and the emulator (which
  validates like CodeArtifact) never refuses it either (no UPSTREAM_VALIDATION). Where the
  gateway reads a rule more strictly than CodeArtifact (Unicode whitespace in names, format
  characters in a justification, UUID spellings) either answer is accepted: see _Verdict;
* bytes that do not parse are INVALID_ARGUMENT / MALFORMED_REQUEST and send nothing upstream;
  bytes that parse are held to the properties of the request they parse as;
* nothing invalid is forwarded: every call the emulator received passes botocore's
  ParamValidator and the model's max lengths, enums and full-match patterns (which botocore
  does not check); every call names the requested package; deletions carry only requested
  versions, each once, the requested expected status, never for a dry run and never after
  INVALID_ARGUMENT; an OK response accounts for every requested version and reports deleted
  only versions that were sent;
* a request sent again with its request_id (AIP-155) gets the same answer and sends nothing.

The emulator is reset to its seed before an example when the one before deleted anything
(else only its call log is cleared): hypothesis runs all examples inside one test call.

Sizes: DEFAULT_EXAMPLES on every run (bounded: 6 to 15 s on two shared cores); with
PKGGOV_SOAK=1 (`make soak`), SOAK_EXAMPLES: 100,000 in all; PKGGOV_FUZZ_EXAMPLES=N runs N in
all, split as the soak is. A failure prints the example and a blob for @reproduce_failure.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from botocore.validate import ParamValidator
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from hypothesis import event, given
from hypothesis import strategies as st

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import DEMO_ACCOUNT_ID, Emulator, RecordedCall
from pkggov_gateway.config import ServerSettings
from pkggov_gateway.runtime import Gateway
from tests.e2e.fuzz_strategies import (
    FORMAT_NAMES,
    NAMESPACE_RULES,
    REQUEST_STRING_RULES,
    STATUS_NAMES,
    delete_requests,
    operation_model,
    raw_messages,
)
from tests.e2e.harness import (
    DELETE_METHOD,
    FUZZ_EXAMPLES_ENV,
    PRINCIPAL_KEY,
    SOAK,
    TEST_PRINCIPAL,
    RichError,
    fuzz_settings,
    rich_error,
    stub_for,
)

Stub = pb_grpc.PackageGovernanceServiceStub
RawCall = Callable[..., bytes]

DEFAULT_EXAMPLES = {"requests": 300, "bytes": 200}
"""Bounded sizes for every test run (6 to 15 s in all on two shared cores)."""

SOAK_EXAMPLES = {"requests": 80_000, "bytes": 20_000}
"""Soak sizes: 100,000 examples in all (about 20 minutes on two shared cores: requests run at
about 75 a second, bytes at about 150)."""


def _examples() -> dict[str, int]:
    """The sizes of this run; PKGGOV_FUZZ_EXAMPLES=N runs N examples in all instead, split as
    the soak is (a slice of the soak, or a longer one)."""
    total = os.environ.get(FUZZ_EXAMPLES_ENV)
    if not total:
        return SOAK_EXAMPLES if SOAK else DEFAULT_EXAMPLES
    whole = sum(SOAK_EXAMPLES.values())
    return {name: max(1, int(total) * n // whole) for name, n in SOAK_EXAMPLES.items()}


EXAMPLES = _examples()
LONG_RUN = EXAMPLES != DEFAULT_EXAMPLES
SOAK_TIMEOUT_SECONDS = 4 * 3600

MAX_VERSIONS = ServerSettings().max_versions_per_call
"""The session gateway's limit of versions per request (its default)."""

CALL_TIMEOUT = 60.0


_timeout = pytest.mark.timeout(SOAK_TIMEOUT_SECONDS if LONG_RUN else 120)


# --- fixtures: one channel for all examples ---------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_stub(gateway: Gateway) -> Iterator[Stub]:
    """A stub calling the session gateway as the test principal."""
    with stub_for(gateway) as stub:
        yield stub


@pytest.fixture(scope="module")
def raw_call(gateway: Gateway) -> Iterator[RawCall]:
    """DeletePackageVersions on a generic channel: bytes in, bytes out."""
    with grpc.insecure_channel(gateway.address) as channel:
        yield channel.unary_unary(
            DELETE_METHOD, request_serializer=None, response_deserializer=None
        )


class _History:
    """What earlier examples of one test left behind (request ids, for replay and reuse)."""

    def __init__(self) -> None:
        self.request_ids: set[str] = set()
        self.last_request_id = ""

    def __repr__(self) -> str:  # hypothesis prints it with a failing example
        return f"<{len(self.request_ids)} request ids sent>"

    def sent(self, request_id: str) -> None:
        self.request_ids.add(request_id.lower())  # the retry key: a UUID in any case
        if request_id:
            self.last_request_id = request_id

    def fresh(self, request_id: str, *, reuse: bool) -> str:
        """The request_id to send. Hypothesis draws the same UUIDs again and again, which
        would make most calls REQUEST_ID_REUSED: an id sent before is kept only when the
        example asks to `reuse` one (then it is the last id sent), else its hex digits are
        replaced by random ones (same spelling, same validity, same length in bytes)."""
        if reuse and self.last_request_id:
            return self.last_request_id
        if request_id.lower() not in self.request_ids:
            return request_id
        digits = iter(uuid.uuid4().hex * (len(request_id) // 32 + 1))
        return "".join(
            (next(digits).upper() if c.isupper() else next(digits)) if c in string.hexdigits else c
            for c in request_id
        )


@pytest.fixture(scope="module")
def history() -> _History:
    """Shared by the examples of a module; hypothesis runs them all in one test call."""
    return _History()


def _fresh(emulator: Emulator) -> None:
    """Start an example from the seed: a full reset when the last one deleted anything
    (2 ms), else only a cleared call log."""
    if emulator.calls("DeletePackageVersions"):
        emulator.reset()
    else:
        emulator.clear_calls()


# --- answers -----------------------------------------------------------------------------------


@dataclass
class _Answer:
    code: grpc.StatusCode
    response: pb.DeletePackageVersionsResponse | None = None
    error: RichError | None = None

    @property
    def reason(self) -> str:
        return self.error.reason if self.error is not None else ""

    def bad_request(self) -> list[error_details_pb2.BadRequest.FieldViolation]:
        assert self.error is not None
        bad = self.error.details.get("BadRequest")
        assert isinstance(bad, error_details_pb2.BadRequest), "INVALID_REQUEST has no BadRequest"
        return list(bad.field_violations)


def _failed(error: grpc.RpcError) -> _Answer:
    call: Any = error
    code = call.code()
    assert code not in {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}, (
        f"{code}: {call.details()}"
    )
    return _Answer(code, error=rich_error(error))  # asserts exactly one ErrorInfo


def _send(stub: Stub, request: pb.DeletePackageVersionsRequest) -> _Answer:
    try:
        return _Answer(
            grpc.StatusCode.OK, stub.DeletePackageVersions(request, timeout=CALL_TIMEOUT)
        )
    except grpc.RpcError as error:
        return _failed(error)


def _send_bytes(raw: RawCall, data: bytes) -> _Answer:
    try:
        reply = raw(data, timeout=CALL_TIMEOUT, metadata=((PRINCIPAL_KEY, TEST_PRINCIPAL),))
    except grpc.RpcError as error:
        return _failed(error)
    return _Answer(grpc.StatusCode.OK, pb.DeletePackageVersionsResponse.FromString(reply))


# --- the oracle: which fields break a rule, from the model and the documented rules ------------

_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


@dataclass
class _Verdict:
    """The fields a request breaks a rule in (`must`: the gateway has to refuse them) and the
    fields only a stricter reading than CodeArtifact's refuses (`may`: e.g. Unicode
    whitespace, which Java's \\s does not match); and the request_id's standing."""

    must: set[str] = field(default_factory=set)
    may: set[str] = field(default_factory=set)
    request_id: str = "valid"  # "valid", "lenient" (a UUID, not canonically spelled), "bad"


def _string(verdict: _Verdict, name: str, value: str, *, required: bool, rule: str = "") -> None:
    if not value:
        if required:
            verdict.must.add(name)
        return
    model = REQUEST_STRING_RULES[rule or name]
    if not model.holds(value):
        verdict.must.add(name)
    elif not model.holds_in_unicode(value):
        verdict.may.add(name)


def _judge(request: pb.DeletePackageVersionsRequest) -> _Verdict:
    verdict = _Verdict()
    _string(verdict, "domain", request.domain, required=True)
    _string(verdict, "domain_owner", request.domain_owner, required=False)
    _string(verdict, "repository", request.repository, required=True)
    _string(verdict, "package", request.package, required=True)
    _string(verdict, "namespace", request.namespace, required=False)
    fmt = FORMAT_NAMES.get(request.format)
    if fmt is None:
        verdict.must.add("format")
    else:
        rule = NAMESPACE_RULES[fmt]
        if (
            (rule == "required" and not request.namespace)
            or (rule == "forbidden" and request.namespace)
            or (fmt == "npm" and request.namespace.startswith("@"))
        ):
            verdict.must.add("namespace")
    if request.expected_status and request.expected_status not in STATUS_NAMES:
        verdict.must.add("expected_status")
    if not request.versions or len(request.versions) > MAX_VERSIONS:
        verdict.must.add("versions")
    else:
        for index, version in enumerate(request.versions):
            _string(verdict, f"versions[{index}]", version, required=True, rule="versions")
    justification = request.justification.strip()
    if len(justification) > 1024 or any(unicodedata.category(c) == "Cc" for c in justification):
        verdict.must.add("justification")
    elif len(request.justification) > 1024 or not justification.isprintable():
        verdict.may.add("justification")  # padding trimmed; format or unassigned characters
    if request.request_id and not _CANONICAL_UUID.fullmatch(request.request_id):
        try:
            uuid.UUID(request.request_id)
        except ValueError:
            verdict.request_id = "bad"
        else:
            verdict.request_id = "lenient"
    return verdict


# --- checks ------------------------------------------------------------------------------------

_validator = ParamValidator()


def _shape_problems(path: str, shape: Any, value: Any) -> list[str]:
    """What botocore's ParamValidator leaves out: max lengths, enums, patterns (as Java reads
    them: re.ASCII), list and number bounds."""
    meta = shape.metadata
    problems = []
    if shape.type_name == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
        if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
            problems.append(
                f"{path}: length {len(value)} outside {meta.get('min')}..{meta.get('max')}"
            )
        pattern = meta.get("pattern")
        if pattern is not None and not re.fullmatch(pattern, value, re.ASCII):
            problems.append(f"{path}: {value!r} does not match {pattern}")
    elif shape.type_name == "list" and isinstance(value, list):
        if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
            problems.append(
                f"{path}: {len(value)} items outside {meta.get('min')}..{meta.get('max')}"
            )
        for index, item in enumerate(value):
            problems.extend(_shape_problems(f"{path}[{index}]", shape.member, item))
    elif (
        shape.type_name in {"integer", "long"}
        and isinstance(value, int)
        and not meta.get("min", value) <= value <= meta.get("max", value)
    ):
        problems.append(f"{path}: {value} outside {meta.get('min')}..{meta.get('max')}")
    return problems


def _check_model(call: RecordedCall) -> None:
    """Everything the emulator received satisfies CodeArtifact's model for its operation."""
    shape = operation_model(call.operation).input_shape
    assert shape is not None
    params = dict(call.params)
    report = _validator.validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    for name, value in params.items():
        if name in shape.members:
            problems.extend(_shape_problems(name, shape.members[name], value))
    assert not problems, f"invalid {call.operation} forwarded: {problems}"
    assert call.error_code != "ValidationException", f"{call.operation} refused as invalid"


def _coordinates(request: pb.DeletePackageVersionsRequest) -> dict[str, str]:
    """How every upstream call must name the request's package."""
    expected = {
        "domain": request.domain,
        "repository": request.repository,
        "format": FORMAT_NAMES[request.format],
        "package": request.package,
    }
    if request.domain_owner:
        expected["domainOwner"] = request.domain_owner
    if request.namespace:
        expected["namespace"] = request.namespace
    return expected


def _check_forwarded(
    request: pb.DeletePackageVersionsRequest, calls: Sequence[RecordedCall]
) -> None:
    """Upstream calls name the requested package; deletions only requested versions, once."""
    expected = _coordinates(request)
    requested = set(request.versions)
    sent: list[str] = []
    for call in calls:
        params = dict(call.params)
        versions = params.pop("versions", [])
        status = params.pop("expectedStatus", None)
        for extra in ("maxResults", "nextToken", "packageVersion"):
            params.pop(extra, None)
        assert expected == params, f"{call.operation} named another package: {params}"
        if call.operation == "DeletePackageVersions":
            assert set(versions) <= requested, f"unrequested versions deleted: {versions}"
            sent.extend(versions)
            if request.expected_status:
                assert STATUS_NAMES[request.expected_status] == status
    assert len(sent) == len(set(sent)), "a version was sent twice"
    if request.validate_only:
        assert not sent, "a dry run deleted"


def _check_response(
    request: pb.DeletePackageVersionsRequest,
    response: pb.DeletePackageVersionsResponse,
    deletes: Sequence[RecordedCall],
) -> None:
    """An OK response accounts for every requested version, and only for those."""
    requested = set(request.versions)
    assert response.audit_event_id
    if request.validate_only:
        assert requested == set(response.decisions)
        assert not response.successful_versions
        return
    successful, failed = set(response.successful_versions), set(response.failed_versions)
    assert requested == successful | failed
    assert not successful & failed
    sent = {v for call in deletes for v in call.params["versions"]}
    assert successful <= sent, "reported deleted but never sent"


def _check_bad_request(answer: _Answer, verdict: _Verdict, allowed: set[str]) -> None:
    """BadRequest names the bad fields: every `must` one, nothing outside `allowed`. At most
    20 violations are listed and one more row counts the rest."""
    rows = answer.bad_request()
    capped = len(rows) == 21 and rows[-1].description.startswith("and ")
    shown = {row.field for row in (rows[:-1] if capped else rows)}
    assert shown <= allowed, f"named fields that break no rule: {shown - allowed}"
    if capped:
        bases = {name.partition("[")[0] for name in allowed} | {"request"}
        assert rows[-1].field in bases
        early = {f for f in verdict.must if not f.startswith("versions[") and f != "justification"}
        assert early <= shown, f"fields not named: {early - shown}"
    else:
        assert verdict.must <= shown, f"fields not named: {verdict.must - shown}"


def _check(
    request: pb.DeletePackageVersionsRequest | None,
    answer: _Answer,
    calls: Sequence[RecordedCall],
    history: _History,
) -> None:
    """Every property of the module docstring, for one example."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if answer.error is not None:
        assert "pkggov.internal" == answer.error.domain
        assert answer.error.metadata.get("audit_event_id"), "no audit event id"
    for call in calls:
        _check_model(call)
    deletes = [c for c in calls if c.operation == "DeletePackageVersions"]
    event(f"answer: {answer.code.name} {answer.reason}".rstrip())
    event(f"upstream DeletePackageVersions calls: {len(deletes)}")
    assert "UPSTREAM_VALIDATION" != answer.reason, answer.error
    if answer.code == invalid:
        assert not deletes, "a refused request deleted"
    if request is None:  # the bytes are not a request message
        assert (invalid, "MALFORMED_REQUEST") == (answer.code, answer.reason)
        assert not calls
        return
    request_id = request.request_id
    reused = bool(request_id) and request_id.lower() in history.request_ids
    history.sent(request_id)
    verdict = _judge(request)
    fields = [*verdict.must, *verdict.may]
    if answer.reason == "INVALID_REQUEST":
        assert not calls, "a refused request was read or forwarded"
    if verdict.request_id == "bad" or (
        verdict.request_id == "lenient"
        and answer.reason == "INVALID_REQUEST"
        and ["request_id"] == [row.field for row in answer.bad_request()]
    ):
        # The request_id is checked first and alone.
        assert (invalid, "INVALID_REQUEST") == (answer.code, answer.reason), answer.error
        assert ["request_id"] == [row.field for row in answer.bad_request()]
        return
    if reused and answer.reason != "INVALID_REQUEST":
        # A replay of the recorded answer, or REQUEST_ID_REUSED: the outcome is history's.
        return
    if verdict.must or answer.reason == "INVALID_REQUEST":
        assert (invalid, "INVALID_REQUEST") == (answer.code, answer.reason), (
            f"must refuse {sorted(verdict.must)}: {answer.code} {answer.error}"
        )
        _check_bad_request(answer, verdict, set(fields))
        return
    # A valid request: read, decided by the permit-all policy, and forwarded.
    foreign = bool(request.domain_owner) and request.domain_owner != DEMO_ACCOUNT_ID
    allowed = {(grpc.StatusCode.OK, ""), (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND")}
    assert (answer.code, answer.reason) in allowed, f"{answer.code} {answer.error}"
    if foreign:
        assert not deletes, "a domain of another account was deleted from"
    _check_forwarded(request, calls)
    if answer.response is not None:
        _check_response(request, answer.response, deletes)
    elif deletes:
        raise AssertionError(f"NOT_FOUND after deleting: {deletes[0].params}")


# --- the tests ---------------------------------------------------------------------------------


_REUSE = st.sampled_from([False] * 9 + [True])
"""One example in ten sends the last request_id again, with its own content."""

_RETRY = st.sampled_from([False] * 4 + [True])
"""One example in five is sent twice (when it has a request_id)."""


@_timeout
@fuzz_settings(EXAMPLES["requests"])
@given(request=delete_requests(MAX_VERSIONS), reuse=_REUSE, retry=_RETRY)
def test_fuzzed_requests(
    fuzz_stub: Stub,
    emulator: Emulator,
    history: _History,
    *,
    request: pb.DeletePackageVersionsRequest,
    reuse: bool,
    retry: bool,
) -> None:
    """Requests across every field, sent as messages: the properties of the module docstring.
    With `retry`, a request with a request_id is sent again (AIP-155): the same answer, and
    nothing more sent upstream."""
    _fresh(emulator)
    request.request_id = history.fresh(request.request_id, reuse=reuse)
    answer = _send(fuzz_stub, request)
    calls = emulator.calls()
    _check(request, answer, calls, history)
    if retry and request.request_id:
        event("sent twice with its request_id")
        again = _send(fuzz_stub, request)
        assert (answer.code, answer.reason) == (again.code, again.reason), again.error
        assert len(calls) == len(emulator.calls()), "the retry was sent upstream"
        if answer.response is not None and again.response is not None:
            for name in ("successful_versions", "failed_versions", "decisions"):
                assert dict(getattr(answer.response, name)) == dict(
                    getattr(again.response, name)
                ), name


@_timeout
@fuzz_settings(EXAMPLES["bytes"])
@given(data=raw_messages(MAX_VERSIONS))
def test_fuzzed_bytes(
    raw_call: RawCall, emulator: Emulator, history: _History, data: bytes
) -> None:
    """Bytes that may not be a request message: MALFORMED_REQUEST when they do not parse,
    otherwise exactly the properties of the request they parse as."""
    _fresh(emulator)
    request = _parse(data)
    if request is not None and request.request_id:
        fresh = history.fresh(request.request_id, reuse=False)
        data = data.replace(request.request_id.encode(), fresh.encode())
        request = _parse(data)
    answer = _send_bytes(raw_call, data)
    _check(request, answer, emulator.calls(), history)


def _parse(data: bytes) -> pb.DeletePackageVersionsRequest | None:
    try:
        return pb.DeletePackageVersionsRequest.FromString(data)
    except DecodeError:
        return None
