PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint format demo bench package install clean

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

demo: $(STAMP)
	@echo "make demo: not yet: the incident replay lands with the demo issue."

clean:
	rm -rf $(VENV) build dist *.egg-info integration/*.egg-info .pytest_cache .ruff_cache
