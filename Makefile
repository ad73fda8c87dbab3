# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-quick test test-quick lint bench clean gpu-check

$(BIN)/rotld: pyproject.toml rotld_cli/bootstrap.py
	$(PYTHON) -m rotld_cli.bootstrap --venv $(VENV)
	@touch $@

setup: $(BIN)/rotld

demo: setup
	$(BIN)/rotld demo

demo-quick: setup
	$(BIN)/rotld demo --quick

test: setup
	$(BIN)/python -m ruff check rotld_cli tests bench
	$(BIN)/python -m pytest -q

test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/python -m ruff check rotld_cli tests bench
	$(BIN)/python -m ruff format --check rotld_cli tests bench

# On a CUDA machine with its own torch (e.g. offline: GPU_CHECK_ARGS="--offline --find-links DIR").
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

bench: setup
	$(BIN)/python -m bench.split
	$(BIN)/python -m bench.evaluate

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
