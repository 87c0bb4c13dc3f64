# Two commands on a fresh machine: `make demo` and `make test`. Both idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medseg-installed
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?= --durations=15

.PHONY: venv test test-fast demo docs clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/medseg demo

docs: $(STAMP)
	$(VENV)/bin/medseg config --reference --markdown > docs/CONFIG.md

clean-venv:
	rm -rf $(VENV)
