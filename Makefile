# fxbatch: `make run` starts the app, `make test` runs everything CI runs, `make bench` the benchmarks.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8501
ADDRESS ?= 127.0.0.1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint typecheck unit bench browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PIP) install -q -r requirements-dev.txt
	touch $@

## Start the server on http://127.0.0.1:$(PORT): the app and the API (/api/v1, docs at /api/docs) in one
## process that holds the database (created with the sample batch on first start). ADDRESS=0.0.0.0 also
## needs sign-in ([auth] in .streamlit/secrets.toml, README "Sign-in") or FXBATCH_ALLOW_UNAUTHENTICATED=1.
run: $(VENV)/.installed
	$(VENV)/bin/streamlit run server.py --server.port $(PORT) --server.address $(ADDRESS) --server.headless true --browser.gatherUsageStats false

## Debian's chromium for the browser tests (never a downloaded browser)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(VENV)/bin/mypy

## Everything CI runs: lint, types, and the whole pytest suite (unit, integration, app, browser).
## The browser tests leave a screenshot of each page (1400x1000) in $(SCREENSHOT_DIR) for review.
SCREENSHOT_DIR ?= test-results/screenshots
test: $(VENV)/.dev-installed browser lint typecheck
	SCREENSHOT_DIR=$(abspath $(SCREENSHOT_DIR)) $(VENV)/bin/pytest -q

unit: $(VENV)/.dev-installed
	$(VENV)/bin/pytest -q tests/unit

## Benchmarks: ratios against references measured in the same run, on a fixed trading day (a Monday),
## so the figures do not depend on the day they are taken (CASH trades on a weekend are refused)
bench: export FXBATCH_TODAY ?= 2026-11-30
bench: $(VENV)/.installed
	$(PY) bench/bench_load.py
	$(PY) bench/bench_ingest_memory.py
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_whatif.py
	$(PY) bench/bench_http.py
	$(PY) bench/bench_api.py
	$(PY) bench/bench_app.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/out
