# dspy-runner: `make run` sets up and runs the main job on the embedded model; `make test` sets up and tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARCH   := $(shell uname -m)

# llama-cpp-python compiles llama.cpp at install time. A -march=native build segfaults on some
# x86 CPUs, so build a portable AVX2 binary there; other platforms use llama.cpp's defaults
# (Metal on Apple Silicon).
ifeq ($(ARCH),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup run test test-fast test-torch validate bench sweep mlflow-ui constraints clean

# constraints.txt pins every package to the versions the published results were made with
# (regenerate it with `make constraints` after changing dependencies).
$(VENV)/.installed: pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[dev,ray]'
	$(BIN)/pip check
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m runner

test: setup
	$(BIN)/python -m runner.validate
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The PyTorch backend is an optional extra (a CPU build of torch is ~200 MB, a CUDA one GBs):
# this installs it and runs the tests that need it (skipped by `make test` without it).
test-torch: setup
	$(BIN)/pip install -e '.[torch]'
	$(BIN)/python -m pytest -q tests/test_engines.py -k torch

validate: setup
	$(BIN)/python -m runner.validate

bench: setup
	$(BIN)/python -m runner.bench

sweep: setup
	./multirun.sh

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/python -c 'from runner.settings import tracking_uri; print(tracking_uri())')" --port 5000

constraints:
	$(BIN)/pip freeze --exclude-editable | grep -v '^dspy-runner' > constraints.txt

clean:
	rm -rf outputs .pytest_cache
