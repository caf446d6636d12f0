"""Chain arithmetic: the testbed task, where an error is a visible, checkable step.

A problem is a two-digit start and a few single-digit additions or subtractions,
`47+5-8+6`; a solution writes every step with its running value, `47+5=52,52-8=44,44+6=50`,
and its last number is the answer (what the math verifier extracts). A step is *hard* when it
carries or borrows (47+5: the units overflow).

`Student` writes such solutions with two misconceptions: on a hard step it forgets the carry
(`47+5=42`, off by ten) or takes the smaller units digit from the larger (`42-5=43`, both
digits wrong) with probability `p_hard`; any other step slips by one with probability
`p_easy`; later steps go on from the value written. With p_hard > 0.5 a model that learned
the student fails hard problems when decoding greedily.

`Student.episode` writes the two-turn traces the testbed model is pretrained on. Attempt 2
rarely checks (`p_check`: `check:47+5 is 52 so 42 wrong,47+5=52,...`: a check, then a fix);
mostly it second-guesses a step with a big operand (`p_doubt`: writes it one short, so a
right answer turns wrong), copies, or solves afresh (errors and all). `checking_document`
writes separate one-step checking documents (`check 47+5=42` -> `47+5 is 52 so 42 wrong`)
with a reliable checker. So the base model holds a checking skill that is more reliable than its
solving, and its greedy attempt 2 does not use it: it changes right answers to wrong (the
second-guess) more often than wrong to right.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from selfcorrect.data.arithmetic import fill_splits
from selfcorrect.records import Problem

_PROBLEM = re.compile(r"\d+(?:[+-]\d+)+")
_OP = re.compile(r"([+-])(\d+)")
_STEP = re.compile(r"(\d+)([+-])(\d+)=(-?\d+)")
_VERDICT = re.compile(r"(\d+)([+-])(\d+) is (-?\d+) so (-?\d+) (ok|wrong)")


def parse(prompt: str) -> tuple[int, list[tuple[str, int]]]:
    """`47+5-8` -> (47, [('+', 5), ('-', 8)]).

    >>> parse("47+5-8")
    (47, [('+', 5), ('-', 8)])
    """
    if not _PROBLEM.fullmatch(prompt):
        raise ValueError(f"chain problem {prompt!r}: expected numbers joined by + or -, e.g. 47+5-8")
    return int(re.match(r"\d+", prompt).group()), [(op, int(n)) for op, n in _OP.findall(prompt)]


def apply(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand


def is_hard(value: int, op: str, operand: int) -> bool:
    """A carry (units overflow) or a borrow (units underflow)."""
    units = value % 10
    return units + operand >= 10 if op == "+" else units - operand < 0


def solution(start: int, ops: list[tuple[str, int]], values: list[int]) -> str:
    """The scratchpad for the written values, one `a+b=c` step per operation.

    >>> solution(47, [('+', 5), ('-', 8)], [52, 44])
    '47+5=52,52-8=44'
    """
    steps, value = [], start
    for (op, operand), written in zip(ops, values):
        steps.append(f"{value}{op}{operand}={written}")
        value = written
    return ",".join(steps)


def generate(n_train: int, n_eval: int, *, steps: int = 3, hard_share: float = 0.5,
             seed: int = 0, eval_fraction: float = 0.5, n_dev: int = 0,
             dev_fraction: float = 0.0) -> list[Problem]:
    """Distinct chain problems whose correct path stays within 10..99; a `hard_share` of them
    have exactly one hard step, the others none.

    >>> ps = generate(3, 2, steps=3, seed=1)
    >>> all(p.answer == solution(*parse(p.prompt), Student(0, 0).values(*parse(p.prompt))).split("=")[-1] for p in ps)
    True
    """
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f"data.chain_hard_share: {hard_share} must be within [0, 1]")
    if steps < 1:
        raise ValueError(f"data.chain_steps: {steps} must be at least 1")

    def draw(rng: random.Random) -> Problem:
        want_hard = rng.random() < hard_share
        while True:
            start = rng.randint(10, 99)
            ops = [(rng.choice("+-"), rng.randint(1, 9)) for _ in range(steps)]
            path = _path(start, ops)
            if 10 <= min(path) and max(path) <= 99 and _hard_count(path, ops) == want_hard:
                break
        prompt = str(start) + "".join(f"{op}{n}" for op, n in ops)
        return Problem(id=f"chain-{prompt}", task="math", prompt=prompt, answer=str(path[-1]),
                       source="chain", difficulty=f"chain, {_hard_count(path, ops)} hard step(s)")

    return fill_splits(draw, n_train, n_eval, seed=seed, eval_fraction=eval_fraction,
                       n_dev=n_dev, dev_fraction=dev_fraction)


def hard_steps(prompt: str) -> int:
    """How many steps of the correct solution carry or borrow.

    >>> hard_steps("47+5-8"), hard_steps("41+5-3")
    (2, 0)
    """
    start, ops = parse(prompt)
    return _hard_count(_path(start, ops), ops)


def _path(start: int, ops: list[tuple[str, int]]) -> list[int]:
    """The correct running values, start included."""
    values = [start]
    for op, operand in ops:
        values.append(apply(values[-1], op, operand))
    return values


def _hard_count(path: list[int], ops: list[tuple[str, int]]) -> int:
    return sum(is_hard(value, op, operand) for value, (op, operand) in zip(path, ops))


@dataclass
class Student:
    """The noisy solver whose traces the testbed model imitates (see the module docstring).

    Attempt 1: on a hard step it errs with probability `p_hard` (an addition forgets the carry,
    off by ten; a subtraction takes the smaller units digit from the larger, `42-5=43`, which
    changes both digits); any other step is off by one with probability `p_easy`; later steps
    go on from the value written. Attempt 2 (`episode`): with probability `p_check` it checks
    attempt 1's steps with a reliable checker and fixes the first wrong one; else, when attempt
    1 has a step whose operand is `doubt_from` or more, it second-guesses the first such step
    with probability `p_doubt` (writes it one short and goes on from there); else it copies
    attempt 1 with probability `p_copy`, and otherwise solves afresh.
    """
    p_hard: float = 0.6
    p_easy: float = 0.03
    p_copy: float = 0.2
    p_check: float = 0.1
    p_doubt: float = 0.7
    doubt_from: int = 8

    def values(self, start: int, ops: list[tuple[str, int]], rng: random.Random | None = None) -> list[int]:
        """The values written after each step (rng None: no errors)."""
        out, value = [], start
        for op, operand in ops:
            out.append(self.step(value, op, operand, rng))
            value = out[-1]
        return out

    def step(self, value: int, op: str, operand: int, rng: random.Random | None) -> int:
        """One written step value (rng None: right)."""
        right = apply(value, op, operand)
        if rng is None:
            return right
        if is_hard(value, op, operand):
            if rng.random() < self.p_hard:
                return misconception(value, op, operand)
        elif rng.random() < self.p_easy:
            return right + rng.choice((-1, 1))
        return right

    def attempt(self, prompt: str, rng: random.Random) -> str:
        start, ops = parse(prompt)
        return solution(start, ops, self.values(start, ops, rng))

    def episode(self, prompt: str, rng: random.Random) -> tuple[str, str, str]:
        """(attempt 1, attempt 2, kind): kind is check, doubt, copy or resolve."""
        start, ops = parse(prompt)
        written = self.values(start, ops, rng)
        first = solution(start, ops, written)
        if rng.random() < self.p_check:
            return first, check_and_fix(start, ops, written, self, rng), "check"
        doubted = [i for i, (_, operand) in enumerate(ops) if operand >= self.doubt_from]
        if doubted and rng.random() < self.p_doubt:
            return first, self._second_guess(start, ops, written, doubted[0], rng), "doubt"
        if rng.random() < self.p_copy:
            return first, first, "copy"
        return first, self.attempt(prompt, rng), "resolve"

    def _second_guess(self, start, ops, written, at, rng) -> str:
        """Attempt 1 up to step `at`, that step one short, then solved on from there."""
        doubted = written[at] - 1 if ops[at][0] == "+" else written[at] + 1
        return solution(start, ops, written[:at] + [doubted] + self.values(doubted, ops[at + 1:], rng))


def misconception(value: int, op: str, operand: int) -> int:
    """The student's wrong value on a hard step: a forgotten carry (off by ten), or a borrow
    done by taking the smaller units digit from the larger (`42-5` -> 43).

    >>> misconception(47, "+", 5), misconception(42, "-", 5)
    (42, 43)
    """
    if op == "+":
        return apply(value, op, operand) - 10
    return value - value % 10 + (operand - value % 10)


def check_step(step: str) -> bool:
    """Whether a written step `a+b=c` / `a-b=c` is right (the reliable checker).

    >>> check_step("47+5=52"), check_step("47+5=42")
    (True, False)
    """
    m = _STEP.fullmatch(step)
    if not m:
        raise ValueError(f"chain step {step!r}: expected a+b=c or a-b=c, e.g. 47+5=52")
    return apply(int(m[1]), m[2], int(m[3])) == int(m[4])


def steps_of(text: str) -> list[str]:
    """The `a+b=c` steps written in an attempt, in order.

    >>> steps_of("47+5=42,42-8=34")
    ['47+5=42', '42-8=34']
    """
    return [m.group() for m in _STEP.finditer(text)]


def verdict(step: str) -> str:
    """The reliable checker's words on a step: the step's right value, then the written one
    and `ok` or `wrong` (`47+5=42` -> `47+5 is 52 so 42 wrong`).

    >>> verdict("47+5=42"), verdict("41+5=46")
    ('47+5 is 52 so 42 wrong', '41+5 is 46 so 46 ok')
    """
    check_step(step)
    m = _STEP.fullmatch(step)
    right = apply(int(m[1]), m[2], int(m[3]))
    return f"{m[1]}{m[2]}{m[3]} is {right} so {m[4]} {'ok' if right == int(m[4]) else 'wrong'}"


def verdicts_of(text: str) -> list[tuple[str, str]]:
    """The (step, `ok`/`wrong`) verdicts written in a text, in order.

    >>> verdicts_of("check:47+5 is 52 so 42 wrong,47+5=52")
    [('47+5=42', 'wrong')]
    """
    return [(f"{m[1]}{m[2]}{m[3]}={m[5]}", m[6]) for m in _VERDICT.finditer(text)]


def check_and_fix(start: int, ops: list[tuple[str, int]], written: list[int],
                  solver: Student, rng: random.Random) -> str:
    """Attempt 2 that checks attempt 1 step by step (`47+5 is 52 so 42 wrong`) and, at the first wrong
    step, writes it right and solves on from there (the solver's later steps may slip).

    >>> check_and_fix(47, [('+', 5), ('-', 8)], [42, 34], Student(p_easy=0), random.Random(0))
    'check:47+5 is 52 so 42 wrong,47+5=52,52-8=44'
    >>> check_and_fix(41, [('+', 5)], [46], Student(), random.Random(0))
    'check:41+5 is 46 so 46 ok'
    """
    checked, value = [], start
    for i, ((op, operand), w) in enumerate(zip(ops, written)):
        step = f"{value}{op}{operand}={w}"
        checked.append(verdict(step))
        if not check_step(step):
            right = apply(value, op, operand)
            rest = solver.values(right, ops[i + 1:], rng)
            fixed = solution(value, ops[i:], [right] + rest)
            return "check:" + ",".join(checked) + "," + fixed
        value = w
    return "check:" + ",".join(checked)


def checking_document(rng: random.Random, solver: Student) -> list[dict]:
    """A pretraining document that checks one step with the reliable checker: half of the
    steps are hard; half of the values are right, the others a student's error (the
    misconception, or off by one or by ten)."""
    while True:
        value, op, operand = rng.randint(10, 99), rng.choice("+-"), rng.randint(1, 9)
        right = apply(value, op, operand)
        if 10 <= right <= 99 and is_hard(value, op, operand) == (rng.random() < 0.5):
            break
    if rng.random() < 0.5:
        written = right
    else:
        wrong = [right + d for d in (-1, 1, -10, 10)]
        if is_hard(value, op, operand):
            wrong += [misconception(value, op, operand)] * 4
        written = rng.choice([w for w in wrong if w >= 0 and w != right])
    step = f"{value}{op}{operand}={written}"
    return [{"role": "user", "content": f"check {step}"},
            {"role": "assistant", "content": verdict(step)}]
