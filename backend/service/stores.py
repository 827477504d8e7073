"""The service's shared state: the model registry, the image store and bounded result caches.

Everything here is shared by every user of one Service (Streamlit sessions, FastAPI workers), so
it is thread-safe and hands out nothing a caller could use to corrupt it: models are frozen, cached
arrays are read-only, and cached dicts are copied on the way out.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.core import data as data_mod
from backend.core import datasets as ds_registry
from backend.core.checkpoints import list_checkpoints, load_checkpoint
from backend.core.errors import NotFoundError, short
from backend.core.uploads import UploadLimits, decode_upload, image_sha256
from backend.core.validation import check_int
from backend.train.registry import METHODS

log = logging.getLogger(__name__)


def freeze_result(obj: Any) -> Any:
    """Make every numpy array inside obj (dicts/lists/tuples) read-only, in place; returns obj."""
    if isinstance(obj, np.ndarray):
        obj.setflags(write=False)
    elif isinstance(obj, dict):
        for v in obj.values():
            freeze_result(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            freeze_result(v)
    return obj


def copy_result(obj: Any) -> Any:
    """A copy of the dict/list structure of obj; (read-only) arrays and scalars are shared."""
    if isinstance(obj, dict):
        return {k: copy_result(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy_result(v) for v in obj]
    return obj


class LRU:
    """A thread-safe bounded cache. Values are frozen on put and structure-copied on get."""

    def __init__(self, maxsize: int):
        self.maxsize = int(maxsize)
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any | None:
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return copy_result(self._d[key])

    def put(self, key, value) -> Any:
        freeze_result(value)
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)
        return copy_result(value)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


class CheckpointStore:
    """Model cards from a checkpoints folder, re-scanned cheaply (cards only, at most every
    `rescan_s` seconds, and at once when an unknown id is asked for) so models written by a job
    appear without a restart; weights loaded lazily, once per (id, weights sha, device), frozen,
    and kept in an LRU of `max_loaded` models."""

    def __init__(self, root: str | Path, device: str, max_loaded: int = 8, rescan_s: float = 2.0):
        self.root, self.device = Path(root), device
        self.max_loaded, self.rescan_s = max_loaded, rescan_s
        self._cards: dict[str, dict] = {}
        self._scanned = -1e18
        self._loaded: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._lock = threading.RLock()

    def cards(self, force: bool = False) -> list[dict]:
        """Every valid card, rsupcon first (backend.core.checkpoints order)."""
        with self._lock:
            if force or time.monotonic() - self._scanned > self.rescan_s:
                self._cards = {c["id"]: c for c in list_checkpoints(self.root, METHODS)}
                self._scanned = time.monotonic()
            return list(self._cards.values())

    def card(self, model_id: str) -> dict:
        """The card of one model (NotFoundError naming the known ids)."""
        if not isinstance(model_id, str):
            raise ValueError(f"model id must be a string, got {short(model_id)}")
        with self._lock:
            if model_id not in {c["id"] for c in self.cards()}:
                self.cards(force=True)
            if model_id not in self._cards:
                known = ", ".join(self._cards) or f"none (no checkpoints in {self.root})"
                raise NotFoundError(f"unknown model {short(model_id)}; known: {known}")
            return self._cards[model_id]

    def resolve(self, model_ids) -> list[str]:
        """None -> every model; else the given ids validated, duplicates dropped, order kept."""
        if model_ids is None:
            ids = [c["id"] for c in self.cards()]
            if not ids:
                raise ValueError(f"no models available: {self.root} holds no checkpoints")
            return ids
        if isinstance(model_ids, str) or not isinstance(model_ids, (list, tuple)):
            raise ValueError(f"model_ids must be a list of model ids or None, got {short(model_ids)}")
        if not model_ids:
            raise ValueError("model_ids is empty; pass None for every model")
        out = []
        for mid in model_ids:
            self.card(mid)
            if mid not in out:
                out.append(mid)
        return out

    def model(self, model_id: str) -> torch.nn.Module:
        """The frozen fp32 model (eval mode, no parameter gradients) on this registry's device."""
        card = self.card(model_id)
        key = (model_id, card["weights_sha256"], self.device)
        with self._lock:  # one load per key even when several threads ask at once
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            t0 = time.perf_counter()
            loaded = load_checkpoint(self.root / model_id, device=self.device)
            log.info("loaded model %s on %s in %.2f s", model_id, self.device, time.perf_counter() - t0)
            for old in [k for k in self._loaded if k[0] == model_id]:
                del self._loaded[old]  # replaced weights: drop the stale copy
            self._loaded[key] = loaded.model
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return loaded.model

    def weights_key(self, model_id: str) -> str:
        """The id plus weights hash: what cached results are keyed by."""
        return f"{model_id}@{self.card(model_id)['weights_sha256']}"


