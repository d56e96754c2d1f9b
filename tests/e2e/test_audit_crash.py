"""Faults of the gateway process itself, against the real binary: kill -9 while a delete is in
flight, and a full disk under the SQLite audit store.

The spawned gateways use the session emulator as their upstream (not an embedded one, which
would die with them), through `UpstreamTap`, a TCP relay that sees each
DeletePackageVersions request before the emulator does. The tap records which intents were
committed at that moment (so "no intent, no deletion" is checked for every request sent), and
can hold a request (it never reaches the emulator) or its answer (the deletion is applied, the
gateway never hears of it): the kill points are chosen, not raced.
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2

from pkggov_emulator import (
    Emulator,
    FaultRule,
)
from pkggov_gateway.domain.audit import EntryKind, parse_time
from pkggov_gateway.tools.audit_verify import verify
from tests.e2e.audit_helpers import audit_health, coordinates, kinds, reopened_store, row_body
from tests.e2e.conftest import spawn_gateway
from tests.e2e.harness import (
    PERMIT_ALL,
    GatewayProcess,
    external_upstream_env,
    request,
    rich_error,
    stub_for,
    wait_for,
)

REPLICA = "crash-test"
"""Every gateway of a test has this replica name, so each reconciles its predecessor's intents."""
ROUNDS = 20
"""Gateways killed with SIGKILL in the crash test (one delete in flight each)."""
CALL_SECONDS = 3.0
"""Each killed call's deadline: its successor reconciles the intent once it has passed (plus
SETTLE_SECONDS), when nothing the dead process sent can still be on its way."""
SETTLE_SECONDS = 0.25
KILL_POINTS = ("before_intent", "request_held", "in_emulator", "answer_held")
"""Where the delete is when its gateway is killed, in turn:

* before_intent: reading the package (ListPackageVersions delayed); no intent yet;
* request_held: intent committed, the DeletePackageVersions request held by the tap;
* in_emulator: the emulator received it and is in a latency fault (it applies it afterwards);
* answer_held: the emulator applied it and answered; the tap holds the answer.
"""
PACKAGE = "crash-pad"
"""An npm package of demo/dev-shared created for the crash test: one version per round."""
KEEP = "0.0.1"
"""A version of PACKAGE no round deletes (the package never disappears)."""
DELETE_PATH = "/v1/package/versions/delete"


def _upstream_env(endpoint_url: str, store: str) -> dict[str, str]:
    """spawn_gateway settings: no embedded emulator, `endpoint_url` as CodeArtifact, the
    permit-all test policy, a fixed replica name and `store`; warnings only (stderr is a pipe
    nobody reads while the gateway runs)."""
    return external_upstream_env(
        endpoint_url,
        PKGGOV_POLICY_POLICIES=str(PERMIT_ALL),
        PKGGOV_AUDIT_STORE=store,
        PKGGOV_AUDIT_REPLICA=REPLICA,
        PKGGOV_AUDIT_RECONCILE_SETTLE_SECONDS=str(SETTLE_SECONDS),
    )


def _rows(db: Path) -> list[dict[str, Any]]:
    """Every entry body in the store, in chain order (a plain read: no writer, no heartbeat)."""
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        rows = conn.execute("SELECT body FROM audit_entries ORDER BY seq").fetchall()
    return [json.loads(body) for (body,) in rows]


def _open_intents(db: Path) -> list[dict[str, Any]]:
    """The intent bodies whose event has no other entry yet."""
    rows = _rows(db)
    closed = {row["event_id"] for row in rows if row["kind"] != EntryKind.INTENT.value}
    return [
        row
        for row in rows
        if row["kind"] == EntryKind.INTENT.value and row["event_id"] not in closed
    ]


def _covers(intent: dict[str, Any], package: tuple[str, ...], versions: list[str]) -> bool:
    """Whether `intent` announced deleting every one of `versions` of `package`."""
    return coordinates(intent["request"]) == package and set(versions) <= set(intent["forward"])


# --- the tap between gateway and emulator ---------------------------------------------------


@dataclass(frozen=True)
class SeenDelete:
    """A DeletePackageVersions request as it reached the tap."""

    coordinates: tuple[str, str, str, str, str]
    versions: list[str]
    committed_intents: list[dict[str, Any]]
    """The intent bodies committed in the store before the request went any further."""
    forwarded: bool


