# eochain: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test unit integration lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "eochain needs Python >= 3.11, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==25.3
	$(PIP) install -q -c constraints.txt -e '.[runtime,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eochain demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests

unit: $(STAMP)
	$(PY) -m pytest -m unit tests

integration: $(STAMP)
	$(PY) -m pytest -m integration tests

lint: $(STAMP)
	$(VENV)/bin/ruff check planner ops scheduler tests benchmarks
	$(VENV)/bin/mypy planner ops

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
