"""Issue 20: placement from config.resources, compiled through the real KFP compiler and
kfp-kubernetes: per step kind (train: N GPUs; generation: 1 GPU with its own limits;
verification and the CPU steps: requests), node selectors, tolerations, scratch volume,
/dev/shm on every GPU step, env and Kubernetes secrets on the steps that read models or the
artifact store; a Vertex compile keeps what the PipelineSpec carries and names the rest."""
import re

import pytest

from selfcorrect import config
from selfcorrect.pipelines.compile import compile_pipeline
from compiled import read_platform_spec, read_spec
from selfcorrect.pipelines.placement import SCRATCH_ENV, vertex_drops

SETS = ["resources.accelerator_type=nvidia.com/gpu", "resources.accelerator_count=8",
        "resources.cpu_limit=64", "resources.memory_limit=900G",
        "resources.generate_cpu_limit=8", "resources.generate_memory_limit=100G",
        "resources.verify_cpu_request=8", "resources.verify_memory_request=16G",
        "resources.cpu_request=1", "resources.memory_request=4G",
        "resources.node_selector={cloud.google.com/gke-accelerator: nvidia-h100-80gb}",
        "resources.tolerations=[nvidia.com/gpu=present:NoSchedule]",
        "resources.cpu_node_selector={pool: cpu}", "resources.cpu_tolerations=[dedicated]",
        "resources.scratch_size=200Gi",
        "resources.env={AWS_ENDPOINT_URL: 'http://minio-service.kubeflow:9000'}",
        "resources.secret_env={HF_TOKEN: 'hf-token:token', "
        "AWS_ACCESS_KEY_ID: 'mlpipeline-minio-artifact:accesskey', "
        "AWS_SECRET_ACCESS_KEY: 'mlpipeline-minio-artifact:secretkey'}"]
GPU = {"prepare-model", "sample-attempts", "train-stage1", "train-stage2", "sampling-study"}
# steps that read no model and no store location: no env, no secrets
NO_STORE = {"verify-attempts", "filter-problems", "evaluate"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    cfg = config.load("tiny", overrides=SETS, local=False)
    out = tmp_path_factory.mktemp("placed")
    kfp = compile_pipeline(out / "kfp", cfg.to_dict())
    vertex = compile_pipeline(out / "vertex", cfg.to_dict(), kubernetes_platform=False)
    return cfg, kfp, vertex


def _kind(executor: str) -> str:
    return re.sub(r"-\d+$", "", executor[len("exec-"):])


def test_each_step_kind_gets_its_resources(compiled):
    _, path, _ = compiled
    executors = read_spec(path)["deploymentSpec"]["executors"]
    seen = set()
    for name, ex in executors.items():
        kind, res = _kind(name), ex["container"].get("resources", {})
        seen.add(kind)
        if kind.startswith("train-"):
            assert res["accelerator"]["resourceCount"] == "8", name
            assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == ("64", "900G"), name
        elif kind in GPU:
            assert res["accelerator"]["resourceCount"] == "1", name
            assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == ("8", "100G"), name
        elif kind == "verify-attempts":
            assert "accelerator" not in res and "resourceCpuLimit" not in res, name
            assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == ("8", "16G")
        else:
            assert "accelerator" not in res and "resourceCpuLimit" not in res, name
            assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == ("1", "4G"), name
    assert GPU <= seen and {"decide-promotion", "promote-model", "validate-data"} <= seen


def test_kubernetes_placement_selectors_tolerations_scratch_shm_and_secrets(compiled):
    _, path, _ = compiled
    platform = read_platform_spec(path)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    spec = read_spec(path)["deploymentSpec"]["executors"]
    assert set(platform) == set(spec)             # every step is placed (the promotion sub-DAG too)
    for name, k8s in platform.items():
        kind = _kind(name)
        env = {e["name"]: e["value"] for e in spec[name]["container"].get("env", [])}
        secrets = {(m["secretKey"], m["envVar"], s["secretName"])
                   for s in k8s.get("secretAsEnv", []) for m in s["keyToEnv"]}
        if kind in GPU:
            assert k8s["nodeSelector"]["labels"] == {
                "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, name
            assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal",
                                           "value": "present", "effect": "NoSchedule"}], name
            assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm",
                                              "volumeName": "dshm"}], name
            (scratch,) = k8s["genericEphemeralVolume"]
            assert (scratch["mountPath"], scratch["size"]) == ("/scratch", "200Gi"), name
            assert SCRATCH_ENV.items() <= env.items(), name
        else:
            assert k8s["nodeSelector"]["labels"] == {"pool": "cpu"}, name
            assert k8s["tolerations"] == [{"key": "dedicated", "operator": "Exists"}], name
            assert "emptyDirMounts" not in k8s and "genericEphemeralVolume" not in k8s, name
        if kind in NO_STORE:
            assert not secrets and "AWS_ENDPOINT_URL" not in env, name
        else:
            assert secrets == {("token", "HF_TOKEN", "hf-token"),
                               ("accesskey", "AWS_ACCESS_KEY_ID", "mlpipeline-minio-artifact"),
                               ("secretkey", "AWS_SECRET_ACCESS_KEY", "mlpipeline-minio-artifact")}, name
            assert env["AWS_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000", name


def test_training_config_carries_the_launch_keys_only(compiled):
    """Placement (selectors, secrets' names, limits) stays out of the training steps' config
    mapping, so their cache key does not move with it."""
    _, path, _ = compiled
    tasks = read_spec(path)["root"]["dag"]["tasks"]
    for stage in ("train-stage1", "train-stage2"):
        fields = tasks[stage]["inputs"]["parameters"]["config"]["runtimeValue"]["constant"]
        resources = {k for k in fields if k.startswith("resources.")}
        assert resources == {"resources.accelerator_type", "resources.accelerator_count",
                             "resources.launcher", "resources.processes"}


def test_vertex_compile_keeps_the_pipeline_spec_and_names_what_it_drops(compiled):
    cfg, kfp, vertex = compiled
    assert read_platform_spec(vertex) == {}
    assert read_spec(vertex)["deploymentSpec"] == read_spec(kfp)["deploymentSpec"]
    drops = vertex_drops(cfg)
    assert drops == ["resources.node_selector", "resources.tolerations",
                     "resources.cpu_node_selector", "resources.cpu_tolerations",
                     "resources.scratch_size", "resources.secret_env",
                     "the training and generation steps' memory-backed /dev/shm"]
    assert vertex_drops(config.load("tiny", local=False)) == []


@pytest.mark.parametrize("item, message", [
    ("resources.tolerations=[a:Sometimes]", "is no toleration"),
    ("resources.secret_env={HF_TOKEN: hf-token}", '"secret-name:key"'),
    ("resources.env={A: true}", "quote it"),
    ("resources.node_selector=[a]", "expected a mapping"),
    ("resources.env={1X: a}", "no environment variable name"),
])
def test_bad_placement_values_name_the_key_and_the_fix(item, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)) as err:
        config.load("tiny", overrides=[item], local=False)
    assert item.split("=")[0].rsplit(".", 1)[0] in str(err.value)
