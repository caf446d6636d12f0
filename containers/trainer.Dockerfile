# Trainer: CUDA, torch, DeepSpeed, transformers and the package: training and every step that
# runs the model (generation, the sampling study, materialising the base model). GPU runs use bf16.
# UNVERIFIED ON GPU: built and run here on CPU only (`make images-local`: Debian base, CPU torch).
# BASE_IMAGE: the CUDA devel image (DeepSpeed JIT-builds its GPU ops against its toolkit), or
#   any Debian/Ubuntu image with Python 3.11 and a pip on PATH that may install.
# TORCH_SOURCE: pip options that find torch==2.13.0 (default: the CUDA 12.8 wheel index).
# DS_GPU_OPS: prebuild DeepSpeed's GPU ops (DS_GPU_OP_SWITCHES: FusedAdam, the optimizer of every
#   GPU training step) for TORCH_CUDA_ARCH_LIST (8.0: A100, 9.0: H100/H200) into the image, so no
#   training pod JIT-builds them. auto (default): when BASE_IMAGE has CUDA's compiler (nvcc: a
#   CUDA devel image), else off (the local CPU build); 1: required; 0: off.
#   UNVERIFIED: no build on a CUDA base has run yet (scripts/build_images.py --cuda-base).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

FROM ${BASE_IMAGE} AS runtime
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cu128"
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false
# Python 3.11 from deadsnakes in a venv when the base lacks it (the CUDA image); a compiler
# and Python headers for DeepSpeed's JIT-built ops either way.
RUN apt-get update \
 && if ! command -v python3.11 >/dev/null; then \
      apt-get install -y --no-install-recommends software-properties-common \
      && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
      && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && python3.11 -m venv /opt/venv; fi \
 && apt-get install -y --no-install-recommends python3.11-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH
# torch alone first (its own layer: a new lock does not reinstall it), then the lock,
# which holds torch's dependencies; the torch pin is satisfied by the build installed here.
RUN pip install --no-deps ${TORCH_SOURCE} torch==2.13.0
COPY containers/requirements.lock /tmp/requirements.lock
RUN pip install -c /tmp/requirements.lock -r /tmp/requirements.lock && rm /tmp/requirements.lock
# DS_CPU_OPS=1 (CPU images: `make images-local`): build DeepSpeed's CPU shared-memory comm op
# now, into the image, instead of JIT-building it in every training step (minutes).
ARG DS_CPU_OPS=0
RUN if [ "$DS_CPU_OPS" = 1 ]; then python3 -c "from deepspeed.accelerator import get_accelerator; \
      get_accelerator().create_op_builder('ShareMemCommBuilder').load()"; fi
ARG DS_GPU_OPS=auto
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"
ARG DS_GPU_OP_SWITCHES="DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1"
RUN nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true); \
    case "$DS_GPU_OPS" in \
      0) exit 0 ;; \
      auto) [ -n "$nvcc" ] || exit 0 ;; \
      1) [ -n "$nvcc" ] || { echo "DS_GPU_OPS=1: BASE_IMAGE has no nvcc; use a CUDA devel image" >&2; exit 1; } ;; \
      *) echo "DS_GPU_OPS=$DS_GPU_OPS: use 0, 1 or auto" >&2; exit 1 ;; \
    esac; \
    export CUDA_HOME="$(dirname "$(dirname "$nvcc")")" TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" \
      $DS_GPU_OP_SWITCHES \
 && pip install --no-deps --no-build-isolation --force-reinstall --no-binary deepspeed deepspeed==0.19.8 \
 && python3 -c "from deepspeed.git_version_info import installed_ops as o; \
      assert o['fused_adam'], 'FusedAdam was not prebuilt: ' + repr(o)"

# The package is built into a wheel in a separate stage: the image holds the installed
# package only, never a source tree that `python3 -m` could import ahead of it.
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
# KFP sets no working directory: the image's must hold nothing importable.
WORKDIR /
# The tag the compiled pipeline names this image by, recorded for selfcorrect.images.tag()
# (scripts/build_images.py passes it; an installed package knows only its bare version).
ARG IMAGE_TAG=""
RUN [ -z "$IMAGE_TAG" ] || echo "$IMAGE_TAG" > "$(python3 -c 'import os, selfcorrect; print(os.path.dirname(selfcorrect.__file__))')/IMAGE_TAG"
