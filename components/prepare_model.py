from kfp import dsl
from kfp.dsl import Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def model_fingerprint(model: dict = {}) -> str:
    """The base model's cache key: a digest of the model settings and of what identifies the
    weights they name (selfcorrect.model_fingerprint): the commit a Hub revision is at, the
    content tags of a gs:// or s3:// folder's objects, or the names, sizes and hashes of a
    local folder's files. Never cache it; prepare_model takes it.

    Args:
        model: The model settings, as prepare_model takes them (the keys of
            selfcorrect.config.ModelConfig).

    Returns:
        Output: A hex digest; the same for the same settings and the same weights.
    """
    from selfcorrect.config import ModelConfig, build
    from selfcorrect.model_fingerprint import fingerprint

    return fingerprint(build(ModelConfig, model, "model."))


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def prepare_model(model: Output[Model], source: str = "tiny", path: str = "", name: str = "",
                  tiny_layers: int = 2, tiny_hidden: int = 64, tiny_heads: int = 2,
                  seed: int = 0, dtype: str = "auto", revision: str = "",
                  trust_remote_code: bool = False, attn_implementation: str = "auto",
                  fingerprint: str = ""):
    """Materialise the base model (tiny, GGUF or a saved folder) as a save_pretrained folder.

    Args:
        source: tiny (a random-init GPT-2, built offline), gguf (a .gguf file) or hf (a
            save_pretrained folder or a Hub id).
        path: gguf: the .gguf file; hf: the folder as a URI (gs://, s3://, a local folder) or
            a Hub id such as Qwen/Qwen2.5-0.5B-Instruct.
        name: Label of the model in attempts and in the registry; "": the source.
        tiny_layers: tiny: transformer layers.
        tiny_hidden: tiny: hidden size (a multiple of tiny_heads).
        tiny_heads: tiny: attention heads.
        seed: tiny: initialisation seed.
        dtype: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16.
        revision: hf with a Hub id: the branch, tag or commit; "": the default branch.
        trust_remote_code: hf: run the model's own code from its folder or Hub repo.
        attn_implementation: auto, eager, sdpa or flash_attention_2.
        fingerprint: model_fingerprint's key; it only enters KFP's cache key (and the
            metadata), so a replaced model at the same path is loaded again, never reused.

    Returns:
        model: The save_pretrained folder (model and tokenizer) every step taking a
            Model loads; its metadata holds name, source, parameters and fingerprint.
    """
    from selfcorrect import models
    from selfcorrect.config import ModelConfig, build

    cfg = build(ModelConfig, {"source": source, "path": path, "name": name, "seed": seed,
                              "tiny_layers": tiny_layers, "tiny_hidden": tiny_hidden,
                              "tiny_heads": tiny_heads, "dtype": dtype, "revision": revision,
                              "trust_remote_code": trust_remote_code,
                              "attn_implementation": attn_implementation}, "model.")
    net, tok = models.load(cfg)
    models.save(net, tok, model.path)
    model.metadata.update({"name": cfg.name or cfg.source, "source": cfg.source,
                           "parameters": sum(p.numel() for p in net.parameters()),
                           "revision": cfg.revision, "fingerprint": fingerprint})
