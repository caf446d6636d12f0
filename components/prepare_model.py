from kfp import dsl
from kfp.dsl import Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def prepare_model(model: Output[Model], source: str = "tiny", path: str = "", name: str = "",
                  tiny_layers: int = 2, tiny_hidden: int = 64, tiny_heads: int = 2,
                  seed: int = 0, dtype: str = "auto"):
    """Materialise the base model (tiny, GGUF or a saved folder) as a save_pretrained folder.

    Args:
        source: tiny (a random-init GPT-2, built offline), gguf (a .gguf file) or hf (a
            save_pretrained folder or a hub name).
        path: gguf: the .gguf file; hf: the folder as a URI (gs://, s3://, a local folder) or
            a hub name such as Qwen/Qwen2.5-0.5B-Instruct.
        name: Label of the model in attempts and in the registry; "": the source.
        tiny_layers: tiny: transformer layers.
        tiny_hidden: tiny: hidden size (a multiple of tiny_heads).
        tiny_heads: tiny: attention heads.
        seed: tiny: initialisation seed.
        dtype: auto (fp32 on CPU, bf16 on GPU), float32 or bfloat16.

    Returns:
        model: The save_pretrained folder (model and tokenizer) every step taking a
            Model loads; its metadata holds name, source and parameters.
    """
    from selfcorrect import models
    from selfcorrect.config import ModelConfig, build

    cfg = build(ModelConfig, {"source": source, "path": path, "name": name, "seed": seed,
                              "tiny_layers": tiny_layers, "tiny_hidden": tiny_hidden,
                              "tiny_heads": tiny_heads, "dtype": dtype}, "model.")
    net, tok = models.load(cfg)
    models.save(net, tok, model.path)
    model.metadata.update({"name": cfg.name or cfg.source, "source": cfg.source,
                           "parameters": sum(p.numel() for p in net.parameters())})
