"""Self-correction metrics, intervals and breakdowns against hand-computed cases."""
import pytest

from selfcorrect import evaluate as ev
from selfcorrect.records import Attempt, Problem, Verdict


def _verdicts(outcomes):
    """{problem_id: (correct t1, correct t2)} -> verdicts."""
    return [Verdict(pid, 0, turn, ok, float(ok)) for pid, pair in outcomes.items()
            for turn, ok in zip((1, 2), pair)]


def test_metrics_hand_computed_mixed_set():
    pairs = [(False, True), (False, True), (True, False), (True, True), (False, False)]
    m = ev.self_correction_metrics(pairs)
    assert m["accuracy_t1"] == pytest.approx(2 / 5)
    assert m["accuracy_t2"] == pytest.approx(3 / 5)
    assert m["delta"] == pytest.approx(1 / 5)
    assert m["delta_i_to_c"] == pytest.approx(2 / 5)
    assert m["delta_c_to_i"] == pytest.approx(1 / 5)
    assert m["delta"] == pytest.approx(m["delta_i_to_c"] - m["delta_c_to_i"])


def test_metrics_empty_and_all_correct():
    assert ev.self_correction_metrics([]) == {**{k: 0.0 for k in ev.METRICS}, "n": 0.0}
    m = ev.self_correction_metrics([(True, True)] * 3)
    assert (m["accuracy_t1"], m["accuracy_t2"], m["delta"], m["delta_c_to_i"]) == (1, 1, 0, 0)
    assert ev.bootstrap_ci([]) == {k: (0.0, 0.0) for k in ev.METRICS}
    assert ev.bootstrap_ci([(True, True)] * 4)["accuracy_t1"] == (1.0, 1.0)


def test_pair_outcomes_skips_problems_missing_a_turn():
    vs = _verdicts({"a": (False, True)}) + [Verdict("b", 0, 1, True, 1.0)]
    assert ev.pair_outcomes(vs) == [(False, True)]


def test_bootstrap_ci_is_seeded_brackets_the_estimate_and_narrows_with_data():
    pairs = [(False, True), (True, True), (True, False), (False, False)] * 5
    a = ev.bootstrap_ci(pairs, samples=500, seed=1)
    assert a == ev.bootstrap_ci(pairs, samples=500, seed=1)
    assert a != ev.bootstrap_ci(pairs, samples=500, seed=2)
    m = ev.self_correction_metrics(pairs)
    for k in ev.METRICS:
        lo, hi = a[k]
        assert lo <= m[k] <= hi and lo < hi, k
    wide = ev.bootstrap_ci(pairs, samples=500, seed=1)["accuracy_t2"]
    narrow = ev.bootstrap_ci(pairs * 20, samples=500, seed=1)["accuracy_t2"]
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2


def test_difficulty_comes_from_the_data_sources():
    import re

    from selfcorrect.data import algebra, arithmetic, chain

    for p in arithmetic.generate(60, 20, seed=0, digits=2, operations="+-*"):
        x, op, y = re.fullmatch(r"arith-(\d+)([-+*])(\d+)", p.id).groups()
        assert ev.difficulty(p) == f"{op} {max(len(x), len(y))}-digit"
    assert {ev.difficulty(p) for p in algebra.generate(20, 5, seed=0, digits=1)} == {"ax+b 1-digit"}
    for p in chain.generate(20, 5, seed=0, steps=2, hard_share=0.5):
        assert ev.difficulty(p) == f"chain, {chain.hard_steps(p.prompt)} hard step(s)"
    assert ev.difficulty(Problem("gsm8k-12", "math", "?")) == "all"


def test_answer_repeat_share_compares_extracted_answers():
    A = lambda pid, turn, text: Attempt(pid, 0, turn, text, "m")  # noqa: E731
    attempts = [A("a", 1, "The answer is 12."), A("a", 2, "Checking again: 12"),   # same answer
                A("b", 1, "It is 5"), A("b", 2, "It is 6"),                        # changed
                A("c", 1, "no idea"), A("c", 2, "no idea "),                       # no answers, same text
                A("d", 1, "It is 9")]                                              # no turn 2
    assert ev.answer_repeat_share(attempts) == pytest.approx(2 / 3)
    assert ev.answer_repeat_share([]) == 0.0


def test_evaluate_model_groups_by_task_and_difficulty():
    problems = [Problem("arith-1+2", "math", "?", "3", difficulty="+ 1-digit"),
                Problem("arith-10+20", "math", "?", "30", difficulty="+ 2-digit"),
                Problem("arith-11*12", "math", "?", "132", difficulty="* 2-digit"),
                Problem("HumanEval/0", "code", "?")]
    verdicts = _verdicts({"arith-1+2": (False, True), "arith-10+20": (True, True),
                          "arith-11*12": (True, False), "HumanEval/0": (False, False)})
    attempts = [Attempt(v.problem_id, 0, v.turn, "x" if v.turn == 1 else "xy", "m") for v in verdicts]
    out = ev.evaluate_model(verdicts, attempts, problems, samples=200)
    s = out["summary"]
    assert (s["accuracy_t1"], s["accuracy_t2"], s["n"]) == (0.5, 0.5, 4)
    assert s["accuracy_t1_ci_low"] <= 0.5 <= s["accuracy_t1_ci_high"]
    assert set(out["per_task"]) == {"code", "math"}
    assert out["per_task"]["math"]["accuracy_t2"] == pytest.approx(2 / 3)
    assert out["per_task"]["code"]["n"] == 1
    assert set(out["per_difficulty"]) == {"+ 1-digit", "+ 2-digit", "* 2-digit", "all"}
    assert out["per_difficulty"]["* 2-digit"]["delta_c_to_i"] == 1.0
    assert out["edit_ratios"] == pytest.approx([1 / 3] * 4)


