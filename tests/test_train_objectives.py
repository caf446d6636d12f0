"""SCoRe objectives on hand-sized toys: every number below is worked out by hand."""
import math

import pytest
import torch

from selfcorrect.config import TrainConfig
from selfcorrect.train import objectives as obj
from selfcorrect.train.engine import ds_config

LN2 = math.log(2.0)


# ------------------------------------------------------------------ baselines and shaping

def test_rloo_baseline_is_the_mean_of_the_other_samples():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0],
                      [1.0, 1.0, 1.0, 1.0]])
    b = obj.baseline(r, "rloo")
    # problem 0: (2 - r_i) / 3
    assert torch.allclose(b[0], torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3]))
    assert torch.allclose(r[0] - b[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    # all right: no signal
    assert torch.equal(r[1] - b[1], torch.zeros(4))


def test_mean_and_none_baselines():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert torch.equal(obj.baseline(r, "mean"), torch.full((1, 4), 0.5))
    assert torch.equal(obj.baseline(r, "none"), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        obj.baseline(torch.ones(3, 1), "rloo")


def test_shaping_bonus_alpha_10():
    r1 = torch.tensor([0.0, 1.0, 1.0, 0.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # wrong->right, right->right, right->wrong, wrong->wrong
    assert obj.shaped_reward(r1, r2, 10.0).tolist() == [11.0, 1.0, -10.0, 0.0]
    assert obj.shaped_reward(r1, r2, 0.0).tolist() == r2.tolist()   # the ablation


def test_stage_terms_per_turn():
    r1 = torch.tensor([[1.0, 0.0]])
    r2 = torch.tensor([[1.0, 1.0]])
    one = obj.stage_terms(1, r1, r2, alpha=10, beta1=0.01, beta2=0.1, baseline_kind="rloo")
    assert one.adv1.tolist() == [[0.0, 0.0]]           # no reward term on attempt 1
    assert one.adv2.tolist() == [[0.0, 0.0]]           # both right: RLOO gives no signal
    assert (one.beta1, one.beta2) == (0.1, 0.01)       # beta2 on attempt 1, beta1 on attempt 2
    two = obj.stage_terms(2, r1, r2, alpha=10, beta1=0.01, beta2=0.1, baseline_kind="rloo")
    assert two.adv1.tolist() == [[1.0, -1.0]]
    # shaped = [1, 11] (right->right, wrong->right); RLOO: [1 - 11, 11 - 1]
    assert two.adv2.tolist() == [[-10.0, 10.0]]
    assert (two.beta1, two.beta2) == (0.01, 0.01)


# ------------------------------------------------------------------ log-probs and KL

def test_token_logprobs_use_the_tempered_distribution():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])           # softmax: [1/4, 3/4]
    target = torch.tensor([[1]])
    assert obj.token_logprobs(logits, target, 1.0).item() == pytest.approx(math.log(0.75))
    # T = 2: softmax([0, ln3 / 2]) -> sqrt(3) / (1 + sqrt(3))
    assert obj.token_logprobs(logits, target, 2.0).item() == pytest.approx(
        math.log(math.sqrt(3) / (1 + math.sqrt(3))))
    assert obj.token_logprobs(logits, torch.tensor([[0]]), 0.5).item() == pytest.approx(math.log(0.1))


def test_kl_estimators_by_hand():
    logp = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.3)])
    ref = torch.tensor([math.log(0.25), math.log(0.5), math.log(0.3)])
    # d = [ln2, -ln2, 0]
    k1 = obj.kl_per_token(logp, ref, "k1")
    k2 = obj.kl_per_token(logp, ref, "k2")
    k3 = obj.kl_per_token(logp, ref, "k3")
    assert k1.tolist() == pytest.approx([LN2, -LN2, 0.0])
    assert k2.tolist() == pytest.approx([LN2 ** 2 / 2, LN2 ** 2 / 2, 0.0])
    assert k3.tolist() == pytest.approx([0.5 - 1 + LN2, 2 - 1 - LN2, 0.0])   # exp(-d) - 1 + d
    with pytest.raises(ValueError, match="kl_estimator"):
        obj.kl_per_token(logp, ref, "k4")


def test_kl_gradient_pulls_towards_the_reference():
    for estimator in ("k2", "k3"):
        logp = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
        ref = torch.tensor([math.log(0.25), math.log(0.5)])
        obj.kl_per_token(logp, ref, estimator).sum().backward()
        # above the reference: descent lowers log pi; below: raises it
        assert logp.grad[0] > 0 and logp.grad[1] < 0, estimator


