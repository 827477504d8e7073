"""The upload guard: every common format decodes to (S, S, 3) uint8 (S = 32 by default); bad files are refused."""
from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from backend.core.uploads import UploadError, UploadLimits, decode_upload, image_sha256


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_with_size(width: int, height: int) -> bytes:
    """A real 16x16 PNG whose IHDR claims width x height (CRC fixed): a bomb without the pixels."""
    png = encode(Image.fromarray(noise(16, 16)), "PNG")
    assert png[12:16] == b"IHDR"
    body = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def check(out: np.ndarray) -> np.ndarray:
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (32, 32, 3)
    return out


def test_png_32_is_pixel_exact():
    arr = noise(32, 32)
    np.testing.assert_array_equal(check(decode_upload(encode(Image.fromarray(arr), "PNG"))), arr)


def test_jpeg_close_to_source():
    arr = np.kron(noise(4, 4, seed=1), np.ones((8, 8, 1), dtype=np.uint8))  # smooth 32x32 blocks
    out = check(decode_upload(encode(Image.fromarray(arr), "JPEG", quality=95, subsampling=0)))
    assert np.abs(out.astype(int) - arr.astype(int)).mean() < 3


def test_rgba_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, :16] = (255, 0, 0, 0)      # fully transparent red -> white
    rgba[:, 16:] = (255, 0, 0, 255)    # opaque red stays red
    out = check(decode_upload(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (out[:, :16] == 255).all()
    assert (out[:, 16:] == (255, 0, 0)).all()


def test_palette_transparency_and_greyscale_modes():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.paste(1, (0, 0, 32, 16))
    out = check(decode_upload(encode(p, "PNG", transparency=0)))
    assert (out[:16] == (10, 20, 30)).all() and (out[16:] == 255).all()
    grey = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    out = check(decode_upload(encode(Image.fromarray(grey, "L"), "PNG")))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)
    g16 = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))  # 16-bit white stays white
    assert (check(decode_upload(encode(g16, "PNG"))) == 255).all()
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    out = check(decode_upload(encode(cmyk, "JPEG", quality=95))).astype(int)
    assert (np.abs(out - (255, 0, 0)) < 8).all()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "TIFF"])
def test_other_formats(fmt):
    arr = np.zeros((40, 40, 3), dtype=np.uint8)
    arr[:, :, 1] = 200
    out = check(decode_upload(encode(Image.fromarray(arr), fmt)))
    assert abs(int(out[..., 1].mean()) - 200) <= 3 and out[..., 0].max() <= 10


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    blob = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = check(decode_upload(blob))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 30


def test_wide_image_is_scaled_and_centre_cropped():
    arr = np.zeros((60, 100, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:80] = (0, 255, 0)   # the central 60x60 square
    arr[:, 80:] = (0, 0, 255)
    out = check(decode_upload(encode(Image.fromarray(arr), "PNG")))
    core = out[:, 2:-2].astype(int)  # Lanczos may borrow a pixel across the crop edge
    assert (core[..., 1] >= 250).all() and (core[..., 0] <= 5).all() and (core[..., 2] <= 5).all()


def test_exif_rotation_is_applied():
    arr = np.zeros((32, 64, 3), dtype=np.uint8)
    arr[:16] = 255                   # top half white (as stored)
    exif = Image.Exif()
    exif[0x0112] = 6                 # "rotate 90 clockwise to display"
    out = check(decode_upload(encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif)))
    # displayed: 32 wide x 64 tall, white on the right; its centre square is half black, half white
    assert out[:, :12].mean() < 30 and out[:, -12:].mean() > 225


def test_rejects_empty_and_non_bytes():
    with pytest.raises(UploadError, match="empty"):
        decode_upload(b"")
    with pytest.raises(UploadError, match="bytes"):
        decode_upload("not bytes")  # type: ignore[arg-type]


def test_rejects_oversize_bytes():
    with pytest.raises(UploadError, match="too large.*bytes"):
        decode_upload(b"\0" * (8 * 2**20 + 1))
    blob = encode(Image.fromarray(noise(64, 64)), "PNG")
    with pytest.raises(UploadError, match="too large.*bytes"):
        decode_upload(blob, UploadLimits(max_bytes=len(blob) - 1))
    check(decode_upload(blob, UploadLimits(max_bytes=len(blob))))


