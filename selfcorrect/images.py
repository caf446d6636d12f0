"""The one place container images are named: `<registry>/<image>:<package version>`.

Never `:latest`. The registry defaults to the project's and can be changed at compile
time with SELFCORRECT_REGISTRY (e.g. `us-docker.pkg.dev/my-project/selfcorrect`).
"""
from __future__ import annotations

import os

from selfcorrect import __version__

DEFAULT_REGISTRY = "ghcr.io/selfcorrect"
# image name -> Dockerfile under containers/
IMAGES = {
    "selfcorrect-base": "containers/base.Dockerfile",        # data prep, gates, evaluation
    "selfcorrect-trainer": "containers/trainer.Dockerfile",  # CUDA, torch, DeepSpeed
    "selfcorrect-verifier": "containers/verifier.Dockerfile",  # Beam SDK image: Dataflow worker
}


def registry() -> str:
    return os.environ.get("SELFCORRECT_REGISTRY", DEFAULT_REGISTRY).rstrip("/")


def image(name: str) -> str:
    if name not in IMAGES:
        raise KeyError(f"unknown image {name!r}; images: {', '.join(IMAGES)}")
    return f"{registry()}/{name}:{__version__}"
