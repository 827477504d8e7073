"""The 15 common corruptions of CIFAR-10-C / CIFAR-100-C at 5 severities, and a reader for the official sets.

    corrupt(x, "fog", severity=3, seed=0)        # (N,3,S,S) float in [0,1] -> same shape, in [0,1]
    read_official(DIR, "fog", 3, indices)         # images of the official .npy folder (uint8 NHWC)

Regenerated corruptions follow Hendrycks & Dietterich (ICLR 2019): the 15 corruption types and the
severity parameters their CIFAR-10-C generation script publishes for 32-px images (noise scales,
blur radii, zoom ranges, fog / snow / frost mixes, JPEG qualities, elastic-transform amplitudes).
The code is our own, in numpy / scipy / torch / PIL (no OpenCV, scikit-image or ImageMagick), with
three stated departures, so a number measured on them is "regenerated", never "official":
- motion blur (and the streaks of snow) use our line kernel: ImageMagick's one-sided Gaussian along a
  direction of random angle, sampled at whole-pixel offsets, edges repeated;
- frost overlays the five frost photographs that the `imagecorruptions` package (Apache-2.0) ships,
  read from the installed package (its code is never imported; it needs OpenCV and scikit-image),
  scaled by 0.2 and cropped at random as CIFAR-10-C does (bilinear scaling here, OpenCV's there);
- the output is rounded to 8-bit levels (the official arrays are uint8 too).
At sides other than 32 px (CIFAR-100 shares 32; ImageNet's 224) the spatial parameters (blur radii,
shuffle distance, frost crop scale, streak length) grow with side / 32 and elastic / fog / zoom /
pixelate are relative already: the same look at a larger size, not ImageNet-C's parameters.

The published parameters are not monotone in every respect: elastic_transform's severity 1 is a large
affine jitter (8% of the side) with no local warp, severity 5 a small jitter with a local warp, so
its mean pixel change falls with severity while the local distortion grows (tests say so).

Every random draw comes from numpy's Generator seeded by (seed, corruption, severity), so a call is
deterministic for a seed; images of one call get independent draws (e.g. a blur angle each).
"""
from __future__ import annotations

import functools
import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
GROUPS = {"noise": CORRUPTIONS[0:3], "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:11],
          "digital": CORRUPTIONS[11:15]}
SEVERITIES = (1, 2, 3, 4, 5)
LABELS = {c: c.replace("_", " ") for c in CORRUPTIONS}
REGENERATED = ("regenerated: backend.core.corruptions (CIFAR-10-C's published severities, own code; "
               "motion blur by our line kernel; frost photographs from the imagecorruptions package)")

# severity parameters (index severity - 1), CIFAR-10-C's values for 32 px
_GAUSS = (0.04, 0.06, 0.08, 0.09, 0.10)                   # noise std
_SHOT = (500, 250, 100, 75, 50)                           # photons per unit intensity
_IMPULSE = (0.01, 0.02, 0.03, 0.05, 0.07)                 # fraction of values set to 0 or 1
_DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, its anti-alias sigma (px)
_GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max shift, passes
_MOTION = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))    # streak radius, sigma (px)
_ZOOM = tuple(np.arange(1, top, 0.01) for top in (1.06, 1.11, 1.16, 1.21, 1.26))  # zoom factors averaged
_SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
# snow: flake mean, std, zoom, threshold, streak radius, streak sigma, share of the original image
_FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, frost weight
_FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # fog strength, fractal roughness decay
_BRIGHT = (0.05, 0.1, 0.15, 0.2, 0.3)                     # added to HSV value
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)                   # factor towards the channel mean
_ELASTIC = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
# elastic: displacement amplitude, its smoothing sigma, affine jitter; all x the image side
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)                 # downscale factor (box filter both ways)
_JPEG = (80, 65, 58, 50, 40)                              # quality
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # CIFAR-10-C draws 5