@pytest.mark.parametrize("blob", [b"hello, this is plain text\n" * 10,
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"x" * 100,  # EPS would run Ghostscript
                                  b"GIF89a" + b"\0" * 3])
def test_rejects_non_images_and_unsupported_formats(blob):
    with pytest.raises(UploadError, match="not an image|corrupt"):
        decode_upload(blob)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_rejects_truncated(fmt):
    blob = encode(Image.fromarray(noise(64, 64)), fmt)
    for frac in (0.5, 0.9):
        with pytest.raises(UploadError, match="truncated"):
            decode_upload(blob[: int(len(blob) * frac)])


def test_rejects_decompression_bombs_from_the_header():
    # 2.5e9 declared pixels: PIL itself refuses at open (> 2x its MAX_IMAGE_PIXELS)
    with pytest.raises(UploadError, match="decompression bomb"):
        decode_upload(png_with_size(50_000, 50_000))
    # 1e8 pixels: only PIL's warning fires; it must become an error, not a log line
    with pytest.raises(UploadError, match="decompression bomb"):
        decode_upload(png_with_size(10_000, 10_000))
    # 4.8e7 pixels: under PIL's limit, over ours; refused before decoding
    with pytest.raises(UploadError, match=r"too large: 8000x6000 = 48,000,000 pixels"):
        decode_upload(png_with_size(8_000, 6_000))
    with pytest.raises(UploadError, match="pixels"):
        decode_upload(encode(Image.fromarray(noise(64, 64)), "PNG"), UploadLimits(max_pixels=64 * 63))


def test_rejects_too_small():
    with pytest.raises(UploadError, match="too small: 4x40"):
        decode_upload(encode(Image.fromarray(noise(40, 4)), "PNG"))
    check(decode_upload(encode(Image.fromarray(noise(8, 8)), "PNG")))  # the minimum side is allowed


def test_global_pil_state_untouched(monkeypatch):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    decode_upload(encode(Image.fromarray(noise(32, 32)), "PNG"))
    with pytest.raises(UploadError):
        decode_upload(png_with_size(10_000, 10_000))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) == before
    # if someone else flips the global, truncated files would slip through: refuse loudly instead
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UploadError, match="LOAD_TRUNCATED_IMAGES"):
        decode_upload(encode(Image.fromarray(noise(32, 32)), "PNG"))


def test_image_sha256():
    a = noise(32, 32)
    h = image_sha256(a)
    assert h == hashlib.sha256(a.tobytes()).hexdigest() and len(h) == 64
    assert image_sha256(np.asfortranarray(a)) == h  # memory layout does not change the id
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert image_sha256(b) != h
    for bad in (a.astype(np.float32), a[:16], a[..., :1]):
        with pytest.raises(ValueError, match="uint8 array"):
            image_sha256(bad)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_upload_resized_for_the_models_input_size(size):
    """A 300x200 photo-like picture becomes (size, size, 3): the shorter side scaled to size, the
    centre kept; a flat colour stays that colour at every size."""
    flat = np.zeros((200, 300, 3), np.uint8)
    flat[...] = (200, 40, 90)
    out = decode_upload(encode(Image.fromarray(flat), "PNG"), size=size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert (np.abs(out.astype(int) - (200, 40, 90)) <= 1).all()
    assert len(image_sha256(out)) == 64
    # a left half red and right half blue picture keeps its halves at every size (centre crop, not a squash)
    halves = np.zeros((100, 100, 3), np.uint8)
    halves[:, :50] = (255, 0, 0)
    halves[:, 50:] = (0, 0, 255)
    out = decode_upload(encode(Image.fromarray(halves), "PNG"), size=size)
    assert out[:, : size // 4, 0].min() > 200 and out[:, -size // 4:, 2].min() > 200


@pytest.mark.parametrize("size", [0, 7, 4096, 32.0, True])
def test_upload_size_must_be_a_sensible_side(size):
    with pytest.raises(ValueError, match="size must be"):
        decode_upload(encode(Image.fromarray(noise(32, 32)), "PNG"), size=size)
