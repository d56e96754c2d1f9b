# pkggov gateway image: what production runs and nothing else. The build stage makes two wheels,
# pkggov-client (the pkggov.v1 stubs the gateway serves) and pkggov (the gateway, with the
# operator tools `pkggov-admin`), and installs them with their pinned runtime dependencies into
# a virtualenv without pip; the slim run stage copies only that virtualenv and runs as non-root.
# Not in the image: the CodeArtifact emulator with its demo seed and demo access key (emulator/,
# development only; `--dev` fails at start-up naming emulator.enabled), tests, scripts and dev
# tools (.dockerignore lets in only what the build reads).
# Build: docker build -t pkggov .   Run: docker run -v $PWD/pkggov.toml:/etc/pkggov/pkggov.toml pkggov

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY clients ./clients
COPY server ./server
RUN python -m pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels \
        ./clients . \
 && python -m venv --without-pip /opt/pkggov \
 && python -m pip --python /opt/pkggov/bin/python install --no-cache-dir \
        --disable-pip-version-check -c constraints.txt /wheels/*.whl

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pkggov \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pkggov
COPY --from=build /opt/pkggov /opt/pkggov
ENV PATH=/opt/pkggov/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# The working directory holds a SQLite audit store (audit.store = "sqlite:pkggov-audit.db", one
# replica): keep it on a volume. A fleet sets audit.store to its shared PostgreSQL instead.
WORKDIR /var/lib/pkggov
VOLUME /var/lib/pkggov
# The ports of examples/pkggov.toml: server.listen (gRPC, mTLS), server.health_listen (plaintext,
# grpc.health.v1 Check only) and metrics.listen (Prometheus).
EXPOSE 50051 50060 9464
# No HEALTHCHECK: the orchestrator probes health itself. Kubernetes ignores an image's
# HEALTHCHECK and runs gRPC liveness, readiness and startup probes against server.health_listen
# (deploy/k8s/pkggov.yaml: service names pkggov.liveness and ""), which see what a HEALTHCHECK
# command would (NOT_SERVING while the audit store is down or the gateway drains) without
# starting a Python process in the container every interval. Elsewhere, probe that port with
# any grpc.health.v1 client, e.g. `grpcurl -plaintext HOST:50060 grpc.health.v1.Health/Check`.
# SIGTERM drains in-flight calls (server.grace_seconds) before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pkggov-gateway"]
CMD ["--config", "/etc/pkggov/pkggov.toml"]
