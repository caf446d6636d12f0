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

Outcomes come from each row record's "outcomes" (repro.outcomes: per mode, a list of
[problem_id, sample, correct@t1, correct@t2] per episode).
"""
from __future__ import annotations

import numpy as np

METRICS = ("accuracy_t2", "delta", "delta_i_to_c", "delta_c_to_i")


def per_problem(records: list[dict], mode: str, problem_ids: list[str]) -> dict[str, np.ndarray]:
    """{metric: [seeds x problems]} of each metric averaged over a problem's samples."""
    index = {pid: i for i, pid in enumerate(problem_ids)}
    out = {m: np.zeros((len(records), len(problem_ids))) for m in METRICS}
    for s, record in enumerate(records):
        counts = np.zeros(len(problem_ids))
        for pid, _sample, ok1, ok2 in record["outcomes"][mode]:
            if pid not in index:
                raise KeyError(f"row {record['row']} seed {record['seed']}: outcome for problem "
                               f"{pid!r}, which the other rows were not evaluated on")
            i = index[pid]
            counts[i] += 1
            out["accuracy_t2"][s, i] += ok2
            out["delta"][s, i] += int(ok2) - int(ok1)
            out["delta_i_to_c"][s, i] += (not ok1) and ok2
            out["delta_c_to_i"][s, i] += ok1 and not ok2
        if (counts == 0).any():
            missing = problem_ids[int(np.argmax(counts == 0))]
            raise KeyError(f"row {record['row']} seed {record['seed']}: no {mode} outcome for "
                           f"problem {missing!r}")
        for m in METRICS:
            out[m][s] /= counts
    return out


def compare(rows: dict[str, list[dict]], reference: str, mode: str, *, rounds: int = 2000,
            confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, dict]]:
    """{other row: {metric: {"diff", "ci_low", "ci_high"}}}: reference minus other, as fractions.

    Rows without outcomes (records written before they were kept) are left out.
    """
    with_outcomes = {n: recs for n, recs in rows.items()
                     if recs and all(mode in r.get("outcomes", {}) for r in recs)}
    if reference not in with_outcomes:
        return {}
    problem_ids = sorted({o[0] for o in with_outcomes[reference][0]["outcomes"][mode]})
    arrays = {n: per_problem(recs, mode, problem_ids) for n, recs in with_outcomes.items()}
    rng = np.random.default_rng(seed)
    n_problems = len(problem_ids)
    picks = rng.integers(0, n_problems, size=(rounds, n_problems))

    def resampled(name: str, metric: str) -> np.ndarray:
        a = arrays[name][metric]                       # seeds x problems
        seeds = rng.integers(0, a.shape[0], size=(rounds, a.shape[0]))
        by_seed = a[seeds]                             # rounds x seeds x problems
        return np.take_along_axis(by_seed.mean(1), picks, axis=1).mean(1)

    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out: dict[str, dict[str, dict]] = {}
    for name in arrays:
        if name == reference:
            continue
        out[name] = {}
        for m in METRICS:
            diff = float(arrays[reference][m].mean() - arrays[name][m].mean())
            boot = resampled(reference, m) - resampled(name, m)
            out[name][m] = {"diff": diff, "ci_low": float(np.percentile(boot, lo)),
                            "ci_high": float(np.percentile(boot, hi))}
    return out


def markdown(diffs: dict[str, dict[str, dict]], reference: str) -> str:
    labels = {"accuracy_t2": "Accuracy@t2", "delta": "Delta(t1,t2)",
              "delta_i_to_c": "Delta_i->c", "delta_c_to_i": "Delta_c->i"}
    head = f"| {reference} minus | " + " | ".join(labels[m] for m in METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for name, cells in diffs.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
            + (" *" if c["ci_low"] > 0 or c["ci_high"] < 0 else "")
            for c in (cells[m] for m in METRICS)) + " |")
    return "\n".join(lines)
