"""Data gates: the Great Expectations suites in schemas/, run over a JSONL or Parquet dataset.

    result = validate("attempts", "out/attempts.jsonl", problems_uri="out/problems.jsonl")
    gate("verdicts", uri, "out/verdicts_gate.md")   # writes the report; raises GateFailed

A dataset is read with records.read (JSONL or Parquet, told apart by content), so unusable
input (missing file, not JSON, not UTF-8, wrong field types) raises RecordError /
StorageError / FileNotFoundError naming file, row and field; an empty file is unusable too.
Its suite (schemas/<kind>.suite.json, a GX 1.x ExpectationSuite as data, generated from the
record's JSON Schema by selfcorrect.contract) runs in an ephemeral GX context; the checks
that need more than one dataset or more than one row (meta.cross_checks) run in pandas and
are reported in the same Result. GX and pandas are imported inside the functions.

Shares are configurable: an expectation whose meta.threshold names a key of THRESHOLDS
takes `thresholds={"max_truncated_share": 0.2}` as mostly = 1 - share; one whose meta.limit
names a key of LIMITS takes `thresholds={"max_stage1_kl_t1": 0.5}` as its max_value (problems:
`{"max_prompt_chars": 8000}`, data.max_prompt_chars, bounds a prompt's length). Quarantine
(gate(..., quarantine_uri=, clean_uri=)) moves rows that fail row-level checks to a
quarantine file (each with the checks it failed) and writes the rest, re-checked, as the
clean dataset; both keep the input's format (Parquet stays Parquet) unless their names end
in .jsonl or .parquet. Failures no row removal can fix (columns, shares) still fail the
gate. An output may not be an input (the clean file may replace the dataset itself).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import html
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files

from selfcorrect import contract, records, storage

KINDS = {"problems": records.Problem, "attempts": records.Attempt, "verdicts": records.Verdict,
         "eval_rows": records.EvalRow, "train_steps": records.TrainStep}
MAX_EXAMPLES = 3
THRESHOLDS = ("max_empty_share", "max_truncated_share")   # shares of rows, 0..1
LIMITS = ("max_stage1_kl_t1", "max_prompt_chars")         # upper bounds on a column's values
WHOLE = ("max_prompt_chars",)                              # limits that are whole numbers
CROSS_CHECKS = {
    "problem_id_known": "every problem_id names a problem in the problems file",
    "turn2_has_turn1": "every turn-2 row has a turn-1 row with the same (problem_id, sample)",
    "models_cover_same_episodes": "every model is evaluated on the same (problem_id, sample) episodes",
    "steps_complete": "each stage's steps run 0, 1, ..., n-1 without a gap",
}


@dataclass(frozen=True)
class Failure:
    check: str                  # GX expectation type, or a name from CROSS_CHECKS
    column: str | None          # None for table-level expectations
    detail: str                 # what was expected, and how often it was not met
    examples: list[dict] = field(default_factory=list)  # up to 3: {"row": n, key..., column: value}
    rows: list[int] = field(default_factory=list)  # every failing row (1-based), where quarantinable


@dataclass
class Result:
    kind: str
    uri: str
    rows: int
    checks: int                 # how many expectations and cross checks ran
    failures: list[Failure]
    skipped: list[str] = field(default_factory=list)  # cross checks that could not run, and why
    html: str = ""              # GX Data Docs validation page, plus a cross-check section
    quarantined: dict[str, int] = field(default_factory=dict)  # check -> rows moved out

    @property
    def success(self) -> bool:
        return not self.failures

    def markdown(self) -> str:
        verdict = "passed" if self.success else "FAILED"
        lines = [f"### Data gate `{self.kind}`: {verdict}", "",
                 f"`{self.uri}`: {self.rows} rows; {len(self.failures)} of {self.checks} checks failed.", ""]
        for f in self.failures:
            where = f" (`{f.column}`)" if f.column else ""
            lines.append(f"- **{f.check}**{where}: {f.detail}")
            lines += [f"  - {_format_row(e)}" for e in f.examples]
        lines += [f"- skipped {s}" for s in self.skipped]
        if self.quarantined:
            lines += ["", f"Quarantined {self.quarantined.get('rows', 0)} rows; rows per failed check:"]
            lines += [f"- {check}: {n}" for check, n in self.quarantined.items() if check != "rows"]
        return "\n".join(lines).rstrip() + "\n"


class GateFailed(RuntimeError):
    """A dataset failed its gate; the message is the Markdown summary."""

    def __init__(self, result: Result):
        self.result = result
        super().__init__(result.markdown())


@lru_cache(maxsize=None)
def _schema_text(name: str) -> str:
    return files("selfcorrect.schemas").joinpath(name).read_text(encoding="utf-8")


def load_suite(kind: str) -> dict:
    """The kind's GX suite as a dict: gx.ExpectationSuite(**load_suite(kind)) builds it."""
    _record_type(kind)
    return json.loads(_schema_text(f"{kind}.suite.json"))


