"""Paired row differences (selfcorrect.experiments.repro_compare) on outcomes built to a known answer."""
import numpy as np
import pytest

from selfcorrect.experiments import repro_compare


def record(row, seed, pairs_by_problem):
    """pairs_by_problem: {pid: [(ok1, ok2) per sample]}."""
    return {"row": row, "seed": seed, "outcomes": {"sampled": [
        [pid, s, ok1, ok2] for pid, pairs in pairs_by_problem.items()
        for s, (ok1, ok2) in enumerate(pairs)]}}


def synthetic(row, seeds, fix_rate, rng, easy):
    """Easy problems always right; hard ones wrong at t1, fixed at t2 with fix_rate."""
    recs = []
    for seed in range(seeds):
        pairs = {}
        for i, is_easy in enumerate(easy):
            pairs[f"p{i}"] = [(True, True) if is_easy else (False, bool(rng.random() < fix_rate))
                              for _ in range(4)]
        recs.append(record(row, seed, pairs))
    return recs


def test_a_row_that_corrects_more_is_measured_above_with_an_interval_excluding_zero():
    rng = np.random.default_rng(1)
    easy = rng.random(300) < 0.6
    rows = {"score": synthetic("score", 3, 0.30, rng, easy),
            "single_turn": synthetic("single_turn", 3, 0.05, rng, easy),
            "twin": synthetic("twin", 3, 0.30, rng, easy)}
    diffs = repro_compare.compare(rows, "score", "sampled", rounds=500)
    d = diffs["single_turn"]["delta"]
    hard = (~easy).mean()
    assert d["diff"] == pytest.approx(hard * 0.25, abs=0.03)
    assert d["ci_low"] > 0 and d["ci_low"] <= d["diff"] <= d["ci_high"]
    twin = diffs["twin"]["delta"]
    assert twin["ci_low"] < 0 < twin["ci_high"]
    assert diffs["twin"]["delta_c_to_i"] == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p": 1.0}
    assert d["p"] < 0.01 and twin["p"] > 0.05


def test_pairing_removes_the_spread_the_problems_share():
    """Two rows that differ by one fixed episode per problem: the shared easy/hard split
    does not widen the paired interval."""
    easy = [i % 2 == 0 for i in range(200)]
    a = {f"p{i}": [(True, True)] * 2 if e else [(False, True), (False, False)]
         for i, e in enumerate(easy)}
    b = {f"p{i}": [(True, True)] * 2 if e else [(False, False), (False, False)]
         for i, e in enumerate(easy)}
    diffs = repro_compare.compare({"score": [record("score", 0, a)], "x": [record("x", 0, b)]},
                                  "score", "sampled", rounds=300)
    d = diffs["x"]["delta"]
    assert d["diff"] == pytest.approx(0.25)
    assert d["ci_high"] - d["ci_low"] < 0.08      # an unpaired interval would be ~0.14 wide


def test_a_row_missing_a_problem_is_named():
    full = {"p0": [(True, True)], "p1": [(False, True)]}
    rows = {"score": [record("score", 0, full)],
            "star": [record("star", 2, {"p0": [(True, True)]})]}
    with pytest.raises(KeyError, match="row star seed 2: no sampled outcome for problem 'p1'"):
        repro_compare.compare(rows, "score", "sampled")


def test_records_without_outcomes_are_left_out():
    rows = {"score": [record("score", 0, {"p0": [(True, True)]})],
            "old": [{"row": "old", "seed": 0}]}
    assert repro_compare.compare(rows, "score", "sampled") == {}
    assert repro_compare.compare({"old": rows["old"]}, "score", "sampled") == {}
    md = repro_compare.markdown(repro_compare.compare(
        {**rows, "x": [record("x", 0, {"p0": [(False, True)]})]}, "score", "sampled"), "score")
    assert "| score minus | Accuracy@t1 | Accuracy@t2 |" in md and "| x | +100.0" in md


def test_ablation_contrasts_pair_any_two_rows_and_skip_absent_ones():
    rng = np.random.default_rng(2)
    easy = rng.random(200) < 0.5
    rows = {"score": synthetic("score", 2, 0.4, rng, easy),
            "score_no_bonus": synthetic("score_no_bonus", 2, 0.1, rng, easy)}
    diffs = repro_compare.differences(rows, repro_compare.ABLATIONS, "sampled", rounds=300)
    assert list(diffs) == [("score", "score_no_bonus")]      # the other rows are absent
    cells = diffs[("score", "score_no_bonus")]
    assert cells["accuracy_t1"]["diff"] == 0.0 and cells["delta"]["ci_low"] > 0
    assert "| score minus score_no_bonus | +0.0 [+0.0, +0.0] |" in repro_compare.markdown(diffs)


def test_committed_configs_name_paths_relative_to_the_checkout(tmp_path):
    from selfcorrect.experiments.repro_report import portable

    cfg = {"output_dir": f"{tmp_path}/runs", "model": {"path": f"{tmp_path}/.cache/assets/testbed"},
           "elsewhere": "/opt/models/x", "sets": [f"{tmp_path}/a"], "steps": 20}
    assert portable(cfg, tmp_path) == {"output_dir": "runs",
                                       "model": {"path": ".cache/assets/testbed"},
                                       "elsewhere": "/opt/models/x", "sets": ["a"], "steps": 20}
