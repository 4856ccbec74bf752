# Every target works from a clean clone: `make install` builds .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo
DEMO_SYMBOLS ?= 300
DEMO_START ?= 2005
DEMO_END ?= 2024
KAFKA_PORT ?= 9092
FLAKY_RUNS ?= 5
FLAKY_ARGS ?=
export KAFKA_PORT
SFA_REGISTRY_PORT ?= 8081
export SFA_REGISTRY_PORT

.DEFAULT_GOAL := help
.PHONY: help install demo test test-secure-fresh flaky test-unit test-integration lint fmt typecheck kafka-up kafka-down kafka-status kafka-secure-up kafka-secure-down kafka-secure-status registry-up registry-down registry-status registry-url registry-image docs bench bench-kafka drills soak mutation clean image image-test compose-test deploy-test

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' -v tty=$$(test -t 1 && echo 1) \
		'{ if (tty) printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2; else printf "  %-20s %s\n", $$1, $$2 }'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv resolves and installs in parallel: 5-11 s from a cold cache where pip took ~56 s
	@# of CI's 15 minutes. It comes from PyPI like everything else; --native-tls trusts the
	@# system's CA store (as pip does here), and pip's find-links are passed on.
	@# --compile-bytecode, as pip does: with PYTHONDONTWRITEBYTECODE set (CI sets it) no
	@# process would ever cache its .pyc, and every `sfa`, helper and Dask worker the
	@# tests start compiled dask, pandas and numpy again (the suite took 1,061 s, not 770).
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --native-tls --compile-bytecode --python $(BIN)/python \
		$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with the `sfa` command and dev tools (fast when nothing changed)

demo: $(STAMP) ## Generate a synthetic market and replay it through the pipeline on a local Dask cluster
	@mkdir -p $(DEMO_DIR)
	$(BIN)/sfa generate --symbols $(DEMO_SYMBOLS) --start-year $(DEMO_START) --end-year $(DEMO_END) --seed 7 --output $(DEMO_DIR)/bars.jsonl
	$(BIN)/sfa replay $(DEMO_DIR)/bars.jsonl deploy/demo/bad-bars.jsonl --output $(DEMO_DIR)/results.jsonl --errors $(DEMO_DIR)/errors.jsonl --summary
	$(BIN)/sfa plot --strongest $(DEMO_DIR)/results.jsonl --bars $(DEMO_DIR)/bars.jsonl --output $(DEMO_DIR)/strongest.png

test: $(STAMP) ## Run unit and integration tests (starts a Kafka broker when KAFKA_BOOTSTRAP_SERVERS is unset; not tests/deploy; the long drills are `make drills`)
	$(BIN)/python -m pytest tests --ignore=tests/deploy -m 'not drills'

test-secure-fresh: $(STAMP) ## The secure-broker tests against a newly formatted broker on its own ports (what a fresh clone meets)
	@node=$$(mktemp -d /tmp/sfa-secure-fresh.XXXXXX); \
	SFA_KAFKA_SECURE_NODE=$$node SFA_KAFKA_SECURE_SASL_PORT=19492 SFA_KAFKA_SECURE_SSL_PORT=19493 \
	SFA_KAFKA_SECURE_CONTROLLER_PORT=19494 $(BIN)/python -m pytest tests/integration/test_security.py; \
	rc=$$?; rm -rf $$node; exit $$rc

flaky: $(STAMP) kafka-up ## Run the integration suite FLAKY_RUNS (5) times; per-test failure counts (FLAKY_ARGS to pick tests)
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m tests.flaky --runs $(FLAKY_RUNS) $(FLAKY_ARGS)

test-unit: $(STAMP) ## Run the fast, pure unit tests only
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) ## Run the integration tests (real Kafka broker, real Dask)
	$(BIN)/python -m pytest tests/integration

image: ## Build the service image with podman on a cached debootstrap base (installs podman, buildah, debootstrap as root)
	bash scripts/image.sh build

