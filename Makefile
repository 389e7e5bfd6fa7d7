PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast lint format demo bench package deb rpm tarball install clean heartbeat-dist

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

# Most tests wait on real workers through their stall windows rather than compute, so the
# suite runs on more processes than cores, the tests of one file on one process (a module
# fixture is set up once); tests/parallel.py says which files go first and which are spread.
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 4
PYTEST       := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

test: lint
	$(PYTEST)

# Everything but the tests marked slow (FUSE, moto, packaging, the 1,000-process scale test,
# the end-to-end replay): a quick check while working; `make test` runs them all.
test-fast: lint
	$(PYTEST) -m "not slow and not e2e"

# The incident replayed on loopback (docs/demo.md); options with ARGS, e.g.
# `make demo ARGS="--workers 6 --keep"`. Stops everything it started, also on Ctrl-C.
demo: $(STAMP)
	$(PY) -m demo $(ARGS)

# Cost of one collection at 5, 50 and 200 workers, and of one stall-evidence capture;
# writes bench/RESULTS.md (ARGS, for bench_collect.py: --help).
bench: $(STAMP)
	$(PY) bench/bench_collect.py $(ARGS)
	$(PY) bench/bench_capture.py

clean:
	rm -rf $(VENV) build dist *.egg-info integration/*.egg-info .pytest_cache .ruff_cache

# --- packaging: the agent's file layout as a .deb, an .rpm and a tarball ------------------
# packaging/build.py makes one zipapp per CPython version in PYTHONS from wheels pip fetches
# for that version (cached in WHEELS), stages them with the launcher that picks the right
# one, and builds the packages from that tree (docs/operating.md, "What gets installed").
# `make package` builds all three (the .rpm when rpmbuild is installed: apt-get install rpm).
DIST        ?= dist
BUILD       ?= build
WHEELS      ?= build/wheels
PREFIX      ?=
PYTHONS     ?= 3.9 3.10 3.11 3.12 3.13
# Optional extras to bundle, e.g. PYZ_EXTRAS=aws for the SWF/SQS backlog probes (boto3).
PYZ_EXTRAS  ?=
SHIV        := $(VENV)/bin/shiv
VERSION      = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' integration/workerwatch/__init__.py)
RPMBUILD     = $(shell command -v rpmbuild)
BUILD_PKG    = $(PY) packaging/build.py --dist $(DIST) --build $(BUILD) --wheels $(WHEELS) \
               --pythons "$(PYTHONS)" --extras "$(PYZ_EXTRAS)"

# shiv is a build-time tool only: it goes into the dev venv, never into the zipapps' deps.
$(SHIV): $(STAMP)
	$(PY) -m pip install -q 'shiv>=1.0.8,<2' 'wheel>=0.40' 'setuptools>=68' 'packaging>=23'

package: $(SHIV)
	$(BUILD_PKG) tarball deb $(if $(RPMBUILD),rpm)

deb: $(SHIV)
	$(BUILD_PKG) deb

rpm: $(SHIV)
	$(BUILD_PKG) rpm

tarball: $(SHIV)
	$(BUILD_PKG) tarball

# Unpacks the tarball into PREFIX (empty = this host's /). The tarball holds only the
# package's own files and directories, so existing directories keep their owner and mode.
install:
	@set -- $(DIST)/nri-workerwatch_linux_$(VERSION)_*.tar.gz; test -f "$$1" || { echo "run 'make package' first"; exit 1; }; \
	mkdir -p $(PREFIX)/ && tar -C $(PREFIX)/ -xzf "$$1" && echo "installed $$1 into $(PREFIX)/"

# The worker-side heartbeat library as its own wheel, standard library only (heartbeat/):
# what a worker installs instead of the whole integration.
heartbeat-dist: $(STAMP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(DIST) heartbeat/
