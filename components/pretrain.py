from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def pretrain_testbed(model: Output[Model], metrics: Output[Metrics], config: dict = {}):
    """Pretrain the testbed model from scratch (config sections `pretrain` and `data`).

    A small GPT-2-shaped transformer with a character tokenizer learns two-turn chain
    arithmetic traces (selfcorrect.experiments.testbed): a base model whose attempt 2 sometimes copies
    and sometimes retries, for studying self-correction in minutes.

    Args:
        config: The run configuration (selfcorrect.config keys: pretrain.*, data.*,
            model.name), nested or dotted; missing keys take their defaults (the testbed
            preset: selfcorrect.config.read_preset("testbed")).

    Returns:
        model: A save_pretrained folder that any step taking a Model loads.
        metrics: The pretraining summary (loss, parameters, ...).
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.experiments import testbed

    cfg = cfg_mod.from_dict(config)
    summary = testbed.pretrain(cfg, model.path)
    for key, value in summary.items():
        metrics.log_metric(key, float(value))
    model.metadata.update({"name": cfg.model.name or "testbed", "source": "pretrain",
                           "parameters": summary["parameters"]})
