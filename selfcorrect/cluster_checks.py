"""Cross-field checks of a run configuration bound for a cluster, made on this machine.

What a training rank or the last step of a run would otherwise find in its pod, after data
preparation, base sampling and verification have spent their time: a step that cannot be
split over the training processes (the ranks' own functions run here, at their world size),
an output_dir the pods cannot reach, a bucket without credentials. `submit` and `schedule`
refuse on any error before anything is uploaded or any connection is made; `compile` prints
them all as warnings (a local compile with output_dir=runs stays valid).

    for finding in cluster_checks.findings(cfg, service_account=None, backend="kfp"):
        print(finding)          # "<key>: <value>: <why>; <fix>"
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfcorrect.config import ConfigError, RunConfig

# Every key naming a location steps read or write (where "" derives from output_dir).
LOCATIONS = ("output_dir", "promotion.registry", "data.path", "data.eval_path", "data.dev_path",
             "train.checkpoint_uri", "train.resume_from", "gates.report_uri", "model.path")
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class Finding:
    key: str
    value: object
    message: str            # why, then the fix
    error: bool = True      # False: a warning, even at submit

    def __str__(self) -> str:
        return f"{self.key}: {self.value!r}: {self.message}"


def _get(cfg: RunConfig, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _hub_id(cfg: RunConfig) -> bool:
    path = cfg.model.path
    return (cfg.model.source == "hf" and "://" not in path
            and not path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists())


def rank_checks(cfg: RunConfig) -> list[Finding]:
    """The checks each training process makes on its share of a step, at the run's world
    size (resources.training_processes), through the ranks' own function (loop.shares)."""
    from selfcorrect.train.loop import shares

    world = cfg.resources.training_processes
    try:
        shares(cfg.train, world)
    except ValueError as e:      # its messages start with the key: "train.x: ..."
        key, _, why = str(e).partition(": ")
        try:
            value = _get(cfg, key)
        except AttributeError:
            key, value, why = "train", None, str(e)
        return [Finding(key, value, f"{why} (resources.accelerator_count="
                        f"{cfg.resources.accelerator_count}, {world} training processes)")]
    return []


def location_checks(cfg: RunConfig) -> list[Finding]:
    """Locations the pods cannot see: output_dir is an error (promotion fails at the end of
    the run); the others warn (a path may be a mount the pods share, e.g. /gcs/...)."""
    out = []
    if "://" not in cfg.output_dir:
        out.append(Finding("output_dir", cfg.output_dir,
                           "names a folder on this machine; the pods cannot reach it and "
                           "promotion fails at the end of the run; set a prefix every pod can "
                           "reach, e.g. --set output_dir=gs://BUCKET/selfcorrect/runs "
                           "(or s3://BUCKET/...)"))
    from selfcorrect.config import machine_paths

    for key in machine_paths(cfg):
        if key != "output_dir":
            out.append(Finding(key, _get(cfg, key), "names a file on this machine; a cluster's "
                               "pods will not find it: use gs://, s3:// or (model.path) a hub "
                               "name", error=False))
    return out


def credential_checks(cfg: RunConfig, *, service_account: str | None = None,
                      backend: str = "kfp") -> list[Finding]:
    """Each bucket the steps read or write needs credentials the pods get: declared in
    resources.env / resources.secret_env, a service account, or resources.cluster_credentials."""
    res, out = cfg.resources, []
    declared = res.declared_env()
    for key in LOCATIONS:
        value = _get(cfg, key)
        if value.startswith("s3://") and not res.cluster_credentials \
                and not set(AWS_KEYS) <= declared:
            missing = ", ".join(k for k in AWS_KEYS if k not in declared)
            out.append(Finding(key, value, f"an s3:// location, but the pods get no {missing}; "
                               "declare them, e.g. --set 'resources.secret_env={AWS_ACCESS_KEY_ID: "
                               "\"mlpipeline-minio-artifact:accesskey\", AWS_SECRET_ACCESS_KEY: "
                               "\"mlpipeline-minio-artifact:secretkey\"}', or say the cluster "
                               "provides them (IRSA, a node role): --set "
                               "resources.cluster_credentials=true"))
        if value.startswith("gs://") and backend == "kfp" and not (
                res.cluster_credentials or service_account
                or "GOOGLE_APPLICATION_CREDENTIALS" in declared):
            out.append(Finding(key, value, "a gs:// location, but no identity for the pods is "
                               "declared; pass --service-account KSA (bound to a Google service "
                               "account by Workload Identity) or, when the namespace's service "
                               "account already is, --set resources.cluster_credentials=true"))
    if _hub_id(cfg) and "HF_TOKEN" not in declared:
        out.append(Finding("model.path", cfg.model.path, "a Hugging Face Hub id: the pods "
                           "download it (they need huggingface.co, and a gated model a token: "
                           "--set 'resources.secret_env={HF_TOKEN: \"hf-token:token\"}'); or "
                           "copy it to gs://BUCKET/models/NAME and set model.path to that",
                           error=False))
    return out


def custom_check(cfg: RunConfig) -> list[Finding]:
    """verify.custom is imported in the pods, not here: a reminder that the images need it."""
    if not cfg.verify.custom:
        return []
    return [Finding("verify.custom", cfg.verify.custom, "imported by the verification and "
                    "training steps in their pods: install the package that holds it in the "
                    "verifier and trainer images (containers/), else those steps stop at start",
                    error=False)]


def findings(cfg: RunConfig, *, service_account: str | None = None,
             backend: str = "kfp") -> list[Finding]:
    """Every cross-field finding for a cluster run of cfg (errors and warnings)."""
    return (rank_checks(cfg) + location_checks(cfg) + custom_check(cfg)
            + credential_checks(cfg, service_account=service_account, backend=backend))


def refuse(cfg: RunConfig, warn, **kwargs) -> None:
    """submit / schedule: raise ConfigError naming every error; hand warnings to `warn`."""
    found = findings(cfg, **kwargs)
    for f in found:
        if not f.error:
            warn(f"warning: {f}")
    errors = [str(f) for f in found if f.error]
    if errors:
        raise ConfigError("this configuration would fail on the cluster; nothing was "
                          "uploaded:\n  " + "\n  ".join(errors))


def report(cfg: RunConfig, warn, **kwargs) -> None:
    """compile: every finding as a warning."""
    for f in findings(cfg, **kwargs):
        warn(f"warning: {f}")
