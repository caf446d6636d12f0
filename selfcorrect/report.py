"""The evaluation report: Markdown (paper Table 2 style) and a self-contained HTML page.

The HTML embeds its plots as base64 PNGs (matplotlib, Agg backend), so one file renders
in the KFP UI (an HTML artifact) and opens from the local run folder alike.

Input: {model name: evaluate.evaluate_model(...)} and, optionally, the training stages'
metrics.json contents ({"stage": 1, "steps": [{"step", "reward_t1", "reward_t2", ...}]}).
"""
from __future__ import annotations

import base64
import html
import io

from selfcorrect.evaluate import LABELS, METRICS, markdown_ci_table

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
img{max-width:100%;margin:0.5em 0}figure{margin:1em 0}figcaption{color:#555;font-size:13px}"""


def _pct(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    if lo is None and "ci" in m:
        lo, hi = m["ci"][key]
    cell = f"{100 * m[key]:.1f}"
    return cell if lo is None else f"{cell} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _table(rows: dict[str, dict], first: str, extra: dict[str, str] | None = None) -> str:
    """An HTML table: one row per entry, the five metrics with intervals, plus extra columns."""
    import pandas as pd

    extra = extra or {}
    data = {name: {**{LABELS[k]: _pct(m, k) for k in METRICS},
                   **{label: f"{100 * m[k]:.1f}" for k, label in extra.items()},
                   "n": int(m["n"])} for name, m in rows.items()}
    frame = pd.DataFrame.from_dict(data, orient="index")
    frame.index.name = first
    return frame.to_html(escape=True, border=0)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(models: dict[str, dict], training: dict[str, dict]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for each plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in models.items():
        s = r["summary"]
        ax.plot([1, 2], [100 * s["accuracy_t1"], 100 * s["accuracy_t2"]], marker="o", label=name)
    ax.set(xticks=[1, 2], xlabel="turn", ylabel="accuracy (%)", title="Accuracy by turn",
           ylim=(0, 100))
    ax.legend()
    out.append(("Accuracy at each turn, per model.", _png(fig)))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names, x, width = list(models), np.arange(len(models)), 0.38
    top = 5.0
    for shift, key, colour in ((-width / 2, "delta_i_to_c", "tab:green"),
                               (width / 2, "delta_c_to_i", "tab:red")):
        heights = [100 * models[n]["summary"][key] for n in names]
        top = max(top, *heights)
        ax.bar(x + shift, heights, width, label=LABELS[key], color=colour)
    ax.set(xticks=x, xticklabels=names, ylabel="% of problems", ylim=(0, 1.15 * top),
           title="Changes between attempts")
    ax.legend()
    out.append(("Problems fixed (i->c) and broken (c->i) by the second attempt.", _png(fig)))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 21)
    for name, r in models.items():
        ax.hist(r["edit_ratios"], bins=bins, alpha=0.55, label=name)
    ax.set(xlabel="edit distance / total length (0 = unchanged)", ylabel="pairs",
           title="Edit distance between attempts")
    ax.legend()
    out.append(("Histogram of the edit-distance ratio between attempt 1 and attempt 2.", _png(fig)))

    for stage, metrics in sorted(training.items()):
        steps = metrics.get("steps") or []
        if not steps:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [s["step"] for s in steps]
        keys = [k for k in ("reward_t1", "reward_t2") if k in steps[0]] or ["loss"]  # RL or SFT
        for key in keys:
            ax.plot(xs, [s[key] for s in steps], marker=".", label=key)
        what = "mean reward" if keys != ["loss"] else "SFT loss"
        ax.set(xlabel="step", ylabel=what, title=f"Training: {stage}")
        ax.legend()
        out.append((f"Training curve of {stage} ({what} per step on the training batch).",
                    _png(fig)))
    return out


def markdown(models: dict[str, dict], title: str = "Self-correction") -> str:
    """Summary table (value [CI] in %), then per task and per difficulty for each model."""
    conf = next(iter(models.values()), {}).get("confidence", 0.95)
    parts = [f"# {title}", "", f"Metrics in %, with {100 * conf:.0f}% bootstrap intervals.", "",
             markdown_ci_table({n: r["summary"] for n, r in models.items()}), ""]
    for group in ("per_task", "per_difficulty"):
        for name, r in models.items():
            rows = {f"{name}: {g}": {**m, **{f"{k}_ci_low": m["ci"][k][0] for k in METRICS},
                                     **{f"{k}_ci_high": m["ci"][k][1] for k in METRICS}}
                    for g, m in r[group].items()}
            parts += [f"## {name}, {group.replace('_', ' ')}", "", markdown_ci_table(rows), ""]
    parts += _conditional_markdown(models)
    return "\n".join(parts)


def _conditional_rows(models: dict[str, dict]) -> dict[str, dict]:
    """{"<model>" and "<model>: <difficulty>": conditional-rate cells} (selfcorrect.rates)."""
    from selfcorrect import rates

    rows = {n: rates.from_flat(r["summary"]) for n, r in models.items()}
    rows.update({f"{n}: {g}": rates.from_flat(m) for n, r in models.items()
                 for g, m in r.get("per_difficulty", {}).items()})
    return {k: v for k, v in rows.items() if v}


def _conditional_markdown(models: dict[str, dict]) -> list[str]:
    from selfcorrect import rates

    rows = _conditional_rows(models)
    if not rows:
        return []
    return ["## Second attempt given the first, overall and per difficulty", "",
            "P(right at t2 | wrong at t1), P(wrong at t2 | right at t1), the share of attempt 2s "
            "that change the answer after a right / a wrong attempt 1, and (swap control, when "
            "run) the same fix rate with another problem's attempt 1 in place of the model's own; "
            "% with bootstrap intervals over problems.", "", rates.markdown(rows), ""]


def render_html(models: dict[str, dict], training: dict[str, dict] | None = None,
                title: str = "Self-correction report") -> str:
    """A self-contained HTML page: summary, per-task and per-difficulty tables, plots."""
    conf = next(iter(models.values()), {}).get("confidence", 0.95)
    extra = {"unchanged_share": "unchanged y2 (text)", "answer_repeat_share": "same answer y2",
             "edit_ratio_mean": "mean edit ratio"}
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>Metrics in %, with {100 * conf:.0f}% percentile bootstrap intervals over "
            "problems.</p>", "<h2>Summary</h2>",
            _table({n: r["summary"] for n, r in models.items()}, "model", extra)]
    for group, label in (("per_task", "task"), ("per_difficulty", "difficulty")):
        rows = {f"{n}: {g}": m for n, r in models.items() for g, m in r[group].items()}
        body += [f"<h2>Per {label}</h2>", _table(rows, f"model: {label}")]
    conditional = _conditional_rows(models)
    if conditional:
        import pandas as pd

        from selfcorrect import rates

        frame = pd.DataFrame.from_dict(
            {name: {rates.LABELS[k]: rates.cell(c.get(k), signed=k == "swap_gap")
                    for k in rates.CONDITIONAL} for name, c in conditional.items()},
            orient="index")
        frame.index.name = "model: difficulty"
        body += ["<h2>Second attempt given the first</h2><p>P(right at t2 | wrong at t1), "
                 "P(wrong at t2 | right at t1), the share of attempt 2s that change the answer "
                 "after a right / a wrong attempt 1, and the swap control (attempt 1 replaced by "
                 "another problem's) when run.</p>", frame.to_html(escape=True, border=0)]
    study = {n: r["summary"] for n, r in models.items() if "majority_k_t1" in r["summary"]}
    if study:
        import pandas as pd

        frame = pd.DataFrame.from_dict(
            {n: {"k": int(m["k"]), "majority@k, attempt 1 (%)": f"{100 * m['majority_k_t1']:.1f}",
                 "majority@k/2, attempt 2 (%)": f"{100 * m['majority_half_k_t2']:.1f}"}
             for n, m in study.items()}, orient="index")
        body += ["<h2>Sampling study</h2><p>Majority vote over k first attempts versus over the "
                 "second attempts of k/2 episodes: the same number of generated samples.</p>",
                 frame.to_html(border=0)]
    body.append("<h2>Plots</h2>")
    for caption, png in _figures(models, training or {}):
        body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write(models: dict[str, dict], training: dict[str, dict] | None, *, results: str,
          details: str, markdown_path: str, html_path: str) -> None:
    """The evaluation's four outputs (local or remote paths), as the evaluate step and
    `selfcorrect evaluate` both write them: results ({model: summary} JSON, what promotion
    reads), details (everything evaluate_model returned), the Markdown and the HTML report."""
    import json

    from selfcorrect import storage

    storage.write_text(results, json.dumps({n: r["summary"] for n, r in models.items()}, indent=2))
    storage.write_text(details, json.dumps(models, indent=2))
    storage.write_text(markdown_path, markdown(models))
    storage.write_text(html_path, render_html(models, training))
