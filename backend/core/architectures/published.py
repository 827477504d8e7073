"""The published-model families as architectures: "torchvision" and "timm" (a classifier by name,
random weights; an imported checkpoint's safetensors supply the trained ones), "robustbench" (the
network class of RobustBench's own zoo entry) and "entrypoint" (`package.module:build`, code the
user trusts; refused unless listed in ROBUSTLENS_TRUSTED_ENTRYPOINTS, since a card is data and must
not choose code to run). Each wraps its network in backend.core.adapters.ContractAdapter, so a card's
arch_args rebuild it without any pickle.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from backend.core.adapters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RB_DATASETS,
    ContractAdapter,
    load_entrypoint,
    robustbench_net,
)
from backend.core.archs import ArchSpec, register_arch


def _norm(mean, std):
    return (tuple(mean), tuple(std)) if mean is not None else (None, None)


def build_torchvision(name: str = "resnet50", num_classes: int = 1000, input_size: int = 224,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD) -> ContractAdapter:
    """A torchvision classifier by name with random weights (weights=None: nothing downloaded)."""
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {name!r}")
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return ContractAdapter(net, num_classes, input_size, *_norm(mean, std))


def build_timm(name: str = "resnet18", num_classes: int = 1000, input_size: int = 224,
               mean=IMAGENET_MEAN, std=IMAGENET_STD) -> ContractAdapter:
    """A timm classifier by name with random weights (pretrained=False: nothing downloaded)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}")
    net = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return ContractAdapter(net, num_classes, input_size, *_norm(mean, std))


def build_robustbench(name: str = "Wong2020Fast", dataset: str = "cifar10", threat_model: str = "Linf",
                      num_classes: int = 10, input_size: int = 32, mean=None, std=None) -> ContractAdapter:
    """A RobustBench zoo architecture with random weights; its networks normalise inside themselves."""
    return ContractAdapter(robustbench_net(name, dataset, threat_model), num_classes, input_size, *_norm(mean, std))


def build_entrypoint(target: str = "", kwargs: dict[str, Any] | None = None, num_classes: int = 10,
                     input_size: int = 32, mean=None, std=None) -> ContractAdapter:
    """A network built by user code the operator trusts; it must return an nn.Module classifier."""
    net = load_entrypoint(target)(**dict(kwargs or {}))
    if not isinstance(net, nn.Module):
        raise ValueError(f"{target} returned {type(net).__name__}, not an nn.Module")
    return ContractAdapter(net, num_classes, input_size, *_norm(mean, std))


_NORM = {"mean": None, "std": None}
register_arch(ArchSpec("torchvision", build_torchvision, {"name": "resnet50", "num_classes": 1000, "input_size": 224,
                                                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
                       "torchvision classifier", order=50))
register_arch(ArchSpec("timm", build_timm, {"name": "resnet18", "num_classes": 1000, "input_size": 224,
                                            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
                       "timm classifier", order=50))
register_arch(ArchSpec("robustbench", build_robustbench, {"name": "Wong2020Fast", "dataset": "cifar10",
                                                          "threat_model": "Linf", "num_classes": 10,
                                                          "input_size": 32, **_NORM}, "RobustBench zoo network",
                       choices={"dataset": tuple(RB_DATASETS)}, order=50))
register_arch(ArchSpec("entrypoint", build_entrypoint, {"target": "", "kwargs": {}, "num_classes": 10,
                                                        "input_size": 32, **_NORM}, "user code (trusted)", order=50))
