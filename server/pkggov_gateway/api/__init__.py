"""The gRPC edge: everything that knows grpc or the pkggov.v1 messages.

- `server`: assembles the grpcio server (services, health, reflection, interceptors, limits);
- `streams` and `stream_budget`: limits on streaming and slow calls, so they cannot take the
  unary calls' threads;
- `interceptors`: the edge of every unary call (request id, identity, decoding, the governed
  call, status mapping, the log line and metrics), handing servicers a `CallContext`;
- `servicer`: proto in, use case, proto out, and nothing else;
- `convert`: proto <-> domain, and what the record holds of a request or response;
- `status` and `status_budget`: domain errors -> google.rpc.Status by one table, cut to fit
  the trailers.
"""

from __future__ import annotations
