"""The SCoRe DAG: data -> gate -> base attempts (eval split, plus the train-split probe
when the difficulty filter is on) -> gate -> Beam verification -> gate -> difficulty
filter -> gate -> Stage I -> gate on its steps -> Stage II -> gate on its steps ->
attempts of the Stage I and Stage II models -> verification -> evaluation (base, stage1,
trained) -> gate on the eval rows -> promotion gate (dsl.If: the trained model goes to the
registry only when config.promotion's conditions hold); beside it, when eval.sampling_k > 0
(dsl.If), the sampling study of the base and the trained model.

Every arrow carries a typed artifact; every dataset a step produces passes a Great
Expectations gate before the next step uses it: later steps read the gate's `clean` output
(config.gates: share thresholds, and quarantine of failing rows instead of failing the run).

Placement (fixed at compile time from config.resources): every step that loads the model
(prepare_model, sample_attempts, the training steps, the sampling study) runs in the trainer
image with the configured accelerator: one device for the one-process steps, all
resources.accelerator_count for training. Training is retried (it resumes from its last
checkpoint) and gets a memory-backed /dev/shm (NCCL needs more than Kubernetes' 64 MiB).

Caching: data_fingerprint (never cached) digests config.data and a file source's bytes;
prepare_problems is cached on it, so a run over the same data and config reuses every
step's output up to the promotion gate, which reads the registry and always runs.
"""
import dataclasses

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Model

from selfcorrect import __version__
from selfcorrect.config import ResourcesConfig, RunConfig
from selfcorrect.components import (config_flag, data_fingerprint, decide_promotion, evaluate,
                                    filter_problems, prepare_model, prepare_problems, promote_model,
                                    sample_attempts, sampling_study, train_stage1, train_stage2,
                                    validate_data, verify_attempts)
from selfcorrect.train.resources import apply_resources

PIPELINE_NAME = "selfcorrect-score"
RETRY = {"num_retries": 2, "backoff_duration": "60s"}
TRAIN_RETRY = {"num_retries": 2, "backoff_duration": "120s", "backoff_factor": 2.0}


def _one_device(requests: RunConfig) -> RunConfig:
    """The requests of a one-process model step: the accelerator type, at most one of it."""
    res = requests.resources
    return dataclasses.replace(requests, resources=dataclasses.replace(
        res, accelerator_count=min(res.accelerator_count, 1)))


def _training(task, requests: RunConfig, kubernetes_platform: bool):
    """A training step: all the configured accelerators, retried (resuming from its last
    checkpoint), and on Kubernetes a memory-backed /dev/shm for NCCL, bounded by the pod's
    memory limit."""
    apply_resources(task, requests)
    task.set_retry(**TRAIN_RETRY)
    if kubernetes_platform:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                   medium="Memory")
    return task


def _gate(kind: str, data, config, label: str, problems=None):
    """A validate_data task named gate-<label>; a failing gate's reports also go to
    gates.report_uri/<run id>/<task name>/ when that is set."""
    task = validate_data(kind=kind, data=data, config=config,
                         run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                         **({"problems": problems} if problems is not None else {}))
    return task.set_display_name(f"gate-{label}")


def _verified(config, problems, model, label: str, requests: RunConfig,
              difficulty_probe: bool = False, after=None):
    """Attempts on the eval split (plus the difficulty filter's train probe when asked and
    configured), gated, verified, gated; returns the tasks (attempts, attempts_gate,
    verdicts, verdicts_gate). Later steps read the gates' `clean`."""
    attempts = sample_attempts(config=config, problems=problems, model=model, split="eval",
                               difficulty_probe=difficulty_probe)
    if after is not None:       # the model's training steps passed their gate
        attempts.after(after)
    attempts.set_display_name(f"sample-attempts-{label}").set_retry(**RETRY)
    apply_resources(attempts, _one_device(requests))
    attempts_gate = _gate("attempts", attempts.outputs["attempts"], config,
                          f"attempts-{label}", problems)
    verdicts = verify_attempts(config=config, problems=problems,
                               attempts=attempts_gate.outputs["clean"])
    verdicts.set_display_name(f"verify-attempts-{label}").set_retry(**RETRY)
    gate = _gate("verdicts", verdicts.outputs["verdicts"], config, f"verdicts-{label}", problems)
    return attempts, attempts_gate, verdicts, gate


@dsl.pipeline(name="selfcorrect-promotion-gate",
              description="Promote the model to the registry when config.promotion's "
                          "conditions hold against the evaluation results")
def promotion_gate(config: dict, results: Dataset, model: Model, problems: Dataset,
                   verdicts: Dataset, eval_rows: Dataset):
    """decide_promotion -> dsl.If(promote) -> promote_model; reusable as a sub-DAG.
    eval_rows (gated) is kept in the registry beside the promoted model."""
    gate = decide_promotion(config=config, results=results, eval_rows=eval_rows)
    gate.set_display_name("promotion-gate").set_caching_options(False)  # reads the registry now
    with dsl.If(gate.outputs["Output"] == True, name="promote-if-better"):  # noqa: E712
        promote_model(config=config, model=model, results=results, problems=problems,
                      verdicts=verdicts, eval_rows=eval_rows,
                      decision=gate.outputs["decision"]
                      ).set_display_name("promote-model").set_caching_options(False)


