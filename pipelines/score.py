"""The SCoRe DAG: data -> gate -> base attempts (eval split, plus the train-split probe
when the difficulty filter is on) -> gate -> Beam verification -> gate -> difficulty
filter -> gate -> Stage I -> gate on its steps -> Stage II -> gate on its steps ->
attempts of the Stage I and Stage II models -> verification -> evaluation (base, stage1,
trained) -> gate on the eval rows -> promotion gate (dsl.If: the trained model goes to the
registry only when the promotion conditions hold); beside it, when eval_sampling_k > 0
(dsl.If on the parameter), the sampling study of the base and the trained model.

Every arrow carries a typed artifact; every dataset a step produces passes a Great
Expectations gate before the next step uses it: later steps read the gate's `clean` output
(gates_*: share thresholds, and quarantine of failing rows instead of failing the run).

Parameters: one typed pipeline parameter per run-config key, named <section>_<key>
(`train_learning_rate: float`), documented and defaulted from selfcorrect.config; the CLI
turns a RunConfig into these arguments (`pipeline_arguments`). Each step gets the typed
values it reads, so its cache key moves only with them: a change to train.* leaves the
problems, the base model's attempts and their verdicts cached. The training steps, the
sampling study take a `config` mapping of the keys they read (dotted, e.g.
{"train.learning_rate": ...}), assembled here from the same parameters.

Placement (fixed at compile time from config.resources; selfcorrect.pipelines.placement.place):
every step that loads the model (prepare_model, sample_attempts, the training steps, the
sampling study) runs in the trainer image with the configured accelerator: one device for
the one-process steps ("generate"), all resources.accelerator_count for training; Beam
verification and the CPU steps take their own requests. Accelerator steps get the node
selectors, tolerations, scratch volume and a memory-backed /dev/shm (NCCL needs more than
Kubernetes' 64 MiB); steps that read models or the artifact store get resources.env and
resources.secret_env. Training is retried (it resumes from its last checkpoint).

Caching: data_fingerprint (never cached) digests the data section and a file source's
bytes; prepare_problems is cached on it, so a run over the same data and config reuses every
step's output up to the promotion gate, which reads the registry and always runs. Likewise
model_fingerprint (never cached) digests the model section and what identifies its weights
(a Hub commit, a bucket's object tags, a folder's file hashes); prepare_model is cached on it.
"""
import dataclasses
import inspect

import docstring_parser
from kfp import dsl
from kfp.dsl import Dataset, Model

from selfcorrect import __version__, images
from selfcorrect import config as cfg_mod
from selfcorrect.components import (data_fingerprint, decide_promotion, evaluate,
                                    filter_problems, model_fingerprint, prepare_model,
                                    prepare_problems, promote_model,
                                    sample_attempts, sampling_study, train_stage1, train_stage2,
                                    validate_data, verify_attempts)
from selfcorrect.config import RunConfig
from selfcorrect.pipelines import PIPELINE_NAME
from selfcorrect.pipelines.placement import place

RETRY = {"num_retries": 2, "backoff_duration": "60s"}
TRAIN_RETRY = {"num_retries": 2, "backoff_duration": "120s", "backoff_factor": 2.0}
# The run-time keys: every section but resources (placement, fixed at compile time) and
# pretrain (the testbed's, not this DAG's).
SECTIONS = ("name", "task", "output_dir", "model", "data", "generate", "train", "verify",
            "prompts", "eval", "promotion", "gates")
# What each config-taking step reads, and so what its cache key follows (the prompt
# templates go as parameters of their own: free text in a dict literal would be substituted
# raw into JSON by kfp.local). Training also gets name, task and data.*, which change its
# inputs anyway, so that its checkpoint records them (resolved_config.json).
TRAIN_KEYS = ("name", "task", "output_dir", "model", "data", "train", "generate.batch_size",
              "verify.timeout_s", "verify.code_concurrency", "verify.custom")  # the rewards' checks
STUDY_KEYS = ("model", "generate", "verify", "eval", "train.temperature")
# The resources.* keys a training step reads (its launch); placement stays out of its cache key.
TRAIN_RESOURCE_KEYS = ("accelerator_type", "accelerator_count", "launcher", "processes")


def parameter_name(key: str) -> str:
    """The pipeline parameter of a dotted config key: train.learning_rate -> train_learning_rate."""
    return key.replace(".", "_")


