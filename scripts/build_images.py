"""Build (and push) the container images, tagged `<registry>/<image>:<tag>` (selfcorrect.images).

The tag follows the code (`0.1.0-g<commit>`; `0.1.0` on the release tag) and is recorded in
each image (`--build-arg IMAGE_TAG`), so the code inside names the images of the pipeline it
was compiled with. A tree with uncommitted changes gets `0.1.0-g<commit>.dirty`: built here
(e.g. --local) but never pushed, since a pushed tag must name one content; commit first.

    .venv/bin/python scripts/build_images.py --registry us-docker.pkg.dev/p/r --push
    .venv/bin/python scripts/build_images.py --dry-run      # print the commands only
    .venv/bin/python scripts/build_images.py --local        # `make images-local`: podman, here

Image names and Dockerfiles come from selfcorrect.images (the one place); builds run from
the repository root. The default builds with Docker on each Dockerfile's own base image.
--local builds with podman where no registry is reachable: every image on the local Debian
base (scripts/local_base_image.sh), torch from the CPU wheel file on this disk (found with
`pip download`, so pip's own configuration says where), the host's CA bundle mounted for
pip, and the host's network. Layers are cached by podman: a rebuild after a source change
reruns only the wheel stages.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_BASE = "localhost/selfcorrect-local-base:bookworm"
TORCH = "torch==2.13.0"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WHEELS = ROOT / ".cache" / "wheels"


def commands(registry: str | None, names: list[str], push: bool, platform: str | None,
             engine: str = "docker", extra: list[str] = (),
             trainer_extra: list[str] = ()) -> list[list[str]]:
    if registry:
        os.environ["SELFCORRECT_REGISTRY"] = registry
    from selfcorrect import images

    cmds = []
    for name in names or list(images.IMAGES):
        if name not in images.IMAGES:
            raise SystemExit(f"unknown image {name!r}; images: {', '.join(images.IMAGES)}")
        tag = images.image(name)
        build = [engine, "build", "-f", images.IMAGES[name], "-t", tag,
                 "--build-arg", f"IMAGE_TAG={images.tag()}", *extra,
                 *(trainer_extra if name == "selfcorrect-trainer" else ())]
        cmds.append(build + (["--platform", platform] if platform else []) + ["."])
        if push:
            cmds.append([engine, "push", tag])
    return cmds


def local_torch_wheel(dest: Path = WHEELS) -> Path:
    """The CPU torch wheel from where this machine's pip finds it (no download from PyPI)."""
    found = sorted(dest.glob("torch-2.13.0+cpu-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--only-binary", ":all:", "--dest", str(dest), TORCH], check=True)
        found = sorted(dest.glob("torch-2.13.0+cpu-*.whl"))
    if not found:
        raise SystemExit(f"no CPU build of {TORCH} where pip looks (found "
                         f"{[p.name for p in dest.glob('torch-*')]}); put the "
                         "torch-2.13.0+cpu wheel in pip's find-links")
    return found[0]


def local_args(base: str, wheel: Path) -> list[str]:
    return ["--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", "TORCH_SOURCE=--find-links /wheels",
            "--build-arg", "DS_CPU_OPS=1", "--build-arg", "DS_GPU_OPS=0",
            "-v", f"{wheel.parent}:/wheels:ro",
            "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "--network", "host", "--layers"]


def cuda_args(base: str, arch_list: str) -> list[str]:
    """The trainer's build on a CUDA devel image: DeepSpeed's GPU ops prebuilt (required) for
    these architectures (containers/trainer.Dockerfile; unverified until built on one)."""
    return ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", "DS_GPU_OPS=1",
            "--build-arg", f"TORCH_CUDA_ARCH_LIST={arch_list}"]


def engine_problem(engine: str) -> str | None:
    """Why `engine` cannot build here, or None."""
    if shutil.which(engine) is None:
        return f"the {engine} CLI is not installed"
    done = subprocess.run([engine, "info"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"no {engine} engine answers (`{engine} info` failed: " + \
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
    p.add_argument("--local", action="store_true",
                   help="build with podman on the local Debian base and the CPU torch wheel "
                        "on this disk (no registry needed)")
    p.add_argument("--base-image", default=LOCAL_BASE, help=f"with --local (default {LOCAL_BASE})")
    p.add_argument("--cuda-base", help="the trainer's CUDA devel base image (its GPU ops are "
                                       "prebuilt for --cuda-arch-list; default: the Dockerfile's)")
    p.add_argument("--cuda-arch-list", default="8.0;9.0",
                   help="TORCH_CUDA_ARCH_LIST with --cuda-base (8.0: A100, 9.0: H100/H200)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    engine, extra = "docker", []
    if args.cuda_base and args.local:
        raise SystemExit("--cuda-base builds the GPU trainer; --local builds CPU images here")
    trainer = cuda_args(args.cuda_base, args.cuda_arch_list) if args.cuda_base else []
    if args.local:
        if args.push:
            raise SystemExit("--local images are for this machine (CPU torch, local base): "
                             "not pushed")
        wheel = WHEELS / "torch-2.13.0+cpu.whl" if args.dry_run else local_torch_wheel()
        engine, extra = "podman", local_args(args.base_image, wheel)
    cmds = commands(args.registry, args.only, args.push, args.platform, engine, extra, trainer)
    from selfcorrect import images

    if args.push and images.tag().endswith(".dirty"):
        why = (f"refusing to push tag {images.tag()}: the tree has uncommitted changes, and a "
               "pushed tag must name one content; commit (or stash) them first")
        if not args.dry_run:
            print(f"error: {why}", file=sys.stderr)
            return 2
        print(f"note: without --dry-run: {why}", file=sys.stderr)
    if args.dry_run:
        for c in cmds:
            print(" ".join(c))
        return 0
    problem = engine_problem(engine)
    if problem:
        print(f"cannot build images: {problem}. " + (
            "Run scripts/podman_setup.sh (root) first." if args.local else
            "Run this on a machine with Docker, or use --dry-run to see the commands."),
            file=sys.stderr)
        return 2
    for c in cmds:
        print("+", " ".join(c), flush=True)
        if subprocess.run(c, cwd=ROOT).returncode != 0:
            print(f"failed: {' '.join(c)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
