"""Multi-process launch: one DeepSpeed process per GPU, by the `deepspeed` launcher or torchrun.

The launched processes run `python -m selfcorrect.train.launch`, which calls run_stage; each
rank takes its share of the step's problems (see selfcorrect.train.loop). Tested on CPU with 2
gloo processes through this very command (resources.processes=2; tests/test_multirank.py):
ZeRO 2 and 3, checkpoint and resume, metrics reduced over ranks, the trajectory of one
process. NOT VERIFIED ON GPU: NCCL, bf16 and one process per device.

    cmd = launch_command(cfg.resources, num_gpus=8, args=stage_args(...))
    subprocess.run(cmd, check=True)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys

import torch

from selfcorrect.config import ConfigError, ResourcesConfig, RunConfig
from selfcorrect.train.engine import ds_config


def gpu_ds_config(cfg: RunConfig, *, num_gpus: int) -> dict:
    """The DeepSpeed config each of `num_gpus` processes builds: bf16 (fp16 with model.dtype
    float16), ZeRO stage from config.

    A step is problems_per_step * samples_per_problem episodes over all processes: each takes
    1 / num_gpus of them, split into gradient_accumulation_steps micro-batches.
    """
    if num_gpus < 1:
        raise ConfigError(f"num_gpus: {num_gpus}; use >= 1 (resources.accelerator_count)")
    train = cfg.train
    if train.problems_per_step % num_gpus:
        raise ConfigError(f"train.problems_per_step: {train.problems_per_step} cannot be split "
                          f"over {num_gpus} GPUs; use a multiple of {num_gpus}")
    per_gpu = train.problems_per_step // num_gpus * train.samples_per_problem
    micro = per_gpu // train.gradient_accumulation_steps
    config = ds_config(train, micro_batch_size=micro, gpu=True,
                       fp16=cfg.model.dtype == "float16")
    config["train_batch_size"] = micro * train.gradient_accumulation_steps * num_gpus
    return config


def stage_args(*, config_path: str, stage: int, problems: str, output_dir: str,
               init_path: str | None = None, reference_path: str | None = None) -> list[str]:
    """The arguments of `python -m selfcorrect.train.launch` for one stage."""
    args = ["--config", config_path, "--stage", str(stage), "--problems", problems,
            "--output", output_dir]
    if init_path:
        args += ["--init", init_path]
    if reference_path:
        args += ["--reference", reference_path]
    return args


def launch_command(resources: ResourcesConfig, *, num_gpus: int, args: list[str],
                   num_nodes: int = 1, master_addr: str = "127.0.0.1",
                   master_port: int = 29500) -> list[str]:
    """The launcher command line (resources.launcher) running the stage entry point.

    deepspeed: `deepspeed --num_nodes N --num_gpus G --master_addr A --master_port P
                --no_local_rank --module selfcorrect.train.launch ...` (LOCAL_RANK comes from the
                environment); several nodes also need the launcher's hostfile.
    torchrun:  `torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d
                --rdzv_endpoint A:P --module selfcorrect.train.launch ...`
    """
    if num_gpus < 1 or num_nodes < 1:
        raise ConfigError(f"num_gpus={num_gpus}, num_nodes={num_nodes}: both must be >= 1")
    if resources.launcher == "deepspeed":
        head = ["deepspeed", "--num_nodes", str(num_nodes), "--num_gpus", str(num_gpus),
                "--master_addr", master_addr, "--master_port", str(master_port),
                "--no_local_rank", "--module"]
    elif resources.launcher == "torchrun":
        head = ["torchrun", "--nnodes", str(num_nodes), "--nproc_per_node", str(num_gpus),
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{master_addr}:{master_port}",
                "--module"]
    else:
        raise ConfigError(f"resources.launcher: {resources.launcher!r}; use 'deepspeed' or 'torchrun'")
    return head + ["selfcorrect.train.launch"] + list(args)


# Failures a retry of the same step cannot fix: bad settings or data, code errors, memory.
DETERMINISTIC = (ConfigError, ValueError, TypeError, KeyError, AttributeError, MemoryError,
                 torch.OutOfMemoryError)


class NotRetryable(RuntimeError):
    """A retried step that already failed in a way a retry cannot fix."""


def failure_marker(cfg: RunConfig, stage: int, output_dir: str) -> str:
    """Where a step records a deterministic failure: beside the run's checkpoints, keyed by the
    step's model folder (the same on a retry of the task, new in a resubmitted run)."""
    from selfcorrect.train.checkpoint import store

    key = hashlib.sha256(str(output_dir).encode()).hexdigest()[:16]
    return f"{store(cfg)}/failures/{key}-stage{stage}.json"


