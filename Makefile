# Two commands on a fresh machine: `make demo` and `make test`; `make lint`
# checks the code style, `make test-fast` runs all but the slow test tiers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench clean

DEV_STAMP := $(VENV)/.installed-dev
LINT_STAMP := $(VENV)/.installed-lint

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The pinned requirements first, then this package (editable) on top of them.
$(STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

install: $(STAMP)

test: $(DEV_STAMP)
	JAX_PLATFORMS=cpu $(PY) -m pytest -q tests tfds_gopro

# The edit loop: all but the slow tiers (pytest.ini names the markers).
FAST := not (multihost or gcs or notebook or parity or slow)
test-fast: $(DEV_STAMP)
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -m '$(FAST)' tests tfds_gopro

# Only ruff, at its pin in requirements-dev.txt: linting needs nothing else.
$(LINT_STAMP): requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet "$$(grep '^ruff==' requirements-dev.txt | cut -d' ' -f1)"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) main.py --config=configs/demo.py --workdir=runs/demo

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) runs
