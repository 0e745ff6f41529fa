# permit-push: `make run` and `make test` work on a fresh clone (they create .venv).
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Integration tests use this machine's Redis and PostgreSQL unless told otherwise.
# Redis database 15 is flushed and the PostgreSQL database's public schema is rebuilt.
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: help install install-dev run test test-unit test-integration test-compose lint format mypy all bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Create .venv and install the service

install-dev: $(VENV)/.installed-dev ## Create .venv and install the service with its dev tools

run: install ## Run receiver + worker on embedded defaults (permit-push dev)
	$(BIN)/permit-push dev

test: install-dev ## Run the whole test suite (unit + integration)
	$(BIN)/pytest

test-unit: install-dev ## Unit tests only (no external services)
	$(BIN)/pytest -m "not integration"

test-integration: install-dev ## Integration tests (real Redis and PostgreSQL)
	$(BIN)/pytest -m integration

test-compose: install-dev ## docker-compose.yml for real: build, load, faults (needs Docker; not in make test)
	$(BIN)/pytest -v -s tests/compose/compose_stack.py

lint: install-dev ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

mypy: install-dev ## Type-check the packages (strict)
	$(BIN)/mypy

all: lint mypy test ## Everything CI checks

bench: install-dev ## Throughput benchmark (not part of make test)
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
