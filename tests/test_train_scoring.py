"""One row per episode and the chunked vocabulary projection (selfcorrect.train.scoring)."""
import pytest
import torch

from selfcorrect import config, models, rollout
from selfcorrect.records import Problem
from selfcorrect.train import objectives as obj
from selfcorrect.train import scoring

PROBLEM = Problem(id="p0", task="math", prompt="What is 2 + 2?", answer="4")


def full_logits_score(model, packed, temperature):
    """The reference computation: the model's logits for the whole row, log-softmax over them."""
    logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                   position_ids=packed.position_ids, logits_to_keep=packed.keep).logits[:, :-1]
    return obj.token_logprobs(logits, packed.targets, temperature) * packed.mask, \
        obj.token_entropy(logits, temperature) * packed.mask


@pytest.fixture(scope="module")
def tiny():
    return models.load(config.load("tiny").model)


def episodes(model, tok, n=3):
    torch.manual_seed(0)
    return rollout.two_attempts(model, tok, [PROBLEM] * n, temperature=1.0, max_new_tokens=6,
                                batch_size=4)


def test_chunked_scores_and_gradients_equal_the_full_logits(tiny):
    model, tok = tiny
    packed, _, _ = scoring.pack_episodes(episodes(model, tok), tok.pad_token_id)
    want_logp, want_ent = full_logits_score(model, packed, 0.7)
    (g_want,) = torch.autograd.grad(want_logp.sum(), model.transformer.h[0].mlp.c_fc.weight)
    vocab = model.get_output_embeddings().weight.shape[0]
    seen = []
    real = scoring.final_logits

    def counting(m, h):
        seen.append(h.shape[0])
        return real(m, h)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scoring, "final_logits", counting)
        logp, ent = scoring.score(model, packed, 0.7, entropy=True, chunk_bytes=3 * 4 * vocab)
        (g_got,) = torch.autograd.grad(logp.sum(), model.transformer.h[0].mlp.c_fc.weight)
    assert torch.allclose(logp, want_logp, atol=1e-5) and torch.allclose(ent, want_ent, atol=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-5)
    assert max(seen) == 3                       # never more than 3 tokens' logits at once
    assert sum(seen) >= 2 * int(packed.mask.sum())   # each chunk recomputed in the backward pass


def test_one_row_per_episode_scores_each_attempt_as_its_own_row_would(tiny):
    model, tok = tiny
    eps = episodes(model, tok)
    packed, mask1, mask2 = scoring.pack_episodes(eps, tok.pad_token_id)
    with torch.no_grad():
        one = scoring.score(model, packed, 1.0)
        for turn, mask in (("first", mask1), ("second", mask2)):
            rows = obj.pack([(getattr(e, turn).prompt_ids, getattr(e, turn).ids) for e in eps],
                            tok.pad_token_id)
            own = scoring.score(model, rows, 1.0)
            got = [row[m.bool()] for row, m in zip(one, mask)]
            want = [row[m.bool()] for row, m in zip(own, rows.mask)]
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want)), turn
    assert (mask1 * mask2).sum() == 0 and packed.mask.sum() == mask1.sum() + mask2.sum()
    assert mask1.sum() == sum(len(e.first.ids) for e in eps)


def test_shared_prompts_score_and_train_as_whole_rows_do(tiny):
    """Two problems of different prompt lengths, three episodes each: each prompt encoded
    once, every row continuing it, gives the whole rows' log-probs and gradients."""
    model, tok = tiny
    other = Problem(id="p1", task="math", prompt="What is 12 + 30, in words?", answer="42")
    torch.manual_seed(0)
    eps = rollout.two_attempts(model, tok, [PROBLEM, other], samples=3, temperature=1.0,
                               max_new_tokens=6, batch_size=6)
    whole = scoring.pack_episodes(eps, tok.pad_token_id)
    shared = scoring.pack_episodes(eps, tok.pad_token_id, share_prompts=True)
    assert whole[0].prefix is None and shared[0].prefix.input_ids.shape[0] == 2
    assert shared[0].input_ids.numel() < whole[0].input_ids.numel()
    assert all(torch.equal(a, b) for a, b in zip(whole[1:], shared[1:]))       # same masks
    weight = model.transformer.h[0].attn.c_attn.weight
    got = []
    for packed, _, _ in (whole, shared):
        logp, ent = scoring.score(model, packed, 0.7, entropy=True)
        got.append((logp, ent, torch.autograd.grad((logp * packed.mask).sum(), weight)[0]))
    for a, b in zip(*got):
        assert torch.allclose(a, b, atol=1e-5)
    one_prompt = scoring.pack_episodes(eps[:1], tok.pad_token_id, share_prompts=True)[0]
    assert one_prompt.prefix is None          # nothing shared: plain rows


