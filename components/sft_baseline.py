from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def sft_baseline(method: str, problems: Input[Dataset], attempts: Input[Dataset],
                 verdicts: Input[Dataset], base_model: Input[Model], model: Output[Model],
                 metrics: Output[Metrics], config: dict = {}):
    """STaR or Pair-SFT (the paper's SFT baselines) on a model's own verified attempts.

    Trains train.stage1_steps + train.stage2_steps steps of problems_per_step *
    samples_per_problem rows.

    Args:
        method: star (episodes whose attempt 2 is correct) or pair_sft (an incorrect and a
            correct attempt at the same problem).
        problems: Problem records.
        attempts: What sample_attempts wrote for base_model (sample at train.temperature with
            several samples per problem so there is something to learn from).
        verdicts: verify_attempts' verdicts on those attempts.
        base_model: The model folder fine-tuned.
        config: The run configuration (selfcorrect.config keys: train.*, model.*,
            prompts.*, generate.*, verify.*), nested or dotted; missing keys take their
            defaults.

    Returns:
        model: The fine-tuned model folder.
        metrics: Examples and final_loss.
    """
    from selfcorrect.experiments import baselines
    from selfcorrect import config as cfg_mod
    from selfcorrect.records import Attempt, Problem, Verdict, read

    cfg = cfg_mod.from_dict(config)
    history = baselines.train(cfg, method, base_model.path, read(problems.path, Problem),
                              read(attempts.path, Attempt), read(verdicts.path, Verdict), model.path)
    metrics.log_metric("examples", history[0]["examples"])
    metrics.log_metric("final_loss", history[-1]["loss"])
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-{method}",
                           "method": method})
