"""Batched, per-sample random augmentation: RSupCon's views b / s / t, on any device, pure torch.

Inputs are (N, 3, H, W) images, uint8 in [0, 255] or float in [0, 1]; outputs are new float32
tensors (N, 3, H, W) in [0, 1] on the input's device (the input is never modified). Every random
choice is drawn on the CPU from `generator` (a CPU torch.Generator, or torch's global RNG when None),
so a seed gives the same views on CPU and GPU, and nothing waits on the GPU: the per-sample
parameters travel to the device in one pinned, non-blocking copy each.

Views (each ends with a random horizontal flip, p = 0.5):
  b  random HxW crop of the image zero-padded by 4 pixels.
  s  random resized crop (scale 0.2-1, ratio 3/4-4/3) resized bilinearly back to HxW, then colour
     jitter (brightness, contrast, saturation 0.4, hue 0.1; p 0.8; the four in random order per
     sample), then grayscale with p 0.2.
  t  TrivialAugmentWide: one of 14 ops per sample with one of 31 magnitude bins, uniformly.

Differences from torchvision's definitions (all deliberate, none changes the distributions' intent):
  - Resized crops are sampled with affine_grid/grid_sample (bilinear, half-pixel centres, border
    clamp). Crops are never larger than the image, so torchvision's antialias never applies.
  - TrivialAugmentWide's geometric ops sample nearest-neighbour with zero fill like torchvision, but
    pixel-centre conventions may differ by half a pixel; shears are about the top-left corner.
  - Solarize uses thresholds linspace(1, 0, 31) in [0, 1] units (torchvision's float path keeps the
    uint8 thresholds 255..0, which leaves float images unchanged for most bins).
  - Posterize and Equalize work on the image quantised to 256 levels; other ops stay in float
    (PIL would round to uint8 after every op).
On CPU each op runs only on the samples that drew it; on other devices every op runs on the whole
batch and torch.where keeps each sample's own result (no host-device sync; same numbers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_BINS = 31  # TrivialAugmentWide's magnitude bins
T_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
         "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
_GEOMETRIC = (1, 2, 3, 4, 5)
_SIGNED = (1, 2, 3, 4, 5, 6, 7, 8, 9)
_DENSE_ON_CPU = False  # tests flip this to check the where-path against the grouped one


def _to_float(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got {x.dtype}")
    return x.float().clone()  # always a fresh tensor: ops below may write into it


def _dev(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _bcast(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def _apply(x: torch.Tensor, sel: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:
    """x (N,3,H,W) with fn applied to the samples where sel (N,) bool on CPU is True; params are
    per-sample CPU tensors (N, ...) handed to fn for the selected samples."""
    if not bool(sel.any()):  # sel lives on the CPU: no device sync
        return x
    if x.device.type == "cpu" and not _DENSE_ON_CPU:
        idx = sel.nonzero().squeeze(1)
        x[idx] = fn(x[idx], *(p[idx] for p in params))
        return x
    out = fn(x, *(_dev(p, x.device) for p in params))
    return torch.where(_bcast(_dev(sel, x.device)), out, x)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return _apply(x, flip, lambda v: v.flip(-1))


# ------------------------------------------------------------------------------ colour operations
def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) -> (N,1,H,W) luma with ITU-R 601 weights, as torchvision/PIL."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _bcast(f).to(x.dtype)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def brightness(x, f):
    return (x * _bcast(f).to(x.dtype)).clamp_(0, 1)


def contrast(x, f):
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def saturation(x, f):
    return _blend(x, _gray(x), f)


def hue(x, shift):
    """Rotate hue by shift (N,) in turns ([-0.5, 0.5]); greys stay grey."""
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = x.unbind(1)
    # hue in sixths of a turn, from whichever channel is largest
    h6 = torch.where(argmax == 0, ((g - b) / safe) % 6,
                     torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h6 = torch.where(delta > 0, h6, torch.zeros_like(h6))
    h6 = (h6 + 6 * shift.view(-1, 1, 1).to(x.dtype)) % 6
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    # Standard closed form: channel n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h6) % 6
        out.append(maxc - maxc * s * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, dim=1).clamp_(0, 1)


def sharpness(x, f):
    """Blend with PIL's smoothing filter ([[1,1,1],[1,5,1],[1,1,1]]/13); border pixels unchanged."""
    k = torch.ones(3, 1, 3, 3, device=x.device, dtype=x.dtype)
    k[:, :, 1, 1] = 5
    blurred = x.clone()
    blurred[:, :, 1:-1, 1:-1] = F.conv2d(x, k / 13, groups=3)
    return _blend(x, blurred, f)