def raise_recorded_failure(cfg: RunConfig, stage: int, output_dir: str) -> None:
    """NotRetryable when an earlier attempt of this step recorded a deterministic failure."""
    from selfcorrect import storage

    marker = failure_marker(cfg, stage, output_dir)
    fs, path = storage.filesystem(marker)
    if fs.exists(path):
        earlier = json.loads(fs.cat_file(path))
        raise NotRetryable(f"an earlier attempt of this step failed with {earlier['error']}: "
                           f"{earlier['message']} -- a retry cannot fix that; fix it and "
                           f"resubmit (recorded in {marker})")


@contextlib.contextmanager
def no_retry_after_deterministic_failure(cfg: RunConfig, stage: int, output_dir: str):
    """KFP retries a failed step whatever the error (its retry policy has no filter): a retry
    that finds an earlier attempt's deterministic failure (a config, data or code error, out of
    memory) fails at once with that error instead of loading models and failing again."""
    from selfcorrect import storage

    raise_recorded_failure(cfg, stage, output_dir)
    try:
        yield
    except DETERMINISTIC as e:
        if int(os.environ.get("RANK", "0")) == 0:
            fs, path = storage.filesystem(failure_marker(cfg, stage, output_dir))
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, json.dumps({"error": type(e).__name__, "message": str(e)}).encode())
        raise


def train_stage(cfg: RunConfig, stage: int, *, problems_path: str, output_dir: str,
                init_path: str | None, reference_path: str | None,
                steps_path: str | None = None) -> dict[str, float]:
    """One stage on the train split of `problems_path`, as the components run it.

    One training process (resources.training_processes): in this process. More: through the
    configured launcher, one process per GPU (or resources.processes gloo processes on CPU);
    the summary is read back from metrics.json.
    steps_path: also write the stage's per-step metrics there as TrainStep records.
    """
    import subprocess
    import tempfile

    from selfcorrect.records import Problem, read
    from selfcorrect.train.loop import run_stage

    processes = cfg.resources.training_processes
    if processes <= 1:
        with no_retry_after_deterministic_failure(cfg, stage, output_dir):
            problems = [p for p in read(problems_path, Problem) if p.split == "train"]
            summary = run_stage(cfg, stage, init_path=init_path, reference_path=reference_path,
                                problems=problems, output_dir=output_dir,
                                log_dir=output_dir + "/logs")
        if steps_path:
            write_steps(output_dir, steps_path)
        return summary
    with tempfile.TemporaryDirectory() as tmp:
        config_path = f"{tmp}/config.json"
        with open(config_path, "w") as f:
            json.dump(cfg.to_dict(), f)
        args = stage_args(config_path=config_path, stage=stage, problems=problems_path,
                          output_dir=output_dir, init_path=init_path, reference_path=reference_path)
        raise_recorded_failure(cfg, stage, output_dir)     # the ranks record new ones
        subprocess.run(launch_command(cfg.resources, num_gpus=processes, args=args,
                                      master_port=free_port()), check=True)
    if steps_path:
        write_steps(output_dir, steps_path)
    with open(f"{output_dir}/metrics.json") as f:
        return json.load(f)["summary"]


def free_port() -> int:
    """A free TCP port on this machine for the launcher's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_steps(model_dir: str, steps_path: str) -> int:
    """The stage's per-step metrics (<model_dir>/metrics.json) as TrainStep JSONL."""
    from selfcorrect import records

    with open(f"{model_dir}/metrics.json") as f:
        done = json.load(f)
    names = [f.name for f in dataclasses.fields(records.TrainStep) if f.name != "stage"]
    rows = [records.TrainStep(stage=done["stage"], **{n: h[n] for n in names} | {"step": int(h["step"])})
            for h in done["steps"]]
    return records.write_jsonl(steps_path, rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point of each launched process: one stage of run_stage on the train split."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.records import Problem, read
    from selfcorrect.train.loop import run_stage

    parser = argparse.ArgumentParser(prog="python -m selfcorrect.train.launch")
    parser.add_argument("--config", required=True, help="resolved config JSON (RunConfig.to_dict)")
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--problems", required=True, help="problems JSONL; the train split is used")
    parser.add_argument("--output", required=True)
    parser.add_argument("--init")
    parser.add_argument("--reference")
    ns = parser.parse_args(argv)
    with open(ns.config) as f:
        cfg = cfg_mod.from_dict(json.load(f))
    with no_retry_after_deterministic_failure(cfg, ns.stage, ns.output):
        problems = [p for p in read(ns.problems, Problem) if p.split == "train"]
        run_stage(cfg, ns.stage, init_path=ns.init, reference_path=ns.reference,
                  problems=problems, output_dir=ns.output, log_dir=ns.output + "/logs")


if __name__ == "__main__":
    main(sys.argv[1:])
