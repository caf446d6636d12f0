from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def validate_data(kind: str, data: Input[Dataset], report: Output[Markdown],
                  data_docs: Output[HTML], clean: Output[Dataset], quarantined: Output[Dataset],
                  problems: Input[Dataset] = None, config: dict = {}, run_id: str = "",
                  task_name: str = ""):
    """Great Expectations gate: writes a report and fails the step when the data is bad.

    kind: problems, attempts, verdicts, train_steps or eval_rows; data: JSONL or Parquet. report: the
    Markdown summary (failing expectations with example rows); data_docs: GX's Data Docs
    page. Shares and quarantine come from config["gates"] (selfcorrect.config.GateConfig;
    the suites' defaults when config is empty). clean is what the next step reads: with
    gates.quarantine, the rows that pass (the failing ones go to quarantined, each with the
    checks it failed); without, a copy of data and an empty quarantined file.

    A failing gate prints its summary to the log, and, with gates.report_uri set, also
    writes report.md and data_docs.html to <report_uri>/<run_id>/<task_name>/: a cluster
    does not upload a failed task's output artifacts, so that copy is what survives.
    """
    import sys
    from datetime import datetime, timezone

    from selfcorrect import records, storage, validate
    from selfcorrect.config import DataConfig, GateConfig, build

    gates = build(GateConfig, (config or {}).get("gates"), "gates.")
    prompt_chars = build(DataConfig, (config or {}).get("data"), "data.").max_prompt_chars
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
