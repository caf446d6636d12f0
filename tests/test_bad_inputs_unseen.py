"""Bad inputs beyond the issue's list, through the real CLIs (`selfcorrect prepare | validate |
verify`, called in-process through selfcorrect.cli.main). The table documents each decision:

- ACCEPT: exit 0, and the output is what it should be;
- gate(words): a usable dataset that fails its Great Expectations suite: exit 1;
- err(row, field, words): exit 2, no traceback, the message names the file, then
  `row N: field 'F'` (FILE: the whole file, no row), and holds `words`; every file under the
  test folder is byte for byte as before: nothing half-written, no temporary file left.

docs/data.md carries the same table in prose.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import unicodedata
import zipfile
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfcorrect import cli, records

FILE = "file"          # an error about the whole file: no row, no field
ACCEPT = ("accept",)


def err(row, field_, words):
    return ("error", row, field_, words)


def gate(words):
    """A usable dataset that fails its GX suite: exit 1, the failed check in the summary."""
    return ("gate", words)


def jl(*rows) -> bytes:
    """JSON Lines; a bytes row goes in as it is."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def parquet(rows=None, table=None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table if table is not None else pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.jsonl", data)
    return buf.getvalue()


DIR = object()          # make a folder of that name
LOOP = object()         # a symlink pointing at itself

Q = {"question": "What is 2 + 2?", "answer": "2+2=4\n#### 4"}
Q2 = {"question": "What is 3 + 3?", "answer": "#### 6"}
P = {"id": "a", "task": "math", "prompt": "What is 1 + 1?", "answer": "2"}
A = {"problem_id": "a", "sample": 0, "turn": 1, "completion": "2", "model": "m"}
V = {"problem_id": "a", "sample": 0, "turn": 1, "correct": True, "reward": 1.0}
EV = {"model": "base", "problem_id": "a", "sample": 0, "task": "math", "difficulty": "all",
      "correct_t1": True, "correct_t2": True, "edit_ratio": 0.0, "same_answer": True}
MATH = {"problem": "Compute it.", "solution": "So $\\boxed{1}$."}
MBPP = {"task_id": 1, "text": "Write f.", "code": "def f(x): return x",
        "test_list": ["assert f(1) == 1", "assert f(2) == 2"]}

PREPARE = ["prepare", "--source", "{source}", "--path", "{d}/{in}", "--output", "{out}"]
VALIDATE = ["validate", "--kind", "{kind}", "{d}/{in}"]
VERIFY = ["verify", "--problems", "{d}/problems.jsonl", "--attempts", "{d}/attempts.jsonl",
          "--output", "{d}/out/verdicts.jsonl"]


@dataclass
class Case:
    name: str
    argv: list[str]
    files: dict                     # name under the test folder -> bytes | DIR | LOOP
    expect: tuple
    bad: str = "{d}/{in}"           # the URI the error must name
    fmt: dict = field(default_factory=dict)    # more {placeholders}
    check: object = None            # ACCEPT: check(folder) on the result


def prep_case(name, source, content, expect, in_="in.jsonl", **kw):
    return Case(name, PREPARE, {in_: content}, expect, fmt={"source": source, "in": in_}, **kw)


def val_case(name, kind, content, expect, in_="in.jsonl", **kw):
    return Case(name, VALIDATE, {in_: content}, expect, fmt={"kind": kind, "in": in_}, **kw)


def ver_case(name, problems, attempts, expect, bad, argv=VERIFY):
    return Case(name, argv, {"problems.jsonl": problems, "attempts.jsonl": attempts}, expect, bad=bad)


def problems_out(folder) -> list[records.Problem]:
    return records.read(f"{folder}/out/problems.jsonl", records.Problem)


def answers(*want):
    def check(folder):
        assert [p.answer for p in problems_out(folder)] == list(want)
    return check


def ids(*want):
    def check(folder):
        assert sorted(p.id for p in problems_out(folder)) == sorted(want)
    return check


def prompts(*want):
    def check(folder):
        assert [p.prompt for p in problems_out(folder)] == list(want)
    return check