def pipeline_arguments(cfg: RunConfig) -> dict:
    """The pipeline's arguments for a run config: {"train_learning_rate": 5e-06, ...}.

    Text that steps receive inside a `config` or `data` mapping may hold no quote, backslash
    or line break (a dict literal of parameters is filled in as raw JSON text by kfp.local);
    the prompt templates, free text, go as parameters of their own."""
    flat = cfg_mod.flat(cfg, *SECTIONS)
    for key, value in flat.items():
        if isinstance(value, str) and not key.startswith("prompts.") and set(value) & set('"\\\n'):
            raise cfg_mod.ConfigError(f"{key}: {value!r}: a pipeline run takes no quote, "
                                      "backslash or line break here")
    return {parameter_name(k): v for k, v in flat.items()}


def _keys():
    """(dotted key, type, description) of each run-time config key; the descriptions are the
    config dataclasses' `Attributes:` lines (a key without one is a KeyError here)."""
    builtin = {"str": str, "int": int, "float": float, "bool": bool}
    for top in dataclasses.fields(RunConfig):
        if top.name not in SECTIONS:
            continue
        section = top.default_factory if dataclasses.is_dataclass(top.default_factory) else None
        docs = {p.arg_name: " ".join(p.description.split())
                for p in docstring_parser.parse(inspect.getdoc(section or RunConfig)).params}
        for f in dataclasses.fields(section) if section else [top]:
            yield (f"{top.name}.{f.name}" if section else f.name), builtin[f.type], docs[f.name]


class Placement:
    """Places each task by step kind (selfcorrect.pipelines.placement.place); compile-time."""

    def __init__(self, requests: RunConfig, kubernetes_platform: bool):
        self.requests, self.kubernetes_platform = requests, kubernetes_platform

    def __call__(self, task, kind: str, store: bool = True):
        """Place the task, and name its image now (the registry may be --registry's)."""
        task.set_container_image(images.repin(task.container_spec.image))
        return place(task, self.requests, kind, kubernetes_platform=self.kubernetes_platform,
                     store=store)

    def training(self, task):
        """A training step: all the configured accelerators, retried (resuming from its last
        checkpoint)."""
        return self(task, "train").set_retry(**TRAIN_RETRY)


class Params(dict):
    """The pipeline's parameters inside the DAG: dotted config key -> channel."""

    def section(self, name: str, *skip: str) -> dict:
        """{key: channel} of one section, for a component whose parameters are named as its
        keys (verify_attempts(**p.section("verify")))."""
        return {k.split(".", 1)[1]: v for k, v in self.items()
                if k.startswith(name + ".") and k.split(".", 1)[1] not in skip}

    def config(self, *keys: str, constants: dict | None = None) -> dict:
        """A dotted {key: channel} mapping of the given sections or keys, plus constants:
        the `config` of the steps that read many keys."""
        picked = {k: v for k, v in self.items()
                  if k in keys or k.split(".")[0] in keys}
        return {**picked, **(constants or {})}

    def templates(self) -> dict:
        """The prompt templates, as the model-running components take them."""
        return {"attempt1_template": self["prompts.attempt1"],
                "correction_template": self["prompts.correction"]}


def _gate(p: Params, put: Placement, kind: str, data, label: str, problems=None):
    """A validate_data task named gate-<label>; a failing gate's reports also go to
    gates_report_uri/<run id>/<task name>/ when that is set."""
    task = validate_data(kind=kind, data=data, max_prompt_chars=p["data.max_prompt_chars"],
                         run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER, **p.section("gates"),
                         **({"problems": problems} if problems is not None else {}))
    return put(task, "cpu").set_display_name(f"gate-{label}")


def _verified(p: Params, put: Placement, problems, model, label: str,
              difficulty_probe: bool = False, after=None):
    """Attempts on the eval split (plus the difficulty filter's train probe when asked and
    configured), gated, verified, gated; returns the tasks (attempts, attempts_gate,
    verdicts, verdicts_gate). Later steps read the gates' `clean`."""
    probe = {}
    if difficulty_probe:        # a probe only when data_drop_*_solved is on (a run-time choice)
        probe = {k: p[f"data.{k}"] for k in ("drop_always_solved", "drop_never_solved",
                                             "filter_samples", "filter_temperature")}
        probe["train_temperature"] = p["train.temperature"]
    attempts = sample_attempts(problems=problems, model=model, split="eval",
                               dtype=p["model.dtype"],
                               trust_remote_code=p["model.trust_remote_code"],
                               attn_implementation=p["model.attn_implementation"],
                               **p.templates(), **p.section("generate"), **probe)
    if after is not None:       # the model's training steps passed their gate
        attempts.after(after)
    attempts.set_display_name(f"sample-attempts-{label}").set_retry(**RETRY)
    put(attempts, "generate")
    attempts_gate = _gate(p, put, "attempts", attempts.outputs["attempts"], f"attempts-{label}",
                          problems)
    verdicts = verify_attempts(problems=problems, attempts=attempts_gate.outputs["clean"],
                               **p.section("verify"))
    verdicts.set_display_name(f"verify-attempts-{label}").set_retry(**RETRY)
    put(verdicts, "verify", store=False)
    gate = _gate(p, put, "verdicts", verdicts.outputs["verdicts"], f"verdicts-{label}", problems)
    return attempts, attempts_gate, verdicts, gate


