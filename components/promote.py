from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def decide_promotion(results: Input[Dataset], decision: Output[Markdown],
                     eval_rows: Input[Dataset] = None, registry: str = "",
                     output_dir: str = "runs", min_gain_over_base: float = 0.0,
                     min_gain_over_current: float = 0.0, max_delta_c_to_i: float = 1.0) -> bool:
    """Check the promotion conditions against the evaluation results and the registry's
    currently promoted model; writes the decision and its reasons; returns whether to promote.

    All conditions must hold. Never cache it: it reads the registry as it is now.

    Args:
        results: evaluate's results: {model: summary} JSON with "trained" and "base".
        eval_rows: The gated per-episode evaluation the results summarise: the decision then
            rests on metrics recomputed from those rows, and a results file that disagrees
            with them (a metric off by more than 1e-9) stops the step, naming model and metric.
        registry: The model registry, a folder or gs:// prefix; "": <output_dir>/registry.
        output_dir: The run's results folder or gs:// prefix (only read when registry is "").
        min_gain_over_base: Required Accuracy@t2(trained) - Accuracy@t2(base).
        min_gain_over_current: Required gain in Accuracy@t2 over the currently promoted
            model, if any.
        max_delta_c_to_i: Largest Delta_c->i (correct turned incorrect) of the trained model;
            1 disables it.

    Returns:
        decision: The decision and one line per condition (Markdown); its metadata
            holds promote, reasons, registry and the current model's id.
        Output: Whether to promote the trained model.
    """
    import dataclasses

    from selfcorrect import promote, storage
    from selfcorrect.config import PromotionConfig, build

    table, episodes = promote.gated_table(results.path, eval_rows.path if eval_rows else None)
    rule = build(PromotionConfig, {"min_gain_over_base": min_gain_over_base,
                                   "min_gain_over_current": min_gain_over_current,
                                   "max_delta_c_to_i": max_delta_c_to_i}, "promotion.")
    registry = promote.registry_uri(registry, output_dir)
    current = promote.read_current(registry)
    verdict = promote.decide(table["trained"], table["base"], current, dataclasses.asdict(rule))
    storage.write_text(decision.path, verdict.to_markdown())
    decision.metadata.update({"promote": verdict.promote, "reasons": verdict.reasons,
                              "registry": registry,
                              "current": current.get("id") if current else ""})
    if episodes is not None:
        decision.metadata["trained_episodes"] = episodes
    return verdict.promote


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def promote_model(model: Input[Model], results: Input[Dataset], problems: Input[Dataset],
                  verdicts: Input[Dataset], decision: Input[Markdown], entry: Output[Artifact],
                  eval_rows: Input[Dataset] = None, registry: str = "", output_dir: str = "runs",
                  run_id: str = ""):
    """Write the model, its model card (README.md) and its manifest (pipeline version, config,
    data, metrics) to the registry, without training state, and make it the current one
    (<registry>/current.json).

    The manifest's config is the one the model was trained with: its folder's
    resolved_config.json (written by the training steps; {} when absent).

    Args:
        model: The model folder to register (save_pretrained).
        results: evaluate's results; the manifest keeps the "trained" summary.
        problems: The problems the model was evaluated on (its URI goes into the manifest).
        verdicts: The verdicts of the evaluation (their URI goes into the manifest).
        decision: decide_promotion's decision; its reasons go into the manifest.
        eval_rows: The gated per-episode evaluation, kept beside the model as eval_rows.jsonl.
        registry: The model registry, a folder or gs:// prefix; "": <output_dir>/registry.
        output_dir: The run's results folder or gs:// prefix (only read when registry is "").
        run_id: The pipeline run that made the model, recorded in the manifest (the
            pipeline passes its job id).

    Returns:
        entry: The manifest as written, with the registry URI of the model.
    """
    import json

    from selfcorrect import promote, storage

    registry = promote.registry_uri(registry, output_dir)
    table, _ = promote.gated_table(results.path)
    manifest = promote.register(
        model.path, registry, table=table, reasons=list(decision.metadata.get("reasons", [])),
        name=model.metadata.get("name", "model"), run_id=run_id,
        data={"problems": problems.uri, "verdicts": verdicts.uri, "model": model.uri,
              **({"eval_rows": eval_rows.uri} if eval_rows else {})},
        eval_rows_path=eval_rows.path if eval_rows else None)
    storage.write_text(entry.path, json.dumps(manifest, indent=2))
    uri = manifest["uri"]
    entry.metadata.update({"registry": registry, "uri": uri, "id": manifest["id"]})
