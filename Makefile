# otel-llm-quota developer tasks. `make demo` and `make test` work on a fresh machine: they
# create .venv, install the package with what it needs, and (for tests) the Debian packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := tests/constraints.txt
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint typecheck unit integration system-deps collector bench clean

help:
	@echo "make demo         run the quota monitoring example"
	@echo "make test         lint, type-check and run every test (unit + integration)"
	@echo "make unit         unit tests only"
	@echo "make integration  integration tests only (real servers and clients)"
	@echo "make collector    build the OpenTelemetry Collector of collector-config/ into .tools/"
	@echo "make bench        run the benchmarks (figures go to benchmarks/README.md by hand)"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[all,dev,test]'
	touch $@

venv: $(STAMP)

demo: venv
	PYTHONPATH=. $(BIN)/python examples/quota_monitoring_example.py

system-deps:
	bash scripts/install-system-deps.sh

# The Collector (collector-config/builder-config.yaml) built with the pinned ocb; needs Go. A no-op
# when .tools/ already holds a binary built from the same manifest.
collector:
	bash scripts/build-collector.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest tests --ignore=tests/integration

integration: venv system-deps collector
	$(BIN)/python -m pytest tests/integration

test: venv system-deps collector lint typecheck
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
