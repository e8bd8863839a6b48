# reid-validate: `make demo` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LOCK := requirements.lock
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-setup test-fast test-integration lint airflow pools benchmarks lock clean system-deps

venv: $(STAMP)

# The venv is (re)built from the lock whenever the lock or setup.cfg changes.
$(STAMP): $(LOCK) setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip==25.3"
	$(PIP) install --quiet --require-virtualenv -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: venv
	bash scripts/demo.sh

airflow: venv
	bash scripts/airflow_standalone.sh

pools: venv
	bash scripts/setup_airflow.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Everything: unit, integration (PostgreSQL, Redis, Celery, Airflow), browser. `test-setup` starts PostgreSQL
# and Redis when installed but down and installs Debian's chromium (`system-deps`), naming whatever cannot be
# had and how to get it; with CI=true anything missing is an error (here and in the tests), never a skip.
test: venv test-setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-setup:
	@bash scripts/test_setup.sh

test-fast: venv
	$(PY) -m pytest -q -m "not integration and not slow"

test-integration: venv
	$(PY) -m pytest -q -m integration

benchmarks: venv
	$(PY) benchmarks/bench_preprocess.py
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_targets.py
	$(PY) benchmarks/bench_results.py
	$(PY) benchmarks/bench_dag_parse.py
	$(PY) benchmarks/bench_detect.py

# Debian's chromium + chromedriver (the browser tests use them; no browser download). Needs root or sudo -n.
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else \
	  echo "chromium/chromedriver missing; as root run: apt-get install -y chromium chromium-driver" >&2; exit 1; fi; \
	echo "installing chromium chromium-driver (apt-get)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver; \
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "chromium/chromedriver still not on PATH after apt-get install chromium chromium-driver" >&2; exit 1; }

# Regenerate the lock from the current venv (maintainers only).
lock:
	$(PIP) freeze --exclude-editable --all | grep -v '^pip==' > $(LOCK)

clean:
	rm -rf .airflow build *.egg-info .pytest_cache .ruff_cache test-output
