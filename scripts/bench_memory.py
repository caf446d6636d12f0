"""Peak memory of one Stage II step on the demo model, every weight trained vs LoRA, side by side.

Each variant runs in a process of its own (so each peak is its own): the demo model
(SmolLM2-135M-Instruct, dequantised to fp32 and saved once, as bench-compare does) is loaded
as run_stage loads it (engine.policy_and_reference: full = a policy engine and a frozen
reference copy; LoRA = one model with an adapter, the reference its adapter switched off),
then one Stage II step runs: rollout (--problems x --samples two-attempt episodes, --new-tokens
per attempt), stand-in rewards, loop.train_step. Reported per variant: trainable parameters,
resident memory once the models and engine are built, the process's peak resident memory
(getrusage ru_maxrss) and the step's seconds. On CPU, fp32, torch's Adam.

    python scripts/bench_memory.py [--lora-rank 16] [--new-tokens 16]      # `make bench-memory`
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def stand_in_reward(problem, completion: str) -> float:
    return float(len(completion) % 2 == 0)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def one_variant(args) -> dict:
    from bench_common import model_folder

    from selfcorrect import config
    from selfcorrect.data.prepare import prepare
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import lora, loop

    demo = config.load("demo")
    folder = model_folder(demo)
    cfg = config.load("demo", overrides=[
        "model.source=hf", f"model.path={folder}", f"train.problems_per_step={args.problems}",
        f"train.samples_per_problem={args.samples}", f"train.max_new_tokens={args.new_tokens}",
        f"generate.batch_size={args.problems * args.samples}",
        f"train.lora_rank={args.lora_rank if args.variant == 'lora' else 0}"])
    problems = [p for p in prepare(cfg.data)[0] if p.split == "train"][:args.problems]
    start = rss_mb()
    engine, reference, tok = ds_engine.policy_and_reference(
        cfg, None, None, micro_batch_size=args.problems * args.samples)
    built = rss_mb()
    t0 = time.perf_counter()
    episodes = loop.rollout_step(engine.module, reference, tok, problems, cfg)
    peak_rollout = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r1, r2 = (r.view(args.problems, args.samples) for r in loop.rewards(stand_in_reward, episodes, workers=2))
    loop.train_step(engine, reference, episodes, r1, r2, stage=2, train=cfg.train,
                    pad_id=tok.pad_token_id)
    trainable, total = lora.trainable(engine.module)
    return {"variant": args.variant, "trainable": trainable, "params": total,
            "rss_start_mb": start, "rss_built_mb": built, "step_s": time.perf_counter() - t0,
            "peak_after_rollout_mb": peak_rollout, "rss_end_mb": rss_mb(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(rows: list[dict]) -> str:
    lines = ["| variant | trainable parameters | RSS after build (MiB) | peak after rollout (MiB) "
             "| peak RSS (MiB) | step (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['trainable'] / 1e6:.2f} M of {r['params'] / 1e6:.1f} M | "
                     f"{r['rss_built_mb']:.0f} | {r['peak_after_rollout_mb']:.0f} | "
                     f"{r['peak_mb']:.0f} | {r['step_s']:.1f} |")
    full, small = rows[0], rows[-1]
    if len(rows) == 2:
        lines.append(f"\nLoRA's peak: {small['peak_mb']:.0f} MiB vs {full['peak_mb']:.0f} MiB "
                     f"({100 * (1 - small['peak_mb'] / full['peak_mb']):.0f}% less)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("full", "lora"), help="run one variant here (internal)")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--problems", type=int, default=2)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    args = p.parse_args(argv)
    if args.variant:
        print("RESULT " + json.dumps(one_variant(args)), flush=True)
        return 0
    from bench_common import model_folder

    from selfcorrect import config

    model_folder(config.load("demo"))       # made once here, so no variant's peak includes it
    rows = []
    for variant in ("full", "lora"):
        cmd = [sys.executable, __file__, "--variant", variant, "--lora-rank", str(args.lora_rank),
               "--problems", str(args.problems), "--samples", str(args.samples),
               "--new-tokens", str(args.new_tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not found:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"bench-memory: the {variant} variant failed (exit {out.returncode})")
        rows.append(json.loads(found[-1][len("RESULT "):]))
        print(f"{variant}: peak {rows[-1]['peak_mb']:.0f} MiB", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
