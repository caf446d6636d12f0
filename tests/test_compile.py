import re

import yaml

from selfcorrect import __version__, images
from selfcorrect.pipelines.compile import compile_pipeline
from compiled import read_platform_spec, read_spec

STEPS = {"prepare-problems", "prepare-model", "validate-data", "sample-attempts",
         "verify-attempts", "train-stage1", "train-stage2", "evaluate"}


def test_compiled_pipeline_is_versioned_and_pins_images(tmp_path):
    path = compile_pipeline(tmp_path)
    assert path.name == f"selfcorrect-pipeline-{__version__}.yaml"
    ir = read_spec(path)
    assert ir["pipelineInfo"]["name"] == "selfcorrect-score"
    assert __version__ in ir["pipelineInfo"]["displayName"]
    executors = ir["deploymentSpec"]["executors"]
    used = {e["container"]["image"] for e in executors.values()}
    assert used == {images.image(n) for n in images.IMAGES}
    for img in used:     # the tag carries the version and the commit (selfcorrect.images)
        assert img.endswith(f":{images.tag()}") and ":latest" not in img
        assert images.tag().startswith(__version__) and "+" not in images.tag()
    names = {re.sub(r"-\d+$", "", c[len("comp-"):]) for c in ir["components"]}
    assert STEPS <= names


