# The README's two commands: `make demo` (the main job) and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the package so pip never resolves a bare `torch` to a multi-GB download of
# the wrong build: where a local CPU wheel is on pip's find-links (this workplace) it is taken;
# elsewhere PyPI's default build for the platform (CUDA on Linux GPU machines). Override it,
# e.g. `make test TORCH_SPEC='torch>=2.2'`, or create the venv with your own torch first.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scoresde demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check scoresde tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
