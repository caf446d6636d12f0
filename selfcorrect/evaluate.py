"""Self-correction metrics (SCORE_SPEC.md §Evaluation) from verdicts, and the summary report.

One function computes the metrics from verdicts; training logs and evaluation both use it,
so what training reports and what evaluation reports cannot drift apart.
"""
from __future__ import annotations

from collections import defaultdict

from rapidfuzz.distance import Levenshtein

from selfcorrect.records import Attempt, Verdict

METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", "delta_c_to_i")
LABELS = {"accuracy_t1": "Accuracy@t1", "accuracy_t2": "Accuracy@t2", "delta": "Delta(t1,t2)",
          "delta_i_to_c": "Delta_i->c", "delta_c_to_i": "Delta_c->i"}


def pair_outcomes(verdicts: list[Verdict]) -> list[tuple[bool, bool]]:
    """(correct at t1, correct at t2) per (problem, sample) that has both turns."""
    turns: dict[tuple[str, int], dict[int, bool]] = defaultdict(dict)
    for v in verdicts:
        turns[(v.problem_id, v.sample)][v.turn] = v.correct
    return [(t[1], t[2]) for _, t in sorted(turns.items()) if 1 in t and 2 in t]


def self_correction_metrics(pairs: list[tuple[bool, bool]]) -> dict[str, float]:
    """The five metrics over all pairs, as fractions of ALL pairs.

    >>> m = self_correction_metrics([(True, True), (False, True), (True, False), (False, False)])
    >>> [m[k] for k in METRICS], m["n"]
    ([0.5, 0.5, 0.0, 0.25, 0.25], 4.0)
    """
    n = len(pairs)
    if n == 0:
        return {**{k: 0.0 for k in METRICS}, "n": 0.0}
    t1 = sum(a for a, _ in pairs) / n
    t2 = sum(b for _, b in pairs) / n
    return {"accuracy_t1": t1, "accuracy_t2": t2, "delta": t2 - t1,
            "delta_i_to_c": sum(not a and b for a, b in pairs) / n,
            "delta_c_to_i": sum(a and not b for a, b in pairs) / n, "n": float(n)}


def edit_distance_ratio(first: str, second: str) -> float:
    """Levenshtein distance / total length of both; 0 means the second copies the first."""
    total = len(first) + len(second)
    return Levenshtein.distance(first, second) / total if total else 0.0


def edit_ratios(attempts: list[Attempt]) -> list[float]:
    by_key: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
    for a in attempts:
        by_key[(a.problem_id, a.sample)][a.turn] = a.completion
    return [edit_distance_ratio(t[1], t[2]) for _, t in sorted(by_key.items()) if 1 in t and 2 in t]


def summarise(verdicts: list[Verdict], attempts: list[Attempt]) -> dict[str, float]:
    m = self_correction_metrics(pair_outcomes(verdicts))
    ratios = edit_ratios(attempts)
    m["edit_ratio_mean"] = sum(ratios) / len(ratios) if ratios else 0.0
    m["unchanged_share"] = sum(r == 0 for r in ratios) / len(ratios) if ratios else 0.0
    return m


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per model, metrics in percent, as in the paper's tables."""
    head = "| model | " + " | ".join(LABELS[k] for k in METRICS) + " | unchanged y2 | n |"
    rule = "|---" * (len(METRICS) + 3) + "|"
    rows = [f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in METRICS)
            + f" | {100 * m.get('unchanged_share', 0):.1f} | {int(m['n'])} |"
            for name, m in results.items()]
    return "\n".join([head, rule, *rows])
