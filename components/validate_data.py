from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def validate_data(kind: str, data: Input[Dataset], report: Output[Markdown],
                  data_docs: Output[HTML], clean: Output[Dataset], quarantined: Output[Dataset],
                  problems: Input[Dataset] = None, max_empty_share: float = 0.1,
                  max_truncated_share: float = 1.0, max_stage1_kl_t1: float = 1.0,
                  max_prompt_chars: int = 8000, quarantine: bool = False, report_uri: str = "",
                  run_id: str = "", task_name: str = ""):
    """Great Expectations gate: writes a report and fails the step when the data is bad.

    The thresholds' defaults equal the suites' own (schemas/). A failing gate prints its
    summary to the log, and, with report_uri set, also writes report.md and data_docs.html
    to <report_uri>/<run_id>/<task_name>/: a cluster does not upload a failed task's output
    artifacts, so that copy is what survives.

    Args:
        kind: Which suite checks the data: problems, attempts, verdicts, train_steps or
            eval_rows.
        data: The records to check (JSONL or Parquet).
        problems: The run's Problem records, for the checks that join on problem ids
            (attempts, verdicts, eval_rows).
        max_empty_share: attempts: largest share of empty completions.
        max_truncated_share: attempts: largest share of truncated ones; 1: off.
        max_stage1_kl_t1: train_steps: largest Stage I per-token KL of attempt 1 to the base.
        max_prompt_chars: problems: longest prompt accepted.
        quarantine: Move rows failing row checks to quarantined instead of failing the step.
        report_uri: Where a failing gate's reports are also copied (folder or gs://); "": none.
        run_id: Names the copy's folder; "": the time (the pipeline passes its job id).
        task_name: Names the copy's subfolder; "": gate-<kind> (the pipeline passes its task
            name).

    Returns:
        report: The Markdown summary (failing expectations with example rows).
        data_docs: GX's Data Docs page.
        clean: What the next step reads: with quarantine, the rows that pass; without,
            a copy of data.
        quarantined: With quarantine, the failing rows, each with the checks it
            failed (JSONL); without, an empty file.
    """
    import sys
    from datetime import datetime, timezone

    from selfcorrect import records, storage, validate
    from selfcorrect.config import DataConfig, GateConfig, build

    gates = build(GateConfig, {"max_empty_share": max_empty_share, "quarantine": quarantine,
                               "max_truncated_share": max_truncated_share,
                               "max_stage1_kl_t1": max_stage1_kl_t1, "report_uri": report_uri},
                  "gates.")
    prompt_chars = build(DataConfig, {"max_prompt_chars": max_prompt_chars}, "data.").max_prompt_chars
    opts = dict(problems_uri=problems.path if problems else None, html_path=data_docs.path,
                thresholds={**gates.thresholds(), "max_prompt_chars": prompt_chars})
    try:
        if gates.quarantine:
            result = validate.gate(kind, data.path, report.path, quarantine_uri=quarantined.path,
                                   clean_uri=clean.path, **opts)
        else:
            result = validate.gate(kind, data.path, report.path, **opts)
            storage.write_bytes(clean.path, storage.read_bytes(data.path))
            storage.write_text(quarantined.path, "")
    except Exception:
        summary = storage.read_text(report.path) if storage.exists(report.path) else ""
        print(summary, file=sys.stderr)
        if gates.report_uri:
            run = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            where = storage.join(gates.report_uri, run, task_name or f"gate-{kind}")
            storage.write_text(storage.join(where, "report.md"), summary)
            if storage.exists(data_docs.path):
                storage.write_bytes(storage.join(where, "data_docs.html"),
                                    storage.read_bytes(data_docs.path))
            print(f"gate report copied to {where}", file=sys.stderr)
        raise
    moved = result.quarantined.get("rows", 0)     # result.rows: the rows that passed
    fmt = records.format_of(storage.read_bytes(clean.path)[:4])
    clean.metadata.update({"kind": kind, "rows": result.rows, "format": fmt})
    quarantined.metadata.update({"kind": kind, "rows": moved,
                                 **{k: v for k, v in result.quarantined.items() if k != "rows"}})
