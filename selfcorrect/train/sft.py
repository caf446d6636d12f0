"""Supervised fine-tuning on conversations: the testbed's pretraining, STaR and Pair-SFT.

A conversation is a list of chat messages; every assistant turn is a target. Each turn's row
is built exactly as the rollout sees it, `tokenize(render(messages before it)) + tokenize(text)
+ [eos]`, so what the model learns here is what it later generates and is scored on. When an
earlier turn's row is a prefix of a later one's (true of chat templates that render turns
verbatim), the two are merged into one row with both turns as targets: no token is encoded
twice.

    for each step:
        a seeded random batch of rows (right-padded)
        cross-entropy on the target tokens, averaged over the batch's target tokens
        DeepSpeed backward + step (the same engine as the RL stages)
    save model + tokenizer + config + metrics
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from selfcorrect import prompts
from selfcorrect.config import TrainConfig
from selfcorrect.train import engine as ds_engine

Row = tuple[list[int], list[int]]   # token ids, 1 where the token is a target


def turn_rows(tokenizer, messages: list[dict], *, last_only: bool = False) -> list[Row]:
    """Rows training every assistant turn of `messages` (see the module docstring);
    last_only: only the final assistant turn is a target (STaR / Pair-SFT train attempt 2).

    >>> from selfcorrect.experiments import testbed
    >>> tok = testbed.tokenizer()
    >>> msgs = [{"role": "user", "content": "1+2"}, {"role": "assistant", "content": "1+2=3"},
    ...         {"role": "user", "content": "check"}, {"role": "assistant", "content": "1+2=3"}]
    >>> [(len(ids), sum(mask)) for ids, mask in turn_rows(tok, msgs)]   # one merged row
    [(26, 12)]
    """
    rows: list[Row] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or (last_only and i != len(messages) - 1):
            continue
        prompt = tokenizer(prompts.render(tokenizer, messages[:i]), add_special_tokens=False)["input_ids"]
        answer = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
        ids, mask = prompt + answer + [tokenizer.eos_token_id], [0] * len(prompt) + [1] * (len(answer) + 1)
        if rows and ids[:len(rows[-1][0])] == rows[-1][0]:
            earlier = rows.pop()[1]
            mask = earlier + mask[len(earlier):]
        rows.append((ids, mask))
    if not rows:
        raise ValueError("conversation has no assistant turn to train on")
    return rows


def batch_tensors(rows: list[Row], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, labels) with -100 where nothing is learned."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (row, mask) in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        attn[r, :len(row)] = 1
        labels[r, :len(row)] = torch.tensor([t if m else -100 for t, m in zip(row, mask)])
    return ids, attn, labels


@dataclasses.dataclass
class SFTConfig:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    warmup_steps: int = 0
    decay: bool = True      # linear decay to 0 at `steps`; False: constant after the warm-up


def train(model, tokenizer, rows: list[Row], sft: SFTConfig, train_cfg: TrainConfig, *,
          desc: str = "SFT"):
    """`sft.steps` steps of cross-entropy on the rows' targets; returns (engine, history).

    Optimiser, clipping, ZeRO stage and LoRA (train.lora_rank: only an adapter trains, the
    saved model is merged) come from `train_cfg` (the RL stages' settings), with the learning
    rate and schedule of `sft` (linear warm-up, then linear decay to 0, or constant with
    `sft.decay` False: the RL stages' schedule).
    """
    if not rows:
        raise ValueError("SFT: no training rows")
    cfg = dataclasses.replace(train_cfg, learning_rate=sft.learning_rate, gradient_accumulation_steps=1)
    engine = ds_engine.build(model, cfg, micro_batch_size=sft.batch_size,
                             warmup_steps=sft.warmup_steps, total_steps=sft.steps if sft.decay else 0)
    rng = random.Random(sft.seed)
    history: list[dict[str, float]] = []
    bar = tqdm(range(sft.steps), desc=desc, unit="step", disable=engine.global_rank != 0)
    for step in bar:
        t0 = time.perf_counter()
        lr = float(engine.get_lr()[0])      # this step's learning rate
        if cfg.lora_rank and cfg.lora_dropout:
            from selfcorrect.train import lora

            lora.dropout_on(engine.module)
        ids, attn, labels = (t.to(engine.device) for t in
                             batch_tensors([rng.choice(rows) for _ in range(sft.batch_size)],
                                           tokenizer.pad_token_id))
        out = engine(input_ids=ids, attention_mask=attn)
        logits = out.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
        engine.backward(loss)
        engine.step()
        history.append({"step": float(step), "loss": loss.item(), "lr": lr,
                        "tokens": float((labels != -100).sum()), "step_s": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return engine, history


def save(engine, tokenizer, output_dir: str, *, config: dict, history: list[dict[str, float]]) -> None:
    """model + tokenizer + the resolved config + metrics, like every model the pipeline writes."""
    ds_engine.save(engine, tokenizer, output_dir)
    if engine.global_rank != 0:
        return
    out = Path(output_dir)
    (out / "resolved_config.json").write_text(json.dumps(config, indent=2))
    tail = [h["loss"] for h in history[-max(1, len(history) // 10):] if math.isfinite(h["loss"])]
    (out / "metrics.json").write_text(json.dumps(
        {"steps": history, "summary": {"steps": len(history),
                                       "final_loss": sum(tail) / max(1, len(tail))}}, indent=2))