def _exact_and_estimated_kl_gradients(estimator: str, seed: int = 0):
    """On a 7-token vocabulary: grad_theta of the estimator's expectation under pi (samples
    fixed, as in the loss), and of the exact KL(pi || ref) and KL(ref || pi); pi = softmax(theta)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    logp = torch.log_softmax(theta, -1)
    # E_{y ~ pi}[k(y)] with the sampling weights held fixed: what averaging the loss over
    # many sampled tokens converges to
    estimated = (logp.exp().detach() * obj.kl_per_token(logp, ref, estimator)).sum()
    (g_est,) = torch.autograd.grad(estimated, theta)
    logp = torch.log_softmax(theta, -1)
    forward = (logp.exp() * (logp - ref)).sum()                       # KL(pi || ref)
    (g_fwd,) = torch.autograd.grad(forward, theta)
    logp = torch.log_softmax(theta, -1)
    reverse = (ref.exp() * (ref - logp)).sum()                        # KL(ref || pi)
    (g_rev,) = torch.autograd.grad(reverse, theta)
    return g_est, g_fwd, g_rev


def test_default_estimator_gradient_is_the_papers_kl_exactly():
    default = TrainConfig().kl_estimator
    for seed in range(5):
        g_est, g_fwd, g_rev = _exact_and_estimated_kl_gradients(default, seed)
        assert torch.allclose(g_est, g_fwd, atol=1e-12), seed
        assert not torch.allclose(g_est, g_rev, atol=1e-3), seed


def test_k3_gradient_is_the_reverse_kl_and_k1_gradient_vanishes():
    for seed in range(5):
        g_est, g_fwd, g_rev = _exact_and_estimated_kl_gradients("k3", seed)
        assert torch.allclose(g_est, g_rev, atol=1e-12), seed
        assert not torch.allclose(g_est, g_fwd, atol=1e-3), seed
        g_k1, _, _ = _exact_and_estimated_kl_gradients("k1", seed)
        assert torch.allclose(g_k1, torch.zeros_like(g_k1), atol=1e-12), seed


def test_k2_loss_gradient_matches_the_exact_kl_by_sampling():
    """Through reinforce_loss itself: the average over many sampled tokens of the loss's
    gradient (advantage 0, beta 1) approaches grad KL(pi || ref)."""
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), -1)
    logp_all = torch.log_softmax(theta, -1)
    y = torch.multinomial(logp_all.exp().detach(), 200_000, replacement=True, generator=g)
    logp = logp_all[y][None]
    loss, _ = obj.reinforce_loss(logp, ref[y][None], torch.ones_like(logp), torch.zeros(1),
                                 torch.ones(1, dtype=torch.float64), normaliser=y.numel())
    (g_loss,) = torch.autograd.grad(loss.sum(), theta)
    logp_all = torch.log_softmax(theta, -1)
    forward = (logp_all.exp() * (logp_all - ref)).sum()
    (g_fwd,) = torch.autograd.grad(forward, theta)
    assert torch.allclose(g_loss, g_fwd, atol=0.02)


def test_k1_is_refused_as_a_loss_term():
    logp = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match="k1.*expected gradient is 0"):
        obj.reinforce_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1), torch.ones(1),
                           normaliser=1, kl_estimator="k1")


def test_reported_kl_is_the_unbiased_k3_value_whatever_the_estimator():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    for estimator in obj.LOSS_ESTIMATORS:
        _, kl = obj.reinforce_loss(logp, ref, torch.ones(1, 2), torch.zeros(1), torch.ones(1),
                                   normaliser=1, kl_estimator=estimator)
        assert torch.allclose(kl, obj.kl_per_token(logp, ref, "k3"))


# ------------------------------------------------------------------ packing and masks

def test_pack_masks_only_generated_tokens():
    rows = [([5, 6, 7], [8, 9]),   # prompt 3, generated 2
            ([5], [8, 9, 10])]     # prompt 1, generated 3
    p = obj.pack(rows, pad_id=0)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9], [0, 5, 8, 9, 10]]
    assert p.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert p.targets.tolist() == [[7, 8, 9], [8, 9, 10]]
    assert p.mask.tolist() == [[0, 1, 1], [1, 1, 1]]     # the prompt token 7 is not trained
    assert p.keep == 4


def test_loss_ignores_prompt_and_padding_positions():
    rows = [([5, 6, 7], [8, 9]), ([5], [8, 9, 10])]
    p = obj.pack(rows, pad_id=0)
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    ref = torch.full((2, 3), -2.0)
    loss, _ = obj.reinforce_loss(logp, ref, p.mask, torch.tensor([1.0, -1.0]),
                                 torch.tensor([0.1, 0.1]), normaliser=4)
    loss.sum().backward()
    assert logp.grad[0, 0] == 0                           # prompt position
    assert (logp.grad[0, 1:] != 0).all() and (logp.grad[1] != 0).all()


# ------------------------------------------------------------------ the loss

def toy(stage, r1, r2, *, beta1=0.01, beta2=0.1, estimator="k2"):
    """One problem, k = 2 samples: rows [y1 of s0, y1 of s1, y2 of s0, y2 of s1], 2 tokens each."""
    logp = torch.log(torch.tensor([[0.5, 0.4], [0.2, 0.9], [0.6, 0.3], [0.7, 0.1]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.4, 0.4], [0.3, 0.8], [0.5, 0.5], [0.6, 0.2]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    terms = obj.stage_terms(stage, torch.tensor([r1]), torch.tensor([r2]), alpha=10,
                            beta1=beta1, beta2=beta2)
    loss, _ = obj.episode_loss(*one_row_per_episode(logp, ref, mask), terms, slice(0, 2),
                               normaliser=2, kl_estimator=estimator)
    loss.backward()
    return loss, logp, ref, mask


def one_row_per_episode(logp, ref, mask):
    """Rows [attempt 1 of each episode..., attempt 2 ...] as one row per episode [y1, y2]
    with a mask per attempt (the layout the update scores)."""
    n = logp.shape[0] // 2
    zero = torch.zeros_like(mask[:n])
    return (torch.cat([logp[:n], logp[n:]], 1), torch.cat([ref[:n], ref[n:]], 1),
            torch.cat([mask[:n], zero], 1), torch.cat([zero, mask[n:]], 1))


def test_stage2_loss_value_by_hand():
    # r1 = [1, 0], r2 = [1, 1] -> A1 = [1, -1]; shaped [1, 11] -> A2 = [-10, 10]; beta1 on both
    loss, logp, ref, mask = toy(2, [1.0, 0.0], [1.0, 1.0])
    lp, rf = logp.detach(), ref
    adv = torch.tensor([1.0, -1.0, -10.0, 10.0])[:, None]
    per_token = (-adv * lp + 0.01 * (lp - rf) ** 2 / 2) * mask    # k2 = d^2 / 2
    expected = per_token.sum() / 2 / 2                     # / N = 2, mean over 2 episodes
    assert loss.item() == pytest.approx(expected.item())
    # d loss / d log pi = (-A + beta * d) * mask / (N * episodes)
    assert torch.allclose(logp.grad, (-adv + 0.01 * (lp - rf)) * mask / 4)


def test_signs_rewarded_tokens_go_up_penalised_go_down():
    _, logp, _, mask = toy(2, [1.0, 0.0], [1.0, 1.0], beta1=0.0)
    g = logp.grad
    assert (g[0][mask[0] > 0] < 0).all()    # A1 = +1: descent raises log pi
    assert (g[1][mask[1] > 0] > 0).all()    # A1 = -1: lowers it
    assert (g[2][mask[2] > 0] > 0).all()    # right->right after a wrong peer: A2 = -10
    assert (g[3][mask[3] > 0] < 0).all()    # wrong->right: A2 = +10


def test_gamma0_stage2_attempt1_gradient_ignores_r2():
    _, a, _, _ = toy(2, [1.0, 0.0], [1.0, 1.0])
    _, b, _, _ = toy(2, [1.0, 0.0], [0.0, 1.0])
    assert torch.equal(a.grad[:2], b.grad[:2])               # attempt-1 rows: unchanged
    assert not torch.equal(a.grad[2:], b.grad[2:])           # attempt-2 rows: changed


def test_gamma0_stage2_attempt2_gradient_sees_r1_only_through_the_shaping():
    _, a, _, _ = toy(2, [1.0, 0.0], [1.0, 1.0])
    _, b, _, _ = toy(2, [0.0, 1.0], [1.0, 1.0])
    assert not torch.equal(a.grad[2:], b.grad[2:])           # the bonus depends on r1


def test_gamma0_stage1_attempt1_gets_no_reward_gradient():
    # beta2 = 0: attempt-1 tokens get no gradient at all, whatever the rewards
    for r1, r2 in (([1.0, 0.0], [1.0, 0.0]), ([0.0, 0.0], [0.0, 1.0])):
        _, logp, _, _ = toy(1, r1, r2, beta2=0.0)
        assert torch.equal(logp.grad[:2], torch.zeros(2, 2))
        assert logp.grad[2:].abs().sum() > 0
    # beta2 > 0: the attempt-1 gradient is the KL's alone, the same for any rewards
    _, a, ref, mask = toy(1, [1.0, 0.0], [1.0, 0.0], beta2=0.1)
    _, b, _, _ = toy(1, [0.0, 1.0], [0.0, 1.0], beta2=0.1)
    assert torch.equal(a.grad[:2], b.grad[:2])
    d = (a.detach() - ref)[:2]
    assert torch.allclose(a.grad[:2], 0.1 * d * mask[:2] / 4)   # d k2 / d log pi = d


def test_micro_batches_sum_to_the_full_batch():
    """Split into micro-batches of episodes (sharing the step's advantages) = one big batch."""
    torch.manual_seed(0)
    logp, ref = torch.randn(8, 3), torch.randn(8, 3)          # 4 episodes: 4 attempt-1 rows, 4 attempt-2
    mask = (torch.rand(8, 3) > 0.3).float()
    terms = obj.stage_terms(2, torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                            torch.tensor([[1.0, 1.0], [0.0, 1.0]]), alpha=10, beta1=0.01, beta2=0.1)
    full, _ = obj.episode_loss(*one_row_per_episode(logp, ref, mask), terms, slice(0, 4),
                               normaliser=3)
    halves = []
    for lo in (0, 2):
        rows = [lo, lo + 1, 4 + lo, 4 + lo + 1]
        halves.append(obj.episode_loss(*one_row_per_episode(logp[rows], ref[rows], mask[rows]),
                                       terms, slice(lo, lo + 2), normaliser=3)[0])
    assert (halves[0] + halves[1]).item() / 2 == pytest.approx(full.item())


# ------------------------------------------------------------------ DeepSpeed config (pure)

def test_ds_config_from_train_config():
    train = TrainConfig(learning_rate=1e-5, gradient_accumulation_steps=2, gradient_clipping=0.5,
                        zero_stage=2, optimizer="adam")
    cpu = ds_config(train, micro_batch_size=8, gpu=False)
    assert cpu["train_micro_batch_size_per_gpu"] == 8
    assert cpu["gradient_accumulation_steps"] == 2
    assert cpu["gradient_clipping"] == 0.5
    assert cpu["zero_optimization"] == {"stage": 2}
    assert cpu["optimizer"]["type"] == "Adam"
    assert cpu["optimizer"]["params"]["lr"] == 1e-5
    assert cpu["optimizer"]["params"]["adam_w_mode"] is False
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["bf16"] == {"enabled": False}
    assert "scheduler" not in cpu                          # constant learning rate
    gpu = ds_config(TrainConfig(), micro_batch_size=4, gpu=True, warmup_steps=10)
    assert gpu["bf16"] == {"enabled": True}
    assert "torch_adam" not in gpu["optimizer"]["params"]
    assert gpu["optimizer"]["type"] == "AdamW"
    assert gpu["scheduler"]["type"] == "WarmupLR"
    assert gpu["scheduler"]["params"]["warmup_num_steps"] == 10


def test_single_turn_terms_train_attempt1_on_r1_only():
    r1, r2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for stage in (1, 2):
        t = obj.stage_terms(stage, r1, r2, alpha=10.0, beta1=0.01, beta2=0.1, single_turn=True)
        assert torch.equal(t.adv1, torch.tensor([[1.0, -1.0]]))      # RLOO on r1
        assert torch.equal(t.adv2, torch.zeros(1, 2))
        assert (t.beta1, t.beta2) == (0.01, 0.0)


def test_token_entropy_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 1e-12], [1.0, 1e-12, 1e-12]]]))
    ent = obj.token_entropy(logits, 1.0)
    assert torch.allclose(ent, torch.tensor([[math.log(2), 0.0]]), atol=1e-6)
    # temperature 2 flattens [log 1, log 1e-12 ...]: entropy grows
    assert obj.token_entropy(logits, 2.0)[0, 1] > 0


