"""What the testbed's base model does before any RL, measured on the dev split.

    selfcorrect testbed-base --model .cache/assets/testbed [--preset testbed] [--set ...]

Greedy two-attempt episodes give Accuracy@t1, @t2, Delta and its two parts (Delta_i->c: wrong
at t1, right at t2; Delta_c->i: the reverse), and how often attempt 2 checks (`check:...`).
The same with `--samples` episodes per problem at temperature 1 (the training policy). The
checker: every step of the model's own greedy attempt 1 is put to it as a checking document
(`check 47+5=42`) and its greedy verdict compared with the right one, on all steps, the hard
ones (a carry or a borrow), the right and the wrong ones, and how often the value the checker
writes for the step (`47+5 is 52`) is right; beside it, how often the model's own
steps are right (its solving), on all and on the hard ones.
"""
from __future__ import annotations

import re

from selfcorrect.data import chain


def episode_figures(episodes, verdict_of) -> dict[str, float]:
    """Accuracy@t1/@t2, Delta, its parts and the share of attempt 2s that check, in points.

    >>> from types import SimpleNamespace as N
    >>> eps = [N(first=N(text=a), second=N(text=b)) for a, b in [("1", "1"), ("1", "check:0"), ("0", "1")]]
    >>> episode_figures(eps, lambda e, t: t.text == "1")["delta"]
    0.0
    """
    n = len(episodes)
    right = [(verdict_of(e, e.first), verdict_of(e, e.second)) for e in episodes]
    t1 = 100 * sum(a for a, _ in right) / n
    t2 = 100 * sum(b for _, b in right) / n
    return {"accuracy_t1": t1, "accuracy_t2": t2, "delta": t2 - t1,
            "delta_i_to_c": 100 * sum(b and not a for a, b in right) / n,
            "delta_c_to_i": 100 * sum(a and not b for a, b in right) / n,
            "changed_answer": 100 * sum(e.first.text != e.second.text for e in episodes) / n,
            "checks": 100 * sum(e.second.text.startswith("check") for e in episodes) / n}


def checker_figures(model, tok, firsts: list[str], batch_size: int = 500) -> dict[str, float]:
    """The checker's accuracy on the steps of `firsts` (the model's own attempt 1s), overall and
    on the right and the wrong steps; and the share of those steps that are right."""
    from selfcorrect import prompts, rollout

    steps = [s for text in firsts for s in chain.steps_of(text)]
    if not steps:
        return {"steps": 0.0}
    texts = [prompts.render(tok, [{"role": "user", "content": f"check {s}"}]) for s in steps]
    said = rollout.generate(model, tok, texts, temperature=0.0, max_new_tokens=32,
                            batch_size=batch_size, desc="check steps")
    truth = [chain.check_step(s) for s in steps]
    hit = [[v for _, v in chain.verdicts_of(t.text)][-1:] == ["ok" if right else "wrong"]
           for t, right in zip(said, truth)]
    hard = [chain.is_hard(*_operands(s)) for s in steps]
    # the value the checker writes for the step (`47+5 is 52 ...`) against the right one
    recomputed = [bool(m) and int(m[1]) == chain.apply(*_operands(s))
                  for s, m in zip(steps, (re.search(r" is (-?\d+)", t.text) for t in said))]

    def share(values, where):
        kept = [v for v, w in zip(values, where) if w]
        return 100 * sum(kept) / len(kept) if kept else float("nan")

    every = [True] * len(steps)
    return {"steps": float(len(steps)), "hard_steps": float(sum(hard)),
            "solving_accuracy": share(truth, every), "solving_on_hard": share(truth, hard),
            "checker_accuracy": share(hit, every), "checker_on_hard": share(hit, hard),
            "checker_value_right": share(recomputed, every),
            "checker_value_right_on_hard": share(recomputed, hard),
            "checker_on_right_steps": share(hit, truth),
            "checker_on_wrong_steps": share(hit, [not t for t in truth])}


def _operands(step: str) -> tuple[int, str, int]:
    start, ((op, operand),) = chain.parse(step.split("=")[0])
    return start, op, operand


def measure(model, tok, problems, cfg, *, samples: int = 4) -> dict[str, dict[str, float]]:
    """Greedy and sampled episode figures and the checker's, on `problems`."""
    from selfcorrect import rollout
    from selfcorrect.verify import verify

    kw = dict(max_new_tokens=cfg.generate.max_new_tokens, batch_size=cfg.generate.batch_size,
              templates=cfg.prompts)
    greedy = rollout.two_attempts(model, tok, problems, temperature=0.0, **kw)
    right = lambda e, turn: verify(e.problem, turn.text).correct  # noqa: E731
    out = {"greedy": episode_figures(greedy, right),
           "checker": checker_figures(model, tok, [e.first.text for e in greedy])}
    if samples:
        sampled = rollout.two_attempts(model, tok, problems, samples=samples, temperature=1.0,
                                       seed=cfg.pretrain.seed, **kw)
        out["sampled"] = episode_figures(sampled, right)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from selfcorrect import config as config_mod, models
    from selfcorrect.data.prepare import prepare

    p = argparse.ArgumentParser(prog="selfcorrect testbed-base", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the pretrained testbed folder")
    p.add_argument("--preset", default="testbed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="dev", choices=("dev", "eval"))
    p.add_argument("--samples", type=int, default=4, help="sampled episodes per problem (0: none)")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.preset, None, args.set)
        problems = [q for q in prepare(cfg.data)[0] if q.split == args.split]
        if not problems:
            raise ValueError(f"no {args.split} problems: set data.n_dev and data.dev_fraction")
    except (config_mod.ConfigError, ValueError) as e:
        print(f"testbed-base: {e}", file=sys.stderr)
        return 2
    model, tok = models.load(cfg.model, args.model)
    figures = measure(model, tok, problems, cfg, samples=args.samples)
    print(json.dumps({"split": args.split, "problems": len(problems), **figures}, indent=1))
    return 0
