"""Saliency maps behind one contract: attribute(model, x, target, method) -> map of x's shape.

Images are float tensors (N, 3, H, W) in [0, 1]; targets are class indices (N,) int64 (any class,
not only the predicted one). Every method returns attributions of shape (N, 3, H, W), float32, on
x's device; `to_heatmap` turns them into display maps (N, H, W) in [0, 1].

Shared models are frozen and may be used by several threads, so nothing here mutates them:
gradients are taken with respect to a private copy of the input only, and the two hook-based
methods (Grad-CAM, Guided Backprop) run on a per-call "twin" of the model: new module objects
(with their own hook dictionaries) that share the frozen parameter tensors, so hooks never land
on the shared model. There is no module-level mutable state.

The methods themselves are registered in backend.explain.saliency_registry (how to add one is at
its top); the built-ins live in backend/explain/saliency_methods/, one module each. Parameter ranges
(SaliencyParams) are declared once, in the registry's PARAMS.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backend.explain import saliency_registry

BASELINES = next(p.options for p in saliency_registry.PARAMS if p.name == "baseline")
BLUR_SIGMA = 3.0  # pixels at every image size: removes a 32-px image's object detail, keeps the colour layout
CHUNK = 256       # images per forward/backward pass when a method expands the batch


@dataclass(frozen=True)
class SaliencyParams:
    """The parameters every method may read (each method declares which); ranges: saliency_registry.PARAMS."""
    ig_steps: int = 32               # integration points for Integrated Gradients
    smoothgrad_samples: int = 16     # noisy copies for SmoothGrad
    smoothgrad_stdev: float = 0.1    # noise std as a fraction of the input range [0, 1]
    occlusion_window: int = 4        # occluding square side, pixels
    occlusion_stride: int = 2        # pixels between occlusion positions
    baseline: str = "black"          # reference image for IG / occlusion: black, blur or mean
    seed: int = 0                    # SmoothGrad noise seed (same noise for every image)

    def __post_init__(self):
        for p in saliency_registry.PARAMS:  # the ranges are declared once, in the registry
            p.check(getattr(self, p.name))


def check_method(method: str) -> str:
    """`method` when it is a registered saliency method; else ValueError naming it and the known ones."""
    saliency_registry.get(method)
    return method


def __getattr__(name: str):
    # METHODS / METHOD_INFO read the registry now (a toy method registered by a test is included)
    if name == "METHODS":
        return saliency_registry.names()
    if name == "METHOD_INFO":
        return {n: {"name": m.label, "display": m.display, "info": m.info}
                for n in saliency_registry.names() for m in [saliency_registry.get(n)]}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_inputs(model: nn.Module, x, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate images (N,3,H,W) in [0,1] and targets (N,) in [0, num_classes); return both on the
    model's device (x float32, target int64). Raises ValueError naming the bad value."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (N, 3, H, W) with N >= 1, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must hold finite values in [0, 1], got range "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    try:
        t = torch.as_tensor(target).to(torch.int64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"target must be class indices (N,), got {target!r}") from None
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"target has {t.shape[0]} entries for {x.shape[0]} images")
    k = getattr(model, "num_classes", None)
    if (t < 0).any() or (k is not None and (t >= k).any()):
        raise ValueError(f"target must be in [0, {k}), got {t.tolist()}")
    dev = model_device(model)
    return x.detach().to(dev, torch.float32), t.to(dev)


def baseline_images(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Reference images (N,3,H,W) in [0,1] for x: "black" zeros, "blur" a Gaussian blur of x
    (sigma BLUR_SIGMA px, edge-replicated), "mean" each image's per-channel mean colour."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        r = int(math.ceil(3 * BLUR_SIGMA))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * BLUR_SIGMA**2))
        k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)  # (3,1,1,K): depthwise row filter
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=3)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=3)
        return y.clamp(0, 1)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def twin(model: nn.Module) -> nn.Module:
    """New module objects sharing the (frozen) parameter and buffer tensors: hooks registered on
    the twin never reach the shared model, and no weights are copied (a few ms)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def attribute(model: nn.Module, x: torch.Tensor, target, method: str,
              params: SaliencyParams = SaliencyParams()) -> torch.Tensor:
    """Attribution of the target-class logit to each input value.

    model: a frozen classifier returning logits; x: (N,3,H,W) float in [0,1]; target: (N,) int64
    class indices (an int is broadcast). Returns (N,3,H,W) float32 on x's device. Grad-CAM's
    map of the model's cam_layer (N,1,h,w) is upsampled bilinearly to (H,W) and repeated over the 3 channels.
    Each image's result depends on that image only (batch == per-example, up to float error).
    """
    m = saliency_registry.get(method)
    if not isinstance(params, SaliencyParams):
        raise ValueError(f"params must be a SaliencyParams, got {type(params).__name__}")
    out_device = x.device if isinstance(x, torch.Tensor) else None
    inp, tgt = check_inputs(model, x, target)
    inp = inp.clone().requires_grad_(m.gradients)  # a private copy: gradients go to it only
    attr = m.compute(model, inp, tgt, params)
    if not isinstance(attr, torch.Tensor) or attr.shape != inp.shape:
        raise ValueError(f"saliency method {method!r} returned {getattr(attr, 'shape', type(attr).__name__)}, "
                         f"expected {tuple(inp.shape)}")
    attr = attr.detach().to(torch.float32)
    return attr.to(out_device) if out_device is not None else attr


