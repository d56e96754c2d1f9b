# pkggov developer entry points. Only python3 and make are needed: everything else is installed here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTO_SRC := $(shell find protos -name '*.proto' | sort)
GEN_DIR   := clients
GEN_PKG   := clients/pkggov

.PHONY: help venv run run-mtls certs test lint format typecheck check-protos protos buf-lint ts-client bench bench-policy bench-audit bench-gateway bench-cleanup unit integration e2e soak clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Three local distributions, installed editable in one pip command: pkggov-client (./clients:
# stubs, typed client, `pkggov`), pkggov-emulator (./emulator, development only) and the gateway
# pkggov (.: `pkggov-gateway`, `pkggov-admin`) with its dev tools. pip resolves the gateway's
# pkggov-client and pkggov-emulator requirements to these paths, never to a package index.
$(STAMP): pyproject.toml clients/pyproject.toml emulator/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
	@# Uninstall the local distributions first: a virtualenv made before the split holds one
	@# pkggov owning the pkggov and pkggov-emulator commands, and replacing it after installing
	@# pkggov-client and pkggov-emulator would delete their commands again.
	$(BIN)/python -m pip uninstall --quiet --quiet --yes pkggov pkggov-client pkggov-emulator
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e ./clients -e ./emulator -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv and install the client, the emulator and the gateway with its dev tools.

DEMO_ISSUER := .run/demo-issuer

run: $(STAMP) ## Start the gateway on its development defaults (emulator with demo data, loopback, the demo token issuer).
	$(BIN)/pkggov-admin token demo-issuer --out $(DEMO_ISSUER)
	PKGGOV_IDENTITY_TOKENS=accept PKGGOV_IDENTITY_TOKEN_ISSUERS=$(DEMO_ISSUER)/issuers.yaml \
	$(BIN)/pkggov-gateway --dev

CERTS := .run/certs

certs: $(STAMP) ## Create a local test CA, a server certificate and client certificates in .run/certs.
	$(BIN)/python scripts/dev_certs.py --out $(CERTS)

run-mtls: $(STAMP) certs ## The development stack with mTLS identity instead of the dev header.
	PKGGOV_IDENTITY_MODE=mtls \
	PKGGOV_IDENTITY_SERVER_CERT=$(CERTS)/server.pem \
	PKGGOV_IDENTITY_SERVER_KEY=$(CERTS)/server.key \
	PKGGOV_IDENTITY_CLIENT_CA=$(CERTS)/ca.pem \
	$(BIN)/pkggov-gateway --dev

bench: bench-policy bench-audit bench-gateway bench-cleanup ## Run every benchmark (not a test; prints the results).

bench-policy: $(STAMP) ## Time policy decisions for 1 and 100 versions (not a test).
	$(BIN)/python scripts/bench_policy.py

bench-audit: $(STAMP) ## Time the audit path (intent + outcome) on SQLite and PostgreSQL (not a test).
	$(BIN)/python scripts/bench_audit.py

bench-gateway: $(STAMP) ## The whole gateway (C-G, W, P, T-R) vs its floors (A, B, H), profiled with py-spy, RSS soak (not a test).
	$(BIN)/python scripts/bench_gateway.py --py-spy

bench-cleanup: $(STAMP) ## PlanCleanup of 10,000 versions and of 1,000 packages, and an apply, vs CodeArtifact's quotas (not a test).
	$(BIN)/python scripts/bench_cleanup.py

test: $(STAMP) lint typecheck check-protos ## Run every quality gate and the whole test suite.
	$(BIN)/pytest

unit: $(STAMP) ## Unit tests only.
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## Integration tests only (emulator, AWS CLI).
	$(BIN)/pytest tests/integration

e2e: $(STAMP) ## End-to-end tests only (real server, stubs, CLI, grpcurl).
	$(BIN)/pytest tests/e2e

soak: $(STAMP) ## The load-and-fault soak and the fuzz tests at their large size (PKGGOV_SOAK=1; many minutes).
	PKGGOV_SOAK=1 $(BIN)/pytest -q tests/e2e/test_soak.py tests/e2e/test_fuzz.py

lint: $(STAMP) ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy --strict on hand-written code.
	$(BIN)/mypy

protos: $(STAMP) ## Regenerate the committed Python stubs from scratch.
	$(BIN)/python scripts/gen_protos.py --out $(GEN_DIR)

check-protos: $(STAMP) ## Fail when the committed stubs differ from what the protos generate.
	$(BIN)/python scripts/gen_protos.py --check $(GEN_DIR)

BUF_VERSION ?= 1.75.0
buf-lint: ## Lint the protos with buf (STANDARD + COMMENTS); needs npm, not part of `make test`.
	cd protos && npx --yes @bufbuild/buf@$(BUF_VERSION) lint

ts-client: ## Install, regenerate (buf + protoc-gen-es) and build clients/typescript; needs npm.
	cd clients/typescript && npm ci --no-audit --no-fund && npm run generate && npm run build

clean: ## Remove the virtualenv and caches.
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
