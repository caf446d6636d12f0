"""`selfcorrect repro` end to end at toy size: every row trains, evaluates, lands in the table."""
import json

import pytest

from selfcorrect import cli
from selfcorrect.experiments import repro


@pytest.fixture(scope="module")
def toy_testbed(tmp_path_factory):
    out = tmp_path_factory.mktemp("testbed") / "model"
    assert cli.main(["pretrain", "--output", str(out), "--set", "pretrain.steps=2",
                     "--set", "pretrain.traces=40", "--set", "pretrain.problems=30",
                     "--set", "pretrain.checks=20",
                     "--set", "pretrain.hidden=32", "--set", "pretrain.layers=1"]) == 0
    return str(out)


SETS = ["data.n_train=6", "data.n_eval=4", "train.stage1_steps=1", "train.stage2_steps=1",
        "train.problems_per_step=2", "train.samples_per_problem=2", "train.max_new_tokens=6",
        "generate.max_new_tokens=6", "eval.sampling_k=2", "eval.bootstrap_samples=50",
        "verify.direct_num_workers=1"]


@pytest.mark.slow
def test_repro_rows_table_plots_and_resume(toy_testbed, tmp_path, capsys):
    out = tmp_path / "repro"
    argv = ["repro", "--output", str(out), "--seeds", "0,1", "--set", f"model.path={toy_testbed}",
            "--rows", "base,single_turn,score_no_stage1,score"]
    for s in SETS:
        argv += ["--set", s]
    assert cli.main(argv) == 0
    table = json.loads((out / "table.json").read_text())["rows"]
    assert list(table) == ["base", "single_turn", "score_no_stage1", "score"]
    assert table["base"]["greedy"]["seeds"] == 1 and table["score"]["sampled"]["seeds"] == 2
    assert table["score"]["sampled"]["n"] == 8          # 4 eval problems x k = 2
    md = (out / "table.md").read_text()
    assert "## greedy decoding" in md and "| score_no_stage1 | 2 |" in md
    assert md.index("## greedy decoding") < md.index("## sampled decoding")   # greedy first
    assert "## Exploratory: score minus each row, sampled decoding" in md and "| single_turn | " in md
    # primary contrasts measurable here: score vs base only (no naive_multi_turn, no star)
    primary = json.loads((out / "table.json").read_text())["primary"]
    assert [(c["b"], c["metric"]) for c in primary] == [("base", "delta"), ("base", "accuracy_t2")]
    assert all(c["p"] <= c["p_holm"] <= 1 for c in primary) and "## Primary contrasts" in md
    cond = table["score"]["greedy"]["conditional"]
    assert cond["fix_rate"]["n"] + cond["break_rate"]["n"] == 2 * 4      # 2 seeds x 4 problems
    assert cond["swap_fix_rate"]["n"] == cond["fix_rate"]["n"]            # the swap control ran
    assert "P(right t2 \\| wrong t1)" in md and "swapped y1" in md
    by_difficulty = table["score"]["greedy"]["conditional_by_difficulty"]
    assert sum(c["fix_rate"]["n"] + c["break_rate"]["n"] for c in by_difficulty.values()) == 8
    diffs = json.loads((out / "table.json").read_text())["score_minus"]["sampled"]
    assert set(diffs) == {"base", "single_turn", "score_no_stage1"}
    assert diffs["base"]["delta"]["ci_low"] <= diffs["base"]["delta"]["diff"] <= \
        diffs["base"]["delta"]["ci_high"]
    for plot in ("accuracy_by_turn", "flips", "edit_ratio_hist", "training_curves", "score_minus"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    record = json.loads((out / "rows" / "score_no_stage1-s1.json").read_text())
    assert record["config"]["train"]["stage1_steps"] == 0
    assert record["config"]["train"]["stage2_steps"] == 2     # equal budget
    assert len(record["history"]["stage2"]) == 2
    assert len(record["outcomes"]["sampled"]) == 8 and len(record["outcomes"]["greedy"]) == 4
    assert all(len(o) == 7 for o in record["outcomes"]["greedy"])
    capsys.readouterr()
    assert cli.main(argv) == 0                          # resumable: nothing re-runs
    assert capsys.readouterr().out.count("done before, skipped") == 7


@pytest.mark.slow
def test_sft_baseline_with_nothing_to_learn_says_so(toy_testbed, tmp_path):
    """An untrained model solves nothing: STaR has no correct attempt 2 to train on."""
    from selfcorrect import config
    from selfcorrect.experiments import baselines
    from selfcorrect.data.chain import generate

    cfg = config.load("testbed", overrides=[f"model.path={toy_testbed}", *SETS])
    with pytest.raises(ValueError, match="star: the base model's 8 episodes gave no training example"):
        baselines.run(cfg, "star", toy_testbed, generate(4, 1)[:4], str(tmp_path / "m"))


def test_primary_rows_take_five_seeds_exploratory_rows_three():
    plan = repro.row_seeds(["base", "score", "single_turn", "star"], [0, 1, 2, 3, 4], [0, 1, 2])
    seeds = {row: [s for s, r in plan if r == row] for row in ("base", "score", "single_turn", "star")}
    assert seeds == {"base": [0], "score": [0, 1, 2, 3, 4], "single_turn": [0, 1, 2],
                     "star": [0, 1, 2, 3, 4]}
    assert plan[:3] == [(0, "base"), (0, "score"), (0, "single_turn")]    # seed-major


def test_repro_dev_split_needs_dev_problems(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert repro.main(["--output", str(tmp_path / "out"), "--rows", "base", "--split", "dev",
                       "--set", f"model.path={tmp_path / 'm'}", "--set", "data.n_train=4",
                       "--set", "data.n_eval=2", "--set", "data.dev_fraction=0",
                       "--set", "data.n_dev=0"]) == 2
    assert "no 'dev' problems" in capsys.readouterr().err


def test_repro_refuses_unknown_rows(capsys):
    assert repro.main(["--rows", "base,dpo"]) == 2
    assert "unknown row(s) dpo" in capsys.readouterr().err


def test_repro_needs_the_testbed_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="make testbed"):
        repro.main(["--output", str(tmp_path), "--rows", "base",
                    "--set", f"model.path={tmp_path / 'none'}"])


@pytest.mark.slow
def test_repro_jobs_split_the_rows_and_give_the_same_results(toy_testbed, tmp_path, capsys):
    """--jobs 2 runs the plan in two processes; every row's outcomes equal a one-process run's."""
    argv = ["--seeds", "0", "--set", f"model.path={toy_testbed}", "--rows", "base,score,single_turn",
            "--swap-control", "greedy"]
    for s in SETS:
        argv += ["--set", s]
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["repro", "--output", str(one), *argv]) == 0
    assert cli.main(["repro", "--output", str(two), "--jobs", "2", *argv]) == 0
    out = capsys.readouterr().out
    assert out.count("[repro] ") >= 3 and (two / "table.md").is_file()
    assert sorted(p.name for p in (two / "logs").iterdir()) == ["shard-0.log", "shard-1.log"]
    for row in ("base-s0", "score-s0", "single_turn-s0"):
        a, b = (json.loads((d / "rows" / f"{row}.json").read_text()) for d in (one, two))
        timing = ("step_s", "tokens_per_s")
        untimed = lambda h: {s: [{k: v for k, v in step.items() if k not in timing}  # noqa: E731
                                 for step in steps] for s, steps in h.items()}
        assert a["outcomes"] == b["outcomes"] and untimed(a["history"]) == untimed(b["history"]), row
