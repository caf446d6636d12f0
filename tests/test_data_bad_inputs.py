"""Bad input to `selfcorrect prepare`: an error naming file, row and field, exit 2, and the
output left exactly as it was (a previous good file survives; no new file appears)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfcorrect.data import prepare as prep

GOOD = {"question": "What is 2 + 2?", "answer": "2+2=4\n#### 4"}


def jl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def parquet(rows) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


FILE = "file"   # the error is about the whole file: no row, no field

# (case, source, file name, content or None for no file, row, field, words in the message)
CASES = [
    ("malformed JSON line", "gsm8k", "a.jsonl", jl(GOOD, b'{"question": "x", "answer": '), 2, "*", "not valid JSON"),
    ("key given twice", "gsm8k", "a.jsonl", jl(GOOD, b'{"question": "q", "answer": "#### 1", "question": "r"}'),
     2, "question", "given twice"),
    ("not an object", "gsm8k", "a.jsonl", jl(GOOD, [1, 2]), 2, "*", "expected a JSON object"),
    ("wrong type", "gsm8k", "a.jsonl", jl(GOOD, {"question": 7, "answer": "#### 7"}), 2, "question", "expected str"),
    ("missing field", "gsm8k", "a.jsonl", jl(GOOD, {"question": "q"}), 2, "answer", "missing"),
    ("blank prompt", "gsm8k", "a.jsonl", jl({"question": "  ", "answer": "#### 1"}), 1, "question", "blank"),
    ("no #### answer", "gsm8k", "a.jsonl", jl({"question": "q", "answer": "4"}), 1, "answer", "####"),
    ("no boxed answer", "math", "a.jsonl", jl({"problem": "p", "solution": "it is 4"}), 1, "solution", "boxed"),
    ("unclosed boxed", "math", "a.jsonl", jl({"problem": "p", "solution": "\\boxed{4"}), 1, "solution", "boxed"),
    ("mbpp tests not a list", "mbpp", "a.jsonl", jl({"text": "t", "code": "", "test_list": "assert f(1)"}),
     1, "test_list", "list"),
    ("generic unknown task", "generic", "a.jsonl", jl({"id": "a", "task": "chat", "prompt": "p"}), 1, "task", "math"),
    ("generic unknown field", "generic", "a.jsonl", jl({"id": "a", "task": "math", "prompt": "p", "answer": "1",
                                                        "hardness": 3}), 1, "hardness", "unknown field"),
    ("generic math without answer", "generic", "a.jsonl", jl({"id": "a", "task": "math", "prompt": "p"}),
     1, "answer", "reference answer"),
    ("generic bad split", "generic", "a.jsonl", jl({"id": "a", "task": "math", "prompt": "p", "answer": "1",
                                                    "split": "test"}), 1, "split", "train"),
    ("duplicate ids", "generic", "a.jsonl", jl({"id": "a", "task": "math", "prompt": "p", "answer": "1"},
                                               {"id": "a", "task": "math", "prompt": "q", "answer": "2"}),
     2, "id", "duplicate id 'a' (first at row 1)"),
    ("empty file", "gsm8k", "a.jsonl", b"", FILE, None, "empty"),
    ("blank lines only", "gsm8k", "a.jsonl", b"\n  \n", FILE, None, "empty"),
    ("empty JSON array", "gsm8k", "a.json", b"[]", FILE, None, "no rows"),
    ("non-UTF-8 bytes", "gsm8k", "a.jsonl", jl(GOOD) + b'{"question": "caf\xe9", "answer": "#### 1"}\n',
     2, "*", "not UTF-8"),
    ("prompt over the size limit", "gsm8k", "a.jsonl", jl(GOOD, {"question": "x" * 201, "answer": "#### 1"}),
     2, "prompt", "201 characters, over data.max_prompt_chars=200"),
    ("missing local file", "gsm8k", "nope.jsonl", None, None, None, "no such file"),
    ("Parquet missing column", "gsm8k", "a.parquet", parquet([{"question": "q"}]), 1, "answer", "missing column"),
    ("Parquet null value", "gsm8k", "a.parquet", parquet([GOOD, {"question": "q", "answer": None}]),
     2, "answer", "missing"),
    ("Parquet wrong type", "gsm8k", "a.parquet", parquet([{"question": 3, "answer": "#### 3"}]),
     1, "question", "expected str"),
    ("not Parquet at all", "gsm8k", "a.parquet", b"PAR1 not really", FILE, None,
     "not a readable Parquet file"),
]


@pytest.mark.parametrize("case, source, name, content, row, field, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_exits_2_and_writes_nothing(tmp_path, capsys, case, source, name, content, row,
                                                       field, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out" / "problems.jsonl"
    out.parent.mkdir()
    out.write_text("previous good output\n")
    rc = prep.main(["--source", source, "--path", str(path), "--output", str(out), "--max-prompt-chars", "200"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err and words in err, err
    if row == FILE:
        assert f"{path}: row" not in err and "field" not in err, err
    elif row is not None:
        assert f"row {row}: field '{field}'" in err, err
    assert out.read_text() == "previous good output\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["problems.jsonl"]   # no temp files left


def test_bad_verdicts_file_for_the_filter(tmp_path, capsys):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"id": "a", "task": "math", "prompt": "p", "answer": "1"}) + "\n")
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text(json.dumps({"problem_id": "a", "sample": 0, "turn": 1, "correct": "yes", "reward": 1}) + "\n")
    out = tmp_path / "out.jsonl"
    rc = prep.main(["--source", "generic", "--path", str(problems), "--output", str(out),
                    "--verdicts", str(verdicts), "--drop-never-solved"])
    assert rc == 2 and f"{verdicts}: row 1: field 'correct'" in capsys.readouterr().err
    assert not out.exists()
    rc = prep.main(["--source", "generic", "--path", str(problems), "--output", str(out), "--drop-never-solved"])
    assert rc == 2 and "--verdicts" in capsys.readouterr().err and not out.exists()
