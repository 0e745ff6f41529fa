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

.PHONY: help install install-dev check-locks run test test-unit test-integration test-compose lint format mypy all bench clean lock audit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs come from the lock files only: every package pinned and checked against its
# sha256 (--require-hashes). deploy/install-locked puts the locked installer (pip, and the
# build backend setuptools and wheel) into the venv first, so the lock is read by the pip it
# was made for, whatever pip the Python on PATH bundles, and the project's own editable
# install needs no unpinned download (--no-build-isolation). `make lock` regenerates the
# locks from pyproject.toml (docs/running.md, "Dependencies").
INSTALL_LOCKED := deploy/install-locked
PIP_PROJECT := $(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

$(VENV)/.installed: pyproject.toml requirements-embedded.lock deploy/installer.lock | $(BIN)/python
	$(INSTALL_LOCKED) $(BIN)/python requirements-embedded.lock
	$(PIP_PROJECT)
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements-dev.lock deploy/installer.lock | $(BIN)/python
	$(INSTALL_LOCKED) $(BIN)/python requirements-dev.lock
	$(PIP_PROJECT)
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Create .venv and install the service

install-dev: $(VENV)/.installed-dev ## Create .venv and install the service with its dev tools

# What a new clone does, on throwaway venvs made by the Python on PATH (an old .venv hides a
# lock that a new machine cannot install): `make install` and `make install-dev` themselves,
# and the image's two locks by the Dockerfile's recipe. CI runs it before anything else.
check-locks: ## Install each lock file into a fresh venv, as a new clone and the image do
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for target in install install-dev; do \
	  echo "check-locks: make $$target, in a fresh venv"; \
	  $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) VENV=$$tmp/$$target $$target; \
	done; \
	echo "check-locks: requirements.lock and deploy/rq-dashboard.lock, as the Dockerfile does"; \
	$(PYTHON) -m venv $$tmp/image; \
	$(INSTALL_LOCKED) $$tmp/image/bin/python requirements.lock deploy/rq-dashboard.lock; \
	echo "check-locks: every lock installs"

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

# pip-compile (pip-tools) resolves pyproject.toml once, for Python 3.11 on Linux (the
# image's and CI's), with every file's hash. requirements-dev.lock is the full set; the
# others are resolved under it (-c), so one package has one version in all four.
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
# The build backend too: the project installs with --no-build-isolation.
BUILD_DEPS := --build-deps-for editable
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile

lock: install-dev ## Regenerate the lock files from pyproject.toml (newest versions allowed)
	$(PIP_COMPILE) $(LOCK_FLAGS) $(BUILD_DEPS) --upgrade --extra dev -o requirements-dev.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) $(BUILD_DEPS) -c requirements-dev.lock -o requirements.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) $(BUILD_DEPS) -c requirements-dev.lock --extra embedded \
		-o requirements-embedded.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) -c requirements.lock -o deploy/rq-dashboard.lock \
		deploy/rq-dashboard.in
	$(PIP_COMPILE) $(LOCK_FLAGS) -c requirements-dev.lock -o deploy/installer.lock \
		deploy/installer.in

# pip-audit over the locked set, nothing resolved again (--disable-pip --no-deps).
# --strict: a package it could not look up fails the target, so an advisory service it
# cannot reach is an error, never a silent "No known vulnerabilities found".
AUDIT_LOCKS := requirements-dev.lock requirements.lock deploy/rq-dashboard.lock
audit: install-dev ## pip-audit the lock files against PyPI's advisories (needs the network)
	@for lock in $(AUDIT_LOCKS); do \
	  echo "pip-audit $$lock"; \
	  $(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes \
	    -r $$lock || { \
	    echo "make audit: FAILED for $$lock: a known vulnerability, or a package the" \
	      "advisory service (https://pypi.org/pypi/NAME/VERSION/json) did not answer" \
	      "for; see the lines above" >&2; exit 1; }; \
	done

bench: install-dev ## Throughput benchmark (not part of make test)
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
