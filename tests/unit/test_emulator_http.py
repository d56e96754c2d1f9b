"""The emulator's HTTP server disables Nagle's algorithm on every accepted socket."""

from __future__ import annotations

import socket

from pkggov_emulator._http import EmulatorHTTPServer
from pkggov_emulator._wire import Request, Response


def _app(request: Request) -> Response:
    return Response(status=204)


def test_every_accepted_socket_has_tcp_nodelay() -> None:
    server = EmulatorHTTPServer(("127.0.0.1", 0), _app)
    try:
        for _ in range(2):
            host, port = server.server_address[:2]
            with socket.create_connection((str(host), int(port)), timeout=5):
                accepted, _ = server.get_request()
                with accepted:
                    assert 1 == accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.server_close()


def test_server_name_is_the_host_without_a_dns_lookup() -> None:
    server = EmulatorHTTPServer(("127.0.0.1", 0), _app)
    try:
        assert "127.0.0.1" == server.server_name
    finally:
        server.server_close()
