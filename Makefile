# Everything a newcomer types. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
export PYTHONWARNINGS ?= ignore::DeprecationWarning
# `python -m shared.cli ...` is `nameko ...` (or `python -m MODULE` with -m) without
# eventlet's deprecation banner and py-amqp's closing-channel noise: see shared/cli.py
QUIET := $(BIN)/python -m shared.cli

.PHONY: help install run migrate shell test unit integration compose lint format clean bench bench-seeded deadletters replay replay-args fault

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# reinstall when the pins or the declared dependencies change
$(STAMP): $(BIN)/python constraints.txt setup.cfg pyproject.toml
	$(BIN)/pip install -q -c constraints.txt setuptools==80.8.0 wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP) ## create the virtualenv and install the pinned dependencies

migrate: $(STAMP) ## apply every service's migrations (SQLite under var/ by default)
	$(BIN)/python -m scripts.run --migrate-only

run: $(STAMP) ## migrate, then run every service with `nameko run` (Ctrl-C stops them)
	$(BIN)/python -m scripts.run

shell: $(STAMP) ## nameko shell on the local broker, with the project's exceptions loaded
	PYTHONSTARTUP=shared/shell.py $(QUIET) shell --config config/users.yaml

test: $(STAMP) ## the whole suite: unit and integration (needs RabbitMQ and PostgreSQL)
	$(PYTEST) tests

unit: $(STAMP) ## fast tier: logic on SQLite and PostgreSQL, no broker
	$(PYTEST) tests/unit

integration: $(STAMP) ## services in real containers on a real RabbitMQ
	$(PYTEST) tests/integration

compose: $(STAMP) ## the image and docker-compose.yml on a Docker engine (not in `make test`; ~5 min)
	COMPOSE_TESTS=1 $(PYTEST) tests/compose -v -rs

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .pytest_cache .ruff_cache

deadletters: $(STAMP) ## list the dead letters of every service with event handlers
	for c in $$($(BIN)/python -m shared.services --with-database); do $(QUIET) -m shared.deadletters config/$$c.yaml list || exit 1; done

# checked before anything else runs, so a missing argument costs nothing but the usage line
replay-args:
	@test -n "$(SERVICE)" || { echo "usage: make replay SERVICE=users|orders [EVENT_ID=...]" >&2; exit 2; }

replay: replay-args $(STAMP) ## replay dead letters: make replay SERVICE=orders [EVENT_ID=...]
	$(QUIET) -m shared.deadletters config/$(SERVICE).yaml replay $(if $(EVENT_ID),--event-id $(EVENT_ID))

fault: $(STAMP) ## faults under load on private RabbitMQ/PostgreSQL: one node, a 3-node cluster, a rolling restart (~6 min)
	$(BIN)/python -m tests.fault.run
	$(BIN)/python -m tests.fault.run --cluster
	$(BIN)/python -m tests.fault.run --rolling

bench: $(STAMP) ## benchmark against stock-nameko baselines (needs wrk, RabbitMQ, PostgreSQL; ~3 min)
	$(BIN)/python -m bench.run

bench-seeded: $(STAMP) ## the benchmark on 100k users and 1M orders, with EXPLAIN of the hot queries (~7 min)
	$(BIN)/python -m bench.run --seeded