def _tiny_lm(seed: int, vocab: int = 4):
    """A real (tiny) GPT-2 in float64, small enough to enumerate every continuation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(cfg).double().eval()        # eval: no dropout
    with torch.no_grad():       # a larger init, so policy and reference differ visibly
        for p in model.parameters():
            p.mul_(8.0)
    return model


def _all_continuations(model, prompt: list[int], length: int, vocab: int):
    """Every continuation y of `length` tokens: (token log-probs [N, length] under the model,
    the next-token log-distributions at each position [N, length, vocab])."""
    import itertools

    ys = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
    ids = torch.cat([torch.tensor(prompt).expand(len(ys), -1), ys], 1)
    dist = torch.log_softmax(model(input_ids=ids).logits[:, len(prompt) - 1:-1], -1)
    return dist.gather(-1, ys[..., None]).squeeze(-1), dist      # float64 throughout


def test_sequence_kl_equals_the_sum_of_token_kls_and_its_k2_gradient_is_exact():
    """On a tiny GPT-2, over all 4^3 continuations: the sequence KL(pi || ref) (exact) equals
    the expected sum of per-token KLs (chain rule) and the expectation of sequence_kl's k1;
    sequence_kl's k2, as a loss, has the exact sequence KL's gradient, which the per-token
    k2 (each token's own log-ratio only) does not."""
    vocab, prompt = 4, [1, 2]
    policy, ref = _tiny_lm(0, vocab), _tiny_lm(1, vocab)
    with torch.no_grad():
        ref_logp, ref_dist = _all_continuations(ref, prompt, 3, vocab)
    logp, dist = _all_continuations(policy, prompt, 3, vocab)
    mask = torch.ones_like(logp)
    weight = logp.sum(-1).exp()                                   # pi(y)
    assert weight.sum().item() == pytest.approx(1.0)
    exact = (weight * (logp - ref_logp).sum(-1)).sum()           # KL of sequences
    per_token = (dist.exp() * (dist - ref_dist)).sum(-1)          # KL at each prefix [N, 3]
    # position t's prefix y_<t has probability pi(y_<t); each continuation row carries it
    # weighted by pi(y_t..) so summing pi(y) * KL_t over rows is E_{y<t}[KL_t]
    chained = (weight[:, None] * per_token).sum()
    assert exact.item() > 0.05
    assert chained.item() == pytest.approx(exact.item(), rel=1e-9)
    k1 = (weight * obj.sequence_kl(logp, ref_logp, mask, "k1")).sum()
    assert k1.item() == pytest.approx(exact.item(), rel=1e-9)

    params = [p for p in policy.parameters() if p.requires_grad]
    (g_exact,) = [torch.cat([g.flatten() for g in torch.autograd.grad(exact, params, retain_graph=True)])]
    fixed = weight.detach()
    seq = (fixed * obj.sequence_kl(logp, ref_logp, mask, "k2")).sum()
    g_seq = torch.cat([g.flatten() for g in torch.autograd.grad(seq, params, retain_graph=True)])
    tok = (fixed * (obj.kl_per_token(logp, ref_logp, "k2") * mask).sum(-1)).sum()
    g_tok = torch.cat([g.flatten() for g in torch.autograd.grad(tok, params, retain_graph=True)])
    assert torch.allclose(g_seq, g_exact, atol=1e-9, rtol=1e-7)
    assert (g_tok - g_exact).norm() > 1e-3 * g_exact.norm()


def test_stage1_sequence_kl_replaces_attempt1s_token_kl_in_the_loss():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.4, 0.3]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1, 0.3]], dtype=torch.float64))
    mask1, mask2 = torch.tensor([[1.0, 1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    zero = torch.zeros(1, 1)
    for kind in ("token", "sequence"):
        terms = obj.stage_terms(1, zero, zero, alpha=10, beta1=0.01, beta2=0.5, stage1_kl=kind,
                               baseline_kind="none")
        loss, _ = obj.episode_loss(logp, ref, mask1, mask2, terms, slice(0, 1), normaliser=4)
        d = torch.log(torch.tensor([2.0, 0.5, 4.0]))        # token log-ratios of y1, y1, y2
        attempt2 = 0.01 * d[2] ** 2 / 2
        attempt1 = 0.5 * (d[0] + d[1]) ** 2 / 2 if kind == "sequence" else 0.5 * (d[0] ** 2 + d[1] ** 2) / 2
        assert loss.item() == pytest.approx(((attempt1 + attempt2) / 4).item()), kind
    assert obj.stage_terms(2, zero, zero, alpha=10, beta1=0.01, beta2=0.5, stage1_kl="sequence",
                           baseline_kind="none").kl1 == "token"     # Stage II: per token
    with pytest.raises(ValueError, match="train.stage1_kl"):
        obj.stage_terms(1, zero, zero, alpha=10, beta1=0.01, beta2=0.5, stage1_kl="episode")
