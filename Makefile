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
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

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
	$(BIN)/python -m pytest tests/unit tests/integration tests/docker

.PHONY: test-unit
test-unit: install ## Run the unit tests only (seconds, no servers)
	$(BIN)/python -m pytest tests/unit

.PHONY: test-integration
test-integration: install ## Run the integration tests only (real servers on loopback)
	$(BIN)/python -m pytest tests/integration

.PHONY: test-browser
test-browser: install ## Browser test only (headless Debian Chromium); screenshots in test-artifacts/
	$(BIN)/python -m pytest tests/integration/test_browser.py

.PHONY: smoke
smoke: install ## Quick smoke load against the running stack: 200 requests, 8 at a time, with a summary
	$(BIN)/python test_app.py --url http://127.0.0.1:$${HTTP_PORT:-8080}/ --requests 200 --concurrency 8

.PHONY: lock
lock: install ## Re-lock the images' Python dependencies (facade/ and handler/requirements.lock) from pyproject.toml
	TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX_URL=$(TORCH_INDEX_URL) $(BIN)/python scripts/lock.py

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

.PHONY: bench
bench: install ## Benchmark in-process per runtime, TorchServe, the service and the original design (QUICK=1: minutes)
	$(BIN)/pip install --quiet --group bench
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,)

.PHONY: bench-tune
bench-tune: install ## Sweep batchSize, maxBatchDelay, workers x threads at concurrency 8/32/64 (QUICK=1: < 10 min)
	$(BIN)/pip install --quiet --group bench
	$(BIN)/python bench/run.py --tune $(if $(QUICK),--quick,)

.PHONY: bench-int8
bench-int8: install ## Static int8 ONNX experiment: SST-2 dev accuracy and speed of fp32, dynamic and static int8
	$(BIN)/python bench/static_int8.py

DURATION ?= 300
EXAMPLES ?= 2000

.PHONY: soak
soak: install ## Soak test: DURATION s (300) at concurrency 64 through nginx; p99, 5xx and memory growth checked
	$(BIN)/python scripts/soak.py --duration $(DURATION)

.PHONY: fuzz
fuzz: install ## Fuzz the API through nginx from its OpenAPI document: EXAMPLES (2000) per operation, random seed
	FUZZ_EXAMPLES=$(EXAMPLES) FUZZ_SEED=random $(BIN)/python -m pytest tests/integration/test_fuzz.py -s

.PHONY: scale-workers
scale-workers: install ## Scale TorchServe workers for the model: make scale-workers N=4
	$(BIN)/python handler/scale_workers.py $(N)

# ------------------------------------------------------------------------------------------ Docker
# `docker compose` (v2 plugin) when the client has it, else docker-compose (1.29, Debian's package).
# Decided once, when a recipe first needs it (after docker-engine may have installed Docker).
COMPOSE ?= $(eval COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo docker-compose; fi))$(COMPOSE)
SCALE ?= 2
DOCKER_WAIT_S ?= 300
DOCKER_BASE_IMAGES := python:3.11-slim debian:bookworm-slim
WHEEL_PIP = $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PYTHON) -m pip)
# Compose resolves a relative bind-mount path against the compose file's dir and takes a bare name
# for a volume: hand it an absolute MODEL_DIR.
DOCKER_ENV = MODEL_DIR=$(if $(MODEL_DIR),$(abspath $(MODEL_DIR)),)

.PHONY: docker-engine
docker-engine: ## Make sure a Docker engine runs (apt-installs docker.io/docker-compose if missing; root)
	bash scripts/docker-engine.sh

.PHONY: docker-bases
docker-bases: docker-engine ## Make sure python:3.11-slim and debian:bookworm-slim exist: pulled, else local stand-ins
	@missing=; \
	for image in $(DOCKER_BASE_IMAGES); do \
	    docker image inspect $$image >/dev/null 2>&1 && continue; \
	    echo "pulling $$image"; \
	    docker pull --quiet $$image >/dev/null 2>&1 || missing="$$missing $$image"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "no registry answered for$$missing: building local stand-ins (scripts/build-base-images.sh)"; \
	    bash scripts/build-base-images.sh; \
	fi

.PHONY: docker-wheels
docker-wheels: ## Put the CPU torch wheel into wheels/ for offline image builds (from pip's local find-links, or with TORCH_INDEX_URL=)
	@mkdir -p wheels; \
	if ls wheels/torch-$(TORCH_VERSION)*.whl >/dev/null 2>&1; then \
	    echo "wheels/ already holds $$(cd wheels && ls torch-$(TORCH_VERSION)*.whl)"; \
	elif $(WHEEL_PIP) download --quiet --no-deps --no-index torch==$(TORCH_VERSION) -d wheels >/dev/null 2>&1; then \
	    echo "wheels/: copied $$(cd wheels && ls torch-$(TORCH_VERSION)*.whl) from pip's local find-links"; \
	elif [ -z "$(TORCH_INDEX_URL)" ]; then \
	    $(WHEEL_PIP) download --quiet --no-deps torch==$(TORCH_VERSION) -d wheels; \
	else \
	    echo "wheels/: no local torch wheel; the image build installs torch from $(TORCH_INDEX_URL)"; \
	fi

.PHONY: docker-up
docker-up: docker-bases docker-wheels ## Build and start the stack detached, wait until healthy (SCALE=2, HTTP_PORT=80, MODEL_DIR)
	$(DOCKER_ENV) $(COMPOSE) up -d --build --scale app=$(SCALE) || { $(COMPOSE) ps; $(COMPOSE) logs --tail=40; exit 1; }
	@nginx="$$($(COMPOSE) ps -q nginx)"; deadline=$$((SECONDS + $(DOCKER_WAIT_S))); \
	until [ "$$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' $$nginx 2>/dev/null)" = healthy ]; do \
	    if [ $$SECONDS -ge $$deadline ]; then \
	        $(COMPOSE) ps; $(COMPOSE) logs --tail=40; \
	        echo "error: the stack was not healthy within $(DOCKER_WAIT_S) s (logs above)" >&2; exit 1; \
	    fi; \
	    sleep 1; \
	done; \
	$(COMPOSE) ps; \
	echo "ready: http://127.0.0.1:$${HTTP_PORT:-80}/   (make docker-down to remove it)"

.PHONY: docker-down
docker-down: ## Remove the stack's containers, networks and volumes (the model store and HF cache too)
	$(DOCKER_ENV) $(COMPOSE) down -v --remove-orphans

.PHONY: test-docker
test-docker: install ## Run the Docker tests only (builds the images, starts a private stack on free ports)
	$(BIN)/python -m pytest tests/docker
