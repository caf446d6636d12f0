"""Records on disk as JSONL or Parquet: the same records back, told apart by content, and
every bad Parquet input named by file, row and field like its JSONL twin."""
import dataclasses
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfcorrect import records, storage
from selfcorrect import validate as v
from selfcorrect.records import Attempt, EvalRow, Problem, RecordError, Verdict

ROWS = {
    Problem: [Problem("p1", "math", "What is 1 + 1?\u2028(line separator, é, 🙂)", answer="2", source="t"),
              Problem("p2", "code", "def f(x):", test="def check(c):\n    assert c(1) == 2\n",
                      entry_point="f", split="eval")],
    Attempt: [Attempt("p1", 0, 1, "it is 2", "tiny@0.1.0"),
              Attempt("p1", 2**62, 2, "", "tiny@0.1.0", truncated=True)],
    Verdict: [Verdict("p1", 0, 1, True, 1.0), Verdict("p1", 0, 2, False, 0.0, "wrong answer", "math")],
    EvalRow: [EvalRow("base", "p1", 0, "math", "all", False, True, 0.25, False),
              EvalRow("base", "p1", 1, "math", "all", True, True, 0.0, True)],
}
KINDS = list(ROWS)


def parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def rows_of(cls) -> list[dict]:
    return [dataclasses.asdict(r) for r in ROWS[cls]]


