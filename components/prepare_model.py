from kfp import dsl
from kfp.dsl import Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def prepare_model(config: dict, model: Output[Model]):
    """Materialise the base model (tiny, GGUF or a saved folder) as a save_pretrained folder."""
    from selfcorrect import config as cfg_mod
    from selfcorrect import models

    cfg = cfg_mod.from_dict(config)
    net, tok = models.load(cfg.model)
    models.save(net, tok, model.path)
    model.metadata.update({"name": cfg.model.name or cfg.model.source, "source": cfg.model.source,
                           "parameters": sum(p.numel() for p in net.parameters())})
