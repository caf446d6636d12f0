"""Installed size of `pip install selfcorrect` (the light core) and of `selfcorrect[all]`.

Each goes into a fresh venv under a temporary folder, through the lock (the CPU torch here):

    .venv/bin/python scripts/install_sizes.py            # both (the full one takes minutes)
    .venv/bin/python scripts/install_sizes.py --light    # the core only
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*")
               if f.is_file() and not f.is_symlink()) / 2**20


def install(target: str, where: Path) -> tuple[float, int]:
    """(MiB of site-packages, distributions) after installing `target` into a fresh venv."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = str(where / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(REPO / "containers/requirements.lock"), target], check=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout.split()
    return size_mib(next(where.glob("lib/python3*/site-packages"))), len(listed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--light", action="store_true", help="measure the core install only")
    targets = {"pip install selfcorrect": str(REPO)}
    if not ap.parse_args().light:
        targets["pip install 'selfcorrect[all]'"] = f"{REPO}[all]"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, target) in enumerate(targets.items()):
            mib, n = install(target, Path(tmp, f"venv{i}"))
            rows.append((label, mib, n))
            print(f"{label:34s} {mib:8.0f} MiB  {n:4d} distributions", flush=True)
    if len(rows) == 2:
        print(f"light / full: {rows[0][1] / rows[1][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
