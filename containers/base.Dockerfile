# Light image for data prep, gates and evaluation (CPU). Tag: the package version.
# Build from the repo root (scripts/build_images.py runs this):
#   docker build -f containers/base.Dockerfile -t <registry>/selfcorrect-base:<version> .
# BASE_IMAGE: any image with Python 3.11 and a pip that may install on PATH
#   (`make images-local` passes a Debian bookworm root filesystem: scripts/podman_setup.sh).
# TORCH_SOURCE: pip options that find torch==2.13.0 (default: the CPU wheel index, so this
#   image never carries CUDA; `make images-local` points at the wheel file on the host disk).
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE} AS torch
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# torch alone first (its own layer: a new lock does not reinstall it), then the lock,
# which holds torch's dependencies; the torch pin is satisfied by the build installed here.
RUN pip install --no-deps ${TORCH_SOURCE} torch==2.13.0

# Pins that PyPI has only as C source are built here, with a compiler the image does not keep.
FROM torch AS csource
ARG C_SOURCE_PINS="pycosat"
COPY containers/requirements.lock /tmp/requirements.lock
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
 && { [ -f "$include/Python.h" ] || apt-get install -y --no-install-recommends python3.11-dev; } \
 && pip wheel --use-pep517 --no-deps -c /tmp/requirements.lock --wheel-dir /cwheels \
      ${C_SOURCE_PINS}

FROM torch AS runtime
COPY --from=csource /cwheels /tmp/cwheels
COPY containers/requirements.lock /tmp/requirements.lock
RUN pip install --find-links /tmp/cwheels -c /tmp/requirements.lock -r /tmp/requirements.lock \
 && rm -rf /tmp/requirements.lock /tmp/cwheels

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
