# eochain: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output
# pytest workers of `make test`: N > 1 (2, the default) runs the suite on N pytest-xdist workers,
# each taking whole test files (their fixtures, a Ray cluster or moto's server, stay together);
# 1 runs it in one process (README, Tests: the red runs of both and what was mended).
TEST_WORKERS ?= 2

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

# The services the tests use: a real Prometheus on 127.0.0.1 (Debian package,
# installed on first use); moto's S3/EC2 server and local Ray clusters are
# started by the test fixtures themselves, on loopback. checkov gets its own
# venv (.services/checkov-venv): it pins old networkx/boto3. A crash of the test
# process (even at its exit, after pytest's own handler is gone) prints every
# thread's stack (PYTHONFAULTHANDLER).
#
# First, eochain's own bytecode, as pip compiles a wheel's modules at install: every
# process the tests start (Ray workers, command-line runs) loads it instead of compiling
# the modules from source, which it does on each start where PYTHONDONTWRITEBYTECODE is
# set (it is in this project's development shells). Only changed files are compiled again.
test: $(STAMP)
	$(PY) -m compileall -q planner ops scheduler
	$(VENV)/bin/lint-imports
	$(PY) tests/services/terraform_fmt.py
	PYTHON=$(PYTHON) bash tests/services/checkov.sh > /dev/null
	tests/services/prometheus.sh start
	PYTHONFAULTHANDLER=1 EOCHAIN_PROMETHEUS_URL=$$(tests/services/prometheus.sh url) $(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) --durations=25 tests; \
	  rc=$$?; tests/services/prometheus.sh stop; exit $$rc

unit: $(STAMP)
	$(PY) -m pytest -m unit tests

integration: $(STAMP)
	$(PY) -m pytest -m integration tests

lint: $(STAMP)
	$(VENV)/bin/ruff check planner ops scheduler tests benchmarks
	$(VENV)/bin/mypy planner ops

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
