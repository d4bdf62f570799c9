# The README's two commands: `make demo` (the main job) and `make test`. Both set everything up.
# `make docs` builds the documentation site into build/docs/ (open build/docs/index.html).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Installed before the package so pip never resolves a bare `torch` to a multi-GB download of
# the wrong build: where a local CPU wheel is on pip's find-links (this workplace) it is taken;
# elsewhere PyPI's default build for the platform (CUDA on Linux GPU machines). Override it,
# e.g. `make test TORCH_SPEC='torch>=2.2'`, or create the venv with your own torch first.
TORCH_SPEC ?= torch==2.13.0
# where torch comes from: empty for pip's default (PyPI), or one of PyTorch's own indexes, e.g.
# `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` for the CPU-only Linux build
TORCH_INDEX ?=
# Every other package at the exact version CI tested (constraints.txt); `make test CONSTRAINTS=`
# installs the newest releases within pyproject.toml's bounds instead.
CONSTRAINTS ?= constraints.txt
PIP_INSTALL := $(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test docs lint constraints clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev,docs]"
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/scoresde demo

test: $(STAMP)
	$(BIN)/python -m pytest

# warnings are errors: a broken cross-reference or a docstring that does not render fails it
docs: $(DOCS_STAMP)
	rm -rf build/docs
	$(BIN)/sphinx-build -q -W --keep-going -b html docs build/docs
	@echo "docs: build/docs/index.html"

lint: $(STAMP)
	$(BIN)/ruff check scoresde tests benchmarks examples

# after changing a dependency: re-pin constraints.txt from a venv that passes the tests
constraints: $(DOCS_STAMP)
	$(BIN)/python ci/freeze_constraints.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
