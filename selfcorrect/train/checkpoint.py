"""Resumable training state: DeepSpeed checkpoints plus RNG streams and the problem cursor.

A checkpoint is DeepSpeed's own (`engine.save_checkpoint`: model, optimizer and LR scheduler
state, one set of files per rank) with a `client_state` beside it:

    stage, step      the stage and the number of steps done (the problem cursor: the problem
                     stream is a seeded shuffle, replayed up to this point on resume)
    history          the per-step metrics so far, so metrics.json covers the whole stage
    rng              python `random`, torch CPU (the sampling stream) and CUDA states, in
                     rng_rank<R>.pt per rank (DeepSpeed keeps one client_state, rank 0's)
    train            the train config that wrote it (a resume must not change the trajectory)

With frozen parameters (a LoRA policy, train.lora_rank > 0) only the trainable ones are
written (DeepSpeed's exclude_frozen_parameters: the adapter's weights and, as always, the
optimizer state of what trains; a weight tied to a frozen one under a second name, such as a
tied output head, is still written); a resume rebuilds the frozen base model from its source and
loads the adapter into it.

Layout: <directory>/step<N>/ per checkpoint and <directory>/latest (DeepSpeed's tag file); the
newest `keep` are kept. These are training state, distinct from the final model folder
(model + tokenizer + resolved config + metrics) that run_stage writes at the end.

`directory` may be a URI (gs://, s3://, any fsspec URL): DeepSpeed then writes to a local
staging folder (one per URI and machine, shared by its ranks), the first rank of each machine
uploads what its ranks wrote, and rank 0 uploads `latest` last, once every rank's files are
there; a kill mid-upload leaves the previous checkpoint the newest. Resuming downloads the
newest checkpoint first. default_uri puts checkpoints in the run's artifact store, so a
retried training pod, or a resubmitted run of the same name and settings, resumes where the
killed one stopped; never inside the Model artifact (which travels to every consumer and to
the registry).

Uploads run in the background (one worker thread on the first rank of each machine): a
checkpoint of a large model may take longer to upload than a collective may wait, so the other
ranks never wait for the store. `latest` moves only once every machine's files of that tag are
in the store (each machine leaves a `.complete-node<N>` marker; rank 0 waits for all of them);
`finish` waits for the queue at the end of a stage. A kill mid-upload leaves the previous
checkpoint the newest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from selfcorrect import storage

# Train keys that may change between a run and its resume without changing the trajectory
RESUMABLE_CHANGES = {"stage1_steps", "stage2_steps", "checkpoint_every", "keep_checkpoints",
                     "checkpoint_uri", "resume_from"}
log = logging.getLogger(__name__)


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


def run_key(cfg, problems) -> str:
    """`<name>-<fingerprint>`: what identifies a training run's checkpoints across submissions.

    The fingerprint covers the model settings, every train setting that changes the trajectory
    (not the step counts or where checkpoints go: RESUMABLE_CHANGES) and the train problems'
    content, so a resubmitted run of the same name, settings and data continues, and any other
    run starts afresh in a folder of its own.
    """
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in RESUMABLE_CHANGES}
    data = hashlib.sha256()
    for p in problems:
        data.update(json.dumps([p.id, p.task, p.prompt, p.answer], default=str).encode())
    ident = json.dumps({"model": dataclasses.asdict(cfg.model), "train": train,
                        "problems": data.hexdigest()}, sort_keys=True, default=str)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in cfg.name) or "run"
    return f"{safe}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def store(cfg) -> str:
    """The run's checkpoint store: train.checkpoint_uri, else <output_dir>/checkpoints (a gs://,
    s3://, any fsspec URL or a local folder; a pipeline step on a cluster needs a URL there:
    submit refuses a local one)."""
    return (cfg.train.checkpoint_uri or f"{cfg.output_dir.rstrip('/')}/checkpoints").rstrip("/")


def default_uri(cfg, stage: int, problems) -> str:
    """Where a stage's checkpoints go: `<store>/<run_key>/stage<N>`."""
    return f"{store(cfg)}/{run_key(cfg, problems)}/stage{stage}"


def resume_source(uri: str, stage: int) -> str:
    """train.resume_from as a stage folder: a run folder (holding stage<N>/) or a stage folder."""
    stage_dir = f"{uri.rstrip('/')}/stage{stage}"
    return stage_dir if latest(stage_dir) is not None else uri


def staging(directory: str) -> str:
    """The local folder DeepSpeed reads and writes for `directory` (itself when local)."""
    if not storage.is_remote(directory):
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
    if storage.is_remote(directory):
        fs, root = storage.filesystem(directory)
        fs.invalidate_cache()
        name = f"{root.rstrip('/')}/latest"
        return fs.cat_file(name).decode().strip() if fs.exists(name) else None
    tag_file = Path(directory) / "latest"
    return tag_file.read_text().strip() if tag_file.is_file() else None


def _tags(directory: str) -> list[str]:
    if storage.is_remote(directory):
        names = {name.split("/", 1)[0] for name in storage.listing(directory)}
    else:
        names = {p.name for p in Path(directory).glob("step*") if p.is_dir()}
    return sorted((n for n in names if n.startswith("step") and n[4:].isdigit()),
                  key=lambda n: int(n[4:]))


