"""Two-attempt generation: attempt 1 from the problem, attempt 2 after the correction prompt.

Batched with left padding and the KV cache (`model.generate`). Sampling uses plain
softmax(logits / temperature), with no top-k/top-p, so the training step can score the
same tokens under the same tempered distribution (on-policy). Temperature 0 is greedy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from selfcorrect import prompts
from selfcorrect.records import Attempt, Problem


@dataclass
class Turn:
    prompt_ids: list[int]
    ids: list[int]          # generated tokens, the stop token included when produced
    text: str
    truncated: bool         # stopped by max_new_tokens, not by the model


@dataclass
class Episode:
    problem: Problem
    sample: int
    first: Turn
    second: Turn

    def attempts(self, model_name: str) -> list[Attempt]:
        return [Attempt(self.problem.id, self.sample, turn, t.text, model_name, t.truncated)
                for turn, t in ((1, self.first), (2, self.second))]


def generate(model, tokenizer, texts: list[str], *, temperature: float, max_new_tokens: int,
             batch_size: int, desc: str = "generate") -> list[Turn]:
    stop = _stop_ids(model, tokenizer)
    out: list[Turn] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) \
        if temperature > 0 else dict(do_sample=False)
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch",
                          leave=False, disable=len(texts) <= batch_size):
            chunk = texts[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False,
                            padding_side="left").to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stop,
                                 pad_token_id=tokenizer.pad_token_id, repetition_penalty=1.0,
                                 **sampling)
            width = enc["input_ids"].shape[1]
            for row, mask in zip(range(len(chunk)), enc["attention_mask"]):
                prompt_ids = enc["input_ids"][row][mask.bool()].tolist()
                ids = gen[row, width:].tolist()
                cut = next((i for i, t in enumerate(ids) if t in stop), None)
                ids = ids if cut is None else ids[:cut + 1]
                out.append(Turn(prompt_ids, ids, tokenizer.decode(ids, skip_special_tokens=True),
                                truncated=cut is None))
    model.train(was_training)
    return out


def two_attempts(model, tokenizer, problems: list[Problem], *, samples: int = 1,
                 temperature: float = 0.0, max_new_tokens: int = 64, batch_size: int = 16,
                 templates=None) -> list[Episode]:
    """k = `samples` two-attempt episodes per problem, in problem order."""
    jobs = [(p, s) for p in problems for s in range(samples)]
    kw = dict(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
    firsts = generate(model, tokenizer,
                      [prompts.render(tokenizer, prompts.messages(p, None, templates)) for p, _ in jobs],
                      desc="attempt 1", **kw)
    seconds = generate(model, tokenizer,
                       [prompts.render(tokenizer, prompts.messages(p, t.text, templates))
                        for (p, _), t in zip(jobs, firsts)],
                       desc="attempt 2", **kw)
    return [Episode(p, s, t1, t2) for (p, s), t1, t2 in zip(jobs, firsts, seconds)]


def first_attempts(model, tokenizer, problems: list[Problem], model_name: str, *,
                   samples: int, temperature: float, max_new_tokens: int, batch_size: int,
                   templates=None) -> list[Attempt]:
    """Turn-1 attempts only, `samples` per problem (the difficulty filter's probe)."""
    jobs = [(p, s) for p in problems for s in range(samples)]
    turns = generate(model, tokenizer,
                     [prompts.render(tokenizer, prompts.messages(p, None, templates)) for p, _ in jobs],
                     temperature=temperature, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, desc="difficulty probe")
    return [Attempt(p.id, s, 1, t.text, model_name, t.truncated) for (p, s), t in zip(jobs, turns)]


def _stop_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
