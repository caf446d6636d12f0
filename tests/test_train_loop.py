"""The training loop on the tiny model through a real DeepSpeed engine (CPU, one process).

The first DeepSpeed initialize on a machine JIT-builds its CPU comm op (~40 s, then cached).
"""
import json
import math

import pytest
import torch

from selfcorrect import config, models
from selfcorrect.records import Problem
from selfcorrect.rollout import Episode, Turn
from selfcorrect.train import engine as ds_engine
from selfcorrect.train import loop
from selfcorrect.train import objectives as obj
from selfcorrect.train import scoring

PROBLEMS = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i}?", answer=str(2 * i))
            for i in range(4)]


def parity_reward(problem: Problem, completion: str) -> float:
    """Deterministic stand-in for the verifier: right when the completion's length is even."""
    return float(len(completion) % 2 == 0)


def test_score_matches_the_sampling_distribution(tiny_config):
    """On-policy: the training forward pass scores sampled tokens exactly as generate sampled them."""
    model, tok = models.load(tiny_config.model)
    enc = tok(["User: What is 2 + 2?\n\nAssistant: ", "User: Hi\n\nAssistant: "],
              return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                         max_new_tokens=6, min_new_tokens=6, pad_token_id=tok.pad_token_id,
                         output_scores=True, return_dict_in_generate=True)
    gen = out.sequences[:, enc["input_ids"].shape[1]:]
    expected = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, gen[..., None]).squeeze(-1)
    rows = [(ids[m.bool()].tolist(), g.tolist()) for ids, m, g in
            zip(enc["input_ids"], enc["attention_mask"], gen)]
    with torch.no_grad():
        got = scoring.score(model, obj.pack(rows, tok.pad_token_id), 0.7)
    assert torch.allclose(got, expected, atol=1e-4)


def episode(tok, prompt: str, answer1: str, answer2: str, sample: int) -> Episode:
    p1 = tok(prompt, add_special_tokens=False)["input_ids"]
    y1 = tok(answer1, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    p2 = p1 + y1 + tok("\n\nUser: Check it.\n\nAssistant: ", add_special_tokens=False)["input_ids"]
    y2 = tok(answer2, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return Episode(PROBLEMS[0], sample, Turn(p1, y1, answer1, False), Turn(p2, y2, answer2, False))


def attempt2_logprob(model, tok, ep: Episode, temperature: float) -> float:
    with torch.no_grad():
        packed = obj.pack([(ep.second.prompt_ids, ep.second.ids)], tok.pad_token_id)
        return (scoring.score(model, packed, temperature) * packed.mask).sum().item()


def test_one_engine_step_raises_rewarded_and_lowers_penalised_attempt2(tiny_config):
    train = tiny_config.train
    policy, tok = models.load(tiny_config.model)
    reference = ds_engine.freeze(models.load(tiny_config.model)[0])
    engine = ds_engine.build(policy, train, micro_batch_size=2)
    prompt = "User: What is 2 + 2?\n\nAssistant: "
    eps = [episode(tok, prompt, " 5", " 4", 0),          # wrong -> right
           episode(tok, prompt, " 5", " banana", 1)]     # wrong -> wrong
    r1, r2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])   # RLOO: A2 = [+1, -1]
    before = [attempt2_logprob(engine.module, tok, e, train.temperature) for e in eps]
    stats = loop.train_step(engine, reference, eps, r1, r2, stage=1, train=train,
                            pad_id=tok.pad_token_id)
    after = [attempt2_logprob(engine.module, tok, e, train.temperature) for e in eps]
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert stats["kl_t1"] == pytest.approx(0.0, abs=1e-6)   # policy == reference before the step
    assert math.isfinite(stats["loss"])
    # the reference did not move
    ref_now = attempt2_logprob(reference, tok, eps[0], train.temperature)
    assert ref_now == pytest.approx(before[0], abs=1e-5)


