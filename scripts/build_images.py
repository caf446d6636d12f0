"""Build (and push) the container images, tagged `<registry>/<image>:<package version>`.

    .venv/bin/python scripts/build_images.py --registry us-docker.pkg.dev/p/r --push
    .venv/bin/python scripts/build_images.py --dry-run      # print the commands only

Image names and Dockerfiles come from selfcorrect.images (the one place); builds run from
the repository root. Needs a running Docker engine (none on the development machines).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(registry: str | None, names: list[str], push: bool,
             platform: str | None) -> list[list[str]]:
    if registry:
        os.environ["SELFCORRECT_REGISTRY"] = registry
    from selfcorrect import images

    cmds = []
    for name in names or list(images.IMAGES):
        if name not in images.IMAGES:
            raise SystemExit(f"unknown image {name!r}; images: {', '.join(images.IMAGES)}")
        tag = images.image(name)
        build = ["docker", "build", "-f", images.IMAGES[name], "-t", tag]
        cmds.append(build + (["--platform", platform] if platform else []) + ["."])
        if push:
            cmds.append(["docker", "push", tag])
    return cmds


def engine_problem() -> str | None:
    """Why docker cannot build here, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if done.returncode != 0:
        return "no Docker engine answers (`docker info` failed: " + \
               (done.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", help="e.g. ghcr.io/you (default: $SELFCORRECT_REGISTRY or "
                                      "ghcr.io/selfcorrect)")
    p.add_argument("--push", action="store_true", help="push after building")
    p.add_argument("--only", action="append", default=[], metavar="IMAGE",
                   help="build only this image (repeatable)")
    p.add_argument("--platform", help="e.g. linux/amd64 when building on another architecture")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    cmds = commands(args.registry, args.only, args.push, args.platform)
    if args.dry_run:
        for c in cmds:
            print(" ".join(c))
        return 0
    problem = engine_problem()
    if problem:
        print(f"cannot build images: {problem}. Run this on a machine with Docker, or use "
              "--dry-run to see the commands.", file=sys.stderr)
        return 2
    for c in cmds:
        print("+", " ".join(c), flush=True)
        if subprocess.run(c, cwd=ROOT).returncode != 0:
            print(f"failed: {' '.join(c)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
