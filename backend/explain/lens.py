"""What a model "sees" in a class: large-eps targeted attacks and class activation maximisation.

A robust model's input gradients are perceptually aligned (Santurkar et al. 2019), so pushing an
image toward a class paints features of that class a person can recognise; a standard model gets
there with invisible noise. Both functions take a frozen classifier and take gradients with
respect to the input only. Images are (N,3,H,W) float in [0,1]; eps in pixel units (16/255).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.attacks.pgd import ce_loss_fn, pgd
from backend.core.archs import input_size
from backend.core.errors import Cancelled

LENS_LIMITS = {"eps": [1 / 255, 32 / 255], "steps": [1, 200], "vis_steps": [1, 500]}


def targeted_lens(model: torch.nn.Module, x: torch.Tensor, target_class: int, eps: float = 16 / 255,
                  steps: int = 60) -> torch.Tensor:
    """L-inf PGD toward `target_class` from x (N,3,H,W) in [0,1], no random start (the picture
    should change only where the model wants it to). step = 2.5 * eps / steps (Madry et al.'s rule),
    so the whole ball is reachable. Returns x_adv (N,3,H,W) in [0,1], |x_adv - x|_inf <= eps."""
    y = torch.full((x.shape[0],), int(target_class), dtype=torch.long, device=x.device)
    return pgd(ce_loss_fn(model, y, targeted=True), x, eps, 2.5 * eps / steps, steps, "linf", rand_init=False)


def _blur(x: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """3x3 depthwise Gaussian blur with replicate padding, (N,3,H,W) -> (N,3,H,W)."""
    k = torch.exp(-torch.tensor([1.0, 0.0, 1.0], device=x.device) / (2 * sigma**2))
    k = k / k.sum()
    k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)  # (3,1,3,3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)


def class_visualisation(model: torch.nn.Module, target_class: int, steps: int = 100, seed: int = 0,
                        size: int | None = None, lr: float = 0.03, jitter: int = 2, blur_every: int = 4,
                        decay: float = 1e-3, should_stop=None) -> tuple[torch.Tensor, float]:
    """Class activation maximisation from seeded grey noise: gradient ascent on the target logit.

    Regularisers (what keeps the picture from becoming adversarial noise): a random shift of up to
    `jitter` pixels each step (features must survive translation), a light 3x3 blur every
    `blur_every` steps (suppresses high frequencies) and an L2 pull toward mid-grey (`decay`).
    Steps are the gradient scaled to unit max-abs, times lr. Returns (image (1,3,size,size) in
    [0,1], softmax probability of target_class for it); size defaults to the model's input_size
    (the model contract, backend.core.archs). Deterministic in `seed`. should_stop()
    is polled every 10 steps; when it turns true the function raises errors.Cancelled.
    """
    p = next(model.parameters())
    size = input_size(model) if size is None else int(size)
    gen = torch.Generator().manual_seed(int(seed))
    x = (0.5 + 0.05 * torch.randn((1, 3, size, size), generator=gen)).clamp(0, 1).to(p.device)
    shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=gen).tolist()
    for i, (dy, dx) in enumerate(shifts):
        if should_stop is not None and i % 10 == 0 and should_stop():
            raise Cancelled("cancelled")
        xj = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        objective = model(xj)[0, target_class] - decay * (xj - 0.5).pow(2).sum()
        (g,) = torch.autograd.grad(objective, xj)
        g = torch.roll(g, (-dy, -dx), (2, 3))
        with torch.no_grad():
            x = (x + lr * g / g.abs().max().clamp_min(1e-12)).clamp_(0, 1)
            if blur_every and (i + 1) % blur_every == 0:
                x = _blur(x)
    with torch.no_grad():
        prob = float(torch.softmax(model(x), dim=1)[0, target_class])
    return x.detach(), prob
