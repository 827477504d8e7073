"""A user's own network for the entry-point import test: `tests.toy_entry:build`."""
import torch.nn as nn


def build(channels: int = 8, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
