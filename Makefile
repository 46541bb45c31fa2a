# Sentiment service: every command a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The interpreter .venv is made with: python3.11 where the host has one (Debian 12, pyenv, deadsnakes),
# else the host's python3 (Ubuntu 24.04: 3.12, Debian 13: 3.13). pyproject.toml's requires-python
# says which versions work; `make install` checks it (`python -m tools.check_python`) before making the venv.
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),python3)
VENV ?= .venv
BIN := $(VENV)/bin
# CPU-only torch from the PyTorch CPU wheel index by default (plain PyPI would bring
# the multi-GB CUDA build). Set TORCH_INDEX_URL= (empty) to let pip's own configuration
# (a local wheelhouse or find-links) supply torch==$(TORCH_VERSION) offline.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

# Archive inputs (see tools/build_mar.py): a local model dir wins over the hub id.
MODEL_DIR ?=
# MODEL_ID / MODEL_REVISION: passed on only when set; the pinned defaults are tools/build_mar.py's.
MODEL_ID ?=
MODEL_REVISION ?=
N ?= 1

export MODEL_DIR MODEL_ID MODEL_REVISION

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.installed ## Install what the service needs: Java, nginx (apt) and the .venv with torch, handler and facade groups

$(VENV)/.installed: pyproject.toml devtools/install-system-deps.sh tools/check_python.py
	@$(PYTHON) -m tools.check_python
	bash devtools/install-system-deps.sh service $(PYTHON)
	@$(call make_venv,$(VENV))
	@echo "installing torch $(TORCH_VERSION) (CPU build) from $(or $(TORCH_INDEX_URL),pip's own configuration)"
	$(BIN)/pip install --progress-bar on $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	@echo "installing the handler and facade groups of pyproject.toml (TorchServe, transformers, ONNX Runtime, Flask, Gunicorn)"
	$(BIN)/pip install --progress-bar on --group handler --group facade
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$(TORCH_VERSION)') else 'torch ' + torch.__version__ + ' is installed, expected $(TORCH_VERSION)')"
	touch $@

# Makes the venv $(1) with $(PYTHON) unless one whose pip runs is there. A failed `python -m venv`
# (Debian's python3 without its -venv package) leaves a python without pip: such a directory is
# removed, never taken for a venv the next time.
define make_venv
if ! $(1)/bin/python -m pip --version >/dev/null 2>&1; then \
    rm -rf $(1); \
    echo "creating $(1) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
    $(PYTHON) -m venv $(1) && $(1)/bin/python -m pip --version >/dev/null 2>&1 || { \
        rm -rf $(1); \
        echo "error: '$(PYTHON) -m venv $(1)' did not make a working venv (Debian/Ubuntu: apt install python3-venv); nothing was left behind" >&2; \
        exit 1; \
    }; \
    $(1)/bin/pip install --quiet --upgrade "pip>=25.1"; \
fi
endef

.PHONY: which-python
which-python: ## Show the interpreter `make install` makes .venv with (set PYTHON= to choose another)
	@echo "$(PYTHON): $$($(PYTHON) --version 2>&1)"

.PHONY: install-dev
install-dev: $(VENV)/.installed-dev ## Add what the tests and load tools need: the dev group, Chromium and its driver, wrk

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml devtools/install-system-deps.sh
	bash devtools/install-system-deps.sh test
	$(BIN)/pip install --quiet --group dev
	@$(call make_venv,$(VENV)/checkov)
	$(VENV)/checkov/bin/pip install --quiet --group policy
	touch $@

.PHONY: lint
lint: install-dev ## Check style with ruff, and the import layers with import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

.PHONY: fmt
fmt: install-dev ## Reformat the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: install-dev ## Run every test: unit, integration (real TorchServe/Gunicorn/nginx) and docker
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit tests/integration tests/docker

.PHONY: test-unit
test-unit: install-dev ## Run the unit tests only (seconds, no servers)
	$(BIN)/python -m pytest tests/unit

.PHONY: test-integration
test-integration: install-dev ## Run the integration tests only (real servers on loopback)
	$(BIN)/python -m pytest tests/integration

.PHONY: test-browser
test-browser: install-dev ## Browser test only (headless Debian Chromium); screenshots in test-artifacts/
	$(BIN)/python -m pytest tests/integration/test_browser.py

