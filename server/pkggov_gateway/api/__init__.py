"""The gRPC entrypoint: servicer, interceptors, status mapping and server assembly."""

from __future__ import annotations