def validate(kind: str, uri: str, *, problems_uri: str | None = None,
             thresholds: dict[str, float] | None = None) -> Result:
    """Run the kind's suite and cross checks over the dataset (JSONL or Parquet) at uri."""
    if problems_uri is not None and kind == "problems":
        raise ValueError("problems_uri is for attempts, verdicts and eval_rows, not for problems")
    df = _read_frame(uri, _record_type(kind))
    known = None if problems_uri is None else set(_read_frame(problems_uri, records.Problem)["id"])
    return _check(kind, str(uri), df, known, suite_with(kind, thresholds))


def suite_with(kind: str, thresholds: dict[str, float] | None = None) -> dict:
    """The kind's suite with shares and limits set: {"max_empty_share": 0.05} -> mostly
    0.95; {"max_stage1_kl_t1": 0.5} -> max_value 0.5; {"max_prompt_chars": 4000} -> prompts
    of at most 4000 characters. Names a suite does not use are ignored."""
    import math

    suite = load_suite(kind)
    for name, value in (thresholds or {}).items():
        if name not in THRESHOLDS + LIMITS:
            raise ValueError(f"unknown threshold {name!r}; thresholds: "
                             f"{', '.join(THRESHOLDS + LIMITS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"threshold {name}: a finite number, got {value!r}")
        if name in THRESHOLDS and not 0 <= value <= 1:
            raise ValueError(f"threshold {name}: a share between 0 and 1, got {value!r}")
        if name in WHOLE and not (value == int(value) and value >= 1):
            raise ValueError(f"threshold {name}: a whole number >= 1, got {value!r}")
        value = int(value) if name in WHOLE else float(value)
        for e in suite["expectations"]:
            if e.get("meta", {}).get("threshold") == name:
                e["kwargs"]["mostly"] = 1 - float(value)
            if e.get("meta", {}).get("limit") == name:
                e["kwargs"]["max_value"] = value
    return suite


def _check(kind: str, uri: str, df, known: set | None, suite: dict, complete: bool = False) -> Result:
    key = suite["meta"]["key"]
    gx_result = _run_suite(suite, df, complete)
    failures = [_gx_failure(r, df, key) for r in gx_result.results if not r.success]
    cross, skipped = [], []
    for name in suite["meta"]["cross_checks"]:
        if name == "problem_id_known" and known is None:
            skipped.append(f"{name}: no problems file given")
            continue
        bad, column = _cross_check(name, df, known)
        if len(bad):
            cross.append(Failure(name, column, f"{CROSS_CHECKS[name]}: {len(bad)} of {len(df)} rows fail",
                                 _examples(df, bad[:MAX_EXAMPLES], key, column), [int(i) + 1 for i in bad]))
    checks = len(gx_result.results) + len(suite["meta"]["cross_checks"]) - len(skipped)
    result = Result(kind, uri, len(df), checks, failures + cross, skipped)
    result.html = _render_html(gx_result, result, cross)
    return result


def gate(kind: str, uri: str, report_path: str, *, problems_uri: str | None = None,
         html_path: str | None = None, thresholds: dict[str, float] | None = None,
         quarantine_uri: str | None = None, clean_uri: str | None = None) -> Result:
    """validate(), then always write the Markdown report (and the HTML page if html_path);
    raise GateFailed when anything failed. Unusable input is reported, then re-raised.

    With quarantine_uri (and clean_uri), rows failing row-level checks go to quarantine_uri
    and the rest to clean_uri; the gate then judges the clean rows (see quarantine())."""
    if (quarantine_uri is None) != (clean_uri is None):
        raise ValueError("quarantine_uri and clean_uri go together")
    _distinct_paths({"dataset": uri, "problems file": problems_uri},
                    {"report": report_path, "HTML page": html_path, "quarantine file": quarantine_uri,
                     "clean file": clean_uri}, in_place="clean file")
    try:
        if quarantine_uri is None:
            result = validate(kind, uri, problems_uri=problems_uri, thresholds=thresholds)
        else:
            result = quarantine(kind, uri, quarantine_uri, clean_uri, problems_uri=problems_uri,
                                thresholds=thresholds)
    except Exception as e:
        storage.write_text(report_path, f"### Data gate `{kind}`: UNUSABLE INPUT\n\n{e}\n")
        raise
    storage.write_text(report_path, result.markdown())
    if html_path:
        storage.write_text(html_path, result.html)
    if not result.success:
        raise GateFailed(result)
    return result


def quarantine(kind: str, uri: str, quarantine_uri: str, clean_uri: str, *,
               problems_uri: str | None = None, thresholds: dict[str, float] | None = None) -> Result:
    """Move the rows that fail row-level checks out, re-check the rest, until nothing more
    can move (a turn-1 row moved out can orphan its turn 2). Writes both files only when
    the rest passes; otherwise returns the failing Result and writes nothing."""
    if problems_uri is not None and kind == "problems":
        raise ValueError("problems_uri is for attempts, verdicts and eval_rows, not for problems")
    cls = _record_type(kind)
    _distinct_paths({"dataset": uri, "problems file": problems_uri},
                    {"quarantine file": quarantine_uri, "clean file": clean_uri}, in_place="clean file")
    data = storage.read_bytes(uri)
    rows = records.from_bytes(str(uri), data, cls)
    df = _read_frame(uri, cls, rows)
    known = None if problems_uri is None else set(_read_frame(problems_uri, records.Problem)["id"])
    suite = suite_with(kind, thresholds)
    moved: dict[int, list[str]] = {}
    while True:
        result = _check(kind, str(uri), df.drop(index=[r - 1 for r in moved]), known, suite, complete=True)
        if result.success or not all(f.rows for f in result.failures):
            break
        for f in result.failures:
            for r in f.rows:
                moved.setdefault(r, []).append(f.check + (f" ({f.column})" if f.column else ""))
    if result.success and moved and len(moved) == len(rows):
        result.failures.append(Failure("quarantine", None, f"all {len(rows)} rows failed row checks; "
                                                           "nothing is left to pass on"))
    if not result.success:
        return result
    bad = [{"row": r, "failed": checks, "record": dataclasses.asdict(rows[r - 1])}
           for r, checks in sorted(moved.items())]
    fmt = records.format_of(data)
    _write_quarantine(quarantine_uri, bad, cls, _format_for(quarantine_uri, fmt))
    records.write(clean_uri, [r for i, r in enumerate(rows, start=1) if i not in moved],
                  _format_for(clean_uri, fmt), cls=cls)
    counts = {"rows": len(moved)}
    for checks in moved.values():
        for c in checks:
            counts[c] = counts.get(c, 0) + 1
    result.quarantined = counts
    return result


def _format_for(uri: str, input_format: str) -> str:
    """An output's format: its suffix (.parquet, .jsonl) when it has one, else the input's."""
    low = str(uri).lower()
    return "parquet" if low.endswith(".parquet") else "jsonl" if low.endswith(".jsonl") else input_format


def _write_quarantine(uri: str, bad: list[dict], cls: type, fmt: str) -> None:
    """Quarantined rows as {"row", "failed": [check, ...], "record": {...}}: JSONL lines, or
    Parquet with a list column and a struct column of the record's fields."""
    if fmt == "jsonl":
        storage.write_text(uri, "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad))
        return
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field("row", pa.int64(), nullable=False),
                        pa.field("failed", pa.list_(pa.string()), nullable=False),
                        pa.field("record", pa.struct(list(records.arrow_schema(cls))), nullable=False)])
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(bad, schema=schema), sink)
    storage.write_bytes(uri, sink.getvalue())