def _levels(x):
    return x.mul(255).round_().long()  # (N,3,H,W) ints in [0, 255]


def posterize(x, bits):
    shift = 8 - _bcast(bits).long()
    mask = torch.bitwise_left_shift(torch.full_like(shift, 0xFF), shift) & 0xFF  # keep the top bits
    return (_levels(x) & mask).float().div_(255)


def solarize(x, threshold):
    return torch.where(x >= _bcast(threshold).to(x.dtype), 1 - x, x)


def autocontrast(x):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo  # a constant channel is left alone
    scale = torch.where(flat, torch.ones_like(hi), 1 / torch.where(flat, torch.ones_like(hi), hi - lo))
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp_(0, 1)


def equalize(x):
    """Histogram equalisation per image and channel on 256 levels (PIL's ImageOps.equalize rule)."""
    n, c, h, w = x.shape
    q = _levels(x).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.long).scatter_add_(1, q, torch.ones_like(q))
    last = torch.where(hist > 0, torch.arange(256, device=x.device), -1).amax(dim=1, keepdim=True)
    step = (h * w - hist.gather(1, last)) // 255  # (n*c, 1)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    lut = (hist.cumsum(1) + safe // 2) // safe
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], dim=1).clamp_(0, 255)
    out = torch.where(step > 0, lut.gather(1, q), q)
    return out.view(n, c, h, w).float().div_(255)


# ------------------------------------------------------------------------------------------ views
def view_b(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4) -> torch.Tensor:
    """Random HxW crop of the zero-padded image, then random flip. (N,3,H,W) -> float (N,3,H,W)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    off = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    off, flip_d = _dev(off, x.device), _dev(flip, x.device)
    xp = F.pad(x, (padding,) * 4)  # (N,3,H+2p,W+2p); works on uint8 too
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = off[:, :1] + ar_h  # (N,H)
    cols = torch.where(flip_d[:, None], off[:, 1:] + (w - 1) - ar_w, off[:, 1:] + ar_w)  # (N,W)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = xp[idx, :, rows[:, :, None], cols[:, None, :]]  # (N,H,W,3): advanced dims come first
    return _to_float(out.permute(0, 3, 1, 2).contiguous())


def _crop_boxes(n, h, w, scale, ratio, generator, tries=10):
    """torchvision's RandomResizedCrop sampling for n images at once: (top, left, height, width)."""
    area = h * w
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_r.exp()
    cw = (target * aspect).sqrt().round()
    ch = (target / aspect).sqrt().round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(dim=1, keepdim=True)  # first try that fits
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    # no try fits: torchvision falls back to the central crop with the ratio clamped; for a
    # square image inside the ratio range that is the whole image
    fall = ~ok.any(dim=1)
    in_ratio = min(max(w / h, ratio[0]), ratio[1])
    fw = float(w) if w / h <= in_ratio else round(h * in_ratio)
    fh = float(h) if w / h >= in_ratio else round(w / in_ratio)
    cw, ch = torch.where(fall, torch.full_like(cw, fw), cw), torch.where(fall, torch.full_like(ch, fh), ch)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (h - ch + 1)).clamp(max=h - ch)
    left = torch.floor(u[:, 1] * (w - cw + 1)).clamp(max=w - cw)
    top = torch.where(fall, ((h - ch) / 2).round(), top)
    left = torch.where(fall, ((w - cw) / 2).round(), left)
    return top, left, ch, cw


