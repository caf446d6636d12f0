from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def validate_data(kind: str, data: Input[Dataset], report: Output[Markdown],
                  clean: Output[Dataset], quarantined: Output[Dataset],
                  problems: Input[Dataset] = None, config: dict = {}):
    """Great Expectations gate: writes a report and fails the step when the data is bad.

    Shares and quarantine come from config["gates"] (selfcorrect.config.GateConfig; the
    suites' defaults when config is empty). clean is what the next step reads: with
    gates.quarantine, the rows that pass (the failing ones go to quarantined, each with the
    checks it failed); without, a copy of data and an empty quarantined file.
    """
    from selfcorrect import storage, validate
    from selfcorrect.config import GateConfig, build

    gates = build(GateConfig, (config or {}).get("gates"), "gates.")
    opts = dict(problems_uri=problems.path if problems else None,
                thresholds=gates.thresholds())
    if gates.quarantine:
        result = validate.gate(kind, data.path, report.path, quarantine_uri=quarantined.path,
                               clean_uri=clean.path, **opts)
    else:
        result = validate.gate(kind, data.path, report.path, **opts)
        storage.write_bytes(clean.path, storage.read_bytes(data.path))
        storage.write_text(quarantined.path, "")
    moved = result.quarantined.get("rows", 0)     # result.rows: the rows that passed
    clean.metadata.update({"kind": kind, "rows": result.rows, "format": "jsonl"})
    quarantined.metadata.update({"kind": kind, "rows": moved,
                                 **{k: v for k, v in result.quarantined.items() if k != "rows"}})
