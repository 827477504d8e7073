"""Pure image helpers for display and export (numpy + PIL; no Streamlit).

Images arrive as (S, S, 3) uint8 or float in [0, 1] (S the model's input size); saliency maps as (S, S)
heat in [0, 1], already reduced by the backend on the scale the page asked for (Service.saliency_maps).
Small pictures are shown upscaled with nearest-neighbour so every pixel stays a crisp square.
One colour map per meaning, used everywhere: "inferno" for saliency (dark = unimportant),
neutral grey = no change for perturbations, the dataset registry's palette for classes (Tableau 10
for up to ten classes, hues around the wheel for more; backend.core.datasets via app.session.palette).
"""
from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.session.palette import class_colours, palette

DISPLAY_PX = 160  # side of an image in the grids
THUMB_PX = 64     # side of a thumbnail in the image browser
TOOLTIP_MAX_PX = 64  # the largest side of a thumbnail sent for a chart's hover tooltip (ImageNet's 224 -> 56)
# The first ten colours of every class palette (CIFAR-10's, in class order), from the dataset registry.
CLASS_COLOURS = palette(10)
SALIENCY_CMAP = "inferno"
_INFERNO = ("#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925", "#fb9b06",
            "#f7d13d", "#fcffa4")


INFERNO_CSS = ",".join(_INFERNO)  # the same colour map as a CSS gradient (for colour bars)
def class_colour(i: int, n: int = 10, dataset: str | None = None) -> str:
    """The display colour of class i of n (the data set's own colours when it has n classes)."""
    colours = class_colours(max(int(n), int(i) + 1), dataset)
    return colours[int(i)]


def to_uint8(img) -> np.ndarray:
    """(H,W,3) or (H,W) uint8 or float in [0,1] -> uint8 of the same shape (floats clipped, rounded)."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return np.round(np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def upscale(img, px: int = DISPLAY_PX) -> np.ndarray:
    """Nearest-neighbour upscale of an (H,W,3) / (H,W) image to (px, px[, 3]) uint8."""
    a = to_uint8(img)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected an (H,W) or (H,W,3) image, got shape {a.shape}")
    return np.asarray(Image.fromarray(a).resize((px, px), Image.NEAREST))


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # fast; a nearest-upscaled picture compresses well anyway
    return buf.getvalue()


# The pictures' cache holds at most this many bytes of PNG: ~5 kB for a 160-px picture of a 32-px
# image (~13,000 of them), ~100 kB for a 224-px photo (~650).
PNG_CACHE_BYTES = 64 * 2**20
_png_cache: OrderedDict[tuple, bytes] = OrderedDict()
_png_bytes = [0]  # the cache's size in bytes, under _png_lock
_png_lock = threading.Lock()


def display_png(img, px: int = DISPLAY_PX, smooth: bool = False) -> bytes:
    """The PNG bytes of an image drawn at px x px: nearest-neighbour upscaled (crisp squares, as
    upscale), or with smooth=True and an image larger than px scaled down with Lanczos (a thumbnail of
    a 224-px image). Lossless, so the picture is exactly upscale()'s pixels.

    A pure function of (pixels, px, smooth), cached by content (the image's bytes hashed, shared by
    every session of the process, least recently used dropped past PNG_CACHE_BYTES): when a class
    looks at the same attack, or a page redraws an unchanged image, the picture is encoded once, not
    once per session and rerun (st.image would re-encode an array every time, as a ~40 kB JPEG).
    Thread-safe."""
    a = np.ascontiguousarray(to_uint8(img))
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected an (H,W) or (H,W,3) image, got shape {a.shape}")
    if int(px) < 1:
        raise ValueError(f"px must be >= 1, got {px!r}")
    smooth = bool(smooth) and a.shape[0] > int(px)
    key = (hashlib.blake2b(a.tobytes(), digest_size=16).digest(), a.shape, int(px), smooth)
    with _png_lock:
        hit = _png_cache.get(key)
        if hit is not None:
            _png_cache.move_to_end(key)
            return hit
    if smooth:
        data = _png(Image.fromarray(a).resize((int(px), int(px)), Image.Resampling.LANCZOS))
    else:
        data = _png(Image.fromarray(upscale(a, int(px))))
    with _png_lock:
        if key not in _png_cache:
            _png_cache[key] = data
            _png_bytes[0] += len(data)
        while _png_bytes[0] > PNG_CACHE_BYTES and _png_cache:
            _png_bytes[0] -= len(_png_cache.popitem(last=False)[1])
    return data


def _lut(stops: tuple[str, ...]) -> np.ndarray:
    rgb = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in stops], dtype=np.float32)
    x = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, rgb[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_INFERNO_LUT = _lut(_INFERNO)  # (256, 3) uint8; read-only after import


def heat_rgb(heatmap) -> np.ndarray:
    """(H,W) map in [0,1] -> (H,W,3) uint8 through the saliency colour map (NaN -> 0)."""
    m = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if m.ndim != 2:
        raise ValueError(f"a heatmap must be (H,W), got shape {m.shape}")
    return _INFERNO_LUT[np.round(np.clip(m, 0.0, 1.0) * 255).astype(np.int64)]


def overlay(img, heatmap, alpha: float = 0.55) -> np.ndarray:
    """Heatmap blended over the image: (H,W,3) uint8."""
    base = to_uint8(img).astype(np.float32)
    heat = heat_rgb(heatmap).astype(np.float32)
    return np.round((1 - alpha) * base + alpha * heat).astype(np.uint8)


def amplify_delta(delta) -> tuple[np.ndarray, float]:
    """Perturbation (H,W,3) float (pixel units, in [-eps, eps]) -> (image (H,W,3) uint8, scale).

    Shown as 0.5 + scale * delta, with scale chosen so the largest |delta| reaches the ends of
    the range: grey means unchanged, the scale says how much it was magnified. A perturbation below
    half a grey level everywhere (an attack that changed nothing visible, e.g. C&W that found no
    adversarial) is shown plain grey with scale 0: magnifying float noise a million times is no picture."""
    d = np.asarray(delta, dtype=np.float32)
    top = float(np.abs(d).max()) if d.size else 0.0
    if top < 0.5 / 255:
        return to_uint8(np.full_like(d, 0.5)), 0.0
    scale = 0.5 / top
    return to_uint8(0.5 + scale * d), scale


def delta_caption(scale: float, what: str = "perturbation") -> str:
    """The caption under amplify_delta's image: how much it was magnified, or that nothing changed."""
    return f"{what}: none visible (< 1/2 grey level)" if scale == 0 else f"{what} x{scale:.0f}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def wrap_text(text: str, font, width: int, max_lines: int = 0) -> list[str]:
    """`text` as lines that fit `width` px in `font`: broken at spaces, a word wider than the line broken
    inside; with max_lines > 0 the last kept line ends in '…' when text is left over."""
    meter = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fits(t: str) -> bool:
        return meter.textlength(t, font=font) <= width

    lines: list[str] = []
    for word in str(text).split():
        cur = f"{lines[-1]} {word}" if lines else word
        if lines and fits(cur):
            lines[-1] = cur
            continue
        while not fits(word) and len(word) > 1:  # a word wider than the line: cut it where it stops fitting
            k = max(i for i in range(1, len(word) + 1) if fits(word[:i]) or i == 1)
            lines.append(word[:k])
            word = word[k:]
        lines.append(word)
    if max_lines and len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip() + "…"]
    return lines


