"""The offline GPU check (scripts/gpu_check.py), its wheel bundle (scripts/gpu_bundle.py) and the
trainer image's GPU build arguments. No GPU here: the check runs end to end in --dry mode (the
same code path on CPU, fp32, tiny sizes, importing only what the GPU machine has or the bundle
brings); the bundle's plan, commands and size logic are tested without building DeepSpeed.
The GPU path itself, and the image built on a CUDA base, are unverified until run on one."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import gpu_bundle  # noqa: E402
import gpu_check  # noqa: E402
import gpu_testbed  # noqa: E402


def dry_env() -> dict:
    """This environment less a rendezvous an earlier in-process run left behind (its MASTER_PORT
    is still held by this process's process group: the check's own would fail to bind it)."""
    rendezvous = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
    return {**{k: v for k, v in os.environ.items() if k not in rendezvous}, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_dry_check_runs_end_to_end_and_writes_json_and_markdown(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--dry", "--lora",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env=dry_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["env"]["dry"] is True and data["env"]["deepspeed"]
    assert [s["name"] for s in data["settings"]] == list(gpu_check.SETTINGS)
    for s in data["settings"]:
        assert s["steps"] == 2 and s["step_s"] > 0 and s["generated_tok_s"] > 0
        assert 0 < s["peak_share"] and s["update_flops"] > 0 and s["tokens_per_update"] > 0
        assert s["kl_step0"] <= gpu_check.KL_TOLERANCE
        assert s["params"] > 50257 * 32     # the Qwen2 shape with a vocabulary past GPT-2's
    assert data["checkpoint"]["restored"] and data["checkpoint"]["moved_between"]
    checks = data["checks"]
    assert all(c["ok"] for c in checks.values() if c["enforced"])
    assert {"z2_kl_step0", "z3-gc_update_moves_weights", "checkpoint_round_trip",
            "z2-lora_update_moves_weights", "z3-lora_kl_step0"} <= set(checks)
    assert [s["lora_rank"] for s in data["settings"]] == [0, 0, 0, 0, 16, 16]
    # the testbed part ran on a stand-in: compared, reported, not enforced
    assert checks["testbed_rows_in_cpu_ranges"]["enforced"] is False
    compared = data["testbed"]["compared"]
    assert {(r["row"], r["mode"], r["metric"]) for r in compared} == {
        (row, mode, m) for row in gpu_testbed.ROWS for mode in ("greedy", "sampled")
        for m in gpu_testbed.METRICS}
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check (dry: CPU, fp32, tiny sizes)")
    for name in gpu_check.SETTINGS:
        assert re.search(rf"^\| {re.escape(name)} \| \d", md, re.M), name
    assert "Checkpoint round trip (ZeRO-2)" in md and "| score | sampled | delta |" in md


@pytest.mark.slow
def test_dry_check_times_both_hf_generation_paths_under_zero3(tmp_path):
    """--gather-generation: each ZeRO-3 setting's generation per layer and gathered once."""
    done = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--dry",
                           "--settings", "z2,z3", "--gather-generation", "--testbed", "none",
                           "--no-checkpoint", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, env=dry_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    (paths,) = data["generation_paths"]                 # the ZeRO-3 setting only
    assert paths["name"] == "z3" and paths["per_layer_tok_s"] > 0 and paths["gathered_tok_s"] > 0
    assert paths["speedup"] == pytest.approx(paths["gathered_tok_s"] / paths["per_layer_tok_s"])
    assert data["checks"]["z3_gathered_generation_same_tokens"]["enforced"] is False
    md = (tmp_path / "gpu_check.md").read_text()
    assert re.search(r"^\| z3 \| \d+ \| \d+ \| [\d.]+x \| - \| - \| (True|False) \|$", md, re.M)


