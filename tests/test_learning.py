"""Learning, not just running: on a toy task with a dense reward, RL must raise the reward.

A randomly initialised model with the testbed's character tokenizer writes 6 characters per
attempt; the reward is the share of them that are the digit 7 (dense: every sample gets a
graded reward). A few dozen SCoRe steps must raise it far above where it starts, on both
attempts in Stage II: if the advantage sign, the log-prob/temperature pairing, the masks or
the optimiser step break, the reward stays flat and this fails.
"""
import dataclasses

import pytest

from selfcorrect import config
from selfcorrect.experiments import testbed
from selfcorrect.records import Problem
from selfcorrect.train import loop


def sevens(problem: Problem, completion: str) -> float:
    return sum(ch == "7" for ch in completion[:6]) / 6


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    from selfcorrect import models

    cfg = config.load("testbed", overrides=["pretrain.hidden=32", "pretrain.layers=1",
                                            "pretrain.heads=2", "pretrain.seed=3"])
    tok = testbed.tokenizer()
    path = tmp_path_factory.mktemp("toy") / "model"
    models.save(testbed.new_model(cfg, tok), tok, str(path))
    return cfg, str(path)


def test_rl_raises_a_dense_reward_on_both_attempts(toy_model, tmp_path, monkeypatch):
    from selfcorrect.train.engine import single_process_env

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(key, "")   # restored (unset) after the test: later tests get a free port
        monkeypatch.delenv(key)
    single_process_env()
    cfg, path = toy_model
    cfg = config.load("testbed", overrides=[
        f"model.path={path}", "train.stage1_steps=0", "train.stage2_steps=30",
        "train.problems_per_step=2", "train.samples_per_problem=8", "train.max_new_tokens=6",
        "train.learning_rate=0.01", "train.alpha=0", "train.beta1=0", "generate.batch_size=32"])
    problems = [Problem(f"toy-{i}", "math", f"{i}+{i}", answer=str(2 * i)) for i in range(10, 20)]
    summary = loop.run_stage(cfg, 2, init_path=path, reference_path=path, problems=problems,
                             output_dir=str(tmp_path / "out"), reward_fn=sevens)
    import json

    steps = json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"]
    first = sum(s["reward_t1"] + s["reward_t2"] for s in steps[:5]) / 10
    last = sum(s["reward_t1"] + s["reward_t2"] for s in steps[-5:]) / 10
    assert first < 0.2, f"an untrained model should rarely write 7s (mean reward {first:.2f})"
    assert last > first + 0.3, f"reward did not rise: {first:.2f} -> {last:.2f}"
    assert min(steps[-1]["reward_t1"], steps[-1]["reward_t2"]) > first + 0.2
    assert summary["steps"] == 30
