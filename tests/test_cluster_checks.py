"""Issue 20: what a rank or the last step would find in its pod is found on this machine.
`submit` and `schedule` refuse before any request reaches the API (the stand-in logs every
request); `compile` warns on the same rules; the cluster presets compile for 8 accelerators
and pass the ranks' own checks at world size 8, without GPUs."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kfp_standin import KfpStandIn  # noqa: E402

from selfcorrect import config  # noqa: E402
from selfcorrect.cli import main  # noqa: E402
from selfcorrect.cluster_checks import findings  # noqa: E402
from selfcorrect.pipelines.compile import compile_pipeline  # noqa: E402
from compiled import read_platform_spec, read_spec  # noqa: E402
from selfcorrect.train import launch, loop  # noqa: E402

GPUS = ["--set", "resources.accelerator_type=nvidia.com/gpu",
        "--set", "resources.accelerator_count=8"]
REMOTE = ["--set", "output_dir=gs://bucket/runs", "--set", "resources.cluster_credentials=true"]


@pytest.fixture
def api():
    with KfpStandIn() as server:
        yield server


@pytest.mark.parametrize("command", ["submit", "schedule"])
@pytest.mark.parametrize("sets, says", [
    (GPUS + REMOTE + ["--set", "train.problems_per_step=4"],
     ["train.problems_per_step: 4:", "use a multiple of 8",
                     "resources.accelerator_count=8"]),
    (GPUS + REMOTE + ["--set", "train.problems_per_step=8", "--set",
                      "train.gradient_accumulation_steps=3"],
     ["train.gradient_accumulation_steps: 3:", "must divide the 2 episodes"]),
    (["--set", "output_dir=runs"], ["output_dir: 'runs':", "--set output_dir=gs://BUCKET"]),
    (["--set", "output_dir=s3://mlpipeline/runs"],
     ["output_dir: 's3://mlpipeline/runs':", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
      "resources.secret_env", "resources.cluster_credentials=true"]),
    (["--set", "output_dir=gs://bucket/runs"],
     ["output_dir: 'gs://bucket/runs':", "--service-account", "Workload Identity"]),
])
def test_submit_and_schedule_refuse_before_any_request(api, capsys, command, sets, says):
    extra = ["--every", "1h"] if command == "schedule" else []
    assert main([command, "--host", api.url, "--preset", "tiny", *sets, *extra]) == 2
    err = capsys.readouterr().err
    assert "nothing was uploaded" in err
    for text in says:
        assert text in err, text
    assert api.state.log == []          # no connection at all, let alone an upload


def test_declared_credentials_or_a_service_account_satisfy_the_checks():
    def errors(*sets, **kw):
        cfg = config.load("tiny", overrides=list(sets), local=False)
        return [str(f) for f in findings(cfg, **kw) if f.error]

    s3 = "output_dir=s3://mlpipeline/runs"
    assert errors(s3, "resources.secret_env={AWS_ACCESS_KEY_ID: 'minio:accesskey', "
                      "AWS_SECRET_ACCESS_KEY: 'minio:secretkey'}") == []
    assert errors(s3, "resources.secret_env={AWS_ACCESS_KEY_ID: 'minio:accesskey'}") == [
        "output_dir: 's3://mlpipeline/runs': an s3:// location, but the pods get no "
        "AWS_SECRET_ACCESS_KEY; declare them, e.g. --set 'resources.secret_env={AWS_ACCESS_KEY_ID: "
        "\"mlpipeline-minio-artifact:accesskey\", AWS_SECRET_ACCESS_KEY: "
        "\"mlpipeline-minio-artifact:secretkey\"}', or say the cluster provides them (IRSA, a "
        "node role): --set resources.cluster_credentials=true"]
    gs = "output_dir=gs://b/runs"
    assert errors(gs, service_account="default-editor") == []
    assert errors(gs, backend="vertex") == []          # a Vertex run always has an identity
    assert len(errors(gs, "promotion.registry=s3://other/registry",
                      service_account="sa")) == 1       # every location is checked
    hub = [f for f in findings(config.load("cluster-1.5b", overrides=[gs], local=False),
                               service_account="sa")]
    assert [(f.key, f.error) for f in hub] == [("model.path", False)]   # a Hub id only warns
    assert "HF_TOKEN" in str(hub[0])


def test_compile_warns_on_the_same_rules_and_a_local_compile_stays_valid(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path), "--preset", "tiny", *GPUS]) == 0
    err = capsys.readouterr().err
    assert "warning: train.problems_per_step: 2:" in err
    assert "warning: output_dir: 'runs':" in err


@pytest.mark.parametrize("preset, zero", [("cluster-1.5b", 2), ("cluster-7b", 3)])
def test_cluster_presets_compile_for_8_gpus_and_pass_the_ranks_checks(tmp_path, preset, zero):
    cfg = config.load(preset, local=False)
    assert cfg.resources.accelerator_count == 8 and cfg.resources.training_processes == 8
    assert cfg.train.zero_stage == zero and cfg.train.gradient_checkpointing
    assert cfg.train.checkpoint_every > 0 and cfg.train.problems_per_step % 8 == 0
    assert cfg.train.max_new_tokens >= 1024 and cfg.generate.max_new_tokens >= 1024
    assert cfg.model.source == "hf" and cfg.model.path.startswith("Qwen/Qwen2.5-")
    assert cfg.data.n_train >= 1000
    # the ranks' own functions at world size 8: each rank's share, its micro-batches
    local, shard = loop.shares(cfg.train, 8)
    assert local * 8 == cfg.train.problems_per_step and local % shard == 0
    ds = launch.gpu_ds_config(cfg, num_gpus=8)
    assert ds["train_batch_size"] == cfg.train.problems_per_step * cfg.train.samples_per_problem
    assert ds["train_micro_batch_size_per_gpu"] >= 1 and ds["zero_optimization"]["stage"] == zero
    # output_dir is left for the user: submit refuses until it is remote, and then passes
    assert [f.key for f in findings(cfg) if f.error] == ["output_dir"]
    remote = config.load(preset, overrides=["output_dir=gs://b/runs"], local=False)
    assert [f for f in findings(remote, service_account="sa") if f.error] == []

    path = compile_pipeline(tmp_path, cfg.to_dict())
    executors = read_spec(path)["deploymentSpec"]["executors"]
    for stage in ("exec-train-stage1", "exec-train-stage2"):
        assert executors[stage]["container"]["resources"]["accelerator"]["resourceCount"] == "8"
    platform = read_platform_spec(path)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert platform["exec-sample-attempts"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert platform["exec-train-stage1"]["genericEphemeralVolume"][0]["size"] == \
        cfg.resources.scratch_size


def test_compile_for_vertex_warns_what_it_drops(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path), "--backend", "vertex",
                 "--preset", "cluster-7b", "--set", "output_dir=gs://b/runs"]) == 0
    err = capsys.readouterr().err
    assert ("warning: Vertex AI reads no Kubernetes platform spec; this compile drops "
            "resources.scratch_size, the training and generation steps' memory-backed "
            "/dev/shm") in err
    from selfcorrect.pipelines.compile import pipeline_file

    assert read_platform_spec(pipeline_file(tmp_path)) == {}
