"""Chain arithmetic: the testbed task, where an error is a visible, checkable step.

A problem is a two-digit start and a few single-digit additions or subtractions,
`47+5-8+6`; a solution writes every step with its running value, `47+5=52,52-8=44,44+6=50`,
and its last number is the answer (what the math verifier extracts). A step is *hard* when it
carries or borrows (47+5: the units overflow). Every step can be checked on its own, so an
error in attempt 1 is there to be seen in attempt 2's prompt: verifying is easier than solving.

`Student` writes such solutions with a known misconception: on a hard step it forgets the
carry (or the borrow) with probability `p_hard`, off by ten; on any other step it is off by
one with probability `p_easy`; later steps go on from the value written. With p_hard > 0.5 a
model that learned the student answers hard steps wrongly when decoding greedily, so problems
with a hard step are failed at temperature 0 and sometimes solved when sampling.

`Student.episode` writes the two-turn traces the testbed model is pretrained on: attempt 2
copies attempt 1 with probability `p_copy`, else it is a fresh attempt by the same student.
Both behaviours are then in the base model, and its attempt 2 is exactly as good as its
attempt 1 in expectation (Delta = 0, with both wrong->right and right->wrong present).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from selfcorrect.data.arithmetic import fill_splits
from selfcorrect.records import Problem

_PROBLEM = re.compile(r"\d+(?:[+-]\d+)+")
_OP = re.compile(r"([+-])(\d+)")


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
                       source="chain")

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
    """The noisy solver whose traces the testbed model imitates (see the module docstring)."""
    p_hard: float = 0.6
    p_easy: float = 0.03
    p_copy: float = 0.5

    def values(self, start: int, ops: list[tuple[str, int]], rng: random.Random | None = None) -> list[int]:
        """The values written after each step (rng None: no errors)."""
        out, value = [], start
        for op, operand in ops:
            right = apply(value, op, operand)
            written = right
            if rng is not None:
                if is_hard(value, op, operand):
                    if rng.random() < self.p_hard:   # forgot the carry / the borrow
                        written = right - 10 if op == "+" else right + 10
                elif rng.random() < self.p_easy:
                    written = right + rng.choice((-1, 1))
            out.append(written)
            value = written
        return out

    def attempt(self, prompt: str, rng: random.Random) -> str:
        start, ops = parse(prompt)
        return solution(start, ops, self.values(start, ops, rng))

    def episode(self, prompt: str, rng: random.Random) -> tuple[str, str]:
        """(attempt 1, attempt 2): attempt 2 copies with probability p_copy, else is fresh."""
        first = self.attempt(prompt, rng)
        return first, first if rng.random() < self.p_copy else self.attempt(prompt, rng)
