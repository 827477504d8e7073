"""Validation during training and the linear probe of the contrastive methods.

Images here are uint8 (N, 3, S, S) resident on the training device (S the data set's side);
classifiers map float (n, 3, S, S) in [0, 1] to logits (n, classes). Validation draws from its own seeded generator,
never from the training generators, so validating (or not) leaves the training run unchanged.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from backend.attacks.projected_gradient import pgd
from backend.train.augment import view_t
from backend.train.config import TrainConfig
from backend.train.steps import Nets, StepContext, eval_mode

NCM_SCALE = 10.0  # logit scale of the nearest-class-mean classifier (cosine similarity / 0.1)


def _float(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float().div_(255.0)


class NearestClassMean(nn.Module):
    """logits = NCM_SCALE * cos(features(x), class mean): a differentiable classifier for validating
    an encoder before its linear probe exists (PGD can attack it like any classifier)."""

    def __init__(self, nets: Nets, means: torch.Tensor, autocast):
        super().__init__()
        self.nets, self.means, self.autocast = nets, means, autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            f = self.nets.attack(x, "features")
        return NCM_SCALE * F.normalize(f.float(), dim=1) @ self.means.T


@torch.no_grad()
def class_means(nets: Nets, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                batch: int, autocast) -> torch.Tensor:
    """(classes, f) unit-norm means of the unit-norm clean features (eval mode) of images."""
    feats = []
    with eval_mode(nets.core):
        for i in range(0, len(images), batch):
            with autocast():
                feats.append(F.normalize(nets.attack(_float(images[i:i + batch]), "features").float(), dim=1))
    f = torch.cat(feats)
    means = torch.zeros(num_classes, f.shape[1], device=f.device).index_add_(0, labels, f)
    return F.normalize(means, dim=1)


def logits_classifier(nets: Nets, autocast) -> Callable:
    def classify(x):
        with autocast():
            return nets.attack(x).float()
    return classify


def validate(classify: Callable, nets: Nets, images: torch.Tensor, labels: torch.Tensor,
             cfg: TrainConfig, batch: int, should_stop: Callable[[], bool], seed: int = 0) -> dict:
    """{"val_clean": acc on all images, "val_robust": PGD-attack_steps acc on the first
    val_robust_n (None when 0)}; eval mode, fixed seed."""
    from backend.train.steps import Cancelled

    correct = 0
    with eval_mode(nets.core):
        with torch.no_grad():
            for i in range(0, len(images), batch):
                if should_stop():
                    raise Cancelled("stop requested")
                pred = classify(_float(images[i:i + batch])).argmax(1)
                correct += (pred == labels[i:i + batch]).sum()
        out = {"val_clean": float(correct) / max(1, len(images)), "val_robust": None}
        n = min(cfg.val_robust_n, len(images))
        if n and cfg.attack_steps:
            gen = torch.Generator(device=images.device).manual_seed(seed)
            correct = 0
            for i in range(0, n, batch):
                if should_stop():
                    raise Cancelled("stop requested")
                x, y = _float(images[i:min(n, i + batch)]), labels[i:min(n, i + batch)]
                x_adv = pgd(lambda xa: F.cross_entropy(classify(xa), y, reduction="none"), x, cfg.eps,
                            cfg.step_size, cfg.attack_steps, generator=gen)
                with torch.no_grad():
                    correct += (classify(x_adv).argmax(1) == y).sum()
            out["val_robust"] = float(correct) / n
    return out


def _reset_linear(fc: nn.Linear, seed: int) -> None:
    """nn.Linear's default init drawn from a seeded generator (resuming a probe repeats it)."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(fc.in_features)
    with torch.no_grad():
        fc.weight.copy_(torch.empty(fc.weight.shape).uniform_(-bound, bound, generator=g))
        fc.bias.copy_(torch.empty(fc.bias.shape).uniform_(-bound, bound, generator=g))