def check_corruption(name, severity) -> None:
    """ValueError naming the bad value unless name is one of CORRUPTIONS and severity an int in 1..5."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0, stream: int = 0) -> torch.Tensor:
    """x float (N, 3, S, S) in [0, 1] (S >= 8) -> the corrupted batch, float32 of x's shape in [0, 1]
    (8-bit levels), on x's device; deterministic for (seed, stream, name, severity) and the batch
    (stream: a chunk number, so that the chunks of one large set get independent draws)."""
    check_corruption(name, severity)
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4 and x.shape[1] == 3
            and x.shape[2] == x.shape[3] >= 8):
        raise ValueError(f"corrupt expects a float tensor (N, 3, S, S) with S >= 8, got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    for what, v in (("seed", seed), ("stream", stream)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{what} must be an int >= 0, got {v!r}")
    if x.shape[0] == 0:
        return x.detach().float().clone()
    rng = np.random.default_rng([int(seed), int(stream), CORRUPTIONS.index(name), int(severity)])
    xc = x.detach().float().clamp(0, 1).cpu()
    out = _FUNCS[name](xc, severity - 1, rng, xc.shape[-1] / 32)
    return out.clamp_(0, 1).mul_(255).round_().div_(255).to(x.device).contiguous()


# --- helpers -------------------------------------------------------------------------------------------

def _gauss1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return (k / k.sum()).float()


def _blur_gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel of (N,3,S,S), 4 sigma wide, edges repeated."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(4 * sigma)))
    k = _gauss1d(sigma, r)
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _filter_same(x: torch.Tensor, k: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Correlate every channel of (N,C,S,S) with one odd square kernel k (K,K); same size."""
    r = k.shape[-1] // 2
    c = x.shape[1]
    return F.conv2d(F.pad(x, (r, r, r, r), mode=mode), k.view(1, 1, *k.shape).repeat(c, 1, 1, 1), groups=c)