DEFAULT_DATASET = "cifar10"  # what an image id without a data set means (every id before data sets)
SOURCES = ("samples", "test", "train")
THUMB_MAX_N = 2000       # thumbnails per call (the embedding explorer's largest N)
THUMB_SIDES = (8, 96)    # the sides a thumbnail may have, both included
_IMAGE_ID_RE = re.compile(r"^(?:([a-z0-9][a-z0-9_.-]{0,63})/)?"
                          r"(?:(samples|test|train):(\d{1,9})|upload:([0-9a-f]{16}))$")


def image_id_prefix(dataset: str) -> str:
    """What image ids of `dataset` start with: "" for the default data set, else "<dataset>/"."""
    return "" if dataset == DEFAULT_DATASET else f"{dataset}/"


def split_source(source, dataset: str | None = None) -> tuple[str, str]:
    """(data set, source) of a source name that may name its data set ("imagenet/samples"); a
    `dataset` given as well must agree. The data set defaults to `dataset`, else DEFAULT_DATASET."""
    if isinstance(source, str) and "/" in source:
        ds, source = source.split("/", 1)
        if dataset is not None and dataset != ds:
            raise ValueError(f"source {short(ds + '/' + source)} names data set {ds!r}, not {dataset!r}")
        dataset = ds
    return check_dataset(dataset), source


def check_dataset(dataset: str | None) -> str:
    """A registered data set's name (None: DEFAULT_DATASET); ValueError naming the known ones."""
    if dataset is None:
        return DEFAULT_DATASET
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be a data set name, got {short(dataset)}")
    return ds_registry.get_dataset(dataset).name  # ValueError: unknown dataset ...; known: ...


