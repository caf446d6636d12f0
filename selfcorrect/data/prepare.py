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
     (or the data section of --preset/--config/--set; a flag given wins over it)
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
from selfcorrect.data import algebra, arithmetic, chain, gym, hf, sources
from selfcorrect.data.arithmetic import split_of
from selfcorrect.records import Problem, RecordError

MAX_ID_CHARS = 256


def normalise_prompt(prompt: str) -> str:
    """The key for de-duplication: NFKC, case-folded, whitespace collapsed.

    >>> normalise_prompt("What  is\\n1+1?") == normalise_prompt("what is 1+1?")
    True
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", prompt).casefold()).strip()


GENERATED = ("arithmetic", "algebra", "reasoning_gym", "chain")
GENERATED_COUNT = 16                    # n_train / n_eval of 0 for a generated source


def prepare(cfg: DataConfig) -> tuple[list[Problem], dict]:
    """The run's problems, and counts of what each stage kept and removed (`describe` says it
    in words)."""
    if cfg.source in GENERATED:
        rows = _generate(cfg)
        return rows, {"read": len(rows), "duplicate_prompts": 0, "over_cap": 0,
                      "written": len(rows), "splits": _split_counts(rows, {})}
    parts = _parts(cfg)
    first_row: dict[str, tuple[int, str, int, str]] = {}
    seen_prompts: set[str] = set()
    kept: list[list[Problem]] = [[] for _ in parts]
    dupes = read = 0
    # eval and dev parts first: a prompt in both a test file and the train file stays in eval
    order = {"eval": 0, "dev": 1}
    for index in sorted(range(len(parts)), key=lambda i: (order.get(parts[i][0], 2), i)):
        fixed, loaded, eval_share, dev_share = parts[index]
        read += len(loaded)
        for uri, row, p in loaded:
            if len(p.prompt) > cfg.max_prompt_chars:
                raise RecordError(uri, row, "prompt", f"{len(p.prompt)} characters, over "
                                                      f"data.max_prompt_chars={cfg.max_prompt_chars}")
            _check_id(uri, row, p.id)
            key_id, key = unicodedata.normalize("NFC", p.id), normalise_prompt(p.prompt)
            if key_id in first_row:
                first, same, where, prompt = first_row[key_id]
                if where != index and prompt == key:    # the same problem in two sources
                    dupes += 1
                    continue
                at = f"row {first}" if where == index else f"row {first} of {parts[where][1][0][0]}"
                if same == p.id:
                    raise RecordError(uri, row, "id", f"duplicate id {p.id!r} (first at {at})")
                raise RecordError(uri, row, "id", f"duplicate id {p.id!a} (first at {at} as "
                                                  f"{same!a}: the same after Unicode NFC normalisation)")
            first_row[key_id] = (row, p.id, index, key)
            if key in seen_prompts:
                dupes += 1
                continue
            seen_prompts.add(key)
            split = fixed or p.split or split_of(p.id, eval_share, dev_share)
            kept[index].append(dataclasses.replace(p, split=split))
    want = {"train": cfg.n_train, "eval": cfg.n_eval, "dev": cfg.n_dev}
    left = {k: v or -1 for k, v in want.items()}          # -1: no cap
    found = [p for part in kept for p in part]
    out = []
    for p in found:
        if left[p.split]:
            left[p.split] -= 1
            out.append(p)
    return out, {"read": read, "duplicate_prompts": dupes, "over_cap": len(found) - len(out),
                 "written": len(out), "splits": _split_counts(out, {
                     s: sum(p.split == s for p in found) - sum(p.split == s for p in out)
                     for s in want})}


def _generate(cfg: DataConfig) -> list[Problem]:
    n_train, n_eval = cfg.n_train or GENERATED_COUNT, cfg.n_eval or GENERATED_COUNT
    splits = dict(eval_fraction=cfg.eval_fraction, n_dev=cfg.n_dev, dev_fraction=cfg.dev_fraction)
    if cfg.source == "chain":
        return chain.generate(n_train, n_eval, steps=cfg.chain_steps,
                              hard_share=cfg.chain_hard_share, seed=cfg.seed, **splits)
    if cfg.source == "arithmetic":
        return arithmetic.generate(n_train, n_eval, operations=cfg.operations, digits=cfg.digits,
                                   seed=cfg.seed, **splits)
    if cfg.source == "reasoning_gym":
        return gym.generate(cfg.gym_dataset, n_train, n_eval, seed=cfg.seed, **splits)
    return algebra.generate(n_train, n_eval, digits=cfg.digits, seed=cfg.seed, **splits)


def _parts(cfg: DataConfig) -> list[tuple[str, list, float, float]]:
    """(fixed split or "", rows, eval share, dev share) per source of rows: the main data (its
    rows split by id hash, less the shares that come from their own sources), a dataset's
    eval and dev splits, data.eval_path, data.dev_path."""
    def load(path: str, split: str | None = None):
        return sources.load(cfg.source, path, split=split, dataset_config=cfg.dataset_config,
                            columns=cfg.columns)

    if cfg.source == "humaneval":
        return [("", sources.load("humaneval"), cfg.eval_fraction, cfg.dev_fraction)]
    def rows_of(path: str, split: str):
        """All rows of a file or a dataset without splits, else the dataset's `split`."""
        return load(path, split if hf.has_splits(path, cfg.dataset_config) else None)

    named = hf.has_splits(cfg.path, cfg.dataset_config)
    extra = []
    if cfg.eval_path:
        extra.append(("eval", rows_of(cfg.eval_path, cfg.eval_split)))
    elif named:
        extra.append(("eval", load(cfg.path, cfg.eval_split)))
    if cfg.dev_path:
        extra.append(("dev", rows_of(cfg.dev_path, cfg.dev_split or cfg.train_split)))
    elif named and cfg.dev_split:
        extra.append(("dev", load(cfg.path, cfg.dev_split)))
    eval_share = 0.0 if any(s == "eval" for s, _ in extra) else cfg.eval_fraction
    dev_share = 0.0 if any(s == "dev" for s, _ in extra) else cfg.dev_fraction
    main = rows_of(cfg.path, cfg.train_split)
    return [("", main, eval_share, dev_share)] + [(s, rows, 0.0, 0.0) for s, rows in extra]