def make_pipeline(resources: ResourcesConfig | None = None, kubernetes_platform: bool = True):
    """The DAG. Resource requests are fixed when the pipeline is compiled, so they come from
    `resources` (config.resources) here, not from the run-time `config` parameter.

    kubernetes_platform: add the Kubernetes platform spec (the training steps' /dev/shm
    volume; Kubeflow Pipelines). Vertex AI reads a single-document YAML: compile without."""
    requests = RunConfig(resources=resources or ResourcesConfig())

    @dsl.pipeline(name=PIPELINE_NAME, display_name=f"{PIPELINE_NAME} {__version__}",
                  description=f"SCoRe self-correction training, selfcorrect version {__version__}")
    def score_pipeline(config: dict) -> Dataset:
        # Never cached: a scheduled retraining run with the same data.path must see new bytes.
        key = data_fingerprint(config=config).set_caching_options(False)
        key.set_display_name("data-fingerprint")
        # Cached on (config, fingerprint, image): the same data give the same problems
        # artifact, so the steps after it (training included) can hit the cache as well.
        problems = prepare_problems(config=config, fingerprint=key.output)
        problems_gate = _gate("problems", problems.outputs["problems"], config, "problems")
        data = problems_gate.outputs["clean"]

        base = prepare_model(config=config)
        apply_resources(base, _one_device(requests))
        # the base model's attempts also probe the train split when data.drop_always_solved
        # or drop_never_solved is on (a run-time choice: sample_attempts reads the config)
        _, base_attempts_ok, _, base_verdicts_ok = _verified(
            config, data, base.outputs["model"], "base", requests, difficulty_probe=True)

        # a copy of the problems when both flags are off
        train_data = filter_problems(config=config, problems=data,
                                     verdicts=base_verdicts_ok.outputs["clean"])
        train_data.set_display_name("filter-problems")
        train_gate = _gate("problems", train_data.outputs["filtered"], config, "filtered-problems")
        train_problems = train_gate.outputs["clean"]
        stage1 = train_stage1(config=config, problems=train_problems,
                              base_model=base.outputs["model"])
        # Stage I's steps (rewards, KL of attempt 1 to the base: gates.max_stage1_kl_t1)
        stage1_gate = _gate("train_steps", stage1.outputs["steps"], config, "stage1-steps")
        stage2 = train_stage2(config=config, problems=train_problems,
                              init_model=stage1.outputs["model"],
                              base_model=base.outputs["model"]).after(stage1_gate)
        stage2_gate = _gate("train_steps", stage2.outputs["steps"], config, "stage2-steps")
        for task in (stage1, stage2):
            _training(task, requests, kubernetes_platform)
        _, stage1_attempts_ok, _, stage1_verdicts_ok = _verified(
            config, data, stage1.outputs["model"], "stage1", requests, after=stage1_gate)
        _, trained_attempts_ok, _, trained_verdicts_ok = _verified(
            config, data, stage2.outputs["model"], "trained", requests, after=stage2_gate)

        report = evaluate(config=config, problems=data,
                          base_attempts=base_attempts_ok.outputs["clean"],
                          base_verdicts=base_verdicts_ok.outputs["clean"],
                          trained_attempts=trained_attempts_ok.outputs["clean"],
                          trained_verdicts=trained_verdicts_ok.outputs["clean"],
                          stage1_steps=stage1_gate.outputs["clean"],
                          stage2_steps=stage2_gate.outputs["clean"],
                          stage1_attempts=stage1_attempts_ok.outputs["clean"],
                          stage1_verdicts=stage1_verdicts_ok.outputs["clean"])

        rows_gate = _gate("eval_rows", report.outputs["rows"], config, "eval-rows", data)

        # eval.sampling_k > 0: majority vote over k samples vs k/2 + correction, both models
        asked = config_flag(config=config, key="eval.sampling_k").set_display_name("sampling-study-asked")
        with dsl.If(asked.output == True, name="sampling-study-if-asked"):  # noqa: E712
            study = sampling_study(config=config, problems=data, base_model=base.outputs["model"],
                                   trained_model=stage2.outputs["model"])
            study.after(stage2_gate).set_display_name("sampling-study")
            apply_resources(study, _one_device(requests))

        promotion_gate(config=config, results=report.outputs["results"],
                       model=stage2.outputs["model"], problems=data,
                       verdicts=trained_verdicts_ok.outputs["clean"],
                       eval_rows=rows_gate.outputs["clean"])
        return report.outputs["results"]

    return score_pipeline


score_pipeline = make_pipeline()
