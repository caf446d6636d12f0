"""Your verifier: a function of (problem, completion) plugged in by import path.

    verify:
      custom: mypkg.checks:exact_match

    def exact_match(problem, completion):       # problem: selfcorrect.records.Problem
        return completion.strip().lower() == problem.answer.lower()

The function returns its verdict as one of:

    True / False              correct or not (reward 1.0 or 0.0)
    a number in [0, 1]        the reward (partial credit); correct when it is 1
    (either of those, "why")  the same, with the reason recorded when it is not correct

selfcorrect.verify.verify() calls it instead of the built-in checks whenever verify.custom
is set, so the Beam step, evaluation and the training rewards all judge with it. Anything
else it returns, and any exception it raises, is the check's own failure: a dead letter in
the Beam step (counted, the run goes on), an error naming the problem in training.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import math
import numbers
from typing import Callable

from selfcorrect.config import ConfigError


@functools.lru_cache(maxsize=None)
def load_check(spec: str) -> Callable:
    """The function `spec` ("module.path:function") names, imported; ConfigError naming
    verify.custom and what is wrong when it cannot be."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"verify.custom: {spec!r}; use module:function, e.g. "
                          "mypkg.checks:exact_match")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"verify.custom: {spec!r}: no module named {e.name!r}; install the "
                          "package that holds it, or put its folder on PYTHONPATH") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"verify.custom: {spec!r}: importing {module_name} raised "
                          f"{type(e).__name__}: {e}") from e
    func = getattr(module, attr, None)
    if func is None:
        names = [n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean {module_name}:{close[0]}?" if close else ""
        raise ConfigError(f"verify.custom: {spec!r}: {module_name} ({module.__file__}) has no "
                          f"{attr!r}{hint}")
    if not callable(func):
        raise ConfigError(f"verify.custom: {spec!r}: {attr} is a {type(func).__name__}, not a "
                          "function of (problem, completion)")
    return func


def judge(spec: str, problem, completion: str) -> tuple[bool, float, str]:
    """(correct, reward, reason) of the check `spec` on one completion; TypeError or
    ValueError when it returns something else than a verdict (see the module)."""
    result = load_check(spec)(problem, completion)
    reason = ""
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], str):
            raise TypeError(f"{spec} returned the tuple {result!r}; a pair is (verdict, reason "
                            "as text)")
        result, reason = result
    if isinstance(result, bool):
        correct, reward = result, float(result)
    elif isinstance(result, numbers.Real):
        reward = float(result)
        if math.isnan(reward) or not 0.0 <= reward <= 1.0:
            raise ValueError(f"{spec} returned the reward {result!r}; a reward is in [0, 1]")
        correct = reward == 1.0
    else:
        raise TypeError(f"{spec} returned {type(result).__name__} {result!r}; return True or "
                        "False, a reward in [0, 1], or (either, reason)")
    if correct:
        return True, reward, ""
    return False, reward, reason or f"not accepted by {spec}"
