"""Where a split's pixels come from on disk: locating a data root, reading ImageFolder trees and
torchvision roots, naming the data variant (JPEG quality, VARIANT file), decoding files to uint8
arrays at a data set's image size (backend.core.datasets), and the disk cache of decoded splits.

backend.core.data builds on this (Split, load_split, the in-process cache, samples, indices).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from backend import REPO
from backend.core.datasets import DEFAULT_IMAGE_SIZE as DEFAULT_IMAGE_SIZE
from backend.core.datasets import MANIFEST, NAME_RE, find_dataset, get_dataset
from backend.core.runtime import usable_cores

log = logging.getLogger(__name__)

SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_CIFAR = SHARED_DATA / "cifar10-jpeg"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_PARALLEL_MIN = 2048         # below this many files, starting processes costs more than it saves


class DataNotFoundError(FileNotFoundError):
    """No data set where one was looked for; the message says how to provide one."""


def torchvision_dir_of(dataset: str) -> str | None:
    spec = find_dataset(dataset)
    return spec.torchvision_dir if spec is not None and spec.torchvision_class is not None else None


def resolve_root(root: str | os.PathLike | None = None) -> Path | None:
    """The data root: `root`, else $RSUPCON_DATA, else the shared development copy, else None.
    Existence of an explicit root or $RSUPCON_DATA is not checked here (load_split reports it)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("RSUPCON_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return SHARED_CIFAR if SHARED_CIFAR.is_dir() else None


def how_to_provide_data(root: Path | None = None, detail: str = "", dataset: str | None = None) -> str:
    """The instructions that DataNotFoundError carries (`dataset`: whose data was looked for)."""
    pack = SHARED_DATA / "cifar10_pack.py"
    pack_cmd = f"python {pack if pack.is_file() else '/path/to/shared/data/cifar10_pack.py'} tree DEST"
    spec = find_dataset(dataset) if dataset else None
    what = "CIFAR" if dataset is None or dataset.startswith("cifar") else (spec.label if spec else dataset)
    where = f"No {what} data found at {root}" if root else f"No {what} data set configured"
    return (f"{where}{': ' + detail if detail else ''}.\nProvide one of:\n"
            "  - RSUPCON_DATA=/path/to/data (or pass root=...) pointing at one of the layouts below;\n"
            "  - an ImageFolder tree: DIR/train/<class>/*.jpg|png and DIR/test/<class>/... (or DIR/val/<class>/...,\n"
            "    ImageNet's layout, used as the test split when there is no test/; or DIR itself named val/ or\n"
            "    test/); <class> a class name or its folder id (ImageNet: WordNet ids such as n01440764);\n"
            "  - a torchvision root holding cifar-10-batches-py/ or cifar-100-python/; with download=True\n"
            "    torchvision downloads it there when online;\n"
            f"  - the shared CIFAR-10 packs: `{pack_cmd}`, then RSUPCON_DATA=DEST.\n"
            "Without any of these, sample_images() gives 20 CIFAR-10 test images shipped with foolbox.")


# ---------------------------------------------------------------------------------------- locating
@dataclass(frozen=True)
class Source:
    kind: str        # "imagefolder" | "torchvision"
    root: Path       # the data root (ImageFolder: holds train/ test/; torchvision: holds the batch dir)
    folder: Path     # the folder whose files make up the split (fingerprinted for the cache)


TEST_FOLDERS = ("test", "val")  # where the test split is looked for, in order (ImageNet ships val/)


def split_folders(split: str) -> tuple[str, ...]:
    """The folder names a split is looked for under a data root, in order."""
    return TEST_FOLDERS if split == "test" else (split,)


def looked_for(split: str) -> str:
    """'test/ (or val/)' for messages that say what was looked for."""
    first, *rest = split_folders(split)
    return f"{first}/" + (f" (or {', '.join(f + '/' for f in rest)})" if rest else "")


def locate(root: Path, split: str, dataset: str) -> Source | None:
    # A torchvision root wins over an ImageFolder tree: it is the original, lossless data.
    tv = torchvision_dir_of(dataset)
    if tv is not None:
        if root.name == tv and root.is_dir():
            return Source("torchvision", root.parent, root)
        if (root / tv).is_dir():
            return Source("torchvision", root, root / tv)
    for name in split_folders(split):
        if (root / name).is_dir():
            if name != split:
                log.info("%s has no %s/ folder: its %s/ folder is the %s split", root, split, name, split)
            return Source("imagefolder", root, root / name)
    # a split folder itself given as the root (--data /data/imagenet/val): its parent is the data root
    if (split == "test" and root.name in TEST_FOLDERS and root.is_dir()
            and not any((root / n).is_dir() for n in ("train",) + TEST_FOLDERS)):
        log.info("%s is named %s/: it is the test split itself (data root %s)", root, root.name, root.parent)
        return Source("imagefolder", root.parent, root)
    return None


def class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def list_imagefolder(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names sorted, file paths, labels) of an ImageFolder split; files sorted by name."""
    classes, paths, labels = [], [], []
    for k, d in enumerate(class_dirs(folder)):
        files = sorted(e.path for e in os.scandir(d) if e.is_file() and not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes.append(d.name)
        paths += files
        labels += [k] * len(files)
    if not classes:
        raise DataNotFoundError(how_to_provide_data(folder.parent, f"{folder} has no class folders"))
    return classes, paths, np.asarray(labels, dtype=np.int64)


def stamp(src: Source) -> tuple:
    """Cheap change marker for the in-process cache: mtimes of the split folder and its class
    folders (adding, removing or renaming a file changes its folder's mtime)."""
    dirs = [src.folder] + ([] if src.kind == "torchvision" else class_dirs(src.folder))
    extra = [f.stat().st_mtime_ns for f in (src.root / "VARIANT", src.root / MANIFEST) if f.is_file()]
    if src.kind == "torchvision":
        extra += [e.stat().st_mtime_ns for e in os.scandir(src.folder) if e.is_file()]
    return tuple(d.stat().st_mtime_ns for d in dirs) + tuple(extra)


def fingerprint(src: Source) -> str:
    """Every file's relative path, size and mtime, hashed: a disk cache is used only while the
    files it was decoded from are unchanged (about 0.15 s for 50,000 files)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(src.folder):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), src.folder)}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\n".encode())
    variant_file = src.root / "VARIANT"
    if variant_file.is_file():
        h.update(variant_file.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------- variants
_STD_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
             56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
             104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def _jpeg_quality(path: str) -> int | None:
    """The IJG quality whose standard luminance table the JPEG uses, or None (not a standard table)."""
    with Image.open(path) as im:
        table = list(getattr(im, "quantization", {}).get(0, ()))
    if len(table) != 64:
        return None
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        if table == [min(255, max(1, (v * scale + 50) // 100)) for v in _STD_LUMA]:
            return q
    return None


def source_variant(src: Source, dataset: str, paths: list[str]) -> str:
    if src.kind == "torchvision":
        return f"{dataset}-original"
    variant_file = src.root / "VARIANT"
    if variant_file.is_file():
        name = variant_file.read_text().strip()
        if not NAME_RE.match(name):
            raise ValueError(f"{variant_file} must hold one short lower-case name, got {name!r}")
        return name
    if src.root.resolve() == SHARED_CIFAR.resolve():
        return "cifar10-jpeg75"
    # A JPEG tree at a standard quality (e.g. the shared packs unpacked on a GPU machine) is named
    # by that quality, so model cards never pass JPEG data off as the original.
    if paths and all(p.lower().endswith((".jpg", ".jpeg")) for p in paths):
        q = _jpeg_quality(paths[0])
        if q is not None:
            return f"{dataset}-jpeg{q}"
    return f"{dataset}-imagefolder"


# --------------------------------------------------------------------------------------- decoding
def _centre_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    return im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def decode_paths(paths: list[str], size: int = 32) -> np.ndarray:
    """(len(paths), size, size, 3) uint8; every mode converted to RGB; other sizes resized bilinearly.
    At sides other than DEFAULT_IMAGE_SIZE (ImageNet's 224, a manifest's side) a non-square file is
    first centre-cropped to a square (as uploads are), so photos keep their aspect ratio; at 32 px
    (CIFAR) files are resized whole, as always (the decoded CIFAR caches stay valid)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if size != DEFAULT_IMAGE_SIZE and im.size[0] != im.size[1]:
                    im = _centre_square(im)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im)
        except Exception as e:  # name the file: the caller sees one error for 50,000 files
            raise ValueError(f"cannot decode image {p}: {e}") from e
    return out


def _workers() -> int:
    return max(1, min(4, usable_cores()))


def decode_imagefolder(paths: list[str], size: int = 32) -> np.ndarray:
    """Decode many files with a few processes (decoding small JPEGs is Python-bound, so threads
    barely help). 'fork' where available: the children only run PIL and numpy, and spawning
    would re-import torch in each child, which costs more than the decode itself."""
    workers = _workers()
    if len(paths) < _PARALLEL_MIN or workers == 1:
        return decode_paths(paths, size)
    per = max(500, min(4000, len(paths) // (workers * 4) + 1))
    chunks = [paths[i:i + per] for i in range(0, len(paths), per)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    log.info("decoding %d images with %d processes", len(paths), workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return np.concatenate(list(ex.map(decode_paths, chunks, [size] * len(chunks))))


def read_torchvision(root: Path, split: str, dataset: str, download: bool):
    """(images (N,S,S,3) uint8, labels (N,) int64, classes) via torchvision's own reader, the data
    set's `torchvision_class` (CIFAR's batches hold 32 px images).

    torchvision's python batches are pickles: that is the official CIFAR format and torchvision's
    reader unpickles them. This is the only place where the project lets anything be unpickled, and
    torchvision first checks every batch file's md5 against the official archive, so only the
    genuine files are ever unpickled."""
    from torchvision import datasets  # lazy: heavy, and only this branch needs it

    cls = getattr(datasets, get_dataset(dataset).torchvision_class or "")
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except Exception as e:  # offline download (URLError) or missing/corrupt files (RuntimeError)
        raise DataNotFoundError(how_to_provide_data(root, f"torchvision could not "
                                                    f"{'download' if download else 'read'} "
                                                    f"{dataset}: {e}")) from e
    return (np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64),
            list(ds.classes))


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The disk cache folder: cache_dir, else $ROBUSTLENS_CACHE, else ~/.cache/robustlens.
    Raises ValueError for a folder inside the repo (no pixels may ever be written there)."""
    base = cache_dir or os.environ.get("ROBUSTLENS_CACHE") or Path.home() / ".cache" / "robustlens"
    base = Path(base).expanduser().resolve()
    if base == REPO or REPO in base.parents:
        raise ValueError(f"cache folder {base} is inside the repository {REPO}; choose one outside "
                         "(cache_dir=... or ROBUSTLENS_CACHE)")
    return base


def disk_read(stem: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        x = np.load(stem.with_suffix(".images.npy"), allow_pickle=False)
        y = np.load(stem.with_suffix(".labels.npy"), allow_pickle=False)
        n = int(meta["n"])
        side = int(meta.get("image_size", 32))
        if x.dtype != np.uint8 or x.shape != (n, side, side, 3) or y.dtype != np.int64 or y.shape != (n,):
            raise ValueError(f"shapes {x.shape}/{y.shape} do not match n={n}")
        return x, y, meta
    except (OSError, ValueError, KeyError) as e:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s: %s", stem, e)
        return None


def disk_write(stem: Path, x: np.ndarray, y: np.ndarray, meta: dict) -> None:
    """Arrays first, the JSON last: a cache entry exists only once all three are complete."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
    for suffix, arr in ((".images.npy", x), (".labels.npy", y)):
        tmp = stem.with_suffix(suffix + tag)
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, stem.with_suffix(suffix))
    tmp = stem.with_suffix(".json" + tag)
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, stem.with_suffix(".json"))