class UpstreamTap:
    """A TCP relay to the emulator that parses the gateway's HTTP requests (see the module
    docstring). `hold_requests`: a DeletePackageVersions request is not forwarded;
    `hold_answers`: the answer to one is swallowed."""

    def __init__(self, upstream: str, db: Path) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._db = db
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.seen: list[SeenDelete] = []
        self.hold_requests = False
        self.hold_answers = False
        self.request_held = threading.Event()
        self.answer_held = threading.Event()
        self.failures: list[str] = []

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """No holds; nothing held yet."""
        self.hold_requests = self.hold_answers = False
        self.request_held.clear()
        self.answer_held.clear()

    def __enter__(self) -> UpstreamTap:
        self._spawn(self._accept)
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            upstream = socket.create_connection(self._upstream, timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            relay = _Relay()
            self._spawn(self._requests, client, upstream, relay)
            self._spawn(self._answers, upstream, client, relay)

    def _requests(self, client: socket.socket, upstream: socket.socket, relay: _Relay) -> None:
        """Gateway -> emulator, one whole HTTP request at a time."""
        buffer = b""
        try:
            while True:
                parsed = _read_request(client, buffer)
                if parsed is None:
                    return
                head, body, buffer = parsed
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                relay.answering_delete = urlsplit(target).path == DELETE_PATH
                if relay.answering_delete:
                    params = dict(parse_qsl(urlsplit(target).query))
                    forwarded = not self.hold_requests
                    self.seen.append(
                        SeenDelete(
                            coordinates(params),
                            [str(v) for v in json.loads(body)["versions"]],
                            [row for row in _rows(self._db) if row["kind"] == "intent"],
                            forwarded,
                        )
                    )
                    if not forwarded:
                        self.request_held.set()
                        while client.recv(65536):  # until the gateway goes away
                            pass
                        return
                upstream.sendall(head + body)
        except Exception as error:  # noqa: BLE001 - reported by the test, not lost in a thread
            if not self._stopping.is_set() and not isinstance(error, ConnectionError):
                self.failures.append(f"{type(error).__name__}: {error}")
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)

    def _answers(self, upstream: socket.socket, client: socket.socket, relay: _Relay) -> None:
        """Emulator -> gateway, byte for byte, unless an answer to a delete is held."""
        try:
            while data := upstream.recv(65536):
                if relay.answering_delete and self.hold_answers:
                    self.answer_held.set()
                    continue
                client.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)


@dataclass
class _Relay:
    answering_delete: bool = False
    """The last request relayed on this connection was a DeletePackageVersions."""


