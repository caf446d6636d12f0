"""One SCoRe stage, top to bottom: sample two attempts, reward them, one REINFORCE update.

    for each step:
        P problems (seeded shuffle, cycling over the train problems), P / W per process
        k two-attempt episodes per problem at train.temperature     (rollout.two_attempts)
        r1, r2 from reward_fn per attempt                           (the shared verifier)
        advantages and KL weights for the stage                     (objectives.stage_terms)
        score each episode as one row [x, y1, p, y2] under policy and reference, backward, step
        every train.checkpoint_every steps: a resumable checkpoint      (checkpoint.save)
    save model + tokenizer + resolved_config.json + metrics.json

Resume: when the checkpoint folder (checkpoint.default_uri: <train.checkpoint_uri or
output_dir/checkpoints>/<name>-<fingerprint of settings and data>/stage<N>) holds a checkpoint,
or else train.resume_from names one, run_stage restores model, optimizer, LR schedule, RNG
streams and the problem cursor from the newest one and continues the same trajectory.
train.single_turn trains attempt 1 on r1 only.
train.lora_rank > 0: only a LoRA adapter trains; the reference is the policy with it switched
off (engine.lora_policy), checkpoints hold the adapter and its optimizer state, and the final
model is the merged weights with the adapter in adapter/ (lora.save_merged).
train.offline_first_attempts (Stage II, paper 5.3): that many of each problem's k samples take
attempt 1 from the base model (pi_ref); attempt 2 is the policy's, and only it carries loss.

The step is split into gradient_accumulation_steps micro-batches of episodes; advantages are
computed once over the whole step so RLOO always sees all k samples of a problem.

Per-step metrics: reward_t1/_t2 (mean reward per attempt), delta (t2 - t1), i_to_c / c_to_i
(counts of episodes wrong->right / right->wrong; correct means reward >= 0.5), kl_t1/_t2 (mean
per-token value of the configured KL estimator, before the update), len_t1/_t2 (generated
tokens), truncated (share of attempts cut by max_new_tokens), entropy_t1/_t2 (mean per-token
entropy of pi_T over the generated tokens, before the update), edit_ratio (mean edit distance
between the attempts over their total length; 0: attempt 2 copies attempt 1), loss,
tokens_per_s (generated tokens over the step's wall time, generation included), step_s.

With W processes (one per GPU, or gloo processes on CPU) the step's P problems are split into
W equal shares, one per rank; DeepSpeed averages the gradients, so the update is that of one
process on all P. Sampling is seeded per step and per shard of train.sampling_shard problems
(default: one rank's share), from the shard's global index: a run with fewer processes and the
same sampling_shard draws the same samples (tests/test_multirank.py compares 2 ranks with 1).
The metrics are reduced over all ranks (sums and counts added, then divided). Under ZeRO-3
the step's rollout runs on weights gathered once for it (train.gather_for_generation,
selfcorrect.train.gathered), each rank on its own; or, not gathered, every rank generates in
lockstep (synced_gpus), so ranks stopping at different lengths do not hang the per-layer
parameter gathers.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from selfcorrect import models, rollout
from selfcorrect.config import RunConfig, TrainConfig
from selfcorrect.evaluate import edit_distance_ratio
from selfcorrect.records import Problem
from selfcorrect.train import checkpoint
from selfcorrect.train import engine as ds_engine
from selfcorrect.train import gathered
from selfcorrect.train.tracking import Tracker
from selfcorrect.train import objectives as obj
from selfcorrect.train import scoring

RewardFn = Callable[[Problem, str], float]


def verifier_reward(problem: Problem, completion: str, *, timeout_s: float = 10.0,
                    custom: str = "") -> float:
    """The shared verifier's reward: training reward and evaluation metric are one function
    (with verify.custom, your check). A check that raises stops training, naming the problem."""
    from selfcorrect.verify import verify

    try:
        return float(verify(problem, completion, timeout_s=timeout_s, custom=custom).reward)
    except Exception as e:
        if not custom:
            raise
        raise RuntimeError(f"verify.custom {custom} failed on problem {problem.id!r}: "
                           f"{type(e).__name__}: {e}") from e


def rewards(reward_fn: RewardFn, episodes: list[rollout.Episode], *,
            workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(r1, r2), [n] each: every attempt's reward, computed by a pool of `workers` threads (0:
    one per core); a code check is a sandboxed subprocess taking seconds, so they overlap."""
    jobs = [(e.problem, t.text) for e in episodes for t in (e.first, e.second)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        got = list(pool.map(lambda job: reward_fn(*job), jobs))
    return torch.tensor(got[0::2]), torch.tensor(got[1::2])


def rollout_step(policy, reference, tok, batch: list[Problem], cfg: RunConfig, *,
                 offline: int = 0, synced_gpus: bool = False, backend=None) -> list[rollout.Episode]:
    """k two-attempt episodes per problem, on-policy at train.temperature.

    backend: the policy's generation (rollout.generate's signature, e.g. a VLLMBackend);
    None: Hugging Face generate, attempt 2 continuing from attempt 1's KV cache.
    offline > 0: samples 0..offline-1 of each problem take attempt 1 from `reference` (the
    base model, paper 5.3); every attempt 2 is the policy's, conditioned on that attempt 1.
    synced_gpus: ZeRO-3 with several ranks; every rank keeps stepping until all are done.
    """
    train = cfg.train
    kw = dict(temperature=train.temperature, max_new_tokens=train.max_new_tokens,
              batch_size=cfg.generate.batch_size)
    if synced_gpus:
        kw["synced_gpus"] = True
    if not offline:
        return rollout.two_attempts(policy, tok, batch, samples=train.samples_per_problem,
                                    templates=cfg.prompts, backend=backend, **kw)
    generate_policy = backend or rollout.generate
    jobs = [(p, s) for p in batch for s in range(train.samples_per_problem)]
    firsts: dict[int, rollout.Turn] = {}
    reference = getattr(reference, "module", reference)       # a ZeRO-3 engine: its model
    for model, picked in ((reference, [i for i, (_, s) in enumerate(jobs) if s < offline]),
                          (policy, [i for i, (_, s) in enumerate(jobs) if s >= offline])):
        ids = [rollout.first_prompt(tok, jobs[i][0], cfg.prompts) for i in picked]
        # a whole reference on each rank (below ZeRO-3) has nothing to keep in step
        partitioned = model is policy or models.partitioned(model)
        opts = {k: v for k, v in kw.items() if k != "synced_gpus" or partitioned}
        generate = generate_policy if model is policy else rollout.generate
        firsts.update(zip(picked, generate(model, tok, ids, desc="attempt 1", **opts)))
    seconds = generate_policy(policy, tok, [rollout.second_prompt(tok, p, firsts[i], cfg.prompts)
                                             for i, (p, _) in enumerate(jobs)],
                               desc="attempt 2", **kw)
    return [rollout.Episode(p, s, firsts[i], t2) for i, ((p, s), t2) in enumerate(zip(jobs, seconds))]


def train_step(engine, reference, episodes: list[rollout.Episode], r1: torch.Tensor,
               r2: torch.Tensor, *, stage: int, train: TrainConfig, pad_id: int,
               offline: torch.Tensor | None = None) -> dict[str, float]:
    """One optimiser step on P * k episodes (problem-major order); r1, r2 are [P, k].

    offline: [P * k] bool, episodes whose attempt 1 came from the base model; their
    attempt-1 tokens are masked out of the loss (off-policy for the policy).

    Micro-batches take the episodes in order of row length (`micro_batches`), so rows of
    similar length are padded together; the episodes of a problem share one encoding of its
    prompt (scoring.pack_episodes, share_prompts).

    Returns the step's loss, the mean per-token KL and entropy of each attempt (before the
    update) and the number of tokens they are means over (tokens_t1/_t2).
    """
    terms = obj.stage_terms(stage, r1, r2, alpha=train.alpha, beta1=train.beta1,
                            beta2=train.beta2, baseline_kind=train.baseline,
                            single_turn=train.single_turn, stage1_kl=train.stage1_kl)
    n, gas = len(episodes), train.gradient_accumulation_steps
    if n % gas:
        raise ValueError(f"train.gradient_accumulation_steps: {gas} must divide the {n} episodes "
                         "of a step (problems_per_step * samples_per_problem)")
    if train.gradient_checkpointing:
        ds_engine.gradient_checkpointing(engine.module)
    if train.lora_rank and train.lora_dropout:
        from selfcorrect.train import lora

        lora.dropout_on(engine.module)
    loss_total, kl_sum, ent_sum, tokens = 0.0, torch.zeros(2), torch.zeros(2), torch.zeros(2)
    for picked in micro_batches(episodes, gas):
        packed, mask1, mask2 = scoring.pack_episodes([episodes[i] for i in picked], pad_id,
                                                       share_prompts=True)
        picked = torch.tensor(picked)
        packed, mask1, mask2 = packed.to(engine.device), mask1.to(engine.device), mask2.to(engine.device)
        with torch.no_grad():
            ref_logp = scoring.score(reference, packed, train.temperature)
        logp, entropy = scoring.score(engine, packed, train.temperature, entropy=True)
        if offline is not None:   # attempt 1 of these episodes is the base model's: no loss
            mask1 = mask1 * (~offline[picked]).to(mask1)[:, None]
        tis = None
        if train.vllm_tis_cap:      # truncated importance weights: sampler vs trainer log-probs
            from selfcorrect.vllm_backend import sampler_logprobs
            tis = obj.tis_weights(logp, sampler_logprobs([episodes[i] for i in picked], mask1,
                                                         mask2).to(logp.device), train.vllm_tis_cap)
        loss, kl = obj.episode_loss(logp, ref_logp, mask1, mask2, terms, picked,
                                    normaliser=train.max_new_tokens, kl_estimator=train.kl_estimator,
                                    token_weights=tis)
        engine.backward(loss)   # DeepSpeed scales by 1 / gas
        engine.step()           # updates at the accumulation boundary only
        loss_total += loss.item() / gas
        per_turn = lambda t: torch.stack([(t.detach() * m).float().cpu().sum()  # noqa: E731
                                          for m in (mask1, mask2)])
        kl_sum += per_turn(kl)
        ent_sum += per_turn(entropy)
        tokens += per_turn(torch.ones_like(mask1))
    kl_mean, ent_mean = kl_sum / tokens.clamp(min=1), ent_sum / tokens.clamp(min=1)
    return {"loss": loss_total, "kl_t1": kl_mean[0].item(), "kl_t2": kl_mean[1].item(),
            "entropy_t1": ent_mean[0].item(), "entropy_t2": ent_mean[1].item(),
            "tokens_t1": tokens[0].item(), "tokens_t2": tokens[1].item()}


def row_length(e: rollout.Episode) -> int:
    """Tokens in an episode's row [x, y1, p, y2]."""
    return len(e.second.prompt_ids) + len(e.second.ids)


def micro_batches(episodes: list[rollout.Episode], gas: int, *, by_length: bool = True) -> list[list[int]]:
    """The episodes' indices in `gas` equal micro-batches: by row length (rows of similar
    length padded together; the episodes of one prompt side by side, as they share its
    encoding: scoring.Prefix), or in their order."""
    prompt = [tuple(e.first.prompt_ids) for e in episodes]
    longest: dict[tuple, int] = {}
    for x, e in zip(prompt, episodes):
        longest[x] = max(longest.get(x, 0), row_length(e))
    order = sorted(range(len(episodes)), key=lambda i: (longest[prompt[i]], prompt[i],
                                                         row_length(episodes[i]))) \
        if by_length else list(range(len(episodes)))
    micro = len(episodes) // gas
    return [order[start:start + micro] for start in range(0, len(episodes), micro)]


def padded_share(episodes: list[rollout.Episode], batches: list[list[int]]) -> float:
    """Padding's share of the scored tokens when the rows are batched this way."""
    widths = [max(row_length(episodes[i]) for i in b) * len(b) for b in batches]
    return 1 - sum(map(row_length, episodes)) / sum(widths)


def shard_seed(seed: int, stage: int, step: int, shard: int) -> int:
    """The sampling seed of one shard of one step: the same on any number of processes."""
    digest = hashlib.sha256(f"{seed}/{stage}/{step}/{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def world_size() -> int:
    """Processes in this run, from the launcher's environment (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def shares(train: TrainConfig, world: int) -> tuple[int, int]:
    """(problems per rank, problems per sampling shard), checking every split of a step over
    `world` processes; errors name the keys to change. `submit` runs it before upload
    (selfcorrect.cluster_checks)."""
    if train.problems_per_step % world:
        raise ValueError(f"train.problems_per_step: {train.problems_per_step} problems cannot be "
                         f"split evenly over {world} processes; use a multiple of {world}")
    local = train.problems_per_step // world
    shard = train.sampling_shard or local
    if local % shard:
        raise ValueError(f"train.sampling_shard: {shard} must divide each process's "
                         f"{local} problems (train.problems_per_step / {world} processes)")
    if local * train.samples_per_problem % train.gradient_accumulation_steps:
        raise ValueError(f"train.gradient_accumulation_steps: "
                         f"{train.gradient_accumulation_steps} must divide the "
                         f"{local * train.samples_per_problem} episodes each of {world} "
                         "processes takes in a step (train.problems_per_step / processes * "
                         "train.samples_per_problem)")
    return local, shard


def cycle(problems: list[Problem], seed: int):
    """Problems forever: a fresh seeded shuffle per pass."""
    rng = random.Random(seed)
    while True:
        yield from rng.sample(problems, len(problems))


def run_stage(cfg: RunConfig, stage: int, *, init_path: str | None, reference_path: str | None,
              problems: list[Problem], output_dir: str, reward_fn: RewardFn | None = None,
              log_dir: str | None = None, checkpoint_dir: str | None = None,
              stop_after: int | None = None) -> dict[str, float]:
    """Train one SCoRe stage and save the checkpoint; returns a summary of floats (KFP Metrics).

    init_path: the policy to start from (Stage I output for Stage II); None: cfg.model.
    reference_path: the frozen pi_ref (the base model); None: cfg.model.
    checkpoint_dir: where resumable checkpoints go and are resumed from (a folder or a URL);
        None: checkpoint.default_uri (under the run's output_dir, keyed by name, settings
        and data). train.resume_from is read when it holds no checkpoint yet.
    stop_after: stop once this many steps are done, without writing the final model (a
        planned interruption; what a kill leaves behind is the last periodic checkpoint).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage: {stage!r}; SCoRe has stages 1 and 2")
    if not problems:
        raise ValueError("problems: no training problems")
    train = cfg.train
    if reward_fn is None:
        if cfg.verify.custom:       # a bad import path fails here, before any model loads
            from selfcorrect.verify.custom import load_check

            load_check(cfg.verify.custom)
        reward_fn = functools.partial(verifier_reward, timeout_s=cfg.verify.timeout_s,
                                      custom=cfg.verify.custom)
    steps = train.stage1_steps if stage == 1 else train.stage2_steps
    world = world_size()
    P, shard = shares(train, world)                       # this rank's problems, shard size
    n_episodes = P * train.samples_per_problem
    checkpoint_dir = checkpoint_dir or checkpoint.default_uri(cfg, stage, problems)
    offline = train.offline_first_attempts if stage == 2 else 0
    train_dict = cfg.to_dict()["train"]

    # Models: policy in a DeepSpeed engine, reference frozen beside it (models.device(): this
    # rank's GPU, made current before anything is built on it); under ZeRO-3 both partitioned
    engine, reference, tok = ds_engine.policy_and_reference(
        cfg, init_path, reference_path,
        micro_batch_size=n_episodes // train.gradient_accumulation_steps)
    rank = engine.global_rank
    if engine.world_size != world:
        raise RuntimeError(f"WORLD_SIZE={world} but DeepSpeed runs {engine.world_size} processes")
    synced = rollout.needs_synced_gpus(train.zero_stage)
    backend = vllm_backend(cfg, init_path, rank, engine.device) \
        if train.rollout_backend == "vllm" else None
    source = checkpoint_dir
    if train.resume_from and checkpoint.latest(checkpoint_dir) is None:
        source = checkpoint.resume_source(train.resume_from, stage)
    done, history = checkpoint.load(engine, source, stage=stage, train=train_dict) or (0, [])
    if backend is not None:
        backend.update(engine.module)       # the engine samples from the (resumed) policy
    if done and rank == 0:
        print(f"SCoRe stage {stage}: resuming after step {done} of {steps} from {source}",
              flush=True)
    batches = cycle(problems, train.seed + stage)
    for _ in range(done * P * world):                     # the problem cursor
        next(batches)
    tracker = Tracker(cfg, stage=stage, log_dir=log_dir, start_step=done, rank=rank)

    started = time.perf_counter()
    last = steps if stop_after is None else min(steps, stop_after)
    bar = tqdm(range(done, last), initial=done, total=steps, desc=f"SCoRe stage {stage}",
               unit="step", disable=rank != 0)
    for step in bar:
        t0 = time.perf_counter()
        # 1. Rollout: k two-attempt episodes per problem, on-policy at train.temperature,
        #    each shard of this rank's share from its own seed (world-size independent)
        #    (under ZeRO-3 from weights gathered once for the whole rollout, when chosen)
        batch = [next(batches) for _ in range(P * world)][rank * P:(rank + 1) * P]
        gather = backend is None and gathered.decide(
            train.gather_for_generation, engine, reference if offline else None)
        episodes = []
        with gathered.weights(engine, gather) as policy, \
                gathered.weights(reference, gather and offline > 0) as ref_model:
            for start in range(0, P, shard):
                torch.manual_seed(shard_seed(train.seed, stage, step, (rank * P + start) // shard))
                episodes += rollout_step(policy, ref_model, tok, batch[start:start + shard], cfg,
                                         offline=offline, synced_gpus=synced and not gather,
                                         backend=backend)
        # 2. Rewards per turn, [P, k]
        r1, r2 = (r.view(P, train.samples_per_problem)
                  for r in rewards(reward_fn, episodes, workers=cfg.verify.code_concurrency))
        # 3. Update (the vLLM engine asleep: its KV cache off the GPU meanwhile)
        if backend is not None:
            backend.sleep()
        stats = train_step(engine, reference, episodes, r1, r2, stage=stage, train=train,
                           pad_id=tok.pad_token_id,
                           offline=torch.tensor([e.sample < offline for e in episodes]))
        if backend is not None:
            backend.update(engine.module)   # the next rollout samples from the updated policy
        # 4. Log: sums and counts added over the ranks, then divided
        record = step_record(step, reduce_totals(step_totals(episodes, r1, r2, stats)),
                             seconds=reduce_max(time.perf_counter() - t0))
        history.append(record)
        tracker.log(record, step)
        bar.set_postfix(r1=f"{record['reward_t1']:.2f}", r2=f"{record['reward_t2']:.2f}",
                        loss=f"{record['loss']:.3g}", tok_s=f"{record['tokens_per_s']:.0f}")
        # 5. Resumable checkpoint
        if train.checkpoint_every and ((step + 1) % train.checkpoint_every == 0 or step + 1 == steps):
            checkpoint.save(engine, checkpoint_dir, stage=stage, step=step + 1, history=history,
                            train=train_dict, keep=train.keep_checkpoints)
    tracker.close()

    summary = summarise(history, stage=stage, wall_s=time.perf_counter() - started)
    summary["resumed_at"] = float(done)
    if len(history) < steps:
        checkpoint.finish(checkpoint_dir)
        return summary          # interrupted on purpose: no final model
    # The final model: model + tokenizer + resolved config + metrics
    out = Path(output_dir)
    ds_engine.save(engine, tok, str(out))
    if rank == 0:
        (out / "resolved_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (out / "metrics.json").write_text(json.dumps({"stage": stage, "steps": history,
                                                      "summary": summary,
                                                      "checkpoints": checkpoint_dir}, indent=2))
    checkpoint.finish(checkpoint_dir)       # this machine's uploads; no collective after it
    return summary


def vllm_backend(cfg: RunConfig, init_path: str | None, rank: int, device=None):
    """train.rollout_backend=vllm: a colocated vLLM engine on this rank's GPU (external
    launcher), its config and tokenizer from the policy's starting folder; the caller loads
    the policy into it (VLLMBackend.update) once any checkpoint is loaded. Experimental,
    unverified on GPU (docs/vllm.md)."""
    from selfcorrect.config import ConfigError
    from selfcorrect.vllm_backend import VLLMBackend

    source = init_path or (cfg.model.path if cfg.model.source == "hf" else "")
    if not source:
        raise ConfigError("train.rollout_backend: vllm loads the policy from a save_pretrained "
                          f"folder; model.source={cfg.model.source!r} has none (use model.source=hf)")
    return VLLMBackend(models.local_source(source), rank=rank, seed=cfg.train.seed, device=device,
                       gpu_memory_utilization=cfg.train.vllm_gpu_memory_utilization,
                       dtype=str(models.dtype(cfg.model)).removeprefix("torch."),
                       trust_remote_code=cfg.model.trust_remote_code)


def step_totals(episodes: list[rollout.Episode], r1: torch.Tensor, r2: torch.Tensor,
                stats: dict[str, float]) -> dict[str, float]:
    """One rank's sums and counts for a step; added over the ranks before step_record divides."""
    c1, c2 = r1 >= 0.5, r2 >= 0.5   # an attempt counts as correct at reward >= 0.5
    turns = [e.first for e in episodes] + [e.second for e in episodes]
    return {
        "episodes": float(len(episodes)), "ranks": 1.0,
        "reward_t1": r1.sum().item(), "reward_t2": r2.sum().item(),
        "i_to_c": float((~c1 & c2).sum()), "c_to_i": float((c1 & ~c2).sum()),
        "loss": stats["loss"],      # the rank's mean over its (equally many) episodes
        **{f"{m}_t{t}": stats[f"{m}_t{t}"] * stats[f"tokens_t{t}"]
           for m in ("kl", "entropy") for t in (1, 2)},
        "tokens_t1": stats["tokens_t1"], "tokens_t2": stats["tokens_t2"],
        "len_t1": float(sum(len(e.first.ids) for e in episodes)),
        "len_t2": float(sum(len(e.second.ids) for e in episodes)),
        "truncated": float(sum(t.truncated for t in turns)),
        "edit_ratio": sum(edit_distance_ratio(e.first.text, e.second.text) for e in episodes),
    }


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_totals(totals: dict[str, float]) -> dict[str, float]:
    """`totals` added over all ranks (all_reduce of one float64 vector); as is with one."""
    if not _distributed():
        return totals
    import torch.distributed as dist

    keys = sorted(totals)
    vec = torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(vec, op=dist.ReduceOp.SUM)
    return dict(zip(keys, vec.tolist()))


def reduce_max(value: float) -> float:
    """The largest `value` over all ranks (the step took as long as its slowest rank)."""
    if not _distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return models.device() if dist.get_backend() == "nccl" else torch.device("cpu")


def step_record(step: int, totals: dict[str, float], *, seconds: float) -> dict[str, float]:
    """One step's metrics (see the module docstring) from the totals over all ranks."""
    n = totals["episodes"]
    per_token = lambda key, t: totals[key] / max(totals[f"tokens_t{t}"], 1.0)  # noqa: E731
    return {
        "step": float(step),
        "reward_t1": totals["reward_t1"] / n, "reward_t2": totals["reward_t2"] / n,
        "delta": (totals["reward_t2"] - totals["reward_t1"]) / n,
        "i_to_c": totals["i_to_c"], "c_to_i": totals["c_to_i"],
        "loss": totals["loss"] / totals["ranks"],
        "kl_t1": per_token("kl_t1", 1), "kl_t2": per_token("kl_t2", 2),
        "entropy_t1": per_token("entropy_t1", 1), "entropy_t2": per_token("entropy_t2", 2),
        "len_t1": totals["len_t1"] / n, "len_t2": totals["len_t2"] / n,
        "truncated": totals["truncated"] / (2 * n),
        "edit_ratio": totals["edit_ratio"] / n,
        "tokens_per_s": (totals["len_t1"] + totals["len_t2"]) / seconds,
        "step_s": seconds,
    }


def summarise(history: list[dict[str, float]], *, stage: int, wall_s: float) -> dict[str, float]:
    """Means over the stage's steps (finite floats), with the step count and wall time."""
    summary = {"stage": float(stage), "steps": float(len(history)), "wall_s": wall_s}
    for key in (history[0] if history else {}):
        if key != "step":
            values = [h[key] for h in history if math.isfinite(h[key])]
            summary[key] = sum(values) / len(values) if values else 0.0
    return summary
