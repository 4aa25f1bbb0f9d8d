# Antenna platform. `make demo` runs it, `make test` tests it; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHON

.PHONY: help install superset-install browser dbt-manifest demo test test-fast lint fmt up down status provision bench-stream bench-batch bench-hour clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@scripts/check_prereqs.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: about 1-2 minutes)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 | { grep -v -E "^WARNING: Location|ignored: it is neither" || true; }
	@$(BIN)/python -c "import dagster, pyspark, kafka, pandera, dbt" 
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install pinned dependencies

# Superset has its own venv: its pins (SQLAlchemy 1.4, Flask 2.3, pandas 2.1) clash with Dagster's.
SUPERSET_VENV := .venv-superset
SUPERSET_STAMP := $(SUPERSET_VENV)/.installed
SUPERSET_CONSTRAINTS := superset/constraints-6.1.0.txt
$(SUPERSET_STAMP): $(SUPERSET_CONSTRAINTS)
	@scripts/check_prereqs.sh
	@test -x $(SUPERSET_VENV)/bin/python || $(PYTHON) -m venv $(SUPERSET_VENV)
	@echo "installing Superset 6.1.0 into $(SUPERSET_VENV) (first time: about 2 minutes)"
	@$(SUPERSET_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(SUPERSET_CONSTRAINTS) 'apache-superset[postgres]==6.1.0' 2>&1 | { grep -v -E "^WARNING: Location|ignored: it is neither" || true; }
	@$(SUPERSET_VENV)/bin/python -m pip check -q --disable-pip-version-check >/dev/null
	@touch $(SUPERSET_STAMP)

superset-install: $(SUPERSET_STAMP) ## create .venv-superset (Superset 6.1.0, pinned)

# ANTENNA_DASHBOARD=0 leaves Superset out of `make demo` / `make up`.
DASHBOARD := $(if $(filter 0 false no off,$(ANTENNA_DASHBOARD)),,superset-install)

browser: ## Debian's chromium for the dashboard tests (installed when missing and root)
	@scripts/ensure_chromium.sh

DBT_MANIFEST := dbt_project/target/manifest.json
DBT_INPUTS := $(shell find dbt_project -path dbt_project/target -prune -o -path dbt_project/logs -prune -o -type f -print)
$(DBT_MANIFEST): $(STAMP) $(DBT_INPUTS)
	$(BIN)/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

dbt-manifest: $(DBT_MANIFEST) ## dbt parse (no database needed): Dagster loads the dbt assets from it

demo: install dbt-manifest $(DASHBOARD) ## services, traffic, Dagster UI on :3000, dashboards on :8088
	@scripts/check_prereqs.sh
	$(BIN)/antenna demo $(DEMO_ARGS)

test: install dbt-manifest superset-install browser ## run every test against real embedded services
	@scripts/check_prereqs.sh
	$(BIN)/python -m pytest -v --durations=15 $(PYTEST_ARGS)

test-fast: install dbt-manifest ## unit tests only
	$(BIN)/python -m pytest -q tests/unit

lint: install dbt-manifest ## ruff lint and format check; Dagster loads the definitions
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/dagster definitions validate -w workspace.yaml

fmt: install ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

up: install $(DASHBOARD) ## start embedded Postgres, Kafka and Superset
	$(BIN)/antenna up

down: install ## stop embedded services
	$(BIN)/antenna down

status: install ## services, offsets, lag, lake, last batch hour
	$(BIN)/antenna status

provision: install ## create tables, seed users, create the topic
	$(BIN)/antenna provision

bench-stream: install ## stream throughput and latency benchmark
	$(BIN)/python benchmarks/bench_stream.py $(BENCH_ARGS)

bench-batch: install ## batch (Spark) benchmark beside DuckDB
	$(BIN)/python benchmarks/bench_batch.py $(BENCH_ARGS)

bench-hour: install dbt-manifest ## hour end -> rows in bytes_hourly, whole platform (waits for the next hour)
	$(BIN)/python benchmarks/bench_hour.py $(BENCH_ARGS)

clean: ## stop services and remove .antenna state (keeps .venv and .venv-superset)
	-$(BIN)/antenna down
	rm -rf .antenna