NFC, NFD = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
BAD_VERDICT_PARQUET = parquet([{**V, "sample": 0.0}])
TRUNCATED = parquet([V, V])[:-30]

CASES = [
    # --- encodings and line ends -----------------------------------------------------------
    prep_case("UTF-8 BOM at file start", "gsm8k", codecs.BOM_UTF8 + jl(Q, Q2), ACCEPT, check=answers("4", "6")),
    val_case("UTF-8 BOM, validate", "problems", codecs.BOM_UTF8 + jl(P), ACCEPT),
    val_case("UTF-8 BOM only", "problems", codecs.BOM_UTF8, err(FILE, None, "no records")),
    val_case("BOM in the middle of the file", "problems", jl(P) + codecs.BOM_UTF8 + jl({**P, "id": "b"}),
             err(2, "*", "not valid JSON")),
    prep_case("CR-only line ends (old Mac)", "gsm8k", jl(Q, Q2).replace(b"\n", b"\r"), ACCEPT,
              check=answers("4", "6")),
    prep_case("CRLF line ends", "gsm8k", jl(Q, Q2).replace(b"\n", b"\r\n"), ACCEPT, check=answers("4", "6")),
    val_case("CRLF line ends, validate", "attempts", jl(A, {**A, "turn": 2}).replace(b"\n", b"\r\n"), ACCEPT),
    prep_case("U+2028 and U+0085 inside a string", "gsm8k",
              json.dumps({**Q, "question": "a\u2028b\x85c"}, ensure_ascii=False).encode() + b"\n", ACCEPT,
              check=prompts("a\u2028b\x85c")),
    prep_case("UTF-16 with a byte-order mark", "gsm8k", jl(Q).decode().encode("utf-16"), err(FILE, None, "UTF-16")),
    prep_case("UTF-16 without a byte-order mark", "gsm8k", jl(Q).decode().encode("utf-16-le"),
              err(1, "*", "NUL bytes")),
    val_case("Latin-1 byte in row 3", "problems", jl(P, {**P, "id": "b"}) + b'{"id": "caf\xe9"}\n',
             err(3, "*", "not UTF-8")),
    prep_case("gzip-compressed .jsonl", "gsm8k", gz(jl(Q)), err(FILE, None, "gzip-compressed")),
    val_case("zip archive", "problems", zipped(jl(P)), err(FILE, None, "zip archive")),
    # --- JSON that json.loads takes but a record must not -------------------------------------
    val_case("NaN reward", "verdicts", jl(V, b'{"problem_id": "a", "sample": 0, "turn": 2, "correct": false, '
                                            b'"reward": NaN}'), err(2, "reward", "not a finite number")),
    val_case("Infinity reward", "verdicts", jl(b'{"problem_id": "a", "sample": 0, "turn": 1, "correct": true, '
                                               b'"reward": Infinity}'), err(1, "reward", "not a finite number")),
    val_case("-Infinity edit ratio", "eval_rows", jl(json.dumps(EV).replace("0.0", "-Infinity").encode()),
             err(1, "edit_ratio", "not a finite number")),
    val_case("1e400 overflows to infinity", "verdicts", jl(json.dumps(V).replace("1.0", "1e400").encode()),
             err(1, "reward", "not a finite number")),
    val_case("sample of 1e400", "attempts", jl(json.dumps(A).replace('"sample": 0', '"sample": 1e400').encode()),
             err(1, "sample", "expected int, got float")),
    prep_case("NaN as a question", "gsm8k", jl(b'{"question": NaN, "answer": "#### 1"}'),
              err(1, "question", "expected str, got float")),
    val_case("1.0 for an int field", "attempts", jl({**A, "turn": 1.0}), err(1, "turn", "expected int, got float")),
    val_case("int beyond 64 bits", "attempts", jl({**A, "sample": 2**70}), err(1, "sample", "64-bit")),
    val_case("5000-digit integer", "attempts", jl(b'{"sample": ' + b"9" * 5000 + b"}"),
             err(1, "*", "not usable JSON")),
    val_case("int id (123, not \"123\")", "problems", jl({**P, "id": 123}), err(1, "id", "expected str, got int")),
    val_case("\"true\" string for a bool", "attempts", jl({**A, "truncated": "true"}),
             err(1, "truncated", "expected bool, got str")),
    val_case("1 for a bool", "verdicts", jl({**V, "correct": 1}), err(1, "correct", "expected bool, got int")),
    val_case("true for a float", "verdicts", jl({**V, "reward": True}), err(1, "reward", "expected float, got bool")),
    val_case("null for a defaulted field", "problems", jl({**P, "source": None}), err(1, "source", "got null")),
    val_case("object in a string field", "problems", jl({**P, "prompt": {"text": "hi"}}),
             err(1, "prompt", "expected str, got dict")),
    val_case("array in a string field", "attempts", jl({**A, "completion": ["a", "b"]}),
             err(1, "completion", "expected str, got list")),
    val_case("lone surrogate in a string", "attempts", jl(A, json.dumps({**A, "turn": 2, "completion": "x\ud800"})
                                                          .encode()), err(2, "completion", "lone surrogate")),
    prep_case("lone surrogate in a question", "gsm8k", jl(json.dumps({**Q, "question": "\udfff?"}).encode()),
              err(1, "question", "lone surrogate")),
    prep_case("escaped NUL inside a prompt", "gsm8k", jl({**Q, "question": "a\u0000b"}), ACCEPT,
              check=prompts("a\x00b")),
    val_case("raw NUL byte in a line", "problems", jl(P) + b'{"id": "b\x00"}\n', err(2, "*", "NUL bytes")),
    val_case("100000 nested [", "problems", jl(P) + b"[" * 100000 + b"\n", err(2, "*", "nested too deeply")),
    val_case("a key given twice", "verdicts", jl(b'{"problem_id": "a", "sample": 0, "turn": 1, "correct": false, '
                                                 b'"reward": 0.0, "correct": true}'), err(1, "correct", "given twice")),
    val_case("line is null", "problems", jl(P, None), err(2, "*", "got null")),
    val_case("a # comment line", "problems", b"# problems\n" + jl(P), err(1, "*", "not valid JSON")),
    val_case("a 10000-character unknown key", "problems", jl({**P, "k" * 10000: 1}),
             err(1, "k" * 57 + "...", "unknown field")),
    val_case("a key holding a newline", "problems", jl({**P, "a\nb": 1}), err(1, "a\\nb", "unknown field")),
    val_case("two objects on one line", "problems", json.dumps(P).encode() * 2 + b"\n",
             err(1, "*", "not valid JSON (Extra data")),
    val_case("JSON array file (one line) for JSONL", "problems", json.dumps([P]).encode(),
             err(1, "*", "not a JSON array")),
    val_case("pretty-printed JSON array for JSONL", "problems", json.dumps([P], indent=2).encode(),
             err(1, "*", "not valid JSON")),
    prep_case("JSON array in a .jsonl for prepare", "gsm8k", json.dumps([Q]).encode(), err(1, "*", "got list")),
    prep_case("single-object .json file", "gsm8k", json.dumps(Q, indent=2).encode(), ACCEPT, in_="one.json",
              check=answers("4")),
    prep_case("broken .json file", "gsm8k", b'[\n  {"question": "q",\n  "answer": }\n]', in_="a.json",
              expect=err(None, None, "not valid JSON (Expecting value at line 3")),
    # --- paths and locations -------------------------------------------------------------------
    prep_case("a folder given as the path", "gsm8k", DIR, err(FILE, None, "is a folder, not a file"), in_="d.jsonl"),
    val_case("a folder, validate", "problems", DIR, err(FILE, None, "is a folder")),
    val_case("a symlink loop", "problems", LOOP, err(FILE, None, "cannot read")),
    Case("empty path", ["validate", "--kind", "problems", ""], {}, err(FILE, None, "empty path"), bad=""),
    Case("gs:/x (one slash)", ["validate", "--kind", "problems", "gs:/b/x.jsonl"], {},
         err(FILE, None, "did you mean gs://"), bad="gs:/b/x.jsonl"),
    Case("unknown scheme", ["validate", "--kind", "problems", "xyz://b/x.jsonl"], {},
         err(FILE, None, "unsupported location"), bad="xyz://b/x.jsonl"),
    Case("S3:// (upper case)", ["validate", "--kind", "problems", "S3://b/x.jsonl"], {},
         err(FILE, None, "did you mean s3://"), bad="S3://b/x.jsonl"),
    Case("output to an unknown scheme makes no local folder", PREPARE, {"in.jsonl": jl(Q)},
         err(FILE, None, "unsupported"), fmt={"source": "gsm8k", "in": "in.jsonl", "out": "xyz://b/out.jsonl"},
         bad="xyz://b/out.jsonl"),
    Case("gs:// bucket that does not exist", ["validate", "--kind", "problems", "gs://no-such-bucket-x/p.jsonl"],
         {}, err(FILE, None, "no such object"), bad="gs://no-such-bucket-x/p.jsonl"),
    Case("gs://bucket/ without an object", ["validate", "--kind", "problems", "{gs}/"], {},
         err(FILE, None, "names no object"), bad="{gs}/"),
    Case("gs:// output into a missing bucket", PREPARE, {"in.jsonl": jl(Q)}, err(FILE, None, "cannot write"),
         fmt={"source": "gsm8k", "in": "in.jsonl", "out": "gs://no-such-bucket-x/out.jsonl"},
         bad="gs://no-such-bucket-x/out.jsonl"),
    Case("gs:// output to a folder name", PREPARE, {"in.jsonl": jl(Q)}, err(FILE, None, "names no object"),
         fmt={"source": "gsm8k", "in": "in.jsonl", "out": "{gs}/dir/"}, bad="{gs}/dir/"),
    Case("output whose parent is a file", PREPARE, {"in.jsonl": jl(Q), "out": b"a file\n"},
         err(FILE, None, "is a file, not a folder"), fmt={"source": "gsm8k", "in": "in.jsonl"},
         bad="{d}/out/problems.jsonl"),
    Case("output is an existing folder", PREPARE, {"in.jsonl": jl(Q), "out/problems.jsonl": DIR},
         err(FILE, None, "it is a folder"), fmt={"source": "gsm8k", "in": "in.jsonl"},
         bad="{d}/out/problems.jsonl"),
    Case("output = input, bad row: input kept", [*PREPARE[:-1], "{d}/in.jsonl"],
         {"in.jsonl": jl(P, {**P, "id": "b", "task": "poetry"})}, err(2, "task", "'math' or 'code'"),
         fmt={"source": "generic", "in": "in.jsonl"}),
    Case("output = input, good rows: rewritten", [*PREPARE[:-1], "{d}/in.jsonl"], {"in.jsonl": jl(P)}, ACCEPT,
         fmt={"source": "generic", "in": "in.jsonl"},
         check=lambda d: [p.id for p in records.read(f"{d}/in.jsonl", records.Problem)] == ["a"]),
    Case("prepare --output = --verdicts", [*PREPARE[:-1], "{d}/v.jsonl", "--verdicts", "{d}/v.jsonl"],
         {"in.jsonl": jl(P), "v.jsonl": jl({**V, "correct": False, "reward": 0.0})},
         err(FILE, None, "same file as --verdicts"), fmt={"source": "generic", "in": "in.jsonl"},
         bad="{d}/v.jsonl"),
    Case("validate --report = the dataset", [*VALIDATE, "--report", "{d}/in.jsonl"], {"in.jsonl": jl(P)},
         err(FILE, None, "report is the same file as the dataset"), fmt={"kind": "problems", "in": "in.jsonl"}),
    Case("validate --quarantine = --clean", [*VALIDATE, "--quarantine", "{d}/q.jsonl", "--clean", "{d}/q.jsonl"],
         {"in.jsonl": jl(P)}, err(FILE, None, "clean file is the same file as the quarantine file"),
         fmt={"kind": "problems", "in": "in.jsonl"}, bad="{d}/q.jsonl"),
    Case("validate --clean = the dataset: in place", [*VALIDATE, "--quarantine", "{d}/q.jsonl", "--clean",
                                                     "{d}/in.jsonl"], {"in.jsonl": jl(P)}, ACCEPT,
         fmt={"kind": "problems", "in": "in.jsonl"},
         check=lambda d: (d / "q.jsonl").read_bytes() == b""
         and records.read(d / "in.jsonl", records.Problem) == [records.Problem(**P)]),
    ver_case("verify --output = --attempts", jl(P), jl(A), err(FILE, None, "same file as --attempts"),
             "{d}/attempts.jsonl", argv=[*VERIFY[:-1], "{d}/attempts.jsonl"]),
    # --- Parquet ---------------------------------------------------------------------------------
    prep_case("Parquet with zero rows", "gsm8k", parquet(table=pa.table({"question": pa.array([], pa.string()),
                                                                          "answer": pa.array([], pa.string())})),
              err(FILE, None, "no rows"), in_="a.parquet"),
    prep_case("Parquet extra columns (ignored)", "gsm8k", parquet([{**Q, "level": 3, "meta": [1, 2]}]), ACCEPT,
              in_="a.parquet", check=answers("4")),
    prep_case("Parquet list column for the question", "gsm8k", parquet([{**Q, "question": ["a", "b"]}]),
              err(1, "question", "expected str, got list"), in_="a.parquet"),
    prep_case("Parquet content in a .jsonl name", "gsm8k", parquet([Q]), ACCEPT, check=answers("4")),
    prep_case("upper-case .JSONL suffix", "gsm8k", jl(Q), ACCEPT, in_="A.JSONL", check=answers("4")),
    val_case("Parquet int column where str expected", "problems", parquet([{**P, "id": 5}]),
             err(1, "id", "expected str, got int"), in_="p.parquet"),
    val_case("Parquet float column for an int", "verdicts", BAD_VERDICT_PARQUET,
             err(1, "sample", "expected int, got float"), in_="v"),
    val_case("truncated Parquet", "verdicts", TRUNCATED, err(FILE, None, "not a readable Parquet file"), in_="v"),
    # --- source formats --------------------------------------------------------------------------
    prep_case("MATH nested braces in boxed", "math", jl({**MATH, "solution": r"$\boxed{\frac{1}{\sqrt{2}}}$"}),
              ACCEPT, check=answers(r"\frac{1}{\sqrt{2}}")),
    prep_case("MATH several boxed: the last", "math", jl({**MATH, "solution": r"\boxed{1} or \boxed{ 2 }"}),
              ACCEPT, check=answers("2")),
    prep_case("MATH empty boxed", "math", jl({**MATH, "solution": r"\boxed{ }"}), err(1, "solution", "boxed")),
    prep_case("MATH blank unique_id", "math", jl({**MATH, "unique_id": " "}), err(1, "unique_id", "blank")),
    prep_case("GSM8K with two ####", "gsm8k", jl({**Q, "answer": "#### 4\n#### 5"}),
              err(1, "answer", "more than once")),
    prep_case("GSM8K commas in the answer", "gsm8k", jl({**Q, "answer": "#### 1,234"}), ACCEPT,
              check=answers("1234")),
    prep_case("MBPP test_list of ints", "mbpp", jl({**MBPP, "test_list": [1, 2]}), err(1, "test_list", "list")),
    prep_case("MBPP empty test_list", "mbpp", jl({**MBPP, "test_list": []}), err(1, "test_list", "non-empty")),
    prep_case("MBPP float task_id", "mbpp", jl({**MBPP, "task_id": 1.5}), err(1, "task_id", "int or str")),
    prep_case("generic code row without entry_point", "generic",
              jl({"id": "c", "task": "code", "prompt": "def f():", "test": "def check(c): pass"}),
              err(1, "entry_point", "HumanEval")),
    # --- ids -------------------------------------------------------------------------------------
    prep_case("an id of 10000 characters", "generic", jl({**P, "id": "x" * 10000}), err(1, "id", "over 256")),
    prep_case("ids differing only by case", "generic", jl(P, {**P, "id": "A", "prompt": "What is 2 + 2?"}),
              ACCEPT, check=ids("a", "A")),
    prep_case("id with trailing whitespace", "generic", jl(P, {**P, "id": "b ", "prompt": "q2"}),
              err(2, "id", "whitespace at an end")),
    prep_case("id with a tab inside", "generic", jl({**P, "id": "a\tb"}), err(1, "id", "control character")),
    prep_case("ids equal after NFC normalisation", "generic", jl({**P, "id": NFC}, {**P, "id": NFD, "prompt": "q2"}),
              err(2, "id", "after Unicode NFC normalisation")),
    prep_case("same prompt up to case and spaces: deduped", "generic",
              jl(P, {**P, "id": "b", "prompt": "what  is 1 + 1? "}), ACCEPT, check=ids("a")),
    # --- usable, but failing the gate (exit 1, not 2) ------------------------------------------
    val_case("blank id: a gate failure", "problems", jl(P, {**P, "id": " ", "prompt": "q"}),
             gate("expect_column_values_to_match_regex")),
    val_case("turn 3: a gate failure", "attempts", jl(A, {**A, "turn": 3}), gate("expect_column_values_to_be_in_set")),
    Case("a share of NaN", [*VALIDATE, "--max-truncated-share", "nan"], {"in.jsonl": jl(A)},
         err(FILE, None, "max_truncated_share: a finite number"), fmt={"kind": "attempts", "in": "in.jsonl"}, bad=""),
    # --- verify ----------------------------------------------------------------------------------
    ver_case("verify: empty problems file", b"", jl(A), err(FILE, None, "no records"), "{d}/problems.jsonl"),
    ver_case("verify: empty attempts file", jl(P), b"\n", err(FILE, None, "no records"), "{d}/attempts.jsonl"),
    ver_case("verify: one id, two problems", jl(P, {**P, "answer": "3"}), jl(A), err(2, "id", "duplicate id"),
             "{d}/problems.jsonl"),
    ver_case("verify: attempt turn as a string", jl(P), jl({**A, "turn": "1"}),
             err(1, "turn", "expected int, got str"), "{d}/attempts.jsonl"),
    ver_case("verify: NaN in problems", jl(b'{"id": NaN, "task": "math", "prompt": "p"}'), jl(A),
             err(1, "id", "expected str, got float"), "{d}/problems.jsonl"),
]


