"""Warnings that an attack evaluation of a model may be meaningless (in the spirit of fra31/auto-attack's)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks.common import forward
from backend.attacks.runner import check_inputs, class_index, model_device


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Warnings (empty list = none) that an attack evaluation of this model may be meaningless, in the
    spirit of fra31/auto-attack's checks: outputs that look like probabilities instead of logits,
    non-finite outputs, exactly-zero input gradients (gradient masking), accuracy on the labelled
    x (N,3,H,W) in [0, 1], N <= MAX_BATCH, within two standard errors of chance (untrained or
    randomised model), and outputs that change between two identical forward passes."""
    device = model_device(model)
    check_inputs(x, y)
    warnings: list[str] = []
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        y = y.detach().to(device=device, dtype=torch.long)
        logits = forward(model, x)
        n, c = logits.shape
        class_index("y", y, c)
        out = logits.detach()
        if not torch.isfinite(out).all():
            return [f"model outputs contain NaN or Inf for {int((~torch.isfinite(out)).any(1).sum())} of {n} images"]
        if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(n, device=device), atol=1e-3):
            warnings.append("model outputs are non-negative and rows sum to 1: they look like probabilities, "
                            "not logits; cross-entropy attacks on them are weak (softmax applied twice)")
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
        zero = int((g.flatten(1).abs().amax(1) == 0).sum())
        if zero:
            warnings.append(f"{zero} of {n} images have an exactly zero input gradient: gradient masking makes "
                            "gradient-based attacks unreliable; trust black-box results more")
        acc, chance = float((out.argmax(1) == y).float().mean()), 1.0 / c
        if acc <= chance + 2 * math.sqrt(chance * (1 - chance) / n):
            warnings.append(f"clean accuracy {acc:.2f} on {n} images is within two standard errors of chance "
                            f"({chance:.2f}): the model may be untrained or randomised")
        with torch.no_grad():
            again = forward(model, x.detach())
        if not torch.allclose(out, again, rtol=1e-4, atol=1e-5):
            warnings.append(f"two identical forward passes differ (max |diff| {float((out - again).abs().max()):.3g}): "
                            "the model is randomised (dropout on? a stochastic defence?); use EOT-style attacks")
    return warnings
