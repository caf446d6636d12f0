"""The DeepSpeed engine for the policy, and the frozen reference.

`ds_config` is a pure function of TrainConfig, so a GPU launch (the `deepspeed` launcher,
Kubeflow Trainer) builds the same config as the one-process CPU run. On one machine without
a launcher, `single_process_env` fills in the torch.distributed rendezvous for world size 1.
The first initialize on CPU JIT-builds DeepSpeed's shared-memory comm op (~40 s, cached
under ~/.cache/torch_extensions).

Memory at real sizes (`policy_and_reference`): under ZeRO-3 both models are built inside
deepspeed.zero.Init while loading (each rank holds its 1/W partition from the start; only
rank 0 reads the weight files, memory-mapped), and the frozen reference runs in an engine of
its own with no optimizer (`reference`, as TRL and DeepSpeed-Chat do), partitioned like the
policy, or with train.reference_offload its partitions in host memory. Off ZeRO-3 the weights
load straight onto the rank's device (models.load). Tested on CPU with 2 gloo ranks
(tests/test_zero3_memory.py); unverified on GPU.

With train.lora_rank > 0 (selfcorrect.train.lora) the policy is the reference model with a
LoRA adapter, only the adapter trains, and the reference is the same module with the adapter
switched off (lora.BaseView): one copy of the weights, under every ZeRO stage.
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch

from selfcorrect.config import TrainConfig


def ds_config(train: TrainConfig, *, micro_batch_size: int, gpu: bool,
              warmup_steps: int = 0, total_steps: int = 0, fp16: bool = False) -> dict:
    """DeepSpeed config dict. `micro_batch_size` counts episodes per backward pass.

    Adam/AdamW as in the paper (AdamW: weight decay 0.01, torch's default; Adam: none). On CPU
    the optimizer is torch's (`torch_adam`); on GPU DeepSpeed's fused Adam. Constant learning
    rate unless `warmup_steps` > 0 (then linear WarmupLR from 0); with `total_steps` > 0 the
    rate then decays linearly to 0 at total_steps (WarmupDecayLR; the SFT trainer's schedule). bf16 only on GPU (on CPU
    it is far slower than fp32); fp16=True (model.dtype float16, for GPUs without bf16):
    DeepSpeed's fp16 mode with dynamic loss scaling instead (unverified on GPU).
    """
    adamw = train.optimizer == "adamw"
    # adam_w_mode explicit: DeepSpeed's "Adam" is AdamW unless told otherwise
    params = {"lr": train.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
              "weight_decay": 0.01 if adamw else 0.0, "adam_w_mode": adamw}
    if not gpu:
        params["torch_adam"] = True
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.gradient_clipping,
        "optimizer": {"type": "AdamW" if adamw else "Adam", "params": params},
        "zero_optimization": {"stage": train.zero_stage},
        **precision(gpu, fp16),
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if total_steps > 0:
        config["scheduler"] = {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": train.learning_rate,
            "warmup_num_steps": max(1, warmup_steps), "total_num_steps": total_steps,
            "warmup_type": "linear"}}
    elif warmup_steps > 0:
        config["scheduler"] = {"type": "WarmupLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": train.learning_rate,
            "warmup_num_steps": warmup_steps, "warmup_type": "linear"}}
    return config


def extension_cache() -> None:
    """Keep DeepSpeed's JIT-built ops per Python environment (`<venv>/torch_extensions`).

    torch's default cache (~/.cache/torch_extensions) is shared by every environment, and the
    op's build flags name the environment's include paths, so two virtual environments on one
    machine rebuild it for each other (minutes each time). TORCH_EXTENSIONS_DIR, if set, wins.
    """
    import sys

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def single_process_env() -> None:
    """Rendezvous for one process (world size 1), unless a launcher has set it already."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)


def build(model: torch.nn.Module, train: TrainConfig, *, micro_batch_size: int,
          warmup_steps: int = 0, total_steps: int = 0, adapter_dir: str | None = None):
    """deepspeed.initialize on the policy; returns the engine (engine.module is the model).

    The model stays in eval mode (dropout off): the training forward pass must score tokens
    under the same distribution that sampled them. Gradients flow in eval mode.
    train.lora_rank > 0: the model gets a LoRA adapter first (lora.wrap; from adapter_dir
    when given) and only the adapter trains.
    """
    extension_cache()
    import deepspeed

    if train.lora_rank:
        from selfcorrect.train import lora

        model = lora.wrap(model, train, adapter_dir)

    single_process_env()
    gpu = torch.cuda.is_available()
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config(train, micro_batch_size=micro_batch_size, gpu=gpu,
                         warmup_steps=warmup_steps, total_steps=total_steps,
                         fp16=is_fp16(model)))
    engine.module.eval()
    return engine


def precision(gpu: bool, fp16: bool = False) -> dict:
    """DeepSpeed's precision sections: bf16 on GPU, or fp16 with dynamic loss scaling."""
    if gpu and fp16:
        return {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}}
    return {"bf16": {"enabled": gpu}}


def is_fp16(model: torch.nn.Module) -> bool:
    """Whether the model was loaded in float16 (model.dtype float16)."""
    return next(model.parameters()).dtype == torch.float16


