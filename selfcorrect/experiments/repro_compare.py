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
contrasts of the 2 x 2 among the RL rows (Stage I or not, bonus or not; ABLATIONS), and for
the primary contrasts (PRIMARY x PRIMARY_METRICS, greedy decoding), written in docs/testbed.md
before the final run: each gets a two-sided bootstrap p-value, 2 * min(share of rounds <= 0,
share >= 0) with the +1 correction ((k + 1) / (rounds + 1)), and the family is Holm-corrected
(`holm`). Everything else in the report is exploratory (no correction).

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
# The primary contrasts (docs/testbed.md "Primary contrasts"): SCoRe against each, greedy.
PRIMARY = [("score", "base"), ("score", "naive_multi_turn"), ("score", "star")]
PRIMARY_METRICS = ("delta", "accuracy_t2")


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (reject where <= alpha): the
    i-th smallest p times (m - i + 1), made non-decreasing, capped at 1.

    >>> holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    """
    m, running = len(pvalues), 0.0
    adjusted = [0.0] * m
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def primary_contrasts(rows: dict[str, list[dict]], *, mode: str = "greedy", alpha: float = 0.05,
                      rounds: int = 10000, **kw) -> list[dict]:
    """The primary contrasts that can be measured (both rows present): one dict per (a, b,
    metric) with diff, interval, p and Holm-adjusted p over the family, and whether it holds
    (adjusted p <= alpha)."""
    diffs = differences(rows, PRIMARY, mode, rounds=rounds, **kw)
    family = [{"a": a, "b": b, "metric": m, **diffs[(a, b)][m]}
              for a, b in PRIMARY if (a, b) in diffs for m in PRIMARY_METRICS]
    for c, adj in zip(family, holm([c["p"] for c in family])):
        c.update(p_holm=adj, holds=adj <= alpha, alpha=alpha, mode=mode)
    return family


def primary_markdown(family: list[dict]) -> str:
    lines = ["| contrast | metric | difference (points) [95% interval] | p | p (Holm) | holds at "
             f"{family[0]['alpha'] if family else 0.05} |", "|---|---|---|---|---|---|"]
    for c in family:
        lines.append(f"| {c['a']} minus {c['b']} | {LABELS[c['metric']]} | {100 * c['diff']:+.1f} "
                     f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] | {c['p']:.4f} | "
                     f"{c['p_holm']:.4f} | {'yes' if c['holds'] else 'no'} |")
    return "\n".join(lines)


def per_problem(records: list[dict], mode: str, problem_ids: list[str]) -> dict[str, np.ndarray]:
    """{metric: [seeds x problems]}: each metric over a problem's samples (evaluate's own
    self_correction_metrics, so these cannot drift from the table's)."""
    known = set(problem_ids)
    out = {m: np.zeros((len(records), len(problem_ids))) for m in METRICS}
    for s, record in enumerate(records):
        pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        for pid, _sample, ok1, ok2, *_ in record["outcomes"][mode]:
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
    """{(a, b): {metric: {"diff", "ci_low", "ci_high", "p"}}}: row a minus row b, as fractions;
    p is the two-sided bootstrap p-value of a difference of 0.

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

    # each round's share of each seed among its draws: [rounds, seeds]
    shares = {n: (d[..., None] == np.arange(d.shape[1])).mean(1) for n, d in seed_draws.items()}

    def resampled(name: str, metric: str) -> np.ndarray:
        by_problem = shares[name] @ arrays[name][metric]      # rounds x problems: seeds' mean
        return np.take_along_axis(by_problem, picks, axis=1).mean(1)

    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for a, b in pairs:
        out[(a, b)] = {}
        for m in METRICS:
            boot = resampled(a, m) - resampled(b, m)
            tail = min((boot <= 0).sum(), (boot >= 0).sum())
            out[(a, b)][m] = {"diff": float(arrays[a][m].mean() - arrays[b][m].mean()),
                              "ci_low": float(np.percentile(boot, lo)),
                              "ci_high": float(np.percentile(boot, hi)),
                              "p": float(min(1.0, 2 * (tail + 1) / (rounds + 1)))}
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
