"""The promotion gate: decide whether the trained model is good enough, then register it.

Registry layout (a local folder or a gs:// prefix):

    <registry>/models/<id>/            the model folder (save_pretrained) + manifest.json
    <registry>/current.json            the manifest of the promoted model, written last

A manifest names the pipeline version, the resolved config, the data artifacts and the
metrics, so a promoted model can be traced to what made it. `current.json` is what the next
run's gate compares against.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from selfcorrect import __version__, storage

CURRENT = "current.json"
MANIFEST = "manifest.json"


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)   # one line per condition, pass or fail

    def to_markdown(self) -> str:
        head = "# Promotion: **promoted**" if self.promote else "# Promotion: **not promoted**"
        return "\n".join([head, "", *[f"- {r}" for r in self.reasons], ""])


def registry_uri(config: dict) -> str:
    """The configured registry, or <output_dir>/registry.

    Inside a Kubernetes pod (a cluster's pipeline step) a local folder would vanish with the
    pod, so every run would find nothing promoted: that is an error naming the keys to set.
    Vertex AI's /gcs/ mount is a bucket, not the pod's disk, and is accepted.
    """
    uri = config["promotion"]["registry"] or storage.join(config["output_dir"], "registry")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and "://" not in uri \
            and not uri.startswith("/gcs/"):
        raise ValueError(f"promotion.registry: {uri} is a folder inside this pod and vanishes "
                         "with it; set output_dir (or promotion.registry) to the run's artifact "
                         "store, e.g. gs://BUCKET/selfcorrect or s3://BUCKET/selfcorrect")
    return uri


def read_current(registry: str) -> dict | None:
    """The manifest of the currently promoted model, or None when nothing was promoted yet."""
    uri = storage.join(registry, CURRENT)
    if not storage.exists(uri):
        return None
    try:
        manifest = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri}: line {e.lineno}: not valid JSON ({e.msg})") from None
    acc = manifest.get("metrics", {}).get("accuracy_t2") if isinstance(manifest, dict) else None
    if not isinstance(acc, (int, float)):
        raise ValueError(f"{uri}: field 'metrics.accuracy_t2': missing or not a number")
    return manifest


def decide(trained: dict, base: dict, current: dict | None, promotion: dict) -> Decision:
    """Check each configured condition on the metric summaries (fractions, not %).

    >>> rule = {"min_gain_over_base": 0.1, "min_gain_over_current": 0.0, "max_delta_c_to_i": 0.05}
    >>> d = decide({"accuracy_t2": 0.5, "delta_c_to_i": 0.1}, {"accuracy_t2": 0.3}, None, rule)
    >>> d.promote, [r.split(":")[0] for r in d.reasons]
    (False, ['pass', 'pass', 'FAIL'])
    """
    acc = trained["accuracy_t2"]
    checks = []
    gain = acc - base["accuracy_t2"]
    checks.append((gain >= promotion["min_gain_over_base"] - 1e-12,
                   f"Accuracy@t2 {100 * acc:.1f}% vs base {100 * base['accuracy_t2']:.1f}%: "
                   f"gain {100 * gain:+.1f} points, required >= "
                   f"{100 * promotion['min_gain_over_base']:+.1f}"))
    if current is None:
        checks.append((True, "no model promoted yet in the registry"))
    else:
        cur = current["metrics"]["accuracy_t2"]
        checks.append((acc - cur >= promotion["min_gain_over_current"] - 1e-12,
                       f"Accuracy@t2 {100 * acc:.1f}% vs promoted {current.get('id', '?')} "
                       f"{100 * cur:.1f}%: gain {100 * (acc - cur):+.1f} points, required >= "
                       f"{100 * promotion['min_gain_over_current']:+.1f}"))
    c2i = trained["delta_c_to_i"]
    checks.append((c2i <= promotion["max_delta_c_to_i"] + 1e-12,
                   f"Delta_c->i {100 * c2i:.1f}%, allowed <= "
                   f"{100 * promotion['max_delta_c_to_i']:.1f}%"))
    return Decision(all(ok for ok, _ in checks),
                    [f"{'pass' if ok else 'FAIL'}: {why}" for ok, why in checks])


def manifest(config: dict, metrics: dict, data: dict[str, str], model_name: str,
             decision: Decision | None = None) -> dict:
    """What the registry records about a promoted model."""
    now = datetime.now(timezone.utc)
    return {"id": f"{model_name}-{__version__}-{now:%Y%m%dT%H%M%S%fZ}", "model": model_name,
            "pipeline_version": __version__, "created": now.isoformat(), "config": config,
            "data": data, "metrics": metrics,
            "decision": asdict(decision) if decision else None}


def promote(model_dir: str, registry: str, entry: dict, extra: dict[str, str] | None = None) -> str:
    """Copy the model to <registry>/models/<id>/ with its manifest, then point current.json at it.

    extra: {file name in the entry: source path or URI}, copied beside the model (the
    evaluation's eval_rows.jsonl). Returns the model's URI in the registry.
    """
    target = storage.join(registry, "models", entry["id"])
    storage.upload_tree(model_dir, target)
    for name, source in (extra or {}).items():
        storage.write_bytes(storage.join(target, name), storage.read_bytes(source))
    entry = {**entry, "uri": target}
    text = json.dumps(entry, indent=2)
    storage.write_text(storage.join(target, MANIFEST), text)
    storage.write_text(storage.join(registry, CURRENT), text)   # last: readers see a whole entry
    return target
