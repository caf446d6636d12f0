"""Two-attempt generation: attempt 1 from the problem, attempt 2 after the correction prompt.

Batched with left padding and the KV cache (`model.generate`). Prompts are token ids:
attempt 2's prompt is attempt 1's prompt + attempt 1's tokens + the correction glue's tokens
(`second_prompt`), never attempt 1 re-rendered as text, so an episode is one row
[x, y1, p, y2] whose prefix is attempt 1's row exactly (the update scores it once).
Sampling uses plain softmax(logits / temperature) and nothing else, so the training step
can score the same tokens under the same tempered distribution (on-policy). Temperature 0
is greedy. The settings are one complete GenerationConfig built here (`settings`): nothing of the model's
own generation_config.json (top_k, min_p, typical_p, no_repeat_ngram_size,
suppress_tokens, ...) applies. Generation stops at the model's end-of-sequence tokens and
at its chat template's end-of-turn token (SmolLM2's <|im_end|>, Llama 3's <|eot_id|>).
Under ZeRO-3 with more than one rank the caller passes synced_gpus=True
(`needs_synced_gpus(zero_stage)` says when), unless it generates from weights gathered once
for the phase (selfcorrect.train.gathered.weights): each rank then generates on its own.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from selfcorrect import packed_linear, prompts
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


def generate(model, tokenizer, texts: list[str] | list[list[int]], *, temperature: float,
             max_new_tokens: int, batch_size: int, desc: str = "generate",
             synced_gpus: bool = False, seed: int | None = None) -> list[Turn]:
    """One Turn per prompt (a text, tokenized without special tokens, or token ids).

    synced_gpus: every rank keeps stepping until all ranks' batches are done (ZeRO-3 gathers
    each layer's weights from all ranks on every forward); every rank must then pass the
    same number of texts."""
    out: list[Turn] = []
    device = next(model.parameters()).device
    with _generating(model, tokenizer, len(texts), temperature=temperature,
                     max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc,
                     synced_gpus=synced_gpus, seed=seed) as (cfg, starts):
        for start in starts:
            enc = left_padded(texts[start:start + batch_size], tokenizer).to(device)
            out += _generate_batch(model, tokenizer, enc, cfg, synced_gpus)[0]
    return out


@contextmanager
def _generating(model, tokenizer, n: int, *, temperature: float, max_new_tokens: int,
                batch_size: int, desc: str, synced_gpus: bool, seed: int | None = None):
    """(settings, batch starts with a progress bar) for generating from n prompts: no
    gradients, the model in eval mode with only these settings, and under synced_gpus every
    rank checked to run as many batches. On CPU the linear layers run on packed weights
    (selfcorrect.packed_linear). seed: sampling starts from this seed, and the caller's random
    state is left as it was."""
    cfg = settings(model, tokenizer, temperature=temperature, max_new_tokens=max_new_tokens)
    if synced_gpus:
        _same_batch_count(-(-n // batch_size), next(model.parameters()).device)
    with torch.no_grad(), _only(model, cfg), _evaluating(model), \
            packed_linear.packed(model, rows=min(batch_size, n)), _seeded(seed):
        yield cfg, tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False,
                        disable=n <= batch_size)


def _generate_batch(model, tokenizer, enc, cfg, synced_gpus: bool, *, past=None,
                    prompts: list[list[int]] | None = None):
    """(Turns, (enc, sequences, cache)) of one batch; `past` continues from a cache of the
    inputs' prefix, `prompts` are then the rows' prompts (the inputs hold masked holes)."""
    gen = model.generate(**enc, past_key_values=past, **generate_kwargs(cfg, synced_gpus))
    stop, width = set(cfg.eos_token_id), enc["input_ids"].shape[1]
    turns = []
    for row, mask in enumerate(enc["attention_mask"]):
        prompt_ids = prompts[row] if prompts else enc["input_ids"][row][mask.bool()].tolist()
        ids = gen.sequences[row, width:].tolist()
        cut = next((i for i, t in enumerate(ids) if t in stop), None)
        ids = ids if cut is None else ids[:cut + 1]
        turns.append(Turn(prompt_ids, ids, tokenizer.decode(ids, skip_special_tokens=True),
                          truncated=cut is None))
    return turns, (enc, gen.sequences, gen.past_key_values)


def continuation(state, firsts: list[Turn], prompts: list[list[int]], pad_id: int):
    """Attempt 2's inputs as a continuation of attempt 1's batch (its KV cache stays valid):
    attempt 1's sequences with each row's positions after its attempt 1 masked out, then each
    row's rest of the turn-2 prompt (the glue), right-aligned. Positions come from the mask,
    so every row continues exactly where its prompt [x, y1, p] would put it."""
    from transformers import BatchEncoding

    enc, sequences, cache = state
    width = enc["input_ids"].shape[1]
    mask = torch.ones_like(sequences)
    mask[:, :width] = enc["attention_mask"]
    rest = []
    for row, (turn, prompt) in enumerate(zip(firsts, prompts)):
        mask[row, width + len(turn.ids):] = 0
        rest.append(prompt[len(turn.prompt_ids) + len(turn.ids):])
    span = max(map(len, rest))
    block = torch.full((len(rest), span), pad_id, dtype=sequences.dtype)
    block_mask = torch.zeros((len(rest), span), dtype=mask.dtype)
    for row, ids in enumerate(rest):
        if ids:
            block[row, span - len(ids):] = torch.tensor(ids)
            block_mask[row, span - len(ids):] = 1
    device = sequences.device
    return BatchEncoding({"input_ids": torch.cat([sequences, block.to(device)], 1),
                          "attention_mask": torch.cat([mask, block_mask.to(device)], 1)}), cache


def shared_prompts(prompts) -> tuple[list[tuple], list[int]] | None:
    """(the distinct prompts, the index of each row's prompt among them), or None when no two
    rows share a prompt or a prompt has under 2 tokens (nothing would be left to share)."""
    rows = [tuple(x) for x in prompts]
    index: dict[tuple, int] = {}
    group = [index.setdefault(x, len(index)) for x in rows]
    distinct = list(index)
    if len(distinct) == len(rows) or min(map(len, distinct)) < 2:
        return None
    return distinct, group


def prefill_rows(model, input_ids, attention_mask, position_ids, group):
    """A KV cache of the prompts encoded once (gradients flow when enabled), row r holding
    prompt group[r]'s copy: the shared part of generation's prefill and of the update's
    scoring (selfcorrect.train.scoring)."""
    cache = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  logits_to_keep=1, use_cache=True).past_key_values
    cache.batch_select_indices(torch.as_tensor(group, device=input_ids.device))
    return cache


def shared_prefill(model, tokenizer, prompts: list[list[int]]):
    """A KV cache of the prompts less their last token, each distinct prompt encoded once and
    copied to its rows, laid out as `left_padded(prompts)` lays them out (generate() then
    encodes only the last column); None when no two rows share a prompt."""
    shared = shared_prompts(prompts)
    if shared is None:
        return None
    distinct, group = shared
    enc = left_padded([list(x[:-1]) for x in distinct], tokenizer).to(next(model.parameters()).device)
    position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return prefill_rows(model, enc["input_ids"], enc["attention_mask"], position_ids, group)


@contextmanager
def _seeded(seed: int | None):
    """torch's random state seeded within the block (None: untouched), restored after."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _evaluating(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def left_padded(prompts: list[str] | list[list[int]], tokenizer):
    """input_ids and attention_mask of the prompts, padded on the left."""
    from transformers import BatchEncoding

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
           for p in prompts]
    width = max(map(len, ids))
    return BatchEncoding({
        "input_ids": torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in ids]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])})


