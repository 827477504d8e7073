"""Turn an uploaded image file into one model-sized picture: (S, S, 3) uint8 RGB, or UploadError.

S is the side the model takes (its card's input_size; any side); by default the image size of
CIFAR-10 in the dataset registry (backend.core.datasets), 32.

Uploads are untrusted. The guards, in order: byte count; a format allow-list (PIL can also open
formats that shell out to other programs, such as EPS via Ghostscript); pixel count and side length
read from the header before any pixel is decoded (decompression bombs); then a full decode, so a
truncated or corrupt file fails here rather than yielding a half-grey picture later. No global PIL
setting is changed.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from backend.core.datasets import CIFAR10

SIDE = CIFAR10.image_size  # default output side in pixels
MAX_SIDE = 1024            # largest output side a caller may ask for
# Formats PIL decodes natively (no external programs); MPO is what many cameras call their JPEGs.
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "AVIF")


class UploadError(ValueError):
    """An upload that is not a usable image; the message says what is wrong with it."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 8 * 1024 * 1024   # file size in bytes (8 MiB)
    max_pixels: int = 40_000_000       # width * height as declared in the header
    min_side: int = 8                  # shorter side in pixels


def _formats() -> list[str]:
    """FORMATS that this Pillow build can open (it raises KeyError for an unregistered name)."""
    Image.init()  # registers every plugin once; idempotent, changes no setting
    return [f for f in FORMATS if f in Image.OPEN]


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: transparency composited on white, 16-bit/float greyscale rescaled."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255):
            a = a / 257.0                        # 16-bit range 0..65535 -> 0..255
        elif im.mode == "F" and a.max() <= 1.0:
            a = a * 255.0                        # float images conventionally lie in [0, 1]
        g = np.round(np.clip(a, 0, 255)).astype(np.uint8)
        return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2), "RGB")
    if im.mode in ("PA", "LA", "La", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, ...


def decode_upload(data: bytes, limits: UploadLimits = UploadLimits(), size: int = SIDE) -> np.ndarray:
    """Decode an uploaded file (PNG, JPEG, GIF (first frame), WebP, BMP, TIFF, ...) to (size, size, 3)
    uint8 RGB: EXIF rotation applied, scaled so the shorter side is `size` (Lanczos, antialiased),
    then centre-cropped. Raises UploadError (a ValueError) naming the problem."""
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_SIDE:
        raise ValueError(f"size must be an integer in [8, {MAX_SIDE}], got {size!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadError(f"upload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise UploadError("empty upload: no bytes received")
    if len(data) > limits.max_bytes:
        raise UploadError(f"upload too large: {len(data):,} bytes, the limit is {limits.max_bytes:,} bytes "
                          f"({limits.max_bytes / 2**20:.1f} MiB)")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global; truncation would go unseen
        raise UploadError("server misconfigured: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing "
                          "to decode uploads that could be silently truncated")
    with warnings.catch_warnings():
        # PIL warns (and past twice its limit raises) on huge declared sizes; both are a bomb here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UploadError(f"image rejected as a decompression bomb: {e}") from e
        except UnidentifiedImageError as e:
            raise UploadError(f"not an image, or not a supported format ({', '.join(_formats())})") from e
        except Exception as e:  # a header PIL recognises but cannot parse
            raise UploadError(f"corrupt image header: {e}") from e
        with im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise UploadError(f"image too large: {w}x{h} = {w * h:,} pixels, the limit is "
                                  f"{limits.max_pixels:,} (a possible decompression bomb)")
            if min(w, h) < limits.min_side:
                raise UploadError(f"image too small: {w}x{h}, each side must be at least "
                                  f"{limits.min_side} pixels")
            try:
                im.load()  # full decode now: lazy loading would hide a truncated file
                rgb = _to_rgb(ImageOps.exif_transpose(im))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise UploadError(f"image rejected as a decompression bomb: {e}") from e
            except Exception as e:
                raise UploadError(f"corrupt or truncated {im.format or 'image'} file: {e}") from e
    return _fit(rgb, size)


def _fit(rgb: Image.Image, side: int = SIDE) -> np.ndarray:
    """Central square of the image scaled to side x side in one resampling step: (side, side, 3) uint8."""
    w, h = rgb.size
    s = min(w, h)
    left, top = (w - s) / 2, (h - s) / 2
    # reducing_gap: a cheap box reduction first for big photos, then Lanczos; same look, far faster.
    out = rgb.resize((side, side), Image.Resampling.LANCZOS, box=(left, top, left + s, top + s),
                     reducing_gap=3.0)
    return np.array(out, dtype=np.uint8).reshape(side, side, 3)


def image_sha256(pixels: np.ndarray) -> str:
    """Hex sha256 of a square (S, S, 3) uint8 image's bytes (row-major): the id of an uploaded image."""
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3
            and pixels.shape[0] == pixels.shape[1] and pixels.shape[2] == 3):
        raise ValueError(f"pixels must be a uint8 array (S, S, 3), got "
                         f"{getattr(pixels, 'dtype', type(pixels))} {getattr(pixels, 'shape', '')}")
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
