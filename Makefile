# RRL feature-caching pipeline. `make help` lists the targets and `make options` the variables.
# Every VAR=value given on the make command line reaches `rrl` as RRL_VAR; the one table of
# options is stages/options.py, and `rrl` refuses a variable it does not know (a typo would
# otherwise run with the default). Make itself uses: FORCE=1 URL= DATA= PYTHON= VENV=.
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
CLI_VARS := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))
$(foreach v,$(CLI_VARS),$(eval export RRL_$(v) := $$($(v))))
export RRL_MAKE_VARS := $(CLI_VARS)
export RRL_DATA := $(DATA)
# The door demos ship in ../shared next to a checkout; other tasks are downloaded (sha-checked).
ifndef DEMOS
export RRL_DEMOS := $(wildcard ../shared/data/adroit-demos/$(or $(TASK),door)-v0_demos.pickle)
endif
RUN_FLAGS = $(if $(filter 1 true yes,$(FORCE)),--force)

.PHONY: help install gl-deps demos render vae rad encode features bc dapg evaluate rollouts probe status cameras distractors \
	inspect options verify push pull experiment probe-zoo evaluate-release report test docs-check test-slow test-all \
	test-gpu lint bench bench-gpu e2e clean

help: ## list targets and variables
	@echo "usage: make <target> [VAR=value ...]"
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "variables (VAR=value): \`make options\` lists them; FORCE=1 redoes the named stage"

install: $(INSTALLED) ## create .venv and install everything (plus GL libraries if missing)

