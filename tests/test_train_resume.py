"""Resume, ZeRO stages and the ablation switches, on the tiny model through real DeepSpeed engines."""
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from selfcorrect import config, models
from selfcorrect.records import Problem
from selfcorrect.train import checkpoint, loop

PROBLEMS = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i}?", answer=str(2 * i))
            for i in range(5)]
TRAJECTORY = ("loss", "reward_t1", "reward_t2", "kl_t1", "kl_t2", "entropy_t1", "entropy_t2",
              "len_t1", "len_t2", "edit_ratio")
KEY = "transformer.h.0.attn.c_attn.weight"


def parity_reward(problem: Problem, completion: str) -> float:
    """Deterministic stand-in for the verifier: right when the completion's length is even."""
    return float(len(completion) % 2 == 0)


def own(cfg, out):
    """cfg with `out` as its output_dir: each run below keeps its checkpoints apart."""
    return dataclasses.replace(cfg, output_dir=str(out)) if "://" not in cfg.output_dir else cfg


def run(cfg, out, stage=2, **kw):
    return loop.run_stage(own(cfg, out), stage, init_path=None, reference_path=None,
                          problems=PROBLEMS, output_dir=str(out), reward_fn=parity_reward, **kw)


def checkpoints(cfg, out, stage=2) -> str:
    return checkpoint.default_uri(own(cfg, out), stage, PROBLEMS)


def steps_of(out) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())["steps"]


