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
#  - Dask (Beam's DaskRunner): the scheduler and the workers run this image with the command
#    `dask scheduler` / `dask worker tcp://SCHEDULER:8786 --nthreads 1` (dask and distributed
#    come from the lock: the package's `dask` extra, which scripts/lock_images.py locks).
# The BASE_IMAGE tag must equal the apache-beam version pinned in requirements.lock: Dataflow
# refuses an SDK image whose Beam version differs from the submitting client's.
# `make images-local` builds it on the local Debian base instead (no registry here): that
# image runs the KFP step, not a Dataflow worker (no Beam boot entrypoint).
# util-linux provides `unshare` (network/PID/user namespaces for the code sandbox); where the
# container runtime's seccomp profile refuses user namespaces, verdicts say
# `code-sandbox[network]`. For untrusted code at scale, run this image under gVisor.
ARG BASE_IMAGE=apache/beam_python3.11_sdk:2.77.0

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
# (the lines above are base.Dockerfile's: on one base image the builds share those layers)
RUN if ! command -v unshare >/dev/null; then apt-get update \
      && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*; fi

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
# The image can run a Dask worker that executes the Beam step (checked at build time).
RUN dask worker --help >/dev/null && python3 -c "import apache_beam.runners.dask.dask_runner"
# KFP sets no working directory: the image's must hold nothing importable.
WORKDIR /
# The tag the compiled pipeline names this image by, recorded for selfcorrect.images.tag()
# (scripts/build_images.py passes it; an installed package knows only its bare version).
ARG IMAGE_TAG=""
RUN [ -z "$IMAGE_TAG" ] || echo "$IMAGE_TAG" > "$(python3 -c 'import os, selfcorrect; print(os.path.dirname(selfcorrect.__file__))')/IMAGE_TAG"
# Beam's boot entrypoint stays: the image works as a Dataflow worker; KFP overrides the command.