# robomimic is installed without its dependencies: tests/test_robomimic_reader.py needs only its
# file reader, not its training stack (tensorboard, egl_probe, ...).
$(INSTALLED): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory gl-deps
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(VENV)/bin/pip install -q --upgrade pip 2>&1 | { $(QUIET_PIP); }
	set -o pipefail; $(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { $(QUIET_PIP); }
	set -o pipefail; $(VENV)/bin/pip install -q --no-deps -c constraints.txt robomimic termcolor 2>&1 | { $(QUIET_PIP); }
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
	$(RRL) run demos $(RUN_FLAGS)

render: $(INSTALLED) ## render every demo step to an HDF5 episode file (REPLAY=states|open_loop)
	$(RRL) run render $(RUN_FLAGS)

vae: $(INSTALLED) ## train the in-domain VAE encoder on rendered frames; prints its key for WEIGHTS=
	$(RRL) run vae $(RUN_FLAGS)

rad: $(INSTALLED) ## RAD (SAC + random crop) on a DMControl task from pixels; prints its key for ENCODER=rad WEIGHTS=
	$(RRL) run rad $(RUN_FLAGS)

encode: $(INSTALLED) ## encode rendered frames into the Zarr feature store (ENCODER=, WEIGHTS=)
	$(RRL) run encode $(RUN_FLAGS)

features: encode ## the main job: demos -> render -> encode (ENCODER=resnet34)

bc: $(INSTALLED) ## behaviour cloning from cached demo features
	$(RRL) run bc $(RUN_FLAGS)

dapg: $(INSTALLED) ## DAPG from the BC checkpoint (ITERS=, TRAJ=)
	$(RRL) run dapg $(RUN_FLAGS)

evaluate: $(INSTALLED) ## success rate of the trained policy
	$(RRL) run evaluate $(RUN_FLAGS)

rollouts: $(INSTALLED) ## a policy's episodes rendered under distractors (POLICY=dapg EPISODES=50 DISTRACTORS=0,1,2,3)
	$(RRL) run rollouts $(RUN_FLAGS)

probe: $(INSTALLED) ## linear probe: how well the features predict the simulator state (R^2)
	$(RRL) run probe $(RUN_FLAGS)

options: $(INSTALLED) ## the variables (TASK=, ENCODER=, ...): CLI flag, config fields, help
	@$(RRL) options

status: $(INSTALLED) ## each stage: up to date / stale (why) / missing
	@$(RRL) status

distractors: $(INSTALLED) ## contact sheet of the visual distractor levels (TASK= for one task)
	$(RRL) distractors $(if $(filter command line,$(origin TASK)),--task $(TASK))

cameras: $(INSTALLED) ## cameras each task offers
	@$(RRL) cameras

inspect: $(INSTALLED) ## summary of the feature store for the current config
	@$(RRL) inspect

verify: $(INSTALLED) ## check the current config's feature group against its checksums
	@$(RRL) verify

push: $(INSTALLED) ## copy the current config's feature store to URL=s3://bucket/prefix
	$(RRL) push $$($(RRL) key encode) $(URL)

pull: $(INSTALLED) ## fetch the current config's feature store from URL=s3://bucket/prefix
	$(RRL) pull $$($(RRL) key encode) $(URL)

experiment: $(INSTALLED) ## run an experiment's cells on dask (NAME= required, e.g. NAME=smoke BUDGET=smoke|paper; STATUS=1 lists them)
	$(RRL) experiment $(if $(STATUS),status,run) $(NAME)

probe-zoo: $(INSTALLED) ## linear probe of every encoder and stored layer of an experiment, ranked (NAME=zoo BUDGET=smoke)
	$(RRL) experiment probe $(or $(NAME),zoo)

evaluate-release: $(INSTALLED) ## re-evaluate a released door policy on a fresh clone (RELEASE=results/door_vae_motion, N=50 episodes, LEVELS=0 by default)
	$(RRL) evaluate-release $(or $(RELEASE),results/door_vae_motion) --episodes $(or $(N),50) --levels $(or $(LEVELS),0)

report: $(INSTALLED) ## curves and tables of an experiment's finished cells (NAME= required, e.g. NAME=smoke BUDGET=)
	$(RRL) report $(NAME)

test: $(INSTALLED) ## fast test suite (the one CI runs)
	$(PY) -m pytest -q

docs-check: $(INSTALLED) ## every make/rrl command in README.md and docs/ parses; every relative link resolves
	$(PY) -m pytest -q tests/test_docs.py

test-slow: $(INSTALLED) ## heavy tests only (kill -9 and cluster runs, moved workspace, full door data)
	$(PY) -m pytest -q -m slow

test-all: $(INSTALLED) ## every test: fast, slow, gpu and network (the last two skip without CUDA / RRL_NETWORK=1)
	$(PY) -m pytest -q -m "slow or not slow"

test-gpu: $(INSTALLED) ## the CUDA tests only (on a machine with a GPU)
	$(PY) -m pytest -q -m gpu

lint: $(INSTALLED) ## ruff and mypy
	$(VENV)/bin/ruff check pipeline stages tests bench
	$(VENV)/bin/mypy

bench: $(INSTALLED) ## benchmarks (print measured ratios)
	$(PY) bench/encode.py
	$(PY) bench/rollout.py
	$(PY) bench/episodes.py

bench-gpu: $(INSTALLED) ## one table measuring a GPU machine (< 8 min; without CUDA: the CPU parts)
	$(PY) bench/gpu_check.py

E2E_VARS = DATA=$(DATA)/e2e MAX_DEMOS=2 SIZE=64 ENCODER=resnet10t WEIGHTS=random \
	ITERS=2 TRAJ=4 SET="encode.resize=64 encode.crop=56 env.horizon=50 dapg.eval_episodes=2 \
	evaluate.episodes=4 evaluate.video_episodes=1"

e2e: $(INSTALLED) ## tiny end-to-end run of every stage (2 demos, 64 px, resnet10t) in data/e2e
	$(MAKE) --no-print-directory evaluate $(E2E_VARS)
	$(MAKE) --no-print-directory status $(E2E_VARS)

clean: ## remove the workspace outputs (data/*), keeping data/README.md
	find $(DATA) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