registry-image: ## Build the schema registry image of compose's `avro` profile (deploy/registry/Dockerfile) with podman on the same base
	bash scripts/image.sh registry

image-test: $(STAMP) image ## Run the image: --help, a replay, `sfa run` on the broker until ready, metrics, SIGTERM
	$(BIN)/python -m pytest tests/deploy/test_image.py

compose-test: $(STAMP) image ## Bring deploy/compose up under podman-compose with stand-ins (no Grafana) and check it
	$(BIN)/python -m pytest tests/deploy/test_compose.py

deploy-test: $(STAMP) image ## All of tests/deploy: image, compose, the registry image, alert rules and the real-Prometheus test (slow)
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	$(BIN)/python -m pytest tests/deploy

lint: $(STAMP) ## ruff check (with the layout's import bans) + format check + mypy (service strict, tests lenient)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy service tests

fmt: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix service tests bench
	$(BIN)/ruff format service tests bench

typecheck: $(STAMP) ## mypy on service/
	$(BIN)/mypy service

kafka-up: ## Start a one-node Apache Kafka broker (KRaft) on 127.0.0.1:$(KAFKA_PORT)
	bash scripts/kafka.sh up

kafka-down: ## Stop the broker started by kafka-up
	bash scripts/kafka.sh down

kafka-status: ## Say whether the broker answers
	bash scripts/kafka.sh status

kafka-secure-up: ## Start a second, authenticated broker (SCRAM, TLS, ACLs); `bash scripts/kafka.sh env-secure` prints its KAFKA_* lines
	bash scripts/kafka.sh up-secure

kafka-secure-down: ## Stop the authenticated broker
	bash scripts/kafka.sh down-secure

kafka-secure-status: ## Say whether the authenticated broker answers
	bash scripts/kafka.sh status-secure

registry-up: ## Start Apicurio Registry 3.0.9 (in memory) on 127.0.0.1:$(SFA_REGISTRY_PORT), fetched by Maven into .cache/registry
	bash scripts/registry.sh up

registry-down: ## Stop the registry started by registry-up
	bash scripts/registry.sh down

registry-status: ## Say whether the registry answers
	bash scripts/registry.sh status

registry-url: ## Print the registry's base URL for SFA_SCHEMA_REGISTRY_URL
	@bash scripts/registry.sh url

docs: $(STAMP) ## Regenerate docs/configuration.md from the settings (a unit test fails when it is stale)
	$(BIN)/python -m service.configdoc > docs/configuration.md

bench: $(STAMP) ## Engine, replay and memory benchmarks (ratios measured in one run)
	$(BIN)/python -m bench.run

bench-kafka: $(STAMP) kafka-up registry-up ## End-to-end Kafka throughput and latency against bare consume+decode (JSON keyed and snapshot feeds, and Avro), then a desk's end of day (bench/endofday.py)
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m bench.kafka --feed keyed
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m bench.kafka --feed snapshot --symbols 1600 --start-year 2021 --end-year 2023
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) SFA_SCHEMA_REGISTRY_URL=$$(bash scripts/registry.sh url) $(BIN)/python -m bench.kafka --feed avro
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m bench.endofday

drills: $(STAMP) kafka-up ## Long failure drills (joins, SIGKILLs, leaves, remote Dask loss, stall, network faults via Toxiproxy, a frozen broker), each ending with the replay check
	SFA_DRILLS=1 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m pytest tests/integration/test_drills_long.py

soak: $(STAMP) kafka-up ## Two instances fed a live-shaped market at half capacity for SOAK_MINUTES (10); table + var/soak/soak.png
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/python -m bench.soak

mutation: $(STAMP) ## Mutation-test the engine and calendar (mutmut, niced, ~15-25 min); ends with the score
	nice -n 19 $(BIN)/python -m bench.mutation

clean: ## Remove build artefacts and demo output (keeps .venv and the Kafka cache)
	rm -rf var build mutants *.egg-info .pytest_cache .mypy_cache .ruff_cache