def _streak_taps(n: int, radius: float, sigma: float, low: float, high: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sided motion streaks: weights w (T,) = exp(-i^2 / 2 sigma^2) normalised, i = 0..2r, and
    whole-pixel offsets dx, dy (n, T) = round(i cos a), round(i sin a), angle a uniform in [low, high)
    degrees per image."""
    width = 2 * int(math.ceil(radius)) + 1
    w = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    a = np.deg2rad(rng.uniform(low, high, size=n))[:, None]
    i = np.arange(width)[None, :]
    return w, np.rint(i * np.cos(a)).astype(int), np.rint(i * np.sin(a)).astype(int)


def _streak(x: torch.Tensor, taps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    """Blur image k of (N,C,S,S) along its streak: out(y, x) = sum_i w_i in(y - dy_i, x + dx_i), edges
    repeated. Up to 64 px as one grouped convolution with the streak as a dense kernel; above, as a
    sum of shifted images (the same weights: at 224 px the dense kernel would be 255 x 255)."""
    w, dx, dy = taps
    n, c, s, _ = x.shape
    width = len(w)
    if s > 64:
        rows = torch.arange(s).view(1, s, 1)
        cols = torch.arange(s).view(1, 1, s)
        out = torch.zeros_like(x)
        idx = torch.arange(n).view(n, 1, 1)
        for t in range(width):
            ri = (rows - torch.from_numpy(dy[:, t]).view(n, 1, 1)).clamp(0, s - 1)  # (N,S,1)
            ci = (cols + torch.from_numpy(dx[:, t]).view(n, 1, 1)).clamp(0, s - 1)  # (N,1,S)
            out += float(w[t]) * x.permute(0, 2, 3, 1)[idx, ri, ci].permute(0, 3, 1, 2)
        return out
    size = 2 * width + 1
    kernels = np.zeros((n, size, size), np.float32)
    for j in range(n):
        np.add.at(kernels[j], (width - dy[j], width + dx[j]), w)  # the pixel at the offset feeds this one
    r = width
    xp = F.pad(x, (r, r, r, r), mode="replicate").reshape(1, n * c, s + 2 * r, s + 2 * r)
    k = torch.from_numpy(kernels).repeat_interleave(c, 0).unsqueeze(1)  # (N*C,1,K,K)
    return F.conv2d(xp, k, groups=n * c).reshape(n, c, s, s)


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """Zoom (N,C,S,S) by z about the centre (bilinear, corners aligned), cropped back to S."""
    s = x.shape[-1]
    ch = int(math.ceil(s / z))
    top = (s - ch) // 2
    big = F.interpolate(x[..., top:top + ch, top:top + ch], size=int(round(ch * z)), mode="bilinear",
                        align_corners=True)
    t = (big.shape[-1] - s) // 2
    return big[..., t:t + s, t:t + s]


def _per_image(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn to each image as (S,S,3) float64 numpy; back to (N,3,S,S) float32."""
    a = x.permute(0, 2, 3, 1).double().numpy()
    return torch.from_numpy(np.stack([fn(im) for im in a]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def _pil_round_trip(x: torch.Tensor, fn) -> torch.Tensor:
    def one(im):
        p = Image.fromarray(np.clip(np.rint(im * 255), 0, 255).astype(np.uint8))
        return np.asarray(fn(p), dtype=np.float64) / 255
    return _per_image(x, one)


# --- the 15 corruptions: (x (N,3,S,S) float in [0,1] on the CPU, severity index, rng, side/32) ---------

def _gaussian_noise(x, i, rng, k):
    return x + torch.from_numpy(rng.normal(0, _GAUSS[i], size=x.shape).astype(np.float32))


def _shot_noise(x, i, rng, k):
    lam = _SHOT[i]
    return torch.from_numpy(rng.poisson(x.double().numpy() * lam) / lam).float()


def _impulse_noise(x, i, rng, k):
    hit = rng.random(x.shape) < _IMPULSE[i]
    salt = rng.random(x.shape) < 0.5
    y = x.clone()
    y[torch.from_numpy(hit & salt)] = 1.0
    y[torch.from_numpy(hit & ~salt)] = 0.0
    return y


def _defocus_blur(x, i, rng, k):
    radius, alias = _DEFOCUS[i][0] * k, _DEFOCUS[i][1] * k
    r = max(8, int(math.ceil(radius)))
    t = np.arange(-r, r + 1)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias ** 2))  # a 3-tap anti-alias blur of the disk
    g /= g.sum()
    disk = ndimage.correlate1d(ndimage.correlate1d(disk, g, 0, mode="mirror"), g, 1, mode="mirror")
    kern = torch.from_numpy(disk.astype(np.float32))
    if kern.shape[-1] // 2 >= x.shape[-1]:  # reflect padding needs a kernel radius below the side
        kern = kern[r - x.shape[-1] + 1:r + x.shape[-1], r - x.shape[-1] + 1:r + x.shape[-1]]
    return _filter_same(x, kern)


def _glass_blur(x, i, rng, k):
    sigma, delta, passes = _GLASS[i]
    sigma, delta = sigma * k, max(1, int(round(delta * k)))
    y = torch.floor(_blur_gauss(x, sigma) * 255).div_(255)  # the source quantises between its steps
    a = y.permute(0, 2, 3, 1).numpy().copy()  # (N,S,S,3)
    s = a.shape[1]
    rows = range(s - delta, delta, -1)
    for im in a:
        shifts = rng.integers(-delta, delta, size=(passes, len(rows), len(rows), 2))
        for p in range(passes):
            for hi, h in enumerate(rows):
                for wi, w in enumerate(rows):
                    dx, dy = shifts[p, hi, wi]
                    h2, w2 = h + dy, w + dx
                    im[h, w], im[h2, w2] = im[h2, w2].copy(), im[h, w].copy()
    return _blur_gauss(torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), sigma)


def _motion_blur(x, i, rng, k):
    radius, sigma = _MOTION[i]
    return _streak(x, _streak_taps(x.shape[0], radius * k, sigma * k, -45, 45, rng))


def _zoom_blur(x, i, rng, k):
    zs = _ZOOM[i]
    acc = x.clone()
    for z in zs:
        acc += _clipped_zoom(x, float(z))
    return acc / (len(zs) + 1)


def _snow(x, i, rng, k):
    mean, std, zoom, thresh, radius, sigma, keep = _SNOW[i]
    n, _, s, _ = x.shape
    flakes = torch.from_numpy(rng.normal(mean, std, size=(n, 1, s, s)).astype(np.float32))
    flakes = _clipped_zoom(flakes, zoom)
    flakes = torch.where(flakes < thresh, torch.zeros_like(flakes), flakes).clamp(0, 1)
    flakes = torch.round(flakes * 255) / 255  # the source passes the layer through an 8-bit image
    flakes = _streak(flakes, _streak_taps(n, radius * k, sigma * k, -135, -45, rng))
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = keep * x + (1 - keep) * torch.maximum(x, gray * 1.5 + 0.5)
    return x + flakes + torch.flip(flakes, dims=(-2, -1))


