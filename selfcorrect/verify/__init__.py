"""The one verifier: `verify(problem, completion) -> Verdict`, for rewards, Beam and evaluation.

Training rewards, the Beam step (selfcorrect.verify.beam) and evaluation all call this same
function, so a reward and a metric can never disagree; with `custom` (verify.custom,
selfcorrect.verify.custom) it calls your check instead of the built-in ones, for all three. It is deterministic: math answers are
compared by math-verify with bounded input sizes (selfcorrect.verify.math); code runs in a
sandboxed process against its tests (selfcorrect.verify.code), where only a timeout depends on
the machine's speed.

>>> from selfcorrect.records import Problem
>>> p = Problem(id="arith-2+3", task="math", prompt="What is 2 + 3?", answer="5")
>>> verify(p, "2 + 3 = 5. Final Answer: The final answer is $5$. I hope it is correct.")
Verdict(problem_id='arith-2+3', sample=0, turn=1, correct=True, reward=1.0, reason='', verifier='math-verify')
>>> verify(p, "Final Answer: The final answer is $6$. I hope it is correct.", turn=2).reason
"wrong answer: got '6', expected '5'"
"""
from __future__ import annotations

from typing import Iterable, Mapping

from selfcorrect.records import Attempt, Problem, Verdict

TASKS = ("math", "code")


def verify(problem: Problem, completion: str, *, sample: int = 0, turn: int = 1,
           timeout_s: float = 10.0, custom: str = "") -> Verdict:
    """Check one completion of a problem: reward 1.0 when correct, else 0.0 with a reason.

    timeout_s is the wall-clock limit of a code run; math needs none (its work is bounded by
    input size, see selfcorrect.verify.math). Raises ValueError only for a problem that
    cannot be checked (unknown task, a code problem without tests), never for a completion.
    custom: "module:function" of your check (verify.custom), used instead of the built-in
    ones for every task; whatever it raises propagates (the Beam step's dead letters).
    """
    if custom:
        from selfcorrect.verify.custom import judge

        correct, reward, reason = judge(custom, problem, completion)
        return Verdict(problem_id=problem.id, sample=sample, turn=turn, correct=correct,
                       reward=reward, reason=reason, verifier=f"custom:{custom}")
    if problem.task == "math":
        from selfcorrect.verify import math as math_verifier

        correct, reason = math_verifier.check_answer(completion, problem.answer)
        verifier = math_verifier.VERIFIER
    elif problem.task == "code":
        from selfcorrect.verify import code as code_verifier

        result = code_verifier.run_tests(problem.prompt, completion, problem.test,
                                         problem.entry_point, timeout_s=timeout_s)
        correct, reason = result.passed, result.reason
        verifier = code_verifier.verifier_name()
    else:
        raise ValueError(f"problem {problem.id}: task {problem.task!r} has no verifier; "
                         f"tasks: {', '.join(TASKS)}")
    return Verdict(problem_id=problem.id, sample=sample, turn=turn, correct=correct,
                   reward=1.0 if correct else 0.0, reason=reason, verifier=verifier)


def verify_attempt(problem: Problem, attempt: Attempt, *, timeout_s: float = 10.0,
                   custom: str = "") -> Verdict:
    """verify() for an Attempt record (its sample and turn carry over to the Verdict)."""
    if attempt.problem_id != problem.id:
        raise ValueError(f"attempt of {attempt.problem_id!r} given problem {problem.id!r}")
    return verify(problem, attempt.completion, sample=attempt.sample, turn=attempt.turn,
                  timeout_s=timeout_s, custom=custom)


def verify_batch(problems_by_id: Mapping[str, Problem], attempts: Iterable[Attempt], *,
                 timeout_s: float = 10.0, custom: str = "") -> list[Verdict]:
    """verify_attempt() over attempts, in order, in this process (no Beam).

    An attempt whose problem is missing raises KeyError naming it.
    """
    out = []
    for attempt in attempts:
        try:
            problem = problems_by_id[attempt.problem_id]
        except KeyError:
            raise KeyError(f"attempt (sample {attempt.sample}, turn {attempt.turn}) names "
                           f"problem {attempt.problem_id!r}, which is not among the problems") from None
        out.append(verify_attempt(problem, attempt, timeout_s=timeout_s, custom=custom))
    return out


__all__ = ["verify", "verify_attempt", "verify_batch", "TASKS"]
