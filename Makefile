# Every target bootstraps what it needs: a virtualenv with the locked dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A machine that sets PYTHONDONTWRITEBYTECODE makes every test worker, and every serve or sim
# process a test starts, compile the project's modules and rewrite the tests' asserts again:
# half of a worker's collection time. The cached bytecode lives in __pycache__ (git-ignored).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint pytest bench reliability lock clean browser redis driftpy-range

# The lock is complete (pip freeze), so pip resolves nothing (--no-deps), and it holds the
# setuptools the editable install builds with (--no-build-isolation: no second download).
# --no-compile: pip would compile every module it installs (about 20 CPU-s); Python compiles
# the ones a run imports on first import, into the same __pycache__.
# The virtualenv gets the newest pip from the index, which installs the lock twice as fast as
# the interpreter's bundled one that `venv` would first unpack (5 s). An interpreter without
# pip of its own falls back to that bundled one (ensurepip), upgraded.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --upgrade pip \
		|| ($(BIN)/python -m ensurepip --upgrade --default-pip && $(BIN)/pip install --quiet --upgrade pip)
	$(BIN)/pip install --quiet --no-compile --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/driftshare serve --engines funding --trade

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

# Lint beside pytest: mypy's single core fits in the time pytest's workers spend waiting on
# the processes and timeouts they test. Either failing fails `make test`.
test: $(STAMP) browser redis
	$(MAKE) --no-print-directory -j2 lint pytest

# One collection before the workers' (its errors show in theirs): it compiles the modules the
# tests import once, where five workers starting together on a fresh clone each compile them.
# Five workers on two cores: a worker spends about two thirds of its time waiting (on the
# processes, clocks and timeouts it tests); five finished 15 s sooner than four, six no sooner.
# --no-loadscope-reorder keeps the conftest's longest-first order of the files.
pytest: $(STAMP) browser redis
	$(BIN)/pytest --collect-only -q -p no:cacheprovider > /dev/null || true
	$(BIN)/pytest -n 5 --dist loadscope --no-loadscope-reorder

# Each driftpy release pyproject.toml accepts, in a virtualenv of its own under .venv/: that
# driftpy from PyPI with the versions it pins itself (0.8.85 pins older cachetools, cffi and
# pycryptodome than the lock), the lock's pins for everything else; the tests that touch
# driftpy must pass on each. Not part of `make test`: five installs take minutes and need the
# package index.
DRIFTPY_RANGE ?= 0.8.85 0.8.86 0.8.87 0.8.88 0.8.89
DRIFTPY_TESTS := tests/test_models.py tests/test_markets.py tests/test_sim_replay.py \
	tests/test_sim_driftpy.py tests/test_marketdata_sim.py tests/test_adapter.py \
	tests/test_feed.py tests/test_manager_sim.py
driftpy-range: $(STAMP) redis
	set -e; for v in $(DRIFTPY_RANGE); do \
		env=$(VENV)/driftpy-$$v; \
		test -x $$env/bin/python || $(PYTHON) -m venv $$env; \
		$$env/bin/pip install --quiet --upgrade pip; \
		$$env/bin/pip install --quiet "driftpy==$$v"; \
		$$env/bin/python tools/lock_beside.py requirements.lock > $$env/pins.txt; \
		$$env/bin/pip install --quiet -r $$env/pins.txt; \
		$$env/bin/pip install --quiet --no-deps -e .; \
		$$env/bin/pip check; \
		echo "driftpy $$v:"; \
		$$env/bin/pytest -q -p no:cacheprovider -n 4 --dist loadscope $(DRIFTPY_TESTS); \
	done

# Every section of bench/ (see bench/__init__.py), then BENCHMARKS.md and docs/bench/.
bench: $(STAMP) redis
	$(BIN)/python -m bench

# Every simulator fault in both modes, then the fleet faults -> docs/RELIABILITY.md;
# SOAK=seconds runs random faults instead.
SOAK ?= 0
reliability: $(STAMP)
	$(BIN)/python -m bench.reliability --soak $(SOAK)
	[ "$(SOAK)" != 0 ] || $(BIN)/python -m bench.reliability_fleet

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip freeze --all --exclude pip --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
