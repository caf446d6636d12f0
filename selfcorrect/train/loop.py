"""One SCoRe stage, top to bottom: sample two attempts, reward them, one REINFORCE update.

    for each step:
        P problems (seeded shuffle, cycling over the train problems)
        k two-attempt episodes per problem at train.temperature     (rollout.two_attempts)
        r1, r2 from reward_fn per attempt                           (the shared verifier)
        advantages and KL weights for the stage                     (objectives.stage_terms)
        score both attempts under policy and reference, backward, step   (DeepSpeed engine)
    save model + tokenizer + resolved_config.json + metrics.json

The step is split into gradient_accumulation_steps micro-batches of episodes; advantages are
computed once over the whole step so RLOO always sees all k samples of a problem.

Per-step metrics: reward_t1/_t2 (mean reward per attempt), delta (t2 - t1), i_to_c / c_to_i
(counts of episodes wrong->right / right->wrong; correct means reward >= 0.5), kl_t1/_t2 (mean
per-token value of the configured KL estimator, before the update), len_t1/_t2 (generated
tokens), truncated (share of attempts cut by max_new_tokens), loss, tokens_per_s (generated
tokens over the step's wall time, generation included), step_s.
"""
from __future__ import annotations

import functools
import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from selfcorrect import models, rollout
from selfcorrect.config import RunConfig, TrainConfig
from selfcorrect.records import Problem
from selfcorrect.train import engine as ds_engine
from selfcorrect.train import objectives as obj

RewardFn = Callable[[Problem, str], float]


def verifier_reward(problem: Problem, completion: str, *, timeout_s: float = 10.0) -> float:
    """The shared verifier's reward: training reward and evaluation metric are one function."""
    from selfcorrect.verify import verify

    return float(verify(problem, completion, timeout_s=timeout_s).reward)


def score(model, packed: obj.Packed, temperature: float) -> torch.Tensor:
    """log pi_T of each row's last L tokens, [R, L] (only the last L + 1 logits are computed)."""
    out = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                position_ids=packed.position_ids, logits_to_keep=packed.keep)
    return obj.token_logprobs(out.logits[:, :-1], packed.targets, temperature)


