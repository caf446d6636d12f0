"""Log-probs (and entropy) of sampled tokens, one row per episode, without full-vocabulary logits.

An episode is one row [x, y1, p, y2]: attempt 2's prompt extends attempt 1's row exactly
(rollout.second_prompt), so one forward pass scores both attempts, with a mask per attempt.
Scoring the attempts as separate rows computed the [x, y1] prefix twice (policy and reference).

The vocabulary projection runs only on the scored tokens (y1 and y2, not the prompt or the glue
p), in chunks of at most `chunk_bytes` of float32 logits, each recomputed in the backward pass
(torch.utils.checkpoint) instead of kept: a 150k-token vocabulary at 1,024 tokens needs one
chunk's logits at a time (64 MiB by default), not 0.6 GB per row. The model's own head runs
inside its forward on nothing (a pre-hook hands it an empty slice and keeps its input).
The same holds under ZeRO-3, where the head's weight is partitioned: each chunk calls the head
module itself (final_logits), so DeepSpeed's module hooks gather its weight for that call and
for the chunk's recomputation in the backward pass, and its gradient is reduced as any other.
A frozen partitioned head (LoRA under ZeRO-3) is not gathered again for the recomputation, so
its weight is gathered once per scored batch and a copy of it used by that batch's chunks
(`_frozen_head`: one head's weights more until the backward pass has run).

Shared prompts (`pack_episodes(..., share_prompts=True)`): the k episodes of a problem start
with the same prompt x, so it is encoded once per problem (a KV cache, with its gradient when
the pass has one) and each row scores only its rest [y1, p, y2] from its problem's copy of
that cache: the same log-probs and gradients as k full rows (tests/test_train_scoring.py), with
(k - 1) |x| fewer tokens through the policy's forward and backward and the reference's forward.
Under ZeRO-3 or gradient checkpointing (no cache in the forward) the rows are scored whole.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from selfcorrect import rollout
from selfcorrect.train import objectives as obj

CHUNK_BYTES = 64 * 2**20


@dataclass
class Prefix:
    """Prompts that several rows share, encoded once: row r continues prompt group[r]."""
    input_ids: Tensor       # [G, P] the distinct prompts less their last token, left-padded
    attention_mask: Tensor  # [G, P]
    position_ids: Tensor    # [G, P]
    group: Tensor           # [R] the prompt each row continues

    def to(self, device) -> "Prefix":
        return Prefix(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                                self.position_ids, self.group)))

    def whole(self, packed: obj.Packed) -> obj.Packed:
        """The same rows scored without sharing: each row's prompt in front of its rest."""
        g = self.group
        return obj.Packed(*(torch.cat([mine[g], rest], 1) for mine, rest in (
            (self.input_ids, packed.input_ids), (self.attention_mask, packed.attention_mask),
            (self.position_ids, packed.position_ids))), packed.targets, packed.mask)


def pack_episodes(episodes, pad_id: int, *, share_prompts: bool = False
                  ) -> tuple[obj.Packed, Tensor, Tensor]:
    """(packed rows [x, y1, p, y2], mask1, mask2): the masks [n, L] mark attempt 1's and
    attempt 2's tokens; packed.mask is their sum (the glue p is not scored).

    share_prompts: rows with the same prompt x continue one encoding of it (packed.prefix);
    each row then holds x's last token and the rest of the episode."""
    rows, spans = [], []
    for e in episodes:
        head = e.first.prompt_ids + e.first.ids
        if e.second.prompt_ids[:len(head)] != head:
            raise ValueError(f"episode {e.problem.id}/{e.sample}: attempt 2's prompt does not "
                             "extend attempt 1's prompt and tokens (build it with "
                             "rollout.second_prompt)")
        gen = e.second.prompt_ids[len(e.first.prompt_ids):] + e.second.ids
        rows.append((e.first.prompt_ids, gen))
        spans.append((len(gen), len(e.first.ids), len(e.second.ids)))
    shared = rollout.shared_prompts(x for x, _ in rows) if share_prompts else None
    if shared is not None:
        distinct, group = shared
        packed = obj.pack([(x[-1:], gen) for x, gen in rows], pad_id)
        offset = torch.tensor([len(x) - 1 for x, _ in rows])[:, None]
        packed.position_ids = packed.position_ids + offset
        head = obj.pack([(list(x[:-1]), []) for x in distinct], pad_id)
        packed.prefix = Prefix(head.input_ids, head.attention_mask, head.position_ids,
                               torch.tensor(group))
    else:
        packed = obj.pack(rows, pad_id)
    width = packed.targets.shape[1]
    mask1, mask2 = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for i, (n, n1, n2) in enumerate(spans):
        mask1[i, width - n:width - n + n1] = 1.0
        mask2[i, width - n2:] = 1.0
    packed.mask = mask1 + mask2
    return packed, mask1, mask2


def score(model, packed: obj.Packed, temperature: float, *, entropy: bool = False,
          chunk_bytes: int | None = None):
    """log pi_T of each row's last L tokens, [R, L], 0 where packed.mask is 0.

    model: a causal LM or a DeepSpeed engine around one. entropy=True: (log pi_T, entropy of
    pi_T at the same positions, no gradient), both [R, L]. chunk_bytes: None: CHUNK_BYTES.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    module = getattr(model, "module", model)
    if packed.prefix is not None and (_partitioned(module)
                                       or getattr(module, "is_activation_checkpointing", False)):
        packed = packed.prefix.whole(packed)
    kw = dict(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
              position_ids=packed.position_ids, logits_to_keep=packed.keep, use_cache=False)
    if packed.prefix is not None:
        kw.update(_continuing(model, packed))
    picked = packed.mask.bool()
    targets = packed.targets[picked]
    head = module.get_output_embeddings().weight
    frozen = torch.is_grad_enabled() and hasattr(head, "ds_id") and not head.requires_grad
    with _head_input(module, first=frozen) as seen:
        model(**kw)
    inputs = seen["hidden"][:, :-1][picked]
    held = _frozen_head(module) if frozen else None
    project = (lambda h: final_logits(module, h, held)) if held else \
        (lambda h: final_logits(module, h))  # noqa: E731
    vocab = getattr(head, "ds_shape", head.shape)[0]     # a ZeRO-3 partition: its full shape
    per = max(1, chunk_bytes // (4 * vocab))
    pieces = []
    for start in range(0, len(targets), per):
        args = (project, inputs[start:start + per], targets[start:start + per], temperature)
        pieces.append(checkpoint(_chunk, *args, use_reentrant=False)
                      if torch.is_grad_enabled() and inputs.requires_grad else _chunk(*args))
    logp = packed.mask.new_zeros(packed.mask.shape, dtype=torch.float32)
    ent = torch.zeros_like(logp)
    if pieces:
        logp = logp.masked_scatter(picked, torch.cat([p[0] for p in pieces]))
        ent = ent.masked_scatter(picked, torch.cat([p[1] for p in pieces]))
    return (logp, ent) if entropy else logp


def _continuing(model, packed: obj.Packed) -> dict:
    """The forward's arguments for rows that continue shared prompts: the prompts encoded
    once (a KV cache that keeps its gradient), each row given its prompt's copy."""
    pre = packed.prefix
    cache = rollout.prefill_rows(model, pre.input_ids, pre.attention_mask, pre.position_ids,
                                 pre.group)
    return dict(past_key_values=cache, use_cache=True, attention_mask=torch.cat(
        [pre.attention_mask[pre.group], packed.attention_mask], 1))


def _chunk(project, inputs: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    logits = project(inputs)
    logp = obj.token_logprobs(logits, targets, temperature)
    return logp, obj.token_entropy(logits, temperature)


def final_logits(model, hidden: Tensor, head=None) -> Tensor:
    """The model's logits from its last hidden states, in float32: its output head (or `head`,
    a function standing in for it), then the scaling some architectures apply after it
    (Cohere's logit_scale, Granite's logits_scaling, Gemma's final_logit_softcapping)."""
    z = (head or model.get_output_embeddings())(hidden).float()
    cfg = model.config
    if getattr(cfg, "logit_scale", None):
        z = z * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):
        z = z / cfg.logits_scaling
    if getattr(cfg, "final_logit_softcapping", None):
        z = torch.tanh(z / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
    return z


def _frozen_head(model):
    """The output head as a function of copies of its gathered ZeRO-3 weights (see the module
    docstring); every rank gathers once per call, whatever its number of chunks."""
    import deepspeed

    head = model.get_output_embeddings()
    params = [p for p in (head.weight, getattr(head, "bias", None)) if p is not None]
    with deepspeed.zero.GatheredParameters(params):
        weight = head.weight.detach().clone()
        bias = head.bias.detach().clone() if getattr(head, "bias", None) is not None else None
    return lambda h: torch.nn.functional.linear(h, weight, bias)


@contextmanager
def _head_input(model, first: bool = False):
    """During the block, the output head's input is kept in seen["hidden"] and the head runs
    on an empty slice of it (no logits computed). first: the hook runs before DeepSpeed's
    (a frozen ZeRO-3 head: its backward hooks then never see the kept input)."""
    seen: dict[str, Tensor] = {}

    def keep(_module, args):
        seen["hidden"] = args[0]
        return (args[0][..., :0, :], *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(keep, prepend=first)
    try:
        yield seen
    finally:
        handle.remove()


def _partitioned(model) -> bool:
    """ZeRO-3: the model's weights are partitions, gathered module by module as it runs."""
    return hasattr(model.get_output_embeddings().weight, "ds_id")
