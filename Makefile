# obliviate — set-up, demo, tests and benchmarks. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

# The CPU build of torch is installed first where there is no CUDA, so that the plain `torch`
# requirement does not pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("obliviate needs Python >= 3.10") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q "torch>=2.2"; \
	else \
		$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.2"; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/obliviate demo --overwrite

test: setup
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

# ruff (undefined/unused names, import order) and the layer contract in pyproject.toml
# ([tool.importlinter]: cli → api → scenarios → train → gating → eval → report → config →
# methods → judges → metrics → models → data → io → errors; imports point down only).
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/python bench/bench_unlearning.py
	$(BIN)/python bench/bench_generation.py

clean:
	rm -rf $(VENV) runs build *.egg-info
