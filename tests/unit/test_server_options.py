"""The gRPC server options built from settings."""

from __future__ import annotations

from pkggov_gateway.api.server import Keepalive


def test_keepalive_settings_become_grpc_options() -> None:
    """The server's keepalive and connection-age settings are passed to grpc in ms; a zero
    connection age leaves connections open."""
    options = dict(
        Keepalive(max_connection_age_seconds=300, max_connection_age_grace_seconds=30).options()
    )
    assert 60_000 == options["grpc.keepalive_time_ms"]
    assert 20_000 == options["grpc.keepalive_timeout_ms"]
    assert 10_000 == options["grpc.http2.min_ping_interval_without_data_ms"]
    assert (300_000, 30_000) == (
        options["grpc.max_connection_age_ms"],
        options["grpc.max_connection_age_grace_ms"],
    )
    assert "grpc.max_connection_age_ms" not in dict(
        Keepalive(max_connection_age_seconds=0).options()
    )
