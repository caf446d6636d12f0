"""The promotion gate: decide whether the trained model is good enough, then register it.

Registry layout (a local folder or a gs:// prefix):

    <registry>/models/<id>/            the model folder (save_pretrained) + manifest.json
    <registry>/current.json            the manifest of the promoted model, written last

A manifest names the pipeline version, the resolved config, the data artifacts and the
metrics, so a promoted model can be traced to what made it. `current.json` is what the next
run's gate compares against. A registered model is what `from_pretrained` loads (weights,
tokenizer, config), a model card (README.md: base model, data, settings, metrics with their
intervals, how to load it) and the manifest, and for a LoRA run (train.lora_rank > 0) its
adapter in adapter/ beside the merged weights; training state (DeepSpeed optimizer files,
checkpoints, TensorBoard logs) is never copied.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from selfcorrect import __version__, storage

CURRENT = "current.json"
MANIFEST = "manifest.json"
CARD = "README.md"
# Training state that never reaches the registry (path patterns relative to the model folder)
TRAINING_STATE = ("logs/*", "checkpoints/*", "global_step*", "*optim_states*", "latest",
                  "zero_to_fp32.py", "rng_rank*.pt", "*/rng_rank*.pt")


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)   # one line per condition, pass or fail

    def to_markdown(self) -> str:
        head = "# Promotion: **promoted**" if self.promote else "# Promotion: **not promoted**"
        return "\n".join([head, "", *[f"- {r}" for r in self.reasons], ""])


def registry_uri(registry: str, output_dir: str) -> str:
    """promotion.registry, or <output_dir>/registry when it is "".

    Inside a Kubernetes pod (a cluster's pipeline step) a local folder would vanish with the
    pod, so every run would find nothing promoted: that is an error naming the keys to set.
    Vertex AI's /gcs/ mount is a bucket, not the pod's disk, and is accepted.
    """
    uri = registry or storage.join(output_dir, "registry")
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


def training_state(name: str) -> bool:
    """True for a file (path relative to the model folder) that is training state."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in TRAINING_STATE)


def _pct(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"


def model_card(entry: dict, base: dict | None = None) -> str:
    """The promoted model's README.md (a Hugging Face model card) from its manifest."""
    from selfcorrect.evaluate import LABELS, METRICS

    config, metrics = entry.get("config") or {}, entry.get("metrics") or {}
    model, data, train = (config.get(k, {}) for k in ("model", "data", "train"))
    base_model = model.get("path") or model.get("name") or model.get("source", "")
    rows = []
    for key in METRICS:
        lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        interval = f"[{_pct(lo)}, {_pct(hi)}]" if lo is not None and hi is not None else "-"
        rows.append(f"| {LABELS.get(key, key)} | {_pct((base or {}).get(key))} | "
                    f"{_pct(metrics.get(key))} | {interval} |")
    source = data.get("path") or data.get("source", "")
    where = entry.get("uri", "<this folder>")        # gs:// or s3://: copy it down first
    at = f" at revision `{model['revision']}`" if model.get("revision") else ""
    remote_code = ", trust_remote_code=True" if model.get("trust_remote_code") else ""
    check = (config.get("verify") or {}).get("custom", "")
    judged = f" Rewards and metrics from the check `{check}` (verify.custom)." if check else ""
    return "\n".join([
        "---", "library_name: transformers",
        f"base_model: {base_model}" if re.fullmatch(r"[\w.-]+/[\w.-]+", base_model)
        else f"# base model: {base_model} (not a Hub id)",
        "pipeline_tag: text-generation", "tags: [selfcorrect, score, self-correction]", "---", "",
        f"# {entry.get('model', 'model')}", "",
        f"Trained to correct its own answers with SCoRe (Kumar et al., arXiv:2409.12917: Stage I "
        f"then Stage II multi-turn RL) by selfcorrect {entry.get('pipeline_version', '')}, from "
        f"`{base_model}`{at} on `{source}` ({data.get('source', '')} format).{judged} Registry id "
        f"`{entry.get('id', '')}`; created {entry.get('created', '')}; run `{config.get('name', '')}` "
        f"(pipeline run `{entry.get('run_id', '') or '-'}`).", "",
        "## How to load", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{where}"{remote_code})',
        f'tokenizer = AutoTokenizer.from_pretrained("{where}"{remote_code})', "```", "",
        "Ask, then append the self-correction instruction (resolved_config.json `prompts`; empty: "
        "selfcorrect.prompts' defaults) after the first answer and generate again.", "",
        *([f"Trained as a LoRA adapter (rank {train['lora_rank']}, alpha {train.get('lora_alpha')}); "
           "these are the merged weights. The adapter itself is in `adapter/` "
           "(`peft.PeftModel.from_pretrained(base_model, \"<this folder>/adapter\")`).", ""]
          if train.get("lora_rank") else []),
        f"## Evaluation (eval split, {metrics.get('n', '?')} problems; % of problems, 95% "
        "bootstrap interval over problems)", "",
        "| metric | base | this model | interval |", "|---|---|---|---|", *rows, "",
        "## Training settings", "",
        "| setting | value |", "|---|---|",
        *[f"| train.{k} | {train[k]} |" for k in ("stage1_steps", "stage2_steps",
          "problems_per_step", "samples_per_problem", "learning_rate", "alpha", "beta1", "beta2",
          "temperature", "max_new_tokens", "zero_stage", "seed") if k in train],
        "", f"The whole configuration, data artifacts and decision: `{MANIFEST}`.", ""])


def promote(model_dir: str, registry: str, entry: dict, extra: dict[str, str] | None = None,
            base: dict | None = None) -> str:
    """Copy the model to <registry>/models/<id>/ with its manifest and model card (never its
    training state), then point current.json at it.

    extra: {file name in the entry: source path or URI}, copied beside the model (the
    evaluation's eval_rows.jsonl). base: the base model's metrics, for the card's table.
    Returns the model's URI in the registry.
    """
    target = storage.join(registry, "models", entry["id"])
    storage.upload_tree(model_dir, target, skip=training_state)
    storage.write_text(storage.join(target, CARD), model_card({**entry, "uri": target}, base))
    for name, source in (extra or {}).items():
        storage.write_bytes(storage.join(target, name), storage.read_bytes(source))
    entry = {**entry, "uri": target}
    text = json.dumps(entry, indent=2)
    storage.write_text(storage.join(target, MANIFEST), text)
    storage.write_text(storage.join(registry, CURRENT), text)   # last: readers see a whole entry
    return target


def gated_table(results_uri: str, eval_rows_uri: str | None = None) -> tuple[dict, int | None]:
    """evaluate's {model: summary} table, and the trained model's episode count. With the gated
    eval rows, "trained" and "base" rest on metrics recomputed from those rows, and a results
    file that disagrees with them (a metric off by more than 1e-9) is a ValueError naming the
    model and the metric."""
    from selfcorrect.evaluate import METRICS, self_correction_metrics
    from selfcorrect.records import EvalRow, read

    table = json.loads(storage.read_text(results_uri))
    if eval_rows_uri is None:
        return table, None
    pairs: dict[str, list] = {}
    for r in read(eval_rows_uri, EvalRow):
        pairs.setdefault(r.model, []).append((r.correct_t1, r.correct_t2))
    for name in ("trained", "base"):
        if name not in pairs:
            raise ValueError(f"{eval_rows_uri}: no eval rows for the {name!r} model")
        recomputed = self_correction_metrics(pairs[name])
        for key in METRICS:
            if abs(recomputed[key] - table[name][key]) > 1e-9:
                raise ValueError(f"{results_uri}: {name} {key} = {table[name][key]!r}, but "
                                 f"its gated eval rows give {recomputed[key]!r}")
        table[name] = {**table[name], **recomputed}
    return table, len(pairs["trained"])


def register(model_dir: str, registry: str, *, table: dict, reasons: list[str], name: str,
             data: dict[str, str], run_id: str = "", eval_rows_path: str | None = None) -> dict:
    """promote() the model folder with its manifest: the config it was trained with (its
    resolved_config.json, {} when absent), the "trained" metrics, the data URIs, the decision's
    reasons and the run; the eval rows, when given, beside it. Returns the manifest with its uri."""
    resolved = storage.join(model_dir, "resolved_config.json")
    recorded = json.loads(storage.read_text(resolved)) if storage.exists(resolved) else {}
    entry = manifest(recorded, table["trained"], data, name, Decision(True, list(reasons)))
    entry["run_id"] = run_id
    uri = promote(model_dir, registry, entry,
                  {"eval_rows.jsonl": eval_rows_path} if eval_rows_path else None,
                  base=table.get("base"))
    return {**entry, "uri": uri}