def make_promotion_gate(put=None):
    """The promotion sub-DAG; `put` (a Placement) places its two steps, else none."""
    put = put or (lambda task, kind: task)

    @dsl.pipeline(name="selfcorrect-promotion-gate",
                  description="Promote the model to the registry when the promotion conditions "
                              "hold against the evaluation results")
    def promotion_gate(results: Dataset, model: Model, problems: Dataset, verdicts: Dataset,
                       eval_rows: Dataset, registry: str = "", output_dir: str = "runs",
                       min_gain_over_base: float = 0.0, min_gain_over_current: float = 0.0,
                       max_delta_c_to_i: float = 1.0):
        """decide_promotion -> dsl.If(promote) -> promote_model; reusable as a sub-DAG.

        Args:
            results: evaluate's results ({model: summary} JSON).
            model: The trained model folder, registered when promoted.
            problems: The evaluation's problems (recorded in the manifest).
            verdicts: The trained model's verdicts (recorded in the manifest).
            eval_rows: The gated per-episode evaluation: the decision is recomputed from it,
                and it is kept in the registry beside the promoted model.
            registry: The model registry, a folder or gs:// prefix; "": <output_dir>/registry.
            output_dir: The run's results folder or gs:// prefix.
            min_gain_over_base: Required Accuracy@t2 gain of the trained model over the base.
            min_gain_over_current: Required Accuracy@t2 gain over the promoted model, if any.
            max_delta_c_to_i: Largest Delta_c->i of the trained model; 1 disables it.
        """
        where = {"registry": registry, "output_dir": output_dir}
        gate = decide_promotion(results=results, eval_rows=eval_rows,
                                min_gain_over_base=min_gain_over_base,
                                min_gain_over_current=min_gain_over_current,
                                max_delta_c_to_i=max_delta_c_to_i, **where)
        put(gate, "cpu")
        gate.set_display_name("promotion-gate").set_caching_options(False)  # reads the registry
        with dsl.If(gate.outputs["Output"] == True, name="promote-if-better"):  # noqa: E712
            promote = promote_model(model=model, results=results, problems=problems,
                                    verdicts=verdicts, eval_rows=eval_rows,
                                    decision=gate.outputs["decision"],
                                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **where)
            put(promote, "cpu")
            promote.set_display_name("promote-model").set_caching_options(False)

    return promotion_gate


promotion_gate = make_promotion_gate()