def test_grouped_metrics_names_an_unknown_problem():
    with pytest.raises(KeyError, match="'ghost'"):
        ev.grouped_metrics(_verdicts({"ghost": (True, True)}), [], ev.difficulty)


def test_markdown_ci_table_shows_value_and_interval():
    s = {"accuracy_t1": 0.5, "accuracy_t2": 0.75, "delta": 0.25, "delta_i_to_c": 0.25,
         "delta_c_to_i": 0.0, "n": 4.0, "accuracy_t2_ci_low": 0.5, "accuracy_t2_ci_high": 1.0}
    table = ev.markdown_ci_table({"trained": s})
    assert "| trained | 50.0 [50.0, 50.0] | 75.0 [50.0, 100.0] |" in table


def test_sampling_study_hand_computed():
    # problem p: first attempts 4, 5, 5, 4 (4 is right; tie 2-2 -> sample 0's answer, 4);
    # second attempts of samples 0, 1: 5, 4 (tie -> sample 0's answer 5, wrong)
    # problem q: first attempts 7, 8, 8, 9 (majority 8 wrong); second attempts 7, 7 (right)
    texts = {("p", 1): ["4", "5", "5", "4"], ("p", 2): ["5", "4", "4", "4"],
             ("q", 1): ["7", "8", "8", "9"], ("q", 2): ["7", "7", "8", "8"]}
    right = {"p": "4", "q": "7"}
    attempts, verdicts = [], []
    for (pid, turn), answers in texts.items():
        for s, ans in enumerate(answers):
            attempts.append(Attempt(pid, s, turn, f"The answer is {ans}", "m"))
            verdicts.append(Verdict(pid, s, turn, ans == right[pid], float(ans == right[pid])))
    study = ev.sampling_study(attempts, verdicts, 4)
    assert study == {"majority_k_t1": 0.5, "majority_half_k_t2": 0.5, "k": 4.0}
    assert ev.majority_vote_accuracy(attempts, verdicts, turn=2, samples=4) == 1.0  # 4 (3:1), 8 vs 7 tie->7
    with pytest.raises(ValueError, match="k must be >= 2"):
        ev.sampling_study(attempts, verdicts, 1)
    with pytest.raises(KeyError, match="no verdict"):
        ev.majority_vote_accuracy(attempts, verdicts[1:], turn=1, samples=4)


def test_eval_rows_one_per_episode_with_both_turns():
    from selfcorrect.records import EvalRow

    problems = [Problem("arith-12+5", "math", "?", answer="17", difficulty="+ 2-digit"),
                Problem("p2", "math", "?", answer="4"),
                Problem("p3", "math", "?", answer="1")]
    verdicts = _verdicts({"arith-12+5": (False, True), "p2": (True, True)})
    verdicts.append(Verdict("p3", 0, 1, True, 1.0))                    # no turn 2: no row
    attempts = [Attempt("arith-12+5", 0, 1, "so 16", "m"), Attempt("arith-12+5", 0, 2, "so 17", "m"),
                Attempt("p2", 0, 1, "it is 4", "m"), Attempt("p2", 0, 2, "it is 4", "m")]
    rows = ev.eval_rows("trained", verdicts, attempts, problems)
    assert rows == [EvalRow("trained", "arith-12+5", 0, "math", "+ 2-digit", False, True,
                            ev.edit_distance_ratio("so 16", "so 17"), False),
                    EvalRow("trained", "p2", 0, "math", "all", True, True, 0.0, True)]
    m = ev.self_correction_metrics([(r.correct_t1, r.correct_t2) for r in rows])
    assert m == ev.self_correction_metrics(ev.pair_outcomes(verdicts))
    with pytest.raises(KeyError, match="'p9'"):
        ev.eval_rows("base", [Verdict("p9", 0, 1, True, 1.0)], [], problems)


def test_bootstrap_ci_resamples_whole_problems_when_told_their_clusters():
    """4 identical samples per problem: resampling samples one by one pretends there are 4x
    the problems; resampling problems gives the interval of the problems there really are."""
    per_problem = [(False, True), (True, True), (True, False), (False, False)] * 10
    pairs = [p for p in per_problem for _ in range(4)]
    labels = [i for i in range(len(per_problem)) for _ in range(4)]
    naive = ev.bootstrap_ci(pairs, samples=1000, seed=3)["delta"]
    clustered = ev.bootstrap_ci(pairs, clusters=labels, samples=1000, seed=3)["delta"]
    alone = ev.bootstrap_ci(per_problem, samples=1000, seed=3)["delta"]
    assert clustered[1] - clustered[0] > 1.6 * (naive[1] - naive[0])
    assert clustered == pytest.approx(alone, abs=0.03)
    singles = ev.bootstrap_ci(per_problem, clusters=list(range(40)), samples=500, seed=4)
    assert singles == pytest.approx(ev.bootstrap_ci(per_problem, samples=500, seed=4))
    with pytest.raises(ValueError, match="3 cluster labels for 40 pairs"):
        ev.bootstrap_ci(per_problem, clusters=[1, 2, 3])


def test_evaluate_model_intervals_are_clustered_by_problem():
    vs = []
    for i in range(30):
        for s in range(4):
            ok = i % 3 == 0
            vs += [Verdict(f"p{i:02d}", s, 1, False, 0.0), Verdict(f"p{i:02d}", s, 2, ok, float(ok))]
    assert ev.problem_ci(vs, samples=500, seed=0) == pytest.approx(ev.bootstrap_ci(
        ev.pair_outcomes(vs), clusters=[f"p{i:02d}" for i in range(30) for _ in range(4)],
        samples=500, seed=0))