def test_pipeline_parameters_are_the_config_keys_typed_documented_and_defaulted(tmp_path):
    """Issue 14: one typed, described pipeline parameter per run-config key (no untyped
    `config` dict); their defaults are the config's, and pipeline_arguments names them."""
    from selfcorrect import config
    from selfcorrect.pipelines.score import pipeline_arguments

    cfg = config.load("tiny", overrides=["train.learning_rate=1e-4"], local=False)
    params = read_spec(compile_pipeline(tmp_path, cfg.to_dict()))["root"]["inputDefinitions"]["parameters"]
    arguments = pipeline_arguments(cfg)
    assert set(params) == set(arguments) and "config" not in params
    kinds = {bool: "BOOLEAN", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING"}
    for name, value in arguments.items():
        assert params[name]["parameterType"] == kinds[type(value)], name
        assert params[name]["defaultValue"] == value, name
        assert params[name]["description"].strip(), name
    assert arguments["train_learning_rate"] == 1e-4 and arguments["data_n_train"] == cfg.data.n_train
    assert not any(n.startswith(("resources_", "pretrain_")) for n in params)  # compile-time / not this DAG


def _inputs(tasks: dict, name: str) -> set:
    """The pipeline parameters a task's inputs are made of (direct or inside a dict literal)."""
    params = tasks[name]["inputs"].get("parameters", {})
    used = {v["componentInputParameter"] for v in params.values() if "componentInputParameter" in v}
    return used | {k[len("pipelinechannel--"):] for k in params if k.startswith("pipelinechannel--")}


def test_each_step_reads_only_its_keys_so_train_changes_keep_data_and_verify_cached(tmp_path):
    """Issue 14: with one config dict, any change moved every step's cache key. Now the data
    steps read data_* only, verification verify_*, the gates gates_* (and the prompt limit),
    evaluation eval_*, and no train_* value reaches them; the base model's attempts read
    train_temperature only for the difficulty probe."""
    ir = read_spec(compile_pipeline(tmp_path))
    tasks = ir["root"]["dag"]["tasks"]
    prefixes = lambda used: {n.split("_")[0] if not n.startswith("output") else n for n in used}  # noqa: E731
    assert prefixes(_inputs(tasks, "data-fingerprint")) == {"data"}
    assert prefixes(_inputs(tasks, "prepare-problems")) == {"data"}
    assert prefixes(_inputs(tasks, "prepare-model")) == {"model"}
    assert prefixes(_inputs(tasks, "model-fingerprint")) == {"model"}
    for name in tasks:
        if name.startswith("verify-attempts"):
            assert prefixes(_inputs(tasks, name)) == {"verify"}, name
        if name.startswith("validate-data"):
            assert _inputs(tasks, name) - {"data_max_prompt_chars"} == \
                {"gates_max_empty_share", "gates_max_truncated_share", "gates_quarantine",
                 "gates_report_uri", "gates_max_stage1_kl_t1"}, name
    assert _inputs(tasks, "evaluate") == {"eval_bootstrap_samples", "eval_confidence", "eval_seed"}
    assert "train_temperature" in _inputs(tasks, "sample-attempts")          # the probe's
    assert not any(n.startswith("train_") for n in _inputs(tasks, "sample-attempts-2"))
    # training reads its sections, not evaluation's, the gates' or promotion's
    for stage in ("train-stage1", "train-stage2"):
        assert {"train", "model", "data", "prompts"} <= prefixes(_inputs(tasks, stage))
        assert not prefixes(_inputs(tasks, stage)) & {"eval", "gates", "promotion"}


def test_registry_comes_from_one_place(monkeypatch):
    monkeypatch.setenv("SELFCORRECT_REGISTRY", "us-docker.pkg.dev/p/r/")
    assert images.image("selfcorrect-trainer") == \
        f"us-docker.pkg.dev/p/r/selfcorrect-trainer:{images.tag()}"


def _caching(ir: dict, tasks: dict) -> dict:
    """task -> whether it is cached, for the tasks that run a container (not sub-DAGs)."""
    return {name: t.get("cachingOptions", {}).get("enableCache", False)
            for name, t in tasks.items()
            if "executorLabel" in ir["components"][t["componentRef"]["name"]]}


def test_caching_follows_the_data_so_later_steps_can_hit_the_cache(tmp_path):
    """Defect 9: prepare_problems was never cached, so no step after it could hit the cache
    across runs. Now only the fingerprint of the data (and the registry readers) always run;
    prepare_problems is cached on config + that fingerprint and everything downstream is
    cacheable; nothing else reaches new data."""
    ir = read_spec(compile_pipeline(tmp_path))
    tasks = ir["root"]["dag"]["tasks"]
    cached = _caching(ir, tasks)
    assert cached.pop("data-fingerprint") is False                     # reads the data each run
    assert cached.pop("model-fingerprint") is False                    # and the model's identity
    assert all(cached.values()), {n for n, c in cached.items() if not c}
    prep = tasks["prepare-problems"]["inputs"]["parameters"]
    assert {k for k in prep if not k.startswith("pipelinechannel--")} == {"data", "fingerprint"}
    assert prep["fingerprint"]["taskOutputParameter"]["producerTask"] == "data-fingerprint"
    model = tasks["prepare-model"]["inputs"]["parameters"]
    assert model["fingerprint"]["taskOutputParameter"]["producerTask"] == "model-fingerprint"
    # the only steps that read the data or model settings without a cached predecessor are
    # the fingerprints: a replaced model at the same model.path is loaded again
    roots = {n for n in cached if not tasks[n].get("dependentTasks")}
    assert roots == set() and {"data-fingerprint", "model-fingerprint"} <= set(tasks)
    gate = ir["components"]["comp-selfcorrect-promotion-gate"]["dag"]["tasks"]
    assert _caching(ir, gate) == {"decide-promotion": False}         # reads the registry
    branches = [c["dag"]["tasks"] for n, c in ir["components"].items()
                if n.startswith("comp-condition")]
    in_branches = {}
    for branch in branches:
        in_branches.update(_caching(ir, branch))
    assert in_branches == {"promote-model": False, "sampling-study": True}


def test_retries_per_step(tmp_path):
    """Defect 4 (compile-time part): the training steps are retried; a retry resumes from
    the checkpoints under the run's artifact store."""
    tasks = read_spec(compile_pipeline(tmp_path))["root"]["dag"]["tasks"]
    retried = {name: t["retryPolicy"] for name, t in tasks.items() if "retryPolicy" in t}
    assert {"sample-attempts", "verify-attempts", "train-stage1", "train-stage2"} <= set(retried)
    for stage in ("train-stage1", "train-stage2"):
        assert retried[stage]["maxRetryCount"] >= 1
        assert retried[stage]["backoffDuration"].endswith("s")


def test_training_steps_get_a_memory_backed_dev_shm(tmp_path):
    """Defect 6 (compile-time part): Kubernetes gives a pod 64 MiB of /dev/shm, too little
    for NCCL; the training steps mount a memory-backed emptyDir there (kfp-kubernetes)."""
    path = compile_pipeline(tmp_path)
    execs = read_platform_spec(path)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(execs) == {"exec-train-stage1", "exec-train-stage2"}
    for spec in execs.values():
        assert spec["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm",
                                           "volumeName": "dshm"}]
    # Vertex AI reads one YAML document: no platform spec there, the same DAG otherwise
    vertex = compile_pipeline(tmp_path / "vertex", kubernetes_platform=False)
    assert read_platform_spec(vertex) == {}
    assert read_spec(vertex)["root"] == read_spec(path)["root"]


