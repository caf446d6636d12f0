"""One LoRA Stage II step under ZeRO-3, for tests/test_lora.py (torchrun, 1 or 2 gloo ranks on
CPU): the policy loaded partitioned from a folder (engine.zero3_init) with an adapter added,
the reference its adapter off; each rank takes its share of the episodes, generates from the
reference (synced across ranks) and runs one train_step; rank r writes OUT_PREFIX.r.json with
the KL at step 0, the reference's tokens and the adapter after the step, gathered whole.

    torchrun --nproc_per_node W tests/lora_ranks.py IN.json OUT_PREFIX
"""
from __future__ import annotations

import json
import sys

import torch


def main(in_path: str, out_prefix: str) -> None:
    import deepspeed

    from selfcorrect import config, rollout
    from selfcorrect.records import Problem
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import loop

    spec = json.loads(open(in_path).read())
    cfg = config.from_dict(spec["config"])
    eps = [rollout.Episode(Problem(id="p", task="math", prompt="?", answer="1"), i,
                           rollout.Turn(p1, y1, "", False), rollout.Turn(p2, y2, "", False))
           for i, (p1, y1, p2, y2) in enumerate(spec["episodes"])]
    world = loop.world_size()
    share = len(eps) // world
    engine, reference, tok = ds_engine.policy_and_reference(
        cfg, spec["model"], spec["model"], micro_batch_size=share)
    rank = engine.global_rank
    mine = eps[rank * share:(rank + 1) * share]
    turns = rollout.generate(reference, tok, spec["prompts"], temperature=1.0, max_new_tokens=6,
                             batch_size=len(spec["prompts"]), synced_gpus=world > 1, seed=0)
    k = cfg.train.samples_per_problem
    r = torch.tensor([float(i % 2) for i in range(len(eps))])[rank * share:(rank + 1) * share]
    stats = loop.train_step(engine, reference, mine, r.view(-1, k), (1 - r).view(-1, k), stage=2,
                            train=cfg.train, pad_id=tok.pad_token_id)
    adapter = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}
    with deepspeed.zero.GatheredParameters(list(adapter.values())):
        weights = {n: p.detach().flatten().tolist() for n, p in adapter.items()}
    partitioned = all(hasattr(p, "ds_id") for p in engine.module.parameters())
    with open(f"{out_prefix}.{rank}.json", "w") as f:
        json.dump({"kl_t1": stats["kl_t1"], "kl_t2": stats["kl_t2"], "adapter": weights,
                   "generated": [t.ids for t in turns], "partitioned": partitioned}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
