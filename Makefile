# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv first (tools/setup_env.sh): CPU torch, the pack (editable), the test-only
# dependencies, a scratch ComfyUI 0.3.75 in build/comfyui and Debian's Chromium.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: env demo test test-core test-host test-browser lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml tools/requirements-test.txt tools/setup_env.sh
	PYTHON=$(PYTHON) bash tools/setup_env.sh
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

# Lint, then the whole suite (library, real ComfyUI host, headless browser) with a timing summary.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-core: $(STAMP)
	$(PY) -m pytest tests/core $(PYTEST_ARGS)

test-host: $(STAMP)
	$(PY) -m pytest tests/host $(PYTEST_ARGS)

test-browser: $(STAMP)
	$(PY) -m pytest tests/browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) tools/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache build artifacts