def _dag(p: Params, put: Placement, promotion):
    """The tasks; p holds the pipeline's parameters by dotted config key, `promotion` is
    the promotion sub-DAG placed by `put` (built outside this pipeline's context)."""
    launch = {f"resources.{k}": getattr(put.requests.resources, k)   # compile-time constants
              for k in TRAIN_RESOURCE_KEYS}
    data_spec = p.section("data")
    # Never cached: a scheduled retraining run with the same data_path must see new bytes.
    key = data_fingerprint(data=data_spec).set_caching_options(False)
    put(key, "cpu").set_display_name("data-fingerprint")
    # Cached on (data_*, fingerprint, image): the same data give the same problems artifact,
    # so the steps after it (training included) can hit the cache as well.
    problems = put(prepare_problems(data=data_spec, fingerprint=key.output), "cpu")
    problems_gate = _gate(p, put, "problems", problems.outputs["problems"], "problems")
    data = problems_gate.outputs["clean"]

    # Never cached either: a model replaced at the same model.path (a new upload, a new
    # commit on the Hub branch) gives a new key, so prepare_model loads it again
    model_key = model_fingerprint(model=p.section("model")).set_caching_options(False)
    put(model_key, "cpu").set_display_name("model-fingerprint")
    base = prepare_model(**p.section("model"), fingerprint=model_key.output)
    put(base, "generate")
    # the base model's attempts also probe the train split when data_drop_always_solved or
    # data_drop_never_solved is on
    _, base_attempts_ok, _, base_verdicts_ok = _verified(
        p, put, data, base.outputs["model"], "base", difficulty_probe=True)

    # a copy of the problems when both flags are off
    train_data = filter_problems(problems=data, verdicts=base_verdicts_ok.outputs["clean"],
                                 drop_always_solved=p["data.drop_always_solved"],
                                 drop_never_solved=p["data.drop_never_solved"])
    put(train_data, "cpu", store=False).set_display_name("filter-problems")
    train_gate = _gate(p, put, "problems", train_data.outputs["filtered"], "filtered-problems")
    train_problems = train_gate.outputs["clean"]
    train_config = {"config": p.config(*TRAIN_KEYS, constants=launch), **p.templates()}
    stage1 = train_stage1(problems=train_problems, base_model=base.outputs["model"],
                          **train_config)
    # Stage I's steps (rewards, KL of attempt 1 to the base: gates_max_stage1_kl_t1)
    stage1_gate = _gate(p, put, "train_steps", stage1.outputs["steps"], "stage1-steps")
    stage2 = train_stage2(problems=train_problems, init_model=stage1.outputs["model"],
                          base_model=base.outputs["model"], **train_config
                          ).after(stage1_gate)
    stage2_gate = _gate(p, put, "train_steps", stage2.outputs["steps"], "stage2-steps")
    for task in (stage1, stage2):
        put.training(task)
    _, stage1_attempts_ok, _, stage1_verdicts_ok = _verified(
        p, put, data, stage1.outputs["model"], "stage1", after=stage1_gate)
    _, trained_attempts_ok, _, trained_verdicts_ok = _verified(
        p, put, data, stage2.outputs["model"], "trained", after=stage2_gate)

    report = evaluate(problems=data,
                      base_attempts=base_attempts_ok.outputs["clean"],
                      base_verdicts=base_verdicts_ok.outputs["clean"],
                      trained_attempts=trained_attempts_ok.outputs["clean"],
                      trained_verdicts=trained_verdicts_ok.outputs["clean"],
                      stage1_steps=stage1_gate.outputs["clean"],
                      stage2_steps=stage2_gate.outputs["clean"],
                      stage1_attempts=stage1_attempts_ok.outputs["clean"],
                      stage1_verdicts=stage1_verdicts_ok.outputs["clean"],
                      **p.section("eval", "sampling_k", "sampling_temperature"))

    put(report, "cpu", store=False)
    rows_gate = _gate(p, put, "eval_rows", report.outputs["rows"], "eval-rows", data)

    # eval_sampling_k > 0: majority vote over k samples vs k/2 + correction, both models
    with dsl.If(p["eval.sampling_k"] > 0, name="sampling-study-if-asked"):
        study = sampling_study(problems=data, base_model=base.outputs["model"],
                               trained_model=stage2.outputs["model"],
                               config=p.config(*STUDY_KEYS), **p.templates())
        study.after(stage2_gate).set_display_name("sampling-study")
        put(study, "generate")

    promotion(results=report.outputs["results"], model=stage2.outputs["model"],
                   problems=data, verdicts=trained_verdicts_ok.outputs["clean"],
                   eval_rows=rows_gate.outputs["clean"], output_dir=p["output_dir"],
                   **p.section("promotion"))
    return report.outputs["results"]


def make_pipeline(config: RunConfig | None = None, kubernetes_platform: bool = True):
    """The DAG, its parameters defaulting to `config`'s values (default: RunConfig()).
    Resource requests are fixed when the pipeline is compiled, so they come from
    config.resources here; they are no run-time parameter.

    kubernetes_platform: add the Kubernetes platform spec (node selectors, tolerations,
    secrets as env, the scratch volume, /dev/shm; Kubeflow Pipelines). Vertex AI reads a
    single-document YAML: compile without (resources.vertex_drops names what it leaves out)."""
    requests = config or RunConfig()
    defaults = cfg_mod.flat(requests, *SECTIONS)
    keys = list(_keys())
    put = Placement(requests, kubernetes_platform)
    promotion = make_promotion_gate(put)

    def score_pipeline(*args) -> Dataset:
        return _dag(Params(zip([k for k, _, _ in keys], args)), put, promotion)

    score_pipeline.__signature__ = inspect.Signature(
        [inspect.Parameter(parameter_name(k), inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           default=defaults[k], annotation=t) for k, t, _ in keys],
        return_annotation=Dataset)
    score_pipeline.__doc__ = (
        "SCoRe self-correction training: data, gates, base attempts, Beam verification, "
        "Stage I and II with DeepSpeed, evaluation, promotion.\n\n"
        "Each parameter is the run-config key of the same name (train_learning_rate: "
        "train.learning_rate; selfcorrect.config).\n\nArgs:\n"
        + "".join(f"    {parameter_name(k)}: {doc}\n" for k, _, doc in keys)
        + "\nReturns:\n    Output: evaluate's results: {model: summary} JSON.\n")
    return dsl.pipeline(name=PIPELINE_NAME, display_name=f"{PIPELINE_NAME} {__version__}",
                        description=f"SCoRe self-correction training, selfcorrect version "
                                    f"{__version__}")(score_pipeline)


score_pipeline = make_pipeline()
