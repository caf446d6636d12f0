from selfcorrect import evaluate, prompts
from selfcorrect.data import arithmetic
from selfcorrect.records import Attempt, Problem, RecordError, Verdict, read, write_jsonl

import pytest


def test_arithmetic_is_seeded_split_by_hash_and_correct():
    a = arithmetic.generate(20, 10, operations="+-*", seed=1)
    assert a == arithmetic.generate(20, 10, operations="+-*", seed=1)
    assert [p.split for p in a].count("train") == 20 and len({p.id for p in a}) == 30
    for p in a:
        assert p.split == arithmetic.split_of(p.id)
        x, op, y = p.prompt[len("What is "):-1].split(" ")
        assert str(eval(f"{x}{op}{y}")) == p.answer
    bigger = arithmetic.generate(40, 20, operations="+-*", seed=2)
    sides = {p.id: p.split for p in a}
    assert all(sides.get(p.id, p.split) == p.split for p in bigger)


def test_arithmetic_refuses_more_than_exists():
    with pytest.raises(ValueError, match="only about"):
        arithmetic.generate(100, 100, operations="+", digits=1)


def test_correction_prompt_never_reveals_correctness():
    p = Problem("x", "math", "What is 1 + 1?", "2")
    msgs = prompts.messages(p, "Final Answer: The final answer is $3$.")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "might be an error" in msgs[2]["content"]
    for word in ("wrong", "incorrect", "correct answer is"):
        assert word not in msgs[2]["content"].lower()


def test_records_round_trip_and_errors_name_file_row_field(tmp_path):
    path = str(tmp_path / "v.jsonl")
    rows = [Verdict("a", 0, 1, True, 1.0, "", "m"), Verdict("a", 0, 2, False, 0.0, "wrong", "m")]
    write_jsonl(path, rows)
    assert read(path, Verdict) == rows
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "a", "sample": 0, "turn": 1, '
                                        '"completion": 5, "model": "m"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl: row 1: field 'completion': expected str"):
        read(str(tmp_path / "bad.jsonl"), Attempt)
    (tmp_path / "broken.jsonl").write_text('\n{"id": "a"\n')
    with pytest.raises(RecordError, match=r"row 2: field '\*': not valid JSON"):
        read(str(tmp_path / "broken.jsonl"), Problem)


def test_metrics_by_hand():
    v = [Verdict("p1", 0, 1, False, 0.0), Verdict("p1", 0, 2, True, 1.0),
         Verdict("p2", 0, 1, True, 1.0), Verdict("p2", 0, 2, True, 1.0),
         Verdict("p3", 0, 1, True, 1.0), Verdict("p3", 0, 2, False, 0.0),
         Verdict("p4", 0, 1, False, 0.0)]                # no turn 2: not a pair
    m = evaluate.self_correction_metrics(evaluate.pair_outcomes(v))
    assert m == pytest.approx({"accuracy_t1": 2 / 3, "accuracy_t2": 2 / 3, "delta": 0.0,
                               "delta_i_to_c": 1 / 3, "delta_c_to_i": 1 / 3, "n": 3.0})
    assert evaluate.self_correction_metrics([])["n"] == 0.0
    assert evaluate.edit_distance_ratio("abc", "abc") == 0.0
    assert evaluate.edit_distance_ratio("ab", "cd") == pytest.approx(2 / 4)