def test_guard_makes_what_the_machine_lacks_unimportable():
    """The dry check's import guard: kfp and apache_beam are installed here but not on the GPU
    machine nor in the bundle, so importing them fails and probing finds nothing; torch and
    the bundle's deepspeed still import."""
    code = ("import sys, importlib.util; sys.path.insert(0, 'scripts'); import gpu_bundle; "
            "gpu_bundle.only_machine_imports(); "
            "assert importlib.util.find_spec('kfp') is None; "
            "assert importlib.util.find_spec('torch') is not None\n"
            "for name in ('kfp', 'apache_beam', 'great_expectations', 'gcsfs'):\n"
            "    try:\n        __import__(name)\n    except ModuleNotFoundError as e:\n"
            "        assert 'GPU machine' in str(e), e\n"
            "    else:\n        raise SystemExit(name + ' imported')\n"
            "import hjson, rapidfuzz, yaml; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_allowed_covers_the_machine_and_the_bundle_but_not_the_pipeline_stack():
    allowed = gpu_bundle.allowed()
    assert {"torch", "transformers", "deepspeed", "pydantic", "rapidfuzz", "selfcorrect"} <= allowed
    assert not {"kfp", "apache-beam", "great-expectations", "gcsfs", "s3fs",
                "google-cloud-storage", "jsonschema"} & allowed


def test_bundle_plan_takes_every_version_from_the_lock():
    pins = gpu_bundle.lock_pins(gpu_bundle.LOCK.read_text())
    items = gpu_bundle.plan(pins)
    assert items[0] == ("selfcorrect", "", "project")
    assert ("deepspeed", pins["deepspeed"], "source") in items
    assert {n for n, _, how in items if how == "download"} == set(gpu_bundle.WHEELS)
    assert all(v == pins[gpu_bundle.canonical(n)] for n, v, how in items if how != "project")
    with pytest.raises(SystemExit, match="no pin for rapidfuzz"):
        gpu_bundle.plan({k: v for k, v in pins.items() if k != "rapidfuzz"})


def test_bundle_commands_build_deepspeed_without_ops_and_fetch_python_312_wheels(tmp_path):
    items = [("selfcorrect", "", "project"), ("deepspeed", "0.19.8", "source"),
             ("rapidfuzz", "3.14.6", "download")]
    cmds = gpu_bundle.commands(items, tmp_path / "dest", tmp_path / "src", python="py")
    assert [c[0][4] for c in cmds] == ["wheel", "download", "wheel", "download"]
    project, fetch_sdist, ds_wheel, binary = cmds
    assert "--no-deps" in project[0] and project[0][-1] == str(gpu_bundle.ROOT)
    assert fetch_sdist[0][-1] == "deepspeed==0.19.8" and ":all:" in fetch_sdist[0]
    assert ds_wheel[1] == {"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cuda"}
    assert ds_wheel[0][-1] == str(tmp_path / "src" / "deepspeed-0.19.8.tar.gz")
    argv = binary[0]
    assert argv[argv.index("--python-version") + 1] == "3.12" and "--only-binary" in argv
    assert "manylinux_2_28_x86_64" in argv and argv[-1] == "rapidfuzz==3.14.6"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "deepspeed-0.19.8.tar.gz").write_bytes(b"x")     # kept: not fetched again
    assert len(gpu_bundle.commands(items, tmp_path / "dest", tmp_path / "src")) == 3


def test_bundle_size_counts_the_tracked_tree_and_fails_over_the_limit(tmp_path):
    (tmp_path / "a.whl").write_bytes(b"x" * 3000)
    (tmp_path / "testbed").mkdir()
    (tmp_path / "testbed" / "model.safetensors").write_bytes(b"x" * 1000)
    assert gpu_bundle.folder_bytes(tmp_path) == 4000
    fits, line = gpu_bundle.size_report(4000, 2000, limit=6000)
    assert fits and "TOO BIG" not in line
    fits, line = gpu_bundle.size_report(4000, 2001, limit=6000)
    assert not fits and "TOO BIG" in line
    assert gpu_bundle.tree_bytes() > 100_000         # the tracked files travel too


