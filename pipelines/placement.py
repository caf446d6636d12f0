"""Placement of each pipeline step from config.resources (KFP task settings, kfp-kubernetes).

    place(task, cfg, "train", kubernetes_platform=True, store=True)

Step kinds: "train" (resources.accelerator_count accelerators, cpu_limit, memory_limit),
"generate" (the one-device model steps: one accelerator, generate_cpu_limit /
generate_memory_limit), "verify" (Beam: verify_cpu_request / verify_memory_request) and "cpu"
(data, gates, evaluation, promotion: cpu_request / memory_request). Steps with an
accelerator get node_selector, tolerations, the scratch volume and a memory-backed /dev/shm;
the others cpu_node_selector and cpu_tolerations. Steps that read models or the artifact
store (store=True) get resources.env and resources.secret_env.

The PipelineSpec carries accelerators, CPU, memory and env (Kubeflow and Vertex AI); the rest
is the Kubernetes platform spec, which Vertex AI does not read: `vertex_drops` names what a
Vertex compile leaves out. Default (empty resources): nothing is requested. NOT VERIFIED ON A
CLUSTER OR GPU: the compiled YAML is tested, no scheduler has placed it yet.
"""
from __future__ import annotations

from selfcorrect.config import RunConfig, secret_ref, toleration

KINDS = ("train", "generate", "verify", "cpu")
SCRATCH = "/scratch"
# where the model steps' caches and temporary files go when resources.scratch_size is set
SCRATCH_ENV = {"HF_HOME": f"{SCRATCH}/hf", "SELFCORRECT_CACHE": f"{SCRATCH}/selfcorrect",
               "TMPDIR": SCRATCH}


def _accelerated(cfg: RunConfig, kind: str) -> bool:
    return kind in ("train", "generate") and cfg.resources.accelerator_count > 0


def apply_resources(task, cfg: RunConfig, kind: str = "train"):
    """Accelerator, CPU and memory of one step kind (PipelineSpec fields); returns the task."""
    res = cfg.resources
    if kind not in KINDS:
        raise ValueError(f"step kind {kind!r}; one of {', '.join(KINDS)}")
    if _accelerated(cfg, kind):
        task.set_accelerator_type(res.accelerator_type)
        task.set_accelerator_limit(res.accelerator_count if kind == "train" else 1)
    limits = {"train": (res.cpu_limit, res.memory_limit),
              "generate": (res.generate_cpu_limit, res.generate_memory_limit)}
    requests = {"verify": (res.verify_cpu_request, res.verify_memory_request),
                "cpu": (res.cpu_request, res.memory_request)}
    cpu, memory = limits.get(kind) or requests[kind]
    if kind in limits:
        cpu and task.set_cpu_limit(cpu)
        memory and task.set_memory_limit(memory)
    else:
        cpu and task.set_cpu_request(cpu)
        memory and task.set_memory_request(memory)
    return task


def place(task, cfg: RunConfig, kind: str, *, kubernetes_platform: bool, store: bool = False):
    """apply_resources, env for store readers and, on Kubernetes, node selectors,
    tolerations, secrets as env, the scratch volume and /dev/shm; returns the task."""
    from kfp import kubernetes

    res = cfg.resources
    apply_resources(task, cfg, kind)
    accelerated = _accelerated(cfg, kind)
    env = dict(res.env) if store else {}
    if accelerated and res.scratch_size:
        env = {**SCRATCH_ENV, **env}
    for name, value in sorted(env.items()):
        task.set_env_variable(name, value)
    if not kubernetes_platform:
        return task
    selector = res.node_selector if accelerated else res.cpu_node_selector
    for label, value in sorted(selector.items()):
        kubernetes.add_node_selector(task, label, value)
    for text in res.tolerations if accelerated else res.cpu_tolerations:
        kubernetes.add_toleration(task, **toleration(text))
    if store:
        by_secret: dict[str, dict[str, str]] = {}
        for env_name, ref in sorted(res.secret_env.items()):
            secret, key = secret_ref(env_name, ref)
            by_secret.setdefault(secret, {})[key] = env_name
        for secret, key_to_env in by_secret.items():
            kubernetes.use_secret_as_env(task, secret, key_to_env)
    if kind == "train" or accelerated:   # NCCL needs more than Kubernetes' 64 MiB
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                   medium="Memory")
    if accelerated and res.scratch_size:
        kubernetes.add_ephemeral_volume(task, volume_name="scratch", mount_path=SCRATCH,
                                        access_modes=["ReadWriteOnce"], size=res.scratch_size,
                                        storage_class_name=res.scratch_storage_class or None)
    return task


def vertex_drops(cfg: RunConfig) -> list[str]:
    """The resources.* keys set in cfg that a Vertex AI compile (no Kubernetes platform
    spec) leaves out, and the /dev/shm volume when training has accelerators."""
    res, dropped = cfg.resources, []
    for name in ("node_selector", "tolerations", "cpu_node_selector", "cpu_tolerations",
                 "scratch_size", "secret_env"):
        if getattr(res, name):
            dropped.append(f"resources.{name}")
    if res.accelerator_count:
        dropped.append("the training and generation steps' memory-backed /dev/shm")
    return dropped
