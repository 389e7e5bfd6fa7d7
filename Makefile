PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast lint format demo bench package install clean heartbeat-dist

# The venv is rebuilt whenever pyproject.toml changes, so a fresh clone needs
# nothing but Python and pip.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(VENV)/bin/pytest -q

# Everything but the tests marked slow (FUSE, moto, packaging, the 1,000-process scale test,
# the end-to-end replay): a quick check while working; `make test` runs them all.
test-fast: lint
	$(VENV)/bin/pytest -q -m "not slow and not e2e"

# The incident replayed on loopback (docs/demo.md); options with ARGS, e.g.
# `make demo ARGS="--workers 6 --keep"`. Stops everything it started, also on Ctrl-C.
demo: $(STAMP)
	$(PY) -m demo $(ARGS)

# Cost of one collection at 5, 50 and 200 workers; writes bench/RESULTS.md (ARGS: --help).
bench: $(STAMP)
	$(PY) bench/bench_collect.py $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info integration/*.egg-info .pytest_cache .ruff_cache

# --- packaging: a single-file zipapp and the agent's file layout --------------------------
# The zipapp bundles psutil and pydantic-core, which have compiled parts: it runs only on
# the platform and Python minor version it was built with, and its file name says which.
# Build with the interpreter you target, e.g. `make package PYTHON=python3.12` in a fresh
# clone (the venv is made with PYTHON).
DIST        ?= dist
BUILD       ?= build
PREFIX      ?=
PYZ_SHEBANG ?= /usr/bin/env python3
# Optional extras to bundle, e.g. PYZ_EXTRAS=aws for the SWF/SQS backlog probes (boto3).
PYZ_EXTRAS  ?=
SHIV        := $(VENV)/bin/shiv
VERSION      = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' integration/workerwatch/__init__.py)
PY_TAG       = $(shell $(PY) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PLATFORM     = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_"))')
PYZ          = $(DIST)/nri-workerwatch-$(VERSION)-$(PY_TAG)-$(PLATFORM).pyz
TARBALL      = $(DIST)/nri-workerwatch-$(VERSION)-$(PY_TAG)-$(PLATFORM).tar.gz
AGENT_DIR   := /var/db/newrelic-infra/newrelic-integrations
AGENT_CONF  := /etc/newrelic-infra/integrations.d
DOC_DIR     := /usr/share/doc/nri-workerwatch

# shiv is a build-time tool only: it goes into the dev venv, never into the zipapp's deps.
$(SHIV): $(STAMP)
	$(PY) -m pip install -q 'shiv>=1.0.8,<2' 'wheel>=0.40' 'setuptools>=68'

package: $(SHIV)
	mkdir -p $(DIST)
	$(SHIV) --compressed --reproducible -p '$(PYZ_SHEBANG)' -e workerwatch.cli:main \
		-o $(PYZ) --no-build-isolation -q '.$(if $(PYZ_EXTRAS),[$(PYZ_EXTRAS)])'
	cp $(PYZ) $(DIST)/nri-workerwatch.pyz
	rm -rf $(BUILD)/root
	$(MAKE) --no-print-directory install PREFIX=$(abspath $(BUILD)/root) DIST=$(DIST)
	tar -C $(BUILD)/root --owner=0 --group=0 --sort=name -czf $(TARBALL) .
	@echo "built $(PYZ) ($$(du -k $(PYZ) | cut -f1) KiB) and $(TARBALL)"

# Installs into PREFIX (empty = this host's /), where the agent looks: the program under
# newrelic-integrations/bin, the samples (inactive until renamed to .yml) in integrations.d.
install:
	test -f $(DIST)/nri-workerwatch.pyz || { echo "run 'make package' first"; exit 1; }
	install -D -m 0755 $(DIST)/nri-workerwatch.pyz $(PREFIX)$(AGENT_DIR)/bin/nri-workerwatch
	install -D -m 0644 definitions/agent/workerwatch-config.yml.sample \
		$(PREFIX)$(AGENT_CONF)/workerwatch-config.yml.sample
	install -D -m 0644 definitions/agent/workerwatch-long-running-config.yml.sample \
		$(PREFIX)$(AGENT_CONF)/workerwatch-long-running-config.yml.sample
	install -D -m 0644 definitions/agent/legacy/workerwatch-definition.yml \
		$(PREFIX)$(AGENT_DIR)/workerwatch-definition.yml
	install -D -m 0644 definitions/agent/legacy/workerwatch-config.yml.sample \
		$(PREFIX)$(DOC_DIR)/legacy-workerwatch-config.yml.sample
	install -D -m 0644 README.md $(PREFIX)$(DOC_DIR)/README.md
	install -D -m 0644 docs/operating.md $(PREFIX)$(DOC_DIR)/operating.md

# The worker-side heartbeat library as its own wheel, standard library only (heartbeat/):
# what a worker installs instead of the whole integration.
heartbeat-dist: $(STAMP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(DIST) heartbeat/