@torch.no_grad()
def _feature_stats(nets: Nets, images: torch.Tensor, autocast, n: int = 4096, batch: int = 512):
    """Per-dimension mean (f,) and scale (f,) = std * sqrt(f) of clean eval-mode features of up to
    n images (a fixed subset)."""
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n].to(images.device)
    feats = []
    for i in range(0, len(idx), batch):
        with autocast():
            feats.append(nets.attack(_float(images[idx[i:i + batch]]), "features").float())
    f = torch.cat(feats)
    # unit variance per dimension, then / sqrt(f): E|z|^2 = 1, so an SGD step of lr 1.0 moves the
    # logits by O(1) whatever the width
    return f.mean(0), f.std(0, unbiased=False).clamp_min(1e-6) * math.sqrt(f.shape[1])


def linear_probe(nets: Nets, images: torch.Tensor, labels: torch.Tensor, ctx: StepContext,
                 rank: int = 0, world: int = 1, on_epoch: Callable[[int, float], None] | None = None) -> None:
    """Fit nets.core.model.classifier (fc) on frozen eval-mode encoder features: cross-entropy, view t
    (TrivialAugmentWide + flip), SGD(probe_lr, momentum 0.9, no weight decay), cosine decay over
    the probe's steps, global batch probe_batch_size split across ranks. Trains fc in place.

    [ours] The probe is trained on standardised features ((f - mean) / (std sqrt(f)), statistics
    of clean training features) and the standardisation is folded into fc at the end, so the
    result is still one Linear on raw features. Without it, lr 1.0 diverged on the large, uncentred
    features of briefly trained encoders (loss 5.9 -> 10.9 in a 2-epoch CPU run).
    cfg.adv_probe: the inputs are PGD-attack_steps examples of the current classifier instead
    (random starts from the training device generator)."""
    cfg = ctx.cfg
    fc: nn.Linear = nets.core.model.classifier
    _reset_linear(fc, cfg.seed + 104729)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 + rank)  # the probe's own augmentation draws
    order = torch.Generator().manual_seed(cfg.seed + 7919)  # same batch order on every rank
    opt = torch.optim.SGD(fc.parameters(), lr=cfg.probe_lr, momentum=0.9, weight_decay=0.0)
    n = len(images)
    bs = min(cfg.probe_batch_size, n)
    per_rank = bs // world
    steps = max(1, n // bs)
    total = steps * cfg.probe_epochs
    with eval_mode(nets.core):
        mean, scale = _feature_stats(nets, images, ctx.autocast)

        def head(f):
            return fc((f.float() - mean) / scale)

        for epoch in range(cfg.probe_epochs):
            perm = torch.randperm(n, generator=order).to(images.device)
            loss_sum = torch.zeros((), device=images.device)
            for s in range(steps):
                ctx.check()
                idx = perm[s * bs + rank * per_rank: s * bs + (rank + 1) * per_rank]
                x, y = view_t(images[idx], gen), labels[idx]
                if cfg.adv_probe:  # PGD on the whole classifier (frozen encoder + current probe)
                    def loss_fn(xa):
                        ctx.check()
                        with ctx.autocast():
                            f = nets.attack(xa, "features")
                        return F.cross_entropy(head(f), y, reduction="none")
                    x = pgd(loss_fn, x, cfg.eps, cfg.step_size, cfg.attack_steps, generator=ctx.gen_dev)
                with torch.no_grad(), ctx.autocast():
                    f = nets.attack(x, "features")
                loss = F.cross_entropy(head(f), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    for p in fc.parameters():
                        dist.all_reduce(p.grad)
                        p.grad /= world
                for group in opt.param_groups:
                    group["lr"] = cfg.probe_lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + s) / total))
                opt.step()
                loss_sum += loss.detach()
            if on_epoch is not None:
                on_epoch(epoch + 1, float(loss_sum) / steps)
        with torch.no_grad():  # fold the standardisation: W (f - m) / s + b = (W / s) f + (b - (W / s) m)
            w = fc.weight / scale
            fc.bias.sub_(w @ mean)
            fc.weight.copy_(w)
