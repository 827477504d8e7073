"""The saliency registry: the one list of saliency methods, each with its label, description, display rule,
the parameters it reads, and its compute function; plus the shared parameters' ranges.

How to add a saliency method (one new module plus its tests; no other file changes):
1. New module backend/explain/saliency_methods/<name>.py (every module there is imported on first use of
   the registry, so it registers itself).
2. compute(model, inp, target, params) -> attributions (N,3,H,W); inp is a private copy of x in [0,1].
3. Never touch the shared frozen model: put hooks on backend.explain.saliency.twin(model).
4. register(SaliencyMethod(name, label, info, compute, display="abs"|"positive", params=(fields read))).
5. A test: attribute's contract (shape, batch == single, model untouched), and it in limits() and the app.

display: how to_heatmap reduces a map: "abs" = magnitude of a signed per-pixel score; "positive" =
keep the evidence for the target only (negative values mean "against").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backend.attacks.registry import Param
from backend.core.registry import Registry

DISPLAYS = ("abs", "positive")

# The SaliencyParams fields, with their accepted ranges and the step of a control (the defaults are
# SaliencyParams' own). SaliencyParams validates with these.
PARAMS = (
    Param("ig_steps", "IG integration points", kind="int", lo=1, hi=256, step=1, key="ig_steps"),
    Param("smoothgrad_samples", "SmoothGrad noisy copies", kind="int", lo=1, hi=64, step=1,
          key="smoothgrad_samples"),
    Param("smoothgrad_stdev", "SmoothGrad noise (std, fraction of [0, 1])", lo=0.0, hi=1.0, lo_open=True,
          step=0.01, key="smoothgrad_stdev"),
    Param("occlusion_window", "Occlusion window (px)", kind="int", lo=1, hi=1024, offer=(1, 32), step=1,
          key="occlusion_window"),
    Param("occlusion_stride", "Occlusion stride (px)", kind="int", lo=1, hi=1024, offer=(1, 32), step=1,
          key="occlusion_stride"),
    Param("baseline", "Baseline image", kind="choice", options=("black", "blur", "mean"), key="baseline",
          help="Reference image for Integrated Gradients and occlusion."),
    Param("seed", "Noise seed", kind="int", lo=0, hi=2**63 - 1, step=1, key="sal_seed", shown=False),
)


@dataclass(frozen=True)
class SaliencyMethod:
    """One registered saliency method. params: the SaliencyParams fields it reads; baseline: it reads
    params.baseline; gradients: it needs input gradients (False: the input is not made to require
    them); slow: seconds per map on a CPU (menus of quick views leave it out); default_on: selected by
    default in views that show several methods; large_default_on: the same for ImageNet-size models (input
    side from the attacks' large_input_px up), None: as default_on (a method of many passes per map takes
    seconds per map there on a CPU); order: menu position."""
    name: str
    label: str
    info: str
    compute: Callable
    display: str = "abs"
    params: tuple[str, ...] = ()
    baseline: bool = False
    gradients: bool = True
    slow: bool = False
    default_on: bool = False
    large_default_on: bool | None = None
    order: int = 100

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "info": self.info, "display": self.display,
                "params": list(self.params), "baseline": self.baseline, "gradients": self.gradients,
                "slow": self.slow, "default_on": self.default_on,
                "large_default_on": self.default_on if self.large_default_on is None else self.large_default_on,
                "order": self.order}


def _check(method: SaliencyMethod) -> None:
    if method.display not in DISPLAYS:
        raise ValueError(f"display must be one of {DISPLAYS}, got {method.display!r}")
    unknown = sorted(set(method.params) - {p.name for p in PARAMS})
    if unknown:
        raise ValueError(f"saliency method {method.name!r} reads unknown params {unknown}")


# The built-in methods are the modules of backend/explain/saliency_methods/, found on first use.
REGISTRY: Registry[SaliencyMethod] = Registry("saliency method", SaliencyMethod,
                                              package="backend.explain.saliency_methods",
                                              order=lambda m: (m.order, m.name), check=_check)


def register(method: SaliencyMethod, replace: bool = False) -> SaliencyMethod:
    """Add `method` (ValueError if its name is taken, unless replace, or its declaration is invalid)."""
    return REGISTRY.register(method, replace)


def unregister(name: str) -> None:
    """Remove a method (tests that registered a toy one); unknown names are ignored."""
    REGISTRY.unregister(name)


def names() -> tuple[str, ...]:
    """Every registered method, in menu order."""
    return tuple(REGISTRY.names())


def get(name) -> SaliencyMethod:
    """The method called `name`; ValueError naming it and the known ones otherwise."""
    return REGISTRY.get(name)


def describe(defaults: dict) -> dict:
    """{"methods": names, "default": the first, "info": {name: SaliencyMethod.describe()}, "params":
    [Param.describe() with the default from `defaults` (SaliencyParams' own)]}, for limits()."""
    ns = names()
    return {"methods": list(ns), "default": ns[0] if ns else None,
            "info": {n: REGISTRY.get(n).describe() for n in ns},
            "params": [{**p.describe(), "default": defaults[p.name]} for p in PARAMS]}