def frost_dir() -> Path:
    """Folder of the frost photographs inside the installed imagecorruptions package (found without
    importing it). Raises ValueError naming the install command when the package is missing."""
    spec = importlib.util.find_spec("imagecorruptions")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        d = Path(loc) / "frost"
        if all((d / f).is_file() for f in _FROST_FILES):
            return d
    raise ValueError("the frost corruption overlays the photographs of the imagecorruptions package, which is "
                     "not installed: pip install --no-deps imagecorruptions==1.1.2 (requirements-nodeps.txt)")


@functools.lru_cache(maxsize=8)
def _frost_images(scale: float) -> tuple[np.ndarray, ...]:
    out = []
    for f in _FROST_FILES:
        with Image.open(frost_dir() / f) as im:
            a = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        h, w = a.shape[-2:]
        a = F.interpolate(a, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          align_corners=False, antialias=False)
        out.append(a[0].numpy())  # (3,h,w)
    return tuple(out)


def _frost(x, i, rng, k):
    a, b = _FROST[i]
    frosts = _frost_images(0.2 * k)
    n, _, s, _ = x.shape
    layers = []
    for _ in range(n):
        f = frosts[int(rng.integers(len(frosts)))]
        if min(f.shape[1:]) <= s:
            raise ValueError(f"frost photographs are too small for {s}-px images")
        r0, c0 = int(rng.integers(0, f.shape[1] - s)), int(rng.integers(0, f.shape[2] - s))
        layers.append(f[:, r0:r0 + s, c0:c0 + s])
    return a * x + b * torch.from_numpy(np.stack(layers))


