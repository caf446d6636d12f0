"""Time the demo pipeline (and, with --fresh, first-time setup in a fresh clone).

Prints wall time per pipeline step, parsed from kfp.local's log, and the total.
Usage: python scripts/bench_run.py [--fresh] [--preset demo] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task|Task) .*?'([\w-]+)'.*?"
                  r"(finished|$)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return time.time() - start


def step_times(log: Path) -> dict[str, float]:
    starts, spans = {}, {}
    for raw in log.read_text(errors="replace").splitlines():
        m = LINE.match(ANSI.sub("", raw))
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%H:%M:%S.%f")
        if m.group(3) == "finished":
            if m.group(2) in starts:
                spans[m.group(2)] = (t - starts[m.group(2)]) % timedelta(days=1)
        else:
            starts.setdefault(m.group(2), t)
    return {k: v.total_seconds() for k, v in spans.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fresh", action="store_true", help="also time `make setup assets` in a fresh clone")
    p.add_argument("--preset", default="demo")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfcorrect-bench-"))
    repo, python = ROOT, sys.executable
    if args.fresh:     # the pipeline then runs in the clone, with the clone's venv and assets
        repo = work / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
        setup = timed(["make", "setup", "assets"], repo, work / "setup.log")
        print(f"first-time setup (make setup assets, fresh clone): {setup:7.1f} s")
        python = str(repo / ".venv" / "bin" / "python")
    cmd = [python, "-m", "selfcorrect.cli", "run", "--preset", args.preset,
           "--set", f"output_dir={work / 'runs'}"]
    for item in args.overrides:
        cmd += ["--set", item]
    total = timed(cmd, repo, work / "run.log")
    for name, secs in sorted(step_times(work / "run.log").items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {secs:7.1f} s")
    print(f"pipeline (selfcorrect run --preset {args.preset}): {total:7.1f} s   log: {work / 'run.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
