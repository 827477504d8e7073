"""Data splits as uint8 tensors: ImageFolder trees, torchvision roots, offline samples.

Which data sets exist, their class names and image sizes: backend.core.datasets (the registry);
how files are found, decoded and cached on disk: backend.core.imagefiles.

A split is decoded once, cached on disk as plain uint8 `.npy` files (outside the repo; read back with
allow_pickle=False) and kept in a small in-process LRU, so the app and training pay the JPEG decode
only the first time. Images are (N, S, S, 3) uint8 here, S the data set's image size (32 for
CIFAR); `to_float` gives the project's (N, 3, S, S) float32 in [0, 1] convention.

Where data comes from (first that exists): an explicit `root`, `$RSUPCON_DATA`, the development copy
`<repo>/../shared/data/cifar10-jpeg`. Without any, `sample_images()` still gives the 20 original
CIFAR-10 test images that ship inside the installed foolbox wheel.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.core.datasets import CIFAR10, NAME_RE, DatasetSpec, find_dataset, get_dataset, image_size_of
from backend.core.imagefiles import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from backend.core.imagefiles import SHARED_CIFAR as SHARED_CIFAR
from backend.core.imagefiles import SHARED_DATA as SHARED_DATA
from backend.core.imagefiles import DataNotFoundError as DataNotFoundError
from backend.core.imagefiles import cache_root as cache_root
from backend.core.imagefiles import (
    class_dirs,
    decode_imagefolder,
    decode_paths,
    disk_read,
    disk_write,
    fingerprint,
    list_imagefolder,
    locate,
    looked_for,
    read_torchvision,
    source_variant,
    stamp,
    torchvision_dir_of,
)
from backend.core.imagefiles import how_to_provide_data as how_to_provide_data
from backend.core.imagefiles import resolve_root as resolve_root

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = CIFAR10.classes  # the registry's list, under its old name
SPLITS = ("train", "test")
_CACHE_FORMAT = 1            # bump when the cached arrays' meaning changes
_MEMORY_SLOTS = 4            # splits kept in process (train is 150 MB, test 30 MB)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Split:
    """One data split. images: (N, S, S, 3) uint8 (S the image side, 32 for CIFAR); labels: (N,)
    int64 in [0, len(classes)).

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
                and im.shape[1] == im.shape[2] >= 8 and im.shape[3] == 3):
            raise ValueError(f"images must be a uint8 tensor (N, S, S, 3) with S >= 8, got "
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
        """(n, 3, S, S) float32 in [0, 1]: all images, or those at `idx` (int or 1-D indices)."""
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



def _check_args(split: str, dataset: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(dataset, str) or not NAME_RE.match(dataset):
        raise ValueError(f"dataset must be a short lower-case name such as 'cifar10', got {dataset!r}")


_MEMORY: OrderedDict[tuple, Split] = OrderedDict()
_MEMORY_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the splits kept in this process (the disk cache stays)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


# ------------------------------------------------------------------------------------------ public
def load_split(root: str | os.PathLike | None = None, split: str = "train", dataset: str = "cifar10",
               download: bool = False, cache_dir: str | os.PathLike | None = None) -> Split:
    """Load one split as a `Split` (images (N, S, S, 3) uint8, labels (N,) int64), S the image size
    of `dataset` in the registry (backend.core.datasets; 32 for a name it does not hold).

    root: an ImageFolder tree (train/ and test/ with one folder per class; other sizes are resized
    to SxS, non-square files centre-cropped first unless S is 32; val/ is the test split when there
    is no test/) or a torchvision root (cifar-10-batches-py / cifar-100-python inside); None means
    `resolve_root()`. A registered data set's class folders are its class names or folder ids
    (ImageNet's WordNet ids), all or some of them: labels are always in the data set's own index
    space (split.classes is its full list) and a subset's variant says so (imagenet-subset10-...).
    An unregistered name's image side comes from the root's dataset.json (datasets.read_manifest).
    download=True lets torchvision fetch cifar10/cifar100 when online (into root, or
    <cache>/torchvision without one). Decoded once, then served from the disk cache (see
    `cache_root`) and an in-process LRU. Raises DataNotFoundError (with instructions) when there is
    no data, ValueError for bad arguments, a bad dataset.json, or class folders that are not
    `dataset`'s (nothing is decoded or cached then)."""
    _check_args(split, dataset)
    r = resolve_root(root)
    if r is None:
        if not download:
            raise DataNotFoundError(how_to_provide_data())
        r = cache_root(cache_dir) / "torchvision"
    src = locate(r, split, dataset)
    fresh = None
    if src is None and download and torchvision_dir_of(dataset) is not None:
        fresh = read_torchvision(r, split, dataset, download=True)
        src = locate(r, split, dataset)
    if src is None:
        detail = ("it does not exist" if not r.exists() else
                  f"no {looked_for(split)} folder and no {torchvision_dir_of(dataset) or 'torchvision'}/ folder")
        raise DataNotFoundError(how_to_provide_data(r, detail, dataset))

    mem_key = (src.kind, str(src.folder.resolve()), split, dataset, stamp(src))
    with _MEMORY_LOCK:
        if mem_key in _MEMORY:
            _MEMORY.move_to_end(mem_key)
            return _MEMORY[mem_key]

    size = image_size_of(dataset, src.root)  # a registered data set's, or the root's dataset.json's
    # the class folders are matched to the data set before anything is decoded or cached
    plan = None if src.kind == "torchvision" else _class_plan([d.name for d in class_dirs(src.folder)],
                                                                dataset, src.folder)
    ident = [_CACHE_FORMAT, src.kind, str(src.folder.resolve()), split, dataset, fingerprint(src)]
    if size != 32:  # 32: the old keys stay valid; other sides centre-crop non-square files
        ident += [size, "centre-crop"]
    if plan is not None and not plan.exact:  # folders by id, in another order, or a subset
        ident += [["labels", plan.labels]]
    digest = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]
    stem = cache_root(cache_dir) / "splits" / f"{dataset}-{split}-{digest}"
    cached = disk_read(stem)
    if cached is not None:
        x, y, meta = cached
        if plan is None:
            _check_classes(meta["classes"], dataset, src.folder)
        log.info("loaded %s/%s (%d images) from cache %s", dataset, split, len(y), stem)
    else:
        if src.kind == "torchvision":
            x, y, classes = fresh or read_torchvision(src.root, split, dataset, download=download)
            _check_classes(classes, dataset, src.folder)
            variant = source_variant(src, dataset, [])
        else:
            assert plan is not None
            folders, paths, y = list_imagefolder(src.folder)
            if folders != plan.folders:
                raise ValueError(f"{src.folder}: its class folders changed while it was read; load it again")
            y = np.asarray(plan.labels, dtype=np.int64)[y]  # folder order -> the data set's labels
            classes = list(plan.classes)
            variant = source_variant(src, dataset, paths)
            if plan.subset:
                variant = _subset_variant(variant, dataset, len(plan.folders))
            x = decode_imagefolder(paths) if size == 32 else decode_imagefolder(paths, size)
        meta = {"format": _CACHE_FORMAT, "n": int(len(y)), "classes": list(classes), "variant": variant,
                "source": str(src.folder.resolve()), "dataset": dataset, "split": split,
                "image_size": int(x.shape[1])}
        if plan is not None and not plan.exact:
            meta["folders"] = list(plan.folders)
        disk_write(stem, x, y, meta)
        log.info("decoded %s/%s (%d images) from %s; cached at %s", dataset, split, len(y), src.folder,
                 stem)
    out = Split(torch.from_numpy(x), torch.from_numpy(y), tuple(meta["classes"]), dataset, split,
                meta["variant"], meta["source"])
    with _MEMORY_LOCK:
        _MEMORY[mem_key] = out
        while len(_MEMORY) > _MEMORY_SLOTS:
            _MEMORY.popitem(last=False)
    return out


@dataclass(frozen=True)
class _ClassPlan:
    """How a tree's class folders (sorted by name) map onto a data set's labels."""
    folders: list[str]         # the class folder names, sorted (the order list_imagefolder labels them)
    labels: list[int]          # the data set's label of each folder
    classes: tuple[str, ...]   # the Split's classes (a registered data set's full list)
    exact: bool                # folders == classes: labels are the folder indices, as always
    subset: bool               # only some of a registered data set's classes


def _class_plan(folders: list[str], dataset: str, folder: Path) -> _ClassPlan:
    """Match class folders to `dataset`: an unregistered name's classes are the folders; a
    registered data set's folders are class names or folder ids (DatasetSpec.folder_ids), any
    subset of them. ValueError naming a few folders that are neither (nothing is decoded then)."""
    spec = find_dataset(dataset)
    identity = _ClassPlan(folders, list(range(len(folders))), tuple(folders), True, False)
    if spec is None or not folders or tuple(folders) == spec.classes:
        return identity
    index = spec.folder_index()
    unknown = [f for f in folders if f not in index]
    if unknown:
        ids = f" or its folder ids ({', '.join(spec.folder_ids[:2])}, ...)" if spec.folder_ids else ""
        raise ValueError(f"{folder}: {len(unknown)} of {len(folders)} class folders are not {spec.label}'s "
                         f"classes ({len(folders)} folders: {folders[:12]}"
                         f"{' ...' if len(folders) > 12 else ''}), e.g. {unknown[:5]}; {dataset}'s class "
                         f"folders are named by its {spec.num_classes} class names ({list(spec.classes)[:12]}"
                         f"{' ...' if spec.num_classes > 12 else ''}){ids}; pass another dataset name for "
                         "a custom ImageFolder tree")
    labels = [index[f] for f in folders]
    if len(set(labels)) != len(labels):
        twice = sorted({spec.classes[k] for k in labels if labels.count(k) > 1})
        raise ValueError(f"{folder}: class(es) {twice[:5]} have two folders (a name and an id); keep one")
    subset = len(labels) < spec.num_classes
    if subset:
        log.info("%s holds %d of %s's %d classes: labels stay in %s's index space (data variant "
                 "%s-subset%d-...)", folder, len(labels), spec.label, spec.num_classes, dataset, dataset,
                 len(labels))
    return _ClassPlan(folders, labels, spec.classes, False, subset)


def _subset_variant(variant: str, dataset: str, k: int) -> str:
    """The data variant of a tree holding k of the data set's classes: imagenet-jpeg75 ->
    imagenet-subset10-jpeg75 (a VARIANT file's own name gets -subset10 appended)."""
    tag = f"subset{k}"
    if variant.startswith(dataset + "-"):
        out = f"{dataset}-{tag}-{variant[len(dataset) + 1:]}"
    else:
        out = f"{variant}-{tag}"
    return out if NAME_RE.match(out) else f"{dataset}-{tag}"


def _check_classes(classes: list[str], dataset: str, folder: Path) -> None:
    """A torchvision root's classes (or a cached split's) must be the registry's, in its order."""
    spec = find_dataset(dataset)
    if spec is None:
        return
    if tuple(classes) != spec.classes:
        more = " ..." if spec.num_classes > 12 else ""
        raise ValueError(f"{folder}: class folders {list(classes)[:12]} ({len(classes)} classes) are not "
                         f"{spec.label}'s {list(spec.classes)[:12]}{more} ({dataset} has {spec.num_classes}); "
                         "pass another dataset name for a custom ImageFolder tree")


def _samples_where(spec: DatasetSpec) -> tuple[str, re.Pattern] | None:
    """(package, file-name pattern) of a data set's offline samples (DatasetSpec.samples)."""
    if not spec.samples:
        return None
    package, pattern = spec.samples.split(":", 1)
    return package, re.compile(pattern)


def samples_dir(package: str = "foolbox") -> Path | None:
    # find_spec locates the installed package without importing it (foolbox pulls in eagerpy etc.).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if d.is_dir() else None


_SAMPLES: dict[str, Split] = {}


def sample_images(dataset: str = "cifar10") -> Split:
    """The offline sample images a package ships for `dataset` (DatasetSpec.samples; for CIFAR-10
    the 20 original test images inside the installed foolbox package), read in place: images
    (n, S, S, 3) uint8, labels from the file names (the pattern's second group). Raises
    DataNotFoundError without the package, ValueError for a data set without samples."""
    if dataset in _SAMPLES:
        return _SAMPLES[dataset]
    spec = get_dataset(dataset)
    where = _samples_where(spec)
    if where is None:
        raise ValueError(f"dataset {dataset!r} ships no offline samples")
    package, pattern = where
    d = samples_dir(package)
    files = [] if d is None else sorted(
        (int(m.group(1)), int(m.group(2)), d / m.group(0))
        for m in (pattern.match(p.name) for p in d.iterdir()) if m)
    if not files:
        raise DataNotFoundError(f"the offline {spec.label} samples come from the {package} package, which is "
                                "not installed (or has no data/ folder): pip install 'foolbox>=3.3.4'")
    x = decode_paths([str(p) for _, _, p in files], spec.image_size)
    y = np.asarray([label for _, label, _ in files], dtype=np.int64)
    out = Split(torch.from_numpy(x), torch.from_numpy(y), spec.classes, dataset, "samples",
                f"{dataset}-{package}-samples", str(d))
    _SAMPLES[dataset] = out
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
    spec = find_dataset(dataset)
    where = None if spec is None else _samples_where(spec)
    if where is None:
        out["samples"] = {"available": False, "message": f"no offline samples for {dataset}"}
    else:
        package, pattern = where
        d = samples_dir(package)
        n = 0 if d is None else sum(1 for p in d.iterdir() if pattern.match(p.name))
        out["samples"] = {"available": n > 0,
                          "message": f"{n} {spec.label} test images from {package} ({d})" if n  # type: ignore[union-attr]
                          else f"{package} is not installed: pip install 'foolbox>=3.3.4'"}
    r = resolve_root(root)
    out["root"] = None if r is None else str(r)
    for split in SPLITS:
        src = None if r is None else locate(r, split, dataset)
        if src is not None:
            out[split] = {"available": True, "message": f"{src.kind} at {src.folder}"}
        else:
            detail = "" if r is None else ("it does not exist" if not r.exists() else
                                           f"no {looked_for(split)} folder")
            out[split] = {"available": False, "message": how_to_provide_data(r, detail, dataset)}
    return out