def first_prompt(tokenizer, problem: Problem, templates=None) -> list[int]:
    """Attempt 1's prompt: the problem through the chat template (or plain turns)."""
    text = prompts.render(tokenizer, prompts.messages(problem, None, templates))
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def second_prompt(tokenizer, problem: Problem, first: Turn, templates=None) -> list[int]:
    """Attempt 2's prompt, built from ids: attempt 1's prompt and tokens, then the correction
    glue (prompts.correction_glue); the glue's leading end-of-turn token is dropped when
    attempt 1 already stopped on it (a truncated attempt 1 gets its turn closed)."""
    glue = tokenizer(prompts.correction_glue(tokenizer, problem, templates),
                     add_special_tokens=False)["input_ids"]
    if first.ids and glue and glue[0] == first.ids[-1]:
        glue = glue[1:]
    return first.prompt_ids + first.ids + glue


def swapped_second_prompt(tokenizer, problem: Problem, other_first: Turn, templates=None) -> list[int]:
    """The swap control's attempt-2 prompt (evaluation only): `problem`'s own attempt-1
    prompt, then another problem's attempt-1 tokens in place of its own, then the glue."""
    own = first_prompt(tokenizer, problem, templates)
    return second_prompt(tokenizer, problem, Turn(own, other_first.ids, other_first.text,
                                                  other_first.truncated), templates)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) with no fixed point (Sattolo's algorithm: one cycle),
    for n >= 2: problem i takes problem perm[i]'s attempt 1 in the swap control."""
    import random

    if n < 2:
        raise ValueError(f"swap control: needs at least 2 problems to swap attempts, got {n}")
    perm, rng = list(range(n)), random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def swap_control(model, tokenizer, episodes: list[Episode], *, seed: int, temperature: float,
                 max_new_tokens: int, batch_size: int, templates=None,
                 sample_seed: int | None = None) -> list[tuple[Episode, Turn]]:
    """Attempt 2 regenerated for every episode with its attempt 1 replaced by the attempt 1
    of the same sample of another problem (a fixed derangement of the problems, `seed`):
    (the donor episode, the new attempt 2) per episode, in order. Evaluation only."""
    problems = list(dict.fromkeys(e.problem.id for e in episodes))
    perm = derangement(len(problems), seed)
    donor_of = {pid: problems[perm[i]] for i, pid in enumerate(problems)}
    by_key = {(e.problem.id, e.sample): e for e in episodes}
    donors = []
    for e in episodes:
        key = (donor_of[e.problem.id], e.sample)
        if key not in by_key:
            raise ValueError(f"swap control: problem {key[0]!r} has no sample {key[1]} to lend "
                             f"problem {e.problem.id!r}; every problem needs the same samples")
        donors.append(by_key[key])
    ids = [swapped_second_prompt(tokenizer, e.problem, d.first, templates)
           for e, d in zip(episodes, donors)]
    turns = generate(model, tokenizer, ids, temperature=temperature, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, desc="swap control", seed=sample_seed)
    return list(zip(donors, turns))


def settings(model, tokenizer, *, temperature: float, max_new_tokens: int):
    """The complete GenerationConfig of a rollout: softmax(logits / temperature) sampling
    (greedy at 0) with every other logits processor off, stopping at stop_ids()."""
    from transformers import GenerationConfig

    if not temperature >= 0:
        raise ValueError(f"temperature: must be >= 0 (0 is greedy), got {temperature!r}")
    # the sampling warpers apply only when sampling; greedy takes the argmax of the logits
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, typical_p=1.0,
                    epsilon_cutoff=0.0, eta_cutoff=0.0) if temperature > 0 else dict(do_sample=False)
    cfg = GenerationConfig(
        **sampling, max_new_tokens=max_new_tokens, min_new_tokens=0, num_beams=1,
        num_return_sequences=1, repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, length_penalty=1.0, renormalize_logits=False,
        remove_invalid_values=False, use_cache=True, return_dict_in_generate=True,
        eos_token_id=stop_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id)
    # What is left unset (None: min_p, top_h, suppress_tokens, bad_words_ids, sequence_bias,
    # forced tokens, ...) is off: generate() runs with this as the model's config (_only).
    return cfg