def assert_same_trajectory(a: list[dict], b: list[dict], rel=1e-5, abs=1e-6):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        for key in TRAJECTORY:
            assert step_a[key] == pytest.approx(step_b[key], rel=rel, abs=abs), (step_a["step"], key)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same 4 steps of Stage II, uninterrupted and as 2 steps + a kill + a resume
    (with a base-model first attempt for one of each problem's 2 samples, paper 5.3)."""
    cfg = config.load("tiny", overrides=["train.stage2_steps=4", "train.checkpoint_every=2",
                                         "train.keep_checkpoints=1",
                                         "train.gradient_accumulation_steps=2",
                                         "train.offline_first_attempts=1"])
    root = tmp_path_factory.mktemp("resume")
    run(cfg, root / "whole")
    partial = run(cfg, root / "killed", stop_after=3)      # checkpoint at step 2, then step 3 lost
    run(cfg, root / "killed")                               # resumes at step 2
    return cfg, root, partial


@pytest.mark.slow
def test_resume_continues_the_same_trajectory(resumed):
    cfg, root, partial = resumed
    whole, killed = steps_of(root / "whole"), steps_of(root / "killed")
    assert partial["steps"] == 3.0
    assert [s["step"] for s in killed] == [0.0, 1.0, 2.0, 3.0]
    assert_same_trajectory(whole, killed)
    w_whole = models.load(cfg.model, str(root / "whole"))[0].state_dict()[KEY]
    w_killed = models.load(cfg.model, str(root / "killed"))[0].state_dict()[KEY]
    assert torch.allclose(w_whole, w_killed, atol=1e-6)
    assert not torch.equal(w_whole, models.load(cfg.model)[0].state_dict()[KEY])


@pytest.mark.slow
def test_checkpoints_are_pruned_to_the_newest(resumed):
    cfg, root, _ = resumed
    ckpts = Path(checkpoints(cfg, root / "whole"))
    assert checkpoint.latest(str(ckpts)) == "step4"
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step4"]
    # under the run's output_dir, never inside the model folder (which is promoted)
    assert not (root / "whole" / "checkpoints" / "latest").exists()
    assert ckpts.is_relative_to(root / "whole" / "checkpoints")


@pytest.mark.slow
def test_resume_refuses_a_changed_trajectory(resumed, tmp_path):
    cfg, root, _ = resumed
    changed = config.load("tiny", overrides=["train.stage2_steps=4", "train.learning_rate=0.5"])
    with pytest.raises(ValueError, match="train.learning_rate"):
        run(changed, tmp_path, checkpoint_dir=checkpoints(cfg, root / "whole"))
    with pytest.raises(ValueError, match="stage 2, not stage 1"):
        run(cfg, tmp_path, stage=1, checkpoint_dir=checkpoints(cfg, root / "whole"))


@pytest.mark.slow
def test_finished_stage_resumes_to_the_same_model(resumed):
    """Rerunning a finished stage (e.g. a retried pipeline step) restores it and runs no step."""
    cfg, root, _ = resumed
    before = steps_of(root / "whole")
    summary = run(cfg, root / "whole")
    assert summary["steps"] == 4.0 and steps_of(root / "whole") == before


@pytest.mark.slow
def test_zero0_and_zero2_give_the_same_loss_trajectory(tmp_path):
    trajectories = []
    for zero in (0, 2):
        cfg = config.load("tiny", overrides=[f"train.zero_stage={zero}", "train.stage1_steps=2"])
        run(cfg, tmp_path / f"zero{zero}", stage=1)
        trajectories.append(steps_of(tmp_path / f"zero{zero}"))
    assert_same_trajectory(*trajectories, rel=1e-4, abs=1e-5)
    assert len({round(s["loss"], 6) for s in trajectories[0]}) > 1   # the loss moved


@pytest.mark.slow
def test_single_turn_trains_attempt1_only_and_the_bar_shows_eta(tmp_path, capsys):
    """The single-turn ablation is a config value (its terms: test_train_objectives)."""
    cfg = config.load("tiny", overrides=["train.single_turn=true", "train.stage1_steps=2"])
    assert cfg.train.single_turn
    summary = run(cfg, tmp_path, stage=1)
    assert summary["steps"] == 2.0
    assert not torch.equal(models.load(cfg.model, str(tmp_path))[0].state_dict()[KEY],
                           models.load(cfg.model)[0].state_dict()[KEY])
    err = capsys.readouterr().err
    assert re.search(r"SCoRe stage 1: +\d+%.* 1/2 \[\d\d:\d\d<\d\d:\d\d", err), err  # elapsed<ETA


@pytest.mark.slow
def test_step_metrics_include_entropy_and_edit_ratio(resumed):
    _, root, _ = resumed
    for record in steps_of(root / "whole"):
        assert 0 < record["entropy_t1"] < 11.0 and 0 < record["entropy_t2"] < 11.0  # < ln(50257)
        assert 0 <= record["edit_ratio"] <= 1


def test_offline_first_attempts_come_from_the_base_model():
    """Paper 5.3: sample 0 of each problem starts from the base model's attempt 1."""
    from selfcorrect import rollout

    cfg = config.load("tiny", overrides=["train.offline_first_attempts=1",
                                         "train.temperature=0.0001"])   # ~greedy, to compare
    base, tok = models.load(cfg.model)
    policy = models.load(config.load("tiny", overrides=["model.seed=1"]).model)[0]
    greedy = lambda model, texts: [t.ids for t in rollout.generate(  # noqa: E731
        model, tok, texts, temperature=0.0, max_new_tokens=cfg.train.max_new_tokens, batch_size=8)]
    first = [rollout.first_prompt(tok, p, cfg.prompts) for p in PROBLEMS[:2]]
    episodes = loop.rollout_step(policy, base, tok, PROBLEMS[:2], cfg, offline=1)
    assert [(e.problem.id, e.sample) for e in episodes] == [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    assert greedy(base, first) != greedy(policy, first)
    assert [e.first.ids for e in episodes if e.sample == 0] == greedy(base, first)
    assert [e.first.ids for e in episodes if e.sample == 1] == greedy(policy, first)
    second = [rollout.second_prompt(tok, e.problem, e.first, cfg.prompts) for e in episodes]
    assert [e.second.prompt_ids for e in episodes] == second
    assert [e.second.ids for e in episodes] == greedy(policy, second)


def test_offline_attempt1_tokens_carry_no_loss(tiny_config):
    """Advantage only on attempt 1 (alpha=1 makes the shaped attempt-2 rewards equal): masked
    as offline, the step has no gradient and Adam leaves the weights as they were."""
    from selfcorrect.rollout import Episode, Turn
    from selfcorrect.train import engine as ds_engine

    cfg = config.load("tiny", overrides=["train.alpha=1", "train.optimizer=adam"])
    prompt = "User: What is 2 + 2?\n\nAssistant: "
    tok = models.load(cfg.model)[1]
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eps = [Episode(PROBLEMS[0], s, Turn(ids(prompt), ids(y1), y1, False),
                   Turn(ids(prompt) + ids(y1) + ids(" Check."), ids(" 4"), " 4", False))
           for s, y1 in enumerate([" 4", " 5"])]
    r1, r2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.5]])   # shaped r2: [1, 1]
    moved = []
    for offline in (torch.tensor([True, True]), None):
        policy = models.load(cfg.model)[0]
        before = policy.state_dict()[KEY].clone()
        engine = ds_engine.build(policy, cfg.train, micro_batch_size=2)
        loop.train_step(engine, ds_engine.freeze(models.load(cfg.model)[0]), eps, r1, r2, stage=2,
                        train=cfg.train, pad_id=tok.pad_token_id, offline=offline)
        moved.append(not torch.equal(engine.module.state_dict()[KEY], before))
    assert moved == [False, True]


