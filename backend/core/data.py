"""CIFAR-10/100 splits as uint8 tensors: ImageFolder trees, torchvision roots, offline samples.

A split is decoded once, cached on disk as plain uint8 `.npy` files (outside the repo; read back with
allow_pickle=False) and kept in a small in-process LRU, so the app and training pay the JPEG decode
only the first time. Images are (N, 32, 32, 3) uint8 here; `to_float` gives the project's
(N, 3, 32, 32) float32 in [0, 1] convention.

Where data comes from (first that exists): an explicit `root`, `$RSUPCON_DATA`, the development copy
`<repo>/../shared/data/cifar10-jpeg`. Without any, `sample_images()` still gives the 20 original
CIFAR-10 test images that ship inside the installed foolbox wheel.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend import REPO

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                    "horse", "ship", "truck")
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_CIFAR = SHARED_DATA / "cifar10-jpeg"
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_TV_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CACHE_FORMAT = 1            # bump when the cached arrays' meaning changes
_MEMORY_SLOTS = 4            # splits kept in process (train is 150 MB, test 30 MB)
_PARALLEL_MIN = 2048         # below this many files, starting processes costs more than it saves


class DataNotFoundError(FileNotFoundError):
    """No data set where one was looked for; the message says how to provide one."""


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Split:
    """One data split. images: (N, 32, 32, 3) uint8; labels: (N,) int64 in [0, len(classes)).

    Splits returned by `load_split` are shared through an in-process cache: treat the tensors as
    read-only (index or clone before changing them in place)."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    dataset: str
    split: str
    variant: str
    source: str

    def __post_init__(self):
        im, lb = self.images, self.labels
        if not (isinstance(im, torch.Tensor) and im.dtype == torch.uint8 and im.ndim == 4
                and tuple(im.shape[1:]) == (32, 32, 3)):
            raise ValueError(f"images must be a uint8 tensor (N, 32, 32, 3), got "
                             f"{getattr(im, 'dtype', type(im))} {tuple(getattr(im, 'shape', ()))}")
        if not (isinstance(lb, torch.Tensor) and lb.dtype == torch.int64 and lb.shape == (im.shape[0],)):
            raise ValueError(f"labels must be an int64 tensor ({im.shape[0]},), got "
                             f"{getattr(lb, 'dtype', type(lb))} {tuple(getattr(lb, 'shape', ()))}")
        if lb.numel() and (int(lb.min()) < 0 or int(lb.max()) >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got "
                             f"[{int(lb.min())}, {int(lb.max())}]")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _index(self, idx) -> torch.Tensor:
        a = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
        if a.dtype == bool:
            if a.shape != (len(self),):
                raise ValueError(f"a boolean mask must have shape ({len(self)},), got {a.shape}")
            a = np.flatnonzero(a)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"indices must be integers, got dtype {a.dtype}")
        idx = torch.as_tensor(a.astype(np.int64)).reshape(-1)
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise ValueError(f"index out of range for a split of {len(self)} images: "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return idx

    def float_images(self, idx=None) -> torch.Tensor:
        """(n, 3, 32, 32) float32 in [0, 1]: all images, or those at `idx` (int or 1-D indices)."""
        return to_float(self.images if idx is None else self.images[self._index(idx)])

    def subset(self, idx) -> Split:
        """A new Split holding copies of the images/labels at `idx` (1-D indices)."""
        i = self._index(idx)
        return Split(self.images[i], self.labels[i], self.classes, self.dataset, self.split,
                     self.variant, self.source)


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    if not (isinstance(images_uint8, torch.Tensor) and images_uint8.dtype == torch.uint8
            and images_uint8.ndim == 4 and images_uint8.shape[-1] == 3):
        raise ValueError(f"to_float expects a uint8 tensor (N, H, W, 3), got "
                         f"{getattr(images_uint8, 'dtype', type(images_uint8))} "
                         f"{tuple(getattr(images_uint8, 'shape', ()))}")
    # contiguous NCHW: a bare permute().float() keeps NHWC strides, and torchattacks' FAB (AutoAttack)
    # reshapes input gradients with .view(), which fails on them (leaf grads follow the leaf's layout)
    return images_uint8.permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (N,3,H,W)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] (clamped) -> (N, H, W, 3) uint8, rounded to the nearest level."""
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4 and x.shape[1] == 3):
        raise ValueError(f"to_uint8 expects a float tensor (N, 3, H, W), got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    y = x.detach().float().clamp(0, 1).mul(255).round_().to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous()  # (N,H,W,3)


def resolve_root(root: str | os.PathLike | None = None) -> Path | None:
    """The data root: `root`, else $RSUPCON_DATA, else the shared development copy, else None.
    Existence of an explicit root or $RSUPCON_DATA is not checked here (load_split reports it)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("RSUPCON_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return SHARED_CIFAR if SHARED_CIFAR.is_dir() else None


def how_to_provide_data(root: Path | None = None, detail: str = "") -> str:
    """The instructions that DataNotFoundError carries."""
    pack = SHARED_DATA / "cifar10_pack.py"
    pack_cmd = f"python {pack if pack.is_file() else '/path/to/shared/data/cifar10_pack.py'} tree DEST"
    where = f"No CIFAR data found at {root}" if root else "No CIFAR data set configured"
    return (f"{where}{': ' + detail if detail else ''}.\nProvide one of:\n"
            "  - RSUPCON_DATA=/path/to/data (or pass root=...) pointing at one of the layouts below;\n"
            "  - an ImageFolder tree: DIR/train/<class>/*.jpg|png and DIR/test/<class>/...;\n"
            "  - a torchvision root holding cifar-10-batches-py/ or cifar-100-python/; with download=True\n"
            "    torchvision downloads it there when online;\n"
            f"  - the shared CIFAR-10 packs: `{pack_cmd}`, then RSUPCON_DATA=DEST.\n"
            "Without any of these, sample_images() gives 20 CIFAR-10 test images shipped with foolbox.")


# ---------------------------------------------------------------------------------------- locating
@dataclass(frozen=True)
class _Source:
    kind: str        # "imagefolder" | "torchvision"
    root: Path       # the data root (ImageFolder: holds train/ test/; torchvision: holds the batch dir)
    folder: Path     # the folder whose files make up the split (fingerprinted for the cache)


def _check_args(split: str, dataset: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(dataset, str) or not _NAME_RE.match(dataset):
        raise ValueError(f"dataset must be a short lower-case name such as 'cifar10', got {dataset!r}")


def _locate(root: Path, split: str, dataset: str) -> _Source | None:
    # A torchvision root wins over an ImageFolder tree: it is the original, lossless data.
    if dataset in _TV_DIRS:
        tv = _TV_DIRS[dataset]
        if root.name == tv and root.is_dir():
            return _Source("torchvision", root.parent, root)
        if (root / tv).is_dir():
            return _Source("torchvision", root, root / tv)
    if (root / split).is_dir():
        return _Source("imagefolder", root, root / split)
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _list_imagefolder(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names sorted, file paths, labels) of an ImageFolder split; files sorted by name."""
    classes, paths, labels = [], [], []
    for k, d in enumerate(_class_dirs(folder)):
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


def _stamp(src: _Source) -> tuple:
    """Cheap change marker for the in-process cache: mtimes of the split folder and its class
    folders (adding, removing or renaming a file changes its folder's mtime)."""
    dirs = [src.folder] + ([] if src.kind == "torchvision" else _class_dirs(src.folder))
    variant_file = src.root / "VARIANT"
    extra = [variant_file.stat().st_mtime_ns] if variant_file.is_file() else []
    if src.kind == "torchvision":
        extra += [e.stat().st_mtime_ns for e in os.scandir(src.folder) if e.is_file()]
    return tuple(d.stat().st_mtime_ns for d in dirs) + tuple(extra)


def _fingerprint(src: _Source) -> str:
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


def _variant(src: _Source, dataset: str, paths: list[str]) -> str:
    if src.kind == "torchvision":
        return f"{dataset}-original"
    variant_file = src.root / "VARIANT"
    if variant_file.is_file():
        name = variant_file.read_text().strip()
        if not _NAME_RE.match(name):
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
def _decode_paths(paths: list[str]) -> np.ndarray:
    """(len(paths), 32, 32, 3) uint8; other sizes resized bilinearly, every mode converted to RGB."""
    out = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (32, 32):
                    im = im.resize((32, 32), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im)
        except Exception as e:  # name the file: the caller sees one error for 50,000 files
            raise ValueError(f"cannot decode image {p}: {e}") from e
    return out


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def _decode_imagefolder(paths: list[str]) -> np.ndarray:
    """Decode many files with a few processes (decoding 32x32 JPEGs is Python-bound, so threads
    barely help). 'fork' where available: the children only run PIL and numpy, and spawning
    would re-import torch in each child, which costs more than the decode itself."""
    workers = _workers()
    if len(paths) < _PARALLEL_MIN or workers == 1:
        return _decode_paths(paths)
    size = max(500, min(4000, len(paths) // (workers * 4) + 1))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    log.info("decoding %d images with %d processes", len(paths), workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return np.concatenate(list(ex.map(_decode_paths, chunks)))


def _read_torchvision(root: Path, split: str, dataset: str, download: bool):
    """(images (N,32,32,3) uint8, labels (N,) int64, classes) via torchvision's own reader.

    torchvision's python batches are pickles: that is the official CIFAR format and torchvision's
    reader unpickles them. This is the only place where the project lets anything be unpickled, and
    torchvision first checks every batch file's md5 against the official archive, so only the
    genuine files are ever unpickled."""
    from torchvision import datasets  # lazy: heavy, and only this branch needs it

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except Exception as e:  # offline download (URLError) or missing/corrupt files (RuntimeError)
        raise DataNotFoundError(how_to_provide_data(root, f"torchvision could not "
                                                    f"{'download' if download else 'read'} "
                                                    f"{dataset}: {e}")) from e
    return (np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64),
            list(ds.classes))


# ------------------------------------------------------------------------------------------ caches
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The disk cache folder: cache_dir, else $ROBUSTLENS_CACHE, else ~/.cache/robustlens.
    Raises ValueError for a folder inside the repo (no pixels may ever be written there)."""
    base = cache_dir or os.environ.get("ROBUSTLENS_CACHE") or Path.home() / ".cache" / "robustlens"
    base = Path(base).expanduser().resolve()
    if base == REPO or REPO in base.parents:
        raise ValueError(f"cache folder {base} is inside the repository {REPO}; choose one outside "
                         "(cache_dir=... or ROBUSTLENS_CACHE)")
    return base


_MEMORY: OrderedDict[tuple, Split] = OrderedDict()
_MEMORY_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the splits kept in this process (the disk cache stays)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def _disk_read(stem: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        x = np.load(stem.with_suffix(".images.npy"), allow_pickle=False)
        y = np.load(stem.with_suffix(".labels.npy"), allow_pickle=False)
        n = int(meta["n"])
        if x.dtype != np.uint8 or x.shape != (n, 32, 32, 3) or y.dtype != np.int64 or y.shape != (n,):
            raise ValueError(f"shapes {x.shape}/{y.shape} do not match n={n}")
        return x, y, meta
    except (OSError, ValueError, KeyError) as e:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s: %s", stem, e)
        return None


def _disk_write(stem: Path, x: np.ndarray, y: np.ndarray, meta: dict) -> None:
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


# ------------------------------------------------------------------------------------------ public
def load_split(root: str | os.PathLike | None = None, split: str = "train", dataset: str = "cifar10",
               download: bool = False, cache_dir: str | os.PathLike | None = None) -> Split:
    """Load one split as a `Split` (images (N, 32, 32, 3) uint8, labels (N,) int64).

    root: an ImageFolder tree (train/ and test/ with one folder per class; other sizes are resized
    to 32x32) or a torchvision root (cifar-10-batches-py / cifar-100-python inside); None means
    `resolve_root()`. download=True lets torchvision fetch cifar10/cifar100 when online (into root,
    or <cache>/torchvision without one). Decoded once, then served from the disk cache (see
    `cache_root`) and an in-process LRU. Raises DataNotFoundError (with instructions) when there is
    no data, ValueError for bad arguments or class folders that do not match `dataset`."""
    _check_args(split, dataset)
    r = resolve_root(root)
    if r is None:
        if not download:
            raise DataNotFoundError(how_to_provide_data())
        r = cache_root(cache_dir) / "torchvision"
    src = _locate(r, split, dataset)
    fresh = None
    if src is None and download and dataset in _TV_DIRS:
        fresh = _read_torchvision(r, split, dataset, download=True)
        src = _locate(r, split, dataset)
    if src is None:
        detail = ("it does not exist" if not r.exists() else
                  f"no {split}/ folder and no {_TV_DIRS.get(dataset, 'torchvision')}/ folder")
        raise DataNotFoundError(how_to_provide_data(r, detail))

    mem_key = (src.kind, str(src.folder.resolve()), split, dataset, _stamp(src))
    with _MEMORY_LOCK:
        if mem_key in _MEMORY:
            _MEMORY.move_to_end(mem_key)
            return _MEMORY[mem_key]

    ident = json.dumps([_CACHE_FORMAT, src.kind, str(src.folder.resolve()), split, dataset,
                        _fingerprint(src)])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
    stem = cache_root(cache_dir) / "splits" / f"{dataset}-{split}-{digest}"
    cached = _disk_read(stem)
    if cached is not None:
        x, y, meta = cached
        _check_classes(meta["classes"], dataset, src.folder)
        log.info("loaded %s/%s (%d images) from cache %s", dataset, split, len(y), stem)
    else:
        if src.kind == "torchvision":
            x, y, classes = fresh or _read_torchvision(src.root, split, dataset, download=download)
            variant = _variant(src, dataset, [])
        else:
            classes, paths, y = _list_imagefolder(src.folder)
            _check_classes(classes, dataset, src.folder)  # before the slow decode
            variant = _variant(src, dataset, paths)
            x = _decode_imagefolder(paths)
        _check_classes(classes, dataset, src.folder)
        meta = {"format": _CACHE_FORMAT, "n": int(len(y)), "classes": list(classes), "variant": variant,
                "source": str(src.folder.resolve()), "dataset": dataset, "split": split}
        _disk_write(stem, x, y, meta)
        log.info("decoded %s/%s (%d images) from %s; cached at %s", dataset, split, len(y), src.folder,
                 stem)
    out = Split(torch.from_numpy(x), torch.from_numpy(y), tuple(meta["classes"]), dataset, split,
                meta["variant"], meta["source"])
    with _MEMORY_LOCK:
        _MEMORY[mem_key] = out
        while len(_MEMORY) > _MEMORY_SLOTS:
            _MEMORY.popitem(last=False)
    return out


def _check_classes(classes: list[str], dataset: str, folder: Path) -> None:
    if dataset == "cifar10" and tuple(classes) != CIFAR10_CLASSES:
        raise ValueError(f"{folder}: class folders {classes} are not CIFAR-10's {list(CIFAR10_CLASSES)}; "
                         "pass another dataset name for a custom ImageFolder tree")
    if dataset in _NUM_CLASSES and len(classes) != _NUM_CLASSES[dataset]:
        raise ValueError(f"{folder}: {len(classes)} classes, but {dataset} has {_NUM_CLASSES[dataset]}")


def _samples_dir() -> Path | None:
    # find_spec locates the installed package without importing it (foolbox pulls in eagerpy etc.).
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if d.is_dir() else None


_SAMPLE_RE = re.compile(r"^cifar10_(\d+)_(\d)\.png$")
_SAMPLES: list[Split] = []


def sample_images() -> Split:
    """The 20 original CIFAR-10 test images inside the installed foolbox package, read in place:
    images (20, 32, 32, 3) uint8, labels from the file names. Raises DataNotFoundError without foolbox."""
    if _SAMPLES:
        return _SAMPLES[0]
    d = _samples_dir()
    files = [] if d is None else sorted(
        (int(m.group(1)), int(m.group(2)), d / m.group(0))
        for m in (_SAMPLE_RE.match(p.name) for p in d.iterdir()) if m)
    if not files:
        raise DataNotFoundError("the offline CIFAR-10 samples come from the foolbox package, which is "
                                "not installed (or has no data/ folder): pip install 'foolbox>=3.3.4'")
    x = _decode_paths([str(p) for _, _, p in files])
    y = np.asarray([label for _, label, _ in files], dtype=np.int64)
    out = Split(torch.from_numpy(x), torch.from_numpy(y), CIFAR10_CLASSES, "cifar10", "samples",
                "cifar10-foolbox-samples", str(d))
    _SAMPLES[:] = [out]
    return out


def train_val_indices(n: int, n_val: int = 1000, seed: int = 0, *,
                      labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted int64 index arrays (train (n - n_val,), val (n_val,)) covering range(n),
    deterministic in `seed`. With labels ((n,) ints) the validation set is stratified: each class
    gets n_val * count / n images (largest remainders break ties)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(n_val, (int, np.integer)) or not 0 <= n_val < n:
        raise ValueError(f"n_val must be an int in [0, {n}), got {n_val!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        val = rng.permutation(n)[:n_val]
    else:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {lab.shape}")
        cls, counts = np.unique(lab, return_counts=True)
        share = counts * n_val / n
        quota = np.floor(share).astype(int)
        rest = n_val - quota.sum()
        quota[np.argsort(-(share - quota), kind="stable")[:rest]] += 1
        val = np.concatenate([rng.permutation(np.flatnonzero(lab == c))[:q] for c, q in zip(cls, quota)])
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def balanced_indices(labels, n: int, seed: int = 0) -> np.ndarray:
    """n distinct indices into labels ((N,) ints), spread evenly over classes (counts differ by at
    most one while every class has images left). Returned round-robin over classes (in class order),
    so every prefix is balanced too; deterministic in `seed`."""
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if not isinstance(n, (int, np.integer)) or not 0 <= n <= len(lab):
        raise ValueError(f"n must be an int in [0, {len(lab)}], got {n!r}")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(lab == c)) for c in np.unique(lab)]
    depth = max((len(p) for p in pools), default=0)
    # (depth, classes) grid read row by row: the k-th pick of every class before any (k+1)-th.
    grid = np.full((depth, len(pools)), -1, dtype=np.int64)
    for j, p in enumerate(pools):
        grid[:len(p), j] = p
    order = grid.reshape(-1)
    return order[order >= 0][:n]


def available_sources(root: str | os.PathLike | None = None, dataset: str = "cifar10") -> dict:
    """What the UI can offer, without decoding anything:
    {"root": str | None, "samples"|"train"|"test": {"available": bool, "message": str}}."""
    out: dict = {}
    d = _samples_dir()
    n = 0 if d is None else sum(1 for p in d.iterdir() if _SAMPLE_RE.match(p.name))
    out["samples"] = {"available": n > 0, "message": f"{n} CIFAR-10 test images from foolbox ({d})" if n
                      else "foolbox is not installed: pip install 'foolbox>=3.3.4'"}
    r = resolve_root(root)
    out["root"] = None if r is None else str(r)
    for split in SPLITS:
        src = None if r is None else _locate(r, split, dataset)
        if src is not None:
            out[split] = {"available": True, "message": f"{src.kind} at {src.folder}"}
        else:
            detail = "" if r is None else ("it does not exist" if not r.exists() else f"no {split}/ folder")
            out[split] = {"available": False, "message": how_to_provide_data(r, detail)}
    return out
