"""The model contract and the architecture registry: what every classifier in RobustLens provides.

The contract (`ClassifierModel`, a typing.Protocol; checked at build time by `check_model`):

- input: float images (N, 3, S, S) with S = `input_size`, values in `input_range` = (0.0, 1.0); no
  normalisation outside the model (a model that needs one carries it as its first module), so every
  attack and saliency method works in pixel space;
- `features(x) -> (N, feature_dim)`: the pooled encoder output (what the embedding maps, what the
  contrastive losses train);
- `classifier`: the module with `logits(x) == classifier(features(x))`; `forward(x) == logits(x)`,
  shape (N, num_classes), unnormalised scores;
- `cam_layer`: the module whose output Grad-CAM weighs (the last spatial feature map, (N, C, h, w));
- `stages()`: the model's parts ordered from the output to the input, [(name, module), ...]; the
  parameter-randomisation check re-initialises them top down in this order (its "top" mode takes
  the first two at once);
- `num_classes`, `feature_dim`, `input_size` (ints).

The registry maps an architecture name to its builder and the builder's arguments with their
defaults (`ArchSpec`). A model card stores `arch` and `arch_args` (every builder argument, filled in
by `full_args`), and loading rebuilds the network from here: weights are never unpickled.

How to add an architecture (one new module plus its test; no other file changes):
1. New module backend/core/architectures/<name>.py (every module there is imported on first use of
   the registry, so it registers itself).
2. In it, an nn.Module with the members above (see architectures/resnet18.py, architectures/fastnet.py;
   or any classifier wrapped in backend.core.adapters.ContractAdapter, as architectures/published.py
   does) and `build(**args) -> module` whose arguments all have defaults (num_classes and input_size
   among them; a `width` argument takes TrainConfig.width).
3. At its end `register_arch(ArchSpec("name", build, {"num_classes": 10, "input_size": 32, ...}, "label"))`.
   `python -m backend.train --arch name` then trains it with every method: contrastive methods
   attach `attach_head`'s projection head to its features. trainable=True (and the name in
   backend.core.archs_meta.TRAINABLE) also offers it on the Train page and adds it to the smoke
   training of every method in tests/test_train_archs.py.
4. Test it as tests/test_contracts.py does the toy CNN (service, attacks, saliency, embedding, app).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch
import torch.nn as nn

from backend.core.registry import Registry

INPUT_RANGE: tuple[float, float] = (0.0, 1.0)


@runtime_checkable
class ClassifierModel(Protocol):
    """What the attacks, saliency methods, embeddings, lens and training read from a model."""

    num_classes: int
    feature_dim: int
    input_size: int

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def classifier(self) -> nn.Module: ...

    @property
    def cam_layer(self) -> nn.Module: ...

    def stages(self) -> list[tuple[str, nn.Module]]: ...


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: `build(**args)` returns an untrained model that satisfies the contract.

    defaults: every builder argument with its default (the card stores them all, so a change of
    default never changes what an old checkpoint rebuilds). head_arg: the name of a builder
    argument that adds a projection head for contrastive training (not part of the card's
    arch_args, since checkpoints drop the head unless asked), or None."""
    name: str
    build: Builder
    defaults: dict[str, Any]
    label: str = ""
    short: str = ""  # the network's name inside a model's display name ("FastNet"); default: `name`
    head_arg: str | None = None
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # allowed values per argument
    trainable: bool = False  # offered by the Train page and trained by the test suite on every method
    order: int = 100  # menu position (ties: registration order)

    def __post_init__(self) -> None:
        for key in ("num_classes", "input_size"):
            if key not in self.defaults:
                raise ValueError(f"architecture {self.name!r}: defaults must include {key!r}")


# The built-in architectures are the modules of backend/core/architectures/, found on first use.
REGISTRY: Registry[ArchSpec] = Registry("architecture", ArchSpec, package="backend.core.architectures",
                                         order=lambda a: a.order)


def register_arch(spec: ArchSpec, replace: bool = False) -> ArchSpec:
    """Add an architecture to the registry. ValueError if the name is taken (unless replace)."""
    return REGISTRY.register(spec, replace)


def unregister_arch(name: str) -> None:
    """Remove an architecture (tests that register a toy one call this when done)."""
    REGISTRY.unregister(name)


def names() -> list[str]:
    """Registered architecture names, in their `order` (ResNet-18 first)."""
    return REGISTRY.names()


def trainable() -> list[str]:
    """The architectures the Train page offers (ArchSpec.trainable), in menu order. The trainer
    itself takes any registered architecture (`--arch`)."""
    return [n for n in names() if get_arch(n).trainable]


def get_arch(name: str) -> ArchSpec:
    """The architecture called `name`; ValueError naming the known ones otherwise."""
    return REGISTRY.get(name)


def network_label(arch: str, width: int | None = None) -> str:
    """'FastNet w64', 'ResNet-18 w16': the architecture's short name (its own name when this install does not
    register it) and the width when there is one; for tables and summaries that list models by network."""
    try:
        short = get_arch(arch).short or arch
    except ValueError:
        short = arch
    return short + (f" w{width}" if width is not None else "")