def _split_counts(rows: list[Problem], over_cap: dict[str, int]) -> dict[str, dict[str, int]]:
    return {s: {"kept": sum(p.split == s for p in rows), "over_cap": over_cap.get(s, 0)}
            for s in ("train", "dev", "eval")}


def describe(stats: dict, cfg: DataConfig) -> str:
    """What prepare kept and dropped, in words: caps by name, with the rows they dropped.

    >>> describe({"read": 10, "duplicate_prompts": 1, "over_cap": 3, "written": 6, "splits": {
    ...     "train": {"kept": 4, "over_cap": 3}, "dev": {"kept": 0, "over_cap": 0},
    ...     "eval": {"kept": 2, "over_cap": 0}}}, DataConfig(n_train=4))
    'data: 10 rows read, 1 duplicate prompt dropped; train 4 (data.n_train=4 dropped 3 rows; 0 keeps all), eval 2'
    """
    parts = [f"data: {stats['read']} rows read"]
    if stats["duplicate_prompts"]:
        parts[0] += (f", {stats['duplicate_prompts']} duplicate prompt"
                     f"{'s' if stats['duplicate_prompts'] > 1 else ''} dropped")
    shown = []
    for split, n in stats["splits"].items():
        if not n["kept"] and not n["over_cap"]:
            continue
        text = f"{split} {n['kept']}"
        if n["over_cap"]:
            text += (f" (data.n_{split}={getattr(cfg, 'n_' + split)} dropped {n['over_cap']} "
                     "rows; 0 keeps all)")
        shown.append(text)
    return "; ".join(parts + [", ".join(shown)])


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
    from selfcorrect import config
    from selfcorrect.cli import _config_args

    ap = argparse.ArgumentParser(
        prog="selfcorrect prepare",
        description="Turn your data (a .jsonl, .json or .parquet file or a Hugging Face "
        "dataset, local, gs:// or s3://) or a generated task into one problems file with "
        "train, dev and eval splits. The settings are the data section of --preset/--config/"
        "--set (see `selfcorrect config show`); a flag below, when given, wins over it. "
        "Prints how many rows each step kept and why any were dropped.")
    _config_args(ap)
    ap.add_argument("--source",
                    help="the format of your data (math, gsm8k, mbpp, generic) or a generated "
                         "task (arithmetic, algebra, reasoning_gym, humaneval, chain); default: "
                         "data.source of the settings")
    ap.add_argument("--gym-dataset", help="reasoning_gym: one of " + ", ".join(gym.GYM_DATASETS))
    ap.add_argument("--path", help="your data: a .jsonl/.json/.parquet file or a dataset "
                                   "(local, gs://, s3://, hf:<name>)")
    ap.add_argument("--output", required=True,
                    help="Problem records to write (local or gs://): Parquet when PATH ends in "
                         ".parquet, else JSONL")
    ap.add_argument("--eval-path", help="eval problems from their own file or dataset")
    ap.add_argument("--dev-path", help="dev problems from their own file or dataset")
    ap.add_argument("--columns", help="field=column pairs, e.g. question=problem")
    for name in ("train_split", "eval_split", "dev_split", "dataset_config"):
        ap.add_argument("--" + name.replace("_", "-"), help="Hugging Face dataset: " + name)
    for name in ("n_train", "n_eval", "n_dev", "max_prompt_chars", "digits", "seed"):
        ap.add_argument("--" + name.replace("_", "-"), type=int)
    ap.add_argument("--eval-fraction", type=float)
    ap.add_argument("--dev-fraction", type=float)
    ap.add_argument("--operations")
    ap.add_argument("--verdicts", help="base-model Verdict records (JSONL or Parquet) for the "
                                       "difficulty filter")
    ap.add_argument("--drop-always-solved", action="store_true")
    ap.add_argument("--drop-never-solved", action="store_true")
    args = ap.parse_args(argv)
    keys = {f.name for f in dataclasses.fields(DataConfig)}
    given = {k: v for k, v in vars(args).items() if k in keys and v not in (None, False, "")}
    try:
        settings = dataclasses.asdict(config.load(args.preset, args.config, args.overrides,
                                                  local=False).data)   # paths as given
        if given.get("source", settings["source"]) != settings["source"]:
            settings.update(path="", eval_path="", dev_path="")    # the other source's files
        cfg = build(DataConfig, {**settings, **given}, "data.")
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
    splits = {s: sum(p.split == s for p in problems) for s in ("train", "dev", "eval")}
    print(describe(stats, cfg), file=sys.stderr)
    print(json.dumps({"output": args.output, "source": cfg.source, **splits, **stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
