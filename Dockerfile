# pkggov gateway image: built in one stage, run from a slim stage without compilers as non-root.
# Build: docker build -t pkggov .   Run: docker run -v $PWD/pkggov.toml:/etc/pkggov/pkggov.toml pkggov

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/pkggov
COPY pyproject.toml constraints.txt README.md ./
COPY clients ./clients
COPY server ./server
COPY emulator ./emulator
RUN /opt/pkggov/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

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
EXPOSE 50051 9464
# SIGTERM drains in-flight calls (server.grace_seconds) before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pkggov-gateway"]
CMD ["--config", "/etc/pkggov/pkggov.toml"]