.PHONY: smoke
smoke: install ## Quick smoke load against the running stack: 200 requests, 8 at a time, with a summary
	$(BIN)/python test_app.py --url http://127.0.0.1:$${HTTP_PORT:-8080}/ --requests 200 --concurrency 8

.PHONY: lock
lock: install-dev ## Re-lock the images' Python dependencies from pyproject.toml for linux/amd64 + arm64 (uv)
	TORCH_VERSION=$(TORCH_VERSION) TORCH_INDEX_URL=$(TORCH_INDEX_URL) $(BIN)/python -m devtools.lock

.PHONY: mar
mar: install ## Build model-store/sentiment.mar (MODEL_DIR=<local HF dir> or MODEL_ID/MODEL_REVISION; PRECISION=auto|fp32|int8|bf16)
	$(BIN)/python -m tools.build_mar

.PHONY: up
up: install ## Start TorchServe, REPLICAS facades and nginx on 127.0.0.1 (builds the .mar first; MODEL_DIR honoured)
	$(BIN)/python -m tools.build_mar
	$(BIN)/python -m stack up

.PHONY: down
down: ## Stop every process `make up` started (safe to run twice)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m stack down; else echo "nothing was running"; fi

.PHONY: status
status: ## Show the process groups of the native stack
	$(BIN)/python -m stack status

.PHONY: logs
logs: ## Show where the native stack logs, with the last lines of each log
	$(BIN)/python -m stack logs

.PHONY: bench
bench: install-dev ## Benchmark in-process per runtime, TorchServe, the service and the original design (QUICK=1: minutes)
	$(BIN)/pip install --quiet --group bench
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,) $(BENCH_ARGS)

.PHONY: bench-tune
bench-tune: install-dev ## Sweep batchSize, maxBatchDelay, workers x threads at concurrency 8/32/64 (QUICK=1: < 10 min)
	$(BIN)/pip install --quiet --group bench
	$(BIN)/python -m bench.run --tune $(if $(QUICK),--quick,)

.PHONY: bench-int8
bench-int8: install-dev ## Static int8 ONNX experiment: SST-2 dev accuracy and speed of fp32, dynamic and static int8
	$(BIN)/python -m bench.static_int8

DURATION ?= 300
EXAMPLES ?= 2000

.PHONY: soak
soak: install-dev ## Soak test: DURATION s (300) at concurrency 64 through nginx; p99, 5xx and memory growth checked
	$(BIN)/python -m bench.soak --duration $(DURATION)

ABUSE_DURATION ?= 60
URL ?=

.PHONY: abuse
abuse: install-dev ## Fairness under abuse: 3 clients flood with the largest requests, 1 light (ABUSE_DURATION s, 60; URL= a running stack)
	$(BIN)/python -m bench.abuse --duration $(ABUSE_DURATION) $(if $(URL),--url $(URL),)

.PHONY: fuzz
fuzz: install-dev ## Fuzz the API through nginx from its OpenAPI document: EXAMPLES (2000) per operation, random seed
	FUZZ_EXAMPLES=$(EXAMPLES) FUZZ_SEED=random $(BIN)/python -m pytest tests/integration/test_fuzz.py -s

.PHONY: scale-workers
scale-workers: install ## Scale TorchServe workers for the model: make scale-workers N=4
	$(BIN)/python -m tools.scale_workers $(N)

# The check's labelled texts beside its fixed sentences: a TSV with columns sentence and label (SST-2
# dev); UPGRADE_ARGS: more options of tools/model_upgrade.py (thresholds, --timeout, --drain-s).
CHECK_DATA ?=
UPGRADE_ARGS ?=
UPGRADE_OPTIONS = $(if $(CHECK_DATA),--labelled $(abspath $(CHECK_DATA)),) $(UPGRADE_ARGS)

.PHONY: model-upgrade
model-upgrade: install ## Switch the running stack to MODEL_DIR's model if it passes the check (CHECK_DATA=dev.tsv)
	$(BIN)/python -m tools.model_upgrade upgrade $(UPGRADE_OPTIONS)

.PHONY: model-rollback
model-rollback: install ## Switch the running stack back to the model the last upgrade or rollback replaced
	$(BIN)/python -m tools.model_upgrade rollback $(UPGRADE_ARGS)