def test_an_episode_whose_second_prompt_was_re_rendered_is_refused(tiny):
    model, tok = tiny
    e = episodes(model, tok, 1)[0]
    e.second.prompt_ids = e.second.prompt_ids[1:]
    with pytest.raises(ValueError, match="p0/0: attempt 2's prompt does not extend"):
        scoring.pack_episodes([e], tok.pad_token_id)


def test_second_prompt_is_the_chat_template_render_of_the_two_turns(tmp_path):
    """Built from ids, attempt 2's prompt is what rendering the conversation would give when
    attempt 1 stopped on the end-of-turn token (the testbed's character tokenizer)."""
    from selfcorrect import prompts
    from selfcorrect.experiments import testbed

    tok = testbed.tokenizer()
    first = tok(prompts.render(tok, prompts.messages(PROBLEM)), add_special_tokens=False)["input_ids"]
    y1 = tok("2+2=4", add_special_tokens=False)["input_ids"] + rollout.end_of_turn_ids(tok)
    turn = rollout.Turn(first, y1, "2+2=4", truncated=False)
    rendered = prompts.render(tok, prompts.messages(PROBLEM, "2+2=4"))
    assert rollout.second_prompt(tok, PROBLEM, turn) == tok(rendered, add_special_tokens=False)["input_ids"]
    cut = rollout.Turn(first, y1[:-1], "2+2=4", truncated=True)     # its turn gets closed
    assert rollout.second_prompt(tok, PROBLEM, cut) == tok(rendered, add_special_tokens=False)["input_ids"]


def _episode(n_prompt, n1, n2, sample=0):
    t1 = rollout.Turn(list(range(n_prompt)), [7] * n1, "a", False)
    t2 = rollout.Turn(t1.prompt_ids + t1.ids + [9], [8] * n2, "b", False)
    return rollout.Episode(PROBLEM, sample, t1, t2)


def test_micro_batches_by_length_pad_less_and_cover_every_episode():
    from selfcorrect.train import loop

    eps = [_episode(5, n, n, i) for i, n in enumerate([30, 2, 28, 3, 29, 1])]
    by_length = loop.micro_batches(eps, 2)
    in_order = loop.micro_batches(eps, 2, by_length=False)
    assert sorted(i for b in by_length for i in b) == list(range(6)) and len(by_length) == 2
    assert loop.padded_share(eps, by_length) < 0.1 < 0.4 < loop.padded_share(eps, in_order)


def test_micro_batches_picked_by_index_sum_to_the_full_batch():
    torch.manual_seed(0)
    logp, ref = torch.randn(4, 5), torch.randn(4, 5)
    m1 = torch.tensor([[1, 1, 0, 0, 0]] * 4, dtype=torch.float)
    m2 = torch.tensor([[0, 0, 0, 1, 1]] * 4, dtype=torch.float)
    terms = obj.stage_terms(2, torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                            torch.tensor([[1.0, 1.0], [0.0, 1.0]]), alpha=10, beta1=0.01, beta2=0.1)
    full, _ = obj.episode_loss(logp, ref, m1, m2, terms, slice(0, 4), normaliser=3)
    parts = [obj.episode_loss(logp[idx], ref[idx], m1[idx], m2[idx], terms, idx, normaliser=3)[0]
             for idx in (torch.tensor([3, 0]), torch.tensor([1, 2]))]
    assert (parts[0] + parts[1]).item() / 2 == pytest.approx(full.item())


