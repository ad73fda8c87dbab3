# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-quick test test-quick test-numpy2 lint bench clean gpu-check

$(BIN)/rotld: pyproject.toml rotld_cli/bootstrap.py
	$(PYTHON) -m rotld_cli.bootstrap --venv $(VENV)
	@touch $@

setup: $(BIN)/rotld

demo: setup
	$(BIN)/rotld demo

demo-quick: setup
	$(BIN)/rotld demo --quick

test: setup
	$(BIN)/python -m ruff check rotld_cli tests bench scripts
	$(BIN)/python -m pytest -q

# The suite again under numpy 2 + opencv >= 4.12: an overlay venv whose own numpy/opencv shadow
# the shared engine environment's (seen through the same .pth file as .venv's).
NP2 := .venv-numpy2
test-numpy2: setup
	test -x $(NP2)/bin/python || ($(PYTHON) -m venv $(NP2) && \
	  $(NP2)/bin/pip install -q "numpy>=2" "opencv-python-headless>=4.12" "pycocotools>=2.0.8" && \
	  cp $(VENV)/lib/python3*/site-packages/_rotld_shared_env.pth $(NP2)/lib/python3*/site-packages/)
	PYTHONPATH=$(CURDIR) $(NP2)/bin/python -m pytest -q

test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/python -m ruff check rotld_cli tests bench scripts
	$(BIN)/python -m ruff format --check rotld_cli tests bench

# On a CUDA machine with its own torch (e.g. offline: GPU_CHECK_ARGS="--offline --find-links DIR").
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

bench: setup
	$(BIN)/python -m bench.split
	$(BIN)/python -m bench.evaluate

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
