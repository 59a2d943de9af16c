# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: env demo test lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml tools/requirements-test.txt tools/setup_env.sh
	PYTHON=$(PYTHON) bash tools/setup_env.sh
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) tools/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache build
