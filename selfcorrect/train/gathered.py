"""Generation under ZeRO-3 with the weights gathered once per generation phase.

Under ZeRO-3 each rank holds 1/W of every weight, and DeepSpeed's forward hooks gather a
layer's weights before it runs and free them after: in generation that is one all-gather per
layer per new token, and with several ranks every rank must keep stepping until all are done
(synced_gpus). `weights(engine, True)` instead gathers every parameter once
(deepspeed.zero.GatheredParameters), removes the hooks for the block and puts them back after
(DeepSpeed's own `unwrap_model_for_generation`, the pattern of DeepSpeed-Chat's hybrid engine
and TRL's unwrap_model_for_generation): each rank then generates from a whole model on its
own, without synced_gpus, and on CPU through the packed linear kernels (packed_linear).

train.gather_for_generation picks the path (`decide`): always, never, or auto: gather when
the whole weights of the models generated from at once (the policy, and in Stage II with
offline first attempts the reference too) take at most half of the memory free on the
rank's device (torch.cuda.mem_get_info on GPU, available host memory on CPU), the other half
left for the KV cache and activations, on every rank (all ranks take the same path).
Tested on CPU with 2 gloo ranks (tests/test_zero3_gather.py); unverified on GPU.
"""
from __future__ import annotations

import contextlib

import torch

FREE_SHARE = 0.5        # auto: the gathered weights may take this share of the free memory


def is_zero3(model) -> bool:
    """A ZeRO-3 engine (or its module) whose parameters are partitions."""
    module = getattr(model, "module", model)
    return any(hasattr(p, "ds_id") for p in module.parameters())


def whole_bytes(*models) -> int:
    """Bytes of the models' parameters held whole (ds_numel: a partition's full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) * p.element_size()
               for m in models for p in getattr(m, "module", m).parameters())


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on `device`: the GPU's free memory, or the host's available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def fits(needed: int, free: int) -> bool:
    """auto's rule: the gathered weights take at most FREE_SHARE of the free memory."""
    return needed <= FREE_SHARE * free


def decide(setting: str, *models, device: torch.device | None = None) -> bool:
    """Whether to gather for this generation phase: `setting` is train.gather_for_generation
    (always, never, auto); nothing to gather (no model is a ZeRO-3 partition): False. With
    auto every rank measures and the answer is the same on all (gather only if all fit)."""
    if setting not in ("auto", "always", "never"):
        raise ValueError(f"train.gather_for_generation: {setting!r}; one of auto, always, never")
    models = [m for m in models if m is not None]
    if setting == "never" or not any(map(is_zero3, models)):
        return False
    if setting == "always":
        return True
    device = device or next(getattr(models[0], "module", models[0]).parameters()).device
    ok = fits(whole_bytes(*models), free_bytes(device))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([int(ok)], device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        ok = bool(flag.item())
    return ok


@contextlib.contextmanager
def weights(model, gather: bool):
    """The model to generate from: with `gather` (and a ZeRO-3 engine), its module with every
    parameter gathered and DeepSpeed's hooks off for the block; else the module (or model) as
    it is. Every rank of the engine must enter together (the gather is a collective)."""
    module = getattr(model, "module", model)
    if not (gather and module is not model and is_zero3(module)):
        yield module
        return
    from deepspeed.runtime.zero import unwrap_model_for_generation

    with unwrap_model_for_generation(model):
        yield module
