from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage1(config: dict, problems: Input[Dataset], base_model: Input[Model],
                 model: Output[Model], metrics: Output[Metrics]):
    """SCoRe Stage I with DeepSpeed: learn to correct while attempt 1 stays near the base."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.records import Problem, read_jsonl
    from selfcorrect.train.loop import run_stage

    cfg = cfg_mod.from_dict(config)
    train = [p for p in read_jsonl(problems.path, Problem) if p.split == "train"]
    summary = run_stage(cfg, 1, init_path=base_model.path, reference_path=base_model.path,
                        problems=train, output_dir=model.path, log_dir=model.path + "/logs")
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score-stage1",
                           "stage": 1})


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def train_stage2(config: dict, problems: Input[Dataset], init_model: Input[Model],
                 base_model: Input[Model], model: Output[Model], metrics: Output[Metrics]):
    """SCoRe Stage II with DeepSpeed: multi-turn RL with the shaped correction bonus."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.records import Problem, read_jsonl
    from selfcorrect.train.loop import run_stage

    cfg = cfg_mod.from_dict(config)
    train = [p for p in read_jsonl(problems.path, Problem) if p.split == "train"]
    start = base_model.path if cfg.train.skip_stage1 else init_model.path
    summary = run_stage(cfg, 2, init_path=start, reference_path=base_model.path,
                        problems=train, output_dir=model.path, log_dir=model.path + "/logs")
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": f"{base_model.metadata.get('name', 'model')}-score",
                           "stage": 2})
