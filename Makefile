# The two commands of the README. Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up test lint install clean upstream-env

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

# Upstream CosyVoice's own environment (torch 2.3.1 and the rest of its pins, a few GB), built by the
# GPU image's install script, for tests/test_cosyvoice3_upstream.py. Needs upstream's source (the
# repository's ../shared beside a checkout, or UPSTREAM_SRC); without it there is nothing to build
# and those tests skip.
UPSTREAM_SRC ?= ../shared/cosyvoice3-upstream/src
UPSTREAM_VENV := .venv-cosyvoice

upstream-env: $(UPSTREAM_VENV)/.installed

$(UPSTREAM_VENV)/.installed: ops/docker/install_cosyvoice.sh pyproject.toml
	@if [ ! -f "$(UPSTREAM_SRC)/requirements.txt" ]; then \
		echo "upstream-env: no CosyVoice source at $(UPSTREAM_SRC) (set UPSTREAM_SRC); its tests will skip"; \
	else \
		set -e; \
		test -x $(UPSTREAM_VENV)/bin/python || $(PYTHON) -m venv $(UPSTREAM_VENV); \
		. $(UPSTREAM_VENV)/bin/activate; \
		COSYVOICE_IMPORT_PATH="$(UPSTREAM_SRC)" COSYVOICE_WETEXT_DIR="$(CURDIR)/$(UPSTREAM_VENV)/wetext" \
			bash ops/docker/install_cosyvoice.sh "$(UPSTREAM_SRC)" "$(CURDIR)"; \
		touch $@; \
	fi

clean:
	rm -rf $(VENV) $(UPSTREAM_VENV) var .pytest_cache
