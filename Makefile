# Two entry points: `make run` (the whole platform, locally) and `make test` (the whole suite).
# Each sets itself up on a fresh machine and is quick when that is already done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint traces dead-letters clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Lantern needs Python 3.11 or newer"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devstack

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks, not tests: several minutes; tables on stdout, JSON under bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check apps tests bench
	$(BIN)/ruff format --check apps tests bench
	$(BIN)/mypy

# The latest traces of `make run` as waterfalls; one of them: .venv/bin/lantern --local trace <trace or order id>
traces: $(STAMP)
	$(BIN)/lantern --local trace --last 3

# Every work queue's dead letters (lantern --local dead-letters list); replay with:
#   .venv/bin/lantern --local dead-letters replay --queue <queue>
dead-letters: $(STAMP)
	$(BIN)/lantern --local dead-letters list

clean:
	rm -rf $(VENV) .lantern