def _sample(x: torch.Tensor, theta: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def view_s(x: torch.Tensor, generator: torch.Generator | None = None, scale=(0.2, 1.0),
           ratio=(3 / 4, 4 / 3), jitter=(0.4, 0.4, 0.4, 0.1), p_jitter: float = 0.8,
           p_gray: float = 0.2) -> torch.Tensor:
    """Random resized crop + flip, colour jitter (p_jitter), grayscale (p_gray). -> float (N,3,H,W).

    jitter = (brightness, contrast, saturation, hue): factors U[1-j, 1+j] (hue shift U[-j, j]).
    """
    if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"bad crop scale {scale!r} or ratio {ratio!r}")
    xf = _to_float(x)
    n, _, h, w = xf.shape
    top, left, ch, cw = _crop_boxes(n, h, w, scale, ratio, generator)
    flip = torch.rand(n, generator=generator) < 0.5
    sx = torch.where(flip, -cw / w, cw / w)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + cw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * top + ch) / h - 1
    out = _sample(xf, _dev(theta, xf.device), "bilinear", "border")
    bj, cj, sj, hj = jitter
    factors = torch.stack([torch.empty(n).uniform_(max(0.0, 1 - bj), 1 + bj, generator=generator),
                           torch.empty(n).uniform_(max(0.0, 1 - cj), 1 + cj, generator=generator),
                           torch.empty(n).uniform_(max(0.0, 1 - sj), 1 + sj, generator=generator),
                           torch.empty(n).uniform_(-hj, hj, generator=generator)], dim=1)  # (N,4)
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # a random permutation per sample
    apply = torch.rand(n, generator=generator) < p_jitter
    gray = torch.rand(n, generator=generator) < p_gray
    ops = (brightness, contrast, saturation, hue)
    for pos in range(4):
        for k, op in enumerate(ops):
            out = _apply(out, apply & (order[:, pos] == k), op, factors[:, k])
    return _apply(out, gray, lambda v: _gray(v).expand(-1, 3, -1, -1).clone())


def _t_theta(op: torch.Tensor, mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N,2,3) affine_grid thetas for the geometric TrivialAugment ops (identity elsewhere).

    Built in pixel units as the inverse map output -> input, then conjugated into the [-1, 1]
    coordinates of affine_grid."""
    n = op.shape[0]
    m = torch.eye(3).repeat(n, 1, 1)  # (N,3,3)
    m[:, 0, 1] = torch.where(op == 1, -mag, 0.0)  # shear x about the top-left corner
    m[:, 1, 0] = torch.where(op == 2, -mag, 0.0)  # shear y
    m[:, 0, 2] = torch.where(op == 3, -mag.trunc(), 0.0)  # translate by whole pixels
    m[:, 1, 2] = torch.where(op == 4, -mag.trunc(), 0.0)
    rot = op == 5
    a = torch.deg2rad(torch.where(rot, mag, 0.0))
    cos, sin, cx, cy = a.cos(), a.sin(), w / 2, h / 2
    m[rot, 0, 0], m[rot, 0, 1] = cos[rot], -sin[rot]
    m[rot, 1, 0], m[rot, 1, 1] = sin[rot], cos[rot]
    m[rot, 0, 2] = (cx - cos * cx + sin * cy)[rot]
    m[rot, 1, 2] = (cy - sin * cx - cos * cy)[rot]
    to_norm = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    from_norm = torch.linalg.inv(to_norm)
    return (to_norm @ m @ from_norm)[:, :2]


def view_t(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """TrivialAugmentWide (one uniformly drawn op and magnitude bin per sample) + random flip."""
    xf = _to_float(x)
    n, _, h, w = xf.shape
    op = torch.randint(0, len(T_OPS), (n,), generator=generator)
    b = torch.randint(0, N_BINS, (n,), generator=generator).float()
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip = torch.rand(n, generator=generator) < 0.5
    frac = b / (N_BINS - 1)  # position in [0, 1] of the bin
    signed = torch.isin(op, torch.tensor(_SIGNED))
    mag = torch.where(op <= 2, 0.99 * frac,  # shear factor
                      torch.where(op <= 4, 32.0 * frac,  # translate, pixels
                                  torch.where(op == 5, 135.0 * frac, 0.99 * frac)))  # degrees; 6-9
    mag = torch.where(signed, mag * sign, mag)
    bits = 8 - (b / ((N_BINS - 1) / 6)).round()  # posterize 8..2 bits
    thr = 1.0 - frac  # solarize threshold 1..0
    geo = torch.isin(op, torch.tensor(_GEOMETRIC))
    xf = _apply(xf, geo, lambda v, th: _sample(v, th, "nearest", "zeros"), _t_theta(op, mag, h, w))
    xf = _apply(xf, op == 6, brightness, 1 + mag)
    xf = _apply(xf, op == 7, saturation, 1 + mag)
    xf = _apply(xf, op == 8, contrast, 1 + mag)
    xf = _apply(xf, op == 9, sharpness, 1 + mag)
    xf = _apply(xf, op == 10, posterize, bits)
    xf = _apply(xf, op == 11, solarize, thr)
    xf = _apply(xf, op == 12, autocontrast)
    xf = _apply(xf, op == 13, equalize)
    return _flip(xf, flip)
