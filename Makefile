# otel-llm-quota developer tasks. `make demo` and `make test` work on a fresh machine: they
# create .venv, install the package with what it needs, and (for tests) the Debian packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := tests/constraints.txt
STAMP := $(VENV)/.installed

OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed

.PHONY: help venv demo test lint typecheck unit unit-oldest integration system-deps collector bench clean

help:
	@echo "make demo         otel-llm-quota demo: real openai calls against a local stub, quotas filling up"
	@echo "make test         lint, type-check and run every test (unit + integration)"
	@echo "make unit         unit tests only"
	@echo "make unit-oldest  unit tests against the oldest opentelemetry-api/sdk pyproject.toml allows"
	@echo "make integration  integration tests only (real servers and clients)"
	@echo "make collector    build the OpenTelemetry Collector of collector-config/ into .tools/"
	@echo "make bench        run the benchmarks (figures go to benchmarks/README.md by hand)"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[all,dev,test]'
	touch $@

venv: $(STAMP)

# A second, small venv with the oldest OpenTelemetry releases pyproject.toml allows
# (tests/constraints-oldest.txt): the span processor reads SDK internals, so the floor is tested.
$(OLDEST_STAMP): pyproject.toml tests/constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -c tests/constraints-oldest.txt -e '.[all]' \
		pytest pytest-asyncio hypothesis trustme opentelemetry-exporter-otlp-proto-common
	touch $@

demo: venv
	$(BIN)/otel-llm-quota demo

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

unit-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest tests --ignore=tests/integration -p no:cacheprovider

integration: venv system-deps collector
	$(BIN)/python -m pytest tests/integration

test: venv system-deps collector lint typecheck unit-oldest
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
