"""What our own networks share (the size checks, the linear classifier, the RSupCon source's weight
initialisation), `build_model` (an untrained ResNet-style network through the architecture registry)
and `freeze` (a model made safe to share between users and threads).

The networks themselves are entries of the architecture registry, one module each in
backend/core/architectures/ (ResNet-18 with the CIFAR stem, FastNet, the published families).
Inputs are float images N x 3 x H x W in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn as nn

from backend.core.archs import build_arch
from backend.core.archs_meta import WIDTHS


class OwnClassifier(nn.Module):
    """What our own networks share under the model contract: the size checks, and a linear `fc` on the
    pooled features as the classifier (logits(x) = fc(features(x)) = forward(x)). Subclasses define
    features, cam_layer and stages."""

    fc: nn.Linear

    def set_sizes(self, num_classes: int, width: int, input_size: int) -> None:
        """Check and keep the three size arguments (ValueError naming a bad one)."""
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {WIDTHS}, got {width!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
            raise ValueError(f"input_size must be an integer >= 8, got {input_size!r}")
        self.width, self.num_classes, self.input_size = width, num_classes, input_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) in [0, 1] -> (N, num_classes) unnormalised scores."""
        return self.fc(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def init_weights(model: nn.Module) -> nn.Module:
    """The RSupCon source's initialisation (that of its SupContrast ResNet): every convolution
    Kaiming-normal with fan-out and ReLU gain, batch norms weight 1 and bias 0; linear layers keep
    PyTorch's default. PyTorch's default conv init draws weights about 2.3x smaller; under batch
    norm a conv's gradient scales with 1 / |w|, so the same learning rate then takes about 5x
    larger effective steps (docs/RSUPCON_SOURCE.md)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build_model(arch: str = "resnet18", width: int = 32, num_classes: int = 10, head: bool = False,
                head_bn: bool = False) -> nn.Module:
    """Build an untrained ResNet-style model (one with a `width` argument) through the registry.
    Raises ValueError for an unknown architecture or width. See backend.core.archs.build_arch."""
    return build_arch(arch, {"width": width, "num_classes": num_classes, "head_bn": head_bn}, head=head)


def freeze(model: nn.Module) -> nn.Module:
    """Put a model in eval mode with every parameter frozen, for sharing between users/threads.

    Attacks and saliency then take gradients with respect to inputs only, and nothing can
    switch the shared model back to train mode by accident (train() is disabled).
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.train = _train_disabled.__get__(model)  # type: ignore[method-assign]
    return model


def _train_disabled(self, mode: bool = True):
    if mode:
        raise RuntimeError("this model is frozen for serving; build a fresh one to train")
    return self
