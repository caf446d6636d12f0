"""source -> normalise -> size limit -> unique ids -> dedupe by prompt -> hash split -> caps.

    problems, stats = prepare(DataConfig(source="gsm8k", path="gs://b/gsm8k/train.jsonl"))

Output is Problem records (records.write, atomic): JSONL, or Parquet when the output path
ends in .parquet; every step reads both. Nothing is dropped silently: `stats` counts what
each stage removed, and the CLI prints it. Bad input raises RecordError (file, row, field);
the CLI turns it into exit code 2 and writes nothing. Ids must be unique (also after
Unicode NFC normalisation), at most MAX_ID_CHARS long, without control characters or
whitespace at either end. `difficulty_filter` drops train problems the base model solves always or
never, from its verdicts.

CLI: selfcorrect prepare --source SOURCE [--path FILE] --output PATH [--n-train N] ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import unicodedata
from collections import defaultdict

from selfcorrect import records, storage
from selfcorrect.config import ConfigError, DataConfig, build
from selfcorrect.data import algebra, arithmetic, chain, gym, sources
from selfcorrect.data.arithmetic import split_of
from selfcorrect.records import Problem, RecordError

MAX_ID_CHARS = 256


def normalise_prompt(prompt: str) -> str:
    """The key for de-duplication: NFKC, case-folded, whitespace collapsed.

    >>> normalise_prompt("What  is\\n1+1?") == normalise_prompt("what is 1+1?")
    True
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", prompt).casefold()).strip()


def prepare(cfg: DataConfig) -> tuple[list[Problem], dict]:
    """The run's problems, and counts of what each stage kept and removed."""
    if cfg.source in ("arithmetic", "algebra", "reasoning_gym", "chain"):
        if cfg.source == "chain":
            rows = chain.generate(cfg.n_train, cfg.n_eval, steps=cfg.chain_steps,
                                  hard_share=cfg.chain_hard_share, seed=cfg.seed,
                                  eval_fraction=cfg.eval_fraction)
        elif cfg.source == "arithmetic":
            rows = arithmetic.generate(cfg.n_train, cfg.n_eval, operations=cfg.operations,
                                       digits=cfg.digits, seed=cfg.seed, eval_fraction=cfg.eval_fraction)
        elif cfg.source == "reasoning_gym":
            rows = gym.generate(cfg.gym_dataset, cfg.n_train, cfg.n_eval, seed=cfg.seed,
                                eval_fraction=cfg.eval_fraction)
        else:
            rows = algebra.generate(cfg.n_train, cfg.n_eval, digits=cfg.digits, seed=cfg.seed,
                                    eval_fraction=cfg.eval_fraction)
        return rows, {"read": len(rows), "duplicate_prompts": 0, "over_cap": 0, "written": len(rows)}
    loaded = sources.load(cfg.source, cfg.path)
    first_row: dict[str, tuple[int, str]] = {}
    seen_prompts: set[str] = set()
    kept, dupes = [], 0
    for uri, row, p in loaded:
        if len(p.prompt) > cfg.max_prompt_chars:
            raise RecordError(uri, row, "prompt", f"{len(p.prompt)} characters, over data.max_prompt_chars="
                                                  f"{cfg.max_prompt_chars}")
        _check_id(uri, row, p.id)
        key_id = unicodedata.normalize("NFC", p.id)
        if key_id in first_row:
            first, same = first_row[key_id]
            if same == p.id:
                raise RecordError(uri, row, "id", f"duplicate id {p.id!r} (first at row {first})")
            raise RecordError(uri, row, "id", f"duplicate id {p.id!a} (first at row {first} as "
                                              f"{same!a}: the same after Unicode NFC normalisation)")
        first_row[key_id] = (row, p.id)
        key = normalise_prompt(p.prompt)
        if key in seen_prompts:
            dupes += 1
            continue
        seen_prompts.add(key)
        kept.append(p if p.split else dataclasses.replace(p, split=split_of(p.id, cfg.eval_fraction)))
    want = {"train": cfg.n_train, "eval": cfg.n_eval}
    out = []
    for p in kept:
        if want[p.split]:
            want[p.split] -= 1
            out.append(p)
    return out, {"read": len(loaded), "duplicate_prompts": dupes, "over_cap": len(kept) - len(out),
                 "written": len(out)}


