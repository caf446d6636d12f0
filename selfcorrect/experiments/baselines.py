"""The paper's SFT baselines, built from a model's own verified attempts (docs/method.md).

    STaR      fine-tune on the model's two-attempt episodes whose attempt 2 is correct:
              [problem, attempt 1, instruction, attempt 2 (correct)], attempt 2 the target
    Pair-SFT  fine-tune on pairs of one incorrect and one correct attempt at the same
              problem: [problem, incorrect, instruction, correct], the correct one the target

Input are pipeline records: Attempt and Verdict rows as sample_attempts and verify_attempts
write them (the same verifier as the rewards), so a user runs either baseline on their own
model and data; `conversations` builds the training set, `run` samples, verifies and trains.
"""
from __future__ import annotations

import itertools
import random
from collections import defaultdict

from selfcorrect import prompts
from selfcorrect.records import Attempt, Problem, Verdict

METHODS = ("star", "pair_sft")


def conversations(method: str, problems: list[Problem], attempts: list[Attempt],
                  verdicts: list[Verdict], *, templates=None, per_problem: int = 4,
                  seed: int = 0) -> list[list[dict]]:
    """Training conversations for `method`, the last assistant turn the target.

    pair_sft takes at most `per_problem` (incorrect, correct) pairs per problem, drawn with
    `seed` from all pairs of its attempts (either turn).

    >>> p = Problem("q", "math", "1+1", answer="2")
    >>> a = [Attempt("q", 0, 1, "1+1=3", "m"), Attempt("q", 0, 2, "1+1=2", "m")]
    >>> v = [Verdict("q", 0, 1, False, 0.0, "x"), Verdict("q", 0, 2, True, 1.0, "x")]
    >>> [m["content"] for m in conversations("star", [p], a, v)[0]][1:]
    ['1+1=3', 'There might be an error in the solution above because of lack of understanding of the question. Please correct the error, if any, and rewrite the solution. Only output the final solution! At the end of the Solution, when you give your final answer, write it in the form "Final Answer: The final answer is $answer$. I hope it is correct."', '1+1=2']
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; SFT baselines are {', '.join(METHODS)}")
    by_id = {p.id: p for p in problems}
    text = {(a.problem_id, a.sample, a.turn): a.completion for a in attempts}
    correct = {(v.problem_id, v.sample, v.turn): v.correct for v in verdicts}
    missing = sorted(set(text) - set(correct))
    if missing:
        raise ValueError(f"attempts without a verdict, e.g. problem {missing[0][0]!r} sample "
                         f"{missing[0][1]} turn {missing[0][2]}: verify the attempts first")
    unknown = sorted({key[0] for key in text} - set(by_id))
    if unknown:
        raise ValueError(f"attempts name unknown problem {unknown[0]!r}")

    def episode(problem, first, second):
        return prompts.messages(problem, first, templates) + [{"role": "assistant", "content": second}]

    out = []
    if method == "star":
        for (pid, sample, turn), ok in sorted(correct.items()):
            if turn == 2 and ok and (pid, sample, 1) in text:
                out.append(episode(by_id[pid], text[(pid, sample, 1)], text[(pid, sample, 2)]))
        return out
    rng = random.Random(seed)
    right, wrong = defaultdict(list), defaultdict(list)
    for key, ok in sorted(correct.items()):
        if key in text:
            (right if ok else wrong)[key[0]].append(text[key])
    for pid in sorted(right):
        pairs = list(itertools.product(sorted(set(wrong[pid])), sorted(set(right[pid]))))
        for bad, good in rng.sample(pairs, min(per_problem, len(pairs))):
            out.append(episode(by_id[pid], bad, good))
    return out


def sample_and_verify(cfg, model, tok, problems: list[Problem], episodes: int, name: str):
    """`episodes` two-attempt episodes of `model` at train.temperature over `problems` (seeded
    cycle, samples_per_problem each), judged by the shared verifier: (attempts, verdicts)."""
    from selfcorrect import rollout
    from selfcorrect.train.loop import cycle
    from selfcorrect.verify import verify_attempt

    k = cfg.train.samples_per_problem
    stream = cycle(problems, cfg.train.seed)
    batch = [next(stream) for _ in range(max(1, episodes // k))]
    by_id = {p.id: p for p in batch}
    eps = rollout.two_attempts(model, tok, batch, samples=k, temperature=cfg.train.temperature,
                               seed=cfg.train.seed,
                               max_new_tokens=cfg.train.max_new_tokens,
                               batch_size=cfg.generate.batch_size, templates=cfg.prompts)
    # the same problem can come round twice in the cycle: number its samples apart
    seen: dict[str, int] = defaultdict(int)
    attempts, verdicts = [], []
    for e in eps:
        sample = seen[e.problem.id]
        seen[e.problem.id] += 1
        for a in e.attempts(name):
            a = Attempt(a.problem_id, sample, a.turn, a.completion, a.model, a.truncated)
            attempts.append(a)
            verdicts.append(verify_attempt(by_id[a.problem_id], a, timeout_s=cfg.verify.timeout_s,
                                           custom=cfg.verify.custom))
    return attempts, verdicts


def budget(train) -> tuple[int, int]:
    """(gradient steps, rows per step): the RL rows' budget, stage1_steps + stage2_steps steps
    of problems_per_step * samples_per_problem episodes."""
    return train.stage1_steps + train.stage2_steps, train.problems_per_step * train.samples_per_problem


def train(cfg, method: str, base_model: str, problems: list[Problem], attempts: list[Attempt],
          verdicts: list[Verdict], output_dir: str, *, model=None, tok=None) -> list[dict]:
    """Build `method`'s data from verified attempts, fine-tune the base model
    (stage1_steps + stage2_steps steps of problems_per_step * samples_per_problem rows at a
    constant train.learning_rate: the RL rows' budget and schedule), save the model folder;
    returns the history."""
    from selfcorrect import models
    from selfcorrect.train import sft

    t = cfg.train
    data = conversations(method, problems, attempts, verdicts, templates=cfg.prompts,
                         per_problem=t.samples_per_problem, seed=t.seed)
    if not data:
        raise ValueError(f"{method}: the base model's {len(attempts) // 2} episodes gave no "
                         "training example (no correct attempt 2 / no incorrect-correct pair)")
    if model is None:
        model, tok = models.load(cfg.model, base_model)
    rows = [row for c in data for row in sft.turn_rows(tok, c, last_only=True)]
    steps, batch = budget(t)
    engine, history = sft.train(model, tok, rows, sft.SFTConfig(
        steps=steps, batch_size=batch, learning_rate=t.learning_rate, seed=t.seed, decay=False),
        t, desc=method)
    history[0]["examples"] = float(len(data))
    sft.save(engine, tok, output_dir, config=cfg.to_dict(), history=history)
    return history


def run(cfg, method: str, base_model: str, problems: list[Problem], output_dir: str) -> list[dict]:
    """The whole baseline from a model folder: sample the RL rows' episode budget from the
    base model at train.temperature, verify, then `train`."""
    from selfcorrect import models

    steps, batch = budget(cfg.train)
    model, tok = models.load(cfg.model, base_model)
    attempts, verdicts = sample_and_verify(cfg, model, tok, problems, steps * batch, "base")
    return train(cfg, method, base_model, problems, attempts, verdicts, output_dir,
                 model=model, tok=tok)
