"""Data gates: real Great Expectations runs over small JSONL files (no mocks).

GX takes seconds to import and ~0.5 s a run on 2 cores, so the valid datasets are
validated once per module and each violation costs exactly one run.
"""
import dataclasses
import json
import subprocess
import sys
from collections import Counter

import jsonschema
import pytest

from selfcorrect import contract, records
from selfcorrect import validate as v
from selfcorrect.records import Attempt, EvalRow, Problem, TrainStep, Verdict

UNIQUE = "expect_column_values_to_be_unique"
COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
MATCH = "expect_column_values_to_match_regex"
NOT_MATCH = "expect_column_values_to_not_match_regex"


def valid_rows() -> dict[str, list[dict]]:
    problems = [
        Problem("p1", "math", "What is 1 + 1?", answer="2", source="arithmetic"),
        Problem("p2", "math", "What is 2 * 3?", answer="6", source="arithmetic", split="eval"),
        Problem("p3", "code", "Write f(x) returning x + 1.", test="def check(c):\n    assert c(1) == 2\n",
                entry_point="f", source="humaneval"),
    ]
    keys = [(p.id, s, t) for p in problems for s in (0, 1) for t in (1, 2)]   # 12 rows
    attempts = [Attempt(pid, s, t, f"answer {pid}/{s}/{t}", "tiny@0.1.0", truncated=(s == 1)) for pid, s, t in keys]
    verdicts = [Verdict(pid, s, t, correct=(t == 2), reward=float(t == 2), reason="" if t == 2 else "wrong answer",
                        verifier="math" if pid != "p3" else "code") for pid, s, t in keys]
    eval_rows = [EvalRow(m, p.id, s, p.task, "all", correct_t1=False, correct_t2=(m == "trained"),
                         edit_ratio=0.0 if s == 0 else 0.25, same_answer=(s == 0))
                 for m in ("base", "trained") for p in problems for s in (0, 1)]       # 12 rows
    train_steps = [TrainStep(stage, step, 0.25, 0.5, -0.1, 0.01 * step, 0.2, 0.0, 0.3)
                   for stage in (1, 2) for step in range(3)]                       # 6 rows
    return {k: [dataclasses.asdict(r) for r in rs]
            for k, rs in {"problems": problems, "attempts": attempts, "verdicts": verdicts,
                          "eval_rows": eval_rows, "train_steps": train_steps}.items()}


