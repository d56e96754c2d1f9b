"""The HTTP/1.1 server: keep-alive, TCP_NODELAY on every accepted socket, daemon threads."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from ._wire import Request, Response

__all__ = ["MAX_BODY_BYTES", "App", "EmulatorHTTPServer"]

logger = logging.getLogger("pkggov_emulator.http")

App = Callable[[Request], Response]
MAX_BODY_BYTES = 256 * 1024 * 1024
# Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT_SECONDS = 300


class _BadRequestError(Exception):
    """Raised while reading a request body that cannot be read (bad length, bad chunking)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that hands every request to ``app`` and tracks open sockets so
    that ``close_connections`` can end idle keep-alive connections at shutdown."""

    daemon_threads = True
    block_on_close = False
    # socketserver listens with a backlog of 5: a burst of new connections (a gateway opening
    # its pool under load) overflows it, the kernel drops the SYNs, and the client's connect
    # times out after its SYN retries. CodeArtifact accepts such bursts.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], app: App, *, log_requests: bool = False) -> None:
        self.app = app
        self.log_requests = log_requests
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (``getfqdn`` can take seconds)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection, disable Nagle's algorithm on it, and track it."""
        connection, address = self.socket.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        """Forget and close a finished connection."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection (idle keep-alive ones would otherwise linger)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # Already closed by the peer.
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log handler crashes through logging instead of printing to stderr."""
        logger.debug("error handling a connection from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pkggov-emulator"
    timeout = IDLE_TIMEOUT_SECONDS

    @property
    def _server(self) -> EmulatorHTTPServer:
        return cast(EmulatorHTTPServer, self.server)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError as error:
            raise _BadRequestError(400, f"bad Content-Length {raw_length!r}") from error
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BadRequestError(413, f"body of {length} bytes is not accepted")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequestError(400, "the connection closed before the whole body arrived")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as error:
                raise _BadRequestError(400, "malformed chunked body") from error
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # Skip trailers.
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequestError(413, "body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BadRequestError as error:
            self.close_connection = True
            self._write(
                Response(
                    status=error.status,
                    headers=(("Content-Type", "application/json"),),
                    body=json.dumps({"message": error.message}).encode(),
                )
            )
            return
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers=tuple((name, value) for name, value in self.headers.items()),
            body=body,
        )
        try:
            response = self._server.app(request)
        except Exception:  # The app answers errors itself; this is a last-resort 500.
            logger.exception("unexpected error answering %s %s", self.command, path)
            response = Response(
                status=500,
                headers=(
                    ("Content-Type", "application/json"),
                    ("x-amzn-ErrorType", "InternalServerException"),
                ),
                body=b'{"message": "The emulator failed unexpectedly; see its log."}',
            )
        if response.drop:
            # Close without a byte of answer; the body was read, so the peer sees FIN, not RST.
            self.close_connection = True
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        has_request_id = False
        for name, value in response.headers:
            self.send_header(name, value)
            has_request_id = has_request_id or name.lower() == "x-amzn-requestid"
        if not has_request_id:
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer malformed HTTP with a JSON error and a status line (even for HTTP/0.9-looking
        request lines), then close the connection."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        body = json.dumps({"message": message or HTTPStatus(code).phrase}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def version_string(self) -> str:
        """The ``Server`` header value."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Log access lines only when asked for (the emulator is quiet by default)."""
        if self._server.log_requests:
            logger.info("%s - " + format, self.address_string(), *args)
