"""Stage I and II with 2 gloo processes on CPU, through the launch command the component runs.

What one process does with a step of P problems, 2 ranks must do with P / 2 each: the same
samples (sampling is seeded per shard of problems, not per rank), the same averaged gradient,
the same metrics once reduced over both ranks. So each stage runs twice on the same global
batch and problems, once in one process and once on 2 ranks, and the per-step trajectories
must agree to float tolerance. A rank that drew the other's problems, a gradient not averaged,
metrics that are rank 0's alone, or a resume that restored one rank only would all diverge.

- Stage I, ZeRO 2, torchrun: killed (SIGKILL to the whole launcher group) once a checkpoint
  is in the GCS emulator, then resumed by the component's own call (launch.train_stage),
  which downloads it for both ranks.
- Stage II, ZeRO 3, the deepspeed launcher: generation from weights gathered once per rollout,
  and per layer with partitioned parameters (train.gather_for_generation always / never).

The base model is the tiny random model with the tokens " 1" and " 2" made likely (a bias on
the final layer norm along their embeddings), so answers 1 and 2 are right about half the
time and rewards are not all zero: the updates carry real advantages, not only KL.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfcorrect import config, models
from selfcorrect.records import Problem, read, write_jsonl
from selfcorrect.train import checkpoint, launch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TRAJECTORY = ("loss", "reward_t1", "reward_t2", "delta", "i_to_c", "c_to_i", "kl_t1", "kl_t2",
              "entropy_t1", "entropy_t2", "len_t1", "len_t2", "truncated", "edit_ratio")
STEPS = 4              # room for the kill to land before the last step on a loaded machine


def settings(**extra) -> list[str]:
    """The same global batch for 1 and 2 processes: 4 problems per step, sampling shards of 2."""
    sets = {"train.stage1_steps": STEPS, "train.stage2_steps": 2, "train.problems_per_step": 4,
            "train.samples_per_problem": 2, "train.sampling_shard": 2, "train.max_new_tokens": 6,
            "train.learning_rate": 3e-3, "generate.batch_size": 4,
            "model.tiny_hidden": 16, **extra}      # small checkpoints: quick to store and fetch
    return [f"{k}={v}" for k, v in sets.items()]


def base_model(path: Path) -> None:
    """The tiny model with " 1" and " 2" likely: a digit answer is right half the time."""
    cfg = config.load("tiny", overrides=settings())
    model, tok = models.load(cfg.model)
    ids = [tok.encode(" 1")[0], tok.encode(" 2")[0]]
    with torch.no_grad():
        u = torch.nn.functional.normalize(torch.randn(model.config.n_embd,
                                                      generator=torch.Generator().manual_seed(1)), dim=0)
        model.transformer.ln_f.bias.copy_(3.0 * u)
        model.transformer.wte.weight[ids] += 3.0 * u
    models.save(model, tok, str(path))


def env() -> dict:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def history(model_dir: Path) -> list[dict]:
    return json.loads((model_dir / "metrics.json").read_text())["steps"]


def assert_same_trajectory(one: list[dict], two: list[dict]) -> None:
    assert [s["step"] for s in one] == [s["step"] for s in two] == list(map(float, range(len(one))))
    for a, b in zip(one, two):
        for key in TRAJECTORY:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key, a, b)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return models.load(config.load("tiny").model, str(model_dir))[0].state_dict()


def assert_same_weights(one: Path, two: Path, base: Path) -> None:
    """Every tensor of the two runs agrees to 2% of how far training moved it from the base
    (in norm: Adam turns float-order differences in near-zero gradients into update noise)."""
    a, b, start = weights(one), weights(two), weights(base)
    for key in a:
        moved = (a[key] - start[key]).norm().item()
        assert moved > 0, key
        assert (a[key] - b[key]).norm().item() <= 0.02 * moved, key


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gcs):
    root = tmp_path_factory.mktemp("multirank")
    base_model(root / "base")
    write_jsonl(str(root / "problems.jsonl"),
                [Problem(id=f"p{i}", task="math", prompt=f"What is {i % 2} + 1?",
                         answer=str(i % 2 + 1), split="train") for i in range(6)])
    with pytest.MonkeyPatch.context() as mp:    # what train_stage's launcher inherits
        for key in ("PATH", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "OMP_NUM_THREADS"):
            mp.setenv(key, env()[key])
        yield root, f"{gcs}/multirank"


def stage(cfg, n: int, root: Path, out: str, init: str, **kw) -> dict:
    return launch.train_stage(cfg, n, problems_path=str(root / "problems.jsonl"),
                              output_dir=str(root / out), init_path=str(root / init),
                              reference_path=str(root / "base"), **kw)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it, mid-stage: torchrun starts each rank in
    a session of its own, so killing the launcher's process group would leave the ranks running."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    proc.wait(timeout=30)


def kill_after_first_checkpoint(cfg, root: Path, out: str, store_uri: str) -> int:
    """Start the stage's launch command; SIGKILL it and its ranks once a checkpoint is stored."""
    (root / "c.json").write_text(json.dumps(cfg.to_dict()))
    args = launch.stage_args(config_path=str(root / "c.json"), stage=1,
                             problems=str(root / "problems.jsonl"), output_dir=str(root / out),
                             init_path=str(root / "base"), reference_path=str(root / "base"))
    cmd = launch.launch_command(cfg.resources, num_gpus=2, args=args,
                                master_port=launch.free_port())
    log = root / "killed.log"           # a file, not a pipe: a full pipe would stall the ranks
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env(), start_new_session=True, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 600     # generous: a loaded 2-core machine is slow
        while checkpoint.latest(store_uri) is None:
            if proc.poll() is not None:
                raise AssertionError(f"the launch ended before a checkpoint (rc {proc.returncode}):"
                                     f"\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.2)
    finally:
        kill_tree(proc)
    return int(checkpoint.latest(store_uri)[4:])


@pytest.fixture(scope="module")
def stage1(runs):
    root, store = runs
    one = config.load("tiny", overrides=settings(**{"train.zero_stage": 2}))
    stage(one, 1, root, "one-s1", "base")
    two = config.load("tiny", overrides=settings(**{
        "train.zero_stage": 2, "resources.processes": 2, "resources.launcher": "torchrun",
        "train.checkpoint_every": 1, "train.checkpoint_uri": f"{store}/ckpt"}))
    problems = [p for p in read(str(root / "problems.jsonl"), Problem) if p.split == "train"]
    store_uri = checkpoint.default_uri(two, 1, problems)
    killed_at = kill_after_first_checkpoint(two, root, "two-s1", store_uri)
    stored = sorted(checkpoint.storage.listing(f"{store_uri}/step{killed_at}"))
    summary = stage(two, 1, root, "two-s1", "base")     # the retried task: resumes from the store
    return root, killed_at, stored, summary, store_uri


def test_stage1_two_ranks_zero2_killed_and_resumed_match_one_process(stage1):
    root, killed_at, stored, summary, _ = stage1
    assert 1 <= killed_at < STEPS
    assert summary["steps"] == STEPS
    one, two = history(root / "one-s1"), history(root / "two-s1")
    assert_same_trajectory(one, two)
    assert any(s["reward_t1"] + s["reward_t2"] > 0 for s in two)      # real advantages
    assert_same_weights(root / "one-s1", root / "two-s1", root / "base")


def test_the_stored_checkpoint_holds_both_ranks_state(stage1):
    _, _, stored, _, store_uri = stage1
    for rank in (0, 1):
        assert f"rng_rank{rank}.pt" in stored
        assert any(f"zero_pp_rank_{rank}_" in name and "optim_states" in name for name in stored)
    assert checkpoint.latest(store_uri) == f"step{STEPS}"


@pytest.mark.parametrize("gather,offline", [("always", 0), ("never", 0), ("always", 1)],
                         ids=["gathered", "per-layer", "gathered-with-offline-attempts"])
def test_stage2_two_ranks_zero3_with_generation_matches_one_process(stage1, gather, offline):
    """Generation from weights gathered once per rollout (with offline first attempts the
    reference's too), or per layer in lockstep."""
    root = stage1[0]
    extra = {"train.zero_stage": 3, "train.gather_for_generation": gather,
             "train.offline_first_attempts": offline}
    name = f"s2-{gather}-{offline}"
    stage(config.load("tiny", overrides=settings(**extra)), 2, root, f"one-{name}", "one-s1")
    two = config.load("tiny", overrides=settings(**extra, **{
        "resources.processes": 2, "resources.launcher": "deepspeed"}))
    summary = stage(two, 2, root, f"two-{name}", "one-s1")
    assert summary["steps"] == 2
    assert_same_trajectory(history(root / f"one-{name}"), history(root / f"two-{name}"))
    assert_same_weights(root / f"one-{name}", root / f"two-{name}", root / "one-s1")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_each_rank_builds_its_models_on_its_own_gpu(monkeypatch):
    """Not run here (no GPU): rank 1 must load onto cuda:1, not onto GPU 0 like every rank did."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    model, _ = models.load(config.load("tiny").model)
    assert next(model.parameters()).device == torch.device("cuda", 1)
    assert torch.cuda.current_device() == 1