def _distinct_paths(inputs: dict[str, str | None], outputs: dict[str, str | None],
                    in_place: str | None = None) -> None:
    """ValueError when an output would replace an input or another output; the output named
    by in_place may replace the dataset (it is written only when everything passed)."""
    given = [(label, uri) for label, uri in outputs.items() if uri]
    for i, (label, uri) in enumerate(given):
        for other, other_uri in [*((k, u) for k, u in inputs.items() if u), *given[:i]]:
            if storage.same_location(uri, other_uri) and not (label == in_place and other == "dataset"):
                raise ValueError(f"{uri}: the {label} is the same file as the {other}; "
                                 f"writing it would replace the {other}")


def _record_type(kind: str) -> type:
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; kinds are {', '.join(KINDS)}")
    return KINDS[kind]


def _read_frame(uri: str, cls: type, rows: list | None = None):
    import pandas as pd

    rows = records.read(uri, cls) if rows is None else rows
    if not rows:
        raise records.RecordError(str(uri), None, None, "no records: the file is empty")
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def _run_suite(suite_spec: dict, df, complete: bool = False):
    """One real GX 1.x run: ephemeral context, pandas source, whole-dataframe batch."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                               analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    name = suite_spec["name"]
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(**copy.deepcopy(suite_spec)))
    run = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return run.run(batch_parameters={"dataframe": df},
                   result_format={"result_format": "COMPLETE" if complete else "SUMMARY",
                                  "partial_unexpected_count": MAX_EXAMPLES})


def _gx_failure(r, df, key: list[str]) -> Failure:
    config = r.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or ", ".join(kwargs.get("column_list", [])) or None
    what = config.description or config.type
    limit = (config.meta or {}).get("limit")
    if limit:
        what += f" ({limit} = {kwargs['max_value']:g})"
    info, res = r.exception_info or {}, r.result or {}
    if info.get("raised_exception"):
        return Failure(config.type, column, f"{what}: could not run ({info.get('exception_message')})")
    if "unexpected_count" not in res:
        return Failure(config.type, column, f"{what}: observed {res.get('observed_value')!r}")
    detail = f"{what}: {res['unexpected_count']} of {res['element_count']} rows fail"
    if kwargs.get("mostly", 1) < 1:
        detail += f" ({res['unexpected_percent']:.1f}%; at most {1 - kwargs['mostly']:.0%} allowed)"
    shown = kwargs.get("column") or (kwargs.get("column_list") or [None])[0]
    every = res.get("unexpected_index_list") or []
    # rows can be quarantined only for all-rows checks; a share over its threshold is systemic
    rows = [int(i) + 1 for i in every] if kwargs.get("mostly", 1) == 1 else []
    return Failure(config.type, column, detail,
                   _examples(df, res.get("partial_unexpected_index_list", [])[:MAX_EXAMPLES], key, shown), rows)


def _cross_check(name: str, df, known: set | None):
    """The index labels of the rows that fail a cross check, and the column it is about."""
    import pandas as pd

    if name == "problem_id_known":
        return df.index[~df["problem_id"].isin(known)], "problem_id"
    if name == "turn2_has_turn1":
        pairs = pd.MultiIndex.from_frame(df[["problem_id", "sample"]])
        has_first = pairs.isin(pairs[(df["turn"] == 1).to_numpy()])
        return df.index[(df["turn"] == 2).to_numpy() & ~has_first], "turn"
    if name == "models_cover_same_episodes":
        models = df.groupby(["problem_id", "sample"])["model"].transform("nunique")
        return df.index[(models < df["model"].nunique()).to_numpy()], "model"
    if name == "steps_complete":
        # n distinct steps in a stage must be 0..n-1: a step >= n stands after a gap
        distinct = df.groupby("stage")["step"].transform("nunique")
        return df.index[(df["step"] >= distinct).to_numpy()], "step"
    raise ValueError(f"unknown cross check {name!r} in a suite; known: {', '.join(CROSS_CHECKS)}")


def _examples(df, index, key: list[str], column: str | None) -> list[dict]:
    """Rows by index label, as {"row": 1-based record number, key columns..., column}."""
    out = []
    for i in index:
        cols = dict.fromkeys([*key, *([column] if column else [])])
        row = {c: df.at[i, c] for c in cols}
        out.append({"row": int(i) + 1, **{c: v.item() if hasattr(v, "item") else v for c, v in row.items()}})
    return out


def _format_row(example: dict) -> str:
    def short(v):
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    rest = " ".join(f"{k}={short(v)}" for k, v in example.items() if k != "row")
    return f"row {example['row']}: {rest}"


def _render_html(gx_result, result: Result, cross: list[Failure]) -> str:
    """GX's Data Docs page for the suite run, with the pandas cross checks appended."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(gx_result))
    items = [f"<li><b>{html.escape(f.check)}</b>: {html.escape(f.detail)}<ul>"
             + "".join(f"<li>{html.escape(_format_row(e))}</li>" for e in f.examples) + "</ul></li>"
             for f in cross]
    items += [f"<li>skipped {html.escape(s)}</li>" for s in result.skipped]
    status = "all passed" if not cross else f"{len(cross)} failed"
    section = (f'<div class="container"><h3>Cross-dataset checks ({status})</h3>'
               f"<ul>{''.join(items) or '<li>none failed</li>'}</ul></div>")
    return page.replace("</body>", section + "</body>", 1)