def test_gradient_checkpointing_recomputes_layers_and_leaves_the_gradient_unchanged(tiny):
    from selfcorrect.train import engine as ds_engine

    _, tok = tiny
    grads, calls = [], []
    for on in (False, True):
        model = models.load(config.load("tiny").model)[0]
        model.eval()
        packed, _, _ = scoring.pack_episodes(episodes(model, tok), tok.pad_token_id)
        if on:
            ds_engine.gradient_checkpointing(model)
        layer = model.transformer.h[0]
        seen, mlp_forward = [], layer.mlp.forward   # (module hooks do not fire in a recompute)
        layer.mlp.forward = lambda *a, **k: seen.append(1) or mlp_forward(*a, **k)
        scoring.score(model, packed, 1.0).sum().backward()
        grads.append(layer.mlp.c_fc.weight.grad.clone())
        calls.append(len(seen))
        assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert calls == [1, 2]          # checkpointed: the layer runs again in the backward pass


def test_vllm_rollouts_need_a_model_folder():
    from selfcorrect.train import loop

    with pytest.raises(config.ConfigError, match="train.rollout_backend: vllm loads the policy"):
        loop.vllm_backend(config.load("tiny", overrides=["train.rollout_backend=vllm"]), None, 0)


def test_a_generation_backend_gets_the_turn2_prompts_as_ids(tiny):
    """Any backend with rollout.generate's signature (the vLLM one on GPUs) gets token ids,
    and attempt 2's prompt extends attempt 1's row."""
    model, tok = tiny
    got = []

    def backend(model, tokenizer, prompts, **kw):
        got.append(prompts)
        return rollout.generate(model, tokenizer, prompts, **kw)

    eps = rollout.two_attempts(model, tok, [PROBLEM] * 2, temperature=1.0, max_new_tokens=4,
                               backend=backend)
    assert all(isinstance(p, list) and all(isinstance(i, int) for i in p) for b in got for p in b)
    assert got[1] == [e.second.prompt_ids for e in eps]
    scoring.pack_episodes(eps, tok.pad_token_id)      # one row per episode: the prefix holds


@pytest.mark.slow
def test_zero3_scores_in_chunks_with_the_whole_models_log_probs_and_gradients(tiny):
    """Under ZeRO-3 the head's weight is partitioned: the projection still runs in chunks
    (the head module called per chunk, its hooks gathering the weight), never the whole
    [rows, tokens, vocab] block the forward's own logits were, with the same numbers."""
    import copy

    from deepspeed.utils import safe_get_full_grad

    from selfcorrect.train import engine as ds_engine

    model, tok = tiny
    cfg = config.load("tiny", overrides=["train.zero_stage=3"])
    packed, _, _ = scoring.pack_episodes(episodes(model, tok), tok.pad_token_id)
    plain = copy.deepcopy(model)
    want = scoring.score(plain, packed, 0.7)
    want.sum().backward()
    engine = ds_engine.build(copy.deepcopy(model), cfg.train, micro_batch_size=3)
    assert scoring._partitioned(engine.module)
    made = []
    engine.module.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: made.append(out.numel()))
    vocab = model.config.vocab_size
    got = scoring.score(engine, packed, 0.7, chunk_bytes=3 * 4 * vocab)
    engine.backward(got.sum())
    assert torch.allclose(got, want, atol=1e-5)
    for name in ("transformer.h.0.mlp.c_fc.weight", "transformer.wte.weight"):  # wte: the head
        grad = safe_get_full_grad(engine.module.get_parameter(name))
        assert torch.allclose(grad, plain.get_parameter(name).grad, atol=1e-4), name
    assert max(made) == 3 * vocab < packed.mask.numel() * vocab     # one 3-token chunk at most
    assert len(made) >= 1 + 2 * -(-int(packed.mask.sum()) // 3)      # each recomputed backward
