"""What one rank sees generating under ZeRO-3 on the two paths, for tests/test_zero3_gather.py
(run by torchrun, 2 gloo ranks on CPU): the policy engine built as run_stage builds it, but
configured as a real-sized model behaves (no parameter kept whole, kept for reuse or
prefetched: each layer is gathered when it runs), each rank its own problems and seed, then

- two attempts per problem (rollout.two_attempts), greedy and seeded sampling, packed linear
  kernels off: per layer (synced_gpus, DeepSpeed's hooks gathering each layer per forward) and
  from weights gathered once (gathered.weights); the tokens, and on each path the
  GatheredParameters entries, DeepSpeed's all-gather collectives and the model's forwards;
- the all-gathers of one gather of every parameter on its own (what one gather costs);
- the frozen reference (its engine has no optimizer) generating on both paths;
- greedy generate's logits on both paths with the packed kernels on, and how many layers the
  gathered path packed;
- after the gathered block: the hooks back, the parameters partitioned again, the engine's
  scores of fixed rows unchanged;
- gathered.decide("auto") as is, and with this rank (rank 1) seeing no free memory.

    torchrun --nproc_per_node 2 tests/zero3_gather_ranks.py IN.json OUT_PREFIX

IN.json: {"config": RunConfig.to_dict(), "model": folder, "max_new_tokens": n}; rank r writes
OUT_PREFIX.r.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

import torch

GATHERS = ("all_gather_into_tensor", "all_gather", "allgather_fn", "all_gather_coalesced")


class Counts:
    """DeepSpeed's all-gather collectives (outermost calls) and GatheredParameters entries."""

    def __init__(self):
        import deepspeed.comm as dist
        from deepspeed.runtime.zero.partition_parameters import GatheredParameters

        self.gathers = self.entries = self.depth = 0
        for name in GATHERS:
            setattr(dist, name, self._counted(getattr(dist, name)))
        enter = GatheredParameters.__enter__

        def counted_enter(ctx):
            self.entries += ctx.enabled
            return enter(ctx)

        GatheredParameters.__enter__ = counted_enter

    def _counted(self, fn):
        def wrapper(*args, **kwargs):
            self.gathers += self.depth == 0
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
        return wrapper

    @contextlib.contextmanager
    def counting(self, model):
        """{'gathers', 'entries', 'forwards'} of the block."""
        self.gathers = self.entries = 0
        forwards = []
        hook = model.register_forward_pre_hook(lambda *_: forwards.append(1))
        got = {}
        try:
            yield got
        finally:
            hook.remove()
            got.update(gathers=self.gathers, entries=self.entries, forwards=len(forwards))


def hooks(engine) -> int:
    offload = getattr(engine.optimizer, "parameter_offload", engine.optimizer)
    return len(offload.forward_hooks) + len(offload.backward_hooks)


def main(in_path: str, out_prefix: str) -> None:
    from selfcorrect import config, models, packed_linear, rollout
    from selfcorrect.records import Problem
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train import gathered, scoring

    spec = json.loads(open(in_path).read())
    cfg = config.from_dict(spec["config"])
    def every_layer_partitioned(plain):
        def config(*args, **kwargs):
            out = plain(*args, **kwargs)
            # as at real sizes: no weight kept whole, none kept for reuse, none prefetched
            out["zero_optimization"].update(stage3_param_persistence_threshold=0,
                                            stage3_max_reuse_distance=0,
                                            stage3_prefetch_bucket_size=0)
            return out
        return config

    ds_engine.ds_config = every_layer_partitioned(ds_engine.ds_config)
    ds_engine.reference_config = every_layer_partitioned(ds_engine.reference_config)
    engine, reference, tok = ds_engine.policy_and_reference(cfg, spec["model"], spec["model"],
                                                            micro_batch_size=1)
    rank, model = engine.global_rank, engine.module
    counts = Counts()
    problems = [Problem(id=f"r{rank}p{i}", task="math", answer="1",
                        prompt=f"Rank {rank}: what is {i} + {3 * rank + i * i}?") for i in range(3)]
    kw = dict(samples=2, max_new_tokens=spec["max_new_tokens"], batch_size=4, seed=11 + rank)
    rows = scoring.pack_episodes(
        rollout.two_attempts(model, tok, problems[:1], temperature=1.0, synced_gpus=True, **kw),
        tok.pad_token_id, share_prompts=False)[0]
    with torch.no_grad():
        scores_before = scoring.score(engine, rows, 1.0)
    hooks_before, hooks_before_ref = hooks(engine), hooks(reference)
    out = {"rank": rank, "layers": model.config.num_hidden_layers, "hooks_before": hooks_before}

    os.environ["SELFCORRECT_PACKED_LINEAR"] = "0"
    for temperature in (0.0, 1.0):
        for path in ("per_layer", "gathered"):
            with counts.counting(model) as got:
                with gathered.weights(engine, path == "gathered") as m:
                    eps = rollout.two_attempts(m, tok, problems, temperature=temperature,
                                               synced_gpus=path == "per_layer", **kw)
            got["tokens"] = [[e.first.ids, e.second.ids] for e in eps]
            out[f"{path}@{temperature}"] = got
    with counts.counting(model) as got:
        with gathered.weights(engine, True):
            pass
    out["one_gather"] = got
    for path in ("per_layer", "gathered"):       # the frozen reference: an engine, no optimizer
        with counts.counting(reference.module) as got:
            with gathered.weights(reference, path == "gathered") as m:
                turns = rollout.generate(m, tok, [rollout.first_prompt(tok, p) for p in problems],
                                         temperature=1.0, max_new_tokens=spec["max_new_tokens"],
                                         batch_size=4, seed=5 + rank,
                                         synced_gpus=path == "per_layer")
        got["tokens"] = [t.ids for t in turns]
        out[f"reference_{path}"] = got
    out["reference_hooks"] = [hooks_before_ref, hooks(reference)]

    os.environ["SELFCORRECT_PACKED_LINEAR"] = "1"
    enc = rollout.left_padded([rollout.first_prompt(tok, p) for p in problems], tok)
    settings = rollout.settings(model, tok, temperature=0.0, max_new_tokens=spec["max_new_tokens"])
    settings.output_logits = True
    for path in ("per_layer", "gathered"):
        with gathered.weights(engine, path == "gathered") as m, torch.no_grad(), \
                packed_linear.packed(m, rows=len(problems)) as n_packed:
            gen = m.generate(**enc, generation_config=settings, synced_gpus=path == "per_layer")
        out[f"logits_{path}"] = {"packed": n_packed, "tokens": gen.sequences.tolist(),
                                 "logits": torch.stack(gen.logits, 1).tolist()}

    with torch.no_grad():
        scores_after = scoring.score(engine, rows, 1.0)
    out["hooks_after"] = hooks(engine)
    out["scores_equal"] = torch.equal(scores_before, scores_after)
    out["whole_at_rest"] = sum(p.numel() for p in model.parameters())
    out["decide_auto"] = gathered.decide("auto", engine)
    if rank == 1:
        gathered.free_bytes = lambda device: 0
    out["decide_auto_rank1_full"] = gathered.decide("auto", engine)
    out["decide_never"] = gathered.decide("never", engine)
    with open(f"{out_prefix}.{rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
