"""LoRA adapters (PEFT) on the policy: train.lora_rank > 0.

    wrap            PEFT's LoRA layers injected into the model in place (peft.get_peft_model);
                    only the adapter trains. The engine gets the model itself (its generate,
                    config and output head unchanged), not PEFT's wrapper.
    BaseView        the frozen reference: the same module with every adapter switched off for
                    the call, so no second copy of the weights is held. The adapter starts at
                    B = 0, so at step 0 the policy equals the reference.
    save_merged     the model folder every consumer loads: merged weights (merge_and_unload on
                    a CPU copy) and tokenizer, the adapter in adapter/ (PeftModel.save_pretrained)

Stage II continues Stage I's adapter on the base model: the policy is the reference model
plus the adapter of the starting folder's adapter/, so switching the adapter off gives pi_ref.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

ADAPTER_DIR = "adapter"


def peft_config(train):
    """The LoraConfig of the train settings."""
    from peft import LoraConfig

    targets = train.lora_target_modules.strip()
    return LoraConfig(r=train.lora_rank, lora_alpha=train.lora_alpha,
                      lora_dropout=train.lora_dropout, bias="none", task_type="CAUSAL_LM",
                      target_modules=targets if targets == "all-linear" else
                      [m.strip() for m in targets.split(",") if m.strip()])


def wrap(model: torch.nn.Module, train, adapter_dir: str | None = None) -> torch.nn.Module:
    """`model` with LoRA layers (train.lora_*) and only them trainable; the same object.
    A starts random from train.seed, B at 0 (PEFT's default): the policy starts as the model.

    adapter_dir: an adapter/ folder (save_merged) whose weights the adapter starts from; its
    rank and targets must match the train settings.
    """
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    config = peft_config(train)
    try:
        # A's random start from train.seed alone: the same on every rank and any number of
        # ranks, whatever the model's loading drew from torch's RNG (which is left as it was)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train.seed)
            peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise ValueError(f"train.lora_target_modules: {train.lora_target_modules!r} ({e})") from None
    if adapter_dir is not None:
        saved = json.loads(Path(adapter_dir, "adapter_config.json").read_text())
        if saved.get("r") != train.lora_rank:
            raise ValueError(f"{adapter_dir}: adapter of rank {saved.get('r')}, but "
                             f"train.lora_rank is {train.lora_rank}; continue with the same rank")
        result = set_peft_model_state_dict(peft_model, load_peft_weights(adapter_dir, device="cpu"))
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise ValueError(f"{adapter_dir}: adapter does not fit train.lora_target_modules="
                             f"{train.lora_target_modules!r} (e.g. "
                             f"{(result.unexpected_keys or missing)[0]})")
    model.eval()
    return model            # peft_model.base_model.model: the model, its layers now LoRA layers


def adapter_of(path: str | None) -> str | None:
    """The adapter/ folder of a model folder, or None (a plain model, or no folder)."""
    if not path or "://" in path:
        return None
    folder = Path(path, ADAPTER_DIR)
    return str(folder) if (folder / "adapter_config.json").is_file() else None


def layers(model: torch.nn.Module) -> list:
    """The model's PEFT adapter layers (empty for a plain model)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def is_lora(model) -> bool:
    return bool(layers(getattr(model, "module", model)))


@contextlib.contextmanager
def adapter_off(model: torch.nn.Module):
    """Every adapter layer passes through to its base layer during the block."""
    held = layers(model)
    for layer in held:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in held:
            layer.enable_adapters(True)


def dropout_on(model: torch.nn.Module) -> None:
    """The adapters' dropout modules in training mode (the rest of the model stays in eval
    mode); generation's eval() switches them off again. Nothing to do at lora_dropout 0."""
    for layer in layers(model):
        for drop in getattr(layer, "lora_dropout", {}).values():
            drop.train()


class BaseView:
    """The policy with its adapters off: the frozen reference without a copy of the weights.

    Calls and generate run the model with every adapter switched off; any other attribute is
    the model's (get_output_embeddings, config, parameters, generation_config, ...), so
    scoring and generation take it as they take a model. It has no `.module`: code unwrapping
    a DeepSpeed engine leaves it as it is.
    """

    def __init__(self, model: torch.nn.Module):
        object.__setattr__(self, "_model", model)

    def __call__(self, *args, **kwargs):
        with adapter_off(self._model):
            return self._model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with adapter_off(self._model):
            return self._model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)


def save_merged(model: torch.nn.Module, tokenizer, path: str) -> None:
    """merged weights + tokenizer in `path`, the adapter in `path`/adapter/, from a CPU copy
    (the training model is left as it is). Call with every weight whole (under ZeRO-3 inside
    GatheredParameters); the copy costs one more model in host memory on the saving rank."""
    import copy as copying

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    dtype = next(iter(state.values())).dtype
    with torch.device("meta"):
        copy = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
    peft_copy = get_peft_model(copy, copying.deepcopy(model.peft_config["default"]))
    peft_copy.to_empty(device="cpu")
    peft_copy.base_model.model.load_state_dict(state, strict=True)
    copy.tie_weights()
    Path(path).mkdir(parents=True, exist_ok=True)
    peft_copy.save_pretrained(str(Path(path, ADAPTER_DIR)))
    merged = peft_copy.merge_and_unload()
    merged.generation_config = model.generation_config
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)


def trainable(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters), ZeRO-3 partitions counted whole."""
    count = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731
    params = list(model.parameters())
    return sum(count(p) for p in params if p.requires_grad), sum(count(p) for p in params)
