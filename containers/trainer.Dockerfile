# Trainer: CUDA, torch, DeepSpeed, transformers and the package. GPU runs use bf16.
# UNVERIFIED ON GPU: written and checked on CPU machines; no GPU run has used it yet.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/selfcorrect
COPY containers/requirements.lock containers/requirements.lock
# CUDA 12.8 build of the pinned torch; DeepSpeed JIT-builds its GPU ops against the devel toolkit.
RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
 && pip install -c containers/requirements.lock -r containers/requirements.lock
COPY pyproject.toml README.md ./
COPY selfcorrect selfcorrect
COPY components components
COPY pipelines pipelines
COPY schemas schemas
RUN pip install --no-deps . && python -m selfcorrect.assets fetch-demo-model /opt/selfcorrect/assets
