"""Generated arithmetic problems: seeded, reproducible, graded by exact numeric answer.

A problem's id is its content (e.g. `arith-37+45`), and its split is a hash of that id,
so a problem never changes side when the set grows or the seed changes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Callable

from selfcorrect.records import Problem

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def split_of(problem_id: str, eval_fraction: float = 0.5, dev_fraction: float = 0.0) -> str:
    """Deterministic train/dev/eval split from a hash of the id: the lowest `eval_fraction` of
    hashes are eval, the next `dev_fraction` dev (with dev_fraction 0, ids keep the sides they
    had before dev existed).

    >>> [split_of("p4"), split_of("p4", 0.25, 0.5)]
    ['train', 'dev']
    """
    h = int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big") / 2**64
    return "eval" if h < eval_fraction else "dev" if h < eval_fraction + dev_fraction else "train"


def fill_splits(draw: Callable[[random.Random], Problem], n_train: int, n_eval: int, *,
                seed: int, eval_fraction: float, n_dev: int = 0,
                dev_fraction: float = 0.0) -> list[Problem]:
    """Draw distinct problems (`draw(rng)`) until each split holds its count; ids decide sides."""
    if n_dev and not dev_fraction:
        raise ValueError(f"data.n_dev: {n_dev} dev problems need data.dev_fraction > 0 (the "
                         "share of ids that hash to dev), e.g. 0.2")
    rng = random.Random(seed)
    want = {"train": n_train, "eval": n_eval, "dev": n_dev}
    seen: set[str] = set()
    out: list[Problem] = []
    while any(want.values()):
        problem = draw(rng)
        split = split_of(problem.id, eval_fraction, dev_fraction)
        if problem.id in seen or not want[split]:
            continue
        seen.add(problem.id)
        want[split] -= 1
        out.append(dataclasses.replace(problem, split=split))
    return out


def generate(n_train: int, n_eval: int, *, operations: str = "+-", digits: int = 2,
             seed: int = 0, eval_fraction: float = 0.5, n_dev: int = 0,
             dev_fraction: float = 0.0) -> list[Problem]:
    """n_train + n_eval distinct problems with `digits`-digit operands.

    >>> ps = generate(2, 1, operations="+", digits=1, seed=3)
    >>> [p.split for p in ps].count("eval"), all(p.answer == str(eval(p.prompt.split(" is ")[1][:-1])) for p in ps)
    (1, True)
    """
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1
    space = (hi - lo + 1) ** 2 * len(operations)
    if n_train + n_eval > space // 2:
        raise ValueError(f"data: {n_train + n_eval} problems asked, but {digits}-digit "
                         f"'{operations}' problems give only about {space // 2} per split")

    def draw(rng: random.Random) -> Problem:
        a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice(operations)
        return Problem(id=f"arith-{a}{op}{b}", task="math", prompt=f"What is {a} {op} {b}?",
                       answer=str(_OPS[op](a, b)), source="arithmetic",
                       difficulty=f"{op} {max(len(str(abs(a))), len(str(abs(b))))}-digit")

    return fill_splits(draw, n_train, n_eval, seed=seed, eval_fraction=eval_fraction,
                       n_dev=n_dev, dev_fraction=dev_fraction)