def main(argv: list[str] | None = None) -> int:
    """`selfcorrect validate --kind KIND PATH [--problems PATH] [--report PATH]
    [--max-empty-share F] [--max-truncated-share F] [--max-stage1-kl-t1 F]
    [--max-prompt-chars N] [--quarantine PATH --clean PATH]`:
    exit 0 valid, 1 invalid (prints the summary), 2 unusable input (prints the error)."""
    from selfcorrect import config
    from selfcorrect.cli import _config_args

    parser = argparse.ArgumentParser(prog="selfcorrect validate",
                                     description="Check a file (JSONL or Parquet) of problems, "
                                     "answers, verdicts, training steps or evaluation rows "
                                     "before you use it: every field and the shares the gates "
                                     "allow. Exit 0 valid, 1 invalid, 2 unusable input. "
                                     "Thresholds: the gates section (and data.max_prompt_chars) "
                                     "of --preset/--config/--set; a flag below, when given, "
                                     "wins over it.")
    _config_args(parser)
    parser.add_argument("--kind", required=True, choices=list(KINDS))
    parser.add_argument("path", help="JSONL or Parquet dataset: a local path, gs://, s3:// or another fsspec URL")
    parser.add_argument("--problems", help="problems file (JSONL or Parquet), to check that every "
                                           "problem_id exists (attempts, verdicts, eval_rows)")
    parser.add_argument("--report", help="also write the Markdown report here")
    for name in THRESHOLDS:
        parser.add_argument("--" + name.replace("_", "-"), type=float, metavar="SHARE",
                            help="attempts: the largest share allowed, 0..1")
    parser.add_argument("--max-stage1-kl-t1", type=float, metavar="NATS",
                        help="train_steps: the largest per-token KL of Stage I's attempt 1 to the base")
    parser.add_argument("--max-prompt-chars", type=int, metavar="N",
                        help="problems: the longest prompt allowed, in characters (data.max_prompt_chars; "
                             "default 8000)")
    parser.add_argument("--quarantine", help="move rows failing row checks to this file (needs "
                                             "--clean); Parquet for a .parquet name or a Parquet input")
    parser.add_argument("--clean", help="with --quarantine: write the rows that pass here, in the "
                                        "input's format unless the name ends in .jsonl or .parquet")
    args = parser.parse_args(argv)
    if args.problems and args.kind == "problems":
        parser.error("--problems is for --kind attempts, verdicts or eval_rows")
    if bool(args.quarantine) != bool(args.clean):
        parser.error("--quarantine and --clean go together")
    try:
        cfg = config.load(args.preset, args.config, args.overrides, local=False)
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    thresholds = {**cfg.gates.thresholds(), "max_prompt_chars": cfg.data.max_prompt_chars}
    thresholds.update({n: getattr(args, n) for n in THRESHOLDS + LIMITS
                       if getattr(args, n) is not None})
    try:
        _distinct_paths({"dataset": args.path, "problems file": args.problems},
                        {"report": args.report, "quarantine file": args.quarantine,
                         "clean file": args.clean}, in_place="clean file")
        opts = dict(problems_uri=args.problems, thresholds=thresholds)
        if args.quarantine:
            result = quarantine(args.kind, args.path, args.quarantine, args.clean, **opts)
            if args.report:
                storage.write_text(args.report, result.markdown())
        elif args.report:
            result = gate(args.kind, args.path, args.report, **opts)
        else:
            result = validate(args.kind, args.path, **opts)
    except GateFailed as e:
        result = e.result
    except (OSError, ValueError) as e:      # RecordError is a ValueError
        print(f"selfcorrect validate: unusable input: {e}", file=sys.stderr)
        return 2
    print(result.markdown(), end="")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
