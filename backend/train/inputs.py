"""Training inputs: a data set's training split (all but 1,000 held-out images, which validate) or a
synthetic task made in code.

All images here are uint8 (N, 3, S, S) CPU tensors (channels first, ready for the views), S the
data set's image size (backend.core.datasets; 32 for CIFAR and the synthetic task), labels int64
(N,). The held-out images are always the same 1,000 (train_val_indices, seed 0, stratified), so
every model is validated on the same images; val_n picks a balanced prefix of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from backend.core import data as bdata
from backend.core.datasets import image_size_of
from backend.train.config import TrainConfig

HELD_OUT = 1000
SYNTHETIC = "synthetic"


@dataclass(frozen=True, eq=False)
class Inputs:
    train_x: torch.Tensor  # (N, 3, S, S) uint8
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor  # (V, 3, S, S) uint8, balanced order (every prefix is balanced)
    val_y: torch.Tensor
    ncm_x: torch.Tensor  # training images for the nearest-class-mean classifier
    ncm_y: torch.Tensor
    classes: tuple[str, ...]
    variant: str
    source: str


def synthetic_task(n: int, seed: int, num_classes: int = 10, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 3, size, size) uint8 of a learnable num_classes-class task: each class has its
    own colour and stripe orientation/frequency; noise and random phase make every image different.
    Stripe frequencies are per 32 pixels, so a larger size shows the same pattern at a finer grain."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % num_classes
    palette = torch.Generator().manual_seed(12345)  # the task itself is fixed across seeds
    colours = 0.2 + 0.6 * torch.rand(num_classes, 3, generator=palette)
    angle = torch.arange(num_classes) * math.pi / num_classes
    freq = 0.3 + 0.05 * torch.arange(num_classes)
    grid = torch.arange(float(size)) * (32.0 / size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    a, f = angle[labels].view(-1, 1, 1), freq[labels].view(-1, 1, 1)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    stripes = 0.5 + 0.5 * torch.sin(f * (xx * torch.cos(a) + yy * torch.sin(a)) + phase)  # (n,size,size)
    img = colours[labels].view(n, 3, 1, 1) * (0.5 + 0.5 * stripes.unsqueeze(1))
    img = img + 0.08 * torch.randn(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels


def _nchw(images_nhwc: torch.Tensor) -> torch.Tensor:
    return images_nhwc.permute(0, 3, 1, 2).contiguous()


def load_inputs(cfg: TrainConfig) -> Inputs:
    """The training, validation and class-mean images for cfg (data, subset, val_n, ncm_n)."""
    if cfg.data == SYNTHETIC:
        n_train = cfg.subset or cfg.synthetic_n
        size = image_size_of(cfg.dataset)
        tx, ty = synthetic_task(n_train, seed=1000 + cfg.seed, size=size)
        vx, vy = synthetic_task(max(cfg.val_n, 1), seed=999, size=size)  # same val images for every seed
        vx, vy = vx[:cfg.val_n], vy[:cfg.val_n]
        classes = tuple(f"class{k}" for k in range(10))
        variant, source = SYNTHETIC, "synthetic task (backend.train.inputs.synthetic_task)"
    else:
        split = bdata.load_split(cfg.data, "train", cfg.dataset)
        labels = split.labels.numpy()
        if len(split) <= HELD_OUT + 1:
            raise ValueError(f"data={cfg.data!r}: {len(split)} training images, need more than {HELD_OUT}")
        tr, va = bdata.train_val_indices(len(split), HELD_OUT, seed=0, labels=labels)
        va = va[bdata.balanced_indices(labels[va], min(cfg.val_n, len(va)), seed=0)]
        if cfg.subset:
            if cfg.subset > len(tr):
                raise ValueError(f"subset={cfg.subset}: only {len(tr)} training images available")
            # sorted: the subset is a set (seed 0 for every run, so all models see the same images)
            tr = np.sort(tr[bdata.balanced_indices(labels[tr], cfg.subset, seed=0)])
        tx, ty = _nchw(split.images[torch.from_numpy(tr)]), split.labels[torch.from_numpy(tr)]
        vx, vy = _nchw(split.images[torch.from_numpy(va)]), split.labels[torch.from_numpy(va)]
        classes, variant, source = tuple(split.classes), split.variant, split.source
    ncm = torch.from_numpy(bdata.balanced_indices(ty.numpy(), min(cfg.ncm_n, len(ty)), seed=0))
    return Inputs(tx, ty, vx, vy, tx[ncm], ty[ncm], classes, variant, source)
