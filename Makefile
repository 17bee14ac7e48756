# Two commands do everything (see README.md):
#   make run   set up (venv, pinned stack, MovieLens-100K) and run the two_tower pipeline
#   make test  the same set-up, then lint and the whole test suite (CI runs this)
#   make test-fast  lint and the tests that run no whole pipeline and nothing slow (the edit loop)
# Each set-up step leaves a stamp in .setup/ and is skipped when its inputs are unchanged.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .setup
RECBOLE_VERSION := 1.2.1
RAW_ML100K := data/01_raw/ml-100k
PIPELINE ?= two_tower
PYTEST_ARGS ?=

export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# pip on this machine kind warns once per package about local index folders; keep the log readable.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup run test test-fast lint format viz mlflow-ui clean-setup
.DEFAULT_GOAL := run

setup: $(STAMPS)/venv.stamp $(STAMPS)/data.stamp

$(STAMPS)/venv.stamp: requirements.txt requirements-dev.txt requirements-torchrec.txt constraints.txt pyproject.toml
	@mkdir -p $(STAMPS)
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	@echo ">> creating $(VENV) and installing the pinned stack (first time: ~4 min, ~8 GB)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt 2>&1 | $(QUIET_PIP)
	@# torchrec's metadata requires the CUDA fbgemm build; we ship fbgemm-gpu-cpu instead.
	$(PY) -m pip install -q --no-deps -r requirements-torchrec.txt -c constraints.txt 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torchrec, streaming, pyspark, kedro, kedro_mlflow, faiss; print('>> stack imports fine')"
	@touch $@

$(STAMPS)/data.stamp: $(STAMPS)/venv.stamp scripts/fetch_movielens.py
	@echo ">> fetching MovieLens-100K (recbole==$(RECBOLE_VERSION) wheel from the package index)"
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d $(STAMPS)/wheels recbole==$(RECBOLE_VERSION) 2>&1 | $(QUIET_PIP)
	$(PY) scripts/fetch_movielens.py --wheel-dir $(STAMPS)/wheels --out $(RAW_ML100K)
	@touch $@

run: setup
	$(VENV)/bin/kedro run --pipelines=$(PIPELINE)

test: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

lint: $(STAMPS)/venv.stamp
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMPS)/venv.stamp
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

viz: setup
	$(VENV)/bin/kedro viz build

mlflow-ui: $(STAMPS)/venv.stamp
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1

clean-setup:
	rm -rf $(VENV) $(STAMPS)
