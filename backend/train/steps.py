"""The step machinery the training methods share (backend/train/methods/, one module per method, each
declaring its loss with the registry, backend.train.registry).

A method's loss takes a batch of uint8 images (B, 3, H, W) on the training device and labels (B,),
draws its views with backend.train.augment (view_b / view_s / view_t), crafts
adversarial examples with backend.attacks.projected_gradient.pgd (ce_attack for cross-entropy), and
returns the scalar loss of one train-mode forward pass (the caller does backward and the optimiser
step). Here: the network wrapper (TrainNet, Nets), the per-step context (StepContext), eval_mode,
the cross-entropy attack and loss, the KL term, and the RSupCon step.

Attacks run with the network in eval mode (batch-norm running statistics, no statistics updates),
for every method: RSupCon's source does so, TRADES' reference code does so for its KL attack, and
using one rule for all baselines keeps them comparable. (Madry-style code often attacks in train
mode; with eval mode the attack never pollutes the BN statistics with adversarial batches.)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks.projected_gradient import pgd
from backend.core.errors import Cancelled  # the one stop signal (here: SIGTERM / SIGINT asked the trainer to stop)
from backend.train.augment import view_b, view_s, view_t
from backend.train.config import TrainConfig
from backend.train.losses import rsupcon_attack_loss, rsupcon_terms


class TrainNet(nn.Module):
    """Wraps a ResNet18 so that one forward(x, out) call serves DDP and torch.compile.

    out: "logits" (B, classes), "features" (B, f) or "proj" (B, 128) unit-norm in float32.
    chunks > 1 runs the chunks of x through the network separately (separate batch-norm batches,
    as TRADES' reference does for clean and adversarial inputs) inside one forward call.
    """

    def __init__(self, model: nn.Module, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor, out: str = "logits", chunks: int = 1) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if chunks > 1:
            return torch.cat([self._one(c, out) for c in x.chunk(chunks)])
        return self._one(x, out)

    def _one(self, x: torch.Tensor, out: str) -> torch.Tensor:
        if out == "logits":
            return self.model(x)
        if out == "features":
            return self.model.features(x)
        if out == "proj":
            # normalise in float32: under bf16 autocast unit vectors would carry ~3 digits, and
            # the contrastive logits divide their dot products by 0.07
            return F.normalize(self.model.head(self.model.features(x)).float(), dim=1)
        raise ValueError(f"out must be logits, features or proj, got {out!r}")


@dataclass
class Nets:
    train: Callable  # TrainNet, possibly wrapped in DDP and/or torch.compile: train-mode forwards
    attack: Callable  # TrainNet, possibly compiled, never DDP: forwards for attacks and evaluation
    core: TrainNet  # the module itself (mode switches, state dicts)


@dataclass
class StepContext:
    cfg: TrainConfig
    gen_aug: torch.Generator  # CPU generator for augmentation parameters
    gen_dev: torch.Generator  # generator on the training device for attack random starts
    autocast: Callable[[], ContextManager]
    should_stop: Callable[[], bool]

    def check(self) -> None:
        if self.should_stop():
            raise Cancelled("stop requested")


@contextmanager
def eval_mode(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def ce_attack(nets: Nets, x, y, ctx: StepContext, step_size: float, steps: int) -> torch.Tensor:
    """PGD (random start, `steps` steps of `step_size`, eps = cfg.eps) ascending the cross-entropy, in
    eval mode: x (B,3,H,W) in [0, 1] -> x_adv (B,3,H,W)."""
    def loss_fn(xa):
        ctx.check()
        with ctx.autocast():
            logits = nets.attack(xa)
        return F.cross_entropy(logits.float(), y, reduction="none")  # (B,)

    with eval_mode(nets.core):
        return pgd(loss_fn, x, ctx.cfg.eps, step_size, steps, generator=ctx.gen_dev)


def ce_logits(nets: Nets, x, y, ctx) -> torch.Tensor:
    """The train-mode cross-entropy (with cfg.label_smoothing) of x (B,3,H,W), a scalar."""
    with ctx.autocast():
        logits = nets.train(x)
    return F.cross_entropy(logits.float(), y, label_smoothing=ctx.cfg.label_smoothing)


def kl_div(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_clean || softmax(logits_adv)), (B,); TRADES' reference direction."""
    return (p_clean * (p_clean.clamp_min(1e-12).log() - logits_adv.float().log_softmax(1))).sum(1)


def rsupcon_attack(nets: Nets, xt, xs, xb, y, ctx: StepContext,
                   x_init: torch.Tensor | None = None) -> torch.Tensor:
    """Adversarial t and s views, (2B,3,H,W) = [x~_t; x~_s], crafted by ascending the contrastive
    loss of the adversarial anchors against the clean contrast set [z_t, z_s, z_b], each anchor's
    own clean source excluded (RSUPCON.md, "The attack"). Eval mode; PGD-k with random start
    (x_init, (2B,3,H,W), replaces the random start: the side-by-side bench feeds the source's)."""
    cfg = ctx.cfg
    b = len(y)
    with eval_mode(nets.core):
        with torch.no_grad(), ctx.autocast():
            z_clean = nets.attack(torch.cat([xt, xs, xb]), "proj").view(3, b, -1)

        def loss_fn(xa):
            ctx.check()
            with ctx.autocast():
                z_adv = nets.attack(xa, "proj").view(2, b, -1)
            return rsupcon_attack_loss(z_adv, z_clean, y, cfg.temperature, cfg.base_temperature)

        return pgd(loss_fn, torch.cat([xt, xs]), cfg.eps, cfg.step_size, cfg.attack_steps,
                   generator=ctx.gen_dev, x_init=x_init)


def rsupcon_views(x_u8, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three views (t, s, b) of a uint8 batch, each float (B,3,H,W), drawn in that order."""
    return view_t(x_u8, ctx.gen_aug), view_s(x_u8, ctx.gen_aug), view_b(x_u8, ctx.gen_aug)


def rsupcon_step(nets: Nets, xt, xs, xb, y, ctx: StepContext,
                 x_init: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Everything one RSupCon step computes from given views: the adversarial views "x_adv"
    (2B,3,H,W), the train-mode projections "z" (3,B,d) of [x~_t, x~_s, x_b], and the loss terms
    "l_adv", "l_cln" (scalars; the training loss is their sum)."""
    cfg = ctx.cfg
    b = len(y)
    x_adv = rsupcon_attack(nets, xt, xs, xb, y, ctx, x_init)
    with ctx.autocast():
        z = nets.train(torch.cat([x_adv, xb]), "proj").view(3, b, -1)  # [t~, s~, b]
    l_adv, l_cln = rsupcon_terms(z[:2], z[2], y, cfg.temperature, cfg.base_temperature)
    return {"x_adv": x_adv, "z": z, "l_adv": l_adv, "l_cln": l_cln}
