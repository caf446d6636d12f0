"""Conditional rates of the second attempt, and intervals that resample seeds then problems.

Per episode (one problem, one sample of one trained model) the outcome is

    [problem_id, sample, right@t1, right@t2, changed, swap_right@t2, swap_copied]

`changed`: attempt 2's final answer differs from attempt 1's (evaluate.same_answer);
`swap_right@t2` / `swap_copied`: the swap control (evaluate_cli), attempt 2 regenerated after
another problem's attempt 1, right for this problem / repeating the swapped-in answer. The
last three may be None (not measured). Every rate is a ratio of two sums of per-episode
counts (RATES), so a problem's samples stay together and rates pool exactly:

    fix_rate               P(right at t2 | wrong at t1)
    break_rate             P(wrong at t2 | right at t1)
    changed_after_right    share of attempt 2s that change the answer when attempt 1 was right
    changed_after_wrong    ... when attempt 1 was wrong
    copy_share             share of attempt 2s that repeat attempt 1's answer
    swap_fix_rate          P(right at t2 | own attempt 1 wrong) with attempt 1 swapped for
                           another problem's: a model that re-solves scores its fix_rate here,
                           one that corrects its own attempt scores less
    swap_gap               fix_rate - swap_fix_rate over the same episodes (paired)
    swap_copy_share        share of swapped attempt 2s that repeat the swapped-in answer

`interval` is a hierarchical percentile bootstrap: each round draws seeds with replacement,
then, within each drawn seed, problems with replacement; so the interval covers both other
training runs and other problems. With one seed it is the problem (cluster) bootstrap.
"""
from __future__ import annotations

import numpy as np

from selfcorrect.evaluate import METRICS

#: per-episode count columns
COLUMNS = ("n", "right1", "right2", "wrong1", "fixed", "broken", "changed_n", "changed_right",
           "changed_wrong", "right1_c", "wrong1_c", "copied", "swap_n", "swap_wrong1",
           "swap_fixed", "own_fixed_s", "swap_copied")
CONDITIONAL = ("fix_rate", "break_rate", "changed_after_right", "changed_after_wrong",
               "copy_share", "swap_fix_rate", "swap_gap", "swap_copy_share")
LABELS = {"fix_rate": "P(right t2 | wrong t1)", "break_rate": "P(wrong t2 | right t1)",
          "changed_after_right": "changed | right t1", "changed_after_wrong": "changed | wrong t1",
          "copy_share": "y2 answer = y1", "swap_fix_rate": "P(right t2 | wrong t1), swapped y1",
          "swap_gap": "own - swapped", "swap_copy_share": "swapped y2 = swapped y1"}
_C = {c: i for i, c in enumerate(COLUMNS)}


def episode_counts(outcome) -> np.ndarray:
    """The COLUMNS of one outcome (a list as in the module docstring; 4 to 7 entries)."""
    _pid, _sample, ok1, ok2, *rest = outcome
    changed, swap_ok2, swap_copied = (list(rest) + [None] * 3)[:3]
    ok1, ok2 = bool(ok1), bool(ok2)
    row = dict(n=1, right1=ok1, right2=ok2, wrong1=not ok1, fixed=not ok1 and ok2,
               broken=ok1 and not ok2)
    if changed is not None:
        row.update(changed_n=1, changed_right=ok1 and changed, changed_wrong=not ok1 and changed,
                   right1_c=ok1, wrong1_c=not ok1, copied=not changed)
    if swap_ok2 is not None:
        row.update(swap_n=1, swap_wrong1=not ok1, swap_fixed=not ok1 and bool(swap_ok2),
                   own_fixed_s=not ok1 and ok2, swap_copied=bool(swap_copied))
    out = np.zeros(len(COLUMNS))
    for key, value in row.items():
        out[_C[key]] = float(value)
    return out


def problem_counts(outcomes, problem_ids: list[str]) -> np.ndarray:
    """[problems, COLUMNS]: each problem's episodes summed, in `problem_ids` order. KeyError
    naming an outcome's unknown problem, or a problem without outcomes."""
    index = {pid: i for i, pid in enumerate(problem_ids)}
    out = np.zeros((len(problem_ids), len(COLUMNS)))
    for o in outcomes:
        if o[0] not in index:
            raise KeyError(f"outcome for problem {o[0]!r}, which is not among the problems")
        out[index[o[0]]] += episode_counts(o)
    empty = np.flatnonzero(out[:, _C["n"]] == 0)
    if len(empty):
        raise KeyError(f"no outcome for problem {problem_ids[empty[0]]!r}")
    return out


