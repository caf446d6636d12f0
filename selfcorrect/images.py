"""The one place container images are named: `<registry>/<image>:<tag>`.

The tag follows the code: `0.1.0` on a clean checkout of the release tag v0.1.0,
`0.1.0-g<commit>` on any other commit, `0.1.0-g<commit>.dirty` with uncommitted changes (OCI
tags allow letters, digits, `_`, `.` and `-`, not the `+` of the pipeline version name).
scripts/build_images.py refuses to push a `.dirty` tag: a pushed tag names one content.
Inside an image the package has no git checkout: the tag is recorded at build time in
IMAGE_TAG beside this file (the Dockerfiles write it from the IMAGE_TAG build argument), and
read before git is asked, so the code in an image names the images of the pipeline that
was compiled with it. Outside both (an installed wheel): the bare package version.

Never `:latest`. The registry defaults to the project's; `--registry` on compile, submit
and schedule (or SELFCORRECT_REGISTRY, e.g. `us-docker.pkg.dev/my-project/selfcorrect`)
changes it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
from pathlib import Path

from selfcorrect import __version__

DEFAULT_REGISTRY = "ghcr.io/selfcorrect"
# image name -> Dockerfile under containers/
IMAGES = {
    "selfcorrect-base": "containers/base.Dockerfile",        # data prep, gates, evaluation
    "selfcorrect-trainer": "containers/trainer.Dockerfile",  # CUDA, torch, DeepSpeed
    "selfcorrect-verifier": "containers/verifier.Dockerfile",  # Beam SDK image: Dataflow worker
}
TAG_FILE = Path(__file__).with_name("IMAGE_TAG")
REPO = Path(__file__).resolve().parent.parent
OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def registry() -> str:
    return os.environ.get("SELFCORRECT_REGISTRY", DEFAULT_REGISTRY).rstrip("/")


@contextlib.contextmanager
def use_registry(name: str | None):
    """`--registry`: images are named from `name` inside the block (None: unchanged)."""
    before = os.environ.get("SELFCORRECT_REGISTRY")
    if name:
        os.environ["SELFCORRECT_REGISTRY"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SELFCORRECT_REGISTRY", None)
        else:
            os.environ["SELFCORRECT_REGISTRY"] = before


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_version(repo: str | Path = REPO) -> tuple[str, str | None, bool]:
    """(package version, short commit or None on a release tag / outside git, dirty)."""
    repo = Path(repo)
    commit = _git("rev-parse", "--short=7", "HEAD", cwd=repo)
    if commit is None or not (repo / ".git").exists():      # installed, not a checkout
        return __version__, None, False
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=repo))
    tags = (_git("tag", "--points-at", "HEAD", cwd=repo) or "").split()
    if not dirty and ({__version__, f"v{__version__}"} & set(tags)):
        return __version__, None, False
    return __version__, commit, dirty


def tag_from_git(repo: str | Path = REPO) -> str:
    """The image tag of a checkout: 0.1.0, 0.1.0-g<commit> or 0.1.0-g<commit>.dirty."""
    version, commit, dirty = source_version(repo)
    return version if commit is None else f"{version}-g{commit}" + (".dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def tag() -> str:
    """This code's image tag: the one recorded at image build, else git's, else the version."""
    if TAG_FILE.is_file():
        recorded = TAG_FILE.read_text().strip()
        if not OCI_TAG.fullmatch(recorded):
            raise ValueError(f"{TAG_FILE}: {recorded!r} is no OCI tag; rebuild the image with "
                             "scripts/build_images.py (it passes --build-arg IMAGE_TAG)")
        return recorded
    return tag_from_git()


def image(name: str) -> str:
    if name not in IMAGES:
        raise KeyError(f"unknown image {name!r}; images: {', '.join(IMAGES)}")
    return f"{registry()}/{name}:{tag()}"


def repin(reference: str) -> str:
    """An image reference of ours, named now (the registry may have changed since the
    component was defined: `--registry`); any other image unchanged."""
    name = reference.rsplit("/", 1)[-1].split(":", 1)[0]
    return image(name) if name in IMAGES else reference
