"""Conditional rates of attempt 2, their seed-and-problem intervals, the swap control, Holm."""
import numpy as np
import pytest

from selfcorrect import evaluate as ev
from selfcorrect import rates
from selfcorrect.experiments import repro_compare
from selfcorrect.records import Attempt, Problem, Verdict

# (right@t1, right@t2, changed, swap_right@t2, swap_copied) by hand:
# 4 wrong first attempts: 2 fixed (both changed), 2 not (1 changed); swapped: 1 fixed, 3 copied
# 6 right first attempts: 1 broken (changed), 5 kept (1 of them changed, to another right form)
HAND = [(False, True, True, True, False), (False, True, True, False, True),
        (False, False, True, False, True), (False, False, False, False, True),
        (True, False, True, True, False), (True, True, True, True, False)] + \
    [(True, True, False, True, False)] * 4


def outcomes(rows=HAND, problems=None):
    problems = problems or [f"p{i}" for i in range(len(rows))]
    return [[pid, 0, *row] for pid, row in zip(problems, rows)]


def test_conditional_rates_by_hand():
    pids = [f"p{i}" for i in range(len(HAND))]
    cells = rates.interval(rates.problem_counts(outcomes(), pids)[None], rounds=200)
    value = {k: c["value"] for k, c in cells.items()}
    assert value["fix_rate"] == pytest.approx(2 / 4)              # P(right t2 | wrong t1)
    assert value["break_rate"] == pytest.approx(1 / 6)            # P(wrong t2 | right t1)
    assert value["changed_after_wrong"] == pytest.approx(3 / 4)
    assert value["changed_after_right"] == pytest.approx(2 / 6)
    assert value["copy_share"] == pytest.approx(5 / 10)
    assert value["swap_fix_rate"] == pytest.approx(1 / 4)
    assert value["swap_gap"] == pytest.approx(2 / 4 - 1 / 4)
    assert value["swap_copy_share"] == pytest.approx(3 / 10)
    assert value["accuracy_t1"] == pytest.approx(0.6) and value["delta"] == pytest.approx(-0.1 + 0.2)
    assert (cells["fix_rate"]["n"], cells["break_rate"]["n"]) == (4, 6)
    for c in cells.values():
        assert c["ci_low"] <= c["value"] <= c["ci_high"]


def test_rates_without_a_case_or_a_swap_are_undefined_not_zero():
    all_right = [["p", 0, True, True, False], ["q", 0, True, False, True]]
    cells = rates.interval(rates.problem_counts(all_right, ["p", "q"])[None], rounds=50)
    assert cells["fix_rate"]["value"] is None and cells["fix_rate"]["n"] == 0
    assert cells["swap_fix_rate"]["value"] is None        # no swap control measured
    assert cells["break_rate"]["value"] == 0.5
    flat = rates.summary_rates(all_right, ["p", "q"], rounds=50)
    assert flat["fix_rate"] is None and flat["break_rate_ci_high"] >= 0.5
    with pytest.raises(KeyError, match="'r'"):
        rates.problem_counts(all_right + [["r", 0, True, True]], ["p", "q"])
    with pytest.raises(KeyError, match="no outcome for problem 'z'"):
        rates.problem_counts(all_right, ["p", "q", "z"])


def test_the_interval_holds_seed_variance():
    """Two seeds that disagree: the hierarchical interval (seeds, then problems) is wider than
    each seed's problem-only interval; seeds that agree add nothing."""
    rng = np.random.default_rng(0)
    pids = [f"p{i}" for i in range(200)]
    per_seed = []
    for p_right in (0.3, 0.7):
        rows = [(bool(a), bool(b), None, None, None)
                for a, b in zip(rng.random(200) < 0.5, rng.random(200) < p_right)]
        per_seed.append(rates.problem_counts(outcomes(rows, pids), pids))
    both = rates.interval(np.stack(per_seed), rounds=1000)["accuracy_t2"]
    alone = rates.interval(per_seed[0][None], rounds=1000)["accuracy_t2"]
    assert both["ci_high"] - both["ci_low"] > 3 * (alone["ci_high"] - alone["ci_low"])
    assert both["ci_low"] < 0.35 and both["ci_high"] > 0.65
    same = rates.interval(np.stack([per_seed[0]] * 3), rounds=1000)["accuracy_t2"]
    assert same["ci_high"] - same["ci_low"] <= 1.2 * (alone["ci_high"] - alone["ci_low"])
    assert rates.interval(np.stack(per_seed), rounds=1000) == rates.interval(np.stack(per_seed),
                                                                              rounds=1000)