def _check_id(uri: str, row: int, pid: str) -> None:
    if pid != pid.strip():
        raise RecordError(uri, row, "id", f"{pid[:40]!r} has whitespace at an end")
    bad = next((c for c in pid if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise RecordError(uri, row, "id", f"holds the control character {bad!r}")
    if len(pid) > MAX_ID_CHARS:
        raise RecordError(uri, row, "id", f"{len(pid)} characters, over {MAX_ID_CHARS}")


def solve_rates(verdicts: list[records.Verdict], turn: int = 1) -> dict[str, float]:
    """Share of correct verdicts per problem, over the given turn's samples."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in verdicts:
        if v.turn == turn:
            tally[v.problem_id][0] += v.correct
            tally[v.problem_id][1] += 1
    return {pid: right / n for pid, (right, n) in tally.items()}


def difficulty_filter(problems: list[Problem], verdicts: list[records.Verdict], *,
                      drop_always: bool = True, drop_never: bool = True,
                      splits: tuple[str, ...] = ("train",)) -> tuple[list[Problem], dict]:
    """Drop problems of `splits` that the base model solved on every (or no) first attempt.

    Problems without verdicts are kept and counted; eval stays whole by default, so
    before/after comparisons use the same problems.

    >>> P = lambda i: Problem(i, "math", "q" + i, answer="1")
    >>> V = lambda i, ok: records.Verdict(i, 0, 1, ok, float(ok))
    >>> kept, n = difficulty_filter([P("a"), P("b"), P("c")], [V("a", True), V("b", False)])
    >>> [p.id for p in kept], n
    (['c'], {'always_solved': 1, 'never_solved': 1, 'no_verdicts': 1, 'kept': 1})
    """
    rates = solve_rates(verdicts)
    counts = {"always_solved": 0, "never_solved": 0, "no_verdicts": 0, "kept": 0}
    kept = []
    for p in problems:
        rate = rates.get(p.id)
        if p.split in splits and rate is None:
            counts["no_verdicts"] += 1
        elif p.split in splits and drop_always and rate == 1.0:
            counts["always_solved"] += 1
            continue
        elif p.split in splits and drop_never and rate == 0.0:
            counts["never_solved"] += 1
            continue
        kept.append(p)
    counts["kept"] = len(kept)
    return kept, counts


def main(argv: list[str] | None = None) -> int:
    """`selfcorrect prepare`: exit 0 written, 2 bad configuration or unusable input."""
    ap = argparse.ArgumentParser(prog="selfcorrect prepare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True,
                    help="arithmetic, algebra, reasoning_gym, humaneval, math, gsm8k, mbpp, generic")
    ap.add_argument("--gym-dataset", help="reasoning_gym: one of " + ", ".join(gym.GYM_DATASETS))
    ap.add_argument("--path", default="", help="input .jsonl/.json/.parquet file (local or gs://)")
    ap.add_argument("--output", required=True,
                    help="Problem records to write (local or gs://): Parquet when PATH ends in "
                         ".parquet, else JSONL")
    for name in ("n_train", "n_eval", "max_prompt_chars", "digits", "seed"):
        ap.add_argument("--" + name.replace("_", "-"), type=int)
    ap.add_argument("--eval-fraction", type=float)
    ap.add_argument("--operations")
    ap.add_argument("--verdicts", help="base-model Verdict records (JSONL or Parquet) for the "
                                       "difficulty filter")
    ap.add_argument("--drop-always-solved", action="store_true")
    ap.add_argument("--drop-never-solved", action="store_true")
    args = ap.parse_args(argv)
    keys = {f.name for f in dataclasses.fields(DataConfig)}
    given = {k: v for k, v in vars(args).items() if k in keys and v not in (None, False)}
    try:
        cfg = build(DataConfig, given, "data.")
        if (cfg.drop_always_solved or cfg.drop_never_solved) and not args.verdicts:
            raise ConfigError("--drop-always-solved/--drop-never-solved: need --verdicts FILE")
        if args.verdicts and storage.same_location(args.verdicts, args.output):
            raise ConfigError(f"--output {args.output}: the same file as --verdicts; it would "
                              "replace the verdicts")
        problems, stats = prepare(cfg)
        if args.verdicts:
            verdicts = records.read(args.verdicts, records.Verdict)
            problems, stats["difficulty"] = difficulty_filter(
                problems, verdicts, drop_always=cfg.drop_always_solved, drop_never=cfg.drop_never_solved)
        if not problems:
            raise ConfigError("no problems left to write; check n_train/n_eval and the filter")
        records.write(args.output, problems)
    except ConfigError as e:
        print(f"selfcorrect prepare: config error: {e}", file=sys.stderr)
        return 2
    except (OSError, RecordError, ValueError) as e:
        print(f"selfcorrect prepare: unusable input: {e}", file=sys.stderr)
        return 2
    splits = {s: sum(p.split == s for p in problems) for s in ("train", "eval")}
    print(json.dumps({"output": args.output, "source": cfg.source, **splits, **stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
