"""The whole DAG through kfp.local on the tiny preset: every step runs for real."""
import json
from pathlib import Path

import pytest

from selfcorrect import config
from selfcorrect.evaluate import METRICS
from selfcorrect.records import Attempt, Problem, Verdict, read_jsonl

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from selfcorrect.pipelines.local import run_local

    out = tmp_path_factory.mktemp("run")
    cfg = config.load("tiny", overrides=[f"output_dir={out}"])
    return cfg, run_local(cfg)


def _artifact(run_dir: Path, task: str, name: str) -> Path:
    hits = sorted(run_dir.glob(f"{task}/{name}"))
    assert hits, f"no artifact {task}/{name} under {run_dir}"
    return hits[0]


def test_results_hold_five_metrics_for_both_models(local_run):
    cfg, out = local_run
    assert set(out["results"]) == {"base", "trained"}
    for m in out["results"].values():
        for key in METRICS:
            assert -1.0 <= m[key] <= 1.0
        assert m["n"] == cfg.data.n_eval
        assert m["delta"] == pytest.approx(m["accuracy_t2"] - m["accuracy_t1"])


def test_every_step_left_well_formed_artifacts(local_run):
    cfg, out = local_run
    run = Path(out["run_dir"])
    problems = read_jsonl(str(_artifact(run, "prepare-problems", "problems")), Problem)
    assert len(problems) == cfg.data.n_train + cfg.data.n_eval
    for label in ("", "-2"):
        attempts = read_jsonl(str(_artifact(run, f"sample-attempts{label}", "attempts")), Attempt)
        verdicts = read_jsonl(str(_artifact(run, f"verify-attempts{label}", "verdicts")), Verdict)
        assert len(attempts) == len(verdicts) == 2 * cfg.data.n_eval
        assert {(a.problem_id, a.turn) for a in attempts} == {(v.problem_id, v.turn) for v in verdicts}
    for stage in ("train-stage1", "train-stage2"):
        model = _artifact(run, stage, "model")
        for f in ("config.json", "model.safetensors", "tokenizer.json", "resolved_config.json",
                  "metrics.json"):
            assert (model / f).is_file(), f"{stage}: {f} missing"
        saved = json.loads((model / "resolved_config.json").read_text())
        assert saved == cfg.to_dict()
    reports = sorted(run.glob("validate-data*/report"))
    assert len(reports) == 5 and all(r.read_text().strip() for r in reports)
    metrics = json.loads(_artifact(run, "evaluate", "executor_output.json").read_text())
    logged = metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {f"{m}_{k}" for m in ("base", "trained") for k in METRICS} <= set(logged)
