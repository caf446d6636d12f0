# Light image for data prep, gates and evaluation (CPU). Tag: the package version.
# Build from the repo root: docker build -f containers/base.Dockerfile -t <registry>/selfcorrect-base:<version> .
FROM python:3.11.7-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WORKDIR /opt/selfcorrect
COPY containers/requirements.lock containers/requirements.lock
# The CPU build of torch, so the light image never carries CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c containers/requirements.lock -r containers/requirements.lock
COPY pyproject.toml README.md ./
COPY selfcorrect selfcorrect
COPY components components
COPY pipelines pipelines
COPY schemas schemas
RUN pip install --no-deps . && python -m selfcorrect.assets fetch-demo-model /opt/selfcorrect/assets
