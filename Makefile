# nnunet-dkm: `make demo`, `make test` and `make test-fast`. Each creates the project .venv when it is missing.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip setuptools wheel

$(STAMP): $(VPY) setup.py
	$(VPY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# one pytest-xdist worker per core, each test file on one worker (its module fixtures are built once); conftest.py
# gives each worker its share of the cores' threads
PYTEST := $(VENV)/bin/pytest -ra --durations=10 -n auto --dist loadfile

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PYTEST) tests

# the unit tests without the command-line journeys and other tests marked slow
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PYTEST) -m "not slow" tests

# the whole journey on the synthetic phantom with the shipped DM (its measured duration: benchmarks/results_demo.md); output in demo_output/
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
