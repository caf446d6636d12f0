# Verifier: Apache Beam's own Python SDK image of the pinned version plus the package, so the
# same image serves the pipeline step and Dataflow workers (--sdk_container_image).
FROM apache/beam_python3.11_sdk:2.77.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/selfcorrect
COPY containers/requirements.lock containers/requirements.lock
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c containers/requirements.lock -r containers/requirements.lock \
 && apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY selfcorrect selfcorrect
COPY components components
COPY pipelines pipelines
COPY schemas schemas
RUN pip install --no-deps .
# Beam's boot entrypoint stays: the image works as a Dataflow worker; KFP overrides the command.
