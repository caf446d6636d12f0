"""The SCoRe training steps. They keep one `config` mapping: a stage reads most of the run
configuration (train.*, model.*, resources.*, generate.batch_size, verify.timeout_s,
output_dir), so a parameter per key would be a second copy of selfcorrect.config. The
pipeline passes the sections a stage reads, so a change elsewhere (eval.*, gates.*,
promotion.*) keeps the stages' cache. The prompt templates are free text and come as
parameters of their own."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage1(problems: Input[Dataset], base_model: Input[Model], model: Output[Model],
                 metrics: Output[Metrics], steps: Output[Dataset], config: dict = {},
                 attempt1_template: str = "", correction_template: str = ""):
    """SCoRe Stage I with DeepSpeed: learn to correct while attempt 1 stays near the base.

    With train.checkpoint_every, resumable checkpoints go to the run's store
    (<train.checkpoint_uri or output_dir/checkpoints>/<name>-<fingerprint>/stage1), never into
    the model: a retried step or a resubmitted run of the same name, settings and data resumes
    there. resources.accelerator_count > 1 launches one process per GPU (not verified on GPU).

    Args:
        problems: Problem records; the train split is trained on.
        base_model: The base model folder: the starting point and the KL reference.
        config: The run configuration (selfcorrect.config keys; the stage reads train.*,
            model.*, resources.*, generate.batch_size, verify.timeout_s and output_dir),
            nested ({"train": {"stage1_steps": 50}}) or dotted ({"train.stage1_steps": 50});
            values may be text ("50"); missing keys take their defaults. The model folder
            keeps it, resolved, as resolved_config.json.
        attempt1_template: Template of the first attempt's prompt ({prompt}); "": the task's
            default (prompts.attempt1; free text, so a parameter of its own).
        correction_template: The self-correction instruction; "": the task's default
            (prompts.correction).

    Returns:
        model: The Stage I model (save_pretrained folder, with its resolved config
            and metrics).
        metrics: The stage's summary (rewards, KL, loss).
        steps: One TrainStep per RL step (JSONL), for the train_steps gate.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.train.launch import train_stage

    cfg = cfg_mod.with_prompts(cfg_mod.from_dict(config), attempt1_template, correction_template)
    summary = train_stage(cfg, 1, problems_path=problems.path, output_dir=model.path,
                          init_path=base_model.path, reference_path=base_model.path,
                          steps_path=steps.path)
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score-stage1",
                           "stage": 1})


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage2(problems: Input[Dataset], init_model: Input[Model], base_model: Input[Model],
                 model: Output[Model], metrics: Output[Metrics], steps: Output[Dataset],
                 config: dict = {}, attempt1_template: str = "", correction_template: str = ""):
    """SCoRe Stage II with DeepSpeed: multi-turn RL with the shaped correction bonus.

    Ablations are config values: train.skip_stage1 starts from the base model, train.alpha=0
    drops the shaping bonus, train.single_turn trains attempt 1 on r1 only.

    Args:
        problems: Problem records; the train split is trained on.
        init_model: The model Stage II starts from (Stage I's output).
        base_model: The base model: the KL reference (and the start with train.skip_stage1).
        config: The run configuration, as train_stage1 takes it.
        attempt1_template: As train_stage1 takes it.
        correction_template: As train_stage1 takes it.

    Returns:
        model: The trained model (save_pretrained folder, with its resolved config
            and metrics).
        metrics: The stage's summary (rewards, KL, loss).
        steps: One TrainStep per RL step (JSONL), for the train_steps gate.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.train.launch import train_stage

    cfg = cfg_mod.with_prompts(cfg_mod.from_dict(config), attempt1_template, correction_template)
    start = base_model.path if cfg.train.skip_stage1 else init_model.path
    summary = train_stage(cfg, 2, problems_path=problems.path, output_dir=model.path,
                          init_path=start, reference_path=base_model.path,
                          steps_path=steps.path)
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score",
                           "stage": 2})
