from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def config_flag(config: dict, key: str) -> bool:
    """Whether the dotted config key (e.g. "eval.sampling_k") is set (non-zero, non-empty):
    a run-time switch for dsl.If, since the config is a run parameter."""
    from selfcorrect import config as cfg_mod

    value = cfg_mod.from_dict(config).to_dict()
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"config_flag: no config key {key!r}")
        value = value[part]
    return bool(value)


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def sampling_study(config: dict, problems: Input[Dataset], base_model: Input[Model],
                   trained_model: Input[Model], study: Output[Dataset],
                   metrics: Output[Metrics], report: Output[Markdown]):
    """Inference-compute scaling (SCORE_SPEC, the paper's Fig. 1 right), base vs trained.

    eval.sampling_k sampled episodes per eval problem (at eval.sampling_temperature; 0:
    train.temperature), verified with the Beam step; then majority vote over the k first
    attempts vs over the second attempts of k/2 episodes: the same k samples generated.
    study: a folder with each model's attempts and verdicts and the reports, laid out as
    `selfcorrect evaluate --samples K` writes them; metrics: <model>_majority_k_t1 and
    <model>_majority_half_k_t2.
    """
    import dataclasses

    from selfcorrect import config as cfg_mod
    from selfcorrect import storage
    from selfcorrect.evaluate_cli import evaluate_models

    cfg = cfg_mod.from_dict(config)
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