def compose_grid_png(col_labels: list[str], rows: list[tuple[str, list]], title: str = "",
                     px: int = DISPLAY_PX, notes: list[list[str]] | None = None) -> bytes:
    """One PNG of a grid of images: a header row of `col_labels`, then for each (row label, images)
    one row; an image may be None (left blank). notes[r][c], if given, is printed under cell (r, c).
    Every text wraps to its box (the title to the picture's width, a column label or note to its
    column, a row label to the label column) and the header and note bands grow to the most lines
    among them, so long model names never run into each other. Returns the PNG bytes."""
    ncol = len(col_labels)
    if any(len(imgs) != ncol for _, imgs in rows):
        raise ValueError(f"every row needs {ncol} images")
    pad, label_w, line_t, line = 8, 150, 22, 16
    f_title, f_text = _font(18), _font(13)
    w = label_w + ncol * (px + pad) + pad
    title_lines = wrap_text(title, f_title, w - 2 * pad) if title else []
    heads = [wrap_text(lab, f_text, px, max_lines=3) for lab in col_labels]
    row_labels = [wrap_text(lab, f_text, label_w - 2 * pad, max_lines=max(1, px // line)) for lab, _ in rows]
    cell_notes = [[wrap_text(n, f_text, px, max_lines=2) if n else [] for n in r] for r in (notes or [])]
    title_h = (line_t * len(title_lines) + 8) if title_lines else 0
    head_h = line * max([len(h) for h in heads] + [1]) + 12
    note_h = (line * max([len(n) for r in cell_notes for n in r] + [1]) + 4) if notes else 0
    h = title_h + head_h + len(rows) * (px + pad + note_h) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        draw.text((pad, 6 + i * line_t), text, fill="black", font=f_title)
    for c, lines in enumerate(heads):
        for i, text in enumerate(lines):
            draw.text((label_w + c * (px + pad), title_h + 6 + i * line), text, fill="black", font=f_text)
    for r, (_, imgs) in enumerate(rows):
        y = title_h + head_h + r * (px + pad + note_h)
        top = y + (px - line * len(row_labels[r])) // 2
        for i, text in enumerate(row_labels[r]):
            draw.text((pad, top + i * line), text, fill="black", font=f_text)
        for c, img in enumerate(imgs):
            x = label_w + c * (px + pad)
            if img is not None:
                canvas.paste(Image.fromarray(upscale(img, px)), (x, y))
            for i, text in enumerate(cell_notes[r][c] if r < len(cell_notes) and c < len(cell_notes[r]) else []):
                draw.text((x, y + px + 2 + i * line), text, fill="#333333", font=f_text)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def tooltip_side(image_size: int) -> int:
    """The side of an image's hover thumbnail: the image itself up to TOOLTIP_MAX_PX (CIFAR: 32), else
    its side divided by the smallest whole factor that brings it there (224 -> 56, 128 -> 64, 96 -> 48),
    so a thumbnail pixel averages about a k x k block of the image; at least 8."""
    s = int(image_size)
    return max(8, s // -(-s // TOOLTIP_MAX_PX))


def png_data_uris(pixels, colours: int | None = 64) -> list[str]:
    """(n, S, S, 3) uint8 -> n "data:image/png;base64,..." strings, e.g. for the picture of a chart's
    tooltip. colours: each image is reduced to its own palette of that many colours (PIL's fast
    octree) before encoding, which makes a 32-px photo's PNG about 2.5x smaller (~0.9 kB instead of
    ~2.4 kB) for a mean error of about 5/255; None keeps every colour."""
    a = np.asarray(pixels)
    if a.ndim != 4 or a.shape[3] != 3:
        raise ValueError(f"expected (n, S, S, 3) pixels, got shape {a.shape}")
    if colours is not None and not 2 <= int(colours) <= 256:
        raise ValueError(f"colours must be in 2..256 or None, got {colours!r}")
    out = []
    for px in to_uint8(a):
        im = Image.fromarray(px)
        if colours is not None:
            im = im.quantize(int(colours), method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return out
