"""A compact VGG-style network for training on a CPU: the second trainable entry of the architecture
registry, beside ResNet-18.

Why it exists: on the project's 2-core CPU the zoo has to come from a few core-hours, and accuracy per
core-hour is what decides the network. The shape follows the published choices of fast CIFAR-10
training (KellerJordan's airbench: three conv groups, each two 3x3 convolutions with a 2x2 max-pool
after the first, the channel count quadrupled after the first group, no residual connections, a global
max-pool before the classifier), written here from that description. It differs from airbench on
purpose: a plain 3x3 stem instead of a data-dependent patch-whitening layer (every weight is learned
from a seeded initialisation, like ResNet-18's here), ReLU instead of GELU (Guided Backprop and the
other hook-based saliency methods look for ReLU modules), batch norm with a learned scale, and a
linear classifier with a bias and no fixed logit scaling.

Contract (backend.core.archs): features(x) (N, 4*width) after the global max-pool; classifier = fc;
cam_layer = group3 (the last spatial map, input_size/8 on a side); stages() = fc, group3, group2,
group1, stem. Inputs are images in [0, 1] without normalisation (the first batch norm absorbs scale).
At width 64 (channels 32-64-256-256) a 32-px image costs 0.30 GFLOP forward, 2.0 M parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.core.archs import ArchSpec, register_arch
from backend.core.archs_meta import WIDTHS
from backend.core.models import OwnClassifier, init_weights


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU: (N, c_in, H, W) -> (N, c_out, H/2, W/2).
    Pooling right after the first convolution makes the second run at a quarter of the pixels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # one module per call site (see models.BasicBlock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.pool(self.conv1(x))))
        return self.relu2(self.bn2(self.conv2(x)))


class FastNet(OwnClassifier):
    """The compact CPU network; see the module docstring. width in backend.core.archs_meta.WIDTHS."""

    def __init__(self, num_classes: int = 10, width: int = 64, input_size: int = 32):
        super().__init__()
        self.set_sizes(num_classes, width, input_size)
        self.feature_dim = 4 * width
        self.stem = nn.Sequential(nn.Conv2d(3, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2),
                                  nn.ReLU())
        self.group1 = ConvGroup(width // 2, width)
        self.group2 = ConvGroup(width, 4 * width)
        self.group3 = ConvGroup(4 * width, 4 * width)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.group3

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Output to input: the parts the randomisation check re-initialises in this order."""
        return [("fc", self.fc), ("group3", self.group3), ("group2", self.group2), ("group1", self.group1),
                ("stem", self.stem)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) in [0, 1] -> (N, 4*width) globally max-pooled features."""
        out = self.group3(self.group2(self.group1(self.stem(x))))  # (N, 4w, H/8, W/8)
        return torch.flatten(F.adaptive_max_pool2d(out, 1), 1)  # (N, 4w)


def build(num_classes: int = 10, width: int = 64, input_size: int = 32) -> FastNet:
    return FastNet(num_classes=num_classes, width=width, input_size=input_size)


FASTNET = register_arch(ArchSpec(
    "fastnet", build, {"num_classes": 10, "width": 64, "input_size": 32},
    label="FastNet (compact VGG-style, for CPU training)", short="FastNet",
    choices={"width": WIDTHS}, trainable=True, order=20))