def _node() -> tuple[int, int]:
    """(this machine's index, number of machines) from the launcher's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world)) or world
    return int(os.environ.get("RANK", "0")) // per_node, max(1, world // per_node)


class Uploader:
    """One machine's background uploads of a remote `directory`: tags in order, newest wins.

    A tag queued while an older one still waits replaces it (only the newest is worth the
    bandwidth); the tag being uploaded is never pruned from the staging folder. On rank 0 the
    worker then waits for every machine's marker, moves `latest` and prunes the store.
    """

    def __init__(self, directory: str, *, keep: int, marker_timeout_s: float = 3600.0):
        self.directory, self.keep, self.marker_timeout_s = directory.rstrip("/"), keep, marker_timeout_s
        self.local = staging(directory)
        self.pending: str | None = None
        self.busy: str | None = None
        self.error: BaseException | None = None
        self.uploaded: list[str] = []
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, tag: str) -> None:
        with self._cv:
            self.pending = tag
            self._cv.notify_all()

    def wait(self) -> None:
        """Block until nothing is queued or uploading; log (not raise) a failed upload."""
        with self._cv:
            while self.pending is not None or self.busy is not None:
                self._cv.wait()

    def _work(self) -> None:
        while True:
            with self._cv:
                while self.pending is None:
                    self._cv.wait()
                self.busy, self.pending = self.pending, None
            try:
                self._upload(self.busy)
                self.uploaded.append(self.busy)
            except Exception as e:          # the next checkpoint tries again; training goes on
                self.error = e
                log.warning("checkpoint %s/%s: upload failed (%s: %s); training goes on, the "
                            "next checkpoint is tried again", self.directory, self.busy,
                            type(e).__name__, e)
            with self._cv:
                self.busy = None
                self._cv.notify_all()

    def _upload(self, tag: str) -> None:
        node, nodes = _node()
        if not storage.upload_tree(str(Path(self.local, tag)), f"{self.directory}/{tag}"):
            raise FileNotFoundError(f"{Path(self.local, tag)}: no checkpoint files to upload")
        fs, root = storage.filesystem(self.directory)
        root = root.rstrip("/")
        fs.pipe_file(f"{root}/{tag}/.complete-node{node}", b"")
        if int(os.environ.get("RANK", "0")) == 0:
            deadline = time.monotonic() + self.marker_timeout_s
            markers = [f"{root}/{tag}/.complete-node{n}" for n in range(nodes)]
            while True:
                fs.invalidate_cache()
                if all(fs.exists(m) for m in markers):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.directory}/{tag}: not every machine's files arrived "
                                       f"within {self.marker_timeout_s:.0f} s; `latest` stays")
                time.sleep(2.0)
            fs.pipe_file(f"{root}/latest", tag.encode())
            for old in _tags(self.directory)[:-self.keep]:
                storage.remove(f"{self.directory}/{old}")
        with self._cv:
            keep_local = {self.pending, tag}
        for old in _tags(self.local):
            if old not in keep_local and int(old[4:]) < int(tag[4:]):
                shutil.rmtree(Path(self.local, old), ignore_errors=True)


_uploaders: dict[str, Uploader] = {}


def _frozen(engine) -> bool:
    """Whether the policy has frozen parameters (a LoRA base model): checkpoints leave them out."""
    return any(not p.requires_grad for p in engine.module.parameters())


def save(engine, directory: str, *, stage: int, step: int, history: list[dict],
         train: dict, keep: int) -> str:
    """Save the state after `step` steps as tag step<step>; prune to the newest `keep`.

    Every rank calls it (DeepSpeed's save is collective: each rank writes its own files to
    local disk). A remote `directory` is then uploaded in the background (Uploader).
    """
    tag = f"step{step}"
    local = staging(directory)
    engine.save_checkpoint(local, tag=tag, client_state={
        "stage": stage, "step": step, "history": history, "train": train},
        exclude_frozen_parameters=_frozen(engine))
    torch.save(rng_state(), Path(local) / tag / f"rng_rank{engine.global_rank}.pt")
    if storage.is_remote(directory):
        _barrier()                              # every rank's files are on its machine's disk
        if _first_on_machine():
            key = directory.rstrip("/")
            if key not in _uploaders:
                _uploaders[key] = Uploader(directory, keep=keep)
            _uploaders[key].submit(tag)
        return tag
    if engine.global_rank == 0:
        for old in _tags(directory)[:-keep]:
            shutil.rmtree(Path(local, old), ignore_errors=True)
    return tag


def finish(directory: str) -> None:
    """Wait for this machine's queued uploads of `directory` (no collective: call it last)."""
    uploader = _uploaders.pop(directory.rstrip("/"), None)
    if uploader is not None:
        uploader.wait()


def _fetch(directory: str) -> str | None:
    """Bring the newest checkpoint of a remote `directory` into its (emptied) staging folder."""
    local = staging(directory)
    tag = latest(directory)
    if _first_on_machine():
        shutil.rmtree(local, ignore_errors=True)
        if tag is not None:
            storage.download(f"{directory.rstrip('/')}/{tag}", str(Path(local, tag)))
            Path(local, "latest").write_text(tag)
    _barrier()
    return tag


def load(engine, directory: str, *, stage: int, train: dict) -> tuple[int, list[dict]] | None:
    """Restore the newest checkpoint into `engine` and the RNGs: (steps done, history), or None.

    Every rank calls it. Call it after every model is built (building the tiny model draws
    from torch's RNG).
    """
    tag = _fetch(directory) if storage.is_remote(directory) else latest(directory)
    if tag is None:
        return None
    local = staging(directory)
    path, client = engine.load_checkpoint(local, tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True,
                                          load_module_strict=not _frozen(engine))
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