def test_offline_first_attempts_must_fit_in_the_samples():
    with pytest.raises(config.ConfigError, match="offline_first_attempts"):
        config.load("tiny", overrides=["train.offline_first_attempts=3"])


def test_checkpoints_live_under_the_run_store_keyed_by_name_settings_and_data():
    """A retried pod and a resubmitted run of the same name, settings and data find the same
    checkpoint folder; another name, a trajectory setting or other data get their own; step
    counts and where checkpoints go may change (RESUMABLE_CHANGES)."""
    remote = config.load("tiny", overrides=["output_dir=gs://bucket/runs", "name=gsm8k-v3"],
                         local=False)
    uri = checkpoint.default_uri(remote, 1, PROBLEMS)
    assert uri.startswith("gs://bucket/runs/checkpoints/gsm8k-v3-") and uri.endswith("/stage1")
    again = config.load("tiny", overrides=["output_dir=gs://bucket/runs", "name=gsm8k-v3",
                                           "train.stage1_steps=50", "train.checkpoint_every=5"],
                        local=False)
    assert checkpoint.default_uri(again, 1, PROBLEMS) == uri
    for other in (["name=gsm8k-v4"], ["train.learning_rate=1e-4"], ["model.seed=3"]):
        changed = config.load("tiny", overrides=["output_dir=gs://bucket/runs", "name=gsm8k-v3",
                                                 *other], local=False)
        assert checkpoint.default_uri(changed, 1, PROBLEMS) != uri, other
    assert checkpoint.default_uri(remote, 1, PROBLEMS[:4]) != uri
    assert checkpoint.default_uri(remote, 2, PROBLEMS) == uri[:-1] + "2"
    chosen = config.load("tiny", overrides=["train.checkpoint_uri=s3://ckpt/x"], local=False)
    assert checkpoint.default_uri(chosen, 2, PROBLEMS).startswith("s3://ckpt/x/selfcorrect-")


@pytest.mark.slow
def test_resume_from_another_runs_checkpoints(resumed, tmp_path):
    """train.resume_from: a fresh run folder continues from a given run's checkpoints."""
    cfg, root, _ = resumed
    run_folder = checkpoints(cfg, root / "whole").rsplit("/", 1)[0]
    moved = config.load("tiny", overrides=["train.stage2_steps=5", "train.checkpoint_every=2",
                                           "train.keep_checkpoints=1",
                                           "train.gradient_accumulation_steps=2",
                                           "train.offline_first_attempts=1",
                                           f"train.resume_from={run_folder}"])
    summary = run(moved, tmp_path / "moved")
    assert summary["resumed_at"] == 4.0 and summary["steps"] == 5.0
    assert steps_of(tmp_path / "moved")[:4] == steps_of(root / "whole")
    assert checkpoint.latest(checkpoints(moved, tmp_path / "moved")) == "step5"


@pytest.mark.slow
def test_resume_from_the_gcs_emulator(gs_prefix, tmp_path):
    """Save to gs://, wipe the local staging copy (a new pod), resume from the store."""
    import shutil

    cfg = config.load("tiny", overrides=["train.stage2_steps=2", "train.checkpoint_every=1",
                                         f"output_dir={gs_prefix}"], local=False)
    out = tmp_path / "model"
    uri = checkpoint.default_uri(cfg, 2, PROBLEMS)
    first = run(cfg, out, stop_after=1)
    assert first["steps"] == 1.0 and checkpoint.latest(uri) == "step1"
    shutil.rmtree(checkpoint.staging(uri))
    resumed = run(cfg, out)
    assert resumed["steps"] == 2.0 and [s["step"] for s in steps_of(out)] == [0.0, 1.0]
    assert steps_of(out)[0]["loss"] == first["loss"]     # step 0 came back from the store
    assert checkpoint.latest(uri) == "step2"
