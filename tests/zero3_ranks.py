"""What one rank sees under ZeRO-3, for tests/test_zero3_memory.py (run by torchrun, 2 gloo
ranks on CPU): a model loaded inside engine.zero3_init (its parameters straight after from_pretrained),
the models built as run_stage builds them (engine.policy_and_reference), then

- each model's parameters: the elements of this rank's partitions, the full model's elements,
  and the elements held whole at rest (persistent small parameters) after the passes below;
- the reference's log-probs of the given episodes (scoring.score, as train_step scores them);
- tokens the reference generates (synced across ranks) from the given prompts, seeded;
- the policy's log-probs in chunks of `chunk_tokens` tokens' logits, and the KL of one
  train_step at step 0 (policy == reference) with the largest logits tensor its head made.

    torchrun --nproc_per_node 2 tests/zero3_ranks.py IN.json OUT_PREFIX

IN.json: {"config": RunConfig.to_dict(), "model": folder, "episodes": [[p1, y1, p2, y2], ...],
"prompts": [[ids], ...], "chunk_tokens": n}; rank r writes OUT_PREFIX.r.json.
"""
from __future__ import annotations

import json
import math
import sys

import torch


def elements(model) -> dict:
    params = list(model.parameters())
    return {"full": sum(p.ds_numel for p in params),
            "partition": sum(p.ds_tensor.numel() for p in params),
            "ceil_half": sum(math.ceil(p.ds_numel / 2) for p in params),
            "whole_at_rest": sum(p.data.numel() for p in params),
            "persistent": sum(p.ds_numel for p in params if p.ds_persist),
            "partition_device": sorted({p.ds_tensor.device.type for p in params})}


def main(in_path: str, out_prefix: str) -> None:
    from selfcorrect import config, models, rollout
    from selfcorrect.records import Problem
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import loop, scoring

    spec = json.loads(open(in_path).read())
    cfg = config.from_dict(spec["config"])
    eps = [rollout.Episode(Problem(id="p", task="math", prompt="?", answer="1"), i,
                           rollout.Turn(p1, y1, "", False), rollout.Turn(p2, y2, "", False))
           for i, (p1, y1, p2, y2) in enumerate(spec["episodes"])]
    with ds_engine.zero3_init(ds_engine.ds_config(cfg.train, micro_batch_size=1, gpu=False)):
        loaded = elements(models.load(cfg.model, spec["model"])[0])   # before any engine
    engine, reference, tok = ds_engine.policy_and_reference(
        cfg, spec["model"], spec["model"], micro_batch_size=len(eps))
    packed, _, _ = scoring.pack_episodes(eps, tok.pad_token_id, share_prompts=True)
    with torch.no_grad():
        ref_logp = scoring.score(reference, packed, cfg.train.temperature)
    turns = rollout.generate(reference.module, tok, spec["prompts"], temperature=1.0,
                             max_new_tokens=6, batch_size=len(spec["prompts"]),
                             synced_gpus=True, seed=0)
    vocab = engine.module.config.vocab_size
    scoring.CHUNK_BYTES = int(spec["chunk_tokens"]) * 4 * vocab     # many chunks per row
    with torch.no_grad():
        policy_logp = scoring.score(engine, packed, cfg.train.temperature)
    logits = []
    engine.module.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: logits.append(out.numel()))
    k = cfg.train.samples_per_problem
    r = torch.tensor([float(i % 2) for i in range(len(eps))]).view(-1, k)
    stats = loop.train_step(engine, reference, eps, r, 1 - r, stage=2, train=cfg.train,
                            pad_id=tok.pad_token_id)
    out = {"loaded": loaded, "policy": elements(engine.module), "reference": elements(reference.module),
           "ref_logp": ref_logp.tolist(), "policy_logp": policy_logp.tolist(),
           "reference_zero": reference.config["zero_optimization"], "generated": [t.ids for t in turns],
           "kl_t1": stats["kl_t1"], "kl_t2": stats["kl_t2"], "largest_logits": max(logits),
           "reference_is_engine": reference is not reference.module}
    rank = engine.global_rank
    with open(f"{out_prefix}.{rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