class ImageStore:
    """Images by id, per registered data set (backend.core.datasets). An id may name its data set,
    "<dataset>/<source>:<i>" ("imagenet/samples:3", "cifar100/test:12"); without one it means
    DEFAULT_DATASET (cifar10), so "samples:3" is "cifar10/samples:3". Sources: "samples" (the offline
    images a package ships, e.g. foolbox's 20 CIFAR-10 and 20 ImageNet images), "test" / "train"
    (when the data root holds that data set; decoded lazily, once) and "upload:<hex16>" (a bounded
    in-memory LRU of decoded uploads, keyed by data set and the first 16 hex digits of the pixels'
    sha256; an upload is decoded at its data set's image size)."""

    def __init__(self, data_root: str | Path | None = None, max_uploads: int = 256,
                 upload_limits: UploadLimits = UploadLimits()):
        self.data_root = data_root
        self.upload_limits = upload_limits
        self._splits: dict[tuple[str, str], data_mod.Split] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._uploads: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.max_uploads = max_uploads
        self._lock = threading.Lock()

    @property
    def classes(self) -> list[str]:
        return self.classes_of(None)

    def classes_of(self, dataset: str | None = None) -> list[str]:
        """The class names of a data set (default DEFAULT_DATASET), in label order."""
        return list(ds_registry.get_dataset(check_dataset(dataset)).classes)

    def sources(self, dataset: str | None = None) -> dict:
        """{"samples"|"test"|"train": {"available", "count", "message"}} of a data set, without decoding."""
        ds = check_dataset(dataset)
        avail = data_mod.available_sources(self.data_root, ds)
        out = {}
        for s in SOURCES:
            info = dict(avail.get(s, {"available": False, "message": "unknown source"}))
            if info["available"] and s != "samples" and ds != DEFAULT_DATASET:
                info = _holds(data_mod.resolve_root(self.data_root), s, ds, info)
            if not info["available"]:
                count = 0
            elif (ds, s) in self._splits or s == "samples":
                count = len(self.split(s, ds))
            else:  # counted once without decoding: the first listing would pay a full decode
                if (ds, s) not in self._counts:
                    self._counts[(ds, s)] = _count_files(data_mod.resolve_root(self.data_root), s)
                count = self._counts[(ds, s)]
            out[s] = {"available": bool(info["available"]), "count": int(count), "message": info["message"]}
        return out

    def split(self, source: str, dataset: str | None = None) -> data_mod.Split:
        """One source of a data set as a Split (source may name its data set: "imagenet/samples")."""
        ds, source = split_source(source, dataset)
        if source not in SOURCES:
            raise ValueError(f"unknown image source {short(source)}; known: {', '.join(SOURCES)}")
        with self._lock:
            if (ds, source) not in self._splits:
                try:
                    self._splits[(ds, source)] = (data_mod.sample_images(ds) if source == "samples"
                                                  else data_mod.load_split(self.data_root, source, dataset=ds))
                except (data_mod.DataNotFoundError, ValueError) as e:
                    raise ValueError(f"image source {short(image_id_prefix(ds) + source)} is not available: "
                                     f"{e}") from None
            return self._splits[(ds, source)]

    def _indices(self, source: str, class_name: str | None, dataset: str | None = None) -> np.ndarray:
        split = self.split(source, dataset)
        if class_name is None:
            return np.arange(len(split))
        if class_name not in split.classes:
            more = " ..." if len(split.classes) > 100 else ""
            raise ValueError(f"unknown class {short(class_name)}; known: {', '.join(split.classes[:100])}{more}")
        return np.flatnonzero(split.labels.numpy() == split.classes.index(class_name))

    def list(self, source: str, class_name: str | None, offset: int, limit: int, dataset: str | None) -> dict:
        check_int("offset", offset, 0, 10**9)
        check_int("limit", limit, 1, 500)
        ds, source = split_source(source, dataset)
        split, idx = self.split(source, ds), self._indices(source, class_name, ds)
        labels, prefix = split.labels.numpy(), image_id_prefix(ds)
        items = [{"image_id": f"{prefix}{source}:{i}", "label": int(labels[i]),
                  "class_name": split.classes[labels[i]]} for i in idx[offset:offset + limit]]
        return {"total": int(len(idx)), "items": items}

    def random(self, source: str, class_name: str | None, seed: int | None, dataset: str | None) -> dict:
        if seed is not None:
            check_int("seed", seed, 0, 2**63 - 1)
        ds, source = split_source(source, dataset)
        idx = self._indices(source, class_name, ds)
        if len(idx) == 0:
            raise ValueError(f"no images of class {short(class_name)} in {short(source)}")
        return self.get(f"{image_id_prefix(ds)}{source}:{int(np.random.default_rng(seed).choice(idx))}")

    def parse(self, image_id: str) -> tuple[str, str, int | str]:
        """(data set, source or "upload", index or upload key) of an image id; ValueError when malformed
        or its data set is unknown."""
        m = _IMAGE_ID_RE.match(image_id) if isinstance(image_id, str) else None
        if m is None:
            raise ValueError(f"invalid image id {short(image_id)}; expected 'samples:<i>', 'test:<i>', "
                             "'train:<i>' or 'upload:<16 hex digits>', optionally after '<dataset>/' "
                             "(e.g. 'imagenet/samples:3')")
        ds = check_dataset(m.group(1))
        if m.group(4):
            return ds, "upload", m.group(4)
        return ds, m.group(2), int(m.group(3))

    def dataset_of(self, image_id: str) -> str:
        """The data set an image id names (DEFAULT_DATASET when it names none)."""
        return self.parse(image_id)[0]

    def get(self, image_id: str) -> dict:
        """{"image_id", "dataset", "label": int|None, "class_name": str|None, "pixels": (S,S,3) uint8
        (read-only; S the data set's image size)}."""
        ds, source, i = self.parse(image_id)
        if source == "upload":
            with self._lock:
                px = self._uploads.get((ds, str(i)))
                if px is not None:
                    self._uploads.move_to_end((ds, str(i)))
            if px is None:
                raise NotFoundError(f"unknown upload {short(image_id)} (uploads are kept in memory for a while "
                                    "and forgotten on restart); upload the image again")
            return {"image_id": image_id, "dataset": ds, "label": None, "class_name": None, "pixels": px}
        split = self.split(source, ds)
        assert isinstance(i, int)
        if i >= len(split):
            raise NotFoundError(f"unknown image {short(image_id)}: {image_id_prefix(ds)}{source} has "
                                f"{len(split)} images (0..{len(split) - 1})")
        label = int(split.labels[i])
        px = split.images[i].numpy().copy()
        px.setflags(write=False)
        return {"image_id": image_id, "dataset": ds, "label": label, "class_name": split.classes[label],
                "pixels": px}

    def thumbnails(self, image_ids: list[str], side: int) -> dict:
        """{"pixels": uint8 (n, side, side, 3)}: each image of `image_ids` (in that order, repeats kept)
        at side x side, for many small pictures in one call (the embedding explorer's tooltips). n is
        0..THUMB_MAX_N, side THUMB_SIDES; a smaller side is an area average (PIL's box filter), a larger
        one repeats pixels (nearest), the same side is the pixels themselves. ValueError for a bad list,
        id or side; NotFoundError for the first unknown id."""
        if not isinstance(image_ids, (list, tuple)):
            raise ValueError(f"image_ids must be a list of image ids, got {type(image_ids).__name__}")
        if len(image_ids) > THUMB_MAX_N:
            raise ValueError(f"at most {THUMB_MAX_N} thumbnails per call, got {len(image_ids)}")
        side = check_int("side", side, *THUMB_SIDES)
        out = np.empty((len(image_ids), side, side, 3), dtype=np.uint8)
        for j, image_id in enumerate(image_ids):
            px = np.asarray(self.get(image_id)["pixels"])
            if px.shape[:2] == (side, side):
                out[j] = px
            else:
                method = Image.Resampling.BOX if px.shape[0] > side else Image.Resampling.NEAREST
                out[j] = np.asarray(Image.fromarray(px).resize((side, side), method))
        return {"pixels": out}

    def upload(self, data: bytes, dataset: str | None = None) -> dict:
        """Decode (backend.core.uploads guards; UploadError is a ValueError) at the data set's image
        size and remember an upload; its id names the data set ("imagenet/upload:<hex16>")."""
        ds = check_dataset(dataset)
        px = decode_upload(data, self.upload_limits, size=ds_registry.get_dataset(ds).image_size)
        px.setflags(write=False)
        key = image_sha256(px)[:16]
        with self._lock:
            self._uploads[(ds, key)] = px
            self._uploads.move_to_end((ds, key))
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return self.get(f"{image_id_prefix(ds)}upload:{key}")

    def tensor(self, image_id: str) -> tuple[torch.Tensor, int | None]:
        """(x (1,3,S,S) float32 in [0,1] at the image's own size, label or None) for an image id."""
        img = self.get(image_id)
        return data_mod.to_float(torch.from_numpy(np.array(img["pixels"]))[None]), img["label"]  # (1,3,H,W)


def _holds(root: Path | None, split: str, dataset: str, info: dict) -> dict:
    """info, or "not available" when the data root's ImageFolder split holds another data set's
    classes (a CIFAR-10 tree is no ImageNet); a torchvision folder is the data set's own."""
    spec = ds_registry.get_dataset(dataset)
    if root is None or (spec.torchvision_dir and (root.name == spec.torchvision_dir
                                                  or (root / spec.torchvision_dir).is_dir())):
        return info
    folder = root / split
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if names == spec.classes:
        return info
    return {"available": False, "message": f"{folder} holds {len(names)} classes that are not {spec.label}'s"}


def _count_files(root: Path | None, split: str) -> int:
    """Number of images in an ImageFolder split without decoding (torchvision roots: the known size)."""
    if root is None:
        return 0
    folder = root / split
    if folder.is_dir():
        return sum(1 for d in folder.iterdir() if d.is_dir() for f in d.iterdir()
                   if f.suffix.lower() in data_mod.IMAGE_EXTENSIONS)
    return {"train": 50000, "test": 10000}[split]


def cache_key(obj) -> str:
    """A canonical string for dict-like parameters, for cache keys."""
    return json.dumps(obj, sort_keys=True, default=str)
