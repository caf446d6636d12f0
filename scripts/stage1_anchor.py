"""Choose Stage I's anchor on the dev split (issue 23, docs/testbed.md "Stage I's anchor").

For each candidate (train.stage1_kl, train.beta2) and seed this trains Stage I from the testbed
model on the train split (the testbed preset's budget) and evaluates it greedily on the dev split:
Accuracy@t1 against the base's, and the largest per-token KL of attempt 1 to the base over
Stage I's steps (what the `max_stage1_kl_t1` gate reads). Writes <out>/stage1_anchor.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stage1_anchor.py --candidates token:0.1,token:1
    OMP_NUM_THREADS=1 .venv/bin/python scripts/stage1_anchor.py --candidates token:10 --seeds 1,2

A re-run adds what is not in the JSON yet. What was run for the committed table is in its header.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from selfcorrect import config as config_mod


def greedy_dev(cfg, model: str, problems_uri: str, workdir: Path) -> dict:
    """{"acc_t1", "acc_t2"} in % of `model` on the dev split, greedy."""
    from selfcorrect.evaluate_cli import evaluate_models

    greedy = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, temperature=0.0))
    s = evaluate_models({"m": model}, problems_uri, str(workdir), greedy, split="dev")["m"]["summary"]
    return {"acc_t1": 100 * s["accuracy_t1"], "acc_t2": 100 * s["accuracy_t2"]}


def one(cfg, problems_uri: str, train, workdir: Path, base_model: str) -> dict:
    from selfcorrect.train.loop import run_stage

    t0 = time.perf_counter()
    run_stage(cfg, 1, init_path=base_model, reference_path=base_model, problems=train,
              output_dir=str(workdir / "stage1"))
    steps = json.loads((workdir / "stage1" / "metrics.json").read_text())["steps"]
    t1 = time.perf_counter()
    return {**greedy_dev(cfg, str(workdir / "stage1"), problems_uri, workdir / "eval"),
            "max_kl_t1": max(h["kl_t1"] for h in steps),
            "mean_kl_t1": sum(h["kl_t1"] for h in steps) / len(steps),
            "train_s": t1 - t0, "eval_s": time.perf_counter() - t1}


def _order(key: str) -> tuple:
    """Rows by kind, beta2, seed."""
    if key == "base":
        return ("",)
    cand, seed = key.split(" s")
    kind, beta2 = cand.split(":")
    return (kind, float(beta2), int(seed))


def main() -> None:
    from selfcorrect.data.prepare import prepare
    from selfcorrect.records import write_jsonl

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default="token:0.1,token:1,token:10,sequence:0.1,sequence:1",
                   help="stage1_kl:beta2 pairs, comma-separated")
    p.add_argument("--seeds", default="0", help="train.seed values, comma-separated")
    p.add_argument("--output", default="results/repro-dev")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    base = config_mod.load("testbed", None, args.overrides)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    problems, _ = prepare(base.data)
    (out / "work-anchor").mkdir(exist_ok=True)
    problems_uri = str(out / "work-anchor" / "problems.jsonl")
    write_jsonl(problems_uri, problems)
    train = [q for q in problems if q.split == "train"]
    result_file = out / "stage1_anchor.json"
    results = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if "base" not in results:
        results["base"] = greedy_dev(base, base.model.path, problems_uri, out / "work-anchor")
    todo = [(c, int(s)) for c in args.candidates.split(",") for s in args.seeds.split(",")]
    for cand, seed in todo:
        key = f"{cand} s{seed}"
        if key in results:
            continue
        kind, beta2 = cand.split(":")
        data = config_mod.merge(base.to_dict(), {"train": {"stage1_kl": kind, "seed": seed,
                                                            "beta2": float(beta2)}})
        cfg = config_mod.build(config_mod.RunConfig, data)
        workdir = out / "work-anchor" / key.replace(":", "-").replace(" ", "-")
        shutil.rmtree(workdir, ignore_errors=True)
        results[key] = one(cfg, problems_uri, train, workdir, base.model.path)
        shutil.rmtree(workdir, ignore_errors=True)
        r = results[key]
        print(f"[anchor] {key}: greedy dev Acc@t1 {r['acc_t1']:.1f} (base "
              f"{results['base']['acc_t1']:.1f}), max kl_t1 {r['max_kl_t1']:.4f}, "
              f"train {r['train_s']:.0f} s", flush=True)
        result_file.write_text(json.dumps(results, indent=1))
    result_file.write_text(json.dumps(results, indent=1))
    b = results["base"]["acc_t1"]
    lines = ["# Stage I's anchor, chosen on the dev split (scripts/stage1_anchor.py)", "",
             f"Base greedy dev Accuracy@t1 {b:.1f}. Stage I from the testbed model (train.seed "
             "as given), the testbed preset's budget; greedy evaluation on the 500 dev problems. "
             "kl_t1: Stage I's per-token KL of attempt 1 to the base on its sampled training "
             "episodes, per step (the max is what `gates.max_stage1_kl_t1` reads).", "",
             "| stage1_kl:beta2 seed | Acc@t1 | - base | Acc@t2 | max kl_t1 (nats/token) | mean kl_t1 |",
             "|---|---|---|---|---|---|"]
    for cand, r in sorted(results.items(), key=lambda kv: _order(kv[0])):
        if cand != "base":
            lines.append(f"| {cand} | {r['acc_t1']:.1f} | {r['acc_t1'] - b:+.1f} | "
                         f"{r['acc_t2']:.1f} | {r['max_kl_t1']:.4f} | {r['mean_kl_t1']:.4f} |")
    (out / "stage1_anchor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
