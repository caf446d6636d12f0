"""What each speed-up of a Stage II step buys, measured on and off in one run.

The bench-compare setting (SmolLM2-135M-Instruct in fp32, 2 problems x 4 samples x 2 attempts,
64 new tokens, temperature 1.0). Each pair runs alternately (on, off, on, off, ...) after a
warm-up; medians in seconds:

  generation (one step's rollouts; the same seed on both sides):
    packed linears      selfcorrect.packed_linear vs plain matmuls (SELFCORRECT_PACKED_LINEAR=0)
    KV-cache attempt 2  attempt 2 continues attempt 1's cache vs encodes its prompt afresh
    shared prefill      the k samples of a problem prefill its prompt once vs k times
  update (on one step's episodes: reference forward, policy forward + backward, no optimiser step):
    one row per episode [x, y1, p, y2] vs attempt 1's row [x, y1] scored again on its own
    shared prompts      x encoded once per problem vs once per episode
    micro-batches by length (2 micro-batches) vs in problem order

Usage: python scripts/bench_gains.py [--repeats 3] [--problems 2] [--samples 4] [--new-tokens 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def alternate(name: str, on, off, repeats: int) -> tuple[float, float]:
    """Median seconds of on() and off(), run alternately after one warm-up each."""
    on(), off()
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for side, fn in ((True, on), (False, off)):
            t0 = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - t0)
    a, b = statistics.median(times[True]), statistics.median(times[False])
    print(f"{name:<34} {a:>8.2f} {b:>8.2f} {b / a:>7.2f}x {100 * (b - a) / b:>6.1f}%", flush=True)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    from bench_common import model_folder

    from selfcorrect import config, models, rollout
    from selfcorrect.data.prepare import prepare
    from selfcorrect.train import loop, scoring
    from selfcorrect.train import objectives as obj

    cfg = config.load("demo", overrides=[
        "model.source=hf", f"model.path={model_folder(config.load('demo'))}",
        f"train.max_new_tokens={args.new_tokens}", "train.temperature=1.0"])
    policy, tok = models.load(cfg.model)
    reference = models.load(cfg.model)[0].requires_grad_(False)
    batch = [p for p in prepare(cfg.data)[0] if p.split == "train"][:args.problems]
    pad = tok.pad_token_id

    def rollouts(**kw):
        torch.manual_seed(0)
        return rollout.two_attempts(policy, tok, batch, samples=args.samples, temperature=1.0,
                                    max_new_tokens=args.new_tokens,
                                    batch_size=args.problems * args.samples, **kw)

    def with_env(value):
        def run():
            os.environ["SELFCORRECT_PACKED_LINEAR"] = value
            try:
                rollouts()
            finally:
                os.environ.pop("SELFCORRECT_PACKED_LINEAR")
        return run

    episodes = rollouts()
    tokens = sum(len(t.ids) for e in episodes for t in (e.first, e.second))

    def update(batches):
        """Reference forward, policy forward + backward over these packings."""
        def run():
            for packed in batches:
                with torch.no_grad():
                    scoring.score(reference, packed, 1.0)
                logp = scoring.score(policy, packed, 1.0)
                (logp * packed.mask).sum().backward()
            policy.zero_grad(set_to_none=True)
        return run

    one_row = scoring.pack_episodes(episodes, pad)[0]
    shared = scoring.pack_episodes(episodes, pad, share_prompts=True)[0]
    first_rows = obj.pack([(e.first.prompt_ids, e.first.ids) for e in episodes], pad)
    by_length = [scoring.pack_episodes([episodes[i] for i in b], pad)[0]
                 for b in loop.micro_batches(episodes, 2)]
    in_order = [scoring.pack_episodes([episodes[i] for i in b], pad)[0]
                for b in loop.micro_batches(episodes, 2, by_length=False)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; "
          f"{args.problems} problems x {args.samples} samples x 2 attempts, {tokens} tokens "
          f"generated; medians of {args.repeats}, alternating\n")
    head = f"{'change':<34} {'on s':>8} {'off s':>8} {'speed-up':>8} {'saved':>6}"
    print(head + "\n" + "-" * len(head))
    alternate("packed linears (generation)", with_env("1"), with_env("0"), args.repeats)
    alternate("KV-cache attempt 2 (generation)", rollouts, lambda: rollouts(reuse_cache=False),
              args.repeats)
    alternate("shared prefill (generation)", rollouts, lambda: rollouts(share_prefill=False),
              args.repeats)
    alternate("one row per episode (update)", update([one_row]), update([one_row, first_rows]),
              args.repeats)
    alternate("shared prompts (update)", update([shared]), update([one_row]), args.repeats)
    alternate("micro-batches by length (update)", update(by_length), update(in_order),
              args.repeats)


if __name__ == "__main__":
    main()
