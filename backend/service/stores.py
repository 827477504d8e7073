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

from backend.core import data as data_mod
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


class ModelRegistry:
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


_IMAGE_ID_RE = re.compile(r"^(samples|test|train):(\d{1,9})$|^upload:([0-9a-f]{16})$")
SOURCES = ("samples", "test", "train")


class ImageStore:
    """Images by id: "samples:<i>" (foolbox's 20 CIFAR-10 test images, always there), "test:<i>" /
    "train:<i>" (when a data set is found; decoded lazily, once) and "upload:<hex16>" (a bounded
    in-memory LRU of decoded uploads, keyed by the first 16 hex digits of the pixels' sha256)."""

    def __init__(self, data_root: str | Path | None = None, max_uploads: int = 256,
                 upload_limits: UploadLimits = UploadLimits()):
        self.data_root = data_root
        self.upload_limits = upload_limits
        self._splits: dict[str, data_mod.Split] = {}
        self._counts: dict[str, int] = {}
        self._uploads: OrderedDict[str, np.ndarray] = OrderedDict()
        self.max_uploads = max_uploads
        self._lock = threading.Lock()

    @property
    def classes(self) -> list[str]:
        return list(data_mod.CIFAR10_CLASSES)

    def sources(self) -> dict:
        """{"samples"|"test"|"train": {"available", "count", "message"}} without decoding anything."""
        avail = data_mod.available_sources(self.data_root)
        out = {}
        for s in SOURCES:
            info = avail.get(s, {"available": False, "message": "unknown source"})
            if not info["available"]:
                count = 0
            elif s in self._splits or s == "samples":
                count = len(self.split(s))
            else:  # counted once without decoding: the first listing would pay a full decode
                if s not in self._counts:
                    self._counts[s] = _count_files(data_mod.resolve_root(self.data_root), s)
                count = self._counts[s]
            out[s] = {"available": bool(info["available"]), "count": int(count), "message": info["message"]}
        return out

    def split(self, source: str) -> data_mod.Split:
        if source not in SOURCES:
            raise ValueError(f"unknown image source {short(source)}; known: {', '.join(SOURCES)}")
        with self._lock:
            if source not in self._splits:
                try:
                    self._splits[source] = (data_mod.sample_images() if source == "samples"
                                            else data_mod.load_split(self.data_root, source))
                except data_mod.DataNotFoundError as e:
                    raise ValueError(f"image source {short(source)} is not available: {e}") from None
            return self._splits[source]

    def _indices(self, source: str, class_name: str | None) -> np.ndarray:
        split = self.split(source)
        if class_name is None:
            return np.arange(len(split))
        if class_name not in split.classes:
            raise ValueError(f"unknown class {short(class_name)}; known: {', '.join(split.classes)}")
        return np.flatnonzero(split.labels.numpy() == split.classes.index(class_name))

    def list(self, source: str = "samples", class_name: str | None = None, offset: int = 0,
             limit: int = 48) -> dict:
        check_int("offset", offset, 0, 10**9)
        check_int("limit", limit, 1, 500)
        split, idx = self.split(source), self._indices(source, class_name)
        labels = split.labels.numpy()
        items = [{"image_id": f"{source}:{i}", "label": int(labels[i]),
                  "class_name": split.classes[labels[i]]} for i in idx[offset:offset + limit]]
        return {"total": int(len(idx)), "items": items}

    def random(self, source: str = "samples", class_name: str | None = None, seed: int | None = None) -> dict:
        if seed is not None:
            check_int("seed", seed, 0, 2**63 - 1)
        idx = self._indices(source, class_name)
        if len(idx) == 0:
            raise ValueError(f"no images of class {short(class_name)} in {short(source)}")
        return self.get(f"{source}:{int(np.random.default_rng(seed).choice(idx))}")

    def get(self, image_id: str) -> dict:
        """{"image_id", "label": int|None, "class_name": str|None, "pixels": (32,32,3) uint8 (read-only)}."""
        m = _IMAGE_ID_RE.match(image_id) if isinstance(image_id, str) else None
        if m is None:
            raise ValueError(f"invalid image id {short(image_id)}; expected 'samples:<i>', 'test:<i>', "
                             "'train:<i>' or 'upload:<16 hex digits>'")
        if m.group(3):
            with self._lock:
                px = self._uploads.get(m.group(3))
                if px is not None:
                    self._uploads.move_to_end(m.group(3))
            if px is None:
                raise NotFoundError(f"unknown upload {short(image_id)} (uploads are kept in memory for a while "
                                    "and forgotten on restart); upload the image again")
            return {"image_id": image_id, "label": None, "class_name": None, "pixels": px}
        source, i = m.group(1), int(m.group(2))
        split = self.split(source)
        if i >= len(split):
            raise NotFoundError(f"unknown image {short(image_id)}: {source} has {len(split)} images "
                                f"(0..{len(split) - 1})")
        label = int(split.labels[i])
        px = split.images[i].numpy().copy()
        px.setflags(write=False)
        return {"image_id": image_id, "label": label, "class_name": split.classes[label], "pixels": px}

    def upload(self, data: bytes) -> dict:
        """Decode (backend.core.uploads guards; UploadError is a ValueError) and remember an upload."""
        px = decode_upload(data, self.upload_limits)
        px.setflags(write=False)
        key = image_sha256(px)[:16]
        with self._lock:
            self._uploads[key] = px
            self._uploads.move_to_end(key)
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return self.get(f"upload:{key}")

    def tensor(self, image_id: str) -> tuple[torch.Tensor, int | None]:
        """(x (1,3,32,32) float32 in [0,1], label or None) for an image id."""
        img = self.get(image_id)
        return data_mod.to_float(torch.from_numpy(np.array(img["pixels"]))[None]), img["label"]  # (1,3,H,W)


def _count_files(root: Path | None, split: str) -> int:
    """Number of images in an ImageFolder split without decoding (torchvision roots: the known size)."""
    if root is None:
        return 0
    folder = root / split
    if folder.is_dir():
        return sum(1 for d in folder.iterdir() if d.is_dir() for f in d.iterdir()
                   if f.suffix.lower() in data_mod.IMAGE_EXTENSIONS)
    return {"train": 50000, "test": 10000}[split]


def _key(obj) -> str:
    """A canonical string for dict-like parameters, for cache keys."""
    return json.dumps(obj, sort_keys=True, default=str)
