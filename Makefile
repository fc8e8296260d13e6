# The two commands of the README. Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up test lint install clean

$(STAMP): pyproject.toml requirements-nodeps.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[local,voice,dev]"
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/python -m ops up

# ruff, then the import contracts of docs/ARCHITECTURE.md (pyproject.toml), then every test.
# `$(VENV)/bin/pytest -m unit` is the under-a-minute loop while working.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache
