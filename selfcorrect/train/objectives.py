"""SCoRe objectives as pure torch functions (arXiv:2409.12917, Eq. 3 and 4; docs/method.md).

Notation: x the problem, y1 / y2 the two attempts, r1 = r(y1), r2 = r(y2), pi the policy,
pi_ref the frozen reference, T the sampling temperature, k the samples per problem.

A step's batch holds "rows": one row per attempt, the attempt's prompt followed by the
tokens the model generated. Every per-token tensor here is [rows, L] over the last L
positions of the packed rows, with a mask that is 1 exactly on the generated tokens.

Loss (REINFORCE with a KL penalty, gamma = 0), for one episode:

    loss = sum_{a in (1, 2)} sum_{t in y_a} ( -A_a * log pi_T(y_a,t | ...)
                                              + beta_a * KL_t(pi || pi_ref) ) / N

    Stage I  (Eq. 3): A_1 = 0,            beta_1 = beta2;  A_2 = adv(r2),              beta_2 = beta1
    Stage II (Eq. 4): A_1 = adv(r1),      beta_1 = beta1;  A_2 = adv(r2 + alpha (r2 - r1)), beta_2 = beta1

gamma = 0: each attempt's tokens carry only that attempt's advantage. A is a constant
(no gradient). pi_T = softmax(logits / T): the distribution the samples came from. KL_t is
the k2 estimator by default, whose expected gradient is that of the paper's KL(pi || pi_ref)
(see kl_per_token).

Normalisation: each attempt's token sum is divided by a constant N (the generation budget,
max_new_tokens), then averaged over episodes. With a constant divisor the gradient is the
unbiased REINFORCE gradient of the sequence-level objective, scaled by 1/N: no length bias
(a per-sequence mean would favour short wrong answers and long right ones, as noted for
GRPO in "Understanding R1-Zero-Like Training", Liu et al. 2025), and the same scale for
reward and KL (the sequence KL is the sum of the per-token KLs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


# ---------------------------------------------------------------- packing and log-probs

@dataclass
class Packed:
    input_ids: Tensor       # [R, W] left-padded prompt + generated tokens
    attention_mask: Tensor  # [R, W] 1 on real tokens
    position_ids: Tensor    # [R, W] cumsum(mask) - 1: the positions an unpadded row would have
    targets: Tensor         # [R, L] the last L tokens of each row (L = longest generation)
    mask: Tensor            # [R, L] float, 1 exactly on the generated tokens
    prefix: object = None   # scoring.Prefix: rows continue shared prompts (then the above
                            # hold each row's rest, positions counted after its prompt)

    def to(self, device) -> "Packed":
        return Packed(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                                self.position_ids, self.targets, self.mask)),
                      prefix=None if self.prefix is None else self.prefix.to(device))

    @property
    def keep(self) -> int:
        """How many final positions' logits the forward pass must return (L + 1)."""
        return self.targets.shape[1] + 1


def pack(rows: list[tuple[list[int], list[int]]], pad_id: int) -> Packed:
    """Rows of (prompt_ids, generated_ids), left-padded so every generation ends at the right edge.

    Left padding puts all generated tokens in the last L positions, so the policy only has to
    project the last L + 1 hidden states onto the vocabulary (`logits_to_keep`).
    """
    width = max(len(p) + len(g) for p, g in rows)
    span = max(len(g) for _, g in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), span))
    for i, (prompt, gen) in enumerate(rows):
        seq = list(prompt) + list(gen)
        ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attn[i, width - len(seq):] = 1
        mask[i, span - len(gen):] = 1.0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Packed(ids, attn, pos, ids[:, width - span:], mask)


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """log pi_T(target) = (z_target - logsumexp(z)) with z = logits / T.

    logits [R, L, V] at the positions that predict targets [R, L] (already shifted by one).
    Computed in float32, whatever the model's dtype.
    """
    z = logits.float() / temperature
    return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def token_entropy(logits: Tensor, temperature: float) -> Tensor:
    """Entropy of pi_T at each position, [R, L], in float32 (a metric: no gradient)."""
    with torch.no_grad():
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        return -(logp.exp() * logp).sum(-1)


# ---------------------------------------------------------------- KL against the reference

#: estimators accepted as a loss term, with the divergence whose gradient they follow
LOSS_ESTIMATORS = {"k2": "KL(pi || pi_ref)", "k3": "KL(pi_ref || pi)"}


def kl_per_token(logp: Tensor, ref_logp: Tensor, estimator: str = "k2") -> Tensor:
    """Per-token sample estimators of KL(pi || pi_ref) at tokens y drawn from pi (Schulman, 2020).

    With log-ratio d = log pi(y) - log pi_ref(y), and what each does *as a loss term* (the
    samples fixed, the gradient taken through log pi):

        k1 = d               value: unbiased for KL(pi || pi_ref); gradient: E[grad log pi] = 0,
                             so as a loss it turns the penalty off (refused by the loss)
        k2 = d^2 / 2         value: biased, >= 0; gradient: E[d grad log pi] = grad KL(pi || pi_ref),
                             the paper's penalty exactly (the default)
        k3 = exp(-d) - 1 + d value: unbiased for KL(pi || pi_ref), >= 0; gradient:
                             E[(1 - e^-d) grad log pi] = grad KL(pi_ref || pi), the *reverse* KL
                             (GRPO's choice; accepted, documented)

    tests/test_train_objectives.py checks both gradients against the exact divergences on a
    small vocabulary. All three are 0 where pi = pi_ref.
    """
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator: {estimator!r}; use 'k1', 'k2' or 'k3'")


# ---------------------------------------------------------------- rewards, baselines, advantages

def shaped_reward(r1: Tensor, r2: Tensor, alpha: float) -> Tensor:
    """Stage II bonus: r2 + alpha * (r2 - r1). Binary, alpha = 10: 0->1: 11, 1->1: 1, 1->0: -10, 0->0: 0."""
    return r2 + alpha * (r2 - r1)


def baseline(rewards: Tensor, kind: str = "rloo") -> Tensor:
    """Baselines for rewards [P, k] (k samples of each of P problems), same shape.

        rloo: b_i = (sum_j r_j - r_i) / (k - 1)   the mean of the other k - 1 samples
        mean: b_i = (sum_j r_j) / k                includes the sample itself (slightly biased)
        none: b_i = 0
    """
    k = rewards.shape[-1]
    if kind == "rloo":
        if k < 2:
            raise ValueError("baseline 'rloo' needs at least 2 samples per problem")
        return (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    if kind == "mean":
        return rewards.mean(-1, keepdim=True).expand_as(rewards)
    if kind == "none":
        return torch.zeros_like(rewards)
    raise ValueError(f"baseline: {kind!r}; use 'rloo', 'mean' or 'none'")


@dataclass
class StageTerms:
    """Per-episode coefficients of one stage: advantage and KL weight for each attempt."""
    adv1: Tensor   # [P, k]
    adv2: Tensor   # [P, k]
    beta1: float   # KL weight on attempt-1 tokens
    beta2: float   # KL weight on attempt-2 tokens
    kl1: str = "token"   # attempt 1's KL per token or on the whole sequence (sequence_kl)


def stage_terms(stage: int, r1: Tensor, r2: Tensor, *, alpha: float, beta1: float, beta2: float,
                baseline_kind: str = "rloo", single_turn: bool = False,
                stage1_kl: str = "token") -> StageTerms:
    """Advantages per turn (baseline computed within each problem's k samples, per turn).

    Stage I:  attempt 1 has no reward term (A_1 = 0), KL weight beta2 (held near pi_ref);
              attempt 2 has A_2 = r2 - b(r2), KL weight beta1.
    Stage II: A_1 = r1 - b(r1); A_2 = s - b(s) with s = shaped_reward(r1, r2, alpha); beta1 on both.
    single_turn (the paper's ablation, either stage): A_1 = r1 - b(r1), KL weight beta1;
              attempt 2 carries no term at all (A_2 = 0, weight 0).
    stage1_kl: "sequence": Stage I's attempt-1 KL is taken on the whole attempt (sequence_kl).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage: {stage!r}; SCoRe has stages 1 and 2")
    if stage1_kl not in ("token", "sequence"):
        raise ValueError(f"train.stage1_kl: {stage1_kl!r}; use 'token' or 'sequence'")
    if single_turn:
        return StageTerms(r1 - baseline(r1, baseline_kind), torch.zeros_like(r2), beta1, 0.0)
    if stage == 1:
        return StageTerms(torch.zeros_like(r1), r2 - baseline(r2, baseline_kind), beta2, beta1,
                          kl1=stage1_kl)
    s = shaped_reward(r1, r2, alpha)
    return StageTerms(r1 - baseline(r1, baseline_kind), s - baseline(s, baseline_kind),
                      beta1, beta1)


# ---------------------------------------------------------------- the loss

def reinforce_loss(logp: Tensor, ref_logp: Tensor, mask: Tensor, advantage: Tensor, beta: Tensor,
                   *, normaliser: float, kl_estimator: str = "k2") -> tuple[Tensor, Tensor]:
    """Per-row loss sum_t mask * (-A * log pi + beta * KL_t) / N, and the per-token KL.

    logp, ref_logp, mask: [R, L]; advantage, beta: [R] (one value per row) or [R, L] (per
    token: a row holding both attempts); detached.
    KL_t is `kl_estimator` (k2: the gradient of the paper's KL(pi || pi_ref); k3: of the
    reverse KL; k1 is refused: as a loss its expected gradient is 0).
    Returns (loss [R], kl [R, L]); kl is the k3 *value* (unbiased for KL(pi || pi_ref), >= 0),
    reported as the metric whichever estimator drives the gradient.
    """
    if kl_estimator not in LOSS_ESTIMATORS:
        raise ValueError(f"kl_estimator: {kl_estimator!r} cannot be a loss term; use one of "
                         f"{', '.join(LOSS_ESTIMATORS)} (k1's expected gradient is 0: it would "
                         "switch the KL penalty off)")
    ref_logp = ref_logp.detach()
    per_row = lambda t: t if t.dim() == 2 else t[:, None]  # noqa: E731
    penalty = kl_per_token(logp, ref_logp, kl_estimator)
    per_token = -per_row(advantage.detach()) * logp + per_row(beta) * penalty
    return (per_token * mask).sum(-1) / normaliser, kl_per_token(logp.detach(), ref_logp, "k3")


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor, estimator: str = "k2") -> Tensor:
    """The KL estimator of whole sequences, per row [R]: `kl_per_token`'s estimator applied to
    the sequence log-ratio D = sum_t mask * (log pi - log pi_ref) (the sum of the token
    log-ratios: log pi(y) - log pi_ref(y) of the sequence).

    As a loss term (y drawn from pi), k2's gradient E[D grad log pi(y)] is the gradient of
    the sequence KL(pi || pi_ref) exactly, future tokens' divergence included; the per-token
    k2 keeps only each token's own d_t. Its value (k1: D) is unbiased for the sequence KL,
    which equals the expected sum of the per-token KLs (chain rule);
    tests/test_train_objectives.py checks both on a tiny model by enumerating its sequences.
    """
    d = ((logp - ref_logp.detach()) * mask).sum(-1)
    return kl_per_token(d, torch.zeros_like(d), estimator)


def tis_weights(logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance weights min(pi_train / pi_sampler, cap) per token, detached: they
    correct for the sampler (vLLM) and the trainer scoring the same tokens slightly
    differently. 1 where the sampler's log-prob is unknown (NaN)."""
    if not cap > 0:
        raise ValueError(f"train.vllm_tis_cap: must be > 0 to weight (0 turns TIS off), got {cap!r}")
    w = torch.exp(logp.detach().float() - sampler_logp.float()).clamp(max=cap)
    return torch.where(torch.isnan(sampler_logp), torch.ones_like(w), w).to(logp.dtype)


def episode_loss(logp: Tensor, ref_logp: Tensor, mask1: Tensor, mask2: Tensor, terms: StageTerms,
                 episodes: slice | Tensor, *, normaliser: float, kl_estimator: str = "k2",
                 token_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean over episodes of the SCoRe loss; one row per episode [x, y1, p, y2], mask1 / mask2
    [n, L] marking attempt 1's and attempt 2's tokens (each attempt gets its advantage and KL
    weight).

    `episodes` (a slice or an index tensor) selects the episodes, in flattened [P * k] order,
    whose rows these are, so a step can be split into micro-batches that share the step's
    advantages. token_weights [n, L] (tis_weights) scale each token's policy-gradient term.
    Returns (loss, kl [n, L]).
    """
    a1, a2 = (a.flatten()[episodes].to(logp)[:, None] for a in (terms.adv1, terms.adv2))
    adv = a1 * mask1 + a2 * mask2
    if token_weights is not None:
        adv = adv * token_weights.detach()
    sequence = terms.kl1 == "sequence"
    beta = (0.0 if sequence else terms.beta1) * mask1 + terms.beta2 * mask2
    rows, kl = reinforce_loss(logp, ref_logp, mask1 + mask2, adv, beta.to(logp),
                              normaliser=normaliser, kl_estimator=kl_estimator)
    if sequence:    # attempt 1's KL on the whole attempt (Stage I's anchor)
        rows = rows + terms.beta1 * sequence_kl(logp, ref_logp, mask1, kl_estimator) / normaliser
    return rows.mean(), kl