# ---- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_round_trip_jsonl_parquet_jsonl_local(tmp_path, cls):
    rows = ROWS[cls]
    assert records.write(tmp_path / "a.jsonl", rows) == 2
    assert (tmp_path / "a.jsonl").read_bytes()[:1] == b"{"
    back = records.read(tmp_path / "a.jsonl", cls)
    assert records.write(tmp_path / "b.parquet", back) == 2
    assert (tmp_path / "b.parquet").read_bytes()[:4] == b"PAR1"
    again = records.read(tmp_path / "b.parquet", cls)
    records.write(tmp_path / "c.jsonl", again)
    assert records.read(tmp_path / "c.jsonl", cls) == rows
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert records.read(tmp_path / "b.parquet", cls) == rows    # old callers read both


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_parquet_schema_is_explicit(tmp_path, cls):
    records.write(tmp_path / "a.parquet", ROWS[cls])
    schema = pq.read_schema(tmp_path / "a.parquet")
    want = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    assert [(f.name, f.type, f.nullable) for f in schema] == \
        [(f.name, want[f.type], False) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_round_trip_on_gcs(gs_prefix, cls):
    rows = ROWS[cls]
    records.write(f"{gs_prefix}/a.parquet", rows)
    records.write(f"{gs_prefix}/a.jsonl", records.read(f"{gs_prefix}/a.parquet", cls))
    records.write(f"{gs_prefix}/artifact", rows, format="parquet")
    assert records.read(f"{gs_prefix}/a.jsonl", cls) == rows
    assert records.read(f"{gs_prefix}/artifact", cls) == rows
    assert storage.read_bytes(f"{gs_prefix}/artifact")[:4] == b"PAR1"


def test_gcs_bad_parquet_row_is_named(gs_prefix):
    uri = f"{gs_prefix}/v.parquet"
    storage.write_bytes(uri, parquet(pa.Table.from_pylist([{**rows_of(Verdict)[0], "sample": "0"}])))
    with pytest.raises(RecordError, match=rf"{uri}: row 1: field 'sample': expected int, got str"):
        records.read(uri, Verdict)


def test_format_is_sniffed_from_content_not_name(tmp_path):
    # KFP artifact paths have no suffix; a wrong suffix does not fool the reader either
    for name, fmt in (("dataset", "parquet"), ("dataset2", "jsonl"), ("lies.jsonl", "parquet"),
                      ("lies.parquet", "jsonl")):
        records.write(tmp_path / name, ROWS[Problem], format=fmt)
        assert records.format_of((tmp_path / name).read_bytes()) == fmt
        assert records.read(tmp_path / name, Problem) == ROWS[Problem]
    with pytest.raises(ValueError, match="unknown record format 'csv'"):
        records.write(tmp_path / "x", ROWS[Problem], format="csv")


def test_empty_files_hold_no_records(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert records.read(tmp_path / "empty", Problem) == []
    records.write(tmp_path / "none.parquet", [], cls=Problem)
    assert records.read(tmp_path / "none.parquet", Problem) == []
    with pytest.raises(ValueError, match="record type"):
        records.write(tmp_path / "none2.parquet", [])
    assert not (tmp_path / "none2.parquet").exists()


def test_pandas_parquet_with_its_index_reads(tmp_path):
    import pandas as pd

    df = pd.DataFrame(rows_of(Verdict), index=["a", "b"])        # saved as __index_level_0__
    df.to_parquet(tmp_path / "v.parquet")
    assert records.read(tmp_path / "v.parquet", Verdict) == ROWS[Verdict]


def test_narrow_parquet_types_read(tmp_path):
    table = pa.table({"problem_id": pa.array(["p1"], pa.large_string()), "sample": pa.array([0], pa.int32()),
                      "turn": pa.array([1], pa.uint8()), "correct": [True], "reward": pa.array([1], pa.int64()),
                      "reason": pa.array(["x"]).dictionary_encode()})
    (tmp_path / "v.parquet").write_bytes(parquet(table))
    assert records.read(tmp_path / "v.parquet", Verdict) == [Verdict("p1", 0, 1, True, 1.0, "x")]


# ---- bad Parquet input: file, row and field ----------------------------------------------------

GOOD = rows_of(Verdict)[0]
# (case, table, row, field, words); row None: the whole file
BAD_PARQUET = [
    ("missing column", pa.Table.from_pylist([{k: x for k, x in GOOD.items() if k != "reward"}] * 2),
     1, "reward", "missing (the file has no such column"),
    ("null value", pa.Table.from_pylist([GOOD, {**GOOD, "reward": None}]), 2, "reward", "got null"),
    ("null in a defaulted field", pa.Table.from_pylist([GOOD, {**GOOD, "reason": None}]), 2, "reason", "got null"),
    ("int column for str", pa.Table.from_pylist([{**GOOD, "problem_id": 7}]), 1, "problem_id", "expected str, got int"),
    ("bool column for int", pa.Table.from_pylist([{**GOOD, "sample": True}]), 1, "sample", "expected int, got bool"),
    ("float column for int", pa.Table.from_pylist([GOOD, {**GOOD, "turn": 2.0}]), 1, "turn", "expected int, got float"),
    ("str column for bool", pa.Table.from_pylist([{**GOOD, "correct": "true"}]), 1, "correct", "expected bool, got str"),
    ("unknown column", pa.Table.from_pylist([{**GOOD, "score": 3}]), 1, "score", "unknown field for Verdict"),
    ("list column", pa.Table.from_pylist([{**GOOD, "reason": ["a", "b"]}]), 1, "reason", "expected str, got list"),
    ("struct column", pa.Table.from_pylist([{**GOOD, "reason": {"a": 1}}]), 1, "reason", "expected str, got dict"),
    ("binary column", pa.Table.from_pylist([{**GOOD, "reason": b"\xff"}]), 1, "reason", "expected str, got bytes"),
    ("timestamp column", pa.table({**{k: [x] for k, x in GOOD.items() if k != "reason"},
                                   "reason": pa.array([0], pa.timestamp("s"))}), 1, "reason", "got datetime"),
    ("NaN reward", pa.Table.from_pylist([GOOD, {**GOOD, "reward": math.nan}]), 2, "reward", "not a finite number"),
    ("infinite reward", pa.Table.from_pylist([{**GOOD, "reward": math.inf}]), 1, "reward", "not a finite number"),
    ("uint64 over int64", pa.table({**{k: [x] for k, x in GOOD.items() if k != "sample"},
                                    "sample": pa.array([2**64 - 1], pa.uint64())}), 1, "sample", "64-bit"),
    ("column given twice", pa.table([["p1"], [0], [1], [True], [1.0], [0]],
                                    names=["problem_id", "sample", "turn", "correct", "reward", "sample"]),
     1, "sample", "given twice"),
    ("unknown column, zero rows", pa.Table.from_pylist([], schema=pa.schema([("x", pa.int64())])), None, "x",
     "unknown field"),
]


@pytest.mark.parametrize("case, table, row, field, words", BAD_PARQUET, ids=[c[0] for c in BAD_PARQUET])
def test_bad_parquet_names_row_and_field(tmp_path, case, table, row, field, words):
    path = tmp_path / "verdicts"          # no suffix, as a KFP artifact
    path.write_bytes(parquet(table))
    with pytest.raises(RecordError) as info:
        records.read(path, Verdict)
    e = info.value
    assert (e.uri, e.row, e.field) == (str(path), row, field)
    where = f"{path}: row {row}: field '{field}': " if row else f"{path}: field '{field}': "
    assert str(e).startswith(where) and words in str(e), str(e)


@pytest.mark.parametrize("content", [b"PAR1", b"PAR1" + b"\0" * 64, None], ids=["magic only", "zeros", "truncated"])
def test_unreadable_parquet_is_a_whole_file_error(tmp_path, content):
    path = tmp_path / "verdicts"
    if content is None:                    # a real file cut in half
        content = parquet(pa.Table.from_pylist(rows_of(Verdict)))
        content = content[: len(content) // 2]
    path.write_bytes(content)
    with pytest.raises(RecordError) as info:
        records.read(path, Verdict)
    assert info.value.row is None and str(info.value).startswith(f"{path}: not a readable Parquet file")


def test_zero_row_parquet_holds_no_records(tmp_path):
    path = tmp_path / "v.parquet"
    path.write_bytes(parquet(pa.Table.from_pylist([], schema=records.arrow_schema(Verdict))))
    assert records.read(path, Verdict) == []


# ---- writing refuses what it could not read back ------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("bad, field, words", [
    (Verdict("p1", 0, 1, True, math.nan), "reward", "not a finite number"),
    (Verdict("p1", 0, 1, True, math.inf), "reward", "not a finite number"),
    (Verdict("p\ud800", 0, 1, True, 1.0), "problem_id", "lone surrogate"),
    (Verdict("p1", 2**63, 1, True, 1.0), "sample", "64-bit"),
    (Verdict("p1", 0, "1", True, 1.0), "turn", "expected int, got str"),
], ids=["nan", "inf", "surrogate", "int64", "type"])
def test_write_refuses_bad_values_and_keeps_the_old_file(tmp_path, fmt, bad, field, words):
    path = tmp_path / f"v.{fmt}"
    records.write(path, ROWS[Verdict])
    before = path.read_bytes()
    with pytest.raises(RecordError) as info:
        records.write(path, [ROWS[Verdict][0], bad])
    assert (info.value.row, info.value.field) == (2, field) and words in str(info.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_refuses_mixed_record_types(tmp_path):
    with pytest.raises(RecordError, match="row 2: field '\\*': a Attempt among Verdict records"):
        records.write(tmp_path / "x.parquet", [ROWS[Verdict][0], ROWS[Attempt][0]])
    assert not (tmp_path / "x.parquet").exists()


def test_record_error_without_a_row_names_the_file():
    assert str(RecordError("a.jsonl", None, None, "empty")) == "a.jsonl: empty"
    assert str(RecordError("a.jsonl", None, "*", "empty")) == "a.jsonl: empty"
    assert str(RecordError("a.parquet", None, "x", "unknown")) == "a.parquet: field 'x': unknown"
    assert str(RecordError("a.jsonl", 3, "id", "missing")) == "a.jsonl: row 3: field 'id': missing"
    import pickle
    e = pickle.loads(pickle.dumps(RecordError("a", 1, "f", "w")))
    assert (e.uri, e.row, e.field, str(e)) == ("a", 1, "f", "a: row 1: field 'f': w")


# ---- the CLIs take Parquet ------------------------------------------------------------------

def test_validate_cli_on_parquet_exit_codes(tmp_path, capsys):
    good = tmp_path / "verdicts.parquet"
    records.write(good, ROWS[Verdict])
    problems = tmp_path / "problems"
    records.write(problems, ROWS[Problem], format="parquet")
    assert v.main(["--kind", "verdicts", str(good), "--problems", str(problems)]) == 0
    assert "`verdicts`: passed" in capsys.readouterr().out

    rows = rows_of(Verdict)
    rows[1]["reward"] = 1.5
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(parquet(pa.Table.from_pylist(rows, schema=records.arrow_schema(Verdict))))
    assert v.main(["--kind", "verdicts", str(bad)]) == 1
    assert "reward=1.5" in capsys.readouterr().out

    bad.write_bytes(parquet(pa.Table.from_pylist([{**r, "reward": str(r["reward"])} for r in rows])))
    assert v.main(["--kind", "verdicts", str(bad)]) == 2
    assert f"{bad}: row 1: field 'reward': expected float, got str" in capsys.readouterr().err

    (tmp_path / "empty.parquet").write_bytes(parquet(pa.Table.from_pylist([], schema=records.arrow_schema(Verdict))))
    assert v.main(["--kind", "verdicts", str(tmp_path / "empty.parquet")]) == 2
    assert "no records" in capsys.readouterr().err


def test_quarantine_keeps_the_input_format(tmp_path, capsys):
    rows = [dataclasses.replace(r, turn=1, sample=i) for i, r in enumerate(ROWS[Verdict])]
    rows.append(Verdict("p9", 5, 3, False, 0.0, "wrong answer", "math"))         # turn 3: quarantined
    src = tmp_path / "verdicts"
    records.write(src, rows, format="parquet")
    q, clean = tmp_path / "q", tmp_path / "clean"
    assert v.main(["--kind", "verdicts", str(src), "--quarantine", str(q), "--clean", str(clean)]) == 0
    capsys.readouterr()
    assert clean.read_bytes()[:4] == b"PAR1" and records.read(clean, Verdict) == rows[:2]
    table = pq.read_table(q).to_pylist()
    assert [(t["row"], t["record"]["turn"]) for t in table] == [(3, 3)]
    assert table[0]["failed"][0].startswith("expect_column_values_to_be_in_set")
    # a suffix overrides: .jsonl out of a Parquet input
    assert v.main(["--kind", "verdicts", str(src), "--quarantine", str(tmp_path / "q.jsonl"),
                   "--clean", str(tmp_path / "c.jsonl")]) == 0
    assert json.loads((tmp_path / "q.jsonl").read_text())["row"] == 3
    assert records.read(tmp_path / "c.jsonl", Verdict) == rows[:2]
    assert (tmp_path / "c.jsonl").read_bytes()[:1] == b"{"


def test_prepare_writes_parquet_by_suffix(tmp_path, capsys):
    from selfcorrect.data import prepare

    out = tmp_path / "problems.parquet"
    assert prepare.main(["--source", "arithmetic", "--n-train", "3", "--n-eval", "2", "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"PAR1" and len(records.read(out, Problem)) == 5
    assert "ends in .parquet" in " ".join(_help(prepare.main))


def _help(main) -> list[str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["--help"])
    return buf.getvalue().split()


def test_verify_reads_parquet_inputs(tmp_path):
    from selfcorrect.verify import cli as vcli

    records.write(tmp_path / "problems", ROWS[Problem], format="parquet")
    records.write(tmp_path / "attempts.parquet", ROWS[Attempt])
    problems, attempts = vcli.read_inputs(str(tmp_path / "problems"), str(tmp_path / "attempts.parquet"), True)
    assert (problems, attempts) == (ROWS[Problem], ROWS[Attempt])


@pytest.mark.parametrize("name, magic", [("verdicts.jsonl", b"{"), ("verdicts.parquet", b"PAR1")])
def test_verify_cli_on_parquet_inputs(tmp_path, capsys, name, magic):
    from selfcorrect import cli

    records.write(tmp_path / "problems", [Problem("a", "math", "What is 1 + 1?", answer="2")], format="parquet")
    records.write(tmp_path / "attempts.parquet", [Attempt("a", 0, 1, "The answer is 2", "m"),
                                                  Attempt("a", 0, 2, "3", "m")])
    out = tmp_path / name
    assert cli.main(["verify", "--problems", str(tmp_path / "problems"), "--attempts",
                     str(tmp_path / "attempts.parquet"), "--output", str(out),
                     "--direct_running_mode=in_memory", "--direct_num_workers=1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"verdicts": 2, "correct": 1, "dead_letters": 0}
    assert [(v.turn, v.correct) for v in records.read(out, Verdict)] == [(1, True), (2, False)]
    assert out.read_bytes().startswith(magic)         # the output's name picks its format
