"""The records that cross pipeline steps, and their JSONL reading and writing.

Field names are the boundary contract (schemas/ holds the same as data files):
other pipelines feed and read these. A bad row is reported with file, row and field.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Iterable, TypeVar

from selfcorrect import storage


@dataclass(frozen=True)
class Problem:
    id: str
    task: str                 # "math" or "code"
    prompt: str
    answer: str = ""          # math: the reference final answer
    test: str = ""            # code: HumanEval-style test source defining check(candidate)
    entry_point: str = ""     # code: the function the tests call
    source: str = ""
    split: str = "train"      # "train" or "eval"


@dataclass(frozen=True)
class Attempt:
    problem_id: str
    sample: int               # which of the k samples of the problem
    turn: int                 # 1 or 2
    completion: str
    model: str                # name/version of the model that wrote it
    truncated: bool = False   # generation hit max_new_tokens


@dataclass(frozen=True)
class Verdict:
    problem_id: str
    sample: int
    turn: int
    correct: bool
    reward: float
    reason: str = ""          # why it failed or could not be checked; "" when correct
    verifier: str = ""        # which verifier decided


@dataclass(frozen=True)
class EvalRow:
    """One (problem, sample) episode of one evaluated model: both turns' outcomes."""
    model: str                # the evaluated model ("base", "stage1", "trained", ...)
    problem_id: str
    sample: int
    task: str                 # the problem's task, "math" or "code"
    difficulty: str           # selfcorrect.evaluate.difficulty label ("all" when unknown)
    correct_t1: bool
    correct_t2: bool
    edit_ratio: float         # Levenshtein(y1, y2) / (|y1| + |y2|); 0 = y2 copies y1
    same_answer: bool         # y2's final answer repeats y1's


R = TypeVar("R", Problem, Attempt, Verdict, EvalRow)


class RecordError(ValueError):
    """A row that does not fit its record type; names file, row and field."""

    def __init__(self, uri: str, row: int, field: str, why: str):
        self.uri, self.row, self.field = uri, row, field
        super().__init__(f"{uri}: row {row}: field '{field}': {why}")


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}


def from_dict(cls: type[R], data: dict, uri: str = "<memory>", row: int = 0) -> R:
    if not isinstance(data, dict):
        raise RecordError(uri, row, "*", f"expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise RecordError(uri, row, key, f"unknown field for {cls.__name__}; "
                                             f"fields are {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise RecordError(uri, row, name, "missing")
            continue
        value, want = data[name], _TYPES[f.type]
        if isinstance(value, bool) and f.type != "bool" or not isinstance(value, want):
            raise RecordError(uri, row, name, f"expected {f.type}, got {type(value).__name__} "
                                              f"{json.dumps(value)[:40]}")
        values[name] = float(value) if f.type == "float" else value
    return cls(**values)


def read_jsonl(uri: str, cls: type[R]) -> list[R]:
    """Read one record per line; empty lines are skipped; errors name file, row and field."""
    out = []
    for row, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(uri, row, "*", f"not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(from_dict(cls, data, uri, row))
    return out


def write_jsonl(uri: str, records: Iterable) -> int:
    """Write records atomically as JSONL; returns how many."""
    lines = [json.dumps(dataclasses.asdict(r), ensure_ascii=False) for r in records]
    storage.write_text(uri, "".join(line + "\n" for line in lines))
    return len(lines)
