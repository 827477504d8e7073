"""What a model costs to run, counted rather than guessed from its width: forward FLOPs of one image at
the model's input size (torch.utils.flop_counter), and that count relative to the reference network of
the cost estimates (ResNet-18 width 16 at 32 px; backend.service.budget).
"""
from __future__ import annotations

import threading

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from backend.core.archs import input_size

_CACHE: dict[str, float] = {}
_LOCK = threading.Lock()


def forward_flops(model: nn.Module, size: int | None = None) -> int:
    """FLOPs (multiply and add counted apart) of one forward pass of a (1, 3, size, size) image, size
    defaulting to the model's input_size. The model is only read (no_grad; its mode is left alone)."""
    side = int(size or input_size(model))
    p = next(model.parameters(), None)
    x = torch.zeros(1, 3, side, side, device=p.device if p is not None else "cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def reference_flops() -> int:
    """Forward FLOPs of the cost unit's network: ResNet-18 width 16 at 32 px (about 0.07 GFLOP)."""
    with _LOCK:
        if "reference" not in _CACHE:
            from backend.core.models import build_model

            _CACHE["reference"] = float(forward_flops(build_model("resnet18", width=16).eval(), 32))
        return int(_CACHE["reference"])


def relative_cost(model: nn.Module, key: str) -> float:
    """forward_flops(model) / reference_flops(), cached under `key` (the model's id and weights hash)."""
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    cost = forward_flops(model) / reference_flops()
    with _LOCK:
        _CACHE[key] = cost
    return cost