# ------------------------------------------------------------------------------------------ Docker
# `docker compose` (v2 plugin) when the client has it, else docker-compose (1.29, Debian's package).
# Decided once, when a recipe first needs it (after docker-engine may have installed Docker).
COMPOSE ?= $(eval COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo docker-compose; fi))$(COMPOSE)
SCALE ?= 2
# TorchServe replicas in Compose (each a ~1-3 GB model server; the facades use them all).
TORCHSERVE_SCALE ?= 1
DOCKER_WAIT_S ?= 300
# Base images: the Dockerfile's PYTHON_IMAGE and DEBIAN_IMAGE build arguments, which Compose passes
# from the environment or .env (defaults: the official images, named in the Dockerfile). OFFLINE_BASES=1
# builds on local stand-ins instead, made under their own names by .ci/build-base-images.sh (root,
# Debian; for hosts without a registry, such as the CI's), which also names them.
OFFLINE_BASES ?=
STANDIN_BASES = $(shell bash .ci/build-base-images.sh --print-tags)
WHEEL_PIP = $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PYTHON) -m pip)
# Compose resolves a relative bind-mount path against the compose file's dir and takes a bare name
# for a volume: hand it an absolute MODEL_DIR.
DOCKER_ENV = MODEL_DIR=$(if $(MODEL_DIR),$(abspath $(MODEL_DIR)),) \
    $(if $(filter 1,$(OFFLINE_BASES)),$(STANDIN_BASES),)

.PHONY: docker-engine
docker-engine: ## Start a Docker engine on a Debian host without systemd (apt-installs docker.io if missing; root; CI)
	bash .ci/docker-engine.sh

.PHONY: docker-bases
docker-bases: ## Make sure the base images exist: pulled (PYTHON_IMAGE, DEBIAN_IMAGE), or with OFFLINE_BASES=1 local base images built offline
	@timeout 10 docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers 'docker info': start yours (e.g. systemctl start docker; on a Debian host without systemd, as root: make docker-engine)" >&2; exit 1; }
ifeq ($(OFFLINE_BASES),1)
	bash .ci/build-base-images.sh
