"""GPU launch settings as tested pure functions (nothing here has run on a GPU), and the
entry point the launchers run, started by torchrun with one process on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfcorrect import config
from selfcorrect.config import ConfigError
from selfcorrect.records import Problem, write_jsonl
from selfcorrect.train import launch
from selfcorrect.pipelines.placement import apply_resources

REPO = Path(__file__).resolve().parents[1]


def test_gpu_ds_config_for_8_gpus():
    cfg = config.load("tiny", overrides=["train.zero_stage=2", "train.gradient_accumulation_steps=2",
                                         "train.problems_per_step=32", "train.samples_per_problem=4"])
    ds = launch.gpu_ds_config(cfg, num_gpus=8)       # 4 problems x 4 samples per GPU
    assert ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"] == {"stage": 2}
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 8 * 2 * 8
    assert "torch_adam" not in ds["optimizer"]["params"]      # DeepSpeed's fused Adam on GPU
    with pytest.raises(ConfigError, match="num_gpus"):
        launch.gpu_ds_config(cfg, num_gpus=0)
    with pytest.raises(ConfigError, match="problems_per_step: 32 cannot be split over 3 GPUs"):
        launch.gpu_ds_config(cfg, num_gpus=3)


ARGS = launch.stage_args(config_path="/c.json", stage=2, problems="/p.jsonl", output_dir="/out",
                         init_path="/s1", reference_path="/base")


def test_deepspeed_launcher_command():
    res = config.ResourcesConfig(accelerator_type="NVIDIA_H100_80GB", accelerator_count=4)
    assert launch.launch_command(res, num_gpus=4, args=ARGS) == [
        "deepspeed", "--num_nodes", "1", "--num_gpus", "4", "--master_addr", "127.0.0.1",
        "--master_port", "29500", "--no_local_rank", "--module", "selfcorrect.train.launch",
        "--config", "/c.json", "--stage", "2", "--problems", "/p.jsonl", "--output", "/out",
        "--init", "/s1", "--reference", "/base"]


def test_torchrun_command():
    res = config.ResourcesConfig(launcher="torchrun")
    cmd = launch.launch_command(res, num_gpus=2, num_nodes=2, master_addr="10.0.0.1", args=ARGS)
    assert cmd[:11] == ["torchrun", "--nnodes", "2", "--nproc_per_node", "2", "--rdzv_backend",
                        "c10d", "--rdzv_endpoint", "10.0.0.1:29500", "--module",
                        "selfcorrect.train.launch"]
    assert cmd[11:] == ARGS


def test_resources_config_errors_say_what_to_set():
    with pytest.raises(ConfigError, match="set both"):
        config.load("tiny", overrides=["resources.accelerator_count=2"])
    with pytest.raises(ConfigError, match="accepted values: deepspeed, torchrun"):
        config.load("tiny", overrides=["resources.launcher=mpirun"])


def compiled_resources(tmp_path, cfg) -> dict:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def step() -> None:
        pass

    @dsl.pipeline(name="resources")
    def pipeline():
        apply_resources(step(), cfg)

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    return spec["deploymentSpec"]["executors"]["exec-step"]["container"].get("resources", {})


def test_apply_resources_compiles_into_the_task(tmp_path):
    cfg = config.load("tiny", overrides=["resources.accelerator_type=NVIDIA_TESLA_A100",
                                         "resources.accelerator_count=2",
                                         "resources.cpu_limit='8'", "resources.memory_limit=64G"])
    res = compiled_resources(tmp_path, cfg)
    assert res["accelerator"]["resourceType"] == "NVIDIA_TESLA_A100"
    assert res["accelerator"]["resourceCount"] == "2"
    assert res["resourceCpuLimit"] == "8" and res["resourceMemoryLimit"] == "64G"


def test_apply_resources_defaults_to_none(tmp_path):
    assert compiled_resources(tmp_path, config.load("tiny")) == {}


@pytest.mark.slow
def test_torchrun_runs_the_stage_entry_point_on_cpu(tmp_path):
    """The launch path end to end with one process: torchrun's rendezvous, run_stage, model out."""
    cfg = config.load("tiny", overrides=["train.stage1_steps=1", "resources.launcher=torchrun"])
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    write_jsonl(str(tmp_path / "p.jsonl"),
                [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + 1?", answer=str(i + 1))
                 for i in range(2)])
    args = launch.stage_args(config_path=str(tmp_path / "c.json"), stage=1,
                             problems=str(tmp_path / "p.jsonl"), output_dir=str(tmp_path / "out"))
    cmd = launch.launch_command(cfg.resources, num_gpus=1, master_port=0, args=args)
    cmd[0] = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["summary"]["steps"] == 1.0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_retry_after_a_deterministic_failure_fails_at_once(tmp_path):
    """KFP retries any failure; a retried training step that finds its earlier attempt's
    deterministic failure (here: no train problems, a data error) fails at once with it, while
    a resubmitted run (another model folder) and other kinds of failure try again for real."""
    cfg = config.load("tiny", overrides=[f"output_dir={tmp_path / 'out'}"])
    problems = tmp_path / "problems.jsonl"
    write_jsonl(str(problems), [Problem(id="p0", task="math", prompt="1 + 1?", answer="2",
                                        split="eval")])
    call = lambda out: launch.train_stage(cfg, 1, problems_path=str(problems),  # noqa: E731
                                          output_dir=str(tmp_path / out), init_path=None,
                                          reference_path=None)
    with pytest.raises(ValueError, match="no training problems"):
        call("model-a")
    marker = launch.failure_marker(cfg, 1, str(tmp_path / "model-a"))
    assert json.loads(Path(marker).read_text())["error"] == "ValueError"
    with pytest.raises(launch.NotRetryable, match="ValueError: problems: no training problems"):
        call("model-a")                                     # the retry: at once, same error
    with pytest.raises(ValueError, match="no training problems"):
        call("model-b")                                     # a new run tries for real
    problems.unlink()                                       # an I/O failure: retried for real
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            call("model-c")
    assert not Path(launch.failure_marker(cfg, 1, str(tmp_path / "model-c"))).exists()
