"""Data gates: the Great Expectations suites in schemas/, run over a JSONL dataset.

    result = validate("attempts", "out/attempts.jsonl", problems_uri="out/problems.jsonl")
    gate("verdicts", uri, "out/verdicts_gate.md")   # writes the report; raises GateFailed

A dataset is read with records.read_jsonl, so unusable input (missing file, not JSON,
not UTF-8, wrong field types) raises RecordError / StorageError / FileNotFoundError
naming file and row; an empty file is unusable too. Its suite (schemas/<kind>.suite.json,
a GX 1.x ExpectationSuite as data) runs in an ephemeral GX context; the checks that
need more than one dataset or more than one row (meta.cross_checks) run in pandas and
are reported in the same Result. GX and pandas are imported inside the functions.
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

from selfcorrect import records, storage

KINDS = {"problems": records.Problem, "attempts": records.Attempt, "verdicts": records.Verdict}
MAX_EXAMPLES = 3
CROSS_CHECKS = {
    "problem_id_known": "every problem_id names a problem in the problems file",
    "turn2_has_turn1": "every turn-2 row has a turn-1 row with the same (problem_id, sample)",
}


@dataclass(frozen=True)
class Failure:
    check: str                  # GX expectation type, or a name from CROSS_CHECKS
    column: str | None          # None for table-level expectations
    detail: str                 # what was expected, and how often it was not met
    examples: list[dict] = field(default_factory=list)  # up to 3: {"row": n, key..., column: value}


@dataclass
class Result:
    kind: str
    uri: str
    rows: int
    checks: int                 # how many expectations and cross checks ran
    failures: list[Failure]
    skipped: list[str] = field(default_factory=list)  # cross checks that could not run, and why
    html: str = ""              # GX Data Docs validation page, plus a cross-check section

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


def load_schema(kind: str) -> dict:
    """The JSON Schema of one row of the kind (problems -> problem.schema.json)."""
    _record_type(kind)
    return json.loads(_schema_text(f"{kind[:-1]}.schema.json"))


def validate(kind: str, uri: str, *, problems_uri: str | None = None) -> Result:
    """Run the kind's suite and cross checks over the JSONL dataset at uri."""
    if problems_uri is not None and kind == "problems":
        raise ValueError("problems_uri is for attempts and verdicts, not for problems")
    df = _read_frame(uri, _record_type(kind))
    known = None if problems_uri is None else set(_read_frame(problems_uri, records.Problem)["id"])
    suite = load_suite(kind)
    key = suite["meta"]["key"]
    gx_result = _run_suite(suite, df)

    failures = [_gx_failure(r, df, key) for r in gx_result.results if not r.success]
    cross, skipped = [], []
    for name in suite["meta"]["cross_checks"]:
        if name == "problem_id_known" and known is None:
            skipped.append(f"{name}: no problems file given")
            continue
        bad, column = _cross_check(name, df, known)
        if len(bad):
            cross.append(Failure(name, column, f"{CROSS_CHECKS[name]}: {len(bad)} of {len(df)} rows fail",
                                 _examples(df, bad[:MAX_EXAMPLES], key, column)))
    checks = len(gx_result.results) + len(suite["meta"]["cross_checks"]) - len(skipped)
    result = Result(kind, str(uri), len(df), checks, failures + cross, skipped)
    result.html = _render_html(gx_result, result, cross)
    return result


def gate(kind: str, uri: str, report_path: str, *, problems_uri: str | None = None,
         html_path: str | None = None) -> Result:
    """validate(), then always write the Markdown report (and the HTML page if html_path);
    raise GateFailed when anything failed. Unusable input is reported, then re-raised."""
    try:
        result = validate(kind, uri, problems_uri=problems_uri)
    except Exception as e:
        storage.write_text(report_path, f"### Data gate `{kind}`: UNUSABLE INPUT\n\n{e}\n")
        raise
    storage.write_text(report_path, result.markdown())
    if html_path:
        storage.write_text(html_path, result.html)
    if not result.success:
        raise GateFailed(result)
    return result


def _record_type(kind: str) -> type:
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; kinds are {', '.join(KINDS)}")
    return KINDS[kind]


def _read_frame(uri: str, cls: type):
    import pandas as pd

    rows = records.read_jsonl(uri, cls)
    if not rows:
        raise records.RecordError(str(uri), 1, "*", "no records: the file is empty")
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def _run_suite(suite_spec: dict, df):
    """One real GX 1.x run: ephemeral context, pandas source, whole-dataframe batch."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                               analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    name = suite_spec["name"]
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(**copy.deepcopy(suite_spec)))
    run = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return run.run(batch_parameters={"dataframe": df},
                   result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES})


def _gx_failure(r, df, key: list[str]) -> Failure:
    config = r.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or ", ".join(kwargs.get("column_list", [])) or None
    what = config.description or config.type
    info, res = r.exception_info or {}, r.result or {}
    if info.get("raised_exception"):
        return Failure(config.type, column, f"{what}: could not run ({info.get('exception_message')})")
    if "unexpected_count" not in res:
        return Failure(config.type, column, f"{what}: observed {res.get('observed_value')!r}")
    detail = f"{what}: {res['unexpected_count']} of {res['element_count']} rows fail"
    if kwargs.get("mostly", 1) < 1:
        detail += f" ({res['unexpected_percent']:.1f}%; at most {1 - kwargs['mostly']:.0%} allowed)"
    shown = kwargs.get("column") or (kwargs.get("column_list") or [None])[0]
    return Failure(config.type, column, detail,
                   _examples(df, res.get("partial_unexpected_index_list", [])[:MAX_EXAMPLES], key, shown))


def _cross_check(name: str, df, known: set | None):
    """The index labels of the rows that fail a cross check, and the column it is about."""
    import pandas as pd

    if name == "problem_id_known":
        return df.index[~df["problem_id"].isin(known)], "problem_id"
    if name == "turn2_has_turn1":
        pairs = pd.MultiIndex.from_frame(df[["problem_id", "sample"]])
        has_first = pairs.isin(pairs[(df["turn"] == 1).to_numpy()])
        return df.index[(df["turn"] == 2).to_numpy() & ~has_first], "turn"
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
    """`selfcorrect validate --kind KIND PATH [--problems PATH] [--report PATH]`:
    exit 0 valid, 1 invalid (prints the summary), 2 unusable input (prints the error)."""
    parser = argparse.ArgumentParser(prog="selfcorrect validate",
                                     description="Check a JSONL dataset with its Great Expectations suite.")
    parser.add_argument("--kind", required=True, choices=list(KINDS))
    parser.add_argument("path", help="JSONL dataset: a local path or gs:// URI")
    parser.add_argument("--problems", help="problems JSONL, to check that every problem_id exists")
    parser.add_argument("--report", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    if args.problems and args.kind == "problems":
        parser.error("--problems is for --kind attempts or verdicts")
    try:
        if args.report:
            result = gate(args.kind, args.path, args.report, problems_uri=args.problems)
        else:
            result = validate(args.kind, args.path, problems_uri=args.problems)
    except GateFailed as e:
        result = e.result
    except (OSError, records.RecordError) as e:
        print(f"selfcorrect validate: unusable input: {e}", file=sys.stderr)
        return 2
    print(result.markdown(), end="")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
