# Trainer: CUDA, torch, DeepSpeed, transformers and the package: training and every step that
# runs the model (generation, the sampling study, materialising the base model). GPU runs use bf16.
# UNVERIFIED ON GPU: built and run here on CPU only (`make images-local`: Debian base, CPU torch).
# BASE_IMAGE: the CUDA devel image (DeepSpeed JIT-builds its GPU ops against its toolkit), or
#   any Debian/Ubuntu image with Python 3.11 and a pip on PATH that may install.
# TORCH_SOURCE: pip options that find torch==2.13.0 (default: the CUDA 12.8 wheel index).
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