def score_turns(model, episodes: list[rollout.Episode], temperature: float, pad_id: int,
                device) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_T and mask, [2n, L]: rows of attempt 1, then rows of attempt 2.

    Each attempt is packed on its own, so the short attempt-1 rows are not padded to the
    length of the attempt-2 rows (whose prompt holds attempt 1): about a third less compute.
    Generations end at the right edge, so the narrower block is padded on the left.
    """
    blocks = []
    for turn in ("first", "second"):
        packed = obj.pack([(getattr(e, turn).prompt_ids, getattr(e, turn).ids) for e in episodes],
                          pad_id).to(device)
        blocks.append((score(model, packed, temperature), packed.mask))
    width = max(logp.shape[1] for logp, _ in blocks)
    pad = lambda t: torch.nn.functional.pad(t, (width - t.shape[1], 0))  # noqa: E731
    return (torch.cat([pad(logp) for logp, _ in blocks]),
            torch.cat([pad(mask) for _, mask in blocks]))


def train_step(engine, reference, episodes: list[rollout.Episode], r1: torch.Tensor,
               r2: torch.Tensor, *, stage: int, train: TrainConfig, pad_id: int) -> dict[str, float]:
    """One optimiser step on P * k episodes (problem-major order); r1, r2 are [P, k].

    Returns the step's loss and the mean per-token KL of each attempt (before the update).
    """
    terms = obj.stage_terms(stage, r1, r2, alpha=train.alpha, beta1=train.beta1,
                            beta2=train.beta2, baseline_kind=train.baseline)
    n, gas = len(episodes), train.gradient_accumulation_steps
    if n % gas:
        raise ValueError(f"train.gradient_accumulation_steps: {gas} must divide the {n} episodes "
                         "of a step (problems_per_step * samples_per_problem)")
    micro = n // gas
    loss_total, kl_sum, kl_tokens = 0.0, torch.zeros(2), torch.zeros(2)
    for start in range(0, n, micro):
        chunk = episodes[start:start + micro]
        with torch.no_grad():
            ref_logp, mask = score_turns(reference, chunk, train.temperature, pad_id, engine.device)
        logp, _ = score_turns(engine, chunk, train.temperature, pad_id, engine.device)
        loss, kl = obj.episode_loss(logp, ref_logp, mask, terms, slice(start, start + micro),
                                    normaliser=train.max_new_tokens, kl_estimator=train.kl_estimator)
        engine.backward(loss)   # DeepSpeed scales by 1 / gas
        engine.step()           # updates at the accumulation boundary only
        loss_total += loss.item() / gas
        masked = (kl.detach() * mask).view(2, len(chunk), -1).float().cpu()
        kl_sum += masked.sum((1, 2))
        kl_tokens += mask.view(2, len(chunk), -1).float().cpu().sum((1, 2))
    kl_mean = kl_sum / kl_tokens.clamp(min=1)
    return {"loss": loss_total, "kl_t1": kl_mean[0].item(), "kl_t2": kl_mean[1].item()}


def cycle(problems: list[Problem], seed: int):
    """Problems forever: a fresh seeded shuffle per pass."""
    rng = random.Random(seed)
    while True:
        yield from rng.sample(problems, len(problems))


def run_stage(cfg: RunConfig, stage: int, *, init_path: str | None, reference_path: str | None,
              problems: list[Problem], output_dir: str, reward_fn: RewardFn | None = None,
              log_dir: str | None = None) -> dict[str, float]:
    """Train one SCoRe stage and save the checkpoint; returns a summary of floats (KFP Metrics).

    init_path: the policy to start from (Stage I output for Stage II); None: cfg.model.
    reference_path: the frozen pi_ref (the base model); None: cfg.model.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage: {stage!r}; SCoRe has stages 1 and 2")
    if not problems:
        raise ValueError("problems: no training problems")
    train = cfg.train
    reward_fn = reward_fn or functools.partial(verifier_reward, timeout_s=cfg.verify.timeout_s)
    steps = train.stage1_steps if stage == 1 else train.stage2_steps
    n_episodes = train.problems_per_step * train.samples_per_problem
    if n_episodes % train.gradient_accumulation_steps:
        raise ValueError(f"train.gradient_accumulation_steps: must divide the {n_episodes} episodes "
                         "of a step (problems_per_step * samples_per_problem)")

    # Models: policy in a DeepSpeed engine, reference frozen beside it
    policy, tok = models.load(cfg.model, init_path)
    reference = ds_engine.freeze(models.load(cfg.model, reference_path)[0])
    engine = ds_engine.build(policy, train,
                             micro_batch_size=n_episodes // train.gradient_accumulation_steps)
    torch.manual_seed(train.seed + stage)   # the sampling stream
    batches = cycle(problems, train.seed + stage)
    writer = None
    if log_dir:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir)

    history: list[dict[str, float]] = []
    started = time.perf_counter()
    bar = tqdm(range(steps), desc=f"SCoRe stage {stage}", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        # 1. Rollout: k two-attempt episodes per problem, on-policy at train.temperature
        batch = [next(batches) for _ in range(train.problems_per_step)]
        episodes = rollout.two_attempts(
            engine.module, tok, batch, samples=train.samples_per_problem,
            temperature=train.temperature, max_new_tokens=train.max_new_tokens,
            batch_size=cfg.generate.batch_size, templates=cfg.prompts)
        # 2. Rewards per turn, [P, k]
        r1 = torch.tensor([reward_fn(e.problem, e.first.text) for e in episodes])
        r2 = torch.tensor([reward_fn(e.problem, e.second.text) for e in episodes])
        r1, r2 = (r.view(train.problems_per_step, train.samples_per_problem) for r in (r1, r2))
        # 3. Update
        stats = train_step(engine, reference, episodes, r1, r2, stage=stage, train=train,
                           pad_id=tok.pad_token_id)
        # 4. Log
        seconds = time.perf_counter() - t0
        c1, c2 = r1 >= 0.5, r2 >= 0.5   # an attempt counts as correct at reward >= 0.5
        turns = [e.first for e in episodes] + [e.second for e in episodes]
        record = {
            "step": float(step),
            "reward_t1": r1.mean().item(), "reward_t2": r2.mean().item(),
            "delta": (r2 - r1).mean().item(),
            "i_to_c": float((~c1 & c2).sum()), "c_to_i": float((c1 & ~c2).sum()),
            **stats,
            "len_t1": sum(len(e.first.ids) for e in episodes) / len(episodes),
            "len_t2": sum(len(e.second.ids) for e in episodes) / len(episodes),
            "truncated": sum(t.truncated for t in turns) / len(turns),
            "tokens_per_s": sum(len(t.ids) for t in turns) / seconds,
            "step_s": seconds,
        }
        history.append(record)
        if writer:
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(f"stage{stage}/{key}", value, step)
        bar.set_postfix(r1=f"{record['reward_t1']:.2f}", r2=f"{record['reward_t2']:.2f}",
                        loss=f"{record['loss']:.3g}")
    if writer:
        writer.close()

    # Checkpoint: model + tokenizer + resolved config + metrics
    summary = summarise(history, stage=stage, wall_s=time.perf_counter() - started)
    out = Path(output_dir)
    ds_engine.save(engine, tok, str(out))
    if engine.global_rank == 0:
        (out / "resolved_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (out / "metrics.json").write_text(json.dumps({"stage": stage, "steps": history,
                                                      "summary": summary}, indent=2))
    return summary


def summarise(history: list[dict[str, float]], *, stage: int, wall_s: float) -> dict[str, float]:
    """Means over the stage's steps (finite floats), with the step count and wall time."""
    summary = {"stage": float(stage), "steps": float(len(history)), "wall_s": wall_s}
    for key in (history[0] if history else {}):
        if key != "step":
            values = [h[key] for h in history if math.isfinite(h[key])]
            summary[key] = sum(values) / len(values) if values else 0.0
    return summary