def _read_request(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """One HTTP/1.1 request with a Content-Length body: (head, body, rest); None at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head, buffer = buffer[:end], buffer[end:]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding":
            raise AssertionError(f"the tap relays Content-Length bodies only: {line!r}")
    while len(buffer) < length:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
    return head, buffer[:length], buffer[length:]


# --- kill -9 while a delete is in flight ----------------------------------------------------


@dataclass
class _Round:
    version: str
    kill_point: str
    event_id: str | None = None
    """The event of the round's intent (None: the gateway died before committing one)."""
    expected: str | None = None
    """What CodeArtifact said of the version once the round settled: deleted, still_present."""


def _in_flight(
    process: GatewayProcess, emulator: Emulator, tap: UpstreamTap, version: str, kill_point: str
) -> None:
    """Start deleting `version` through `process`, kill -9 it at `kill_point`, check the call."""
    tap.reset()
    if kill_point == "before_intent":
        emulator.add_fault(
            FaultRule(operation="ListPackageVersions", kind="latency", latency_seconds=0.5, count=1)
        )
    elif kill_point == "in_emulator":
        emulator.add_fault(
            FaultRule(
                operation="DeletePackageVersions", kind="latency", latency_seconds=0.5, count=1
            )
        )
    tap.hold_requests = kill_point == "request_held"
    tap.hold_answers = kill_point == "answer_held"
    reached = {
        "before_intent": lambda: not emulator.faults(),  # the delayed read has begun
        "request_held": tap.request_held.is_set,
        "in_emulator": lambda: not emulator.faults(),  # the delete is in its latency
        "answer_held": tap.answer_held.is_set,
    }[kill_point]
    with stub_for(process) as stub:
        call = stub.DeletePackageVersions.future(
            request(package=PACKAGE, versions=[version]), timeout=CALL_SECONDS
        )
        assert wait_for(reached), f"{kill_point} not reached for {version}"
        assert not call.done(), f"the call ended before the kill at {kill_point}"
        process.proc.kill()
        assert -signal.SIGKILL == process.proc.wait(timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            call.result(timeout=10)
    assert grpc.StatusCode.UNAVAILABLE == caught.value.code()  # the caller got no answer


def test_kill_9_while_deleting_is_reconciled_and_nothing_is_deleted_without_intent(
    bin_dir: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """ROUNDS gateways on one store are killed with SIGKILL, each with a delete in flight (at
    the KILL_POINTS in turn). Each restart reconciles its predecessor's orphaned intent with
    what CodeArtifact really holds and leaves no intent open; every delete that reached the
    emulator (or even left the gateway) was preceded by a committed intent for its versions;
    the hash chain verifies."""
    url = f"sqlite:{tmp_path}/audit.db"
    db = tmp_path / "audit.db"
    versions = [f"1.0.{i}" for i in range(ROUNDS)]
    for version in [KEEP, *versions]:
        emulator.put_version("demo", "dev-shared", "npm", None, PACKAGE, version)
    rounds = [_Round(v, KILL_POINTS[i % len(KILL_POINTS)]) for i, v in enumerate(versions)]
    with UpstreamTap(emulator.endpoint_url, db) as tap:
        env = _upstream_env(tap.url, url)
        for index in range(ROUNDS + 1):
            with spawn_gateway(bin_dir, **env) as process:
                # The predecessor's open intent is reconciled once its call has settled.
                assert wait_for(lambda: [] == _open_intents(db), timeout=CALL_SECONDS + 10)
                if index > 0:
                    _check_reconciled(db, rounds[index - 1], emulator)
                if index == ROUNDS:
                    process.proc.send_signal(signal.SIGTERM)
                    assert 0 == process.proc.wait(timeout=20)
                    break
                done = rounds[index]
                before = _Counts.of(emulator)
                _in_flight(process, emulator, tap, done.version, done.kill_point)
            _settle(db, emulator, done, before)
        assert [] == tap.failures
        seen = list(tap.seen)
    _check_write_ahead(bin_dir, url, emulator, seen, rounds)


@dataclass(frozen=True)
class _Counts:
    """Calls the emulator has answered so far: deletes, and reads delayed by a fault."""

    deletes: int
    delayed_reads: int

    @classmethod
    def of(cls, emulator: Emulator) -> _Counts:
        reads = emulator.calls("ListPackageVersions")
        return cls(len(emulator.calls("DeletePackageVersions")), sum(1 for c in reads if c.fault))


def _settle(db: Path, emulator: Emulator, done: _Round, before: _Counts) -> None:
    """After the kill: what the dead gateway left in the store, and what CodeArtifact holds
    once the emulator has finished any call it had received."""
    mine = [r for r in _rows(db) if r.get("request", {}).get("versions") == [done.version]]
    if done.kill_point == "before_intent":
        assert [] == mine  # nothing was committed, not even an outcome
        # the delayed read is answered too (no call of this test lands in another's call log)
        assert wait_for(lambda: _Counts.of(emulator).delayed_reads == before.delayed_reads + 1)
        expected_deletes = before.deletes
    else:
        assert [EntryKind.INTENT.value] == [r["kind"] for r in mine], mine
        assert [done.version] == mine[0]["forward"]
        done.event_id = str(mine[0]["event_id"])
        expected_deletes = before.deletes + (done.kill_point != "request_held")
    # The emulator finishes a call it received even though the caller died; the test waits for
    # that to know the right verdict. (The successor itself waits for the call's deadline
    # before reading CodeArtifact: test_audit.py shows a delete landing after it started.)
    assert wait_for(lambda: _Counts.of(emulator).deletes == expected_deletes)
    status = emulator.version_status("demo", "dev-shared", "npm", None, PACKAGE, done.version)
    done.expected = "deleted" if status in {None, "Deleted"} else "still_present"
    assert done.expected == (
        "deleted" if done.kill_point in {"in_emulator", "answer_held"} else "still_present"
    ), (done, status)


def _check_reconciled(db: Path, done: _Round, emulator: Emulator) -> None:
    """`done`'s intent has a reconciliation that reports what CodeArtifact holds."""
    if done.event_id is None:
        return
    entries = [r for r in _rows(db) if r["event_id"] == done.event_id]
    assert ["intent", "reconciliation"] == [r["kind"] for r in entries]
    reconciliation = entries[1]
    assert {done.version: done.expected} == reconciliation["versions"], done
    assert int(done.expected == "deleted") == reconciliation["deleted"]
    assert REPLICA == reconciliation["replica"]
    status = emulator.version_status("demo", "dev-shared", "npm", None, PACKAGE, done.version)
    assert done.expected == ("deleted" if status in {None, "Deleted"} else "still_present")


def _check_write_ahead(
    bin_dir: Path, url: str, emulator: Emulator, seen: list[SeenDelete], rounds: list[_Round]
) -> None:
    """Every delete that left a gateway had a committed intent for its versions; every one the
    emulator received was one of those; the record is whole and its chain verifies."""
    calls = emulator.calls("DeletePackageVersions")
    sent = [r for r in rounds if r.kill_point in {"in_emulator", "answer_held"}]
    assert len(sent) == len(calls)
    assert all(call.applied for call in calls)
    assert sum(r.kill_point != "before_intent" for r in rounds) == len(seen)
    for request_seen in seen:
        assert any(
            _covers(intent, request_seen.coordinates, request_seen.versions)
            for intent in request_seen.committed_intents
        ), f"a delete of {request_seen.versions} left the gateway with no intent committed for it"
    forwarded = [(s.coordinates, sorted(s.versions)) for s in seen if s.forwarded]
    with reopened_store(url, "crash-test-reader") as store:
        assert [] == store.open_intents()
        bodies = [row_body(row) for row in store.iter_rows()]
        intents = [b for b in bodies if b["kind"] == EntryKind.INTENT.value]
        for call in calls:
            versions = sorted(str(v) for v in call.params["versions"])
            package = coordinates(call.params)
            assert (package, versions) in forwarded, call
            before = [
                i
                for i in intents
                if _covers(i, package, versions) and parse_time(i["time"]) <= call.received_at
            ]
            assert before, f"no intent before the emulator received {call}"
        for done in rounds:
            if done.event_id is None:
                continue
            event = store.event(done.event_id)
            assert event is not None
            assert ["intent", "reconciliation"] == kinds(event)
            intent, reconciliation = event.entries
            assert intent.seq == reconciliation.body["intent_seq"]
            assert {done.version: done.expected} == reconciliation.body["versions"]
        report = verify(store.iter_rows())
    assert report.ok, report.first_problem
    assert 2 * sum(r.event_id is not None for r in rounds) == report.entries
    _cli_verifies(bin_dir, url, report.entries)


def _cli_verifies(bin_dir: Path, url: str, entries: int) -> None:
    """`pkggov-admin audit verify --store URL --json` agrees: exit 0, chain intact."""
    result = subprocess.run(
        [str(bin_dir / "pkggov-admin"), "audit", "verify", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert (True, entries, None) == (answer["ok"], answer["entries"], answer["first_problem"])


# --- a full disk under the SQLite store -----------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux prlimit")
def test_full_disk_fails_closed_and_recovers(
    bin_dir: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """RLIMIT_FSIZE at the store's current size on the running gateway (writes past it fail
    with EFBIG, as on a full disk): a delete fails UNAVAILABLE (AUDIT_UNAVAILABLE) with
    nothing sent to CodeArtifact, and pkggov.audit turns NOT_SERVING. Lifted: SERVING again,
    a delete succeeds with intent and outcome, and the chain verifies."""
    url = f"sqlite:{tmp_path}/audit.db"
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    left_pad = ("demo", "dev-shared", "npm", None, "left-pad")
    with spawn_gateway(bin_dir, **_upstream_env(emulator.endpoint_url, url)) as process:
        pid = process.proc.pid
        with stub_for(process) as stub:
            stub.DeletePackageVersions(request(versions=["1.0.0"]), timeout=10)
            assert serving == audit_health(process)
            emulator.clear_calls()
            sizes = {p.name: p.stat().st_size for p in tmp_path.glob("audit.db*")}
            limit = min(sizes["audit.db"], sizes["audit.db-wal"])
            original = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            # the soft limit only: raising a hard limit back needs CAP_SYS_RESOURCE
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, original[1]))
            try:
                with pytest.raises(grpc.RpcError) as caught:
                    stub.DeletePackageVersions(request(versions=["1.1.0"]), timeout=10)
                error = rich_error(caught.value)
                assert (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE") == (
                    error.code,
                    error.reason,
                )
                refused = error.metadata.get("audit_event_id")
                assert refused
                assert [] == emulator.calls("DeletePackageVersions")
                assert "Published" == emulator.version_status(*left_pad, "1.1.0")
                assert wait_for(lambda: audit_health(process) == not_serving)
                assert sizes == {p.name: p.stat().st_size for p in tmp_path.glob("audit.db*")}
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, original)
            assert wait_for(lambda: audit_health(process) == serving)
            response = stub.DeletePackageVersions(request(versions=["1.1.0"]), timeout=10)
            assert ["1.1.0"] == list(response.successful_versions)
            assert 1 == len(emulator.calls("DeletePackageVersions"))
        process.proc.send_signal(signal.SIGTERM)
        assert 0 == process.proc.wait(timeout=20)
    with reopened_store(url, "crash-test-reader") as store:
        event = store.event(response.audit_event_id)
        assert event is not None
        assert ["intent", "outcome"] == kinds(event)
        outcome = event.entry(EntryKind.OUTCOME)
        assert outcome is not None
        assert ("OK", "allowed") == (outcome.body["status"]["code"], outcome.body["decision"])
        assert store.event(refused) is None  # nothing of the refused call could be recorded
        assert [] == store.open_intents()
        report = verify(store.iter_rows())
    assert report.ok, report.first_problem
    assert 4 == report.entries  # two deletes, intent and outcome each
    _cli_verifies(bin_dir, url, report.entries)
