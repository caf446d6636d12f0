"""`selfcorrect repro` (`make repro`): the paper's Table 2 rows on the testbed, end to end.

Every row starts from the same pretrained testbed model (`make testbed`) and is trained and
evaluated by the functions the pipeline's components call: SCoRe stages by
selfcorrect.train.loop.run_stage (DeepSpeed), STaR and Pair-SFT by selfcorrect.experiments.baselines
(their data built from the base model's own verified attempts, then selfcorrect.train.sft),
evaluation by selfcorrect.evaluate_cli.evaluate_models (rollout, the Beam verification step,
the evaluate metrics with bootstrap intervals). Rows run in-process, one after another:
a kfp.local run per row would add ~100 s of orchestration to each of the ~22 runs.

    base              two-turn prompting with the correction instruction (no training)
    star              SFT on the base model's episodes whose attempt 2 is correct
    pair_sft          SFT on [problem, an incorrect attempt, instruction, a correct attempt]
    single_turn       RL on attempt 1 only (train.single_turn)
    naive_multi_turn  Stage II objective from the base model, alpha = 0
    score_no_stage1   Stage II from the base model, alpha = 10
    score_no_bonus    Stage I, then Stage II with alpha = 0
    score             Stage I, then Stage II (alpha = 10)

Equal budgets: every trained row takes stage1_steps + stage2_steps gradient steps, and
samples (stage1_steps + stage2_steps) * problems_per_step * samples_per_problem episodes
(the SFT rows sample theirs from the base model up front). Each trained row runs for every
seed; results land in <out>/rows/<row>-s<seed>.json, and a re-run skips what is there.
Seeds: the rows of a primary contrast (PRIMARY_ROWS: base, score, naive_multi_turn, star) run
--seeds (default 0-4), the exploratory rows the first three of them (--exploratory-seeds).
Evaluation: greedy (the paper's, the headline) and sampled (eval.sampling_k episodes per
problem at train.temperature), each with the swap control (rollout.swap_control), on the eval
split; `--split dev` evaluates on the dev split instead (into results/repro-dev), which is
where every choice (budgets, learning rates, beta2, Stage I's anchor) is made.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from selfcorrect import config as config_mod

ROWS: dict[str, list[str]] = {
    "base": [],
    "star": [],
    "pair_sft": [],
    "single_turn": ["train.skip_stage1=true", "train.single_turn=true"],
    "naive_multi_turn": ["train.skip_stage1=true", "train.alpha=0"],
    "score_no_stage1": ["train.skip_stage1=true"],
    "score_no_bonus": ["train.alpha=0"],
    "score": [],
}
SFT_ROWS = ("star", "pair_sft")
#: rows in a primary contrast (repro_compare.PRIMARY): 5 seeds by default; the others are exploratory
PRIMARY_ROWS = ("base", "score", "naive_multi_turn", "star")


def row_config(base: config_mod.RunConfig, row: str, seed: int) -> config_mod.RunConfig:
    sets = ROWS[row] + [f"train.seed={seed}"]
    data = base.to_dict()
    for item in sets:
        data = config_mod.merge(data, config_mod.parse_set(item))
    cfg = config_mod.build(config_mod.RunConfig, data)
    if cfg.train.skip_stage1:   # equal budget: Stage II takes Stage I's steps too
        cfg.train.stage2_steps += cfg.train.stage1_steps
        cfg.train.stage1_steps = 0
    return cfg


def train_row(cfg, row: str, base_model: str, problems, workdir: Path) -> tuple[str, dict]:
    """Train one row; returns (model folder, training history per stage)."""
    from selfcorrect.experiments import baselines
    from selfcorrect.train.loop import run_stage

    if row == "base":
        return base_model, {}
    if row in SFT_ROWS:
        out = str(workdir / "model")
        history = baselines.run(cfg, row, base_model, problems, out)
        return out, {"sft": history}
    history = {}
    init = base_model
    if not cfg.train.skip_stage1:
        run_stage(cfg, 1, init_path=base_model, reference_path=base_model, problems=problems,
                  output_dir=str(workdir / "stage1"))
        history["stage1"] = json.loads((workdir / "stage1" / "metrics.json").read_text())["steps"]
        init = str(workdir / "stage1")
    run_stage(cfg, 2, init_path=init, reference_path=base_model, problems=problems,
              output_dir=str(workdir / "model"))
    history["stage2"] = json.loads((workdir / "model" / "metrics.json").read_text())["steps"]
    return str(workdir / "model"), history


def evaluate_row(cfg, name: str, model: str, problems_uri: str, workdir: Path,
                 split: str = "eval", swap: tuple[str, ...] = ("greedy", "sampled")) -> dict:
    """Greedy and sampled evaluation on `split`, with the swap control in the modes `swap` names:
    {"greedy": ..., "sampled": ...}; each holds "outcomes", per episode [problem_id, sample,
    right@t1, right@t2, changed, swap_right@t2, swap_copied] (selfcorrect.rates), which
    selfcorrect.experiments.repro_compare pairs across rows."""
    from selfcorrect.evaluate_cli import evaluate_models

    out = {}
    greedy = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, temperature=0.0))
    out["greedy"] = evaluate_models({name: model}, problems_uri, str(workdir / "eval-greedy"),
                                    greedy, split=split, swap_control="greedy" in swap)[name]
    k = max(2, cfg.eval.sampling_k)
    sampled = dataclasses.replace(cfg, generate=dataclasses.replace(
        cfg.generate, temperature=cfg.eval.sampling_temperature or cfg.train.temperature))
    out["sampled"] = evaluate_models({name: model}, problems_uri, str(workdir / "eval-sampled"),
                                     sampled, samples=k, split=split,
                                     swap_control="sampled" in swap)[name]
    return out


def row_seeds(rows: list[str], seeds: list[int], exploratory: list[int]) -> list[tuple[int, str]]:
    """(seed, row) in the order they run: seed-major, so a partial run holds every row of its
    first seeds; primary rows take `seeds`, the others `exploratory`, base only the first
    (it is not trained: its greedy evaluation has no seed)."""
    plan = []
    for seed in dict.fromkeys([*seeds, *exploratory]):
        for row in rows:
            mine = seeds if row in PRIMARY_ROWS else exploratory
            if seed in mine and (row != "base" or seed == mine[0]):
                plan.append((seed, row))
    return plan


def run(base_cfg, rows: list[str], seeds: list[int], out_dir: Path, *, keep_models: bool = False,
        exploratory_seeds: list[int] | None = None, split: str = "eval",
        swap: tuple[str, ...] = ("greedy", "sampled"), shard: tuple[int, int] = (0, 1)) -> dict:
    """Train and evaluate every (seed, row) of the plan (row_seeds) not done before, then write
    the report. shard (k, n): only every n-th of the plan from the k-th, and no report (the
    process that started the shards writes it: `--jobs`)."""
    from selfcorrect.data.prepare import prepare
    from selfcorrect.records import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    problems, _ = prepare(base_cfg.data)
    problems_uri = str(out_dir / "problems.jsonl")
    write_jsonl(problems_uri, problems)
    train = [p for p in problems if p.split == "train"]
    base_model = base_cfg.model.path
    if not Path(base_model, "config.json").is_file():
        raise FileNotFoundError(f"model.path: {base_model} holds no testbed model; `make testbed` "
                                "builds it (selfcorrect pretrain --preset testbed)")
    (out_dir / "rows").mkdir(exist_ok=True)
    if not any(p.split == split for p in problems):
        raise ValueError(f"repro --split {split}: the data ({base_cfg.data.source}) has no "
                         f"'{split}' problems; splits present: {sorted({p.split for p in problems})}")
    exploratory = seeds[:3] if exploratory_seeds is None else exploratory_seeds
    k, n = shard
    for seed, row in row_seeds(rows, seeds, exploratory)[k::n]:
        done = out_dir / "rows" / f"{row}-s{seed}.json"
        if done.is_file():
            print(f"[repro] {row} seed {seed}: done before, skipped", flush=True)
            continue
        cfg = row_config(base_cfg, row, seed)
        workdir = out_dir / "work" / f"{row}-s{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        t0 = time.perf_counter()
        model, history = train_row(cfg, row, base_model, train, workdir)
        t1 = time.perf_counter()
        result = evaluate_row(cfg, row, model, problems_uri, workdir, split, swap)
        t2 = time.perf_counter()
        record = {"row": row, "seed": seed, "split": split, "train_s": t1 - t0, "eval_s": t2 - t1,
                  "config": cfg.to_dict(), "history": history,
                  "outcomes": {mode: r["outcomes"] for mode, r in result.items()},
                  **{mode: {"summary": r["summary"], "edit_ratios": r["edit_ratios"],
                            "per_difficulty": r["per_difficulty"]}
                     for mode, r in result.items()}}
        done.write_text(json.dumps(record, indent=1))
        g, s = record["greedy"]["summary"], record["sampled"]["summary"]
        print(f"[repro] {row} seed {seed}: greedy t1 {100 * g['accuracy_t1']:.1f} t2 "
              f"{100 * g['accuracy_t2']:.1f} | sampled t1 {100 * s['accuracy_t1']:.1f} t2 "
              f"{100 * s['accuracy_t2']:.1f} | train {t1 - t0:.0f} s, eval {t2 - t1:.0f} s",
              flush=True)
        if not keep_models:
            shutil.rmtree(workdir, ignore_errors=True)
    if n > 1:
        return {}
    from selfcorrect.experiments import repro_report

    return repro_report.write(out_dir, list(ROWS), split=split)


def run_jobs(argv: list[str], jobs: int, out_dir: Path) -> int:
    """`selfcorrect repro` with the same arguments in `jobs` processes, each taking every
    jobs-th row of the plan; their [repro] lines pass through, the rest goes to
    <out>/logs/shard-<k>.log. Returns the first non-zero exit status (0 when all succeeded)."""
    import subprocess
    import threading

    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    rest, skip = [], False
    for a in argv:                          # the same arguments, less --jobs N / --jobs=N
        if not skip and a != "--jobs" and not a.startswith("--jobs="):
            rest.append(a)
        skip = a == "--jobs"
    # each process finds its own port for its in-process DeepSpeed group (engine.py)
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"}
    procs = []
    for k in range(jobs):
        log = open(out_dir / "logs" / f"shard-{k}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "selfcorrect.experiments.repro", *rest, "--shard", f"{k}/{jobs}"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env), log))
    def relay(proc):
        for line in proc.stdout:
            print(line, end="", flush=True)

    threads = [threading.Thread(target=relay, args=(p,)) for p, _ in procs]
    for t in threads:
        t.start()
    codes = [p.wait() for p, _ in procs]
    for t in threads:
        t.join()
    for _, log in procs:
        log.close()
    bad = [(k, c) for k, c in enumerate(codes) if c]
    for k, c in bad:
        print(f"repro: process {k + 1} of {jobs} failed (exit {c}); its log: "
              f"{out_dir / 'logs' / f'shard-{k}.log'}", file=sys.stderr)
    return bad[0][1] if bad else 0


def main(argv: list[str] | None = None) -> int:
    from selfcorrect.cli import _config_args

    p = argparse.ArgumentParser(
        prog="selfcorrect repro",
        description="Reproduce the paper's comparisons (SCoRe against its baselines and "
        "ablations) on the testbed model, over several seeds: writes a table and plots. "
        "Needs the testbed model (`make testbed` or `selfcorrect pretrain`).")
    _config_args(p, default_preset="testbed")
    p.add_argument("--rows", default=",".join(ROWS), help="which methods, comma-separated, "
                   "from: " + ", ".join(ROWS))
    p.add_argument("--seeds", default="0,1,2,3,4",
                   help="training seeds of the primary-contrast rows (" + ", ".join(PRIMARY_ROWS)
                   + "), comma-separated (default: 0,1,2,3,4)")
    p.add_argument("--exploratory-seeds",
                   help="seeds of the other rows (default: the first three of --seeds)")
    p.add_argument("--split", default="eval", choices=("eval", "dev"),
                   help="evaluate on this split: dev for every choice, eval for the committed tables")
    p.add_argument("--output", help="folder for table.md, table.json and plots/ (default: "
                   "results/repro for eval, results/repro-dev for dev)")
    p.add_argument("--swap-control", default="both", choices=("both", "greedy", "none"),
                   help="which evaluations run the swap control (sampled: about 2x its time)")
    p.add_argument("--keep-models", action="store_true", help="keep each trained model "
                   "(several MB each) under --output")
    p.add_argument("--jobs", type=int, default=1, help="run the rows in this many processes "
                   "(one core each with OMP_NUM_THREADS=1; each row's result does not depend "
                   "on which process ran it); their logs go to <output>/logs/")
    p.add_argument("--shard", help=argparse.SUPPRESS)      # k/n: set by --jobs for its processes
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"repro: unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(args.preset, args.config, args.overrides)
        seeds = [int(s) for s in args.seeds.split(",")]
        exploratory = None if args.exploratory_seeds is None else \
            [int(s) for s in args.exploratory_seeds.split(",")]
    except (config_mod.ConfigError, ValueError) as e:
        print(f"config error: {e} (--seeds/--exploratory-seeds take comma-separated integers)",
              file=sys.stderr)
        return 2
    output = args.output or ("results/repro" if args.split == "eval" else "results/repro-dev")
    started = time.perf_counter()
    if args.jobs > 1:
        rc = run_jobs(sys.argv[1:] if argv is None else argv, args.jobs, Path(output))
        if rc:
            return rc
        from selfcorrect.experiments import repro_report

        repro_report.write(Path(output), list(ROWS), split=args.split)
    else:
        shard = tuple(int(x) for x in args.shard.split("/")) if args.shard else (0, 1)
        try:
            run(cfg, rows, seeds, Path(output), keep_models=args.keep_models,
                exploratory_seeds=exploratory, split=args.split, shard=shard,
                swap={"both": ("greedy", "sampled"), "greedy": ("greedy",),
                      "none": ()}[args.swap_control])
        except ValueError as e:
            print(f"repro: {e}", file=sys.stderr)
            return 2
        if args.shard:
            return 0
    print(f"[repro] wrote {output}/table.md, table.json and plots/ in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
