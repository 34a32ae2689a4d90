# Every target bootstraps what it needs: a virtualenv with the locked dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench reliability lock clean browser redis

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/driftshare serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The browser test drives Debian's chromium through Playwright (which cannot fetch its own).
browser:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# The fleet tests start Debian's redis-server themselves, on a free port.
redis:
	test -x /usr/bin/redis-server || (apt-get update && apt-get install -y redis-server)

test: $(STAMP) lint browser redis
	$(BIN)/pytest -n 4 --dist loadscope

# Every section of bench/ (see bench/__init__.py), then BENCHMARKS.md and docs/bench/.
bench: $(STAMP) redis
	$(BIN)/python -m bench

# Every simulator fault in both modes -> docs/RELIABILITY.md; SOAK=seconds runs random faults.
SOAK ?= 0
reliability: $(STAMP)
	$(BIN)/python -m bench.reliability --soak $(SOAK)

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
