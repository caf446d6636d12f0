"""The pipeline's gate and difficulty-filter components, called as plain functions."""
import json
from types import SimpleNamespace

import pytest

from selfcorrect import config, validate
from selfcorrect.components import filter_problems, validate_data
from selfcorrect.records import Attempt, Problem, Verdict, read, write_jsonl


def _art(path):
    return SimpleNamespace(path=str(path), metadata={})


def test_gate_config_defaults_equal_the_suites():
    suite = {e["meta"]["threshold"]: 1 - e["kwargs"]["mostly"]
             for e in validate.load_suite("attempts")["expectations"] if "threshold" in e.get("meta", {})}
    suite |= {e["meta"]["limit"]: e["kwargs"]["max_value"]
              for e in validate.load_suite("train_steps")["expectations"] if "limit" in e.get("meta", {})}
    gates = config.GateConfig()
    assert gates.thresholds() == pytest.approx(suite) and gates.quarantine is False
    with pytest.raises(config.ConfigError, match="gates.max_empty_share: must be between 0 and 1"):
        config.load("tiny", overrides=["gates.max_empty_share=1.5"])


@pytest.fixture
def data(tmp_path):
    problems = [Problem("p1", "math", "1+1?", answer="2", split="eval"),
                Problem("p2", "math", "2+2?", answer="4", split="train"),
                Problem("p3", "math", "3+3?", answer="6", split="train")]
    attempts = [Attempt("p1", 0, 1, "2", "m"), Attempt("p1", 0, 2, "2", "m"),
                Attempt("p1", 1, 1, "3", "m"), Attempt("p1", 1, 3, "2", "m")]   # turn 3: bad row
    write_jsonl(str(tmp_path / "p.jsonl"), problems)
    write_jsonl(str(tmp_path / "a.jsonl"), attempts)
    return tmp_path


def test_validate_data_copies_without_quarantine_and_quarantines_when_configured(data):
    run = lambda cfg, name: validate_data.python_func(
        kind="problems", data=_art(data / "p.jsonl"), report=_art(data / f"{name}.md"),
        data_docs=_art(data / f"{name}.html"), clean=_art(data / f"{name}.clean"), quarantined=_art(data / f"{name}.q"), **cfg)
    run({}, "plain")
    assert (data / "plain.clean").read_bytes() == (data / "p.jsonl").read_bytes()
    assert (data / "plain.q").read_text() == ""
    clean, q = _art(data / "c.jsonl"), _art(data / "q.jsonl")
    validate_data.python_func(kind="attempts", data=_art(data / "a.jsonl"),
                              report=_art(data / "r.md"), data_docs=_art(data / "r.html"),
                              clean=clean, quarantined=q,
                              problems=_art(data / "p.jsonl"), quarantine=True)
    assert [a.turn for a in read(clean.path, Attempt)] == [1, 2, 1]
    assert len((data / "q.jsonl").read_text().splitlines()) == 1
    assert clean.metadata["rows"] == 3 and q.metadata["rows"] == 1
    with pytest.raises(validate.GateFailed):       # the same data without quarantine fails
        validate_data.python_func(kind="attempts", data=_art(data / "a.jsonl"),
                                  report=_art(data / "r2.md"), data_docs=_art(data / "r2.html"),
                                  clean=_art(data / "c2"),
                                  quarantined=_art(data / "q2"))
    with pytest.raises(config.ConfigError, match="gates.max_empty_share: must be between 0 and 1"):
        run({"max_empty_share": 1.5}, "bad")          # the config's checks, on the parameters


def test_filter_problems_is_a_copy_unless_configured(data):
    write_jsonl(str(data / "v.jsonl"), [Verdict("p2", 0, 1, True, 1.0), Verdict("p3", 0, 1, False, 0.0)])
    for flags, kept in (({}, ["p1", "p2", "p3"]),
                        ({"drop_always_solved": True}, ["p1", "p3"]),
                        ({"drop_always_solved": True, "drop_never_solved": True}, ["p1"])):
        out = _art(data / "f.jsonl")
        filter_problems.python_func(problems=_art(data / "p.jsonl"),
                                    verdicts=_art(data / "v.jsonl"), filtered=out, **flags)
        assert [p.id for p in read(out.path, Problem)] == kept
        assert out.metadata["kept"] == len(kept)


def _gated(kind: str, data_uri: str, problems_uri: str, quarantine: bool, report_uri: str,
           root):
    """One gate in a real kfp.local run (raising when a task fails); returns the run's folder."""
    from kfp import dsl, local
    from kfp.dsl import Dataset

    @dsl.pipeline(name="gate-in-kfp-local")
    def one_gate(quarantine: bool, report_uri: str):
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        probs = dsl.importer(artifact_uri=problems_uri, artifact_class=Dataset, reimport=False)
        validate_data(kind=kind, data=data.output, problems=probs.output, quarantine=quarantine,
                      report_uri=report_uri, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                      task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    try:
        one_gate(quarantine=quarantine, report_uri=report_uri)
    finally:
        (run,) = root.glob("gate-in-kfp-local-*")
    return run


@pytest.mark.local
def test_quarantine_and_failing_gate_through_kfp_local(data):
    """quarantine (gates.quarantine) moves the bad row out and the run goes on; without it the
    same data fails the task and the run, and the report names the failing check and row."""
    run = _gated("attempts", str(data / "a.jsonl"), str(data / "p.jsonl"), True, "", data / "q")
    assert [a.turn for a in read(str(run / "validate-data" / "clean"), Attempt)] == [1, 2, 1]
    (moved,) = [json.loads(line) for line in (run / "validate-data" / "quarantined").read_text().splitlines()]
    assert moved["row"] == 4 and moved["record"]["turn"] == 3 and moved["failed"]
    assert "Quarantined 1 rows" in (run / "validate-data" / "report").read_text()

    keep = data / "gate-reports"
    with pytest.raises(RuntimeError, match="finished with status .*FAILURE.*validate-data"):
        _gated("attempts", str(data / "a.jsonl"), str(data / "p.jsonl"), False, str(keep),
               data / "f")
    (run,) = (data / "f").glob("gate-in-kfp-local-*")
    report = (run / "validate-data" / "report").read_text()
    assert "FAILED" in report and "expect_column_values_to_be_in_set" in report and "row 4:" in report
    assert "<html" in (run / "validate-data" / "data_docs").read_text()
    assert not (run / "validate-data" / "clean").exists()     # nothing passed on
    # the copy that survives on a cluster: <report_uri>/<run id>/<task name>/
    (copy,) = keep.glob("*/validate-data/report.md")
    assert copy.read_text() == report and (copy.parent / "data_docs.html").is_file()
