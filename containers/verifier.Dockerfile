# Verifier: Apache Beam's own Python SDK image of the pinned version plus the package, so the
# same image serves the pipeline step and Dataflow workers (--sdk_container_image).
#
# How the worker image is chosen (docs/verification.md):
#  - KFP: components/verify_attempts.py runs in this image, named by selfcorrect.images
#    (`<registry>/selfcorrect-verifier:<package version>`, SELFCORRECT_REGISTRY sets the
#    registry; never :latest). Built and pushed by `make images`.
#  - Dataflow: the workers must run the same image, or they cannot unpickle VerifyFn nor
#    import math-verify. selfcorrect.verify.beam.run() passes
#    `--sdk_container_image=<that same name>` when the runner is Dataflow and none is given;
#    an explicit --sdk_container_image wins.
#  - Flink / Spark portable runners: pass `--environment_type=DOCKER
#    --environment_config=<that same name>`.
# The FROM tag must equal the apache-beam version pinned in requirements.lock: Dataflow
# refuses an SDK image whose Beam version differs from the submitting client's.
# util-linux provides `unshare` (network/PID/user namespaces for the code sandbox); where the
# container runtime's seccomp profile refuses user namespaces, verdicts say
# `code-sandbox[network]`. For untrusted code at scale, run this image under gVisor.
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
