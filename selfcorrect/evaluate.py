"""Self-correction metrics (docs/method.md §Evaluation) from verdicts, and the summary report.

One function computes the metrics from verdicts; training logs and evaluation both use it,
so what training reports and what evaluation reports cannot drift apart.
"""
from __future__ import annotations

from collections import defaultdict

from rapidfuzz.distance import Levenshtein

from selfcorrect.records import Attempt, EvalRow, Problem, Verdict

METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c", "delta_c_to_i")
LABELS = {"accuracy_t1": "Accuracy@t1", "accuracy_t2": "Accuracy@t2", "delta": "Delta(t1,t2)",
          "delta_i_to_c": "Delta_i->c", "delta_c_to_i": "Delta_c->i"}


def keyed_turn_pairs(rows, value) -> list[tuple[tuple[str, int], object, object]]:
    """((problem_id, sample), value at turn 1, value at turn 2) per episode that has both
    turns, in key order. `rows` are Attempts or Verdicts; `value(row)` picks what to pair."""
    turns: dict[tuple[str, int], dict[int, object]] = defaultdict(dict)
    for row in rows:
        turns[(row.problem_id, row.sample)][row.turn] = value(row)
    return [(key, t[1], t[2]) for key, t in sorted(turns.items()) if 1 in t and 2 in t]


def turn_pairs(rows, value) -> list[tuple]:
    """(value at turn 1, value at turn 2) per (problem, sample) that has both turns, in key order.

    `rows` are Attempts or Verdicts; `value(row)` picks what to pair (e.g. `.correct`).
    """
    return [(first, second) for _, first, second in keyed_turn_pairs(rows, value)]


def check_known(verdicts: list[Verdict], ids) -> None:
    """KeyError naming the first verdict whose problem is not among `ids`."""
    for v in verdicts:
        if v.problem_id not in ids:
            raise KeyError(f"verdict (sample {v.sample}, turn {v.turn}) names problem "
                           f"{v.problem_id!r}, which is not among the problems")


def pair_outcomes(verdicts: list[Verdict]) -> list[tuple[bool, bool]]:
    """(correct at t1, correct at t2) per (problem, sample) that has both turns."""
    return turn_pairs(verdicts, lambda v: v.correct)


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
    return [edit_distance_ratio(a, b) for a, b in turn_pairs(attempts, lambda a: a.completion)]


def summarise(verdicts: list[Verdict], attempts: list[Attempt]) -> dict[str, float]:
    m = self_correction_metrics(pair_outcomes(verdicts))
    ratios = edit_ratios(attempts)
    m["edit_ratio_mean"] = sum(ratios) / len(ratios) if ratios else 0.0
    m["unchanged_share"] = sum(r == 0 for r in ratios) / len(ratios) if ratios else 0.0
    return m


