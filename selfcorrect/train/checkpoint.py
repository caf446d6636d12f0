"""Resumable training state: DeepSpeed checkpoints plus RNG streams and the problem cursor.

A checkpoint is DeepSpeed's own (`engine.save_checkpoint`: model, optimizer and LR scheduler
state, one set of files per rank) with a `client_state` beside it:

    stage, step      the stage and the number of steps done (the problem cursor: the problem
                     stream is a seeded shuffle, replayed up to this point on resume)
    history          the per-step metrics so far, so metrics.json covers the whole stage
    rng              python `random`, torch CPU (the sampling stream) and CUDA states, in
                     rng_rank<R>.pt per rank (DeepSpeed keeps one client_state, rank 0's)
    train            the train config that wrote it (a resume must not change the trajectory)

Layout: <directory>/step<N>/ per checkpoint and <directory>/latest (DeepSpeed's tag file); the
newest `keep` are kept. These are training state, distinct from the final model folder
(model + tokenizer + resolved config + metrics) that run_stage writes at the end.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

# Train keys that may change between a run and its resume without changing the trajectory
RESUMABLE_CHANGES = {"stage1_steps", "stage2_steps", "checkpoint_every", "keep_checkpoints"}


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(directory: str) -> str | None:
    """The newest checkpoint's tag in `directory`, or None when there is none."""
    tag_file = Path(directory) / "latest"
    return tag_file.read_text().strip() if tag_file.is_file() else None


def save(engine, directory: str, *, stage: int, step: int, history: list[dict],
         train: dict, keep: int) -> str:
    """Save the state after `step` steps as tag step<step>; prune to the newest `keep`."""
    tag = f"step{step}"
    engine.save_checkpoint(directory, tag=tag, client_state={
        "stage": stage, "step": step, "history": history, "train": train})
    torch.save(rng_state(), Path(directory) / tag / f"rng_rank{engine.global_rank}.pt")
    if engine.global_rank == 0:
        tags = sorted((p for p in Path(directory).glob("step*") if p.is_dir()),
                      key=lambda p: int(p.name[4:]))
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return tag


def load(engine, directory: str, *, stage: int, train: dict) -> tuple[int, list[dict]] | None:
    """Restore the newest checkpoint into `engine` and the RNGs: (steps done, history), or None.

    Call it after every model is built (building the tiny model draws from torch's RNG).
    """
    tag = latest(directory)
    if tag is None:
        return None
    path, client = engine.load_checkpoint(directory, tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"checkpoint {directory}/{tag}: listed in 'latest' but not "
                                "loadable; delete the folder to start the stage afresh")
    if client["stage"] != stage:
        raise ValueError(f"checkpoint {directory}/{tag}: written by stage {client['stage']}, not "
                         f"stage {stage}; give each stage its own output or checkpoint folder")
    changed = sorted(k for k in set(train) | set(client["train"])
                     if k not in RESUMABLE_CHANGES and train.get(k) != client["train"].get(k))
    if changed:
        raise ValueError(f"checkpoint {directory}/{tag}: train.{', train.'.join(changed)} differ "
                         "from the run that wrote it, so the resumed run would not continue its "
                         "trajectory; restore them, or point the stage at a fresh output folder")
    set_rng_state(torch.load(Path(directory) / tag / f"rng_rank{engine.global_rank}.pt",
                             weights_only=False))
    return client["step"], client["history"]