def test_bundle_completeness_wants_exactly_one_wheel_per_name(tmp_path):
    items = [("selfcorrect", "", "project"), ("math-verify", "0.9.0", "download")]
    for name in ("selfcorrect-0.1.0-py3-none-any.whl", "math_verify-0.9.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    gpu_bundle.check_complete(items, tmp_path)
    (tmp_path / "math_verify-0.8.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(SystemExit, match="2 wheels of math-verify"):
        gpu_bundle.check_complete(items, tmp_path)


def test_install_rerun_drops_only_the_install_flag():
    assert gpu_check.without_install(["--install", ".gpu-bundle", "--out", "o", "--dry"]) == \
        ["--out", "o", "--dry"]
    assert gpu_check.without_install(["--steps", "3", "--install=b"]) == ["--steps", "3"]


def test_install_without_wheels_names_the_make_target(tmp_path):
    with pytest.raises(SystemExit, match="make gpu-bundle"):
        gpu_check.install(tmp_path, tmp_path / "site")


def test_without_a_gpu_the_real_check_exits_2_and_says_so(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


def test_a_bad_override_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--dry", "--set",
                           "train.zero_stage=5", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 2 and "train.zero_stage" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_testbed_comparison_wants_the_intervals_to_overlap():
    table = {"rows": {"score": {mode: {m: {"ci_low": 0.5, "ci_high": 0.6} for m in gpu_testbed.METRICS}
                                for mode in ("greedy", "sampled")}}}
    inside = {m: 0.55 for m in gpu_testbed.METRICS}
    near = {"accuracy_t1": 0.62, "accuracy_t1_ci_low": 0.58, "accuracy_t1_ci_high": 0.66,
            "accuracy_t2": 0.7, "accuracy_t2_ci_low": 0.65, "accuracy_t2_ci_high": 0.75,
            "delta": 0.45}                                      # no interval: the point itself
    out = gpu_testbed.compare("score", {"greedy": inside, "sampled": near}, table)
    assert [r["ok"] for r in out] == [True] * 3 + [True, False, False]
    assert [r["inside"] for r in out] == [True] * 3 + [False] * 3
    assert out[4] == {"row": "score", "mode": "sampled", "metric": "accuracy_t2", "value": 0.7,
                      "value_low": 0.65, "value_high": 0.75, "low": 0.5, "high": 0.6,
                      "inside": False, "ok": False}
    with pytest.raises(KeyError, match="no row 'base'"):
        gpu_testbed.compare("base", {"greedy": inside}, table)
    real = json.loads(gpu_testbed.TABLE.read_text())      # the CPU run holds both rows
    assert all(row in real["rows"] for row in gpu_testbed.ROWS)


def test_pseudo_reward_is_deterministic_and_takes_both_values():
    rewards = {gpu_check.pseudo_reward(None, f"text {i}") for i in range(20)}
    assert rewards == {0.0, 1.0}
    assert gpu_check.pseudo_reward(None, "a") == gpu_check.pseudo_reward(None, "a")


# --- the trainer image's GPU build (unverified until built on a CUDA base) ---

TRAINER = (REPO / "containers/trainer.Dockerfile").read_text()


def _arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(.*)$", TRAINER, re.M)
    return value.strip('"')


def test_trainer_prebuilds_fused_adam_for_a100_and_h100_on_a_cuda_base():
    assert _arg("BASE_IMAGE").startswith("nvidia/cuda:") and "devel" in _arg("BASE_IMAGE")
    assert _arg("DS_GPU_OPS") == "auto" and _arg("TORCH_CUDA_ARCH_LIST") == "8.0;9.0"
    switches = dict(s.split("=") for s in _arg("DS_GPU_OP_SWITCHES").split())
    assert switches == {"DS_BUILD_OPS": "0", "DS_BUILD_FUSED_ADAM": "1"}
    run = re.search(r"^RUN nvcc=.*?(?=^\S)", TRAINER + "\nEND", re.M | re.S).group(0)
    assert "--no-build-isolation" in run and "--no-binary deepspeed deepspeed==0.19.8" in run
    assert "installed_ops" in run and "fused_adam" in run      # the build proves the op is there
    assert 'auto) [ -n "$nvcc" ] || exit 0' in run               # no nvcc (CPU base): ops off
    assert "DS_GPU_OPS=1: BASE_IMAGE has no nvcc" in run


def test_build_images_passes_cuda_args_to_the_trainer_only_and_keeps_local_ops_off():
    script = str(REPO / "scripts/build_images.py")
    done = subprocess.run([sys.executable, script, "--dry-run", "--cuda-base",
                           "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04"], capture_output=True,
                          text=True, cwd=REPO, check=True)
    lines = done.stdout.splitlines()
    (trainer,) = [line for line in lines if "trainer.Dockerfile" in line]
    assert "--build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04" in trainer
    assert "--build-arg DS_GPU_OPS=1" in trainer and "TORCH_CUDA_ARCH_LIST=8.0;9.0" in trainer
    assert all("DS_GPU_OPS" not in line for line in lines if line is not trainer)
    local = subprocess.run([sys.executable, script, "--dry-run", "--local"], capture_output=True,
                           text=True, cwd=REPO, check=True).stdout.splitlines()
    assert all("--build-arg DS_GPU_OPS=0" in line and "DS_CPU_OPS=1" in line for line in local)
    refused = subprocess.run([sys.executable, script, "--dry-run", "--local", "--cuda-base", "x"],
                             capture_output=True, text=True, cwd=REPO)
    assert refused.returncode != 0 and "--cuda-base" in refused.stderr
