# Developer entry points. `make test` is the command CI runs (after `make lint`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
ENV    ?= default
# `sam build` (no container) needs the function runtime's python3.12 on PATH: the venv has one.
SAM    := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(BIN)/sam

.PHONY: help venv test lint format build migrate bench chaos services services-down services-status \
        dev deploy clean distclean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: ## create/refresh .venv (and .local/localstack-venv when Python 3.13 exists)
	@bash scripts/bootstrap.sh

test: venv ## run the whole test suite (starts PostgreSQL/Redis/SQS when needed)
	$(PY) -m pytest -n 2 -q

lint: venv ## ruff, ruff format --check, mypy, sam validate --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SAM) validate --lint

format: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

build: venv ## sam build (no container)
	$(SAM) build

migrate: venv ## apply database migrations (DATABASE_URL)
	$(BIN)/notify-admin migrate

bench: venv ## run every benchmark script in bench/ (each prints its figures)
	@for f in bench/[a-z]*.py; do name=$$(basename $$f .py); [ "$$name" = common ] && continue; \
	  echo "== bench/$$name.py"; $(PY) -m bench.$$name; done

chaos: venv ## fault-injection suite (~12 min; not part of `make test`; CHAOS_ARGS=--quick: ~6 min)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

services: venv ## start PostgreSQL, Redis and LocalStack/moto as needed; print their URLs
	$(PY) -m notify_local.services up

services-down: venv ## stop what `make services` (or the tests) started under .local/
	$(PY) -m notify_local.services down

services-status: venv ## are the local services up?
	$(PY) -m notify_local.services status

dev: venv ## run the whole system locally: API on :3000, SQS pollers, schedules, DLQ processing
	$(BIN)/notify-local

deploy: venv ## sam deploy --config-env $(ENV) (default, staging, prod)
	$(SAM) deploy --config-env $(ENV)

clean: ## remove build output and caches (keeps .venv and .local)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -path ./.local -prune -o -name __pycache__ -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean ## also stop local services and remove .venv and .local
	-[ -x $(PY) ] && $(PY) -m notify_local.services down
	rm -rf $(VENV) .local