def test_stage1_kl_setting_reaches_the_step_loss(tiny_config):
    """train.stage1_kl reaches the step: with the policy away from the reference, Stage I's
    loss (zero advantages: KL terms only) differs between token and sequence."""
    import dataclasses

    losses = {}
    for kind in ("token", "sequence"):
        train = dataclasses.replace(tiny_config.train, stage1_kl=kind, beta2=1.0)
        policy, tok = models.load(tiny_config.model)
        ref_cfg = dataclasses.replace(tiny_config.model, seed=tiny_config.model.seed + 1)
        reference = ds_engine.freeze(models.load(ref_cfg)[0])     # differs from the policy
        engine = ds_engine.build(policy, train, micro_batch_size=2)
        prompt = "User: What is 2 + 2?\n\nAssistant: "
        eps = [episode(tok, prompt, " 5 or so", " 4", 0), episode(tok, prompt, " 5 or so", " 3", 1)]
        zero = torch.zeros(1, 2)
        losses[kind] = loop.train_step(engine, reference, eps, zero, zero, stage=1, train=train,
                                       pad_id=tok.pad_token_id)["loss"]
    assert losses["sequence"] != pytest.approx(losses["token"], rel=1e-3)
    assert min(losses.values()) > 0       # Stage I, zero advantages: the KL terms only


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    cfg = config.load("tiny", overrides=["train.gradient_accumulation_steps=2"])
    root = tmp_path_factory.mktemp("score")
    s1 = loop.run_stage(cfg, 1, init_path=None, reference_path=None, problems=PROBLEMS,
                        output_dir=str(root / "stage1"), reward_fn=parity_reward,
                        log_dir=str(root / "tb1"))
    s2 = loop.run_stage(cfg, 2, init_path=str(root / "stage1"), reference_path=None,
                        problems=PROBLEMS, output_dir=str(root / "stage2"),
                        reward_fn=parity_reward, log_dir=str(root / "tb2"))
    return cfg, root, s1, s2


@pytest.mark.slow
def test_run_stage_writes_a_complete_checkpoint(two_stages):
    cfg, root, s1, s2 = two_stages
    for stage, summary in ((1, s1), (2, s2)):
        out = root / f"stage{stage}"
        for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
            assert (out / name).is_file(), name
        assert json.loads((out / "resolved_config.json").read_text()) == cfg.to_dict()
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["stage"] == stage and len(metrics["steps"]) == 2
        assert metrics["summary"] == summary
        assert all(isinstance(v, float) and math.isfinite(v) for v in summary.values()), summary
        for key in ("reward_t1", "reward_t2", "delta", "i_to_c", "c_to_i", "kl_t1", "kl_t2",
                    "len_t1", "len_t2", "truncated", "loss", "tokens_per_s"):
            assert key in summary, key
        assert 0 <= summary["reward_t1"] <= 1 and summary["len_t1"] > 0


def test_stage_steps_become_train_step_records_that_pass_their_gate(two_stages, tmp_path):
    from selfcorrect import validate
    from selfcorrect.records import TrainStep, read
    from selfcorrect.train.launch import write_steps

    _, root, _, _ = two_stages
    for stage in (1, 2):
        path = str(tmp_path / f"steps{stage}.jsonl")
        assert write_steps(str(root / f"stage{stage}"), path) == 2
        history = json.loads((root / f"stage{stage}" / "metrics.json").read_text())["steps"]
        rows = read(path, TrainStep)
        assert [(r.stage, r.step) for r in rows] == [(stage, 0), (stage, 1)]
        assert [r.kl_t1 for r in rows] == [h["kl_t1"] for h in history]
        assert validate.validate("train_steps", path).success


@pytest.mark.slow
def test_run_stage_logs_tensorboard_scalars(two_stages):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, root, _, _ = two_stages
    events = EventAccumulator(str(root / "tb2"))
    events.Reload()
    rewards = events.Scalars("stage2/reward_t2")
    assert [e.step for e in rewards] == [0, 1]
    assert "stage2/kl_t1" in events.Tags()["scalars"]


@pytest.mark.slow
def test_stage2_trains_from_stage1_against_the_base_reference(two_stages):
    cfg, root, _, _ = two_stages
    steps1 = json.loads((root / "stage1" / "metrics.json").read_text())["steps"]
    steps2 = json.loads((root / "stage2" / "metrics.json").read_text())["steps"]
    assert steps1[0]["kl_t1"] == pytest.approx(0.0, abs=1e-6)   # starts at the reference
    assert steps2[0]["kl_t1"] > 1e-6                             # starts at Stage I, ref is base
    base = models.load(cfg.model)[0].state_dict()
    w1 = models.load(cfg.model, str(root / "stage1"))[0].state_dict()
    w2 = models.load(cfg.model, str(root / "stage2"))[0].state_dict()
    key = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(base[key], w1[key]) and not torch.equal(w1[key], w2[key])


