import doctest
import threading

import pytest

import selfcorrect.verify
import selfcorrect.verify.math as vmath
from selfcorrect.records import Problem
from selfcorrect.verify import verify, verify_batch
from selfcorrect.records import Attempt


def score(answer: str) -> str:
    return f"Let me think step by step.\nFinal Answer: The final answer is ${answer}$. I hope it is correct."


CASES = [
    # (completion, reference, correct)
    # --- the SCoRe format
    (score("72"), "72", True),
    (score("73"), "72", False),
    (score("-3"), "-3", True),
    (score("3"), "-3", False),
    (score("\\frac{1}{2}"), "0.5", True),
    (score("0.5"), "\\frac{1}{2}", True),
    (score("1/2"), "\\frac12", True),
    (score("\\dfrac{3}{4}"), "0.75", True),
    (score("\\frac{2}{3}"), "0.67", False),
    (score("0.333"), "\\frac{1}{3}", False),
    (score("0.3333333"), "\\frac{1}{3}", True),   # math-verify rounds to 6 decimals
    (score("1,234"), "1234", True),
    (score("1{,}234{,}567"), "1234567", True),
    (score("1,235"), "1234", False),
    (score("12.50"), "12.5", True),
    (score("\\sqrt{2}/2"), "\\frac{\\sqrt{2}}{2}", True),
    (score("\\frac{\\sqrt 3}{2}"), "\\frac{\\sqrt{3}}{2}", True),
    (score("2\\sqrt{3}"), "\\sqrt{12}", True),
    (score("\\sqrt{3}"), "\\sqrt{2}", False),
    (score("x = 5"), "5", True),
    (score("\\pi"), "\\pi", True),
    (score("3.14"), "\\pi", False),
    (score("10\\%"), "10", True),
    (score("\\$5"), "5", True),
    (score("(1, 2)"), "(1,2)", True),
    (score("(2, 1)"), "(1,2)", False),
    (score("x^2 + 2x + 1"), "(x+1)^2", True),
    (score("x^2 + 1"), "(x+1)^2", False),
    (score("[0, 1)"), "[0,1)", True),
    (score("[0, 1]"), "[0,1)", False),
    (score("\\frac{a}{\\sqrt{b}}"), "\\frac{a\\sqrt{b}}{b}", True),
    ("Final Answer: The final answer is $3.5$. I hope it is correct.", "7/2", True),
    ("Final Answer: The final answer is 42. I hope it is correct.", "42", True),
    ("final answer is $7$", "7", True),       # no closing sentence (e.g. cut off)
    # the last of several final answers counts (turn 2 revises turn 1)
    (score("4") + "\nWait, that is wrong.\n" + score("5"), "5", True),
    (score("5") + "\nWait, that is wrong.\n" + score("4"), "5", False),
    # --- \boxed{}, nested braces
    ("So the answer is $\\boxed{\\frac{9}{4}}$.", "2.25", True),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", True),
    ("\\boxed{\\{1, 2, 3\\}}", "\\{3, 2, 1\\}", True),
    ("\\boxed{-\\frac{7}{3}}", "-7/3", True),
    ("\\boxed{7/3}", "-7/3", False),
    # --- GSM8K
    ("He has 3 + 4 = 7 apples.\n#### 7", "7", True),
    ("Total: 1,000 + 200 = 1,200\n#### 1,200", "1200", True),
    ("#### -15", "-15", True),
    ("#### 15", "-15", False),
    # --- trailing number
    ("37 + 45 = 82", "82", True),
    ("37 + 45 = 83", "82", False),
    ("So she pays $1,250.50 in total.", "1250.5", True),
    ("The result is -0.25.", "-1/4", True),
    ("The temperature drops to -4 degrees.", "4", False),
    # --- units text
    (score("5 \\text{ cm}"), "5", True),
    (score("5\\text{cm}"), "5", True),
    (score("5 \\mathrm{cm}"), "5", True),
    (score("12 \\text{ inches}"), "12", True),
    (score("6 \\text{ cm}"), "5", False),
    ("The side is 5 cm.", "5", True),
    (score("90^\\circ"), "90", True),
    (score("\\$12.50"), "12.5", True),
    # --- percentages (math-verify accepts both readings of a percent)
    (score("50\\%"), "\\frac{1}{2}", True),
    (score("25\\%"), "25", True),
    (score("2.5\\%"), "25", False),
    # --- negative numbers
    (score("-\\frac{3}{4}"), "-0.75", True),
    (score("-0.75"), "\\frac{-3}{4}", True),
    (score("\\frac{3}{4}"), "-\\frac{3}{4}", False),
    (score("-12"), "-12", True),
    # --- \dfrac, \tfrac, decimals
    (score("\\dfrac{1}{3}"), "\\frac{1}{3}", True),
    (score("\\tfrac{5}{2}"), "2.5", True),
    (score("\\dfrac{5}{3}"), "\\frac{3}{5}", False),
    (score("0.1"), "\\frac{1}{10}", True),
    (score("\\boxed{12}"), "12", True),
    # --- thousands separators
    (score("10,000"), "10000", True),
    (score("100,000"), "10000", False),
    (score("1,000,000"), "10^6", True),
    ("#### 2,500", "2500", True),
    # --- equivalent expressions
    (score("2x+2"), "2(x+1)", True),
    (score("2x+1"), "2(x+1)", False),
    (score("\\frac{x^2-1}{x-1}"), "x+1", True),
    (score("(x-1)(x+2)"), "x^2+x-2", True),
    (score("(x-1)(x+2)"), "x^2-x-2", False),
    (score("\\sqrt{8}"), "2\\sqrt{2}", True),
    (score("\\frac{\\pi}{2}"), "\\frac{\\pi}{2}", True),
    (score("3 + 2i"), "3+2i", True),
    (score("x = 3, y = 4"), "(3,4)", True),
    # --- intervals and sets
    (score("(-\\infty, 3)"), "(-\\infty,3)", True),
    (score("(-\\infty, 3]"), "(-\\infty,3)", False),
    (score("[2, 5]"), "[2,5]", True),
    (score("(1, \\infty)"), "(1,\\infty)", True),
    (score("x \\in [0, 1]"), "[0,1]", True),
    (score("\\{1, 2\\}"), "\\{2, 1\\}", True),
    (score("\\{1, 2\\}"), "\\{1, 2, 3\\}", False),
    # --- mixed forms
    ("Final Answer: The final answer is $5$ cm. I hope it is correct.", "5", True),
    (score("−5"), "-5", True),                    # a unicode minus sign
    (score("\\left(1,2\\right)"), "(1,2)", True),
    (score("\\$1,000"), "1000", True),
    ("The answer is 12 apples.", "12", True),
    ("#### 3/4", "0.75", True),
    ("#### 3/4", "0.34", False),
    # --- no answer at all
    ("I am not sure.", "3", False),
    ("", "3", False),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 60
    assert sum(c for *_, c in CASES) >= 20 and sum(not c for *_, c in CASES) >= 20


@pytest.mark.parametrize("completion, reference, correct", CASES)
def test_table(completion, reference, correct):
    p = Problem(id="p", task="math", prompt="?", answer=reference)
    v = verify(p, completion, sample=2, turn=2)
    assert (v.correct, v.reward) == (correct, float(correct)), v.reason
    assert (v.problem_id, v.sample, v.turn, v.verifier) == ("p", 2, 2, "math-verify")
    assert (v.reason == "") == correct


@pytest.mark.parametrize("text, answer", [
    (score("\\frac{1}{2}"), "\\frac{1}{2}"),
    ("\\boxed{\\frac{a}{\\sqrt{b}}} and more text", "\\frac{a}{\\sqrt{b}}"),
    ("\\boxed{x", None),  # unbalanced braces: no box, and no trailing number either
    ("#### 1,234,567", "1234567"),
    ("The answer is 5.", "5"),
    ("no digits", None),
])
def test_extract_answer(text, answer):
    assert vmath.extract_answer(text) == answer


@pytest.mark.parametrize("completion, reason", [
    ("nothing", "no final answer found"),
    (score("6"), "wrong answer: got '6', expected '5'"),
    (score("1" * (vmath.MAX_ANSWER_CHARS + 1)), "answer too long"),
    (score("2^{2^{100}}"), "too complex"),
    (score("(10^{100})!"), "too complex"),
    (score("9^{9^{9}}"), "too complex"),
])
def test_reasons(completion, reason):
    v = verify(Problem(id="p", task="math", prompt="?", answer="5"), completion)
    assert not v.correct and reason in v.reason


def test_moderately_large_numbers_are_still_compared():
    p = Problem(id="p", task="math", prompt="?", answer="1024")
    assert verify(p, score("2^{10}")).correct
    assert verify(Problem(id="q", task="math", prompt="?", answer="120"), score("5!")).correct


def test_works_outside_the_main_thread():
    # math-verify's signal.alarm timeouts would raise here; ours are off
    out = []
    t = threading.Thread(target=lambda: out.append(
        verify(Problem(id="p", task="math", prompt="?", answer="\\frac{1}{2}"), score("0.5"))))
    t.start()
    t.join(60)
    assert out and out[0].correct


def test_deterministic():
    p = Problem(id="p", task="math", prompt="?", answer="\\frac{\\sqrt{3}}{2}")
    first = [verify(p, score(a)) for a in ("\\sqrt{3}/2", "0.866", "\\frac{3}{2}")]
    assert first == [verify(p, score(a)) for a in ("\\sqrt{3}/2", "0.866", "\\frac{3}{2}")]


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="no verifier"):
        verify(Problem(id="p", task="chess", prompt="?"), "e4")


def test_verify_batch_keeps_order_and_names_missing_problems():
    ps = {f"p{i}": Problem(id=f"p{i}", task="math", prompt="?", answer=str(i)) for i in range(3)}
    attempts = [Attempt(problem_id=f"p{i}", sample=0, turn=t, completion=score(str(i + t - 1)), model="m")
                for i in range(3) for t in (1, 2)]
    verdicts = verify_batch(ps, attempts)
    assert [(v.problem_id, v.turn, v.correct) for v in verdicts] == [
        (f"p{i}", t, t == 1) for i in range(3) for t in (1, 2)]
    with pytest.raises(KeyError, match="nope"):
        verify_batch(ps, [Attempt(problem_id="nope", sample=0, turn=1, completion="1", model="m")])


@pytest.mark.parametrize("module", [selfcorrect.verify, vmath])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
