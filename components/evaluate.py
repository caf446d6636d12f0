from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def evaluate(base_attempts: Input[Dataset], base_verdicts: Input[Dataset],
             trained_attempts: Input[Dataset], trained_verdicts: Input[Dataset],
             metrics: Output[Metrics], report: Output[Markdown], results: Output[Dataset]):
    """Self-correction metrics for the base and the trained model, from verifier verdicts."""
    import json

    from selfcorrect import evaluate as ev
    from selfcorrect import storage
    from selfcorrect.records import Attempt, Verdict, read_jsonl

    table = {}
    for name, att, ver in (("base", base_attempts, base_verdicts),
                           ("trained", trained_attempts, trained_verdicts)):
        table[name] = ev.summarise(read_jsonl(ver.path, Verdict), read_jsonl(att.path, Attempt))
        for key, value in table[name].items():
            metrics.log_metric(f"{name}_{key}", value)
    storage.write_text(results.path, json.dumps(table, indent=2))
    storage.write_text(report.path, "# Self-correction\n\n" + ev.markdown_table(table) + "\n")
