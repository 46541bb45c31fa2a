# Sentiment service: every command a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU-only torch from the PyTorch CPU wheel index by default (plain PyPI would bring
# the multi-GB CUDA build). Set TORCH_INDEX_URL= (empty) to let pip's own configuration
# (a local wheelhouse or find-links) supply torch==$(TORCH_VERSION) offline.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

# Archive inputs (see handler/build_mar.py): a local model dir wins over the hub id.
MODEL_DIR ?=
MODEL_ID ?= distilbert/distilbert-base-uncased-finetuned-sst-2-english
MODEL_REVISION ?= 714eb0f
N ?= 1

export MODEL_DIR MODEL_ID MODEL_REVISION

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.installed ## Install system packages (Java, nginx) and the .venv with every component's dependencies

$(VENV)/.installed: pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --group handler --group facade --group dev
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$(TORCH_VERSION)') else 'torch ' + torch.__version__ + ' is installed, expected $(TORCH_VERSION)')"
	touch $@

.PHONY: lint
lint: install ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: fmt
fmt: install ## Reformat the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: install ## Run every test: unit, integration (real TorchServe/Gunicorn/nginx) and docker
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit tests/integration

.PHONY: test-unit
test-unit: install ## Run the unit tests only (seconds, no servers)
	$(BIN)/python -m pytest tests/unit

.PHONY: test-integration
test-integration: install ## Run the integration tests only (real servers on loopback)
	$(BIN)/python -m pytest tests/integration

.PHONY: mar
mar: install ## Build model-store/sentiment.mar (MODEL_DIR=<local HF dir> or MODEL_ID/MODEL_REVISION)
	$(BIN)/python handler/build_mar.py

.PHONY: up
up: install ## Start TorchServe, REPLICAS facades and nginx on 127.0.0.1 (builds the .mar first; MODEL_DIR honoured)
	$(BIN)/python handler/build_mar.py
	$(BIN)/python scripts/stack.py up

.PHONY: down
down: ## Stop every process `make up` started (safe to run twice)
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/stack.py down; else echo "nothing was running"; fi

.PHONY: status
status: ## Show the process groups of the native stack
	$(BIN)/python scripts/stack.py status

.PHONY: logs
logs: ## Show where the native stack logs, with the last lines of each log
	$(BIN)/python scripts/stack.py logs

.PHONY: scale-workers
scale-workers: install ## Scale TorchServe workers for the model: make scale-workers N=4
	$(BIN)/python handler/scale_workers.py $(N)
