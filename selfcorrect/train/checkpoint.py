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

`directory` may be a URI (gs://, s3://, any fsspec URL): DeepSpeed then writes to a local
staging folder (one per URI and machine, shared by its ranks), the first rank of each machine
uploads what its ranks wrote, and rank 0 uploads `latest` last, once every rank's files are
there; a kill mid-upload leaves the previous checkpoint the newest. Resuming downloads the
newest checkpoint first. default_uri puts checkpoints in the run's artifact store, so a
retried training pod resumes where the killed one stopped.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch

from selfcorrect import folders

# Train keys that may change between a run and its resume without changing the trajectory
RESUMABLE_CHANGES = {"stage1_steps", "stage2_steps", "checkpoint_every", "keep_checkpoints",
                     "checkpoint_uri"}


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


def default_uri(cfg, stage: int, model_dir: str) -> str:
    """Where a stage's checkpoints go unless the caller says: under the run's artifact store.

    train.checkpoint_uri, else <output_dir>/checkpoints when output_dir is a URL, each with a
    subfolder per model folder (a pipeline task's output artifact: the same path when the task
    is retried, a new one in the next run) and stage; else <model_dir>/checkpoints (a local run).
    """
    base = cfg.train.checkpoint_uri or (
        f"{cfg.output_dir.rstrip('/')}/checkpoints" if folders.is_remote(cfg.output_dir) else "")
    if not base:
        return str(Path(model_dir) / "checkpoints")
    key = hashlib.sha256(str(model_dir).encode()).hexdigest()[:16]
    return f"{base.rstrip('/')}/{key}/stage{stage}"


def staging(directory: str) -> str:
    """The local folder DeepSpeed reads and writes for `directory` (itself when local)."""
    if not folders.is_remote(directory):
        return directory
    key = hashlib.sha256(directory.encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir(), "selfcorrect-checkpoints", key))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _first_on_machine() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def latest(directory: str) -> str | None:
    """The newest checkpoint's tag in `directory` (a folder or URI), or None when there is none."""
    if folders.is_remote(directory):
        fs, root = folders.filesystem(directory)
        fs.invalidate_cache()
        name = f"{root.rstrip('/')}/latest"
        return fs.cat_file(name).decode().strip() if fs.exists(name) else None
    tag_file = Path(directory) / "latest"
    return tag_file.read_text().strip() if tag_file.is_file() else None


def _tags(directory: str) -> list[str]:
    if folders.is_remote(directory):
        names = {name.split("/", 1)[0] for name in folders.listing(directory)}
    else:
        names = {p.name for p in Path(directory).glob("step*") if p.is_dir()}
    return sorted((n for n in names if n.startswith("step") and n[4:].isdigit()),
                  key=lambda n: int(n[4:]))


def save(engine, directory: str, *, stage: int, step: int, history: list[dict],
         train: dict, keep: int) -> str:
    """Save the state after `step` steps as tag step<step>; prune to the newest `keep`.

    Every rank calls it (DeepSpeed's save is collective).
    """
    tag = f"step{step}"
    local = staging(directory)
    engine.save_checkpoint(local, tag=tag, client_state={
        "stage": stage, "step": step, "history": history, "train": train})
    torch.save(rng_state(), Path(local) / tag / f"rng_rank{engine.global_rank}.pt")
    if folders.is_remote(directory):
        _barrier()                              # every rank's files are on its machine's disk
        if _first_on_machine():
            folders.upload(str(Path(local, tag)), f"{directory.rstrip('/')}/{tag}")
        _barrier()                              # ... and in the store: now `latest` may move
        if engine.global_rank == 0:
            fs, root = folders.filesystem(directory)
            fs.pipe_file(f"{root.rstrip('/')}/latest", tag.encode())
    if engine.global_rank == 0:
        for old in _tags(directory)[:-keep]:
            if folders.is_remote(directory):
                folders.remove(f"{directory.rstrip('/')}/{old}")
            shutil.rmtree(Path(local, old), ignore_errors=True)
    if folders.is_remote(directory) and _first_on_machine():
        for old in _tags(local)[:-keep]:        # other machines' staging copies
            shutil.rmtree(Path(local, old), ignore_errors=True)
    return tag


def _fetch(directory: str) -> str | None:
    """Bring the newest checkpoint of a remote `directory` into its (emptied) staging folder."""
    local = staging(directory)
    tag = latest(directory)
    if _first_on_machine():
        shutil.rmtree(local, ignore_errors=True)
        if tag is not None:
            folders.download(f"{directory.rstrip('/')}/{tag}", str(Path(local, tag)))
            Path(local, "latest").write_text(tag)
    _barrier()
    return tag


def load(engine, directory: str, *, stage: int, train: dict) -> tuple[int, list[dict]] | None:
    """Restore the newest checkpoint into `engine` and the RNGs: (steps done, history), or None.

    Every rank calls it. Call it after every model is built (building the tiny model draws
    from torch's RNG).
    """
    tag = _fetch(directory) if folders.is_remote(directory) else latest(directory)
    if tag is None:
        return None
    local = staging(directory)
    path, client = engine.load_checkpoint(local, tag=tag, load_optimizer_states=True,
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
    set_rng_state(torch.load(Path(local) / tag / f"rng_rank{engine.global_rank}.pt",
                             weights_only=False))
    return client["step"], client["history"]