def values(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric and rate from summed counts [..., COLUMNS]; NaN where undefined (e.g. no
    wrong first attempt, or no swap control)."""
    s = {c: sums[..., i] for c, i in _C.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        div = lambda a, b: np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)  # noqa: E731
        return {"accuracy_t1": div(s["right1"], s["n"]), "accuracy_t2": div(s["right2"], s["n"]),
                "delta": div(s["right2"] - s["right1"], s["n"]),
                "delta_i_to_c": div(s["fixed"], s["n"]), "delta_c_to_i": div(s["broken"], s["n"]),
                "fix_rate": div(s["fixed"], s["wrong1"]), "break_rate": div(s["broken"], s["right1"]),
                "changed_after_right": div(s["changed_right"], s["right1_c"]),
                "changed_after_wrong": div(s["changed_wrong"], s["wrong1_c"]),
                "copy_share": div(s["copied"], s["changed_n"]),
                "swap_fix_rate": div(s["swap_fixed"], s["swap_wrong1"]),
                "swap_gap": div(s["own_fixed_s"] - s["swap_fixed"], s["swap_wrong1"]),
                "swap_copy_share": div(s["swap_copied"], s["swap_n"])}


def interval(per_seed: np.ndarray, *, rounds: int = 2000, confidence: float = 0.95,
             seed: int = 0) -> dict[str, dict]:
    """{metric or rate: {"value", "ci_low", "ci_high", "n"}} from counts [seeds, problems,
    COLUMNS]: the pooled value, and the hierarchical bootstrap interval (seeds, then problems
    within each drawn seed); None where undefined. "n" is the rate's denominator (episodes)."""
    per_seed = np.asarray(per_seed, dtype=float)
    if per_seed.ndim != 3 or per_seed.shape[-1] != len(COLUMNS):
        raise ValueError(f"rates.interval: counts must be [seeds, problems, {len(COLUMNS)}], got "
                         f"{per_seed.shape}")
    n_seeds, n_problems, _ = per_seed.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(rounds, n_seeds))
    sums = np.zeros((rounds, len(COLUMNS)))
    for j in range(n_seeds):
        weights = rng.multinomial(n_problems, np.full(n_problems, 1 / n_problems), size=rounds)
        for s in range(n_seeds):
            hit = seed_draws[:, j] == s
            sums[hit] += weights[hit] @ per_seed[s]
    boot, point = values(sums), values(per_seed.sum((0, 1)))
    denominators = dict(fix_rate="wrong1", break_rate="right1", changed_after_right="right1_c",
                        changed_after_wrong="wrong1_c", copy_share="changed_n",
                        swap_fix_rate="swap_wrong1", swap_gap="swap_wrong1",
                        swap_copy_share="swap_n")
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out = {}
    total = per_seed.sum((0, 1))
    for key in (*METRICS, *CONDITIONAL):
        value = float(point[key])
        n = float(total[_C[denominators.get(key, "n")]])
        if np.isnan(value):
            out[key] = {"value": None, "ci_low": None, "ci_high": None, "n": n}
            continue
        b = boot[key][~np.isnan(boot[key])]
        out[key] = {"value": value, "ci_low": float(np.percentile(b, lo)),
                    "ci_high": float(np.percentile(b, hi)), "n": n}
    return out


def summary_rates(outcomes, problem_ids: list[str], **kw) -> dict[str, float | None]:
    """The CONDITIONAL rates of one model's episodes as flat keys (<rate>, <rate>_ci_low,
    <rate>_ci_high, <rate>_n), the problem bootstrap's interval (one seed)."""
    cells = interval(problem_counts(outcomes, problem_ids)[None], **kw)
    out: dict[str, float | None] = {}
    for key in CONDITIONAL:
        c = cells[key]
        out.update({key: c["value"], f"{key}_ci_low": c["ci_low"], f"{key}_ci_high": c["ci_high"],
                    f"{key}_n": c["n"]})
    return out


def from_flat(summary: dict) -> dict[str, dict]:
    """summary_rates' flat keys back as {rate: {"value", "ci_low", "ci_high", "n"}}."""
    return {k: {"value": summary.get(k), "ci_low": summary.get(f"{k}_ci_low"),
                "ci_high": summary.get(f"{k}_ci_high"), "n": summary.get(f"{k}_n", 0.0)}
            for k in CONDITIONAL if k in summary}


def cell(c: dict | None, *, signed: bool = False) -> str:
    """`value [low, high]` in percent, or '-' when undefined."""
    if not c or c.get("value") is None:
        return "-"
    f = "+.1f" if signed else ".1f"
    return f"{100 * c['value']:{f}} [{100 * c['ci_low']:{f}}, {100 * c['ci_high']:{f}}]"


def markdown(rows: dict[str, dict[str, dict]], keys=CONDITIONAL) -> str:
    """A table: one row per entry of {name: interval(...)}, the conditional rates in %."""
    head = [LABELS.get(k, k).replace("|", "\\|") for k in keys]     # a bare | splits a cell
    lines = ["| row | " + " | ".join(head) + " | wrong t1 / right t1 |",
             "|---" * (len(keys) + 2) + "|"]
    for name, cells in rows.items():
        counts = [cells.get(k, {}).get("n") or 0 for k in ("fix_rate", "break_rate")]
        lines.append(f"| {name} | " + " | ".join(cell(cells.get(k), signed=k == "swap_gap")
                                                  for k in keys)
                     + f" | {counts[0]:.0f} / {counts[1]:.0f} |")
    return "\n".join(lines)
