"""Saliency maps behind one contract: attribute(model, x, target, method) -> map of x's shape.

Images are float tensors (N, 3, H, W) in [0, 1]; targets are class indices (N,) int64 (any class,
not only the predicted one). Every method returns attributions of shape (N, 3, H, W), float32, on
x's device; `to_heatmap` turns them into display maps (N, H, W) in [0, 1].

Shared models are frozen and may be used by several threads, so nothing here mutates them:
gradients are taken with respect to a private copy of the input only, and the two hook-based
methods (Grad-CAM, Guided Backprop) run on a per-call "twin" of the model: new module objects
(with their own hook dictionaries) that share the frozen parameter tensors, so hooks never land
on the shared model. There is no module-level mutable state.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ("gradient", "integrated_gradients", "smoothgrad", "gradcam", "guided_backprop", "occlusion")

# display: how to_heatmap reduces a map: "abs" = magnitude of a signed per-pixel score;
# "positive" = keep the evidence for the target only (negative values mean "against").
METHOD_INFO: dict[str, dict] = {
    "gradient": {
        "name": "Gradient (vanilla saliency)", "display": "abs",
        "info": "How much each pixel would change the class score if nudged: the raw input gradient."},
    "integrated_gradients": {
        "name": "Integrated Gradients", "display": "abs",
        "info": "Gradients averaged along a straight path from a baseline image to the input, "
                "times the difference; the attributions add up to the score change."},
    "smoothgrad": {
        "name": "SmoothGrad", "display": "abs",
        "info": "The gradient averaged over noisy copies of the image, which removes speckle "
                "that is not about the object."},
    "gradcam": {
        "name": "Grad-CAM", "display": "positive",
        "info": "Which regions of the last convolutional stage (the CAM layer) support the class, "
                "upsampled to the image: coarse but class-specific."},
    "guided_backprop": {
        "name": "Guided Backprop", "display": "abs",
        "info": "The gradient with negative signals blocked at every ReLU: sharp, edge-like "
                "maps that can look good even for a random model (see the sanity check)."},
    "occlusion": {
        "name": "Occlusion", "display": "positive",
        "info": "Slide a patch of baseline colour over the image and record how much the class "
                "score drops: slow, but needs no gradients."},
}

BASELINES = ("black", "blur", "mean")
BLUR_SIGMA = 3.0  # pixels; strong enough to remove 32x32 object detail, keeps the colour layout
_CHUNK = 256      # images per forward/backward pass when a method expands the batch


@dataclass(frozen=True)
class SaliencyParams:
    ig_steps: int = 32               # integration points for Integrated Gradients (1..256)
    smoothgrad_samples: int = 16     # noisy copies for SmoothGrad (1..64)
    smoothgrad_stdev: float = 0.1    # noise std as a fraction of the input range [0, 1]
    occlusion_window: int = 4        # occluding square side, pixels
    occlusion_stride: int = 2        # pixels between occlusion positions
    baseline: str = "black"          # reference image for IG / occlusion: black, blur or mean
    seed: int = 0                    # SmoothGrad noise seed (same noise for every image)

    def __post_init__(self):
        _int_in("ig_steps", self.ig_steps, 1, 256)
        _int_in("smoothgrad_samples", self.smoothgrad_samples, 1, 64)
        s = self.smoothgrad_stdev
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (0.0 < s <= 1.0):
            raise ValueError(f"smoothgrad_stdev must be a number in (0, 1], got {s!r}")
        _int_in("occlusion_window", self.occlusion_window, 1, 1024)
        _int_in("occlusion_stride", self.occlusion_stride, 1, 1024)
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        _int_in("seed", self.seed, 0, 2**63 - 1)


def _int_in(name: str, v, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (lo <= v <= hi):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
    return method


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


def _twin(model: nn.Module) -> nn.Module:
    """New module objects sharing the (frozen) parameter and buffer tensors: hooks registered on
    the twin never reach the shared model, and no weights are copied (a few ms)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def _cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM weighs: the model contract's `cam_layer` (backend.core.archs)."""
    from backend.core.archs import cam_layer

    try:
        return cam_layer(model)
    except ValueError as e:
        raise ValueError(f"gradcam needs a model with a CAM layer: {e}") from None


