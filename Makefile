# Two commands do all set-up on a fresh clone (see README):
#   make sandbox   - the main job on the embedded default (SQLite, simulators)
#   make test      - the whole test suite (lint, types, rules, pytest)
# Everything else is a building block of those two.

PYTHON ?= python3
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installed packages get their .pyc at install time: where PYTHONDONTWRITEBYTECODE is set (it is on
# these machines) every new process otherwise compiles litestar, sqlalchemy & co. from source, ~4 s
# of CPU per `ml-connector` start (the CLI, `serve`, and the suite's many subprocesses).
export UV_COMPILE_BYTECODE := 1

.PHONY: setup sandbox test lint typecheck rules-check pytest bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# Installs exactly what uv.lock pins (no resolution on a fresh machine).
$(BIN)/ml-connector: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

setup: $(BIN)/ml-connector

# The whole flow on this machine: simulators + connector, the demo scenario, its summary; then it
# keeps serving the audit pages until Ctrl-C. `make sandbox SANDBOX_ARGS=--exit-after` stops after
# the summary (exit 1 if the scenario fell short).
SANDBOX_ARGS ?=
sandbox: setup
	$(BIN)/ml-connector rules lint rules
	$(BIN)/ml-connector sandbox --scenario demo $(SANDBOX_ARGS)

lint: setup
	$(BIN)/ruff check engine server simulators tests bench
	$(BIN)/ruff format --check engine server simulators tests bench
	$(BIN)/lint-imports  # the layering contracts in pyproject.toml ([tool.importlinter])

typecheck: setup
	$(BIN)/mypy

rules-check: setup
	$(BIN)/ml-connector rules lint rules
	$(BIN)/ml-connector rules test rules/tests

# Line coverage of engine, server and simulators ([tool.coverage.*] in pyproject.toml) may only rise:
# the floor is the lowest figure measured when it was set (89.9-90.0% over two full runs), rounded down.
COVERAGE_FLOOR := 89

pytest: setup
	$(BIN)/python -m compileall -q engine server simulators bench  # the project's own .pyc, for the same reason
	$(BIN)/pytest -n 2 --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)  # two workers: most tests wait on loopback HTTP and subprocesses

test: lint typecheck rules-check pytest

# The benchmarks -> docs/benchmarks.md, a few minutes on 2 cores (bench/__main__.py).
# `make bench BENCH_ARGS=--quick` for a fast pass, `BENCH_ARGS="--size issue"` for every size in the issue.
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m compileall -q engine server simulators bench  # child processes start from .pyc (see above)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
