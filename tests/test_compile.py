import re

import yaml

from selfcorrect import __version__, images
from selfcorrect.pipelines.compile import compile_pipeline

STEPS = {"prepare-problems", "prepare-model", "validate-data", "sample-attempts",
         "verify-attempts", "train-stage1", "train-stage2", "evaluate"}


def test_compiled_pipeline_is_versioned_and_pins_images(tmp_path):
    path = compile_pipeline(tmp_path)
    assert path.name == f"selfcorrect-pipeline-{__version__}.yaml"
    ir = yaml.safe_load(path.read_text())
    assert ir["pipelineInfo"]["name"] == "selfcorrect-score"
    assert __version__ in ir["pipelineInfo"]["displayName"]
    executors = ir["deploymentSpec"]["executors"]
    used = {e["container"]["image"] for e in executors.values()}
    assert used == {images.image(n) for n in images.IMAGES}
    for img in used:
        assert img.endswith(f":{__version__}") and ":latest" not in img
    names = {re.sub(r"-\d+$", "", c[len("comp-"):]) for c in ir["components"]}
    assert STEPS <= names
    assert "config" in ir["root"]["inputDefinitions"]["parameters"]


def test_registry_comes_from_one_place(monkeypatch):
    monkeypatch.setenv("SELFCORRECT_REGISTRY", "us-docker.pkg.dev/p/r/")
    assert images.image("selfcorrect-trainer") == f"us-docker.pkg.dev/p/r/selfcorrect-trainer:{__version__}"


def test_caching_and_retries_per_step(tmp_path):
    ir = yaml.safe_load(compile_pipeline(tmp_path).read_text())
    tasks = ir["root"]["dag"]["tasks"]
    assert not tasks["prepare-problems"]["cachingOptions"].get("enableCache")   # new data each run
    assert tasks["train-stage1"]["cachingOptions"]["enableCache"] is True
    retried = {name for name, t in tasks.items() if "retryPolicy" in t}
    assert {"sample-attempts", "verify-attempts"} <= retried
    gate = ir["components"]["comp-selfcorrect-promotion-gate"]["dag"]["tasks"]
    assert not gate["decide-promotion"]["cachingOptions"].get("enableCache")  # reads the registry


def test_training_resources_come_from_config_at_compile_time(tmp_path):
    from selfcorrect import config

    cfg = config.load("tiny", overrides=["resources.accelerator_type=NVIDIA_TESLA_A100",
                                         "resources.accelerator_count=2",
                                         "resources.memory_limit=64G"])
    ir = yaml.safe_load(compile_pipeline(tmp_path, cfg.to_dict()).read_text())
    executors = ir["deploymentSpec"]["executors"]
    for name in ("exec-train-stage1", "exec-train-stage2"):
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "NVIDIA_TESLA_A100"
        assert res["accelerator"]["resourceCount"] == "2"
        assert res["resourceMemoryLimit"] == "64G"
    assert "resources" not in executors["exec-evaluate"]["container"]
    plain = yaml.safe_load(compile_pipeline(tmp_path / "cpu").read_text())
    assert "resources" not in plain["deploymentSpec"]["executors"]["exec-train-stage1"]["container"]


def test_every_dataset_step_is_followed_by_its_gate(tmp_path):
    """11 gates, each fed by the step before it, each told its run id and task name
    (the placeholders KFP fills in) so gates.report_uri can keep a failed gate's reports."""
    ir = yaml.safe_load(compile_pipeline(tmp_path).read_text())
    tasks = ir["root"]["dag"]["tasks"]
    gates = {name: t for name, t in tasks.items() if name.startswith("validate-data")}
    fed_by = sorted((t["inputs"]["parameters"]["kind"]["runtimeValue"]["constant"],
                     t["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"].split("-")[0])
                    for t in gates.values())
    assert fed_by == [("attempts", "sample")] * 3 + [("eval_rows", "evaluate"),
                      ("problems", "filter"), ("problems", "prepare")] + \
        [("train_steps", "train")] * 2 + [("verdicts", "verify")] * 3
    # Stage II starts, and the trained models are sampled, only after their steps passed
    steps_gates = {t["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"]: name
                   for name, t in gates.items()
                   if t["inputs"]["parameters"]["kind"]["runtimeValue"]["constant"] == "train_steps"}
    assert steps_gates["train-stage1"] in tasks["train-stage2"]["dependentTasks"]
    assert steps_gates["train-stage2"] in tasks["sample-attempts-3"]["dependentTasks"]
    for t in gates.values():
        params = t["inputs"]["parameters"]
        assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
        assert params["task_name"]["runtimeValue"]["constant"] == "{{$.pipeline_task_name}}"


def test_sampling_study_runs_only_when_asked(tmp_path):
    ir = yaml.safe_load(compile_pipeline(tmp_path).read_text())
    tasks = ir["root"]["dag"]["tasks"]
    (branch,) = [t for t in tasks.values() if t["taskInfo"]["name"] == "sampling-study-if-asked"]
    assert "config-flag" in branch["triggerPolicy"]["condition"]
    (stage2_gate,) = [n for n, t in tasks.items() if n.startswith("validate-data") and
                      t["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "train-stage2"]
    assert stage2_gate in branch["dependentTasks"]            # after Stage II's steps passed
    assert tasks["config-flag"]["inputs"]["parameters"]["key"]["runtimeValue"]["constant"] == "eval.sampling_k"
