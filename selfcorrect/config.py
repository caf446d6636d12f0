"""One run configuration: dataclasses with defaults, YAML presets, file and --set overrides.

Resolution order: defaults <- preset <- config file <- `--set key=value`. Every key is
checked before any work starts; a wrong key or value raises ConfigError naming the key
and what it accepts. Each dataclass documents its keys in a Google-style `Attributes:`
section: those lines are also the descriptions of the pipeline's parameters
(selfcorrect.pipelines.score), one per key.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def choice(default, *choices):
    return field(default=default, metadata={"choices": choices})


@dataclass
class ModelConfig:
    """The base model.

    Attributes:
        source: Where the base model comes from: tiny (a random-init GPT-2, built offline),
            gguf (a .gguf file) or hf (a save_pretrained folder or a hub name).
        path: gguf: the .gguf file; hf: a save_pretrained folder as a URI (gs://, s3://, any
            fsspec URL, a local folder) or a hub name.
        name: Label written into attempts and model names; defaults to the source.
        tiny_layers: tiny: transformer layers.
        tiny_hidden: tiny: hidden size (a multiple of tiny_heads).
        tiny_heads: tiny: attention heads.
        seed: tiny: initialisation seed.
        dtype: Weights' dtype: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16.
        revision: hf with a Hub id: the branch, tag or commit to load; "": the default
            branch (the model step's cache key follows the commit it is at).
        trust_remote_code: hf: run the model's own Python code from its folder or Hub repo
            (needed by some architectures); only for code you trust.
        attn_implementation: hf: attention kernels: auto (what transformers picks), eager,
            sdpa or flash_attention_2 (needs the flash-attn package and a GPU).
    """
    source: str = choice("tiny", "tiny", "gguf", "hf")
    path: str = ""
    name: str = ""
    tiny_layers: int = 2
    tiny_hidden: int = 64
    tiny_heads: int = 2
    seed: int = 0
    dtype: str = choice("auto", "auto", "float32", "bfloat16", "float16")
    revision: str = ""
    trust_remote_code: bool = False
    attn_implementation: str = choice("auto", "auto", "eager", "sdpa", "flash_attention_2")

    def __post_init__(self):
        if self.revision and self.source != "hf":
            raise ConfigError(f"model.revision: only read with model.source hf (a Hub id), "
                              f"not '{self.source}'; remove it")
        if self.source in ("gguf", "hf") and not self.path:
            raise ConfigError(f"model.path: required when model.source is '{self.source}' "
                              "(a .gguf file, or a save_pretrained folder: gs://..., s3://..., "
                              "a local folder or a hub name such as Qwen/Qwen2.5-0.5B-Instruct)")
        if self.tiny_hidden % self.tiny_heads:
            raise ConfigError("model.tiny_hidden: must be a multiple of model.tiny_heads")


@dataclass
class DataConfig:
    """Where problems come from (selfcorrect.data.prepare); file sources read `path`.

    Attributes:
        source: Problem source: arithmetic, algebra, reasoning_gym, humaneval, chain
            (generated or bundled, offline) or the format of your data (math, gsm8k, mbpp,
            generic).
        path: Your data: a .jsonl, .json or .parquet file, a Hugging Face dataset (hf:<name>
            on the Hub, a save_to_disk folder, a folder of data files, an .arrow file), local,
            gs:// or s3://.
        eval_path: Eval problems from their own file or dataset (same format); "": a dataset's
            data.eval_split, else ids hashed by data.eval_fraction.
        dev_path: Dev problems (for choices: presets, budgets) from their own file or dataset;
            "": a dataset's data.dev_split, else data.dev_fraction of the ids.
        train_split: Hugging Face dataset: the split trained on.
        eval_split: Hugging Face dataset: the split evaluated on (the official test split).
        dev_split: Hugging Face dataset: the dev split; "": none.
        dataset_config: Hugging Face dataset: its configuration name (gsm8k: main).
        columns: Your columns under other names: field=column pairs, e.g.
            "question=problem,answer=solution"; "": the format's own names.
        n_train: At most this many train problems (file order); 0: all. Generated sources:
            exactly this many (0: 16).
        n_eval: At most this many eval problems; 0: all (generated: 16).
        n_dev: At most this many dev problems; 0: all (generated: none).
        eval_fraction: Share of problem ids that hash to the eval split.
        dev_fraction: Share of problem ids that hash to the dev split (0: no dev split).
        max_prompt_chars: A longer prompt is an error naming file, row and field.
        operations: arithmetic: any of + - *.
        digits: arithmetic and algebra: operand size.
        gym_dataset: reasoning_gym: which generator (offline).
        chain_steps: chain (the testbed task): +/- steps per problem.
        chain_hard_share: chain: share of problems with one carry/borrow step.
        seed: Seed of the generated sources and of the split.
        drop_always_solved: Difficulty filter: drop train problems the base model always
            solves on its first attempt.
        drop_never_solved: Difficulty filter: drop train problems it never solves.
        filter_samples: The filter's probe: first attempts per train problem.
        filter_temperature: The probe's sampling temperature; 0: train.temperature, so
            "always/never solved" means under the training policy's sampling.
    """
    source: str = choice("arithmetic", "arithmetic", "algebra", "reasoning_gym", "humaneval",
                         "math", "gsm8k", "mbpp", "generic", "chain")
    path: str = ""
    eval_path: str = ""
    dev_path: str = ""
    train_split: str = "train"
    eval_split: str = "test"
    dev_split: str = ""
    dataset_config: str = ""
    columns: str = ""
    n_train: int = 0
    n_eval: int = 0
    n_dev: int = 0
    eval_fraction: float = 0.5
    dev_fraction: float = 0.0
    max_prompt_chars: int = 8000
    operations: str = "+-"
    digits: int = 2
    gym_dataset: str = choice("gsm_symbolic", "gsm_symbolic", "basic_arithmetic", "chain_sum",
                              "simple_equations", "products", "fraction_simplification",
                              "leg_counting")
    chain_steps: int = 3
    chain_hard_share: float = 0.5
    seed: int = 0
    drop_always_solved: bool = False
    drop_never_solved: bool = False
    filter_samples: int = 4
    filter_temperature: float = 0.0

    @property
    def filters(self) -> bool:
        """Whether the difficulty filter drops anything (and so needs the train-split probe)."""
        return self.drop_always_solved or self.drop_never_solved

    def __post_init__(self):
        if not self.operations or set(self.operations) - set("+-*"):
            raise ConfigError("data.operations: use one or more of '+', '-', '*' (e.g. '+-')")
        _positive(self, "digits", "max_prompt_chars", "filter_samples", "chain_steps",
                  prefix="data")
        for name in ("n_train", "n_eval", "n_dev"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name}: must be >= 0 (0: all rows of a file or "
                                  f"dataset), got {getattr(self, name)}")
        if not 0 <= self.dev_fraction < 1 or self.eval_fraction + self.dev_fraction >= 1:
            raise ConfigError(f"data.dev_fraction: {self.dev_fraction} must be >= 0 and leave "
                              f"train ids beside data.eval_fraction ({self.eval_fraction}), "
                              "e.g. 0.1")
        if not 0.0 <= self.chain_hard_share <= 1.0:
            raise ConfigError(f"data.chain_hard_share: must be within [0, 1], got {self.chain_hard_share}")
        if self.filter_temperature < 0:
            raise ConfigError("data.filter_temperature: must be >= 0 (0 samples at "
                              "train.temperature; greedy decoding is not offered: k greedy "
                              "samples of one problem all agree)")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction: must be between 0 and 1 (exclusive), got "
                              f"{self.eval_fraction}; 0.5 puts half the ids in eval")
        if self.source in FILE_SOURCES and not self.path:
            raise ConfigError(f"data.path: required when data.source is '{self.source}' "
                              "(a .jsonl, .json or .parquet file or a Hugging Face dataset, "
                              "local, gs:// or s3://)")
        parse_columns(self.columns)
        for key in ("path", "eval_path", "dev_path"):
            value = getattr(self, key)
            if value and self.source not in FILE_SOURCES:
                raise ConfigError(f"data.{key}: only read by the file sources "
                                  f"({', '.join(FILE_SOURCES)}); remove it or set data.source to "
                                  "one of them")
            suffix = Path(value.rstrip("/")).suffix.lower()
            if value and not value.startswith("hf:") and suffix in UNREAD_SUFFIXES:
                raise ConfigError(f"data.{key}: {value!r} must be a .jsonl, .json, .parquet or "
                                  ".arrow file, a dataset folder or hf:<name> (convert "
                                  f"{suffix} files first)")


FILE_SOURCES = ("math", "gsm8k", "mbpp", "generic")


REPORTERS = ("tensorboard", "mlflow", "wandb", "none")


def report_targets(report_to: str) -> list[str]:
    """The reporters train.report_to names ("tensorboard,mlflow"), checked; none: [].

    >>> report_targets("tensorboard, mlflow"), report_targets("none")
    (['tensorboard', 'mlflow'], [])
    """
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if not names or any(n not in REPORTERS for n in names):
        raise ConfigError(f"train.report_to: {report_to!r}; use one or more of "
                          f"{', '.join(REPORTERS[:-1])} separated by commas, or none")
    return [n for n in names if n != "none"]


def parse_columns(spec: str) -> dict[str, str]:
    """`data.columns`: "field=column,..." (the format's field read from the data's column).

    >>> parse_columns("question=problem, answer=solution")
    {'question': 'problem', 'answer': 'solution'}
    """
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, column = (s.strip() for s in item.partition("="))
        if not sep or not name or not column:
            raise ConfigError(f"data.columns: {item!r}; use field=column pairs separated by "
                              "commas, e.g. 'question=problem,answer=solution'")
        out[name] = column
    return out


UNREAD_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".zip", ".bz2", ".xz", ".xlsx", ".yaml", ".yml")


@dataclass
class GenerateConfig:
    """How sample_attempts decodes for evaluation (greedy by default, as in the paper).

    Attributes:
        max_new_tokens: Tokens generated per attempt at most.
        temperature: Sampling temperature of the evaluation attempts; 0 is greedy.
        batch_size: Problems generated for at once.
        seed: Seed of sampled attempts (temperature > 0): the same model, problems and
            settings give the same attempts.
    """
    max_new_tokens: int = 64
    temperature: float = 0.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        _positive(self, "max_new_tokens", "batch_size", prefix="generate")
        if self.temperature < 0:
            raise ConfigError("generate.temperature: must be >= 0 (0 is greedy)")


@dataclass
class TrainConfig:
    """SCoRe training (both stages; selfcorrect.train).

    Attributes:
        stage1_steps: Stage I RL steps.
        stage2_steps: Stage II RL steps.
        skip_stage1: Ablation: Stage II straight from the base model.
        problems_per_step: Problems per optimiser step, over all processes (split among them).
        samples_per_problem: Episodes per problem (k, for the RLOO baseline).
        temperature: Sampling temperature of the training policy (the paper's 1.0);
            log-probs use the same tempered distribution. Also the difficulty probe's and
            the sampling study's when theirs is 0.
        max_new_tokens: Tokens generated per attempt at most.
        learning_rate: Optimiser learning rate.
        alpha: Stage II shaping bonus; 0 disables it (ablation).
        beta1: KL weight on both attempts (Stage II), on attempt 2 (Stage I).
        beta2: Stage I KL weight on attempt 1 (0.25 for code in the paper).
        baseline: Advantage baseline: rloo, mean or none.
        kl_estimator: k2 (grad of KL(pi||ref), the paper's) or k3 (reverse KL).
        stage1_kl: Stage I's KL on attempt 1: token (kl_estimator per token, summed) or
            sequence (kl_estimator of the whole attempt's log-ratio: its k2 gradient is
            that of the sequence KL to the base exactly).
        zero_stage: DeepSpeed ZeRO stage: 0, 1, 2 or 3.
        gradient_accumulation_steps: Micro-batches per optimiser step.
        gradient_clipping: Gradient norm clip.
        optimizer: adamw or adam.
        seed: Training seed (sampling and shuffling).
        single_turn: Ablation: RL on attempt 1 with r1 only (both stages).
        checkpoint_every: Resumable DeepSpeed checkpoint every N steps; 0: none.
        checkpoint_uri: Where checkpoints go (gs://, s3://, a folder); "": <output_dir>/
            checkpoints. Each run gets <name>-<fingerprint of its settings and data>/stage<N>
            there, so a resubmitted run of the same name and settings resumes; never inside
            the model, never promoted.
        resume_from: A checkpoint folder to continue from when this run's own holds none
            (a run folder with stage1/, stage2/ or one stage's folder); "": none.
        sampling_shard: Problems per seeded sampling shard; 0: each process's share. Set to
            a W-process run's share to replay its samples on fewer processes.
        keep_checkpoints: Newest periodic checkpoints kept per stage.
        offline_first_attempts: Stage II (paper 5.3): of the k samples of a problem, how
            many take attempt 1 from the base model (no loss on it).
        gradient_checkpointing: Recompute each layer's activations in the backward pass:
            less memory for long rows, about a third more compute.
        rollout_backend: hf (Hugging Face generate, continuing attempt 2 from attempt 1's KV
            cache) or vllm (EXPERIMENTAL, unverified on GPU: one colocated vLLM engine per
            rank, external launcher, slept during the update and synced from the policy one
            parameter at a time after it; needs the trainer-vllm image; docs/vllm.md).
        gather_for_generation: ZeRO-3, rollout_backend hf: gather the partitioned weights
            once per generation phase and generate from the whole model without per-token
            gathers or synced_gpus (always), or gather each layer per token as training's
            forward does (never); auto: gather when the whole weights generated from (the
            policy, plus the reference with offline_first_attempts) take at most half of the
            memory free on every rank's device (GPU free memory, host available memory on
            CPU). Tested on CPU with 2 ranks; unverified on GPU.
        vllm_gpu_memory_utilization: With rollout_backend vllm, the share of each GPU's
            memory vLLM may take (weights and KV cache).
        vllm_tis_cap: With rollout_backend vllm, truncated importance weighting: each token's
            policy-gradient term times min(pi_train / pi_vllm, cap), for the gap between the
            sampler's and the trainer's log-probs (e.g. 2); 0: off.
        report_to: Where per-step metrics go: tensorboard, mlflow, wandb (comma-separated,
            e.g. tensorboard,mlflow) or none; MLflow and W&B need selfcorrect[tracking] and
            write locally/offline unless MLFLOW_TRACKING_URI / WANDB_API_KEY say otherwise.
        reference_offload: ZeRO-3 only: keep the frozen reference's partitions in host
            memory (DeepSpeed offload_param), fetched layer by layer for its forward; frees
            its 1/W share of GPU memory for a slower reference pass (unverified on GPU).
        lora_rank: LoRA (PEFT) adapter rank; 0: off (every weight trains). On: only the
            adapter trains, the reference is the same model with the adapter off (no second
            copy of the weights), checkpoints hold the adapter and its optimizer state, and the
            saved model is the merged weights with the adapter in adapter/ (docs/training.md).
        lora_alpha: LoRA scaling numerator: the adapter's update is (alpha / rank) * B @ A.
        lora_dropout: Dropout on the adapter's input during the update's forward pass only
            (sampling and the reference never use it); 0: none.
        lora_target_modules: Layers that get an adapter: all-linear (every linear layer of
            the decoder, not the output head) or comma-separated module names, e.g.
            q_proj,v_proj (GPT-2: c_attn).
    """
    stage1_steps: int = 10
    stage2_steps: int = 10
    skip_stage1: bool = False
    problems_per_step: int = 4
    samples_per_problem: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 64
    learning_rate: float = 5e-6
    alpha: float = 10.0
    beta1: float = 0.01
    beta2: float = 0.1
    baseline: str = choice("rloo", "rloo", "mean", "none")
    kl_estimator: str = choice("k2", "k2", "k3")
    stage1_kl: str = choice("token", "token", "sequence")
    zero_stage: int = choice(0, 0, 1, 2, 3)
    gradient_accumulation_steps: int = 1
    gradient_clipping: float = 1.0
    optimizer: str = choice("adamw", "adamw", "adam")
    seed: int = 0
    single_turn: bool = False
    checkpoint_every: int = 0
    checkpoint_uri: str = ""
    resume_from: str = ""
    sampling_shard: int = 0
    keep_checkpoints: int = 2
    offline_first_attempts: int = 0
    gradient_checkpointing: bool = False
    rollout_backend: str = choice("hf", "hf", "vllm")
    gather_for_generation: str = choice("auto", "auto", "always", "never")
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tis_cap: float = 0.0
    report_to: str = "tensorboard"
    reference_offload: bool = False
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"

    def __post_init__(self):
        report_targets(self.report_to)
        self._check_lora()
        if self.reference_offload and self.zero_stage != 3:
            raise ConfigError(f"train.reference_offload: offloads ZeRO-3 partitions, but "
                              f"train.zero_stage is {self.zero_stage}; set train.zero_stage=3 "
                              "or train.reference_offload=false")
        if not 0 < self.vllm_gpu_memory_utilization < 1:
            raise ConfigError("train.vllm_gpu_memory_utilization: must be between 0 and 1 "
                              "(a share of each GPU's memory), e.g. 0.3")
        if self.vllm_tis_cap < 0 or (self.vllm_tis_cap and self.rollout_backend != "vllm"):
            raise ConfigError(f"train.vllm_tis_cap: {self.vllm_tis_cap!r} must be 0 (off) or a cap "
                              "> 0 (e.g. 2) with train.rollout_backend=vllm (the weights need "
                              "vLLM's sampler log-probs)")
        _positive(self, "problems_per_step", "max_new_tokens", "gradient_accumulation_steps",
                  "keep_checkpoints", prefix="train")
        if not 0 <= self.offline_first_attempts <= self.samples_per_problem:
            raise ConfigError("train.offline_first_attempts: must be between 0 and "
                              f"train.samples_per_problem ({self.samples_per_problem}); e.g. 1 "
                              "of 4 samples starts from a base-model first attempt")
        if self.sampling_shard < 0 or (self.sampling_shard and
                                       self.problems_per_step % self.sampling_shard):
            raise ConfigError(f"train.sampling_shard: {self.sampling_shard} must be 0 (each "
                              "process's share) or divide train.problems_per_step "
                              f"({self.problems_per_step})")
        if self.checkpoint_every < 0:
            raise ConfigError("train.checkpoint_every: must be >= 0 (0 turns periodic "
                              "checkpoints off; e.g. 50 saves every 50 steps)")
        if self.samples_per_problem < 1 or (self.baseline == "rloo" and self.samples_per_problem < 2):
            raise ConfigError("train.samples_per_problem: the RLOO baseline needs at least 2 "
                              "samples per problem; set it >= 2 or train.baseline to 'mean'/'none'")
        if self.temperature <= 0:
            raise ConfigError("train.temperature: must be > 0; RL samples on-policy")
        for name in ("stage1_steps", "stage2_steps", "alpha", "beta1", "beta2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0")
        if self.learning_rate <= 0:
            raise ConfigError("train.learning_rate: must be > 0")

    def _check_lora(self):
        if self.lora_rank < 0:
            raise ConfigError(f"train.lora_rank: {self.lora_rank} must be 0 (off) or the adapter "
                              "rank, e.g. 16")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"train.lora_dropout: {self.lora_dropout} must be in [0, 1), e.g. 0.05")
        if self.lora_alpha <= 0:
            raise ConfigError(f"train.lora_alpha: {self.lora_alpha} must be > 0, e.g. 32")
        if not [m for m in self.lora_target_modules.split(",") if m.strip()]:
            raise ConfigError("train.lora_target_modules: empty; use all-linear or module names "
                              "such as q_proj,v_proj")
        if self.lora_rank and self.reference_offload:
            raise ConfigError("train.reference_offload: with train.lora_rank > 0 the reference is "
                              "the policy with its adapter off, so there is no copy to offload; "
                              "set train.reference_offload=false")


@dataclass
class ResourcesConfig:
    """Where each step runs and what it may read; fixed when the pipeline is compiled (not
    a run-time parameter). Empty: nothing requested (CPU, one process, no credentials).
    Placement goes through kfp-kubernetes on Kubeflow; `submit --backend vertex` keeps the
    accelerator, CPU/memory and env and warns which other keys it drops. NOT VERIFIED ON A
    CLUSTER OR GPU: the compiled YAML is tested, no scheduler has placed it yet.

    Attributes:
        accelerator_type: The training steps' accelerator, the platform's name (Kubeflow:
            nvidia.com/gpu; Vertex AI: NVIDIA_TESLA_A100, NVIDIA_H100_80GB). The one-GPU
            model steps (prepare_model, sample_attempts, sampling_study) take one of it.
        accelerator_count: Accelerators of each training step; > 1 launches one DeepSpeed
            process per GPU (train.problems_per_step must then be a multiple of it).
        cpu_limit: Training steps: CPU limit (= request on Kubernetes), e.g. "64".
        memory_limit: Training steps: memory limit (= request), e.g. "900G"; also bounds
            the memory-backed /dev/shm.
        launcher: Multi-process launcher of the training steps: deepspeed or torchrun.
        processes: Training processes; 0: accelerator_count (one per GPU), or 1 without
            accelerators (> 1 on CPU: gloo, e.g. for tests).
        generate_cpu_limit: One-GPU model steps (generation, prepare_model, sampling
            study): CPU limit, e.g. "8"; "": none.
        generate_memory_limit: One-GPU model steps: memory limit, e.g. "120G"; "": none.
        verify_cpu_request: Beam verification (DirectRunner): CPU request, e.g. "8".
        verify_memory_request: Beam verification: memory request, e.g. "16G".
        cpu_request: Every other CPU step (data, gates, evaluation, promotion): CPU
            request, e.g. "1".
        memory_request: Every other CPU step: memory request, e.g. "4G".
        node_selector: Accelerator steps' node labels, e.g. {cloud.google.com/gke-
            accelerator: nvidia-h100-80gb} (GKE Autopilot and node auto-provisioning
            need it); Kubernetes only.
        tolerations: Accelerator steps' taints tolerated, each "key=value:Effect",
            "key:Effect" (any value) or "key" (any value and effect), e.g.
            ["nvidia.com/gpu=present:NoSchedule"]; Kubernetes only.
        cpu_node_selector: CPU steps' node labels (as node_selector); Kubernetes only.
        cpu_tolerations: CPU steps' taints tolerated (as tolerations); Kubernetes only.
        scratch_size: Accelerator steps: a generic ephemeral volume of this size (e.g.
            "200Gi") at /scratch holding the Hub and model caches and temporary files
            (HF_HOME, SELFCORRECT_CACHE, TMPDIR); "": the node's container disk. KFP has no
            ephemeral-storage request; Kubernetes only.
        scratch_storage_class: The scratch volume's StorageClass; "": the cluster's default.
        env: Environment variables of every step that reads models or the artifact store,
            e.g. {AWS_ENDPOINT_URL: "http://minio-service.kubeflow:9000"}. Never secrets:
            they are written into the compiled YAML.
        secret_env: Kubernetes secrets as environment variables of those steps,
            {ENV_NAME: "secret-name:key"}, e.g. {HF_TOKEN: "hf-token:token",
            AWS_SECRET_ACCESS_KEY: "mlpipeline-minio-artifact:secretkey"}; Kubernetes only.
        cluster_credentials: The cluster gives pods their storage credentials (GKE Workload
            Identity, EKS IRSA or Pod Identity, a node role): gs:// and s3:// locations need
            no declared credentials.
    """
    accelerator_type: str = ""
    accelerator_count: int = 0
    cpu_limit: str = ""
    memory_limit: str = ""
    launcher: str = choice("deepspeed", "deepspeed", "torchrun")
    processes: int = 0
    generate_cpu_limit: str = ""
    generate_memory_limit: str = ""
    verify_cpu_request: str = ""
    verify_memory_request: str = ""
    cpu_request: str = ""
    memory_request: str = ""
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    cpu_node_selector: dict = field(default_factory=dict)
    cpu_tolerations: list = field(default_factory=list)
    scratch_size: str = ""
    scratch_storage_class: str = ""
    env: dict = field(default_factory=dict)
    secret_env: dict = field(default_factory=dict)
    cluster_credentials: bool = False

    @property
    def training_processes(self) -> int:
        return self.processes or max(1, self.accelerator_count)

    def __post_init__(self):
        if self.accelerator_count < 0:
            raise ConfigError("resources.accelerator_count: must be >= 0 (0: CPU)")
        if self.processes < 0:
            raise ConfigError("resources.processes: must be >= 0 (0: one per accelerator)")
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise ConfigError("resources.accelerator_type and resources.accelerator_count go "
                              "together: set both (e.g. NVIDIA_TESLA_A100 and 1) or neither (CPU)")
        for name in ("tolerations", "cpu_tolerations"):
            for item in getattr(self, name):
                toleration(item, f"resources.{name}")
        for env_name, ref in self.secret_env.items():
            secret_ref(env_name, ref)
        for env_name in [*self.env, *self.secret_env]:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
                raise ConfigError(f"resources.env / resources.secret_env: {env_name!r} is no "
                                  "environment variable name (letters, digits, _)")
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ConfigError(f"resources.env and resources.secret_env both set {sorted(both)}: "
                              "keep each variable in one of them")

    def declared_env(self) -> set[str]:
        """The environment variables the steps that read the store get (plain or secret)."""
        return set(self.env) | set(self.secret_env)


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def toleration(text: str, key: str = "resources.tolerations") -> dict:
    """"key=value:Effect" -> kfp.kubernetes.add_toleration's arguments ("key:Effect" and
    "key": operator Exists; no effect: every effect)."""
    taint, _, effect = text.partition(":")
    name, eq, value = taint.partition("=")
    if not name.strip() or (effect and effect not in _EFFECTS) or (eq and not value):
        raise ConfigError(f"{key}: {text!r} is no toleration; use \"key=value:Effect\", "
                          f"\"key:Effect\" or \"key\" (Effect one of {', '.join(_EFFECTS)}), "
                          "e.g. \"nvidia.com/gpu=present:NoSchedule\"")
    out = {"key": name.strip(), "operator": "Equal" if eq else "Exists"}
    if eq:
        out["value"] = value
    if effect:
        out["effect"] = effect
    return out


def secret_ref(env_name: str, ref: str) -> tuple[str, str]:
    """"secret-name:key" -> (secret name, key in the secret)."""
    name, sep, key = str(ref).partition(":")
    if not (sep and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and key):
        raise ConfigError(f"resources.secret_env.{env_name}: {ref!r} is not \"secret-name:key\" "
                          "(a Kubernetes secret and one of its keys), e.g. \"hf-token:token\"")
    return name, key


@dataclass
class VerifyConfig:
    """The Beam verification step (selfcorrect.verify.beam).

    Attributes:
        runner: Beam runner (DirectRunner here; DaskRunner, DataflowRunner, FlinkRunner,
            ... with their options in beam_args).
        direct_num_workers: DirectRunner workers; 0: one per CPU the container may use
            (its cgroup CPU quota, not the node's cores).
        direct_running_mode: DirectRunner mode: multi_processing, multi_threading or
            in_memory.
        timeout_s: Seconds one answer check may take.
        code_concurrency: Code sandboxes run at once in each Beam worker.
        custom: Your own check instead of the built-in ones, as module:function (e.g.
            mypkg.checks:exact_match): called with (problem, completion), it returns True or
            False, a reward in [0, 1] (correct when 1), or either with a reason as a pair;
            used for training rewards and evaluation alike (docs/usage.md). The module must
            be importable where the steps run (installed in the images). "": built-in.
    """
    runner: str = "DirectRunner"
    direct_num_workers: int = 0
    direct_running_mode: str = choice("multi_processing", "multi_processing", "multi_threading",
                                      "in_memory")
    timeout_s: float = 10.0
    code_concurrency: int = 2
    custom: str = ""

    def __post_init__(self):
        _positive(self, "code_concurrency", prefix="verify")
        if self.custom and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.custom):
            raise ConfigError(f"verify.custom: {self.custom!r}; use module:function, e.g. "
                              "mypkg.checks:exact_match")
        if self.timeout_s <= 0:
            raise ConfigError("verify.timeout_s: must be > 0 seconds, e.g. 10")


@dataclass
class EvalConfig:
    """How evaluate summarises verdicts: bootstrap confidence intervals over (problem, sample).

    Attributes:
        bootstrap_samples: Bootstrap resamples per confidence interval.
        confidence: Confidence level of the intervals.
        seed: Bootstrap seed.
        sampling_k: > 0: the sampling study (majority over k samples vs k/2 + correction),
            k >= 2; 0: no study.
        sampling_temperature: The study's sampling temperature; 0: train.temperature.
    """
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    sampling_k: int = 0
    sampling_temperature: float = 0.0

    def __post_init__(self):
        _positive(self, "bootstrap_samples", prefix="eval")
        if not 0 < self.confidence < 1:
            raise ConfigError("eval.confidence: must be between 0 and 1, e.g. 0.95")
        if self.sampling_k == 1 or self.sampling_k < 0:
            raise ConfigError(f"eval.sampling_k: 0 (no sampling study) or k >= 2 samples per "
                              f"problem, got {self.sampling_k}")
        if self.sampling_temperature < 0:
            raise ConfigError("eval.sampling_temperature: must be >= 0 (0: train.temperature)")


@dataclass
class PromotionConfig:
    """When the trained model is promoted to the registry (all conditions must hold).

    Attributes:
        registry: Model registry, a folder or gs:// prefix; "": <output_dir>/registry.
        min_gain_over_base: Promote when Accuracy@t2(trained) - Accuracy@t2(base) >= this.
        min_gain_over_current: ... and Accuracy@t2(trained) minus the currently promoted
            model's, if any, >= this.
        max_delta_c_to_i: ... and Delta_c->i(trained) <= this (1 disables it).
    """
    registry: str = ""
    min_gain_over_base: float = 0.0
    min_gain_over_current: float = 0.0
    max_delta_c_to_i: float = 1.0

    def __post_init__(self):
        for name in ("min_gain_over_base", "min_gain_over_current"):
            if not -1 <= getattr(self, name) <= 1:
                raise ConfigError(f"promotion.{name}: must be in [-1, 1] (a difference of "
                                  "accuracies), e.g. 0.02")
        if not 0 <= self.max_delta_c_to_i <= 1:
            raise ConfigError("promotion.max_delta_c_to_i: must be in [0, 1]; 1 disables it")


@dataclass
class GateConfig:
    """Data gates between steps (selfcorrect.validate); defaults equal the suites' own.

    Attributes:
        max_empty_share: attempts: largest share of empty completions.
        max_truncated_share: attempts: largest share of truncated ones; 1: off.
        quarantine: Move rows failing row checks aside instead of failing the run.
        report_uri: Also copy a failing gate's reports here (folder or gs://).
        max_stage1_kl_t1: train_steps: Stage I's per-token KL of attempt 1 to the base.
    """
    max_empty_share: float = 0.1
    max_truncated_share: float = 1.0
    quarantine: bool = False
    report_uri: str = ""
    max_stage1_kl_t1: float = 1.0

    def __post_init__(self):
        for name in ("max_empty_share", "max_truncated_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"gates.{name}: must be between 0 and 1, got {getattr(self, name)!r}")
        if not self.max_stage1_kl_t1 > 0:
            raise ConfigError(f"gates.max_stage1_kl_t1: must be > 0 (nats per token), got "
                              f"{self.max_stage1_kl_t1!r}")

    def thresholds(self) -> dict[str, float]:
        """The shares and limits the suites take (selfcorrect.validate.suite_with)."""
        return {"max_empty_share": self.max_empty_share,
                "max_truncated_share": self.max_truncated_share,
                "max_stage1_kl_t1": self.max_stage1_kl_t1}


@dataclass
class PretrainConfig:
    """The testbed model (selfcorrect.experiments.testbed): a small GPT-2-shaped transformer with a
    character tokenizer, pretrained from scratch on two-turn chain-arithmetic traces written
    by a noisy student (selfcorrect.data.chain). Problems come from `data` (chain source),
    train split only; the eval and dev splits are never seen."""
    traces: int = 40000          # two-turn episodes generated for pretraining (train problems, resampled)
    problems: int = 4000         # distinct train-split problems the traces are written for
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 3.0e-3
    warmup_steps: int = 30
    layers: int = 3
    hidden: int = 64
    heads: int = 4
    checks: int = 60000          # one-step checking documents (`check 47+5=42` -> `47+5 is 52 so 42 wrong`)
    p_hard: float = 0.6          # student: a carry/borrow misconception on a hard step
    p_easy: float = 0.03         # student: off by one on any other step
    p_check: float = 0.1         # student's attempt 2: checks attempt 1's steps, fixes the first wrong one
    p_doubt: float = 0.7         # else second-guesses a step with operand >= 8 (writes it one short)
    p_copy: float = 0.2          # else copies attempt 1 (else a fresh attempt)
    seed: int = 0

    def __post_init__(self):
        _positive(self, "traces", "problems", "steps", "batch_size", "layers", "hidden", "heads",
                  prefix="pretrain")
        if self.checks < 0:
            raise ConfigError(f"pretrain.checks: a count >= 0, got {self.checks}")
        if self.hidden % self.heads:
            raise ConfigError("pretrain.hidden: must be a multiple of pretrain.heads")
        for name in ("p_hard", "p_easy", "p_copy", "p_check", "p_doubt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"pretrain.{name}: a probability within [0, 1], got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"pretrain.learning_rate: must be > 0, got {self.learning_rate}")


@dataclass
class PromptConfig:
    """Templates; empty means the task's default from prompts.py (the paper's App. C).

    Attributes:
        attempt1: Template of the first attempt's prompt ({prompt}); "": the task's default.
        correction: The self-correction instruction; "": the task's default.
    """
    attempt1: str = ""
    correction: str = ""


@dataclass
class RunConfig:
    """The run configuration: its sections and three top-level keys.

    Attributes:
        name: The run's name (recorded in the registry manifest).
        task: The task family (math).
        output_dir: Local folder or gs:// prefix for the run's results (registry, remote
            checkpoints).
    """
    name: str = "selfcorrect"
    task: str = choice("math", "math")
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _positive(obj, *names, prefix):
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{prefix}.{name}: must be >= 1, got {getattr(obj, name)}")


def _coerce(key: str, value: Any, typ: str):
    if isinstance(value, str) and typ in ("bool", "int", "float"):
        # A dict literal of pipeline-parameter channels reaches a step with its values as
        # text ("3.0", "True", "5e-06"): read them as YAML, as `--set` values are
        parsed = _yaml_scalar(value)
        if isinstance(parsed, (bool, int, float)):
            value = parsed
    if typ == "bool":
        if isinstance(value, bool):
            return value
    elif typ == "int":
        # KFP passes dict parameters through protobuf Struct, which turns ints into floats
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads `5e-4` (no dot) as a string; it is a float to any reader
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(?:\.\d*)?[eE][-+]?\d+", value.strip()):
            return float(value)
    elif typ in ("dict", "list"):
        if isinstance(value, str):          # `--set 'resources.env={A: b}'`, or text from KFP
            value = _yaml_scalar(value) if value.strip() else {"dict": {}, "list": []}[typ]
        if typ == "dict" and isinstance(value, dict):
            return {_text(key, k, "name"): _text(f"{key}.{k}", v, "value") for k, v in value.items()}
        if typ == "list" and isinstance(value, list):
            return [_text(f"{key}[{i}]", v, "item") for i, v in enumerate(value)]
        example = "{NAME: value}" if typ == "dict" else '["a", "b"]'
        raise ConfigError(f"{key}: expected a mapping, e.g. {example}, got "
                          f"{type(value).__name__} {value!r}" if typ == "dict" else
                          f"{key}: expected a list, e.g. {example}, got "
                          f"{type(value).__name__} {value!r}")
    elif typ == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)       # `--set resources.cpu_limit=8` parses as a number
    raise ConfigError(f"{key}: expected {typ}, got {type(value).__name__} {value!r}")


def _text(key: str, value, what: str) -> str:
    """A mapping's name or value, or a list's item, as text (YAML numbers become text;
    a YAML boolean must be quoted: `true` and "True" mean different things to a program)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: the {what} {value!r} must be text; quote it (e.g. \"true\")")


def _yaml_scalar(text: str):
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def build(cls, data: dict | None, prefix: str = ""):
    """Build a config dataclass from a (partial) dict, checking every key and value."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key{did_you_mean(str(key), known, prefix)}"
                              f"; accepted keys: {', '.join(known)}")
    kwargs = {}
    for name, f in known.items():
        key = prefix + name
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            kwargs[name] = build(f.default_factory, data.get(name), key + ".")
            continue
        if name not in data:
            continue
        value = _coerce(key, data[name], f.type)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not accepted"
                              f"{did_you_mean(str(value), [str(c) for c in choices])}; accepted values: "
                              f"{', '.join(map(str, choices))}")
        kwargs[name] = value
    return cls(**kwargs)


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """"; did you mean train.learning_rate?" for the closest choice, or "" when none is close.

    >>> did_you_mean("learning_rat", ["learning_rate", "seed"], "train.")
    '; did you mean train.learning_rate?'
    """
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("selfcorrect.presets").iterdir()
                  if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict:
    if name not in preset_names():
        raise ConfigError(f"preset: {name!r} is not a preset{did_you_mean(name, preset_names())}"
                          f"; presets: {', '.join(preset_names())}")
    return yaml.safe_load(resources.files("selfcorrect.presets").joinpath(f"{name}.yaml").read_text()) or {}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_set(item: str) -> dict:
    """`train.learning_rate=1e-5` -> {"train": {"learning_rate": 1e-05}} (values parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.stage1_steps=5")
    value = _yaml_scalar(raw) if raw.strip() else ""   # `*` or `a: b`: the text as it is
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load(preset: str | None = None, config_file: str | None = None,
         overrides: list[str] = (), *, local: bool = True) -> RunConfig:
    """The run config. local=True (a run on this machine): local paths made absolute, so
    pipeline steps running in other folders find them. local=False (compile, submit): every
    value as given, so nothing of this machine is baked into a pipeline."""
    data: dict = read_preset(preset) if preset else {}
    if config_file:
        try:
            from_file = yaml.safe_load(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"--config {config_file}: no such file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {config_file}: not valid YAML: {e}") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"--config {config_file}: expected a mapping of keys at the top")
        data = merge(data, from_file)
    for item in overrides:
        data = merge(data, parse_set(item))
    cfg = build(RunConfig, data)
    if not local:
        return cfg
    if cfg.verify.custom:   # a run here: the check must import before any work starts
        from selfcorrect.verify.custom import load_check

        load_check(cfg.verify.custom)
    return resolve_paths(cfg)


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """Make local paths absolute for a run on this machine (steps run in other folders).

    URLs (gs://, s3://, ...) stay as they are, and so does an hf model.path that names no
    local folder: a hub name (Qwen/Qwen2.5-0.5B-Instruct) is resolved by the step that loads it.
    """
    model = cfg.model
    if model.path and "://" not in model.path:
        path_like = model.path.startswith(("/", ".", "~")) or Path(model.path).expanduser().exists()
        if model.source != "hf" or path_like:
            model.path = _absolute(model.path)
    for section, key in ((cfg, "output_dir"), (cfg.promotion, "registry"), (cfg.data, "path"),
                         (cfg.data, "eval_path"), (cfg.data, "dev_path"),
                         (cfg.train, "checkpoint_uri"), (cfg.train, "resume_from")):
        value = getattr(section, key)
        if value and "://" not in value and not value.startswith("hf:"):
            setattr(section, key, _absolute(value))
    return cfg


def machine_paths(cfg: RunConfig) -> list[str]:
    """The keys whose values name this machine's files (absolute or relative local paths):
    a pipeline compiled or submitted with them points its pods at files they do not have."""
    found = [key for key, value in (("output_dir", cfg.output_dir),
                                    ("promotion.registry", cfg.promotion.registry),
                                    ("data.path", cfg.data.path),
                                    ("data.eval_path", cfg.data.eval_path),
                                    ("data.dev_path", cfg.data.dev_path),
                                    ("train.checkpoint_uri", cfg.train.checkpoint_uri),
                                    ("train.resume_from", cfg.train.resume_from))
             if value and "://" not in value and not value.startswith("hf:")]
    model = cfg.model
    if model.source == "gguf" or (model.source == "hf" and "://" not in model.path and (
            model.path.startswith(("/", ".", "~")) or Path(model.path).expanduser().exists())):
        found.append("model.path")
    return found


def from_dict(data: dict) -> RunConfig:
    """Rebuild a resolved config inside a pipeline step (from a KFP dict parameter): nested
    sections, dotted keys ({"train.learning_rate": "5e-06"}) or both; missing keys take
    their defaults."""
    nested: dict = {}
    for key, value in (data or {}).items():
        for part in reversed(key.split(".")[1:]):
            value = {part: value}
        nested = merge(nested, {key.split(".")[0]: value})
    return build(RunConfig, nested)


def with_prompts(cfg: RunConfig, attempt1: str = "", correction: str = "") -> RunConfig:
    """cfg with the templates given (the steps that take them as parameters); "" keeps cfg's."""
    return dataclasses.replace(cfg, prompts=PromptConfig(attempt1 or cfg.prompts.attempt1,
                                                         correction or cfg.prompts.correction))


def flat(cfg: RunConfig, *sections: str) -> dict:
    """{"train.learning_rate": 5e-06, ...}: the keys of the given sections ("train", or a
    top-level key such as "output_dir"); every key when none is given."""
    out = {}
    for name, value in cfg.to_dict().items():
        if sections and name not in sections:
            continue
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out