def write(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("valid")
    return {kind: write(d / f"{kind}.jsonl", rows) for kind, rows in valid_rows().items()}


@pytest.fixture(scope="module")
def valid_results(files):
    return {kind: v.validate(kind, uri, problems_uri=None if kind == "problems" else files["problems"])
            for kind, uri in files.items()}


# ---- valid data -------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(v.KINDS))
def test_valid_datasets_pass(valid_results, kind):
    result = valid_results[kind]
    assert result.success, result.markdown()
    assert (result.kind, result.rows, result.failures, result.skipped) == (kind, len(valid_rows()[kind]), [], [])
    cross = len(v.load_suite(kind)["meta"]["cross_checks"])
    assert result.checks == len(v.load_suite(kind)["expectations"]) + cross
    assert result.markdown().startswith(f"### Data gate `{kind}`: passed")
    assert "<html" in result.html and "Cross-dataset checks (all passed)" in result.html


def test_gx_stays_quiet_and_is_imported_lazily(files, capfd):
    v.validate("problems", files["problems"])
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err and "it/s" not in out + err   # GX's tqdm bars are off
    code = ("import sys, selfcorrect.validate; "
            "sys.exit(sorted({'great_expectations', 'pandas'} & set(sys.modules)) or 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_cross_check_is_skipped_visibly_without_a_problems_file(files):
    result = v.validate("attempts", files["attempts"])
    assert result.success and result.skipped == ["problem_id_known: no problems file given"]
    assert "skipped problem_id_known" in result.markdown()


# ---- each kind of violation fails, named, with the offending rows --------------------

def _dup_id(rows): rows[1]["id"] = "p1"
def _bad_task(rows): rows[1]["task"] = "physics"
def _math_without_answer(rows): rows[0]["answer"] = "  "
def _code_without_entry_point(rows): rows[2]["entry_point"] = ""
def _turn3(rows): rows[1]["turn"] = 3                      # (p1, 0, 2) -> turn 3
def _dup_key(rows): rows.append(dict(rows[0]))             # (p1, 0, 1) twice
def _no_turn1(rows): del rows[2]                           # drop (p1, 1, 1); (p1, 1, 2) is now row 3
def _unknown_problem(rows):
    for r in rows[:2]:                                     # both turns of (p1, 0)
        r["problem_id"] = "p404"
def _unknown_for_all_models(rows):
    for r in rows:
        if r["problem_id"] == "p1":
            r["problem_id"] = "p404"
def _empty(n):
    def edit(rows):
        for r, text in zip(rows[1::2], ["", " \n", "\t"][:n]):
            r["completion"] = text
    edit.__name__ = f"_empty{n}"
    return edit
def _set(i, **values):
    def edit(rows): rows[i].update(values)
    edit.__name__ = f"_row{i + 1}_" + "_".join(f"{k}{v}" for k, v in values.items())
    return edit
def _ratio(i, value, same=True):
    def edit(rows): rows[i].update(edit_ratio=value, same_answer=same)
    edit.__name__ = f"_edit_ratio{value}_same{same}_row{i + 1}"
    return edit
def _reward(i, value):
    def edit(rows): rows[i]["reward"] = value
    edit.__name__ = f"_reward{value}_row{i + 1}"
    return edit


VIOLATIONS = [
    ("problems", _dup_id, {(UNIQUE, "id"): 1}, [1, 2]),
    ("problems", _bad_task, {(IN_SET, "task"): 1}, [2]),
    ("problems", _math_without_answer, {(MATCH, "answer"): 1}, [1]),
    ("problems", _code_without_entry_point, {(MATCH, "entry_point"): 1}, [3]),
    ("attempts", _turn3, {(IN_SET, "turn"): 1}, [2]),
    ("attempts", _dup_key, {(COMPOUND_UNIQUE, "problem_id, sample, turn"): 1}, [1, 13]),
    ("attempts", _no_turn1, {("turn2_has_turn1", "turn"): 1}, [3]),
    ("attempts", _unknown_problem, {("problem_id_known", "problem_id"): 1}, [1, 2]),
    ("attempts", _empty(2), {(NOT_MATCH, "completion"): 1}, [2, 4]),     # 2 of 12 > 10%
    ("attempts", _empty(1), {}, []),                                      # 1 of 12 is within it
    ("verdicts", _reward(1, 1.5), {(BETWEEN, "reward"): 2}, [2]),         # out of [0, 1], and not 1
    ("verdicts", _reward(0, 1.0), {(BETWEEN, "reward"): 1}, [1]),         # incorrect but rewarded
    ("verdicts", _unknown_problem, {("problem_id_known", "problem_id"): 1}, [1, 2]),
    ("verdicts", _no_turn1, {("turn2_has_turn1", "turn"): 1}, [3]),
    ("eval_rows", _dup_key, {(COMPOUND_UNIQUE, "model, problem_id, sample"): 1}, [1, 13]),
    ("eval_rows", _unknown_for_all_models, {("problem_id_known", "problem_id"): 1}, [1, 2, 7]),
    ("eval_rows", _no_turn1, {("models_cover_same_episodes", "model"): 1}, [8]),  # trained p2/0 alone
    ("eval_rows", _ratio(3, 1.5), {(BETWEEN, "edit_ratio"): 1}, [4]),
    ("eval_rows", _ratio(0, 0.0, same=False), {(IN_SET, "same_answer"): 1}, [1]),
    ("train_steps", _set(1, kl_t1=1.5), {(BETWEEN, "kl_t1"): 1}, [2]),      # Stage I drifted
    ("train_steps", _set(4, kl_t1=1.5), {}, []),                           # Stage II may move
    ("train_steps", _set(2, reward_t2=1.5), {(BETWEEN, "reward_t2"): 1}, [3]),
    ("train_steps", _set(5, step=4), {("steps_complete", "step"): 1}, [6]),    # 0, 1, 4
    ("train_steps", _dup_key, {(COMPOUND_UNIQUE, "stage, step"): 1}, [1, 7]),  # stage 1: 0, 1, 2, 0
]


@pytest.mark.parametrize("kind, edit, expected, example_rows", VIOLATIONS,
                         ids=[f"{kind}{edit.__name__}" for kind, edit, *_ in VIOLATIONS])
def test_violation_is_named(tmp_path, files, kind, edit, expected, example_rows):
    rows = valid_rows()[kind]
    edit(rows)
    problems = None if kind == "problems" else files["problems"]
    result = v.validate(kind, write(tmp_path / f"{kind}.jsonl", rows), problems_uri=problems)
    assert Counter((f.check, f.column) for f in result.failures) == Counter(expected), result.markdown()
    assert result.success == (not expected)
    for f in result.failures:
        assert [e["row"] for e in f.examples] == example_rows
        assert f.check in result.markdown()
    if expected:
        row = result.failures[0].examples[0]
        assert f"row {row['row']}: " in result.markdown() and "FAILED" in result.markdown()


def test_stage1_kl_limit_comes_from_thresholds(tmp_path):
    rows = valid_rows()["train_steps"]
    _set(2, kl_t1=0.4)(rows)
    uri = write(tmp_path / "steps.jsonl", rows)
    assert v.validate("train_steps", uri).success                      # default limit 1.0
    (failure,) = v.validate("train_steps", uri, thresholds={"max_stage1_kl_t1": 0.3}).failures
    assert failure.column == "kl_t1" and [e["row"] for e in failure.examples] == [3]
    with pytest.raises(ValueError, match="max_stage1_kl_t1: a finite number"):
        v.suite_with("train_steps", {"max_stage1_kl_t1": float("nan")})


def test_testbed_preset_stage1_gate_trips_on_a_drifting_attempt1(tmp_path):
    """The testbed preset's Stage I limit (results/repro-dev/stage1_anchor.md): a Stage I step
    at 0.0019 nats/token (beta2 = 1: Accuracy@t1 moved 5.2 points on dev) fails the gate; the
    anchored runs' 0.0009 (beta2 = 10, within 2 points) passes; the default lets both through."""
    from selfcorrect import config

    limits = config.load("testbed").gates.thresholds()
    assert limits["max_stage1_kl_t1"] < config.GateConfig().max_stage1_kl_t1
    for kl, passes in ((0.0009, True), (0.0019, False)):
        rows = valid_rows()["train_steps"]
        for i in range(3):                      # Stage I's steps, rising to kl at its last
            _set(i, kl_t1=kl * i / 2)(rows)
        uri = write(tmp_path / f"steps-{kl}.jsonl", rows)
        assert v.validate("train_steps", uri, thresholds=limits).success is passes
        assert v.validate("train_steps", uri).success


def test_threshold_reports_share_and_allowance(tmp_path):
    rows = valid_rows()["attempts"]
    _empty(3)(rows)
    (failure,) = v.validate("attempts", write(tmp_path / "a.jsonl", rows)).failures
    assert "3 of 12 rows fail (25.0%; at most 10% allowed)" in failure.detail
    assert failure.examples[1]["completion"] == " \n"


# ---- the JSON Schemas, the suites and records.py agree --------------------------------

JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


@pytest.mark.parametrize("kind", list(v.KINDS))
def test_schema_matches_record_fields(kind):
    schema, cls = contract.load(contract.RECORDS[kind]), v.KINDS[kind]
    fields = dataclasses.fields(cls)
    assert schema["title"] == cls.__name__ and schema["additionalProperties"] is False
    assert list(schema["properties"]) == [f.name for f in fields]
    assert schema["required"] == [f.name for f in fields if f.default is dataclasses.MISSING]
    for f in fields:
        prop = schema["properties"][f.name]
        assert prop["type"] == JSON_TYPES[f.type], f.name
        if f.default is not dataclasses.MISSING:
            assert prop["default"] == f.default, f.name
    suite = v.load_suite(kind)
    (columns,) = [e["kwargs"]["column_set"] for e in suite["expectations"]
                  if e["type"] == "expect_table_columns_to_match_set"]
    assert columns == [f.name for f in fields] and suite["meta"]["record"] == cls.__name__


@pytest.mark.parametrize("kind", list(v.KINDS))
def test_schema_enums_are_the_suite_value_sets(kind):
    props = contract.load(contract.RECORDS[kind])["properties"]
    sets = {e["kwargs"]["column"]: e["kwargs"]["value_set"]
            for e in v.load_suite(kind)["expectations"]
            if e["type"] == IN_SET and "row_condition" not in e["kwargs"]}
    assert sets and sets == {name: p["enum"] for name, p in props.items() if "enum" in p}


@pytest.mark.parametrize("kind", list(v.KINDS))
def test_schema_accepts_and_rejects_what_records_does(kind):
    validator = jsonschema.Draft202012Validator(contract.load(contract.RECORDS[kind]))
    cls = v.KINDS[kind]
    rows = valid_rows()[kind]
    for row in rows:
        validator.validate(row)
    first = next(f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
    int_field = next((f.name for f in dataclasses.fields(cls) if f.type == "int"), None)
    bad = [{k: x for k, x in rows[0].items() if k != first.name},   # a required field missing
           {**rows[0], "extra": 1},                                 # an unknown field
           {**rows[0], first.name: 7 if first.type == "str" else "7"}]   # a wrong type
    if int_field:
        bad.append({**rows[0], int_field: True})                    # a bool is not an int
    for row in bad:
        assert not validator.is_valid(row), row
        with pytest.raises(records.RecordError):
            records.from_dict(cls, row)


ROW_RULES = {IN_SET, BETWEEN, MATCH}     # what one row can break; the JSON Schema states these too


@pytest.mark.parametrize("kind, edit, expected, example_rows",
                         [c for c in VIOLATIONS if all(check in ROW_RULES for check, _ in c[2])],
                         ids=[f"{kind}{edit.__name__}" for kind, edit, expected, _ in VIOLATIONS
                              if all(check in ROW_RULES for check, _ in expected)])
def test_schema_rejects_the_rows_the_gate_does(kind, edit, expected, example_rows):
    """The suite is generated from the schema: a JSON Schema validator rejects exactly the rows
    that test_violation_is_named sees the GX gate reject (no GX run here)."""
    validator = jsonschema.Draft202012Validator(contract.load(contract.RECORDS[kind]))
    rows = valid_rows()[kind]
    edit(rows)
    assert [i for i, row in enumerate(rows, start=1) if not validator.is_valid(row)] == example_rows


# ---- unusable input: a clear error naming file and row; CLI exit 2 ---------------------

@pytest.mark.parametrize("content, error, words", [
    (None, FileNotFoundError, "no such file"),
    (b"", records.RecordError, "empty"),
    (b"\n  \n", records.RecordError, "empty"),
    (b'{"id": "p1", "task": "math", "prompt": "x"}\n{not json\n', records.RecordError, "row 2"),
    (b'{"id": "p1", "task": "math", "prompt": "x"}\n{"id": "\xff"}\n', records.RecordError, "row 2: field '*': not UTF-8"),
    (b'{"id": "p1", "task": "math", "prompt": 3}\n', records.RecordError, "row 1: field 'prompt'"),
])
def test_unusable_input_raises_naming_file_and_row(tmp_path, capsys, content, error, words):
    path = tmp_path / "problems.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=str(path)) as info:
        v.validate("problems", str(path))
    assert words in str(info.value)
    assert v.main(["--kind", "problems", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_unusable_problems_file_is_named(tmp_path, files):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=missing):
        v.validate("attempts", files["attempts"], problems_uri=missing)
    with pytest.raises(records.RecordError, match="unknown field"):   # attempts passed as problems
        v.validate("verdicts", files["verdicts"], problems_uri=files["attempts"])


def test_unknown_kind_and_misused_problems_file(files):
    with pytest.raises(ValueError, match="kinds are problems, attempts, verdicts"):
        v.validate("rewards", files["problems"])
    with pytest.raises(ValueError, match="problems_uri"):
        v.validate("problems", files["problems"], problems_uri=files["problems"])
    with pytest.raises(SystemExit) as exit_:
        v.main(["--kind", "problems", files["problems"], "--problems", files["problems"]])
    assert exit_.value.code == 2


# ---- CLI and gate -----------------------------------------------------------------------

def test_cli_exit_codes(tmp_path, files, capsys):
    assert v.main(["--kind", "verdicts", files["verdicts"], "--problems", files["problems"]]) == 0
    assert "`verdicts`: passed" in capsys.readouterr().out
    rows = valid_rows()["verdicts"]
    _reward(1, 1.5)(rows)
    bad = write(tmp_path / "verdicts.jsonl", rows)
    report = tmp_path / "report.md"
    assert v.main(["--kind", "verdicts", bad, "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and BETWEEN in out and "reward=1.5" in out
    assert report.read_text() == out
    assert v.main(["--kind", "verdicts", str(tmp_path / "missing.jsonl")]) == 2


def test_gate_writes_report_and_raises(tmp_path, files):
    passed = tmp_path / "ok" / "report.md"
    assert v.gate("attempts", files["attempts"], str(passed), problems_uri=files["problems"]).success
    assert passed.read_text().startswith("### Data gate `attempts`: passed")

    rows = valid_rows()["attempts"]
    _turn3(rows)
    report, page = tmp_path / "bad" / "report.md", tmp_path / "bad" / "report.html"
    with pytest.raises(v.GateFailed) as info:
        v.gate("attempts", write(tmp_path / "a.jsonl", rows), str(report), html_path=str(page))
    assert not info.value.result.success
    assert str(info.value) == report.read_text() and IN_SET in str(info.value) and "turn=3" in str(info.value)
    assert page.read_text().startswith("<!DOCTYPE html>")   # GX Data Docs, rendered by GX
    assert "1 unexpected values found. ≈8.333% of 12 total rows." in page.read_text()

    unusable = tmp_path / "unusable" / "report.md"
    with pytest.raises(FileNotFoundError):
        v.gate("attempts", str(tmp_path / "missing.jsonl"), str(unusable))
    assert "UNUSABLE INPUT" in unusable.read_text() and "missing.jsonl" in unusable.read_text()


# ---- configurable shares and quarantine ------------------------------------------------

NOT_IN_SET = "expect_column_values_to_not_be_in_set"


def test_truncated_share_is_configurable(tmp_path, files):
    # the valid attempts have 6 of 12 truncated: reported by default, enforced when set
    (failure,) = v.validate("attempts", files["attempts"], thresholds={"max_truncated_share": 0.25}).failures
    assert (failure.check, failure.column) == (NOT_IN_SET, "truncated")
    assert "6 of 12 rows fail (50.0%; at most 25% allowed)" in failure.detail
    assert [e["row"] for e in failure.examples] == [3, 4, 7] and failure.rows == []   # a share: not quarantinable
    rows = valid_rows()["attempts"]
    _empty(3)(rows)
    assert v.validate("attempts", write(tmp_path / "a.jsonl", rows),
                      thresholds={"max_truncated_share": 0.5, "max_empty_share": 0.25}).success


@pytest.mark.parametrize("thresholds, words", [({"max_typo_share": 0.1}, "unknown threshold"),
                                               ({"max_empty_share": 1.5}, "between 0 and 1"),
                                               ({"max_empty_share": True}, "a finite number")])
def test_bad_thresholds_are_named(thresholds, words):
    with pytest.raises(ValueError, match=words):
        v.suite_with("attempts", thresholds)


def test_quarantine_moves_bad_rows_with_counts_and_passes_the_rest(tmp_path, files):
    rows = valid_rows()["attempts"]
    rows[2]["sample"] = -1              # row 3 fails; its turn 2 (row 4) loses its partner
    rows[5]["turn"] = 3                 # row 6
    rows[8]["problem_id"] = "p404"      # row 9; and row 10 (p3, 0, 2) loses its partner
    src = write(tmp_path / "a.jsonl", rows)
    q, clean, report = tmp_path / "q.jsonl", tmp_path / "clean.jsonl", tmp_path / "gate.md"
    result = v.gate("attempts", src, str(report), problems_uri=files["problems"],
                    quarantine_uri=str(q), clean_uri=str(clean))
    moved = [json.loads(line) for line in q.read_text().splitlines()]
    assert [m["row"] for m in moved] == [3, 4, 6, 9, 10]
    assert moved[0]["record"] == rows[2] and moved[0]["failed"] == [f"{BETWEEN} (sample)"]
    assert result.quarantined == {"rows": 5, f"{BETWEEN} (sample)": 1, "turn2_has_turn1 (turn)": 2,
                                  f"{IN_SET} (turn)": 1, "problem_id_known (problem_id)": 1}
    assert "Quarantined 5 rows" in report.read_text() and "turn2_has_turn1 (turn): 2" in report.read_text()
    assert [r for i, r in enumerate(rows, 1) if i not in (3, 4, 6, 9, 10)] == \
        [dataclasses.asdict(a) for a in records.read(str(clean), Attempt)]
    assert v.validate("attempts", str(clean), problems_uri=files["problems"]).success


def test_quarantine_does_not_hide_a_systemic_failure(tmp_path, capsys):
    rows = valid_rows()["attempts"]
    _empty(3)(rows)                     # 25% empty: a share over its threshold, not bad rows
    src = write(tmp_path / "a.jsonl", rows)
    q, clean = tmp_path / "q.jsonl", tmp_path / "clean.jsonl"
    rc = v.main(["--kind", "attempts", src, "--quarantine", str(q), "--clean", str(clean)])
    assert rc == 1 and NOT_MATCH in capsys.readouterr().out
    assert not q.exists() and not clean.exists()
    rows = valid_rows()["attempts"]
    for r in rows:
        r["turn"] = 3                   # every row bad: nothing left to pass on
    rc = v.main(["--kind", "attempts", write(tmp_path / "b.jsonl", rows), "--quarantine", str(q), "--clean", str(clean)])
    assert rc == 1 and "all 12 rows failed row checks" in capsys.readouterr().out and not clean.exists()


def test_cli_thresholds_and_quarantine(tmp_path, files, capsys):
    assert v.main(["--kind", "attempts", files["attempts"], "--max-truncated-share", "0.1"]) == 1
    assert "at most 10% allowed" in capsys.readouterr().out
    # the same threshold from the settings (the gates section), as the pipeline's gate takes it
    assert v.main(["--kind", "attempts", files["attempts"], "--set", "gates.max_truncated_share=0.1"]) == 1
    assert "at most 10% allowed" in capsys.readouterr().out
    assert v.main(["--kind", "attempts", files["attempts"], "--set", "gates.max_empty_shar=1"]) == 2
    assert "did you mean gates.max_empty_share?" in capsys.readouterr().err
    assert v.main(["--kind", "attempts", files["attempts"], "--max-empty-share", "2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    rows = valid_rows()["problems"]
    rows.append(dict(rows[0], id="p1"))
    q, clean = tmp_path / "q.jsonl", tmp_path / "clean.jsonl"
    rc = v.main(["--kind", "problems", write(tmp_path / "p.jsonl", rows), "--quarantine", str(q), "--clean", str(clean)])
    assert rc == 0 and "Quarantined 2 rows" in capsys.readouterr().out   # both copies of the duplicate id
    assert [r.id for r in records.read(str(clean), Problem)] == ["p2", "p3"]


# ---- the longest prompt (data.max_prompt_chars) is a gate, not only a prepare check ------


LENGTHS = "expect_column_value_lengths_to_be_between"


def test_problems_gate_refuses_a_prompt_over_the_default_limit(tmp_path):
    """A 4-million-character prompt handed straight to a gate (not through prepare) fails it."""
    from selfcorrect.config import DataConfig

    rows = valid_rows()["problems"]
    rows[1]["prompt"] = "What is 1 + 1? " * 266_667                 # 4,000,005 characters
    result = v.validate("problems", write(tmp_path / "p.jsonl", rows))
    (failure,) = result.failures
    assert (failure.check, failure.column) == (LENGTHS, "prompt") and failure.examples[0]["row"] == 2
    assert "at most data.max_prompt_chars characters" in failure.detail
    assert "(max_prompt_chars = 8000): 1 of 3 rows fail" in failure.detail
    assert "row 2: id='p2' prompt='What is 1 + 1? What is" in result.markdown()
    assert len(result.markdown()) < 2000                           # the prompt is shown cut short
    default = [e for e in v.load_suite("problems")["expectations"] if e.get("meta", {}).get("limit")]
    assert [e["kwargs"]["max_value"] for e in default] == [DataConfig().max_prompt_chars]


def test_prompt_limit_comes_from_thresholds_and_the_cli(tmp_path, capsys):
    rows = valid_rows()["problems"]
    rows[0]["prompt"] = "x" * 201
    rows[2]["prompt"] = "y" * 200
    uri = write(tmp_path / "p.jsonl", rows)
    assert v.validate("problems", uri).success                       # within the default 8000
    (failure,) = v.validate("problems", uri, thresholds={"max_prompt_chars": 200}).failures
    assert [e["row"] for e in failure.examples] == [1] and "(max_prompt_chars = 200)" in failure.detail
    assert v.main(["--kind", "problems", uri, "--max-prompt-chars", "200"]) == 1
    assert "row 1: id='p1' prompt='xxxx" in capsys.readouterr().out
    assert v.main(["--kind", "problems", uri, "--max-prompt-chars", "201"]) == 0
    assert v.main(["--kind", "problems", uri, "--max-prompt-chars", "0"]) == 2
    assert "threshold max_prompt_chars: a whole number >= 1, got 0" in capsys.readouterr().err
    q, clean = tmp_path / "q.jsonl", tmp_path / "clean.jsonl"      # an over-long row can be quarantined
    assert v.main(["--kind", "problems", uri, "--max-prompt-chars", "200", "--quarantine", str(q),
                   "--clean", str(clean)]) == 0
    assert [r.id for r in records.read(str(clean), Problem)] == ["p2", "p3"]


@pytest.mark.parametrize("value", [0, 2.5, True, float("inf")])
def test_bad_prompt_limits_are_named(value):
    with pytest.raises(ValueError, match="threshold max_prompt_chars: a"):
        v.suite_with("problems", {"max_prompt_chars": value})


def test_pipeline_gate_takes_the_configured_prompt_limit(tmp_path):
    """The validate_data component passes data.max_prompt_chars to the problems gate."""
    from types import SimpleNamespace

    from selfcorrect.components import validate_data

    rows = valid_rows()["problems"]
    rows[1]["prompt"] = "z" * 120
    uri = write(tmp_path / "p.jsonl", rows)
    art = lambda name: SimpleNamespace(path=str(tmp_path / name), metadata={})  # noqa: E731
    run = lambda cfg, name: validate_data.python_func(  # noqa: E731
        kind="problems", data=art("p.jsonl"), report=art(f"{name}.md"), data_docs=art(f"{name}.html"),
        clean=art(f"{name}.clean"), quarantined=art(f"{name}.q"), **cfg)
    run({}, "default")                                             # 120 <= 8000
    with pytest.raises(v.GateFailed, match="max_prompt_chars = 100"):
        run({"max_prompt_chars": 100}, "limited")
    assert "row 2: id='p2'" in (tmp_path / "limited.md").read_text()
