"""The projected-gradient primitive shared by the attacks, training and evaluation.

Pure torch (no captum/torchattacks), so the training path runs on a bare GPU machine.
Images are N x 3 x H x W in [0, 1]; eps and step_size are in pixel units (write 8/255).
The model is never switched between train and eval here: callers decide its mode.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x_adv (N,3,H,W) -> per-example loss (N,)


def random_start(x: torch.Tensor, eps: float, norm: str = "linf",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random point of the eps-ball around x (L-inf: per-pixel uniform; L2: uniform in
    the ball), clipped to [0, 1]."""
    if norm == "linf":
        noise = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return (x + (2 * noise - 1) * eps).clamp_(0, 1)
    if norm == "l2":
        n = x.shape[0]
        d = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1)
        dim = x[0].numel()
        r = torch.rand(n, device=x.device, dtype=x.dtype, generator=generator) ** (1.0 / dim)
        return (x + d * (r * eps).view(n, 1, 1, 1)).clamp_(0, 1)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project x_adv onto the eps-ball around x, then clip to [0, 1]. Shapes (N,3,H,W)."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * (eps / n.clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp_(0, 1)


def pgd(loss_fn: LossFn, x: torch.Tensor, eps: float, step_size: float, steps: int,
        norm: str = "linf", rand_init: bool = True, generator: torch.Generator | None = None,
        x_init: torch.Tensor | None = None, maximize: bool = True) -> torch.Tensor:
    """Projected gradient ascent (descent if maximize=False) of sum(loss_fn(x_adv)).

    x: (N,3,H,W) in [0, 1]; returns x_adv (N,3,H,W), detached, with |x_adv - x| <= eps in `norm`
    and x_adv in [0, 1]. L-inf steps follow the gradient's sign; L2 steps its unit direction.
    Gradients are taken with respect to the input only.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    x = x.detach()
    if x_init is not None:
        x_adv = project(x_init.detach(), x, eps, norm)
    elif rand_init and eps > 0:
        x_adv = random_start(x, eps, norm, generator)
    else:
        x_adv = x.clone()
    sign = 1.0 if maximize else -1.0
    if norm == "linf":
        # The eps-ball intersected with [0, 1] is a per-pixel box; computing its bounds once turns
        # the projection into one in-place clamp per step instead of four temporaries.
        lo, hi = (x - eps).clamp_(0, 1), (x + eps).clamp_(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(x_adv).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv.detach()  # a fresh leaf each step; the graph above is already freed
            if norm == "linf":
                x_adv.add_(grad.sign(), alpha=sign * step_size).clamp_(lo, hi)  # grad may be an expanded view
            else:
                g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                x_adv = project(x_adv.add_(grad / g, alpha=sign * step_size), x, eps, norm)
    return x_adv.detach()


def ce_loss_fn(model: torch.nn.Module, y: torch.Tensor, targeted: bool = False) -> LossFn:
    """Per-example cross-entropy to ascend: untargeted pushes away from y, targeted toward y."""
    if targeted:
        return lambda xa: -F.cross_entropy(model(xa), y, reduction="none")
    return lambda xa: F.cross_entropy(model(xa), y, reduction="none")
