"""Problem sources: published formats on disk, Parquet, gs:// (emulator), HumanEval, splits."""
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfcorrect import storage
from selfcorrect.config import ConfigError, DataConfig, build
from selfcorrect.data import algebra, prepare as prep
from selfcorrect.data.arithmetic import split_of
from selfcorrect.records import Problem, Verdict, read, write_jsonl
from selfcorrect.verify import code as code_verify



MATH_ROWS = [
    {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "level": "Level 1", "type": "Algebra",
     "solution": "We get $\\boxed{1}$."},
    {"problem": "What is $\\sqrt{4}$?", "level": "Level 2", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{4}{2}}$, i.e. $\\boxed{2}$."},
]
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A farm has 1,200 hens and sells none. How many?", "answer": "No change.\n#### 1,200"},
]
MBPP_ROWS = [
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character.",
     "code": "def remove_Occ(s,ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n    return s[:i] + s[i+1:] if i >= 0 else s",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
     "test_setup_code": "", "challenge_test_list": []},
]


def write_jsonl_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run(tmp_path, source, path="", *extra):
    out = tmp_path / "out.jsonl"
    rc = prep.main(["--source", source, *(["--path", path] if path else []), "--output", str(out),
                    "--n-train", "1000", "--n-eval", "1000", *extra])
    return rc, out


def test_math_gsm8k_mbpp_in_published_formats(tmp_path):
    ps, _ = prep.prepare(DataConfig(source="math", path=write_jsonl_rows(tmp_path / "m.jsonl", MATH_ROWS)))
    assert [p.answer for p in ps] == ["1", "2"] and {p.task for p in ps} == {"math"}
    assert all(p.id.startswith("math-") and p.split == split_of(p.id) for p in ps)
    assert [p.difficulty for p in ps] == ["Level 1", "Level 2"]     # MATH's level groups evaluation
    ps, _ = prep.prepare(DataConfig(source="gsm8k", path=write_jsonl_rows(tmp_path / "g.jsonl", GSM8K_ROWS)))
    assert [p.answer for p in ps] == ["7", "1200"]
    (p,), _ = prep.prepare(DataConfig(source="mbpp", path=write_jsonl_rows(tmp_path / "b.jsonl", MBPP_ROWS)))
    assert (p.id, p.task, p.entry_point) == ("mbpp-11", "code", "remove_Occ")
    assert 'assert remove_Occ("hello","l") == "heo"' in p.prompt
    # the converted tests run in the real sandbox: the reference passes, a wrong answer fails
    assert code_verify.run_tests(p.prompt, MBPP_ROWS[0]["code"], p.test, p.entry_point).passed
    assert not code_verify.run_tests(p.prompt, "def remove_Occ(s, ch):\n    return s", p.test, p.entry_point).passed


def test_math_single_problem_json_file_and_parquet(tmp_path):
    one = tmp_path / "1.json"
    one.write_text(json.dumps({**MATH_ROWS[0], "unique_id": "test/algebra/1.json"}))
    (p,), _ = prep.prepare(DataConfig(source="math", path=str(one)))
    assert (p.id, p.answer) == ("test/algebra/1.json", "1")
    pq.write_table(pa.Table.from_pylist(GSM8K_ROWS), tmp_path / "g.parquet")
    ps, _ = prep.prepare(DataConfig(source="gsm8k", path=str(tmp_path / "g.parquet")))
    assert [p.answer for p in ps] == ["7", "1200"]


def test_humaneval_offline_with_a_stable_hash_split(tmp_path):
    rc, out = run(tmp_path, "humaneval")
    ps = read(str(out), Problem)
    assert rc == 0 and len(ps) == 164 and {p.task for p in ps} == {"code"}
    assert all(p.test and p.entry_point and p.split == split_of(p.id) for p in ps)
    assert 0 < sum(p.split == "eval" for p in ps) < 164