def reference_config(train: TrainConfig, *, micro_batch_size: int, gpu: bool,
                     fp16: bool = False) -> dict:
    """The frozen reference's DeepSpeed config under ZeRO-3: no optimizer, its parameters
    partitioned like the policy's, in host memory with train.reference_offload."""
    zero = {"stage": 3}
    if train.reference_offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": gpu}
    return {"train_micro_batch_size_per_gpu": micro_batch_size,
            "gradient_accumulation_steps": train.gradient_accumulation_steps,
            "zero_optimization": zero, **precision(gpu, fp16),
            "steps_per_print": 10**9, "wall_clock_breakdown": False}


@contextlib.contextmanager
def zero3_init(config: dict | None):
    """While open, transformers' from_pretrained builds models inside deepspeed.zero.Init with
    `config` (its HfDeepSpeedConfig route): parameters are partitioned as each layer is
    created and filled from rank 0's memory-mapped weights, so no rank holds the whole model.
    None, or a config below stage 3: nothing changes."""
    if not config or config["zero_optimization"]["stage"] != 3:
        yield
        return
    extension_cache()
    single_process_env()
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    held = HfDeepSpeedConfig(config)    # transformers keeps only a weak reference to it
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del held


def reference(model: torch.nn.Module, train: TrainConfig, *, micro_batch_size: int):
    """The frozen reference. Under ZeRO-3: a DeepSpeed engine around it with no optimizer
    (its forward gathers each layer's weights from the ranks, as the policy's does; scoring
    takes the engine, generation its .module). Otherwise the model itself, frozen."""
    freeze(model)
    if train.zero_stage != 3:
        return model
    extension_cache()
    import deepspeed

    single_process_env()
    engine, *_ = deepspeed.initialize(model=model, config=reference_config(
        train, micro_batch_size=micro_batch_size, gpu=torch.cuda.is_available(),
        fp16=is_fp16(model)))
    engine.module.eval()
    return engine


def policy_and_reference(cfg, init_path: str | None, reference_path: str | None, *,
                         micro_batch_size: int, warmup_steps: int = 0, total_steps: int = 0):
    """(policy engine, reference, tokenizer), each model loaded as its config partitions it
    (zero3_init) and on this rank's device: what run_stage trains with."""
    from selfcorrect import models

    train = cfg.train
    gpu = torch.cuda.is_available()
    fp16 = cfg.model.dtype == "float16"
    policy_config = ds_config(train, micro_batch_size=micro_batch_size, gpu=gpu,
                              warmup_steps=warmup_steps, total_steps=total_steps, fp16=fp16)
    if train.lora_rank:
        return lora_policy(cfg, init_path, reference_path, policy_config,
                           micro_batch_size=micro_batch_size, warmup_steps=warmup_steps,
                           total_steps=total_steps)
    with zero3_init(policy_config):
        policy, tok = models.load(cfg.model, init_path)
    with zero3_init(reference_config(train, micro_batch_size=micro_batch_size, gpu=gpu, fp16=fp16)
                    if train.zero_stage == 3 else None):
        ref = reference(models.load(cfg.model, reference_path)[0], train,
                        micro_batch_size=micro_batch_size)
    engine = build(policy, train, micro_batch_size=micro_batch_size,
                   warmup_steps=warmup_steps, total_steps=total_steps)
    if train.zero_stage != 3:
        ref.to(engine.device)
    return engine, ref, tok


def lora_policy(cfg, init_path: str | None, reference_path: str | None, policy_config: dict, *,
                micro_batch_size: int, warmup_steps: int = 0, total_steps: int = 0):
    """train.lora_rank > 0: (engine, reference, tokenizer) with one copy of the weights. The
    policy is the reference model plus an adapter (init_path's adapter/ when it starts from
    an earlier stage's folder, else a fresh one: B = 0), the reference that model with the
    adapter off."""
    from selfcorrect import models
    from selfcorrect.train import lora

    adapter = None
    if init_path and init_path != reference_path:
        adapter = lora.adapter_of(models.local_source(init_path, "model folder"))
        if adapter is None:
            raise ValueError(f"train.lora_rank: the policy starts from {init_path}, which has no "
                             f"{lora.ADAPTER_DIR}/ folder; with LoRA the policy is the reference "
                             "model plus an adapter, so it starts from the reference model or a "
                             "LoRA run's output (set train.lora_rank=0 to train every weight)")
    with zero3_init(policy_config):
        policy, tok = models.load(cfg.model, reference_path)
    engine = build(policy, cfg.train, micro_batch_size=micro_batch_size, adapter_dir=adapter,
                   warmup_steps=warmup_steps, total_steps=total_steps)
    return engine, lora.BaseView(engine.module), tok


def gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (train.gradient_checkpointing).

    Hugging Face checkpoints a layer only in training mode, and the policy stays in eval mode
    (no dropout): so the decoder layers alone are switched to training mode, their dropouts
    stay off. Call before each update: generation puts the whole model back in eval mode.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not model.is_activation_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            layer.training = True


def save(engine, tokenizer, path: str) -> None:
    """models.save on the unwrapped policy (a LoRA policy: lora.save_merged), gathering ZeRO-3
    partitions first; rank 0 writes."""
    import deepspeed

    from selfcorrect import models

    from selfcorrect.train import lora

    gather = deepspeed.zero.GatheredParameters(list(engine.module.parameters())) \
        if engine.zero_optimization_stage() == 3 else contextlib.nullcontext()
    with gather:
        if engine.global_rank == 0:
            if lora.is_lora(engine.module):   # merged weights, the adapter in adapter/
                lora.save_merged(engine.module, tokenizer, path)
            else:
                models.save(engine.module, tokenizer, path)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """The reference: eval mode, no gradients."""
    model.eval()
    model.requires_grad_(False)
    return model