def generate_kwargs(cfg, synced_gpus: bool = False) -> dict:
    """What model.generate gets besides the inputs."""
    return {"generation_config": cfg, "synced_gpus": bool(synced_gpus)}


def needs_synced_gpus(zero_stage: int) -> bool:
    """Whether generation must keep ranks in step: ZeRO-3 with more than one rank (a rank
    that stops early would otherwise leave the others waiting for its weight shards)."""
    import torch.distributed as dist

    return zero_stage == 3 and dist.is_available() and dist.is_initialized() \
        and dist.get_world_size() > 1


@contextmanager
def _only(model, cfg):
    """The model's own generation_config replaced by cfg for the call: generate() fills
    whatever a passed config leaves unset from the model's, so nothing of it may remain."""
    own = model.generation_config
    model.generation_config = cfg
    try:
        yield
    finally:
        model.generation_config = own


def _same_batch_count(n: int, device) -> None:
    """RuntimeError (not a hang) when ranks would run different numbers of generate calls."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    counts = torch.tensor([n, -n], device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    if counts[0].item() != -counts[1].item():
        raise RuntimeError(f"synced generation: ranks have between {-counts[1].item()} and "
                           f"{counts[0].item()} batches; shard the problems evenly")


def two_attempts(model, tokenizer, problems: list[Problem], *, samples: int = 1,
                 temperature: float = 0.0, max_new_tokens: int = 64, batch_size: int = 16,
                 templates=None, synced_gpus: bool = False, reuse_cache: bool = True,
                 share_prefill: bool = True, backend=None, seed: int | None = None) -> list[Episode]:
    """k = `samples` two-attempt episodes per problem, in problem order.

    Batch by batch: attempt 1 (the samples of a problem in the batch prefill its prompt once:
    `shared_prefill`; `share_prefill=False` prefills every row), then attempt 2 continuing
    from attempt 1's KV cache (the rows' [x, y1] are not encoded again; `reuse_cache=False`
    encodes the turn-2 prompts afresh). seed: sampling starts from it (None: from torch's
    current random state).
    backend: another generator with rollout.generate's signature (e.g. a VLLMBackend).
    """
    jobs = [(p, s) for p in problems for s in range(samples)]
    if backend is not None:     # e.g. a VLLMBackend (its prefix cache reuses attempt 1's rows)
        kw = dict(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
        firsts = backend(model, tokenizer, [first_prompt(tokenizer, p, templates) for p, _ in jobs], **kw)
        seconds = backend(model, tokenizer, [second_prompt(tokenizer, p, t, templates)
                                             for (p, _), t in zip(jobs, firsts)], **kw)
        return [Episode(p, s, t1, t2) for (p, s), t1, t2 in zip(jobs, firsts, seconds)]
    device = next(model.parameters()).device
    episodes: list[Episode] = []
    with _generating(model, tokenizer, len(jobs), temperature=temperature,
                     max_new_tokens=max_new_tokens, batch_size=batch_size, desc="two attempts",
                     synced_gpus=synced_gpus, seed=seed) as (cfg, starts):
        for start in starts:
            chunk = jobs[start:start + batch_size]
            prompts1 = [first_prompt(tokenizer, p, templates) for p, _ in chunk]
            enc = left_padded(prompts1, tokenizer).to(device)
            # not under synced_gpus: one rank's extra forward would wait on the others' gathers
            past = shared_prefill(model, tokenizer, prompts1) \
                if share_prefill and not synced_gpus else None
            firsts, state = _generate_batch(model, tokenizer, enc, cfg, synced_gpus, past=past)
            prompts2 = [second_prompt(tokenizer, p, t, templates) for (p, _), t in zip(chunk, firsts)]
            if reuse_cache:
                enc2, past = continuation(state, firsts, prompts2, tokenizer.pad_token_id)
            else:
                enc2, past = left_padded(prompts2, tokenizer).to(device), None
            seconds, _ = _generate_batch(model, tokenizer, enc2, cfg, synced_gpus, past=past,
                                         prompts=prompts2)
            episodes += [Episode(p, s, t1, t2) for (p, s), t1, t2 in zip(chunk, firsts, seconds)]
    return episodes


def first_attempts(model, tokenizer, problems: list[Problem], model_name: str, *,
                   samples: int, temperature: float, max_new_tokens: int, batch_size: int,
                   templates=None, seed: int | None = None) -> list[Attempt]:
    """Turn-1 attempts only, `samples` per problem (the difficulty filter's probe)."""
    jobs = [(p, s) for p in problems for s in range(samples)]
    turns = generate(model, tokenizer, [first_prompt(tokenizer, p, templates) for p, _ in jobs],
                     temperature=temperature, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, desc="difficulty probe", seed=seed)
    return [Attempt(p.id, s, 1, t.text, model_name, t.truncated) for (p, s), t in zip(jobs, turns)]


def stop_ids(model, tokenizer) -> list[int]:
    """The model's end-of-sequence tokens, the tokenizer's, and the chat template's
    end-of-turn token."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids] if ids is not None else []
    for extra in (tokenizer.eos_token_id, *end_of_turn_ids(tokenizer)):
        if extra is not None and extra not in ids:
            ids.append(extra)
    return ids


_MARK = "selfcorrect-end-of-answer-marker"


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special token the chat template puts right after an assistant message (found by
    rendering one), or [] for a tokenizer without a template or whose template ends a turn
    with plain text."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"},
                                              {"role": "assistant", "content": _MARK}], tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError):
        return []           # a template that will not render this conversation
    if not isinstance(text, str) or _MARK not in text:
        return []
    tail = text[text.rindex(_MARK) + len(_MARK):]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items()
                                                if t.special}
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    for n, i in enumerate(ids):
        if i in special:
            return [i] if not tokenizer.decode(ids[:n]).strip() else []
    return []