def attribute(model: nn.Module, x: torch.Tensor, target, method: str,
              params: SaliencyParams = SaliencyParams()) -> torch.Tensor:
    """Attribution of the target-class logit to each input value.

    model: a frozen classifier returning logits; x: (N,3,H,W) float in [0,1]; target: (N,) int64
    class indices (an int is broadcast). Returns (N,3,H,W) float32 on x's device. Grad-CAM's
    map of the model's cam_layer (N,1,h,w) is upsampled bilinearly to (H,W) and repeated over the 3 channels.
    Each image's result depends on that image only (batch == per-example, up to float error).
    """
    from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    check_method(method)
    if not isinstance(params, SaliencyParams):
        raise ValueError(f"params must be a SaliencyParams, got {type(params).__name__}")
    out_device = x.device if isinstance(x, torch.Tensor) else None
    inp, tgt = check_inputs(model, x, target)
    inp = inp.clone().requires_grad_(method != "occlusion")  # a private copy: gradients go to it only
    n, _, h, w = inp.shape

    if method == "gradient":
        attr = Saliency(model).attribute(inp, target=tgt, abs=False)
    elif method == "integrated_gradients":
        per_pass = max(2, _CHUNK // n)  # integration points per forward pass
        attr = IntegratedGradients(model).attribute(
            inp, baselines=baseline_images(inp.detach(), params.baseline), target=tgt,
            n_steps=params.ig_steps, internal_batch_size=n * per_pass)
    elif method == "smoothgrad":
        attr = _smoothgrad(Saliency(model), inp, tgt, params)
    elif method == "gradcam":
        twin = _twin(model)
        cam = LayerGradCam(twin, _cam_layer(twin)).attribute(inp, target=tgt)  # (N,1,h',w')
        cam = LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")
        attr = cam.expand(-1, 3, -1, -1).contiguous()  # (N,3,H,W)
    elif method == "guided_backprop":
        attr = GuidedBackprop(_twin(model)).attribute(inp, target=tgt)
    else:  # occlusion
        win, stride = params.occlusion_window, params.occlusion_stride
        if win > min(h, w) or stride > min(h, w):
            raise ValueError(f"occlusion_window {win} / occlusion_stride {stride} exceed the image "
                             f"size {h}x{w}")
        attr = Occlusion(model).attribute(
            inp, sliding_window_shapes=(3, win, win), strides=(3, stride, stride),
            baselines=baseline_images(inp.detach(), params.baseline), target=tgt,
            perturbations_per_eval=max(1, _CHUNK // n))
    attr = attr.detach().to(torch.float32)
    return attr.to(out_device) if out_device is not None else attr


def _smoothgrad(sal, inp: torch.Tensor, tgt: torch.Tensor, params: SaliencyParams) -> torch.Tensor:
    """Mean input gradient over S noisy copies x + e_s, e_s ~ N(0, stdev^2), unclipped (Smilkov et
    al. 2017). Captum's NoiseTunnel draws its noise from torch's global RNG, which would make maps
    change between calls, make a batch differ from its single images, and cannot be seeded safely
    from several threads; so the noise comes from a private seeded generator, the same S draws for
    every image, and the gradients from captum's Saliency."""
    n = inp.shape[0]
    s_total = params.smoothgrad_samples
    gen = torch.Generator(device="cpu").manual_seed(params.seed)
    noise = torch.randn((s_total, *inp.shape[1:]), generator=gen) * params.smoothgrad_stdev
    noise = noise.to(inp.device)
    inp = inp.detach()
    total = torch.zeros_like(inp)
    per_pass = max(1, _CHUNK // n)
    for s0 in range(0, s_total, per_pass):
        e = noise[s0:s0 + per_pass]  # (k,3,H,W)
        k = e.shape[0]
        noisy = (inp.unsqueeze(0) + e.unsqueeze(1)).reshape(k * n, *inp.shape[1:])  # (k*N,3,H,W)
        noisy.requires_grad_(True)
        g = sal.attribute(noisy, target=tgt.repeat(k), abs=False)
        total += g.reshape(k, *inp.shape).sum(0)
    return total / s_total


def _as_numpy(attr) -> np.ndarray:
    a = attr.detach().cpu().numpy() if isinstance(attr, torch.Tensor) else np.asarray(attr)
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"attributions must have shape (N, 3, H, W), got {a.shape}")
    return a.astype(np.float32, copy=False)


def to_heatmap(attr, method: str = "gradient", percentile: float = 99.0) -> np.ndarray:
    """Display map (N,H,W) float32 in [0,1] from attributions (N,3,H,W) (tensor or array).

    "abs" methods (gradients, IG, SmoothGrad, Guided Backprop): |attr| summed over channels,
    clipped at the per-image `percentile` (a few extreme pixels would otherwise wash out the
    rest), scaled to [0,1]. "positive" methods (Grad-CAM, occlusion): channel mean, ReLU, divided
    by the per-image maximum. An all-zero map stays zero.
    """
    check_method(method)
    if not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    a = _as_numpy(attr)
    if METHOD_INFO[method]["display"] == "positive":
        m = np.maximum(a.mean(axis=1), 0.0)
        top = m.reshape(len(m), -1).max(axis=1)
    else:
        m = np.abs(a).sum(axis=1)
        top = np.percentile(m.reshape(len(m), -1), percentile, axis=1)
    top = top.reshape(-1, 1, 1)
    out = np.where(top > 0, np.clip(m, 0.0, top) / np.where(top > 0, top, 1.0), 0.0)
    return np.nan_to_num(out).astype(np.float32)


def signed_map(attr, percentile: float = 99.0) -> np.ndarray:
    """Signed display map (N,H,W) float32 in [-1,1]: attributions summed over channels, divided by
    the per-image `percentile` of |value| and clipped (for a diverging colour map)."""
    if not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    m = _as_numpy(attr).sum(axis=1)
    top = np.percentile(np.abs(m).reshape(len(m), -1), percentile, axis=1).reshape(-1, 1, 1)
    out = np.where(top > 0, np.clip(m / np.where(top > 0, top, 1.0), -1.0, 1.0), 0.0)
    return out.astype(np.float32)
