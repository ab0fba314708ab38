# Tether: `make up` runs the platform, `make test` runs every check and test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: install up test unit lint fmt bench bench-gateway clean kube-bin nats-cli api-lint-tools

$(VENV)/.installed: pyproject.toml
	@echo "tether: installing into $(VENV): the first time takes a few minutes (pip shows what it fetches)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@echo "tether: installed"
	touch $@

install: $(VENV)/.installed

## Start the whole platform in the foreground on its embedded default (Ctrl-C stops it).
up: install
	$(BIN)/tether up $(ARGS)

## Lint, type-check, check the layers, then run the whole test suite.
test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

## Only the tests that need no server (pure logic).
unit: install
	$(PY) -m pytest -m "not kube" tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Scale benchmark (apart from the tests): make bench ARGS="--agents 1000 --json bench.json"; then the gateway's.
bench: install
	$(PY) -m tests.bench $(ARGS)
	$(PY) -m tests.bench.gateway $(GW_ARGS)

## The Kubernetes gateway's figures beside direct kube-apiserver calls: make bench-gateway GW_ARGS="--watches 1000".
bench-gateway: install
	$(PY) -m tests.bench.gateway $(GW_ARGS)

## Build (once per machine) the control plane and kwok used by the `kube` tests.
kube-bin:
	bash tests/tools/kubebin/build.sh

## Build (once per machine) the official nats CLI used by the `clients` tests.
nats-cli:
	bash tests/tools/natscli/build.sh

## Install (once per lock file) the pinned OpenAPI and AsyncAPI linters used by the `clients` tests.
api-lint-tools:
	bash tests/tools/lint/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
