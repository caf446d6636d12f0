"""CPU decoding with each linear layer's weight packed once for oneDNN.

Decoding pushes a few rows (the batch) through every weight matrix per new token. On a CPU
the plain fp32 matmul reads each weight afresh in its stored layout and, for a few rows,
runs at about a third of what oneDNN gets from the same weight reordered once into its
blocked layout (`make bench-gains` measures a Stage II step with and without). Generation
runs without gradients and does not change the weights, so `packed(model)` reorders every
nn.Linear weight on entry, routes the layers' forward through the packed copy, and restores
the layers on exit; the next entry packs the weights as they are then (after an update).

Applies on CPU to float32 weights held whole (not ZeRO-3 partitions, unless gathered for
generation: selfcorrect.train.gathered) when PyTorch has
oneDNN; elsewhere (GPU, bf16, no oneDNN) it changes nothing. The outputs equal the plain
matmul's up to float32 summation order (tests/test_packed_linear.py).
SELFCORRECT_PACKED_LINEAR=0 turns it off.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn


def available() -> bool:
    """PyTorch has the oneDNN packed linear and the switch is not off."""
    return (os.environ.get("SELFCORRECT_PACKED_LINEAR", "1") != "0"
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def eligible(model: nn.Module) -> list[nn.Linear]:
    """The model's linear layers that `packed` reorders (none unless all weights qualify)."""
    if not available():
        return []
    layers = [m for m in model.modules() if type(m) is nn.Linear]
    # ZeRO-3 partitions qualify only while gathered whole (selfcorrect.train.gathered)
    whole = all(p.device.type == "cpu" and p.dtype == torch.float32
                and p.numel() == getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    return layers if whole else []


def _forward(layer: nn.Linear, weight: torch.Tensor, bias, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled():     # the packed copy has no gradient: plain path
        return nn.functional.linear(x, layer.weight, layer.bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


@contextmanager
def packed(model: nn.Module, rows: int = 8):
    """Within the block, the model's linear layers use oneDNN-packed copies of their weights
    (`rows`: the batch the layout is tuned for). Yields the number of layers packed."""
    layers = eligible(model)
    try:
        for layer in layers:
            weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), max(rows, 1))
            bias = None if layer.bias is None else layer.bias.detach()
            layer.forward = partial(_forward, layer, weight, bias)
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
