# ACTS build entry points. `make run` and `make test` are the whole quick start.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ACTS needs Python 3.11, found " + sys.version)'
	bash scripts/sh/install_system_packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 backend execution scripts  # bytecode now, not in every process (ADR-082)
	$(BIN)/python -c 'from backend.models import forest; forest.warm()'
	touch $(STAMP)

run: install
	$(BIN)/acts demo

# Two workers, one per core; a test file stays on one worker so its module fixtures are built once.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report=term-missing --cov-fail-under=100 $(PYTEST_ARGS)

bench: install
	cd bench && ../$(BIN)/python run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov

# Issue 16: reliability drills (SIGKILL x100 each, kill switch, fuzzing, emulator faults) -> docs/reliability.md
.PHONY: drill
drill: install
	$(BIN)/acts drill --trials 100 --fuzz-examples 500 --out docs/reliability.md

# The operator console on http://127.0.0.1:8501 (issue 12); CONSOLE_ARGS="--port 8600" to change it.
.PHONY: console
console: install
	$(BIN)/acts console $(CONSOLE_ARGS)

# Screenshots of every console page into docs/console/, from a running console (`make console` on a home with a run).
CONSOLE_URL ?= http://127.0.0.1:8501
.PHONY: console-screenshots
console-screenshots: install
	$(BIN)/python -m scripts.console_screenshots --url $(CONSOLE_URL) --out docs/console
