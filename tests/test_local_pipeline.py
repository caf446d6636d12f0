"""The whole DAG through kfp.local on the tiny preset: every step runs for real."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from selfcorrect import config
from selfcorrect.evaluate import METRICS
from selfcorrect.records import Attempt, EvalRow, Problem, Verdict, read

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from selfcorrect.pipelines.local import run_local

    out = tmp_path_factory.mktemp("run")
    # a gate that always opens: the promote branch runs; the difficulty filter's probe runs
    # (the random tiny model solves nothing, so drop_always_solved keeps every problem)
    # and the sampling study runs (k = 2 sampled episodes per eval problem, both models)
    cfg = config.load("tiny", overrides=[f"output_dir={out}", "promotion.min_gain_over_base=-1",
                                         "data.drop_always_solved=true", "eval.sampling_k=2"])
    from io import StringIO

    from rich.console import Console

    console = Console(file=StringIO(), width=200)
    result = run_local(cfg, console=console)
    result["console"] = console.file.getvalue()
    return cfg, result


def test_console_shows_one_line_per_step_and_logs_go_to_named_files(local_run):
    _, out = local_run
    lines = out["console"].strip().splitlines()
    steps = [line for line in lines if re.match(r"ok\s+\d+\.\d s  ", line)]
    assert len(lines) <= len(steps) + 2 and len(steps) >= 20, out["console"]
    logs = Path(out["logs"])
    names = {p.stem for p in logs.glob("*.log")}
    assert {"gate-problems", "prepare-problems", "train-stage1", "promote-model"} <= names, names
    assert not any(re.fullmatch(r"validate-data-\d+", n) for n in names), names
    assert "Executing task" in (logs / "train-stage1.log").read_text()
    assert any("ok" in line and "train-stage2" in line for line in steps)


@pytest.fixture(scope="module")
def rejected_run(local_run, tmp_path_factory):
    """The pipeline's promotion_gate sub-DAG again, on the first run's artifacts (imported),
    against the same registry, now holding that run's model: asking for +1 point over the
    currently promoted model must close the gate."""
    from kfp import dsl, local
    from kfp.dsl import Dataset, Model

    from selfcorrect.pipelines.score import promotion_gate

    cfg, out = local_run
    run = Path(out["run_dir"])

    def imported(task: str, name: str, cls):
        return dsl.importer(artifact_uri=str(_artifact(run, task, name)), artifact_class=cls,
                            reimport=False).output

    @dsl.pipeline(name="gate-only")
    def gate_only(output_dir: str, min_gain_over_base: float, min_gain_over_current: float):
        promotion_gate(results=imported("evaluate", "results", Dataset),
                       model=imported("train-stage2", "model", Model),
                       problems=imported("prepare-problems", "problems", Dataset),
                       verdicts=imported("verify-attempts-3", "verdicts", Dataset),
                       eval_rows=imported("evaluate", "rows", Dataset), output_dir=output_dir,
                       min_gain_over_base=min_gain_over_base,
                       min_gain_over_current=min_gain_over_current)

    strict = config.load("tiny", overrides=[f"output_dir={cfg.output_dir}",
                                            "promotion.min_gain_over_base=-1",
                                            "promotion.min_gain_over_current=0.01"])
    root = tmp_path_factory.mktemp("gate")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    gate_only(output_dir=strict.output_dir, min_gain_over_base=-1.0, min_gain_over_current=0.01)
    (gate_run,) = root.glob("gate-only-*")
    return strict, gate_run


def _artifact(run_dir: Path, task: str, name: str) -> Path:
    hits = sorted(run_dir.glob(f"{task}/{name}"))
    assert hits, f"no artifact {task}/{name} under {run_dir}"
    return hits[0]


def test_results_hold_five_metrics_for_both_models(local_run):
    cfg, out = local_run
    assert list(out["results"]) == ["base", "stage1", "trained"]
    for m in out["results"].values():
        for key in METRICS:
            assert -1.0 <= m[key] <= 1.0
        assert m["n"] == cfg.data.n_eval
        assert m["delta"] == pytest.approx(m["accuracy_t2"] - m["accuracy_t1"])


def test_every_step_left_well_formed_artifacts(local_run):
    cfg, out = local_run
    run = Path(out["run_dir"])
    problems = read(str(_artifact(run, "prepare-problems", "problems")), Problem)
    assert len(problems) == cfg.data.n_train + cfg.data.n_eval
    probe = cfg.data.n_train * cfg.data.filter_samples     # base model: train-split turn 1s
    for label, extra in (("", probe), ("-2", 0), ("-3", 0)):  # base, Stage I, Stage II models
        attempts = read(str(_artifact(run, f"sample-attempts{label}", "attempts")), Attempt)
        verdicts = read(str(_artifact(run, f"verify-attempts{label}", "verdicts")), Verdict)
        assert len(attempts) == len(verdicts) == 2 * cfg.data.n_eval + extra
        assert {(a.problem_id, a.turn) for a in attempts} == {(v.problem_id, v.turn) for v in verdicts}
    for stage in ("train-stage1", "train-stage2"):
        model = _artifact(run, stage, "model")
        for f in ("config.json", "model.safetensors", "tokenizer.json", "resolved_config.json",
                  "metrics.json"):
            assert (model / f).is_file(), f"{stage}: {f} missing"
        # the checkpoint records the run-config keys the stage was given, at the run's values
        saved, given = json.loads((model / "resolved_config.json").read_text()), cfg.to_dict()
        for section in ("name", "task", "output_dir", "model", "data", "train", "prompts",
                        "resources"):
            assert saved[section] == given[section], section
        assert saved["generate"]["batch_size"] == cfg.generate.batch_size
        assert saved["verify"]["timeout_s"] == cfg.verify.timeout_s
    # problems x2, 3 x (attempts, verdicts), the two stages' steps, eval rows: 11 gates
    reports = sorted(run.glob("validate-data*/report"))
    assert len(reports) == 11 and all(r.read_text().strip() for r in reports)
    kinds = Counter(re.match(r"### Data gate `(\w+)`: passed", r.read_text()).group(1) for r in reports)
    assert kinds == {"problems": 2, "attempts": 3, "verdicts": 3, "train_steps": 2, "eval_rows": 1}
    metrics = json.loads(_artifact(run, "evaluate", "executor_output.json").read_text())
    logged = metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {f"{m}_{k}" for m in ("base", "stage1", "trained") for k in METRICS} <= set(logged)


def test_difficulty_filter_judged_every_train_problem(local_run):
    cfg, out = local_run
    done = json.loads(_artifact(Path(out["run_dir"]), "filter-problems", "executor_output.json").read_text())
    counts = done["artifacts"]["filtered"]["artifacts"][0]["metadata"]
    assert counts["no_verdicts"] == 0 and counts["always_solved"] == 0      # probed, none solved
    assert (counts["train"], counts["eval"]) == (cfg.data.n_train, cfg.data.n_eval)


def test_eval_rows_are_one_per_model_and_eval_problem(local_run):
    cfg, out = local_run
    rows = read(str(_artifact(Path(out["run_dir"]), "evaluate", "rows")), EvalRow)
    assert len(rows) == 3 * cfg.data.n_eval
    assert {r.model for r in rows} == {"base", "stage1", "trained"}
    for name, summary in out["results"].items():
        mine = [r for r in rows if r.model == name]
        assert summary["accuracy_t1"] == pytest.approx(sum(r.correct_t1 for r in mine) / len(mine))
        assert summary["accuracy_t2"] == pytest.approx(sum(r.correct_t2 for r in mine) / len(mine))


def test_sampling_study_ran_for_both_models(local_run):
    cfg, out = local_run
    run = Path(out["run_dir"])
    done = json.loads(_artifact(run, "sampling-study", "executor_output.json").read_text())
    logged = done["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert set(logged) == {f"{m}_{k}" for m in ("base", "trained")
                           for k in ("majority_k_t1", "majority_half_k_t2")}
    assert all(0 <= v <= 1 for v in logged.values())
    for name in ("base", "trained"):
        verdicts = read(str(_artifact(run, "sampling-study", "study") / name / "verdicts.jsonl"), Verdict)
        assert len(verdicts) == 2 * 2 * cfg.data.n_eval          # k episodes x 2 turns
    assert "| trained |" in _artifact(run, "sampling-study", "report").read_text()


def test_evaluate_wrote_html_markdown_and_details(local_run):
    import re

    cfg, out = local_run
    run = Path(out["run_dir"])
    page = _artifact(run, "evaluate", "html").read_text()
    # summary, per task, per difficulty, and attempt 2 given attempt 1 (selfcorrect.rates)
    assert page.count("<table") == 4 and "Accuracy@t2" in page and "P(right t2 | wrong t1)" in page
    # accuracy by turn, i->c / c->i, edit histogram, and both stages' training curves
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 5
    assert "Training curve of stage II" in page
    md = _artifact(run, "evaluate", "report").read_text()
    assert "| trained |" in md and "per difficulty" in md
    details = json.loads(_artifact(run, "evaluate", "details").read_text())
    for name in ("base", "stage1", "trained"):
        assert set(details[name]["per_task"]) == {"math"}
        assert len(details[name]["edit_ratios"]) == cfg.data.n_eval
        s = details[name]["summary"]
        assert s["accuracy_t2_ci_low"] <= s["accuracy_t2"] <= s["accuracy_t2_ci_high"]
        # the conditional rates condition on every eval episode, split by attempt 1's verdict
        assert s["fix_rate_n"] + s["break_rate_n"] == cfg.data.n_eval
        assert "fix_rate" in next(iter(details[name]["per_difficulty"].values()))


def test_gate_open_promotes_model_with_manifest(local_run):
    from selfcorrect import __version__, promote

    cfg, out = local_run
    run = Path(out["run_dir"])
    assert "**promoted**" in _artifact(run, "decide-promotion", "decision").read_text()
    current = promote.read_current(str(Path(cfg.output_dir, "registry")))
    assert current is not None and current["pipeline_version"] == __version__
    trained = _artifact(run, "train-stage2", "model")
    assert current["config"] == json.loads((trained / "resolved_config.json").read_text())
    assert current["config"]["train"] == cfg.to_dict()["train"] and current["run_id"]
    assert current["metrics"] == out["results"]["trained"]
    assert Path(current["data"]["problems"]).is_file()
    assert (Path(current["uri"]) / "model.safetensors").is_file()
    kept = read(str(Path(current["uri"]) / "eval_rows.jsonl"), EvalRow)
    assert len(kept) == 3 * cfg.data.n_eval and current["data"]["eval_rows"]
    assert json.loads((Path(current["uri"]) / "manifest.json").read_text()) == current
    reasons = current["decision"]["reasons"]       # from the decision's metadata, not its Markdown
    assert reasons and all(f"- {r}" in _artifact(run, "decide-promotion", "decision").read_text()
                           for r in reasons)


def test_gate_closed_skips_promotion(rejected_run):
    from selfcorrect import promote

    cfg, run = rejected_run
    decision = _artifact(run, "decide-promotion", "decision").read_text()
    assert "**not promoted**" in decision
    assert "FAIL: Accuracy@t2" in decision and "vs promoted" in decision
    assert not list(run.glob("promote-model*"))
    registry = Path(cfg.output_dir, "registry")
    assert len(list((registry / "models").iterdir())) == 1     # still only the first run's
    assert promote.read_current(str(registry))["id"] in decision   # the one it compared with
