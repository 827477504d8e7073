"""Any image classifier under the model contract: published networks (torchvision, timm, RobustBench)
and a user's own, wrapped so that attacks, saliency, embeddings and the lens treat them as ours.

`ContractAdapter(net, num_classes, input_size, mean, std)`:
- normalisation is the adapter's first module (`normalize`), so inputs stay in [0, 1] and every
  attack's eps is in pixel units; mean/std None = the network normalises itself (RobustBench models
  carry their own) or expects [0, 1];
- `classifier` is the network's last nn.Linear with out_features == num_classes, found by one traced
  forward pass at construction; `features(x)` is that layer's input (flattened), so
  logits(x) == classifier(features(x)) holds by construction and is checked on the trace;
- `cam_layer` is the module whose 4-D output (h, w > 1) completes last in that pass (for a ResNet:
  the last residual stage), `stages()` the network's top-level parts with parameters from the output
  back to the input (the randomisation check's order), plus the normaliser's absence noted.

The architectures that rebuild such models from a card's arch_args without any pickle (torchvision,
timm, robustbench, entrypoint) are registered in backend/core/architectures/published.py; this module
holds what they and the importers (backend.imports.sources) share: the adapter, RobustBench's zoo and
the trusted entry points.
"""
from __future__ import annotations

import importlib
import os
import sys

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUST_ENV = "ROBUSTLENS_TRUSTED_ENTRYPOINTS"


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers (saved in the weights)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean, std):
        super().__init__()
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,) or not bool((std_t > 0).all()):
            raise ValueError(f"mean and std must be three numbers each (std > 0), got {mean} and {std}")
        self.register_buffer("mean", mean_t.view(1, 3, 1, 1))
        self.register_buffer("std", std_t.view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ContractAdapter(nn.Module):
    """A classifier `net` (images -> logits) under the model contract; see the module docstring."""

    def __init__(self, net: nn.Module, num_classes: int, input_size: int, mean=None, std=None):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.net = net
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self._trace()

    # -- discovery, once -------------------------------------------------------------------------
    def _trace(self) -> None:
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear) and m.out_features == self.num_classes]
        if not linears:
            raise ValueError(f"{type(self.net).__name__} has no nn.Linear with {self.num_classes} outputs "
                             "(the classifier the contract needs); check num_classes")
        order: list[nn.Module] = []
        spatial: list[nn.Module] = []
        first_call: dict[int, int] = {}

        def hook(mod, _inp, out):
            first_call.setdefault(id(mod), len(first_call))
            order.append(mod)
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] > 1 and out.shape[3] > 1:
                spatial.append(mod)

        handles = [m.register_forward_hook(hook) for m in self.net.modules() if m is not self.net]
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                x = torch.rand(2, 3, self.input_size, self.input_size, generator=torch.Generator().manual_seed(0))
                out = self.net(self.normalize(x))
        finally:
            for h in handles:
                h.remove()
            self.net.train(was_training)
        if not isinstance(out, torch.Tensor) or out.shape != (2, self.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{type(self.net).__name__} gives {shape} for a (2, 3, {self.input_size}, "
                             f"{self.input_size}) batch; the contract needs (2, {self.num_classes}) logits")
        called = [m for m in linears if id(m) in first_call]
        if not called:
            raise ValueError(f"{type(self.net).__name__}: no {self.num_classes}-output Linear runs in forward()")
        self._classifier_ref: list[nn.Linear] = [max(called, key=lambda m: order.index(m))]  # a list: no 2nd submodule
        if not spatial:
            raise ValueError(f"{type(self.net).__name__} has no 4-D feature map larger than 1x1 at input "
                             f"{self.input_size}px (Grad-CAM needs one)")
        self._cam_ref = [max(spatial, key=lambda m: len(order) - 1 - order[::-1].index(m))]
        parts = [(n, m) for n, m in self.net.named_children() if any(True for _ in m.parameters())]
        self._stage_names = [n for n, m in sorted(parts, key=lambda p: -first_call.get(id(p[1]), -1))
                             if id(dict(parts)[n]) in first_call]
        if len(self._stage_names) < 2:  # one big child (e.g. Sequential): walk one level deeper
            inner = [(f"{n}.{c}", cm) for n, m in parts for c, cm in m.named_children()
                     if any(True for _ in cm.parameters()) and id(cm) in first_call]
            self._stage_names = [n for n, _ in sorted(inner, key=lambda p: -first_call[id(p[1])])]
        self.feature_dim = int(self._classifier_ref[0].in_features)
        with torch.no_grad():
            self.net.eval()
            try:
                f = self.features(x)
                if not torch.allclose(self.classifier(f), self.logits(x), atol=1e-4, rtol=1e-4):
                    raise ValueError(f"{type(self.net).__name__}: its logits are not its last Linear applied to "
                                     "that layer's input (something runs after the classifier)")
            finally:
                self.net.train(was_training)

    # -- the contract ------------------------------------------------------------------------------
    @property
    def classifier(self) -> nn.Linear:
        return self._classifier_ref[0]

    @property
    def cam_layer(self) -> nn.Module:
        return self._cam_ref[0]

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [(n, self.net.get_submodule(n)) for n in self._stage_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        got: list[torch.Tensor] = []
        handle = self.classifier.register_forward_pre_hook(lambda _m, inp: got.append(inp[0]))
        try:
            self.net(self.normalize(x))
        finally:
            handle.remove()
        return got[-1].flatten(1)


def robustbench_zoo():
    """RobustBench's model zoo (model_dicts), its enums and load_model. RobustBench 1.1.1 imports the
    AutoAttack code as `autoattack` (installed from GitHub in its own instructions); the registry's
    package of that same code is `pyautoattack`, so that name is given to it when `autoattack` itself
    is absent."""
    try:
        importlib.import_module("autoattack")
    except ImportError:
        try:
            pyaa = importlib.import_module("pyautoattack")
            sys.modules["autoattack"] = pyaa
            sys.modules["autoattack.state"] = importlib.import_module("pyautoattack.state")
        except ImportError as e:
            raise ImportError("RobustBench models need the extra: pip install -r requirements-extras.txt") from e
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        from robustbench.utils import load_model
    except ImportError as e:
        raise ImportError(f"RobustBench models need the extra: pip install -r requirements-extras.txt ({e})") from e
    return model_dicts, BenchmarkDataset, ThreatModel, load_model


RB_DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
RB_SIZES = {"cifar10": 32, "cifar100": 32, "imagenet": 224}


def robustbench_net(name: str, dataset: str, threat_model: str) -> nn.Module:
    """The untrained network of one RobustBench zoo entry (its own constructor)."""
    zoo, BenchmarkDataset, ThreatModel, _ = robustbench_zoo()
    try:
        entries = zoo[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except ValueError as e:
        raise ValueError(f"RobustBench has no {dataset!r} / {threat_model!r} leaderboard: {e}") from e
    if name not in entries:
        raise ValueError(f"RobustBench has no model {name!r} for {dataset} / {threat_model}; "
                         f"e.g. {', '.join(sorted(entries)[:6])}")
    return entries[name]["model"]()


def trusted_entrypoints() -> set[str]:
    return {t.strip() for t in os.environ.get(TRUST_ENV, "").split(",") if t.strip()}


def load_entrypoint(target: str):
    """The callable `package.module:function`, if the operator trusts it (ROBUSTLENS_TRUSTED_ENTRYPOINTS)."""
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"an entry point is 'package.module:function', got {target!r}")
    if target not in trusted_entrypoints():
        raise ValueError(f"entry point {target!r} is not trusted: it runs code, so list it in {TRUST_ENV} "
                         "(comma-separated) on the machine that loads it")
    mod, fn = target.split(":")
    build = getattr(importlib.import_module(mod), fn, None)
    if not callable(build):
        raise ValueError(f"{target}: {fn!r} is not a callable of module {mod!r}")
    return build