endif
	@images="$$($(DOCKER_ENV) $(COMPOSE) config | sed -nE 's/^ *(PYTHON|DEBIAN)_IMAGE: *//p' | tr -d "'\"" | sort -u)"; \
	[ -n "$$images" ] || { echo "error: '$(COMPOSE) config' names no PYTHON_IMAGE/DEBIAN_IMAGE build argument" >&2; exit 1; }; \
	for image in $$images; do \
	    label="$$(docker image inspect -f '{{index .Config.Labels "org.sentiment.standin"}}' $$image 2>/dev/null)"; \
	    if [ "$$label" = 1 ] && [ "$${image%%/*}" = "$$image" ]; then \
	        echo "error: $$image on this host is a local stand-in that an earlier version of this project built" \
	             "under the official name; remove it (docker image rm $$image) so that the official image is" \
	             "pulled, or build on stand-ins: make docker-up OFFLINE_BASES=1" >&2; \
	        exit 1; \
	    fi; \
	    docker image inspect $$image >/dev/null 2>&1 && continue; \
	    echo "pulling $$image"; \
	    docker pull --quiet $$image >/dev/null || { \
	        echo "error: could not pull $$image (docker's message above). Without a registry, build on local" \
	             "stand-ins instead: make docker-up OFFLINE_BASES=1 (debootstraps sentiment-local/* images; root," \
	             "Debian), or set PYTHON_IMAGE / DEBIAN_IMAGE to base images this host has" >&2; \
	        exit 1; \
	    }; \
	done

.PHONY: docker-wheels
docker-wheels: ## Put this machine's CPU torch wheel into wheels/ for offline image builds (from pip's local find-links, or with TORCH_INDEX_URL=)
	@mkdir -p wheels; \
	if ls wheels/torch-$(TORCH_VERSION)*_$$(uname -m).whl >/dev/null 2>&1; then \
	    echo "wheels/ already holds $$(cd wheels && ls torch-$(TORCH_VERSION)*_$$(uname -m).whl)"; \
	elif $(WHEEL_PIP) download --quiet --no-deps --no-index torch==$(TORCH_VERSION) -d wheels >/dev/null 2>&1; then \
	    echo "wheels/: copied $$(cd wheels && ls torch-$(TORCH_VERSION)*_$$(uname -m).whl) from pip's local find-links"; \
	elif [ -z "$(TORCH_INDEX_URL)" ]; then \
	    $(WHEEL_PIP) download --quiet --no-deps torch==$(TORCH_VERSION) -d wheels; \
	else \
	    echo "wheels/: no local torch wheel; the image build installs torch from $(TORCH_INDEX_URL)"; \
	fi

.PHONY: docker-up
docker-up: docker-bases docker-wheels ## Build and start the stack detached, wait until healthy (SCALE=2, TORCHSERVE_SCALE=1, HTTP_PORT=8080, MODEL_DIR)
	$(DOCKER_ENV) $(COMPOSE) up -d --build --scale app=$(SCALE) --scale torchserve=$(TORCHSERVE_SCALE) || { $(COMPOSE) ps; $(COMPOSE) logs --tail=40; exit 1; }
	@nginx="$$($(COMPOSE) ps -q nginx)"; deadline=$$((SECONDS + $(DOCKER_WAIT_S))); \
	until [ "$$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' $$nginx 2>/dev/null)" = healthy ]; do \
	    if [ $$SECONDS -ge $$deadline ]; then \
	        $(COMPOSE) ps; $(COMPOSE) logs --tail=40; \
	        echo "error: the stack was not healthy within $(DOCKER_WAIT_S) s (logs above)" >&2; exit 1; \
	    fi; \
	    sleep 1; \
	done; \
	$(COMPOSE) ps; \
	echo "ready: http://127.0.0.1:$${HTTP_PORT:-8080}/   (make docker-down to remove it)"

.PHONY: docker-down
docker-down: ## Remove the stack's containers, networks and volumes (the model store and HF cache too)
	$(DOCKER_ENV) $(COMPOSE) down -v --remove-orphans

.PHONY: docker-scale-workers
docker-scale-workers: ## Scale the workers of every TorchServe container of the Compose stack: make docker-scale-workers N=2
	@for container in $$($(COMPOSE) ps -q torchserve); do \
	    docker exec $$container python -m tools.scale_workers $(N) || exit 1; \
	done

# The upgrade tool's steps: in each TorchServe container (docker exec: the management API is a
# socket there) and, for the model store's writes, in a one-shot container of the `upgrade`
# service (deploy/switch-model.sh).
DOCKER_SWITCH = $(DOCKER_ENV) COMPOSE="$(COMPOSE)" $(if $(CHECK_DATA),CHECK_DATA=$(abspath $(CHECK_DATA)),) \
    bash deploy/switch-model.sh

.PHONY: docker-model-upgrade
docker-model-upgrade: ## Compose: switch to MODEL_DIR's model if it passes the check (CHECK_DATA=dev.tsv)
	@[ -n "$(MODEL_DIR)" ] || { echo "error: give MODEL_DIR=<a Hugging Face model dir>" >&2; exit 1; }
	$(DOCKER_SWITCH) upgrade $(UPGRADE_ARGS)

.PHONY: docker-model-rollback
docker-model-rollback: ## Compose: switch back to the model the last upgrade or rollback replaced
	$(DOCKER_SWITCH) rollback $(UPGRADE_ARGS)

.PHONY: test-docker
test-docker: install-dev ## Run the Docker tests only (builds the images, starts a private stack on free ports)
	$(BIN)/python -m pytest tests/docker

.PHONY: test-clean-machine
test-clean-machine: install-dev ## Run README's quick start as written in fresh plain-Debian containers, as root and as a sudo user (logs in test-artifacts/)
	$(BIN)/python -m pytest tests/docker/test_clean_machine.py

# ------------------------------------------------------------------------------ Kubernetes GPU overlay
# deploy/kubernetes/overlays/gpu runs GPU_MODEL_IMAGE: the CUDA TorchServe image plus a torch archive
# of its own. The archive `make mar` builds by default is ONNX, which runs on the CPU only (the
# onnxruntime wheel has no CUDA): a GPU pod must never get it. build.sh refuses it (REQUIRE_RUNTIME).
GPU_TORCHSERVE_IMAGE ?= sentiment-torchserve:cuda
GPU_MODEL_IMAGE ?= sentiment-torchserve-model:cuda
GPU_MODEL_STORE ?= model-store/gpu
GPU_PRECISION ?= fp32

.PHONY: gpu-model-image
gpu-model-image: install ## Build the GPU overlay's model image: a torch archive (GPU_PRECISION=fp32|bf16) on GPU_TORCHSERVE_IMAGE
	RUNTIME=torch PRECISION=$(GPU_PRECISION) MODEL_STORE=$(GPU_MODEL_STORE) $(BIN)/python -m tools.build_mar
	TORCHSERVE_IMAGE=$(GPU_TORCHSERVE_IMAGE) MODEL_IMAGE=$(GPU_MODEL_IMAGE) REQUIRE_RUNTIME=torch \
		bash deploy/model-image/build.sh $(GPU_MODEL_STORE)/sentiment.mar

# ------------------------------------------------------------------------ Kubernetes model switch
# deploy/kubernetes/overlays/model-store (the store on a ReadWriteMany claim) only; kubectl's current
# context and NAMESPACE (sentiment). The archive is built here, then streamed into the cluster.
K8S_CANDIDATE_STORE ?= model-store/k8s-candidate

.PHONY: k8s-model-upgrade
k8s-model-upgrade: install ## Kubernetes (overlays/model-store): switch every TorchServe pod to MODEL_DIR's model if it passes the check
	@[ -n "$(MODEL_DIR)" ] || { echo "error: give MODEL_DIR=<a Hugging Face model dir>" >&2; exit 1; }
	MODEL_STORE=$(K8S_CANDIDATE_STORE) $(BIN)/python -m tools.build_mar
	$(if $(CHECK_DATA),CHECK_DATA=$(abspath $(CHECK_DATA)),) \
	    bash deploy/kubernetes/model-upgrade.sh upgrade $(K8S_CANDIDATE_STORE)/sentiment.mar $(UPGRADE_ARGS)

.PHONY: k8s-model-rollback
k8s-model-rollback: ## Kubernetes (overlays/model-store): switch every TorchServe pod back to the model the last switch replaced
	$(if $(CHECK_DATA),CHECK_DATA=$(abspath $(CHECK_DATA)),) bash deploy/kubernetes/model-upgrade.sh rollback $(UPGRADE_ARGS)

# ------------------------------------------------------------------------------------------- Swarm
# deploy/swarm/stack.yml on a one-node swarm (or the swarm this engine is in); the logic is in
# deploy/swarm/swarm.sh. The TorchServe image carries the .mar (deploy/model-image), built by `mar`,
# and seeds each node's model-store volume, which swarm-model-upgrade writes.
STACK ?= sentiment
APP ?=
WORKERS ?=
SWARM_ENV = $(DOCKER_ENV) STACK=$(STACK) COMPOSE="$(COMPOSE)" APP=$(APP) WORKERS=$(WORKERS) \
    $(if $(CHECK_DATA),CHECK_DATA=$(abspath $(CHECK_DATA)),)

.PHONY: swarm-up
swarm-up: docker-bases docker-wheels mar ## Deploy the stack on Swarm (inits a one-node swarm if none), wait until serving (HTTP_PORT=8080, MODEL_DIR)
	$(SWARM_ENV) bash deploy/swarm/swarm.sh up

.PHONY: swarm-scale
swarm-scale: ## Scale the Swarm stack: make swarm-scale APP=3 (facade replicas) WORKERS=2 (TorchServe workers)
	$(SWARM_ENV) bash deploy/swarm/swarm.sh scale

.PHONY: swarm-model-upgrade
swarm-model-upgrade: ## Swarm: switch this node's TorchServe tasks to MODEL_DIR's model if it passes the check (CHECK_DATA=dev.tsv)
	@[ -n "$(MODEL_DIR)" ] || { echo "error: give MODEL_DIR=<a Hugging Face model dir>" >&2; exit 1; }
	$(SWARM_ENV) bash deploy/swarm/swarm.sh model-upgrade $(UPGRADE_ARGS)

.PHONY: swarm-model-rollback
swarm-model-rollback: ## Swarm: switch this node's TorchServe tasks back to the model the last upgrade or rollback replaced
	$(SWARM_ENV) bash deploy/swarm/swarm.sh model-rollback $(UPGRADE_ARGS)

.PHONY: swarm-down
swarm-down: ## Remove the Swarm stack; leaves the swarm again if swarm-up created it
	$(SWARM_ENV) bash deploy/swarm/swarm.sh down
