"""What a model "sees" in a class: large-budget targeted attacks and class activation maximisation.

A robust model's input gradients are perceptually aligned (Santurkar et al. 2019), so pushing an
image toward a class paints features of that class a person can recognise; a standard model gets
there with invisible noise. Both functions take a frozen classifier and take gradients with
respect to the input only. Images are (N,3,H,W) float in [0,1]; L-inf eps in pixel units (16/255),
L2 eps as the L2 norm of the change in those units over all 3*H*W values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.attacks.projected_gradient import ce_loss_fn, pgd
from backend.core.archs import input_size
from backend.core.errors import Cancelled

# eps per norm in pixel units. Large L2 budgets are where robust models' targeted images show class
# features (Santurkar et al. 2019); an L2 ball of radius eps holds every image at L2 distance <= eps
# from x (two S x S x 3 images are at most S * sqrt(3) apart: 55.4 at 32 px; L-inf 16/255 everywhere
# is L2 3.5 at 32 px, 24 at 224 px).
LENS_LIMITS = {"eps": [1 / 255, 32 / 255], "eps_l2": [0.1, 20.0], "steps": [1, 200], "vis_steps": [1, 500]}
LENS_NORMS = ("linf", "l2")
# the page's and the service's defaults, measured on the shipped CIFAR-10 checkpoints (README, Feature lens)
LENS_DEFAULTS = {"norm": "l2", "eps": {"linf": 16 / 255, "l2": 6.0}, "steps": 60}


def lens_step(eps: float, steps: int) -> float:
    """The step size that lets `steps` steps reach the ball's edge with room to turn: 2.5 * eps / steps
    (Madry et al.'s rule), for either norm (L-inf steps move every pixel by it, L2 steps move the image
    by it in L2 distance)."""
    return 2.5 * float(eps) / int(steps)


def targeted_lens(model: torch.nn.Module, x: torch.Tensor, target_class: int, eps: float = 16 / 255,
                  steps: int = 60, norm: str = "linf") -> tuple[torch.Tensor, list[list[float]]]:
    """PGD toward `target_class` from x (N,3,H,W) in [0,1] in the L-inf or L2 ball of radius eps,
    no random start (the picture should change only where the model wants it to), step
    lens_step(eps, steps) so the whole ball is reachable. Returns (x_adv (N,3,H,W) in [0,1] with
    |x_adv - x|_norm <= eps, path): path[i] the N target-class softmax probabilities after i steps,
    i = 0..steps (path[0] is the clean image's)."""
    if norm not in LENS_NORMS:
        raise ValueError(f"norm must be one of {LENS_NORMS}, got {norm!r}")
    y = torch.full((x.shape[0],), int(target_class), dtype=torch.long, device=x.device)
    path: list[list[float]] = []
    loss_fn = ce_loss_fn(model, y, targeted=True)

    def recording(xa: torch.Tensor) -> torch.Tensor:  # pgd evaluates it once per step, before the step
        loss = loss_fn(xa)  # -cross-entropy = log p(target)
        path.append(loss.detach().exp().cpu().tolist())
        return loss

    xa = pgd(recording, x, eps, lens_step(eps, steps), steps, norm, rand_init=False)
    with torch.no_grad():
        path.append(torch.softmax(model(xa), 1)[:, int(target_class)].cpu().tolist())
    return xa, path


def measure_budgets(model: torch.nn.Module, x: torch.Tensor, targets: list[int],
                    budgets: list[tuple[str, float]], steps: int, collect: list | None = None) -> list[dict]:
    """How far `targeted_lens` moves each image x[k] (N,3,H,W) toward targets[k] under each budget
    (norm, eps), one image at a time as the app runs it: per budget {"norm", "eps", "n", "p_start" and
    "p_end" (mean target probability before and after), "hit" (images then predicted as their target),
    "l2" (mean L2 size of the change), "path" (mean target probability after each step, 0..steps)}.
    What scripts/lens_budget.py records in a card ("lens_measured") for the Feature lens's captions.
    collect, when given, gets each budget's attacked images (N,3,H,W) appended (to look at)."""
    if len(targets) != x.shape[0]:
        raise ValueError(f"one target per image: {x.shape[0]} images, {len(targets)} targets")
    out = []
    for norm, eps in budgets:
        paths, hits, sizes, images = [], 0, [], []
        for k, t in enumerate(targets):
            with torch.enable_grad():
                xa, path = targeted_lens(model, x[k:k + 1], int(t), float(eps), steps, norm)
            with torch.no_grad():
                hits += int(int(model(xa).argmax()) == int(t))
            paths.append([p[0] for p in path])
            sizes.append(float((xa - x[k:k + 1]).flatten().norm()))
            images.append(xa.detach())
        if collect is not None:
            collect.append(torch.cat(images))
        mean_path = torch.tensor(paths).mean(0).tolist()
        out.append({"norm": norm, "eps": float(eps), "n": len(targets), "p_start": round(mean_path[0], 4),
                    "p_end": round(mean_path[-1], 4), "hit": hits, "l2": round(sum(sizes) / len(sizes), 3),
                    "path": [round(v, 4) for v in mean_path]})
    return out


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
