# Two entry points: `make run` (the whole platform, locally) and `make test` (the whole suite).
# Each sets itself up on a fresh machine and is quick when that is already done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package the venv and the images install, pinned with hashes (pip-compile): the runtime
# dependencies for the images, and those plus the dev and cli extras for this venv.
LOCKS := requirements.lock requirements-dev.lock

.PHONY: run test bench lint traces dead-letters lock clean

# Dependencies come from the dev lock only; the project itself goes in on top without them, so a
# fresh clone gets exactly the pinned versions. pyproject.toml is a prerequisite for its entry
# points and package data; a dependency edited there reaches the venv through `make lock`.
$(STAMP): $(LOCKS) pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Lantern needs Python 3.11 or newer"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devstack

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks, not tests: about half an hour; tables on stdout, JSON under bench/results/. The
# last step drains a backlog with 1, 2 and 3 payments replicas in the container tier (it needs a
# Docker engine, and says so and is skipped without one).
bench: $(STAMP)
	$(BIN)/python -m bench
	-$(BIN)/python -m tests.containers.scaling

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

# Refresh both lock files after editing dependencies in pyproject.toml: `make lock`. Pins that
# pyproject.toml still admits stay as they are (so nothing moves under anyone by surprise); to move
# to the newest admitted releases: `make lock LOCK_ARGS=--upgrade`, or one package:
# `make lock LOCK_ARGS='--upgrade-package httpx'`. The dev lock is constrained by the runtime lock,
# so the images and this venv share every version. The gRPC extra is in neither: the suite checks
# what a service says when that exporter is missing.
LOCK_TOOLS := $(VENV)/lock-tools
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile -q --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	@test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) \
		&& $(LOCK_TOOLS)/bin/python -m pip install -q 'pip==26.3' 'pip-tools==7.7.0'; }
	$(PIP_COMPILE) -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev --extra cli -c requirements.lock -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .lantern
