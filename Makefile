# nnunet-dkm: `make test` and (later) `make demo`. Both create the project .venv when it is missing.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip setuptools wheel

$(STAMP): $(VPY) setup.py
	$(VPY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -ra --durations=10 tests

clean:
	rm -rf $(VENV) build *.egg-info
