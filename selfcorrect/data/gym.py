"""Generated problems from `reasoning-gym` (offline, seeded), graded by the shared verifier.

Only datasets whose answers are a number or a fraction are offered (GYM_DATASETS): the
math verifier judges those exactly, and a test checks that it agrees with reasoning-gym's
own scorer on the reference answers and on wrong ones. A problem's id is a hash of its
question, and its split a hash of the id, as for the other generated sources.
"""
from __future__ import annotations

import hashlib
import random

from selfcorrect.data.arithmetic import fill_splits
from selfcorrect.records import Problem

GYM_DATASETS = ("gsm_symbolic", "basic_arithmetic", "chain_sum", "simple_equations", "products",
                "fraction_simplification", "leg_counting")


def problem_of(dataset: str, entry: dict) -> Problem:
    question, answer = entry["question"], str(entry["answer"]).strip().strip("$").strip()
    digest = hashlib.sha256(question.encode()).hexdigest()[:12]
    return Problem(id=f"rg-{dataset}-{digest}", task="math", prompt=question, answer=answer,
                   source=f"reasoning_gym:{dataset}")


def generate(dataset: str, n_train: int, n_eval: int, *, seed: int = 0,
             eval_fraction: float = 0.5, n_dev: int = 0,
             dev_fraction: float = 0.0) -> list[Problem]:
    """n_train + n_eval distinct problems of a reasoning-gym dataset (its default settings)."""
    if dataset not in GYM_DATASETS:
        raise ValueError(f"data.gym_dataset: {dataset!r} is not offered; offered: "
                         f"{', '.join(GYM_DATASETS)}")
    from selfcorrect import extras

    extras.require("data.source reasoning_gym", "data")
    import reasoning_gym

    pool = 4 * (n_train + n_eval + n_dev) + 64          # splits are drawn by hash: leave slack
    entries = iter(reasoning_gym.create_dataset(dataset, size=pool, seed=seed))

    def draw(_: random.Random) -> Problem:
        entry = next(entries, None)
        if entry is None:
            raise ValueError(f"data: reasoning-gym '{dataset}' gave too few distinct problems "
                             f"for {n_train} train + {n_eval} eval from {pool} draws")
        return problem_of(dataset, entry)

    return fill_splits(draw, n_train, n_eval, seed=seed, eval_fraction=eval_fraction,
                       n_dev=n_dev, dev_fraction=dev_fraction)