def describe(name: str) -> dict[str, Any]:
    """Plain-data form of an architecture (for the service's limits() and the UI)."""
    spec = get_arch(name)
    return {"name": spec.name, "label": spec.label or spec.name, "short": spec.short or spec.name,
            "defaults": dict(spec.defaults),
            "choices": {k: list(v) for k, v in spec.choices.items()}, "head": spec.head_arg is not None,
            "trainable": spec.trainable}


def full_args(name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The builder's complete arguments: the defaults overlaid with `args`. ValueError for an
    unknown argument or a value outside the spec's choices."""
    spec = get_arch(name)
    given = dict(args or {})
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        raise ValueError(f"architecture {name!r} has no arguments {unknown}; it takes {sorted(spec.defaults)}")
    out = {**spec.defaults, **given}
    for key, allowed in spec.choices.items():
        if out[key] not in allowed:
            raise ValueError(f"{key} must be one of {tuple(allowed)}, got {out[key]!r}")
    return out


def build_arch(name: str, args: dict[str, Any] | None = None, head: bool = False,
               head_bn: bool = False) -> nn.Module:
    """An untrained model of architecture `name` with `args` (missing ones take their defaults),
    checked against the contract. head=True adds the projection head: the spec's own where it has
    one (its head_bn argument, if any, comes from args), else `attach_head`'s on the contract's
    features (head_bn: a BatchNorm1d after its first layer)."""
    spec = get_arch(name)
    kwargs = full_args(name, args)
    if head and spec.head_arg is not None:
        kwargs[spec.head_arg] = True
    model = check_model(spec.build(**kwargs), name)
    if head and spec.head_arg is None:
        attach_head(model, head_bn=head_bn)
    return model


def projection_head(feature_dim: int, proj_dim: int = 128, head_bn: bool = False) -> nn.Module:
    """The contrastive projection head (RSUPCON.md): Linear(f, f) -> [BatchNorm1d] -> ReLU -> Linear(f, proj_dim);
    its output is L2-normalised by the caller."""
    mid = [nn.BatchNorm1d(feature_dim)] if head_bn else []
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), *mid, nn.ReLU(inplace=True),
                         nn.Linear(feature_dim, proj_dim))


def attach_head(model: nn.Module, proj_dim: int = 128, head_bn: bool = False) -> nn.Module:
    """Give any contract model a projection head `model.head` on its `features` (feature_dim wide), the
    same layers (and state-dict keys head.*) as ResNet-18's own; checkpoints leave it out."""
    model.head = projection_head(int(getattr(model, "feature_dim")), proj_dim, head_bn)
    return model


def check_model(model: Any, name: str = "model") -> nn.Module:
    """The model itself if it satisfies the contract; ValueError naming what is missing."""
    missing = [m for m in ("features", "logits", "forward", "classifier", "cam_layer", "stages", "num_classes",
                           "feature_dim", "input_size") if not hasattr(model, m)]
    if missing or not isinstance(model, nn.Module):
        raise ValueError(f"{name} does not satisfy the model contract (backend.core.archs): "
                         f"{'not an nn.Module; ' if not isinstance(model, nn.Module) else ''}"
                         f"missing {', '.join(missing) or 'nothing'}")
    for attr in ("classifier", "cam_layer"):
        if not isinstance(getattr(model, attr), nn.Module):
            raise ValueError(f"{name}.{attr} must be an nn.Module, got {type(getattr(model, attr)).__name__}")
    return model


def cam_layer(model: nn.Module) -> nn.Module:
    """The model's Grad-CAM layer (contract member `cam_layer`); ValueError if it has none."""
    layer = getattr(model, "cam_layer", None)
    if not isinstance(layer, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `cam_layer` module (see backend.core.archs)")
    return layer


def classifier(model: nn.Module) -> nn.Module:
    """The module mapping features to logits (contract member `classifier`)."""
    layer = getattr(model, "classifier", None)
    if not isinstance(layer, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `classifier` module (see backend.core.archs)")
    return layer


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's parts from output to input (contract member `stages()`), checked: at least two,
    distinct non-empty names, every part an nn.Module."""
    fn = getattr(model, "stages", None)
    if not callable(fn):
        raise ValueError(f"{type(model).__name__} has no `stages()` (see backend.core.archs)")
    out = [(str(n), m) for n, m in fn()]
    names_ = [n for n, _ in out]
    if len(out) < 2 or len(set(names_)) != len(out) or not all(names_):
        raise ValueError(f"stages() must name at least two distinct parts, got {names_}")
    if not all(isinstance(m, nn.Module) for _, m in out):
        raise ValueError("every stage must be an nn.Module")
    return out


def input_size(model: nn.Module, default: int = 32) -> int:
    """The side in pixels of the images the model was built for (contract member `input_size`)."""
    return int(getattr(model, "input_size", default))
