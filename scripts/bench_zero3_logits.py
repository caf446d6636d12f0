"""Logits memory of one ZeRO-3 scoring pass (forward + backward), chunked vs whole.

A GPT-2-shaped model with Qwen2.5's vocabulary (151,936) and 2 small layers, in a one-rank
ZeRO-3 engine on CPU; 8 rows of 16 prompt + 256 scored tokens. Two modes, each in its own
process (peak RSS is per process):

    whole    the forward's own logits [rows, tokens, vocab], then a chunked log-softmax
             (what scoring.score did under ZeRO-3 before the projection was chunked there)
    chunked  scoring.score: the head called per chunk of CHUNK_BYTES of fp32 logits,
             each recomputed in the backward pass

Prints the largest tensor the head produced, the peak RSS growth over the pass and the
summed log-prob (the same in both modes). About a minute on one core.

Usage: python scripts/bench_zero3_logits.py
"""
from __future__ import annotations

import resource
import subprocess
import sys

VOCAB, ROWS, PROMPT, SCORED = 151_936, 8, 16, 256


def measure(mode: str) -> str:
    import torch
    from torch.utils.checkpoint import checkpoint
    from transformers import GPT2Config, GPT2LMHeadModel

    from selfcorrect import config
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import objectives as obj
    from selfcorrect.train import scoring

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=64,
                                       n_layer=2, n_head=4))
    engine = ds_engine.build(model, config.load("tiny", overrides=["train.zero_stage=3"]).train,
                             micro_batch_size=ROWS)
    packed = obj.pack([(torch.randint(0, VOCAB, (PROMPT,)).tolist(),
                        torch.randint(0, VOCAB, (SCORED,)).tolist()) for _ in range(ROWS)], 0)
    made = []
    engine.module.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: made.append(out.numel()))
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "whole":
        picked = packed.mask.bool()
        logits = engine(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                        position_ids=packed.position_ids, logits_to_keep=packed.keep,
                        use_cache=False).logits[:, :-1][picked].float()
        targets, per = packed.targets[picked], scoring.CHUNK_BYTES // (4 * VOCAB)
        logp = sum(checkpoint(scoring._chunk, lambda x: x, logits[s:s + per],
                              targets[s:s + per], 1.0, use_reentrant=False)[0].sum()
                   for s in range(0, len(targets), per))
    else:
        logp = scoring.score(engine, packed, 1.0).sum()
    engine.backward(logp)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
    return (f"{mode:8s} largest logits {max(made):,} elements ({max(made) * 4 / 2**20:.0f} MiB "
            f"fp32), peak RSS growth {grown:.0f} MiB, sum log-prob {logp.item():.4f}")


def main() -> None:
    if len(sys.argv) > 1:
        print(measure(sys.argv[1]))
        return
    for mode in ("whole", "chunked"):
        out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True,
                             check=True).stdout
        print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
