"""Measures of "what humans see" for a model's saliency (see shared/docs/RSUPCON.md).

- gradient_alignment: |<x, g>| / (|x| |g|), g = d logit_target / dx (Etmann et al. 2019);
- deletion_insertion: target-probability curves as the top-ranked pixels are removed / inserted,
  and their areas (Petsiuk et al. 2018);
- drift: rank correlation and top-k overlap between two saliency maps (e.g. clean vs adversarial);
- randomisation_check: the parameter-randomisation sanity check (Adebayo et al. 2018) on a fresh
  copy of the model; the shared model is never touched.

Images are (N,3,H,W) float in [0,1]; saliency maps are (N,H,W) (e.g. saliency.to_heatmap output).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import rankdata

from backend.explain.saliency import SaliencyParams, attribute, baseline_images, check_inputs, check_method, to_heatmap

_CHUNK = 256  # images per forward pass


def _predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # not inference_mode: the result indexes a tensor that autograd tracks
        return torch.cat([model(x[i:i + _CHUNK]).argmax(1) for i in range(0, len(x), _CHUNK)])


def _input_gradient(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """g = d logit_target / dx, (N,3,H,W), for validated inputs; gradients w.r.t. a copy of x only."""
    xi, t = check_inputs(model, x, 0 if target is None else target)
    if target is None:
        t = _predicted(model, xi)
    xi = xi.clone().requires_grad_(True)
    logits = model(xi)  # (N, classes); eval mode, so each row depends on its own image only
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xi)
    return g.detach()


def alignment_measures(model: nn.Module, x: torch.Tensor, target=None) -> dict:
    """Both alignments from one gradient: {"alignment": (N,), "centered_alignment": (N,)} float32
    in [0,1]. target (N,) defaults to the predicted class. "centered" uses x minus each image's
    per-channel mean, which removes the bias that all-positive pixel values give the raw measure.
    An all-zero gradient or image gives 0."""
    g = _input_gradient(model, x, target).flatten(1)  # (N, 3*H*W)
    xs = x.detach().to(g.device, torch.float32)
    out = {}
    for key, v in (("alignment", xs), ("centered_alignment", xs - xs.mean(dim=(2, 3), keepdim=True))):
        v = v.flatten(1)
        num = (v * g).sum(1).abs()
        den = v.norm(dim=1) * g.norm(dim=1)
        a = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
        out[key] = a.clamp(0, 1).cpu().numpy().astype(np.float32)
    return out


def gradient_alignment(model: nn.Module, x: torch.Tensor, target=None, centered: bool = False) -> np.ndarray:
    """|<x, g>| / (|x| |g|) per image, (N,) float32 in [0,1]; g = d logit_target / dx, target (N,)
    int64 defaulting to the predicted class. centered=True aligns with x - per-channel mean."""
    return alignment_measures(model, x, target)["centered_alignment" if centered else "alignment"]


def _ranks(saliency: torch.Tensor) -> torch.Tensor:
    """(N,H,W) -> (N,H*W) int64 rank of each pixel, 0 = most salient; ties keep raster order."""
    flat = saliency.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def deletion_insertion(model: nn.Module, x: torch.Tensor, target, saliency, steps: int = 32,
                       baseline: str = "blur") -> dict:
    """Deletion / insertion curves and AUCs of a saliency ranking (Petsiuk et al. 2018).

    x (N,3,H,W) in [0,1]; target (N,) int64; saliency (N,H,W) (higher = more important; ties in
    raster order). Step k in 0..steps uses the top round(k*H*W/steps) pixels (all 3 channels).
    Deletion replaces them with the baseline image (starts at the clean probability, ends at the
    baseline's); insertion puts them into the baseline (starts at the baseline, ends clean).
    Returns {"deletion_auc": (N,), "insertion_auc": (N,), "deletion_curve": (N, steps+1),
    "insertion_curve": (N, steps+1), "fractions": (steps+1,)}; probabilities are softmax of the
    target class, AUCs the trapezoid rule over the removed/inserted fraction in [0,1] (so in [0,1]).
    A good ranking gives a low deletion AUC and a high insertion AUC.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not (1 <= steps <= 1024):
        raise ValueError(f"steps must be an integer in [1, 1024], got {steps!r}")
    if baseline not in ("blur", "black", "mean"):
        raise ValueError(f"baseline must be 'blur', 'black' or 'mean', got {baseline!r}")
    xs, t = check_inputs(model, x, target)
    n, _, h, w = xs.shape
    sal = torch.as_tensor(np.asarray(saliency.detach().cpu() if isinstance(saliency, torch.Tensor)
                                     else saliency), dtype=torch.float32)
    if tuple(sal.shape) != (n, h, w):
        raise ValueError(f"saliency must have shape {(n, h, w)}, got {tuple(sal.shape)}")
    if not torch.isfinite(sal).all():
        raise ValueError("saliency contains non-finite values")
    ranks = _ranks(sal).to(xs.device)  # (N, H*W)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).long()
    base = baseline_images(xs, baseline)

    # Every (step, image) pair is one forward input; they are built and run a chunk at a time.
    pairs = [(k, i) for k in range(steps + 1) for i in range(n)]
    curves = {"deletion": torch.empty(steps + 1, n), "insertion": torch.empty(steps + 1, n)}
    with torch.inference_mode():
        for c0 in range(0, len(pairs), _CHUNK // 2):
            ks = torch.tensor([k for k, _ in pairs[c0:c0 + _CHUNK // 2]])
            idx = torch.tensor([i for _, i in pairs[c0:c0 + _CHUNK // 2]])
            dks, didx = ks.to(xs.device), idx.to(xs.device)
            top = (ranks[didx] < counts.to(xs.device)[dks][:, None]).view(-1, 1, h, w)  # (B,1,H,W)
            xi, bi = xs[didx], base[didx]
            batch = torch.cat([torch.where(top, bi, xi), torch.where(top, xi, bi)])  # (2B,3,H,W)
            p = torch.softmax(model(batch).float(), dim=1)
            p = p.gather(1, t[didx].repeat(2)[:, None]).squeeze(1).cpu()
            b = len(idx)
            curves["deletion"][ks, idx] = p[:b]
            curves["insertion"][ks, idx] = p[b:]
    frac = (counts.double() / (h * w)).numpy()
    out = {"fractions": frac.astype(np.float32)}
    for key, c in curves.items():
        c = c.T.numpy().astype(np.float64)  # (N, steps+1)
        out[f"{key}_curve"] = c.astype(np.float32)
        # trapezoid rule written out: np.trapezoid needs numpy >= 2, requirements allow 1.26
        out[f"{key}_auc"] = (0.5 * (c[:, 1:] + c[:, :-1]) * np.diff(frac)).sum(1).astype(np.float32)
    return out


def _as_maps(m, name: str) -> np.ndarray:
    a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if a.ndim != 3 or a.shape[1] * a.shape[2] < 2:
        raise ValueError(f"{name} must have shape (N, H, W) with H*W >= 2, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a.reshape(len(a), -1).astype(np.float64)


def drift(map_a, map_b, k: float = 0.1) -> dict:
    """How much two saliency maps (N,H,W) differ, per image.

    Returns {"spearman": (N,) float32 in [-1,1] (rank-then-Pearson with averaged ties; NaN where
    a map is constant, since a rank correlation is then undefined), "topk_overlap": (N,) float32
    in [0,1], the fraction of map_a's top round(k*H*W) pixels that are also in map_b's top
    (ties in raster order)}.
    """
    a, b = _as_maps(map_a, "map_a"), _as_maps(map_b, "map_b")
    if a.shape != b.shape:
        raise ValueError(f"map_a and map_b differ in shape: {np.shape(map_a)} vs {np.shape(map_b)}")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0.0 < k <= 1.0):
        raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
    m = max(1, int(round(k * a.shape[1])))
    ta = np.argsort(-a, axis=1, kind="stable")[:, :m]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :m]
    overlap = np.array([len(np.intersect1d(p, q, assume_unique=True)) / m for p, q in zip(ta, tb)])
    return {"spearman": np.clip(rho, -1, 1).astype(np.float32),
            "topk_overlap": overlap.astype(np.float32)}


def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    """Fresh weights from a seeded generator: conv/linear He-normal, zero bias; normalisation
    layers to identity (batch norm: weight 1, bias 0, running mean 0, variance 1)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            # Drawn on the CPU generator and copied, so any device gets the same numbers.
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            m.reset_parameters()  # batch norm: also resets running statistics


def randomisation_check(model: nn.Module, x: torch.Tensor, target, method: str,
                        params: SaliencyParams = SaliencyParams(), layers: str = "top",
                        seed: int = 0, k: float = 0.1) -> dict:
    """Parameter-randomisation sanity check (Adebayo et al. 2018).

    A private copy of the model (same modules, copied weights) is re-initialised from the top down
    with a fixed seed, following the model contract's stages() (backend.core.archs; output to
    input): "top" randomises the first two stages at once (for ResNet-18 fc + layer4); "cascade"
    randomises them cumulatively, one map per stage (fc, +layer4, +layer3, +layer2, +layer1, +stem).
    The shared model is only read. A method that depends on what the model learned gives LOW
    similarity between the original and randomised maps.

    x (N,3,H,W) in [0,1]; target (N,) int64. Returns {"stages": [str], "spearman": (S, N) and
    "topk_overlap": (S, N) float32 (similarities in [-1,1] / [0,1], of to_heatmap maps),
    "mean_spearman": (S,), "original_heatmap": (N,H,W), "randomised_heatmaps": (S,N,H,W)}.
    """
    from backend.core.archs import stages as model_stages
    from backend.core.models import freeze

    check_method(method)
    if layers not in ("top", "cascade"):
        raise ValueError(f"layers must be 'top' or 'cascade', got {layers!r}")
    try:
        model_stages(model)
    except ValueError as e:
        raise ValueError(f"randomisation_check needs a model with stages() (the model contract): {e}") from None
    xs, t = check_inputs(model, x, target)
    original = to_heatmap(attribute(model, xs, t, method, params), method)

    rnd = copy.deepcopy(model)  # the weights are copied: re-initialising the copy leaves the model as it is
    freeze(rnd.to(xs.device))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    parts = model_stages(rnd)
    if layers == "top":
        stages = [("+".join(n for n, _ in parts[:2]), [m for _, m in parts[:2]])]
    else:
        stages = [(n, [m]) for n, m in parts]
    names, maps, rho, ovl = [], [], [], []
    for name, modules in stages:
        with torch.no_grad():
            for module in modules:
                _reinit(module, gen)
        heat = to_heatmap(attribute(rnd, xs, t, method, params), method)
        d = drift(original, heat, k=k)
        names.append(name)
        maps.append(heat)
        rho.append(d["spearman"])
        ovl.append(d["topk_overlap"])
    rho_a = np.stack(rho).astype(np.float32)
    return {"stages": names, "spearman": rho_a, "topk_overlap": np.stack(ovl).astype(np.float32),
            "mean_spearman": np.nanmean(rho_a, axis=1).astype(np.float32) if rho_a.size else rho_a,
            "original_heatmap": original, "randomised_heatmaps": np.stack(maps)}