def _plasma(side: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A (side, side) fractal height map in [0, 1] by midpoint displacement (diamond-square) on a
    periodic grid of the next power of two; the random amplitude shrinks by `decay` per level."""
    m = 1 << max(1, (side - 1).bit_length())
    h = np.zeros((m, m))
    amp, step = 100.0, m
    while step >= 2:
        half = step // 2
        corners = h[0:m:step, 0:m:step]
        # square step: each cell centre is the mean of its four corners plus noise
        mean = (corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(corners, (-1, -1), (0, 1))) / 4
        h[half:m:step, half:m:step] = mean + amp * rng.uniform(-amp, amp, mean.shape)
        centres = h[half:m:step, half:m:step]
        # diamond step: edge midpoints from their two corners and two centres
        top = (corners + np.roll(corners, -1, 1) + centres + np.roll(centres, 1, 0)) / 4
        h[0:m:step, half:m:step] = top + amp * rng.uniform(-amp, amp, top.shape)
        left = (corners + np.roll(corners, -1, 0) + centres + np.roll(centres, 1, 1)) / 4
        h[half:m:step, 0:m:step] = left + amp * rng.uniform(-amp, amp, left.shape)
        step = half
        amp /= decay
    h -= h.min()
    return (h / max(h.max(), 1e-12))[:side, :side]


def _fog(x, i, rng, k):
    strength, decay = _FOG[i]
    s = x.shape[-1]
    fog = torch.from_numpy(np.stack([_plasma(s, decay, rng) for _ in range(x.shape[0])]).astype(np.float32))
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * fog[:, None]) * top / (top + strength)


def _brightness(x, i, rng, k):
    # adding c to HSV's value V = max(R, G, B) at fixed hue and saturation scales RGB by (V + c) / V
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + _BRIGHT[i]).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x))


def _contrast(x, i, rng, k):
    m = x.mean(dim=(2, 3), keepdim=True)
    return (x - m) * _CONTRAST[i] + m


def _elastic_transform(x, i, rng, k):
    s = x.shape[-1]
    amp, smooth, jitter = (v * s for v in _ELASTIC[i])

    def one(im):  # (S,S,3)
        c, q = s // 2, s // 3
        src = np.array([[c + q, c + q], [c + q, c - q], [c - q, c - q]], np.float64)  # (x, y) points
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        # the affine map sending src to dst; the output samples the input at its inverse
        A = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # (2,3): dst = A @ [x, y, 1]
        inv = np.linalg.inv(np.r_[A, [[0, 0, 1]]])
        rc = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])  # in (row, col) order
        off = np.array([inv[1, 2], inv[0, 2]])
        warped = np.stack([ndimage.affine_transform(im[..., ch], rc, off, order=1, mode="mirror")
                           for ch in range(3)], -1)
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (s, s)), smooth, mode="reflect", truncate=3) * amp \
            if smooth > 0 else np.zeros((s, s))
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (s, s)), smooth, mode="reflect", truncate=3) * amp \
            if smooth > 0 else np.zeros((s, s))
        rows, cols = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
        return np.stack([ndimage.map_coordinates(warped[..., ch], [rows + dy, cols + dx], order=1, mode="reflect")
                         for ch in range(3)], -1)
    return _per_image(x, one)


def _pixelate(x, i, rng, k):
    s = x.shape[-1]
    small = max(1, int(s * _PIXELATE[i]))
    return _pil_round_trip(x, lambda p: p.resize((small, small), Image.Resampling.BOX).resize(
        (s, s), Image.Resampling.BOX))


def _jpeg_compression(x, i, rng, k):
    def one(p):
        buf = io.BytesIO()
        p.save(buf, "JPEG", quality=_JPEG[i])
        buf.seek(0)
        with Image.open(buf) as im:
            return im.convert("RGB").copy()
    return _pil_round_trip(x, one)


_FUNCS = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
          "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur,
          "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
          "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
          "jpeg_compression": _jpeg_compression}


# --- the official CIFAR-10-C / CIFAR-100-C folders ------------------------------------------------------

def check_official(root: str | Path) -> tuple[Path, int]:
    """Check an official folder without reading its arrays: one <name>.npy per corruption, each
    (5 * n, S, S, 3) uint8 (severities 1..5 stacked, n test images each, 10,000 in the official
    sets), and labels.npy (5 * n,). Returns (folder, n); ValueError naming what is missing or wrong."""
    d = Path(root)
    if not d.is_dir():
        raise ValueError(f"corruptions folder {str(d)!r} does not exist")
    missing = [f"{c}.npy" for c in (*CORRUPTIONS, "labels") if not (d / f"{c}.npy").is_file()]
    if missing:
        raise ValueError(f"corruptions folder {str(d)!r} lacks {', '.join(missing)} (the official CIFAR-10-C / "
                         "CIFAR-100-C layout: one <corruption>.npy per corruption and labels.npy)")
    lab = np.load(d / "labels.npy", mmap_mode="r", allow_pickle=False)
    if lab.ndim != 1 or lab.shape[0] == 0 or lab.shape[0] % 5:
        raise ValueError(f"{d / 'labels.npy'} has shape {lab.shape}; expected (5 * n,): 5 severities of n images")
    n = lab.shape[0] // 5
    for c in CORRUPTIONS:
        a = np.load(d / f"{c}.npy", mmap_mode="r", allow_pickle=False)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[0] != 5 * n or a.shape[1] != a.shape[2] or a.shape[3] != 3:
            raise ValueError(f"{d / (c + '.npy')} is {a.dtype} {a.shape}; expected uint8 ({5 * n}, S, S, 3)")
    return d, n


def official_labels(root: str | Path) -> np.ndarray:
    """(n,) int64 labels of the official folder's test images (every severity holds the same images
    in the same order)."""
    d, n = check_official(root)
    return np.asarray(np.load(d / "labels.npy", mmap_mode="r", allow_pickle=False)[:n], dtype=np.int64)


def read_official(root: str | Path, name: str, severity: int, indices) -> np.ndarray:
    """(len(indices), S, S, 3) uint8: test images `indices` (in [0, n)) under corruption `name` at
    `severity`, read from the official folder (memory-mapped: only those rows are read)."""
    check_corruption(name, severity)
    d, n = check_official(root)
    idx = np.asarray(indices).reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")
    a = np.load(d / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(a[(severity - 1) * n + idx.astype(np.int64)])
