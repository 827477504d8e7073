"""ResNet-18 with the CIFAR stem, a width parameter and an optional projection head: the first entry
of the architecture registry (backend.core.archs, which also writes down the model contract).

Inputs are float images N x 3 x H x W in [0, 1] of any side (global pooling); there is no
normalisation layer (the RSupCon source uses none), so every attack and saliency method works
directly in pixel space.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.core.archs import ArchSpec, projection_head, register_arch
from backend.core.archs_meta import WIDTHS
from backend.core.models import OwnClassifier, init_weights


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        # ReLUs are modules (one per call site, not in place) so that hook-based saliency such as
        # Guided Backprop can find and override them; they add no state_dict keys.
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(OwnClassifier):
    """ResNet-18, CIFAR stem (3x3 conv, stride 1, no max-pool), global average pooling.

    features(x): (N, 8*width) encoder output; logits(x) = forward(x): (N, num_classes);
    project(x): (N, proj_dim) L2-normalised projection-head output (only if built with head=True).
    Contract members (backend.core.archs): classifier = fc, cam_layer = layer4 (the last residual
    stage), stages() = fc, layer4, layer3, layer2, layer1, stem (conv1 + bn1). input_size only
    records the side the model is meant for (global pooling accepts any size).
    """

    def __init__(self, num_classes: int = 10, width: int = 64, head: bool = False, proj_dim: int = 128,
                 head_bn: bool = False, input_size: int = 32):
        super().__init__()
        self.set_sizes(num_classes, width, input_size)
        self.feature_dim = 8 * width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()  # a module, not F.relu: see BasicBlock
        planes, layers, in_planes = [width, 2 * width, 4 * width, 8 * width], [], width
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_planes, p, stride), BasicBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.head = None
        if head:  # head_bn: an option, not the source's head
            self.head = projection_head(self.feature_dim, proj_dim, head_bn)
        init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.layer4

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Output to input: the parts the randomisation check re-initialises in this order."""
        return [("fc", self.fc), ("layer4", self.layer4), ("layer3", self.layer3), ("layer2", self.layer2),
                ("layer1", self.layer1), ("stem", nn.ModuleList([self.conv1, self.bn1]))]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) in [0, 1] -> (N, 8*width) pooled encoder features."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)  # (N, C)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> (N, proj_dim) unit-norm contrastive embedding (needs head=True)."""
        if self.head is None:
            raise RuntimeError("this model was built without a projection head")
        return F.normalize(self.head(self.features(x)), dim=1)


def build(num_classes: int = 10, width: int = 32, proj_dim: int = 128, head_bn: bool = False,
          input_size: int = 32, head: bool = False) -> ResNet18:
    return ResNet18(num_classes=num_classes, width=width, head=head, proj_dim=proj_dim, head_bn=head_bn,
                    input_size=input_size)


RESNET18 = register_arch(ArchSpec(
    "resnet18", build, {"num_classes": 10, "width": 32, "proj_dim": 128, "head_bn": False, "input_size": 32},
    label="ResNet-18 (CIFAR stem)", short="ResNet-18",
    head_arg="head", choices={"width": WIDTHS}, trainable=True, order=10))


