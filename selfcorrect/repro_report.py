"""The repro table and plots from <out>/rows/<row>-s<seed>.json (written by selfcorrect.repro).

Per row and decoding mode (greedy, sampled): each metric's mean over seeds, its spread
(min..max over seeds), and the 95% percentile-bootstrap interval of each seed's model over
the eval problems (a problem's samples resampled together), its ends averaged over seeds (for
one seed, that model's own interval). The interval is over problems, not over seeds: the
spread shows the seed-to-seed variation. Below the table, SCoRe minus each row, paired over
the same problems, with an interval over problems and seeds both (selfcorrect.repro_compare).
"""
from __future__ import annotations

import json
from pathlib import Path

from selfcorrect import repro_compare
from selfcorrect.evaluate import LABELS, METRICS

MODES = ("greedy", "sampled")
REFERENCE = "score"     # the row the others are compared with, paired (repro_compare)


def load_rows(out_dir: Path, order: list[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for path in sorted((out_dir / "rows").glob("*.json")):
        record = json.loads(path.read_text())
        rows.setdefault(record["row"], []).append(record)
    return {name: rows[name] for name in order if name in rows} | \
        {name: recs for name, recs in rows.items() if name not in order}


def aggregate(records: list[dict], mode: str) -> dict:
    """Mean, min, max over seeds, and the seeds' bootstrap interval ends averaged (each
    seed's interval resamples the same eval episodes)."""
    out = {"seeds": len(records)}
    for key in METRICS:
        values = [r[mode]["summary"][key] for r in records]
        lows = [r[mode]["summary"].get(f"{key}_ci_low", v) for r, v in zip(records, values)]
        highs = [r[mode]["summary"].get(f"{key}_ci_high", v) for r, v in zip(records, values)]
        out[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
                    "ci_low": sum(lows) / len(lows), "ci_high": sum(highs) / len(highs)}
    for key in ("unchanged_share", "answer_repeat_share", "n"):
        values = [r[mode]["summary"].get(key, 0.0) for r in records]
        out[key] = sum(values) / len(values)
    out["train_s"] = sum(r["train_s"] for r in records) / len(records)
    out["eval_s"] = sum(r["eval_s"] for r in records) / len(records)
    return out


def markdown(table: dict[str, dict[str, dict]], mode: str) -> str:
    head = ("| row | seeds | " + " | ".join(LABELS[k] for k in METRICS) +
            " | y2 = y1 | train s/seed |")
    rule = "|---" * (len(METRICS) + 4) + "|"
    lines = [head, rule]
    for name, modes in table.items():
        m = modes[mode]
        cells = []
        for key in METRICS:
            c = m[key]
            spread = f" ±{50 * (c['max'] - c['min']):.1f}" if m["seeds"] > 1 else ""
            sign = "+" if key == "delta" else ""
            cells.append(f"{100 * c['mean']:{sign}.1f}{spread} "
                         f"[{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}]")
        lines.append(f"| {name} | {m['seeds']} | " + " | ".join(cells) +
                     f" | {100 * m['unchanged_share']:.0f}% | {m['train_s']:.0f} |")
    return "\n".join(lines)


def plots(rows: dict[str, list[dict]], table: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir = out_dir / "plots"
    pdir.mkdir(exist_ok=True)
    names = list(table)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, mode in zip(axes, MODES):
        for j, key in enumerate(("accuracy_t1", "accuracy_t2")):
            means = [100 * table[n][mode][key]["mean"] for n in names]
            err = [[100 * (table[n][mode][key]["mean"] - table[n][mode][key]["ci_low"]) for n in names],
                   [100 * (table[n][mode][key]["ci_high"] - table[n][mode][key]["mean"]) for n in names]]
            ax.bar([i + 0.4 * j for i in range(len(names))], means, 0.4, yerr=err, capsize=2,
                   label=LABELS[key])
        ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=35, ha="right")
        ax.set_title(f"accuracy by turn ({mode})")
        ax.set_ylabel("%")
        ax.legend()
    fig.tight_layout()
    written.append(pdir / "accuracy_by_turn.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, mode in zip(axes, MODES):
        for j, key in enumerate(("delta_i_to_c", "delta_c_to_i")):
            ax.bar([i + 0.4 * j for i in range(len(names))],
                   [100 * table[n][mode][key]["mean"] for n in names], 0.4, label=LABELS[key])
        ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=35, ha="right")
        ax.set_title(f"wrong->right and right->wrong ({mode})")
        ax.legend()
    fig.tight_layout()
    written.append(pdir / "flips.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names), 2.6), sharey=True)
    for ax, name in zip(list(axes) if len(names) > 1 else [axes], names):
        ratios = [x for r in rows[name] for x in r["sampled"]["edit_ratios"]]
        ax.hist(ratios, bins=20, range=(0, 1), weights=[1 / max(1, len(ratios))] * len(ratios))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("edit ratio y1->y2")
    fig.suptitle("edit-distance ratio between attempts (sampled); mass at 0 = copies")
    fig.tight_layout()
    written.append(pdir / "edit_ratio_hist.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    trained = [n for n in names if any(r["history"] for r in rows[n])]
    if trained:
        fig, axes = plt.subplots(1, len(trained), figsize=(2.8 * len(trained), 2.8), sharey=True)
        for ax, name in zip(list(axes) if len(trained) > 1 else [axes], trained):
            r = rows[name][0]
            steps = [s for stage in ("stage1", "stage2") for s in r["history"].get(stage, [])]
            if steps:
                ax.plot([s["reward_t1"] for s in steps], label="reward t1")
                ax.plot([s["reward_t2"] for s in steps], label="reward t2")
                if r["history"].get("stage1"):
                    ax.axvline(len(r["history"]["stage1"]) - 0.5, color="grey", lw=0.8)
            else:
                ax.plot([s["loss"] for s in r["history"].get("sft", [])], label="SFT loss")
            ax.set_title(f"{name} (seed {r['seed']})", fontsize=8)
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        fig.tight_layout()
        written.append(pdir / "training_curves.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write(out_dir: Path, order: list[str]) -> dict:
    from selfcorrect import __version__

    rows = load_rows(out_dir, order)
    table = {name: {mode: aggregate(recs, mode) for mode in MODES} for name, recs in rows.items()}
    md = [f"# SCoRe on the testbed (selfcorrect {__version__})", ""]
    for mode in MODES:
        md += [f"## {mode} decoding (eval split; % of all episodes; mean ±half-spread over seeds "
               "[95% bootstrap interval])", "", markdown(table, mode), ""]
    diffs = {mode: repro_compare.compare(rows, REFERENCE, mode) for mode in MODES}
    for mode in MODES:
        if diffs[mode]:
            md += [f"## {REFERENCE} minus each row, {mode} decoding (points; paired over the same "
                   "problems, 95% interval resampling problems and each row's seeds; * excludes 0)",
                   "", repro_compare.markdown(diffs[mode], REFERENCE), ""]
    ablations = {mode: repro_compare.differences(rows, repro_compare.ABLATIONS, mode)
                 for mode in MODES}
    if ablations["sampled"]:
        md += ["## Ablation contrasts, sampled decoding (Stage I or not x bonus or not; paired "
               "as above)", "", repro_compare.markdown(ablations["sampled"]), ""]
    (out_dir / "table.md").write_text("\n".join(md))
    (out_dir / "table.json").write_text(json.dumps(
        {"version": __version__, "rows": table, f"{REFERENCE}_minus": diffs,
         "ablations": {mode: {f"{a} minus {b}": cells for (a, b), cells in d.items()}
                       for mode, d in ablations.items()}}, indent=2))
    configs = out_dir / "configs"
    configs.mkdir(exist_ok=True)
    for name, recs in rows.items():
        for r in recs:
            (configs / f"{name}-s{r['seed']}.json").write_text(
                json.dumps(portable(r["config"], Path.cwd()), indent=2))
    plots(rows, table, out_dir)
    if diffs["sampled"]:
        difference_plot(diffs["sampled"], out_dir / "plots" / "score_minus.png")
    return table


def portable(value, root: Path):
    """The config with paths under `root` (the checkout) made relative to it, so the committed
    configs name `.cache/assets/testbed`, not one machine's folder."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and value.startswith(f"{root}/"):
        return value[len(str(root)) + 1:]
    return value


def difference_plot(diffs: dict[str, dict[str, dict]], path: Path) -> Path:
    """SCoRe minus each row, per metric, with its paired interval (sampled decoding)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(diffs)
    metrics = repro_compare.METRICS
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.4 * len(names) + 1.4),
                             sharey=True)
    for ax, m in zip(axes, metrics):
        mid = [100 * diffs[n][m]["diff"] for n in names]
        err = [[mid[i] - 100 * diffs[n][m]["ci_low"] for i, n in enumerate(names)],
               [100 * diffs[n][m]["ci_high"] - mid[i] for i, n in enumerate(names)]]
        ax.errorbar(mid, range(len(names)), xerr=err, fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{REFERENCE} minus row: {LABELS[m]}", fontsize=8)
        ax.set_xlabel("points")
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
