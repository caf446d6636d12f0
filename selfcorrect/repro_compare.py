"""Row-against-row differences for the repro table: is SCoRe's Delta above the other rows'?

The table's per-row intervals overlap whenever rows differ by a point or two, yet every row is
evaluated on the same problems, so their differences can be measured far more tightly, paired.
For a reference row R and another row X, per metric m:

    diff = mean over R's seeds and samples of m  -  the same for X

with a 95% interval from a two-level percentile bootstrap that resamples, in each round,
the eval problems (the same draw for both rows: paired, and clustered, so a problem's
samples move together) and, for each row independently, its seeds (training randomness).
The interval therefore covers both "other problems" and "other training runs"; with 3 seeds
the seed level is coarse, which the interval shows honestly by widening.

`differences` measures any pairs the same way: the report uses it for the four ablation
contrasts of the 2 x 2 among the RL rows (Stage I or not, bonus or not; ABLATIONS).

Outcomes come from each row record's "outcomes" (repro.outcomes: per mode, a list of
[problem_id, sample, correct@t1, correct@t2] per episode).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from selfcorrect.evaluate import LABELS, METRICS, self_correction_metrics

# The four ablation contrasts of the 2 x 2 (Stage I yes/no x bonus yes/no) among the RL rows.
ABLATIONS = [("score", "score_no_bonus"), ("score_no_stage1", "naive_multi_turn"),
             ("score", "score_no_stage1"), ("score_no_bonus", "naive_multi_turn")]


def per_problem(records: list[dict], mode: str, problem_ids: list[str]) -> dict[str, np.ndarray]:
    """{metric: [seeds x problems]}: each metric over a problem's samples (evaluate's own
    self_correction_metrics, so these cannot drift from the table's)."""
    known = set(problem_ids)
    out = {m: np.zeros((len(records), len(problem_ids))) for m in METRICS}
    for s, record in enumerate(records):
        pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        for pid, _sample, ok1, ok2 in record["outcomes"][mode]:
            if pid not in known:
                raise KeyError(f"row {record['row']} seed {record['seed']}: outcome for problem "
                               f"{pid!r}, which the other rows were not evaluated on")
            pairs[pid].append((ok1, ok2))
        for i, pid in enumerate(problem_ids):
            if pid not in pairs:
                raise KeyError(f"row {record['row']} seed {record['seed']}: no {mode} outcome for "
                               f"problem {pid!r}")
            metrics = self_correction_metrics(pairs[pid])
            for m in METRICS:
                out[m][s, i] = metrics[m]
    return out


def compare(rows: dict[str, list[dict]], reference: str, mode: str, **kw) -> dict[str, dict[str, dict]]:
    """{other row: {metric: {"diff", "ci_low", "ci_high"}}}: reference minus each other row."""
    pairs = [(reference, name) for name in rows if name != reference]
    return {b: cells for (_, b), cells in differences(rows, pairs, mode, **kw).items()}


def differences(rows: dict[str, list[dict]], pairs: list[tuple[str, str]], mode: str, *,
                rounds: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> dict[tuple[str, str], dict[str, dict]]:
    """{(a, b): {metric: {"diff", "ci_low", "ci_high"}}}: row a minus row b, as fractions.

    Pairs naming a row that is absent, or whose records lack outcomes (written before they
    were kept), are left out.
    """
    usable = {n: recs for n, recs in rows.items()
              if recs and all(mode in r.get("outcomes", {}) for r in recs)}
    pairs = [(a, b) for a, b in pairs if a in usable and b in usable]
    if not pairs:
        return {}
    first = usable[pairs[0][0]][0]
    problem_ids = sorted({o[0] for o in first["outcomes"][mode]})
    arrays = {n: per_problem(usable[n], mode, problem_ids) for n in {x for p in pairs for x in p}}
    rng = np.random.default_rng(seed)
    n_problems = len(problem_ids)
    picks = rng.integers(0, n_problems, size=(rounds, n_problems))
    seed_draws = {n: rng.integers(0, len(usable[n]), size=(rounds, len(usable[n])))
                  for n in sorted(arrays)}

    def resampled(name: str, metric: str) -> np.ndarray:
        by_seed = arrays[name][metric][seed_draws[name]]      # rounds x seeds x problems
        return np.take_along_axis(by_seed.mean(1), picks, axis=1).mean(1)

    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for a, b in pairs:
        out[(a, b)] = {}
        for m in METRICS:
            boot = resampled(a, m) - resampled(b, m)
            out[(a, b)][m] = {"diff": float(arrays[a][m].mean() - arrays[b][m].mean()),
                              "ci_low": float(np.percentile(boot, lo)),
                              "ci_high": float(np.percentile(boot, hi))}
    return out


def markdown(diffs: dict, reference: str | None = None) -> str:
    """A table of differences: `compare`'s {row: cells} under `reference`, or `differences`'
    {(a, b): cells}."""
    first = f"{reference} minus" if reference else "contrast"
    lines = [f"| {first} | " + " | ".join(LABELS[m] for m in METRICS) + " |",
             "|---" * (len(METRICS) + 1) + "|"]
    for key, cells in diffs.items():
        name = key if reference else f"{key[0]} minus {key[1]}"
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
            + (" *" if c["ci_low"] > 0 or c["ci_high"] < 0 else "")
            for c in (cells[m] for m in METRICS)) + " |")
    return "\n".join(lines)
