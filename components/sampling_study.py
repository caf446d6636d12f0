from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def sampling_study(problems: Input[Dataset], base_model: Input[Model],
                   trained_model: Input[Model], study: Output[Dataset],
                   metrics: Output[Metrics], report: Output[Markdown], config: dict = {},
                   attempt1_template: str = "", correction_template: str = ""):
    """Inference-compute scaling of the base and the trained model (the paper's Figure 1, right).

    eval.sampling_k sampled episodes per eval problem (at eval.sampling_temperature; 0:
    train.temperature), verified with the Beam step; then majority vote over the k first
    attempts vs over the second attempts of k/2 episodes: the same k samples generated.

    Args:
        problems: Problem records; the eval split is sampled.
        base_model: The base model folder.
        trained_model: The trained model folder.
        config: The run configuration (selfcorrect.config keys; the study reads eval.*,
            generate.*, model.*, verify.* and train.temperature), nested or dotted; values
            may be text; missing keys take their defaults (set eval.sampling_k >= 2).
        attempt1_template: Template of the first attempt's prompt ({prompt}); "": the task's
            default.
        correction_template: The self-correction instruction; "": the task's default.

    Returns:
        study: A folder with each model's attempts and verdicts and the reports, laid
            out as `selfcorrect evaluate --samples K` writes them.
        metrics: <model>_majority_k_t1 and <model>_majority_half_k_t2.
        report: The study's table (Markdown).
    """
    import dataclasses

    from selfcorrect import config as cfg_mod
    from selfcorrect import storage
    from selfcorrect.evaluate_cli import evaluate_models

    cfg = cfg_mod.with_prompts(cfg_mod.from_dict(config), attempt1_template, correction_template)
    k, temperature = cfg.eval.sampling_k, cfg.eval.sampling_temperature or cfg.train.temperature
    cfg = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, temperature=temperature))
    out = evaluate_models({"base": base_model.path, "trained": trained_model.path},
                          problems.path, study.path, cfg, split="eval", samples=k)
    lines = [f"### Sampling study: k = {k} samples per problem at temperature {temperature}", "",
             f"| model | majority of {k} first attempts | majority of {k // 2} second attempts |",
             "|---|---|---|"]
    for name, result in out.items():
        s = result["summary"]
        metrics.log_metric(f"{name}_majority_k_t1", s["majority_k_t1"])
        metrics.log_metric(f"{name}_majority_half_k_t2", s["majority_half_k_t2"])
        lines.append(f"| {name} | {100 * s['majority_k_t1']:.1f} | {100 * s['majority_half_k_t2']:.1f} |")
    storage.write_text(report.path, "\n".join(lines) + "\n")
    study.metadata.update({"k": k, "temperature": temperature, "models": list(out)})
