# Watchtower: the commands a newcomer and CI run. `make demo` and `make test` are the two in
# the README; CI runs `.ci/run`, which is `make test`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# The steps of `test` run in the order written, even under `make -j`.
.NOTPARALLEL:

# Each step is a script in package.json (one definition; `pnpm run <script>` works too); this
# file adds the order and the prerequisites.

# The brokers the integration tests need: one per transport package that exists.
BROKERS := $(strip \
  $(if $(wildcard packages/nats/package.json),nats) \
  $(if $(wildcard packages/redis/package.json),redis) \
  $(if $(wildcard packages/rabbitmq/package.json),rabbitmq))

# `make services-up COMPOSE=docker-compose` for the old standalone binary.
COMPOSE ?= docker compose

VITEST_REPORT := node_modules/.cache/watchtower/vitest-report.json
FAULTS_REPORT := node_modules/.cache/watchtower/faults-report.json

.PHONY: help install build lint format typecheck check-packages brokers test test-run \
  test-faults demo bench examples services-up services-down

help:
	@echo 'make demo            install, build, run the quickstart (no broker needed)'
	@echo 'make test            install, build, lint, typecheck, publint/attw, every test'
	@echo 'make test-faults     the fault suite alone (private brokers killed, consumers SIGKILLed)'
	@echo 'make build           build every package (tsup: ESM + CJS + .d.ts)'
	@echo 'make lint            eslint (type-aware) and prettier --check'
	@echo 'make format          prettier --write'
	@echo 'make typecheck       tsc for every workspace member'
	@echo 'make check-packages  publint --strict and attw for every publishable package'
	@echo 'make bench           run the benchmarks'
	@echo 'make examples        run every example against local brokers'
	@echo 'make services-up     start NATS, Redis and RabbitMQ with docker compose'
	@echo 'make services-down   stop them'

install:
	@command -v pnpm >/dev/null 2>&1 || npm install -g pnpm@10
	pnpm install --frozen-lockfile

build: install
	pnpm run build

# Type-aware lint of the examples and benchmarks also reads the built packages' types.
lint: build
	pnpm run lint

format: install
	pnpm run format

# The examples and benchmarks import the built packages, so their typecheck needs the build.
typecheck: build
	pnpm run typecheck

check-packages: build
	pnpm run check:packages

brokers:
	$(if $(BROKERS),bash scripts/ensure-brokers.sh $(BROKERS),@echo 'no broker transport yet: no broker needed')

test: install build lint typecheck check-packages brokers test-run test-faults

# Vitest prints its own summary; the last line repeats the totals as plain "N passed, N failed".
test-run:
	@mkdir -p $(dir $(VITEST_REPORT))
	@rm -f $(VITEST_REPORT)
	@status=0; \
	  pnpm exec vitest run --project unit --project integration --reporter=default \
	    --reporter=json --outputFile.json=$(VITEST_REPORT) || status=$$?; \
	  node scripts/test-summary.mjs $(VITEST_REPORT); \
	  exit $$status

# The fault suite runs after the others, alone on the machine: it kills private brokers and
# SIGKILLs consumer processes under load (about a minute). Its consumer processes run the
# sources with tsx and import the built core, hence `build`.
test-faults: build
	@mkdir -p $(dir $(FAULTS_REPORT))
	@rm -f $(FAULTS_REPORT)
	@status=0; \
	  pnpm exec vitest run --project faults --reporter=default --reporter=json \
	    --outputFile.json=$(FAULTS_REPORT) || status=$$?; \
	  node scripts/test-summary.mjs $(FAULTS_REPORT); \
	  exit $$status

# `pnpm run demo` builds only what the quickstart depends on, so the demo starts quickly.
demo: install
	pnpm run demo

bench: install build
	pnpm run bench

examples: install build brokers
	pnpm run examples

services-up:
	$(COMPOSE) up -d --wait

services-down:
	$(COMPOSE) down