def test_generic_keeps_given_split_dedupes_prompts_and_caps(tmp_path):
    rows = [{"id": f"g{i}", "task": "math", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]
    rows[0]["split"] = "eval"
    rows.append({"id": "dup", "task": "math", "prompt": "what  IS 1 + 1?", "answer": "2"})
    path = write_jsonl_rows(tmp_path / "p.jsonl", rows)
    ps, stats = prep.prepare(DataConfig(source="generic", path=path, n_train=1000, n_eval=1000))
    splits = stats.pop("splits")
    assert stats == {"read": 41, "duplicate_prompts": 1, "over_cap": 0, "written": 40}
    assert sum(s["kept"] for s in splits.values()) == 40 and splits["dev"]["kept"] == 0
    assert ps[0].split == "eval" and all(p.split == split_of(p.id) for p in ps[1:])
    small, stats = prep.prepare(DataConfig(source="generic", path=path, n_train=3, n_eval=2))
    assert [p.split for p in small].count("train") == 3 and len(small) == 5 and stats["over_cap"] == 35
    assert stats["splits"]["train"] == {"kept": 3, "over_cap": splits["train"]["kept"] - 3}
    assert "data.n_train=3 dropped" in prep.describe(stats, DataConfig(source="generic", path=path,
                                                                         n_train=3, n_eval=2))
    # growing the file never moves a problem to the other side
    grown = write_jsonl_rows(tmp_path / "q.jsonl", rows + [{"id": f"n{i}", "task": "math", "prompt": f"n{i}",
                                                              "answer": "0"} for i in range(30)])
    bigger, _ = prep.prepare(DataConfig(source="generic", path=grown, n_train=1000, n_eval=1000))
    assert {p.id: p.split for p in bigger}.items() >= {p.id: p.split for p in ps}.items()


def test_eval_fraction_moves_the_cut():
    ids = [f"x{i}" for i in range(2000)]
    share = sum(split_of(i, 0.2) == "eval" for i in ids) / len(ids)
    assert 0.17 < share < 0.23
    assert all(split_of(i, 0.5) == "eval" for i in ids if split_of(i, 0.2) == "eval")   # a larger share only adds


def test_algebra_is_seeded_and_correct():
    ps = algebra.generate(10, 10, digits=2, seed=4)
    assert ps == algebra.generate(10, 10, digits=2, seed=4) and len({p.id for p in ps}) == 20
    for p in ps:
        a, rest = p.id[4:].split("x")
        b, c = rest.split("=")
        assert int(a) * int(p.answer) + int(b) == int(c)


def test_gcs_source_and_missing_object(tmp_path, gcs):
    uri = storage.join(gcs, "gsm8k", "train.jsonl")
    storage.write_text(uri, "".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    out = storage.join(gcs, "out", "problems.jsonl")
    assert prep.main(["--source", "gsm8k", "--path", uri, "--output", out]) == 0
    assert [p.answer for p in read(out, Problem)] == ["7", "1200"]
    missing = storage.join(gcs, "gsm8k", "nope.jsonl")
    out2 = storage.join(gcs, "out", "never.jsonl")
    assert prep.main(["--source", "gsm8k", "--path", missing, "--output", out2]) == 2
    assert not storage.exists(out2)


def test_difficulty_filter_cli(tmp_path):
    rows = [{"id": i, "task": "math", "prompt": f"q {i}", "answer": "1", "split": s}
            for i, s in [("easy", "train"), ("hard", "train"), ("mid", "train"), ("new", "train"), ("ev", "eval")]]
    problems = write_jsonl_rows(tmp_path / "p.jsonl", rows)
    verdicts = tmp_path / "v.jsonl"
    write_jsonl(str(verdicts), [Verdict(pid, s, 1, ok, float(ok)) for pid, oks in
                                [("easy", (1, 1)), ("hard", (0, 0)), ("mid", (1, 0)), ("ev", (1, 1))]
                                for s, ok in enumerate(map(bool, oks))])
    rc, out = run(tmp_path, "generic", problems, "--verdicts", str(verdicts), "--drop-always-solved",
                  "--drop-never-solved")
    assert rc == 0 and [p.id for p in read(str(out), Problem)] == ["mid", "new", "ev"]
    rc, out = run(tmp_path, "generic", problems, "--verdicts", str(verdicts), "--drop-never-solved")
    assert rc == 0 and [p.id for p in read(str(out), Problem)] == ["easy", "mid", "new", "ev"]


@pytest.mark.parametrize("data, key", [
    ({"source": "gsm8k"}, "data.path"),
    ({"source": "arithmetic", "path": "x.jsonl"}, "data.path"),
    ({"source": "math", "path": "x.csv"}, "data.path"),
    ({"eval_fraction": 1.0}, "data.eval_fraction"),
    ({"max_prompt_chars": 0}, "data.max_prompt_chars"),
    ({"source": "squad"}, "data.source"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(DataConfig, data, "data.")


def test_prepare_is_a_selfcorrect_subcommand(tmp_path):
    out = tmp_path / "a.jsonl"
    r = subprocess.run([sys.executable, "-m", "selfcorrect.cli", "prepare", "--source", "arithmetic",
                        "--output", str(out), "--n-train", "3", "--n-eval", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == 5 and len(read(str(out), Problem)) == 5
    r = subprocess.run([sys.executable, "-m", "selfcorrect.cli", "prepare", "--source", "gsm8k",
                        "--output", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "data.path: required" in r.stderr


@pytest.mark.parametrize("module", ["files", "sources", "prepare", "algebra"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"selfcorrect.data.{module}"))
    assert result.attempted > 0 and result.failed == 0
