"""Generated linear equations (solve for x): seeded, reproducible, graded by exact answer.

`digits` sets the size of the coefficient, the constant and the solution, so it is the
difficulty knob, as for arithmetic. The id is the equation, its split a hash of the id.
"""
from __future__ import annotations

import random

from selfcorrect.data.arithmetic import fill_splits
from selfcorrect.records import Problem


def generate(n_train: int, n_eval: int, *, digits: int = 1, seed: int = 0,
             eval_fraction: float = 0.5, n_dev: int = 0,
             dev_fraction: float = 0.0) -> list[Problem]:
    """n_train + n_eval distinct equations `a*x + b = c` with an integer solution.

    >>> ps = generate(3, 2, digits=1, seed=1)
    >>> [p.split for p in ps].count("eval"), ps[0].prompt.startswith("Solve for x:")
    (2, True)
    >>> all(int(p.id.split("=")[1]) == int(p.id[4:].split("x")[0]) * int(p.answer)
    ...     + int(p.id.split("x")[1].split("=")[0]) for p in ps)
    True
    """
    hi = 10 ** digits - 1
    space = hi * (2 * hi + 1) ** 2
    if n_train + n_eval > space // 2:
        raise ValueError(f"data: {n_train + n_eval} equations asked, but {digits}-digit "
                         f"equations give only about {space // 2} per split")

    def draw(rng: random.Random) -> Problem:
        a, b, x = rng.randint(1, hi), rng.randint(-hi, hi), rng.randint(-hi, hi)
        c = a * x + b
        lhs = f"{a}x" if a != 1 else "x"
        lhs += f" + {b}" if b > 0 else f" - {-b}" if b < 0 else ""
        return Problem(id=f"alg-{a}x{b:+d}={c}", task="math", prompt=f"Solve for x: {lhs} = {c}.",
                       answer=str(x), source="algebra", difficulty=f"ax+b {len(str(a))}-digit")

    return fill_splits(draw, n_train, n_eval, seed=seed, eval_fraction=eval_fraction,
                       n_dev=n_dev, dev_fraction=dev_fraction)
