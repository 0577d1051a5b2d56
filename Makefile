# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lowest Airflow the provider supports (pyproject.toml's floor), tested by `make test-lowest` in a venv
# of its own with that release's dependency pins (.ci/constraints-airflow-<version>.txt).
AIRFLOW_LOWEST ?= 3.1.1
LOWEST_VENV ?= .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST_CONSTRAINTS ?= .ci/constraints-airflow-$(AIRFLOW_LOWEST).txt
# Airflow reads AIRFLOW_HOME at import: keep the demo's state inside the checkout, never in ~/airflow.
export AIRFLOW_HOME ?= $(CURDIR)/airflow_home

.PHONY: setup demo test lint typecheck unit emulator bench bench-ledger bench-throughput bench-shared docs clean setup-lowest test-lowest print-airflow-lowest

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/.installed

## The demo: start the bundled Unkey emulator and run the example migration DAG against it.
demo: setup
	$(BIN)/python -m example_dags.run_demo

## The whole test suite, as CI runs it: lint, types, the docs site (warnings are errors), tests.
test: setup lint typecheck docs
	$(BIN)/python -m pytest -p no:cacheprovider -q

## The lowest supported Airflow: the whole suite and mypy (against that release's types) in $(LOWEST_VENV).
## WTForms (the FAB provider's) too: before 3.2, Airflow builds the connection form only when it is there.
$(LOWEST_BIN)/.installed: pyproject.toml $(LOWEST_CONSTRAINTS)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_BIN)/python -m pip install --quiet --upgrade pip
	$(LOWEST_BIN)/python -m pip install --quiet -c $(LOWEST_CONSTRAINTS) -e ".[test]" "apache-airflow==$(AIRFLOW_LOWEST)" wtforms
	touch $@

setup-lowest: $(LOWEST_BIN)/.installed

print-airflow-lowest:
	@echo $(AIRFLOW_LOWEST)

## The docs site does not depend on Airflow's version: it is built and tested once, by `make test`.
test-lowest: setup-lowest
	$(LOWEST_BIN)/mypy --cache-dir $(LOWEST_VENV)/.mypy_cache
	$(LOWEST_BIN)/python -m pytest -p no:cacheprovider -q --ignore=tests/test_docs_site.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

## Run the emulator in the foreground (Ctrl-C to stop).
emulator: setup
	$(BIN)/python -m airflow_provider_unkey.testing --port 8787 --root-key unkey_root_demo --api-id api_demo --migration-id mig_demo

bench: setup
	$(BIN)/python benchmarks/emulator_throughput.py

## The ledger's cost in throughput and its memory at 10M hashes (docs/benchmarks.md, "The ledger").
bench-ledger: setup
	$(BIN)/python -m benchmarks.ledger_cost --keys 200000 --pairs 6 --latencies 0 0.05 0.2
	$(BIN)/python -m benchmarks.ledger_memory --hashes 1000000 10000000

## Throughput against the peers (naive loop, unkey.py SDK, dlt, the limit), ~15 minutes (docs/performance.md).
$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

bench-throughput: $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.throughput_suite

## A migration beside production on one workspace rate limit, ~25 minutes (docs/performance.md).
bench-shared: setup
	$(BIN)/python -m benchmarks.shared_workspace

## The documentation site (mkdocs.yml): built into site/ with every warning an error.
$(BIN)/.docs-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

docs: $(BIN)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(LOWEST_VENV) airflow_home .mypy_cache .ruff_cache .pytest_cache