def test_markdown_table_keeps_its_columns():
    pids = [f"p{i}" for i in range(len(HAND))]
    cells = rates.interval(rates.problem_counts(outcomes(), pids)[None], rounds=50)
    table = rates.markdown({"m": cells}).splitlines()
    columns = {len(line.replace("\\|", "").split("|")) for line in table}
    assert len(columns) == 1 and "P(right t2 \\| wrong t1)" in table[0]
    assert "| m | 50.0 [" in table[2] and table[2].endswith("| 4 / 6 |")


def test_evaluate_model_reports_conditional_rates_overall_and_per_difficulty():
    problems = [Problem(f"arith-{a}+{b}", "math", "?", str(a + b),
                        difficulty=f"+ {len(str(a))}-digit")
                for a, b in ((1, 2), (3, 4), (10, 20), (30, 40))]
    flips = [(False, True), (True, True), (True, False), (False, False)]
    verdicts = [Verdict(p.id, 0, t, ok[t - 1], 1.0) for p, ok in zip(problems, flips) for t in (1, 2)]
    attempts = [Attempt(p.id, 0, t, f"is {t if i % 2 == 0 else 1}", "m")
                for i, p in enumerate(problems) for t in (1, 2)]
    swap = {(p.id, 0): (i == 3, i == 0) for i, p in enumerate(problems)}
    r = ev.evaluate_model(verdicts, attempts, problems, samples=100, swap=swap)
    s = r["summary"]
    assert s["fix_rate"] == 0.5 and s["break_rate"] == 0.5
    assert s["changed_after_wrong"] == 0.5 and s["changed_after_right"] == 0.5
    assert s["swap_fix_rate"] == 0.5 and s["swap_copy_share"] == 0.25
    one, two = r["per_difficulty"]["+ 1-digit"], r["per_difficulty"]["+ 2-digit"]
    assert one["fix_rate"] == 1.0 and one["break_rate"] == 0.0
    assert two["fix_rate"] == 0.0 and two["break_rate"] == 1.0 and two["swap_fix_rate"] == 1.0
    assert [o[:4] for o in r["outcomes"]] == [[p.id, 0, *f] for p, f in
                                              sorted(zip(problems, flips), key=lambda x: x[0].id)]


def test_holm_against_a_textbook_example():
    """R's p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") and Holm (1979)'s step-down rule."""
    assert repro_compare.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # five tests at alpha 0.05: 0.01*5 = 0.05 rejects, then 0.02*4 = 0.08 stops the rest
    adjusted = repro_compare.holm([0.01, 0.02, 0.03, 0.04, 0.05])
    assert adjusted == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert [p <= 0.05 for p in adjusted] == [True, False, False, False, False]
    assert repro_compare.holm([0.9, 0.5]) == pytest.approx([1.0, 1.0])


def _record(row, seed, rows):
    return {"row": row, "seed": seed,
            "outcomes": {"greedy": [[f"p{i}", 0, *r] for i, r in enumerate(rows)]}}


def test_primary_contrasts_are_holm_corrected_over_the_family():
    rng = np.random.default_rng(1)
    n = 300
    base = [(bool(a), bool(a)) for a in rng.random(n) < 0.5]
    better = [(a, a or bool(b)) for (a, _), b in zip(base, rng.random(n) < 0.4)]
    rows = {"base": [_record("base", 0, base)],
            "score": [_record("score", s, better) for s in range(3)],
            "naive_multi_turn": [_record("naive_multi_turn", s, better) for s in range(3)]}
    family = repro_compare.primary_contrasts(rows, rounds=2000)
    assert [(c["b"], c["metric"]) for c in family] == [
        ("base", "delta"), ("base", "accuracy_t2"), ("naive_multi_turn", "delta"),
        ("naive_multi_turn", "accuracy_t2")]                  # star absent: left out
    by = {(c["b"], c["metric"]): c for c in family}
    assert by[("base", "delta")]["holds"] and by[("base", "delta")]["p"] < 0.01
    assert by[("base", "delta")]["p_holm"] == pytest.approx(
        repro_compare.holm([c["p"] for c in family])[0])
    assert not by[("naive_multi_turn", "delta")]["holds"]     # the same outcomes: no difference
    assert by[("naive_multi_turn", "delta")]["p"] == 1.0
    md = repro_compare.primary_markdown(family)
    assert "| score minus base | Delta(t1,t2) |" in md and "p (Holm)" in md
