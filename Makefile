# RRL feature-caching pipeline. `make help` lists the targets.
# Variables (all optional): TASK DEMOS DEMOS_SHA256 REPLAY CAMERAS SIZE SHADOWS ENCODER WEIGHTS
# PRECISION STORE SCHEDULER WORKERS OBS_MODE ITERS TRAJ REWARD SEED SET FORCE DATA
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RRL := $(VENV)/bin/rrl
INSTALLED := $(VENV)/.installed
# pip here warns about every missing mirror folder; keep its real messages only.
QUIET_PIP := grep -v '^WARNING: Location' || true

DATA ?= data
TASK ?= door
# The door demos ship in ../shared next to a checkout; other tasks are downloaded (sha-checked).
DEMOS ?= $(wildcard ../shared/data/adroit-demos/$(TASK)-v0_demos.pickle)
ENCODER ?= resnet34

opt = $(if $(strip $(2)),$(1) $(2))
RRL_ARGS = --data $(DATA) --task $(TASK) --encoder $(ENCODER) \
	$(call opt,--demos,$(DEMOS)) $(call opt,--demos-sha256,$(DEMOS_SHA256)) \
	$(call opt,--replay,$(REPLAY)) $(call opt,--cameras,$(CAMERAS)) $(call opt,--size,$(SIZE)) \
	$(if $(SHADOWS),$(if $(filter 1 true yes,$(SHADOWS)),--shadows,--no-shadows)) \
	$(call opt,--max-demos,$(MAX_DEMOS)) $(call opt,--weights,$(WEIGHTS)) \
	$(call opt,--precision,$(PRECISION)) $(call opt,--store,$(STORE)) \
	$(call opt,--scheduler,$(SCHEDULER)) $(call opt,--workers,$(WORKERS)) \
	$(call opt,--obs-mode,$(OBS_MODE)) $(call opt,--iters,$(ITERS)) $(call opt,--traj,$(TRAJ)) \
	$(call opt,--reward,$(REWARD)) $(call opt,--seed,$(SEED)) \
	$(foreach s,$(SET),--set $(s))
RUN_FLAGS = $(if $(filter 1 true yes,$(FORCE)),--force)

.PHONY: help install gl-deps demos render encode features bc dapg evaluate status cameras \
	inspect push pull test test-slow test-all lint bench e2e clean

help: ## list targets and variables
	@echo "usage: make <target> [VAR=value ...]"
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "variables: TASK=$(TASK) ENCODER=$(ENCODER) DEMOS=$(DEMOS) WEIGHTS REPLAY CAMERAS SIZE SHADOWS"
	@echo "           PRECISION STORE SCHEDULER WORKERS OBS_MODE ITERS TRAJ REWARD SEED SET FORCE=1 DATA"

install: $(INSTALLED) ## create .venv and install everything (plus GL libraries if missing)

$(INSTALLED): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory gl-deps
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(VENV)/bin/pip install -q --upgrade pip 2>&1 | { $(QUIET_PIP); }
	set -o pipefail; $(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { $(QUIET_PIP); }
	@touch $@

gl-deps: ## install the Debian GL libraries MuJoCo needs for offscreen rendering, if missing
	@if ldconfig -p | grep -qE 'libEGL_mesa.so|libEGL_nvidia.so|libOSMesa.so'; then \
		echo "GL libraries present"; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing libegl1 libegl-mesa0 libgl1 libosmesa6 (offscreen rendering)"; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1 libosmesa6 >/dev/null \
		|| echo "warning: could not install GL libraries; rendering needs libEGL or libOSMesa"; \
	fi

demos: $(INSTALLED) ## validate the demonstrations (DEMOS=path, else download)
	$(RRL) $(RRL_ARGS) run demos $(RUN_FLAGS)

render: $(INSTALLED) ## render every demo step to an HDF5 episode file (REPLAY=states|open_loop)
	$(RRL) $(RRL_ARGS) run render $(RUN_FLAGS)

encode: $(INSTALLED) ## encode rendered frames into the Zarr feature store (ENCODER=, WEIGHTS=)
	$(RRL) $(RRL_ARGS) run encode $(RUN_FLAGS)

features: encode ## the main job: demos -> render -> encode (ENCODER=resnet34)

bc: $(INSTALLED) ## behaviour cloning from cached demo features
	$(RRL) $(RRL_ARGS) run bc $(RUN_FLAGS)

dapg: $(INSTALLED) ## DAPG from the BC checkpoint (ITERS=, TRAJ=)
	$(RRL) $(RRL_ARGS) run dapg $(RUN_FLAGS)

evaluate: $(INSTALLED) ## success rate of the trained policy
	$(RRL) $(RRL_ARGS) run evaluate $(RUN_FLAGS)

status: $(INSTALLED) ## each stage: up to date / stale (why) / missing
	@$(RRL) $(RRL_ARGS) status

cameras: $(INSTALLED) ## cameras each task offers
	@$(RRL) cameras

inspect: $(INSTALLED) ## summary of the feature store for the current config
	@$(RRL) $(RRL_ARGS) inspect

push: $(INSTALLED) ## copy the current config's feature store to URL=s3://bucket/prefix
	$(RRL) $(RRL_ARGS) push $$($(RRL) $(RRL_ARGS) key encode) $(URL)

pull: $(INSTALLED) ## fetch the current config's feature store from URL=s3://bucket/prefix
	$(RRL) $(RRL_ARGS) pull $$($(RRL) $(RRL_ARGS) key encode) $(URL)

test: $(INSTALLED) ## fast test suite (the one CI runs)
	$(PY) -m pytest -q

test-slow: $(INSTALLED) ## heavy tests only (full door render, end-to-end runs)
	$(PY) -m pytest -q -m slow

lint: $(INSTALLED) ## ruff and mypy
	$(VENV)/bin/ruff check pipeline stages tests bench
	$(VENV)/bin/mypy

bench: $(INSTALLED) ## benchmarks (print measured ratios)
	$(PY) bench/encode.py
	$(PY) bench/rollout.py

E2E_VARS = DATA=$(DATA)/e2e MAX_DEMOS=2 SIZE=64 ENCODER=resnet10t WEIGHTS=random \
	ITERS=2 TRAJ=4 SET="encode.resize=64 encode.crop=56 dapg.horizon=50 dapg.eval_episodes=2 \
	evaluate.episodes=4 evaluate.video_episodes=1"

e2e: $(INSTALLED) ## tiny end-to-end run of every stage (2 demos, 64 px, resnet10t) in data/e2e
	$(MAKE) --no-print-directory evaluate $(E2E_VARS)
	$(MAKE) --no-print-directory status $(E2E_VARS)

clean: ## remove the workspace outputs (data/*), keeping data/README.md
	find $(DATA) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
