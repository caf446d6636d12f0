# Trainer with vLLM (train.rollout_backend=vllm): the trainer image's stack plus vLLM, from its
# own lock, containers/requirements-vllm.lock (vLLM pins its own torch and a transformers
# range, so this image's torch and transformers differ from containers/requirements.lock).
# EXPERIMENTAL, UNVERIFIED ON GPU: never built or run here (vLLM's wheels need CUDA and are
# far over what travels to the GPU machine); docs/vllm.md. Not in selfcorrect.images.IMAGES:
# build it by hand and point the training steps at it:
#   docker build -f containers/trainer-vllm.Dockerfile -t <registry>/selfcorrect-trainer-vllm:<tag> .
# BASE_IMAGE: a CUDA devel image matching vLLM's torch build (CUDA 13 for torch 2.14.0 on PyPI).
ARG BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false VLLM_ENABLE_V1_MULTIPROCESSING=0
# Python 3.11 from deadsnakes in a venv (as in trainer.Dockerfile); a compiler and Python
# headers for DeepSpeed's JIT-built ops.
RUN apt-get update \
 && if ! command -v python3.11 >/dev/null; then \
      apt-get install -y --no-install-recommends software-properties-common \
      && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
      && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && python3.11 -m venv /opt/venv; fi \
 && apt-get install -y --no-install-recommends python3.11-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH
# vLLM's torch first (its own layer), then the whole lock: vllm, deepspeed, transformers and
# the rest of the package's runtime closure, nothing floating.
RUN pip install --no-deps torch==2.14.0
COPY containers/requirements-vllm.lock /tmp/requirements.lock
RUN pip install -c /tmp/requirements.lock -r /tmp/requirements.lock && rm /tmp/requirements.lock

# The package is built into a wheel in a separate stage (as in trainer.Dockerfile).
FROM runtime AS wheel
COPY pyproject.toml README.md /src/
COPY selfcorrect /src/selfcorrect
COPY components /src/components
COPY pipelines /src/pipelines
COPY schemas /src/schemas
RUN pip wheel --no-deps --wheel-dir /wheel /src

FROM runtime
COPY --from=wheel /wheel /tmp/wheel
RUN pip install --no-deps /tmp/wheel/selfcorrect-*.whl && rm -rf /tmp/wheel
WORKDIR /
