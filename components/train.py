from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage1(config: dict, problems: Input[Dataset], base_model: Input[Model],
                 model: Output[Model], metrics: Output[Metrics], steps: Output[Dataset]):
    """SCoRe Stage I with DeepSpeed: learn to correct while attempt 1 stays near the base.

    Resumes from <model>/checkpoints when train.checkpoint_every wrote one (a retried step);
    resources.accelerator_count > 1 launches one process per GPU (not verified on GPU).
    steps: one TrainStep per RL step (JSONL), for the train_steps gate.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.train.launch import train_stage

    cfg = cfg_mod.from_dict(config)
    summary = train_stage(cfg, 1, problems_path=problems.path, output_dir=model.path,
                          init_path=base_model.path, reference_path=base_model.path,
                          steps_path=steps.path)
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score-stage1",
                           "stage": 1})


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage2(config: dict, problems: Input[Dataset], init_model: Input[Model],
                 base_model: Input[Model], model: Output[Model], metrics: Output[Metrics],
                 steps: Output[Dataset]):
    """SCoRe Stage II with DeepSpeed: multi-turn RL with the shaped correction bonus.

    Ablations are config values: train.skip_stage1 starts from the base model, train.alpha=0
    drops the shaping bonus, train.single_turn trains attempt 1 on r1 only.
    steps: one TrainStep per RL step (JSONL), for the train_steps gate.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.train.launch import train_stage

    cfg = cfg_mod.from_dict(config)
    start = base_model.path if cfg.train.skip_stage1 else init_model.path
    summary = train_stage(cfg, 2, problems_path=problems.path, output_dir=model.path,
                          init_path=start, reference_path=base_model.path,
                          steps_path=steps.path)
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score",
                           "stage": 2})
