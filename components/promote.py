from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def decide_promotion(config: dict, results: Input[Dataset], decision: Output[Markdown],
                     eval_rows: Input[Dataset] = None) -> bool:
    """Check config.promotion's conditions against the evaluation results and the registry's
    currently promoted model; writes the decision and its reasons; returns whether to promote.

    eval_rows, when given, is the gated per-episode evaluation the results summarise: the
    decision then rests on metrics recomputed from those rows, and a results file that
    disagrees with them (a metric off by more than 1e-9) stops the step, naming model and
    metric.
    """
    import json

    from selfcorrect import promote, storage

    table = json.loads(storage.read_text(results.path))
    if eval_rows is not None:
        from collections import defaultdict

        from selfcorrect.evaluate import METRICS, self_correction_metrics
        from selfcorrect.records import EvalRow, read

        pairs = defaultdict(list)
        for r in read(eval_rows.path, EvalRow):
            pairs[r.model].append((r.correct_t1, r.correct_t2))
        for name in ("trained", "base"):
            if name not in pairs:
                raise ValueError(f"{eval_rows.path}: no eval rows for the {name!r} model")
            recomputed = self_correction_metrics(pairs[name])
            for key in METRICS:
                if abs(recomputed[key] - table[name][key]) > 1e-9:
                    raise ValueError(f"{results.path}: {name} {key} = {table[name][key]!r}, but "
                                     f"its gated eval rows give {recomputed[key]!r}")
            table[name] = {**table[name], **recomputed}
        decision.metadata["trained_episodes"] = len(pairs["trained"])
    registry = promote.registry_uri(config)
    current = promote.read_current(registry)
    verdict = promote.decide(table["trained"], table["base"], current, config["promotion"])
    storage.write_text(decision.path, verdict.to_markdown())
    decision.metadata.update({"promote": verdict.promote, "reasons": verdict.reasons,
                              "registry": registry,
                              "current": current.get("id") if current else ""})
    return verdict.promote


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def promote_model(config: dict, model: Input[Model], results: Input[Dataset],
                  problems: Input[Dataset], verdicts: Input[Dataset], decision: Input[Markdown],
                  entry: Output[Artifact], eval_rows: Input[Dataset] = None):
    """Write the model and its manifest (pipeline version, config, data, metrics) to the
    registry and make it the current one; `entry` records the registry URI and manifest.
    eval_rows, when given (the gated per-episode evaluation), is kept beside the model as
    eval_rows.jsonl."""
    import json

    from selfcorrect import promote, storage

    metrics = json.loads(storage.read_text(results.path))["trained"]
    reasons = promote.Decision(True, [line[2:] for line in
                                      storage.read_text(decision.path).splitlines()
                                      if line.startswith("- ")])
    manifest = promote.manifest(config, metrics,
                                {"problems": problems.uri, "verdicts": verdicts.uri,
                                 "model": model.uri,
                                 **({"eval_rows": eval_rows.uri} if eval_rows else {})},
                                model.metadata.get("name", "model"), reasons)
    registry = promote.registry_uri(config)
    uri = promote.promote(model.path, registry, manifest,
                          {"eval_rows.jsonl": eval_rows.path} if eval_rows else None)
    storage.write_text(entry.path, json.dumps({**manifest, "uri": uri}, indent=2))
    entry.metadata.update({"registry": registry, "uri": uri, "id": manifest["id"]})
