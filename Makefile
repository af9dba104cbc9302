# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,speed]'
	touch $@

.PHONY: demo test lint serve
demo: $(BIN)/.installed
	$(BIN)/agentsight-otel demo

lint: $(BIN)/.installed
	$(BIN)/ruff check agentsight_otel tests examples bench
	$(BIN)/mypy agentsight_otel

test: lint
	$(BIN)/pytest
	AGENTSIGHT_DISABLE_ORJSON=1 $(BIN)/pytest -q tests/test_stages.py

serve: $(BIN)/.installed
	$(BIN)/agentsight-otel serve

# Integration tests with real instrumentation packages alone (they also run in `make test`). Each library gets its
# own virtual environment, built once under build/interop-venvs/ from tests/interop/requirements-*.txt.
.PHONY: interop
interop: $(BIN)/.installed
	$(BIN)/pytest -v -m interop tests/test_interop.py

# Benchmarks (not tests): prints a table and writes bench/results.md. See bench/README.md.
.PHONY: bench bench-quick
bench: $(BIN)/.installed
	$(BIN)/python bench/bench.py

bench-quick: $(BIN)/.installed
	$(BIN)/python bench/bench.py --quick
