"""One contract per record: schemas/<record>.schema.json is the source; the record classes, the
readers' checks and the GX suites come from it, and the committed suites cannot go stale."""
import copy
import dataclasses
import json
import pickle
import shutil

import jsonschema
import pandas as pd
import pytest

from selfcorrect import contract, records
from selfcorrect import validate as v
from selfcorrect.records import RecordError, Verdict

BETWEEN = "expect_column_values_to_be_between"


@pytest.mark.parametrize("kind, record", list(contract.RECORDS.items()))
def test_committed_suites_are_the_generated_ones(kind, record):
    text = contract.folder().joinpath(f"{kind}.suite.json").read_text(encoding="utf-8")
    assert text == contract.render(contract.suite(kind, contract.load(record))), \
        f"schemas/{kind}.suite.json is stale: run `make schemas`"
    assert v.load_suite(kind) == json.loads(text)


def test_check_names_a_stale_suite_and_a_rewrite_fixes_it(tmp_path, capsys):
    shutil.copytree(contract.folder(), tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    assert contract.main(["--check", "--dir", str(tmp_path)]) == 0
    schema = json.loads((tmp_path / "verdict.schema.json").read_text())
    schema["properties"]["reward"]["maximum"] = 2
    (tmp_path / "verdict.schema.json").write_text(json.dumps(schema))
    assert contract.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale (run `make schemas`): verdicts.suite.json" in capsys.readouterr().err
    assert contract.main(["--dir", str(tmp_path)]) == 0
    assert contract.main(["--check", "--dir", str(tmp_path)]) == 0
    suite = json.loads((tmp_path / "verdicts.suite.json").read_text())
    assert {"column": "reward", "min_value": 0, "max_value": 2} in [e["kwargs"] for e in suite["expectations"]]


def test_a_field_added_once_is_checked_everywhere(tmp_path):
    """One new property in the schema: the record class, the reader, Parquet, the JSON Schema
    validator and the GX gate all take it, with nothing else edited."""
    schema = copy.deepcopy(contract.load("verdict"))
    schema["properties"]["latency_ms"] = {"type": "integer", "minimum": 0, "default": 0,
                                          "description": "how long the verifier took"}
    cls = records.record_type(schema)
    assert [f.name for f in dataclasses.fields(cls)][-1] == "latency_ms" and cls("p1", 0, 1, True, 1.0).latency_ms == 0
    row = {"problem_id": "p1", "sample": 0, "turn": 1, "correct": True, "reward": 1.0}

    with pytest.raises(RecordError, match=r"row 3: field 'latency_ms': expected int, got str \"slow\""):
        records.from_dict(cls, {**row, "latency_ms": "slow"}, "v.jsonl", 3)       # the reader
    with pytest.raises(RecordError, match="field 'latency_ms': unknown field for Verdict"):
        records.from_dict(Verdict, {**row, "latency_ms": 5})                     # not in the real one
    rows = [cls(**row, latency_ms=12), cls(**{**row, "sample": 1}, latency_ms=-1)]
    records.write(tmp_path / "v.parquet", rows)                                   # Parquet's schema
    assert records.read(tmp_path / "v.parquet", cls) == rows
    assert not jsonschema.Draft202012Validator(schema).is_valid({**row, "latency_ms": -1})

    suite = contract.suite("verdicts", schema)                                    # the GX gate
    assert "latency_ms" in suite["expectations"][0]["kwargs"]["column_set"]
    df = pd.DataFrame([dataclasses.asdict(r) for r in rows])
    result = v._check("verdicts", "v.parquet", df, None, suite)
    assert [(f.check, f.column, [e["row"] for e in f.examples]) for f in result.failures] == \
        [(BETWEEN, "latency_ms", [2])]


def test_records_are_plain_frozen_dataclasses_built_from_the_schemas():
    for kind, record in contract.RECORDS.items():
        schema, cls = contract.load(record), v.KINDS[kind]
        assert (cls.__name__, cls.__module__, cls.__doc__) == (schema["title"], "selfcorrect.records",
                                                               schema["description"])
        assert getattr(records, cls.__name__) is cls
    verdict = Verdict("p1", 0, 1, True, 1.0, verifier="math")
    assert pickle.loads(pickle.dumps(verdict)) == verdict            # Beam pickles records
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.reward = 0.0


@pytest.mark.parametrize("edit, words", [
    (lambda s: s["properties"]["problem_id"].update(minLength=1), "minLength: no GX expectation"),
    (lambda s: s["allOf"].append({"description": "x", "if": {"properties": {"turn": {"minimum": 2}}},
                                  "then": {"properties": {"reward": {"maximum": 1}}}}), "only one property's const"),
    (lambda s: s["allOf"].append({"properties": {"reward": {"maximum": 1}}}), "a rule is {description"),
    (lambda s: s["x-dataset"].update(key=["problem_id", "attempt"]), "Verdict: no such property: attempt"),
    (lambda s: s["allOf"].append({"description": "x", "properties": {"score": {"maximum": 1}}}),
     "Verdict: no such property: score"),
    (lambda s: s["properties"]["reward"].update({"x-limit": "max_reward"}) or
     s["properties"]["reward"].update(pattern="1"), "x-limit names the upper bound of one rule"),
])
def test_a_rule_no_gate_could_check_is_refused(edit, words):
    schema = copy.deepcopy(contract.load("verdict"))
    edit(schema)
    with pytest.raises(ValueError, match=words.replace("{", r"\{")):
        contract.suite("verdicts", schema)


def test_required_must_be_the_properties_without_a_default():
    schema = copy.deepcopy(contract.load("verdict"))
    schema["required"].remove("reward")
    with pytest.raises(ValueError, match="Verdict: required must list"):
        records.record_type(schema)


def test_a_record_class_that_drifts_from_its_schema_is_refused_at_import():
    @dataclasses.dataclass(frozen=True)
    class Verdict:
        """The verifier's decision on one attempt (a JSONL line or Parquet row)."""
        problem_id: str
        sample: int
        turn: int
        correct: bool
        reward: int              # the schema says number
        reason: str = ""
        verifier: str = ""

    with pytest.raises(ValueError, match=r"Verdict differs from schemas/verdict.schema.json: "
                                         r"schema \('reward', 'float'"):
        records.conforms(Verdict, "verdict")
    assert records.conforms(records.Verdict, "verdict") is records.Verdict