def test_cycle_covers_every_problem_each_pass_and_is_seeded():
    gen_a, gen_b = loop.cycle(PROBLEMS, 3), loop.cycle(PROBLEMS, 3)
    first = [next(gen_a) for _ in range(8)]
    assert first == [next(gen_b) for _ in range(8)]
    assert {p.id for p in first[:4]} == {p.id for p in first[4:]} == {p.id for p in PROBLEMS}


def test_gradient_accumulation_must_divide_the_step(tiny_config):
    import dataclasses

    train = dataclasses.replace(tiny_config.train, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        loop.train_step(None, None, [None] * 4, torch.zeros(2, 2), torch.zeros(2, 2), stage=1,
                        train=train, pad_id=0)


def test_default_reward_is_the_shared_verifier():
    p = Problem(id="a", task="math", prompt="What is 2 + 3?", answer="5")
    right = "Final Answer: The final answer is $5$. I hope it is correct."
    assert loop.verifier_reward(p, right) == 1.0
    assert loop.verifier_reward(p, right.replace("$5$", "$6$")) == 0.0


@pytest.mark.slow
def test_zero3_checkpoint_holds_the_trained_weights(tmp_path):
    """ZeRO-3 partitions the parameters; the saved model must be the gathered, trained one."""
    cfg = config.load("tiny", overrides=["train.zero_stage=3", "train.stage1_steps=1"])
    summary = loop.run_stage(cfg, 1, init_path=None, reference_path=None, problems=PROBLEMS,
                             output_dir=str(tmp_path), reward_fn=parity_reward)
    assert summary["steps"] == 1.0
    key = "transformer.h.0.attn.c_attn.weight"
    saved = models.load(cfg.model, str(tmp_path))[0].state_dict()[key]
    assert saved.shape == models.load(cfg.model)[0].state_dict()[key].shape
    assert not torch.equal(saved, models.load(cfg.model)[0].state_dict()[key])


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_engine_uses_the_configured_optimizer(name, cls):
    import dataclasses

    train = dataclasses.replace(config.TrainConfig(), optimizer=name, learning_rate=1e-4)
    engine = ds_engine.build(torch.nn.Linear(3, 2), train, micro_batch_size=1)
    assert type(engine.optimizer) is cls
    assert engine.get_lr() == [1e-4]
    assert not engine.module.training          # dropout off: scoring matches sampling


def test_sft_baselines_keep_the_rl_rows_constant_learning_rate(tiny_config, tmp_path):
    """STaR / Pair-SFT train at the RL rows' constant rate (issue 23: SFT used to decay to 0);
    sft.train's own default still decays (the testbed's pretraining)."""
    import dataclasses

    from selfcorrect.experiments import baselines
    from selfcorrect.records import Attempt, Verdict
    from selfcorrect.train import sft

    cfg = dataclasses.replace(tiny_config, train=dataclasses.replace(
        tiny_config.train, stage1_steps=2, stage2_steps=2, problems_per_step=1,
        samples_per_problem=2, learning_rate=1e-3))
    problem = PROBLEMS[0]
    attempts = [Attempt(problem.id, s, t, text, "base") for s in (0, 1)
                for t, text in ((1, "5"), (2, "4"))]
    verdicts = [Verdict(problem.id, s, t, t == 2, float(t == 2)) for s in (0, 1) for t in (1, 2)]
    model, tok = models.load(cfg.model)
    history = baselines.train(cfg, "star", "", [problem], attempts, verdicts,
                              str(tmp_path / "star"), model=model, tok=tok)
    assert [h["lr"] for h in history] == [1e-3] * 4
    rows = [row for c in baselines.conversations("star", [problem], attempts, verdicts)
            for row in sft.turn_rows(tok, c, last_only=True)]
    _, decayed = sft.train(models.load(cfg.model)[0], tok, rows,
                           sft.SFTConfig(steps=4, batch_size=2, learning_rate=1e-3), cfg.train)
    assert len({h["lr"] for h in decayed}) > 1 and max(h["lr"] for h in decayed) <= 1e-3