def _as_numpy(attr) -> np.ndarray:
    a = attr.detach().cpu().numpy() if isinstance(attr, torch.Tensor) else np.asarray(attr)
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"attributions must have shape (N, 3, H, W), got {a.shape}")
    return a.astype(np.float32, copy=False)


def display_map(attr, method: str = "gradient", percentile: float = 99.0) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N,H,W) float32 >= 0, tops (N,)) of attributions (N,3,H,W) by the method's display rule:
    "abs" methods (gradients, IG, SmoothGrad, Guided Backprop): |attr| summed over channels, top the
    per-image `percentile` (a few extreme pixels would otherwise wash out the rest); "positive" methods
    (Grad-CAM, occlusion): channel mean, ReLU, top the per-image maximum."""
    display = saliency_registry.get(method).display
    if not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    a = _as_numpy(attr)
    if display == "positive":
        m = np.maximum(a.mean(axis=1), 0.0)
        top = m.reshape(len(m), -1).max(axis=1)
    else:
        m = np.abs(a).sum(axis=1)
        top = np.percentile(m.reshape(len(m), -1), percentile, axis=1)
    return np.nan_to_num(m).astype(np.float32), np.nan_to_num(top).astype(np.float32)


def to_heatmap(attr, method: str = "gradient", percentile: float = 99.0, top: float | None = None) -> np.ndarray:
    """Display map (N,H,W) float32 in [0,1] from attributions (N,3,H,W) (tensor or array): display_map
    clipped at each image's own top and scaled to [0,1], or, with `top`, at that one value for every
    image (a shared scale: maps compare in brightness). An all-zero map (or top 0) stays zero."""
    m, tops = display_map(attr, method, percentile)
    t = (tops if top is None else np.full(len(m), float(top), dtype=np.float32)).reshape(-1, 1, 1)
    out = np.where(t > 0, np.clip(m, 0.0, t) / np.where(t > 0, t, 1.0), 0.0)
    return np.nan_to_num(out).astype(np.float32)


def describe() -> dict:
    """Everything the UI needs about saliency (the service's limits()["saliency"]): the registered
    methods in menu order, the default one, per method its label, info, display rule, parameters
    read and flags, and the SaliencyParams ranges with their defaults."""
    from dataclasses import asdict

    return saliency_registry.describe(asdict(SaliencyParams()))
