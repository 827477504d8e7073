"""What the attack modules share: the forward pass, the success rule, per-image random starts, and the
declarations of the parameters several attacks take (eps per norm, steps), so each is written once.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks.projected_gradient import random_start
from backend.attacks.registry import Param
from backend.attacks.spec import MAX_EPS

EPS_HELP = {"linf": "L-inf budget: no pixel moves by more than k/255.",
            "l2": "L2 budget of the whole perturbation (0..1 pixels)."}


def eps_param(norm: str, default: float | None = None, *, lo_open: bool = False, shown: bool = True) -> Param:
    """The budget eps for `norm` (pixel units): default 8/255 (linf) or 0.5 (l2) unless given; the
    controls offer 0..32/255 in k/255 steps (linf) or 0..3 in 0.05 steps (l2)."""
    if norm == "linf":
        return Param("eps", "eps (k/255)", default=8 / 255 if default is None else default, lo=0.0,
                     hi=MAX_EPS["linf"], lo_open=lo_open, offer=(0.0, 32 / 255), step=1 / 255, norm="linf",
                     unit="1/255", key="eps", help=EPS_HELP["linf"], shown=shown)
    return Param("eps", "eps (L2)", default=0.5 if default is None else default, lo=0.0, hi=MAX_EPS["l2"],
                 lo_open=lo_open, offer=(0.0, 3.0), step=0.05, norm="l2", key="eps2", help=EPS_HELP["l2"],
                 shown=shown)


def steps_param(method: str, default: int, lo: int, hi: int, *, offer_hi: int = 100, shown: bool = True,
                help: str = "", large_default: int | None = None) -> Param:
    """The iteration count of `method`, accepted in lo..hi; the controls offer 1..min(hi, offer_hi);
    large_default: the default for ImageNet-size models (Param.large_default)."""
    return Param("steps", "Steps", kind="int", default=default, lo=lo, hi=hi, offer=(max(lo, 1), min(hi, offer_hi)),
                 step=1, key=f"steps_{method}", help=help, shown=shown, large_default=large_default)


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # CPU convolutions run faster on channels-last input (bench/attack_throughput.py); the model's
    # own weights are left untouched, so this changes nothing for other users of the model.
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)


def ascent_loss(model: nn.Module, labels: torch.Tensor, targeted: bool, first: list) -> Callable:
    """Per-example loss (N,) to maximise: CE to the label, or minus CE to the target. The logits of
    the first call are appended to `first` (without a random start they are the clean logits)."""
    sign = -1.0 if targeted else 1.0

    def loss(xa: torch.Tensor) -> torch.Tensor:
        logits = forward(model, xa)
        if not first:
            first.append(logits.detach())
        return sign * F.cross_entropy(logits, labels, reduction="none")
    return loss


def is_success(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    return pred == labels if targeted else pred != labels


def random_starts(x: torch.Tensor, eps: float, norm: str, seed: int, restart: int) -> torch.Tensor:
    """Per-image random starts seeded by (seed, restart, the image's bytes): an image gets the same
    start whatever batch it arrives in, so batched and per-example results agree. (N,3,H,W)."""
    xc = x.detach().to("cpu", torch.float32).contiguous()
    tag = f"{seed}:{restart}".encode()
    starts = []
    for i in range(xc.shape[0]):
        h = hashlib.blake2b(xc[i].numpy().tobytes(), digest_size=8, key=tag)
        g = torch.Generator().manual_seed(int.from_bytes(h.digest(), "little") >> 1)
        starts.append(random_start(xc[i:i + 1], eps, norm, g))
    return torch.cat(starts).to(x.device)
