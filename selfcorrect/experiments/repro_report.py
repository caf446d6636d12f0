"""The repro table and plots from <out>/rows/<row>-s<seed>.json (written by selfcorrect.experiments.repro).

Greedy decoding (the paper's protocol) is the headline; sampled comes second.
Per row and decoding mode: each metric's mean over seeds, its spread (min..max over seeds),
and a 95% hierarchical percentile-bootstrap interval (selfcorrect.rates.interval: seeds with
replacement, then problems with replacement within each drawn seed, a problem's samples
together), so the interval holds seed-to-seed variance as well as problem variance. The
base row is not trained: one seed, a problems-only interval. Then the conditional rates
(P(right t2 | wrong t1), P(wrong t2 | right t1), change shares, the swap control) with the
same intervals, overall and per difficulty; the primary contrasts with Holm-corrected
p-values (repro_compare.primary_contrasts); and, labelled exploratory, SCoRe minus every
row and the ablation contrasts (paired, uncorrected).
"""
from __future__ import annotations

import json
from pathlib import Path

from selfcorrect import rates
from selfcorrect.experiments import repro_compare
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


def aggregate(records: list[dict], mode: str, difficulty_of: dict[str, str] | None = None) -> dict:
    """Mean, min, max over seeds, and the hierarchical bootstrap interval over seeds and
    problems (rates.interval) of each metric; "conditional" and "conditional_by_difficulty"
    hold the conditional rates with the same intervals. Records without outcomes (written
    before they were kept): the seeds' own intervals averaged, no conditional rates."""
    import numpy as np

    out = {"seeds": len(records)}
    cells = None
    if all(mode in r.get("outcomes", {}) for r in records):
        pids = sorted({o[0] for o in records[0]["outcomes"][mode]})
        counts = np.stack([rates.problem_counts(r["outcomes"][mode], pids) for r in records])
        cells = rates.interval(counts)
        out["conditional"] = {k: cells[k] for k in rates.CONDITIONAL}
        if difficulty_of:
            groups: dict[str, list[int]] = {}
            for i, pid in enumerate(pids):
                groups.setdefault(difficulty_of.get(pid, "all"), []).append(i)
            out["conditional_by_difficulty"] = {
                g: {k: c for k, c in rates.interval(counts[:, idx]).items()
                    if k in rates.CONDITIONAL or k == "accuracy_t1"}
                for g, idx in sorted(groups.items())}
    for key in METRICS:
        values = [r[mode]["summary"][key] for r in records]
        if cells is not None:
            lows, highs = [cells[key]["ci_low"]], [cells[key]["ci_high"]]
        else:
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


def difficulties(out_dir: Path) -> dict[str, str]:
    """{problem id: evaluate.difficulty label} from the run's problems.jsonl ({} if absent)."""
    from selfcorrect.evaluate import difficulty
    from selfcorrect.records import Problem, read

    path = out_dir / "problems.jsonl"
    return {p.id: difficulty(p) for p in read(str(path), Problem)} if path.is_file() else {}


def conditional_sections(table: dict, mode: str) -> list[str]:
    """The conditional rates and the swap control, per row, then per row and difficulty."""
    overall = {n: m[mode]["conditional"] for n, m in table.items() if "conditional" in m[mode]}
    if not overall:
        return []
    by_difficulty = {f"{n}: {g}": cells for n, m in table.items()
                     for g, cells in m[mode].get("conditional_by_difficulty", {}).items()}
    out = [f"### Second attempt given the first, {mode} (% of the episodes conditioned on; "
           "[95% interval over seeds and problems]; swapped: attempt 1 replaced by another "
           "problem's, a fixed derangement; own - swapped paired over the same episodes)", "",
           rates.markdown(overall), ""]
    if len(by_difficulty) > len(overall):
        out += [f"### ... per difficulty, {mode}", "", rates.markdown(by_difficulty), ""]
    return out


def write(out_dir: Path, order: list[str], split: str = "eval") -> dict:
    from selfcorrect import __version__

    rows = load_rows(out_dir, order)
    labels = difficulties(out_dir)
    table = {name: {mode: aggregate(recs, mode, labels) for mode in MODES}
             for name, recs in rows.items()}
    md = [f"# SCoRe on the testbed (selfcorrect {__version__}, {split} split)", ""]
    if split != "eval":
        md += [f"Evaluated on the {split} split, for choices; not the committed eval tables.", ""]
    primary = repro_compare.primary_contrasts(rows, mode="greedy")
    if primary:
        md += ["## Primary contrasts, greedy decoding (docs/testbed.md; points, paired over the "
               "same problems, 95% interval resampling problems and each row's seeds; two-sided "
               "bootstrap p, Holm-corrected over the family)", "",
               repro_compare.primary_markdown(primary), ""]
    for mode in MODES:
        md += [f"## {mode} decoding ({split} split; % of all episodes; mean ±half-spread over seeds "
               "[95% interval over seeds and problems])", "", markdown(table, mode), ""]
        md += conditional_sections(table, mode)
    diffs = {mode: repro_compare.compare(rows, REFERENCE, mode) for mode in MODES}
    for mode in MODES:
        if diffs[mode]:
            md += [f"## Exploratory: {REFERENCE} minus each row, {mode} decoding (points; paired "
                   "over the same problems, 95% interval resampling problems and each row's "
                   "seeds; * excludes 0, no correction for multiplicity)",
                   "", repro_compare.markdown(diffs[mode], REFERENCE), ""]
    ablations = {mode: repro_compare.differences(rows, repro_compare.ABLATIONS, mode)
                 for mode in MODES}
    for mode in MODES:
        if ablations[mode]:
            md += [f"## Exploratory: ablation contrasts, {mode} decoding (Stage I or not x bonus "
                   "or not; paired as above, uncorrected)", "",
                   repro_compare.markdown(ablations[mode]), ""]
    (out_dir / "table.md").write_text("\n".join(md))
    (out_dir / "table.json").write_text(json.dumps(
        {"version": __version__, "split": split, "rows": table, "primary": primary,
         f"{REFERENCE}_minus": diffs,
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