MODEL_STEPS = {"prepare-model", "sample-attempts", "train-stage1", "train-stage2",
               "sampling-study"}


def _executors_by_component(ir: dict) -> dict:
    """component name (without -N) -> the executors its tasks run."""
    out = {}
    for name, comp in ir["components"].items():
        if "executorLabel" in comp:
            out.setdefault(re.sub(r"-\d+$", "", name[len("comp-"):]), set()).add(comp["executorLabel"])
    return out


def test_steps_that_run_the_model_get_the_trainer_image_and_the_accelerator(tmp_path):
    """Defect 5: generation (sample_attempts, sampling_study) and prepare_model ran in the
    CPU base image and asked for no accelerator. Every step that loads the model now runs
    in the trainer image; the one-process steps ask for one device, training for them all."""
    from selfcorrect import config

    cfg = config.load("tiny", overrides=["resources.accelerator_type=nvidia.com/gpu",
                                         "resources.accelerator_count=4",
                                         "resources.memory_limit=64G",
                                         "resources.generate_memory_limit=16G"])
    ir = read_spec(compile_pipeline(tmp_path, cfg.to_dict()))
    executors = ir["deploymentSpec"]["executors"]
    by_component = _executors_by_component(ir)
    assert MODEL_STEPS <= set(by_component)
    trainer = images.image("selfcorrect-trainer")
    for comp, labels in by_component.items():
        for label in labels:
            container = executors[label]["container"]
            if comp in MODEL_STEPS:
                assert container["image"] == trainer, comp
                res = container["resources"]
                assert res["accelerator"]["resourceType"] == "nvidia.com/gpu", comp
                want = "4" if comp.startswith("train-") else "1"
                assert res["accelerator"]["resourceCount"] == want, comp
                # the one-GPU steps have their own, smaller limits (issue 20)
                assert res["resourceMemoryLimit"] == ("64G" if want == "4" else "16G"), comp
            else:
                assert container["image"] != trainer, comp
                assert "accelerator" not in container.get("resources", {}), comp


def test_training_resources_come_from_config_at_compile_time(tmp_path):
    from selfcorrect import config

    cfg = config.load("tiny", overrides=["resources.accelerator_type=NVIDIA_TESLA_A100",
                                         "resources.accelerator_count=2",
                                         "resources.memory_limit=64G"])
    ir = read_spec(compile_pipeline(tmp_path, cfg.to_dict()))
    executors = ir["deploymentSpec"]["executors"]
    for name in ("exec-train-stage1", "exec-train-stage2"):
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "NVIDIA_TESLA_A100"
        assert res["accelerator"]["resourceCount"] == "2"
        assert res["resourceMemoryLimit"] == "64G"
    assert "resources" not in executors["exec-evaluate"]["container"]
    plain = read_spec(compile_pipeline(tmp_path / "cpu"))
    assert "resources" not in plain["deploymentSpec"]["executors"]["exec-train-stage1"]["container"]


def test_every_dataset_step_is_followed_by_its_gate(tmp_path):
    """11 gates, each fed by the step before it, each told its run id and task name
    (the placeholders KFP fills in) so gates.report_uri can keep a failed gate's reports."""
    ir = read_spec(compile_pipeline(tmp_path))
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
    """The condition reads the eval_sampling_k parameter itself: no config_flag pod."""
    ir = read_spec(compile_pipeline(tmp_path))
    tasks = ir["root"]["dag"]["tasks"]
    (branch,) = [t for t in tasks.values() if t["taskInfo"]["name"] == "sampling-study-if-asked"]
    assert branch["triggerPolicy"]["condition"] == \
        "int(inputs.parameter_values['pipelinechannel--eval_sampling_k']) > 0"
    assert not any(n.startswith("config-flag") for n in tasks)
    (stage2_gate,) = [n for n, t in tasks.items() if n.startswith("validate-data") and
                      t["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "train-stage2"]
    assert stage2_gate in branch["dependentTasks"]            # after Stage II's steps passed


def test_pipeline_arguments_refuse_text_a_dict_literal_cannot_carry():
    import pytest

    from selfcorrect import config
    from selfcorrect.pipelines.score import pipeline_arguments

    with pytest.raises(config.ConfigError, match=r"name: 'my \"run\"': a pipeline run takes no quote"):
        pipeline_arguments(config.load("tiny", overrides=['name=my "run"']))
    free = config.load("tiny", overrides=['prompts.correction=Check "it".\\nFix it.'])
    assert pipeline_arguments(free)["prompts_correction"] == 'Check "it".\\nFix it.'
