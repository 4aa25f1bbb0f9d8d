# Antenna platform. `make demo` runs it, `make test` tests it; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHON

.PHONY: help install dbt-manifest demo test test-fast lint fmt up down status provision bench-stream bench-batch bench-hour clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@scripts/check_prereqs.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: about 1-2 minutes)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 | { grep -v -E "^WARNING: Location|ignored: it is neither" || true; }
	@$(BIN)/python -c "import dagster, pyspark, kafka, pandera, dbt" 
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install pinned dependencies

DBT_MANIFEST := dbt_project/target/manifest.json
DBT_INPUTS := $(shell find dbt_project -path dbt_project/target -prune -o -path dbt_project/logs -prune -o -type f -print)
$(DBT_MANIFEST): $(STAMP) $(DBT_INPUTS)
	$(BIN)/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

dbt-manifest: $(DBT_MANIFEST) ## dbt parse (no database needed): Dagster loads the dbt assets from it

demo: install dbt-manifest ## start services, provision, simulate traffic, Dagster UI on http://127.0.0.1:3000
	@scripts/check_prereqs.sh
	$(BIN)/antenna demo

test: install dbt-manifest ## run every test against real embedded services
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

up: install ## start embedded Postgres and Kafka
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

clean: ## stop services and remove .antenna state (keeps .venv)
	-$(BIN)/antenna down
	rm -rf .antenna