def _fill(text: str, d, gs, fmt: dict) -> str:
    where = {"d": d, "gs": gs or "gs://unused"}
    fmt = {k: x.format(**where) for k, x in {"in": "in.jsonl", "out": "{d}/out/problems.jsonl", **fmt}.items()}
    return text.format(**where, **fmt)


def _tree(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                with open(p, "rb") as f:
                    out[rel] = f.read()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_unseen_bad_input(case: Case, tmp_path, capsys, monkeypatch, request):
    monkeypatch.chdir(tmp_path)             # a bug that makes "s3:" a local folder would show here
    d = tmp_path / "in"
    d.mkdir()
    gs = request.getfixturevalue("gs_prefix") if "gs:/" in repr(case) or "{gs}" in repr(case) else None
    for name, content in case.files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is DIR:
            p.mkdir()
        elif content is LOOP:
            p.symlink_to(p)
        else:
            p.write_bytes(content)
    argv = [_fill(a, d, gs, case.fmt) for a in case.argv]
    before = _tree(tmp_path)
    try:
        rc = cli.main(argv)
    except SystemExit as e:                  # argparse
        rc = e.code
    out, errs = capsys.readouterr()
    assert "Traceback" not in errs, errs
    if case.expect == ACCEPT:
        assert rc == 0, errs
        if case.check is not None:
            assert case.check(d) is not False
        return
    if case.expect[0] == "gate":
        assert rc == 1 and "FAILED" in out and case.expect[1] in out, (rc, out, errs)
        return
    _, row, field_, words = case.expect
    assert rc == 2, (rc, out, errs)
    bad = _fill(case.bad, d, gs, case.fmt)
    assert bad in errs and words in errs, errs
    if row == FILE:
        assert f"{bad}: row" not in errs and "field '" not in errs, errs
    elif row is not None:
        assert f"{bad}: row {row}: field '{field_}': " in errs, errs
    assert _tree(tmp_path) == before         # nothing written, nothing half-written, no temp file


def test_there_are_enough_new_cases():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