def bootstrap_ci(pairs: list[tuple[bool, bool]], *, clusters: list | None = None,
                 samples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric.

    Resamples the pairs, or, given `clusters` (a label per pair, e.g. its problem id), whole
    clusters: the k sampled episodes of one problem are not independent, and resampling them
    one by one gives intervals too narrow. With one pair per cluster both are the same draw.
    Seeded, so the same verdicts give the same intervals. No pairs: (0, 0) for each metric.

    >>> ci = bootstrap_ci([(True, True)] * 5)
    >>> ci["accuracy_t2"], ci["delta"]
    ((1.0, 1.0), (0.0, 0.0))
    """
    import numpy as np

    if not pairs:
        return {k: (0.0, 0.0) for k in METRICS}
    arr = np.asarray(pairs, dtype=bool)
    t1, t2 = arr[:, 0], arr[:, 1]
    columns = np.stack([t1, t2, ~t1 & t2, t1 & ~t2, np.ones_like(t1)], axis=1).astype(float)
    if clusters is None:
        sums = columns
    else:
        if len(clusters) != len(pairs):
            raise ValueError(f"bootstrap_ci: {len(clusters)} cluster labels for {len(pairs)} pairs")
        index = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
        sums = np.zeros((len(index), columns.shape[1]))
        np.add.at(sums, [index[c] for c in clusters], columns)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(samples, len(sums)))
    drawn = sums[idx].sum(1)                       # samples x 5
    share = drawn[:, :4] / drawn[:, 4:5]
    per = {"accuracy_t1": share[:, 0], "accuracy_t2": share[:, 1],
           "delta": share[:, 1] - share[:, 0], "delta_i_to_c": share[:, 2],
           "delta_c_to_i": share[:, 3]}
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in per.items()}


def problem_ci(verdicts: list[Verdict], **ci) -> dict[str, tuple[float, float]]:
    """bootstrap_ci over the verdicts' episodes, clustered by problem."""
    keyed = keyed_turn_pairs(verdicts, lambda v: v.correct)
    return bootstrap_ci([(a, b) for _, a, b in keyed], clusters=[pid for (pid, _), _, _ in keyed],
                        **ci)


def difficulty(problem: Problem) -> str:
    """The problem's difficulty label as its data source gave it; 'all' when it gave none.

    >>> difficulty(Problem("arith-37+145", "math", "?", difficulty="+ 3-digit"))
    '+ 3-digit'
    >>> difficulty(Problem("HumanEval/0", "code", "?"))
    'all'
    """
    return problem.difficulty or "all"


def answer_repeat_share(attempts: list[Attempt]) -> float:
    """Share of second attempts whose final answer repeats the first's (math extraction).

    Pairs where neither attempt has an extractable answer compare their whole text.

    >>> A = lambda pid, turn, text: Attempt(pid, 0, turn, text, "m")
    >>> answer_repeat_share([A("p", 1, "it is 12"), A("p", 2, "Hmm, so 12."),
    ...                      A("q", 1, "it is 3"), A("q", 2, "no: 4")])
    0.5
    """
    pairs = turn_pairs(attempts, lambda a: a.completion)
    return sum(same_answer(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0


def same_answer(first: str, second: str) -> bool:
    """Whether the second attempt's final answer (math extraction) repeats the first's;
    when neither has an extractable answer, whether the whole texts agree."""
    from selfcorrect.verify.math import extract_answer

    x, y = extract_answer(first), extract_answer(second)
    return (x == y) if (x is not None or y is not None) else first.strip() == second.strip()


def grouped_metrics(verdicts: list[Verdict], problems: list[Problem], by, **ci) -> dict[str, dict]:
    """Metrics (with intervals) per group of problems, `by(problem) -> label`, sorted by label.

    A verdict naming an unknown problem raises KeyError naming it.
    """
    label = {p.id: by(p) for p in problems}
    check_known(verdicts, label)
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[label[v.problem_id]].append(v)
    out = {}
    for name in sorted(groups):
        out[name] = {**self_correction_metrics(pair_outcomes(groups[name])),
                     "ci": {k: list(b) for k, b in problem_ci(groups[name], **ci).items()}}
    return out


def episode_outcomes(verdicts: list[Verdict], attempts: list[Attempt],
                     swap: dict | None = None) -> list[list]:
    """[problem_id, sample, right@t1, right@t2, changed, swap_right@t2, swap_copied] per
    episode with both verdicts, in key order (selfcorrect.rates). changed: attempt 2's answer
    differs from attempt 1's (None when a text is missing); swap: {(problem_id, sample):
    (right@t2, copied)} of the swap control, or None."""
    texts = {(a.problem_id, a.sample, a.turn): a.completion for a in attempts}
    out = []
    for (pid, sample), ok1, ok2 in keyed_turn_pairs(verdicts, lambda v: v.correct):
        first, second = texts.get((pid, sample, 1)), texts.get((pid, sample, 2))
        changed = None if first is None or second is None else not same_answer(first, second)
        swapped = (swap or {}).get((pid, sample), (None, None))
        out.append([pid, sample, bool(ok1), bool(ok2), changed, *swapped])
    return out


def conditional_by_group(outcomes: list[list], problems: list[Problem], by, *, samples: int,
                         confidence: float, seed: int) -> dict[str, dict]:
    """{group label: rates.summary_rates(...)} per group of problems, `by(problem) -> label`."""
    from selfcorrect import rates

    label = {p.id: by(p) for p in problems}
    groups: dict[str, list[list]] = defaultdict(list)
    for o in outcomes:
        groups[label[o[0]]].append(o)
    return {name: rates.summary_rates(groups[name], sorted({o[0] for o in groups[name]}),
                                      rounds=samples, confidence=confidence, seed=seed)
            for name in sorted(groups)}


def evaluate_model(verdicts: list[Verdict], attempts: list[Attempt], problems: list[Problem], *,
                   samples: int = 1000, confidence: float = 0.95, seed: int = 0,
                   swap: dict | None = None) -> dict:
    """Everything the report shows for one model.

    {"summary": summarise(...) + answer_repeat_share + <metric>_ci_low/_ci_high + the
     conditional rates (selfcorrect.rates: fix_rate, break_rate, changed_after_right/_wrong,
     copy_share, and with `swap` the swap control) with their intervals,
     "per_task": {task: metrics+ci}, "per_difficulty": {...: metrics+ci+conditional rates},
     "outcomes": per-episode outcomes, "edit_ratios": [...]}.
    """
    from selfcorrect import rates

    ci_kw = dict(samples=samples, confidence=confidence, seed=seed)
    summary = summarise(verdicts, attempts)
    summary["answer_repeat_share"] = answer_repeat_share(attempts)
    for key, (lo, hi) in problem_ci(verdicts, **ci_kw).items():
        summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = lo, hi
    outcomes = episode_outcomes(verdicts, attempts, swap)
    if outcomes:
        summary.update(rates.summary_rates(outcomes, sorted({o[0] for o in outcomes}),
                                           rounds=samples, confidence=confidence, seed=seed))
    per_difficulty = grouped_metrics(verdicts, problems, difficulty, **ci_kw)
    for name, extra in conditional_by_group(outcomes, problems, difficulty, **ci_kw).items():
        per_difficulty[name].update(extra)
    return {"summary": summary,
            "per_task": grouped_metrics(verdicts, problems, lambda p: p.task, **ci_kw),
            "per_difficulty": per_difficulty, "outcomes": outcomes,
            "edit_ratios": edit_ratios(attempts), "confidence": confidence}


def markdown_ci_table(results: dict[str, dict[str, float]]) -> str:
    """One row per model, each cell `value [low, high]` in percent (as in the paper's tables), from evaluate_model summaries."""
    head = "| model | " + " | ".join(LABELS[k] for k in METRICS) + " | n |"
    rule = "|---" * (len(METRICS) + 2) + "|"
    rows = [f"| {name} | " + " | ".join(
        f"{100 * m[k]:.1f} [{100 * m.get(k + '_ci_low', m[k]):.1f}, "
        f"{100 * m.get(k + '_ci_high', m[k]):.1f}]" for k in METRICS) + f" | {int(m['n'])} |"
        for name, m in results.items()]
    return "\n".join([head, rule, *rows])


# --- Sampling study (paper Fig. 1 right): majority vote at equal generated-sample budget ---

def eval_rows(model: str, verdicts: list[Verdict], attempts: list[Attempt],
              problems: list[Problem]) -> list[EvalRow]:
    """One EvalRow per (problem, sample) with verdicts for both turns, in key order: the
    per-episode data the metrics summarise (schemas/eval_row.schema.json).

    An episode whose attempts are missing gets edit ratio 0 only if both texts are absent;
    a verdict naming an unknown problem raises KeyError naming it.
    """
    by_id = {p.id: p for p in problems}
    check_known(verdicts, by_id)
    texts = {(a.problem_id, a.sample, a.turn): a.completion for a in attempts}
    rows = []
    for (pid, sample), ok1, ok2 in keyed_turn_pairs(verdicts, lambda v: v.correct):
        first, second = texts.get((pid, sample, 1), ""), texts.get((pid, sample, 2), "")
        rows.append(EvalRow(model, pid, sample, by_id[pid].task, difficulty(by_id[pid]),
                            ok1, ok2, edit_distance_ratio(first, second), same_answer(first, second)))
    return rows


def majority_vote_accuracy(attempts: list[Attempt], verdicts: list[Verdict], *, turn: int,
                           samples: int) -> float:
    """Per problem, the most common final answer among samples 0..samples-1 at `turn`;
    the share of problems whose majority answer was judged correct (ties: lowest sample).

    >>> A = lambda s, text: Attempt("p", s, 1, text, "m")
    >>> V = lambda s, ok: Verdict("p", s, 1, ok, float(ok))
    >>> atts = [A(0, "is 4"), A(1, "is 5"), A(2, "is 5")]
    >>> majority_vote_accuracy(atts, [V(0, True), V(1, False), V(2, False)], turn=1, samples=3)
    0.0
    >>> majority_vote_accuracy(atts, [V(0, True), V(1, False), V(2, False)], turn=1, samples=1)
    1.0
    """
    from collections import Counter

    from selfcorrect.verify.math import extract_answer

    correct = {(v.problem_id, v.sample, v.turn): v.correct for v in verdicts}
    by_problem: dict[str, list[tuple[int, str, bool]]] = defaultdict(list)
    for a in attempts:
        if a.turn == turn and a.sample < samples:
            key = (a.problem_id, a.sample, a.turn)
            if key not in correct:
                raise KeyError(f"attempt {key}: no verdict for it")
            answer = extract_answer(a.completion) or a.completion.strip()
            by_problem[a.problem_id].append((a.sample, answer, correct[key]))
    if not by_problem:
        return 0.0
    hits = 0
    for rows in by_problem.values():
        rows.sort()
        counts = Counter(answer for _, answer, _ in rows)
        best = max(counts.values())
        winner = next(answer for _, answer, _ in rows if counts[answer] == best)
        hits += any(ok for _, answer, ok in rows if answer == winner)
    return hits / len(by_problem)


def sampling_study(attempts: list[Attempt], verdicts: list[Verdict], k: int) -> dict[str, float]:
    """Majority vote over k first attempts vs over the second attempts of k/2 episodes:
    the same k generated samples each (the paper's Figure 1, right)."""
    if k < 2:
        raise ValueError(f"sampling study: k must be >= 2 samples per problem, got {k}")
    return {"majority_k_t1": majority_vote_accuracy(attempts, verdicts, turn=1, samples=k),
            "majority_half_k_t2": majority_vote_accuracy(attempts, verdicts, turn=2,
                                                         samples=k // 2),
            "k": float(k)}
