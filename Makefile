# Developer entry points. `make test` is the command CI runs (after `make lint`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
ENV    ?= default
LAYER  := $(CURDIR)/.aws-sam/build/CommonLayer/python
# `sam build` (no container) needs the function runtime's python3.12 on PATH: the venv has one.
SAM    := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(BIN)/sam
# checkov (its own venv, made by scripts/bootstrap.sh) offline: no guideline download, no version check
CHECKOV := BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true .local/checkov-venv/bin/checkov --skip-download

.PHONY: help venv test test-layer test-pgbouncer fuzz mutate coverage chaos lint format build migrate bench services \
        services-down services-status \
        dev deploy clean distclean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: ## create/refresh .venv (and .local/localstack-venv when Python 3.13 exists)
	@bash scripts/bootstrap.sh

test: venv ## run the whole test suite (starts PostgreSQL/Redis/SQS when needed); fuzzes the API briefly
	$(PY) -m pytest -n 2 -q

# Schemathesis against the served OpenAPI document through notify-local's runtime, FUZZ_EXAMPLES
# per operation (make test runs 10); counts every 5xx and every reply that violates the document.
FUZZ_EXAMPLES ?= 1500
FUZZ_RESULT := .local/fuzz-result.json
fuzz: venv ## property-based fuzzing of the HTTP API (~87,000 requests, ~15 min); ends with RESULT {json}
	@mkdir -p .local && rm -f $(FUZZ_RESULT)
	FUZZ_MODE=count FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RESULT=$(FUZZ_RESULT) \
	  $(PY) -m pytest tests/integration/test_fuzz.py -q -p no:cacheprovider
	@$(PY) -c 'import json, sys; r = json.load(open("$(FUZZ_RESULT)")); \
	  print("RESULT " + json.dumps(r)); sys.exit(1 if r["server_errors"] or r["nonconforming"] else 0)'

mutate: venv ## mutation testing of the decision modules against the unit tier (not part of make test)
	$(PY) scripts/mutate.py

coverage: venv ## the whole suite with branch coverage; prints it per part (delivery, notifications, sweeper, dlq, auth, API)
	@mkdir -p .local
	$(PY) -m pytest -n 2 -q --cov=notify_core --cov=functions --cov-branch \
		--cov-report=json:.local/coverage.json --cov-report=term:skip-covered
	$(PY) scripts/coverage_report.py .local/coverage.json

test-layer: venv ## the test suite against the built layer (after make build), not the venv's copies
	@test -d $(LAYER)/notify_core || { echo "no built layer in $(LAYER): run make build" >&2; exit 1; }
	NOTIFY_LAYER=$(LAYER) PYTHONPATH=$(LAYER) PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest -n 2 -q

test-pgbouncer: venv ## the test suite through PgBouncer in transaction pooling (Debian's pgbouncer)
	NOTIFY_TEST_PGBOUNCER=1 $(PY) -m pytest -n 2 -q

lint: venv ## ruff, ruff format --check, mypy, sam validate --lint, checkov on template.yaml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SAM) validate --lint
	$(CHECKOV) -f template.yaml --framework cloudformation --compact --quiet

format: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

build: venv ## sam build (no container); prints the layer's size against its budget
	$(SAM) build
	@$(PY) layers/common/build_layer.py --report .aws-sam/build/CommonLayer

migrate: venv ## apply database migrations (DATABASE_URL)
	$(BIN)/notify-admin migrate

bench: build ## run every benchmark script in bench/ (each prints its figures and a RESULT line)
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

# DEV_ARGS=--provider-stub: providers -> the in-process stub, which reports deliveries back (signed)
DEV_ARGS ?=
dev: venv ## run the whole system locally: API on :3000, SQS pollers, schedules, DLQ processing
	$(BIN)/notify-local $(DEV_ARGS)

deploy: venv ## sam deploy --config-env $(ENV) (default, staging, prod)
	$(SAM) deploy --config-env $(ENV)

clean: ## remove build output and caches (keeps .venv and .local)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -path ./.local -prune -o -name __pycache__ -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean ## also stop local services and remove .venv and .local
	-[ -x $(PY) ] && $(PY) -m notify_local.services down
	rm -rf $(VENV) .local
