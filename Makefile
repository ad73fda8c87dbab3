# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BOOTSTRAP_ARGS ?=

.PHONY: setup demo demo-quick test test-quick test-numpy2 test-numpy2-quick numpy2-overlay lint bench clean gpu-check

# The stamp names PYTHON's version: another PYTHON runs the bootstrap again, which refuses a .venv
# made with a different one (remove it, or pass VENV=.venv-py312).
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
STAMP := $(VENV)/.rotld-python$(PYVER)

$(STAMP): pyproject.toml rotld_cli/bootstrap.py rotld_cli/compat_libs.py
	$(PYTHON) -m rotld_cli.bootstrap --venv $(VENV) $(BOOTSTRAP_ARGS)
	@touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/rotld demo

demo-quick: setup
	$(BIN)/rotld demo --quick

test: setup
	$(BIN)/python -m ruff check rotld_cli tests bench scripts
	$(BIN)/python -m pytest -q

# numpy 2 / OpenCV 5: an overlay venv (same interpreter as .venv) whose own numpy, OpenCV and
# pycocotools, the newest the index serves, shadow the shared engine environment's (seen through the
# same .pth file as .venv's). `test-numpy2` runs the whole suite there; CI runs `test-numpy2-quick`:
# an import of every module and the compat checks first, then the tests not marked slow.
NP2 := $(VENV)-numpy2
NP2_RUN := PYTHONPATH=$(CURDIR) $(NP2)/bin/python
NP2_VERSIONS := $(NP2_RUN) -c "import sys, numpy, cv2; assert numpy.__version__[0] == '2', numpy.__file__; \
  print(sys.argv[1], 'numpy', numpy.__version__, '+ OpenCV', cv2.__version__, '+ Python', sys.version.split()[0])"
numpy2-overlay: setup
	test -x $(NP2)/bin/python || $(BIN)/python -m venv $(NP2)
	$(NP2)/bin/python -m pip install -q --disable-pip-version-check --upgrade \
	  "numpy>=2" "opencv-python-headless>=4.12" "pycocotools>=2.0.8"
	cp $(VENV)/lib/python3*/site-packages/_rotld_shared_env.pth $(NP2)/lib/python3*/site-packages/
	@$(NP2_VERSIONS) "numpy 2 overlay $(NP2):"

test-numpy2: numpy2-overlay
	$(NP2_RUN) -m pytest -q
	@$(NP2_VERSIONS) "test-numpy2 passed under"

test-numpy2-quick: numpy2-overlay
	$(NP2_RUN) -m pytest -q -p no:cacheprovider tests/test_compat_libs.py
	$(NP2_RUN) -m pytest -q -p no:cacheprovider -m "not slow" --ignore tests/test_compat_libs.py
	@$(NP2_VERSIONS) "test-numpy2-quick passed under"

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
	rm -rf $(VENV) $(NP2) .pytest_cache build *.egg-info
