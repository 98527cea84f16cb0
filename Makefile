# The README's two commands: `make demo` (the main job) and `make test` (what CI runs).
# Each creates or reuses the virtual environment .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv docs gpu-session clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs,cuda-tools]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/liquidref demo

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/mkdocs build --strict --site-dir site

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# On a GPU machine (its image already has numpy, numba, cupy, torch): build, test, benchmark.
gpu-session:
	bash scripts/gpu_session.sh

clean:
	rm -rf $(VENV) site liquidref-out
