"""Encoder features and 2-D maps of them (UMAP or PCA), with reference maps stored beside checkpoints.

Images are (N,3,H,W) float in [0,1] (uint8 0..255 is accepted and divided by 255). Features are the
model's pooled encoder output (N, F), F = feature_dim of the model contract (backend.core.archs; 8*width
for our ResNet-18). Maps are coordinates (N,2) float32.

Before fitting or transforming, every feature row is L2-normalised (so the map reflects feature
directions, which is what the contrastive models are trained on, and fit and transform see the
same scaling). umap-learn is imported lazily: importing it costs about a second and the first fit
JIT-compiles for several more; `warm_up()` pays that on tiny data (e.g. in a background thread).

A reference map (coords, labels, predictions and fp16 features of N images; never pixels) is saved
as `reference_embedding.safetensors` in a checkpoint folder. New points (e.g. adversarial images) are
placed into it by refitting the same embedder with the same seed on the stored features (UMAP refits
with a fixed seed and n_jobs=1 reproduced the coordinates bit for bit in our runs; `place` checks
this every time and falls back to `knn_place`, an approximation, when they do not match).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from backend.core.archs import classifier

log = logging.getLogger(__name__)

EMBED_METHODS = ("umap", "pca")
REFERENCE_FILE = "reference_embedding.safetensors"
REFERENCE_SCHEMA = 1
REFIT_TOL = 1e-4  # max |refit - stored| coordinate difference, as a fraction of the map's extent


def _as_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W), got {shape}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point() or (x.numel() and (x.min() < 0 or x.max() > 1)):
        raise ValueError(f"float images must be in [0, 1] (dtype {x.dtype})")
    return x


def extract_features(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                     with_preds: bool = False):
    """Encoder features (N, F) float32 numpy of images x (N,3,H,W) in [0,1] (or uint8), computed
    batch by batch on the model's device under inference mode. with_preds=True also returns the
    predicted classes (N,) int64, from the model's `classifier` (the contract) on the same features."""
    x = _as_images(x)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    head = None
    if with_preds:
        try:
            head = classifier(model)
        except ValueError as e:
            raise ValueError(f"with_preds needs a model whose logits are classifier(features): {e}") from None
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    feats, preds = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
            f = model.features(xb)  # (B, F)
            feats.append(f.float().cpu())
            if head is not None:
                preds.append(head(f).argmax(1).cpu())
    f_np = (torch.cat(feats).numpy() if feats else np.zeros((0, getattr(model, "feature_dim", 0)), np.float32))
    if not with_preds:
        return f_np.astype(np.float32, copy=False)
    return f_np.astype(np.float32, copy=False), (torch.cat(preds).numpy() if preds else np.zeros(0, np.int64))


def standardise(features) -> np.ndarray:
    """(N, F) -> (N, F) float32 rows of unit L2 norm (all-zero rows stay zero)."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] < 2:
        raise ValueError(f"features must have shape (N, F) with F >= 2, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain non-finite values")
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return (f / np.where(norm > 0, norm, 1.0)).astype(np.float32)


class Embedder:
    """2-D map of feature vectors. fit(features (N,F)) -> coords (N,2) float32; transform(features
    (M,F)) -> coords (M,2) in the same map. Same seed and data -> same coordinates (UMAP runs
    single-threaded for that). UMAP needs N >= 5 (n_neighbors is capped at N-1); PCA needs N >= 2."""

    def __init__(self, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0):
        if method not in EMBED_METHODS:
            raise ValueError(f"unknown embedding method {method!r}; known: {', '.join(EMBED_METHODS)}")
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or not (2 <= n_neighbors <= 200):
            raise ValueError(f"n_neighbors must be an integer in [2, 200], got {n_neighbors!r}")
        if isinstance(min_dist, bool) or not isinstance(min_dist, (int, float)) or not (0.0 <= min_dist <= 1.0):
            raise ValueError(f"min_dist must be a number in [0, 1], got {min_dist!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not (0 <= seed < 2**31):
            raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
        self.method, self.n_neighbors, self.min_dist, self.seed = method, n_neighbors, float(min_dist), seed
        self._est = None
        self.coords_: np.ndarray | None = None  # (N,2) coordinates of the fitted points
        self.n_features_: int | None = None

    @property
    def params(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "min_dist": self.min_dist, "standardise": "l2"}

    def fit(self, features) -> np.ndarray:
        f = standardise(features)
        n = len(f)
        if self.method == "pca":
            if n < 2:
                raise ValueError(f"PCA needs at least 2 points, got {n}")
            from sklearn.decomposition import PCA
            self._est = PCA(n_components=2, svd_solver="full", random_state=self.seed)
        else:
            if n < 5:
                raise ValueError(f"UMAP needs at least 5 points, got {n}")
            import umap  # lazy: seconds to import
            # n_jobs=1 is what random_state implies anyway; saying so avoids umap's warning.
            self._est = umap.UMAP(n_components=2, n_neighbors=min(self.n_neighbors, n - 1),
                                  min_dist=self.min_dist, random_state=self.seed, n_jobs=1)
        coords = np.asarray(self._est.fit_transform(f), dtype=np.float32)
        self.coords_, self.n_features_ = coords, f.shape[1]
        return coords.copy()

    def transform(self, features) -> np.ndarray:
        if self._est is None:
            raise RuntimeError("Embedder.transform called before fit")
        f = standardise(features)
        if f.shape[1] != self.n_features_:
            raise ValueError(f"features have {f.shape[1]} dimensions; the map was fitted on {self.n_features_}")
        if len(f) == 0:
            return np.zeros((0, 2), np.float32)
        return np.asarray(self._est.transform(f), dtype=np.float32)


def warm_up() -> float:
    """Import umap and JIT-compile its fit and transform on tiny data; returns the seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    f = rng.random((64, 8), dtype=np.float32)
    e = Embedder("umap", n_neighbors=5, seed=0)
    e.fit(f)
    e.transform(f[:4])
    dt = time.perf_counter() - t0
    log.info("umap warm-up took %.1f s", dt)
    return dt


@dataclass(frozen=True, eq=False)
class ReferenceEmbedding:
    """A stored map of N reference images (no pixels)."""
    coords: np.ndarray        # (N, 2) float32
    labels: np.ndarray        # (N,) int64 true classes
    preds: np.ndarray         # (N,) int64 predicted classes
    features: np.ndarray      # (N, F) float16 encoder features, to place new points later
    image_ids: list[str]      # e.g. "test:123"
    method: str               # "umap" | "pca"
    seed: int
    params: dict = field(default_factory=dict)  # n_neighbors, min_dist, standardise
    weights_sha256: str | None = None          # the checkpoint weights these features came from

    def embedder(self) -> Embedder:
        """An unfitted Embedder with this map's method, seed and parameters."""
        return Embedder(self.method, int(self.params.get("n_neighbors", 15)),
                        float(self.params.get("min_dist", 0.1)), int(self.seed))

    def key(self) -> str:
        """Content hash (features, method, seed, params) for caching a fitted Embedder."""
        h = hashlib.sha256(np.ascontiguousarray(self.features).tobytes())
        h.update(json.dumps([self.method, self.seed, self.params], sort_keys=True).encode())
        return h.hexdigest()


def compute_reference(model: nn.Module, images: torch.Tensor, labels, method: str = "umap",
                      seed: int = 0, image_ids: list[str] | None = None, n_neighbors: int = 15,
                      min_dist: float = 0.1, weights_sha256: str | None = None) -> ReferenceEmbedding:
    """Features, predictions and a 2-D map of images (N,3,H,W) in [0,1] with labels (N,).
    The map is fitted on the fp16-rounded features that are stored, so a later refit on the
    stored features sees exactly the same input."""
    images = _as_images(images)
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
    if len(lab) != len(images):
        raise ValueError(f"labels has {len(lab)} entries for {len(images)} images")
    ids = [f"idx:{i}" for i in range(len(images))] if image_ids is None else list(image_ids)
    if len(ids) != len(images) or not all(isinstance(s, str) for s in ids):
        raise ValueError(f"image_ids must be {len(images)} strings, got {len(ids)} entries")
    emb = Embedder(method, n_neighbors, min_dist, seed)
    feats, preds = extract_features(model, images, with_preds=True)
    f16 = feats.astype(np.float16)
    coords = emb.fit(f16.astype(np.float32))
    return ReferenceEmbedding(coords, lab, preds.astype(np.int64), f16, ids, method, seed,
                              emb.params, weights_sha256)


def save_reference(ckpt_dir, ref: ReferenceEmbedding) -> Path:
    """Write ref to <ckpt_dir>/reference_embedding.safetensors atomically (temp file, rename):
    arrays as tensors, everything else as JSON in the safetensors metadata. If ref carries no
    weights hash and the folder has a model card, the card's hash is recorded."""
    from safetensors.numpy import save_file

    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise ValueError(f"checkpoint folder {ckpt_dir} does not exist")
    _check_reference(ref)
    sha = ref.weights_sha256
    if sha is None and (ckpt_dir / "card.json").is_file():
        from backend.core.checkpoints import read_card
        sha = read_card(ckpt_dir).get("weights_sha256")
    meta = {"schema": str(REFERENCE_SCHEMA), "method": ref.method, "seed": str(ref.seed),
            "params": json.dumps(ref.params, sort_keys=True), "image_ids": json.dumps(ref.image_ids),
            "weights_sha256": sha or ""}
    tensors = {"coords": np.ascontiguousarray(ref.coords, np.float32),
               "labels": np.ascontiguousarray(ref.labels, np.int64),
               "preds": np.ascontiguousarray(ref.preds, np.int64),
               "features": np.ascontiguousarray(ref.features, np.float16)}
    fd, tmp = tempfile.mkstemp(prefix=f".{REFERENCE_FILE}.", dir=ckpt_dir)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, ckpt_dir / REFERENCE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ckpt_dir / REFERENCE_FILE


def load_reference(ckpt_dir) -> ReferenceEmbedding | None:
    """The stored reference map of a checkpoint, or None when there is none or it was computed for
    other weights than the card's (logged). Raises ValueError for a malformed file."""
    from safetensors import safe_open

    path = Path(ckpt_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        ref = ReferenceEmbedding(
            coords=arrays["coords"], labels=arrays["labels"], preds=arrays["preds"],
            features=arrays["features"], image_ids=json.loads(meta["image_ids"]),
            method=meta["method"], seed=int(meta["seed"]), params=json.loads(meta["params"]),
            weights_sha256=meta.get("weights_sha256") or None)
        _check_reference(ref)
    except (OSError, MemoryError):
        raise
    except Exception as e:  # KeyError, JSON errors, safetensors' own error for a corrupt header
        raise ValueError(f"malformed reference embedding {path}: {type(e).__name__}: {e}") from None
    card = Path(ckpt_dir) / "card.json"
    if ref.weights_sha256 and card.is_file():
        from backend.core.checkpoints import read_card
        current = read_card(ckpt_dir).get("weights_sha256")
        if current and current != ref.weights_sha256:
            log.warning("reference embedding in %s was computed for other weights; ignoring it", ckpt_dir)
            return None
    return ref


def _check_reference(ref: ReferenceEmbedding) -> None:
    n = len(ref.coords)
    if ref.method not in EMBED_METHODS:
        raise ValueError(f"reference method must be one of {EMBED_METHODS}, got {ref.method!r}")
    checks = {"coords": ref.coords.shape == (n, 2), "labels": ref.labels.shape == (n,),
              "preds": ref.preds.shape == (n,),
              "features": ref.features.ndim == 2 and len(ref.features) == n,
              "image_ids": len(ref.image_ids) == n}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"reference embedding arrays disagree in shape: {', '.join(bad)} (N={n})")


def fit_reference(ref: ReferenceEmbedding) -> tuple[Embedder, float]:
    """Refit ref's embedder on its stored features. Returns (embedder, deviation), deviation being
    max |refit - stored coords| / extent of the stored map (0.0 when bit-identical)."""
    emb = ref.embedder()
    emb.fit(ref.features.astype(np.float32))
    return emb, _deviation(emb, ref)


def _deviation(emb: Embedder, ref: ReferenceEmbedding) -> float:
    if emb.coords_ is None or emb.coords_.shape != ref.coords.shape:
        return float("inf")
    extent = float(np.ptp(ref.coords, axis=0).max()) or 1.0
    return float(np.abs(emb.coords_ - ref.coords).max() / extent)


class EmbedderCache:
    """Thread-safe LRU of fitted Embedders keyed by ReferenceEmbedding.key(); the service owns one,
    so a refit (seconds for UMAP) happens once per reference and process."""

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[Embedder, float]] = OrderedDict()

    def get(self, ref: ReferenceEmbedding) -> tuple[Embedder, float]:
        key = ref.key()
        with self._lock:  # held during a fit too: two users asking at once share one refit
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = fit_reference(ref)
            self._items[key] = item
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            return item


def place(ref: ReferenceEmbedding, new_features, embedder: Embedder | None = None,
          cache: EmbedderCache | None = None) -> dict:
    """Coordinates (M,2) of new feature vectors (M,F) in ref's map.

    Uses `embedder` (or one from `cache`, or a fresh refit) when its fitted coordinates reproduce
    the stored map (within REFIT_TOL of its extent); its transform() places the points exactly as
    the map's own algorithm does. Otherwise, e.g. a UMAP refit on another machine differs, falls
    back to knn_place and says so. Returns {"coords", "method": "transform"|"knn",
    "approximate": bool, "refit_deviation": float, "note": str}.
    """
    _check_new(ref, new_features)
    if embedder is None:
        embedder, dev = cache.get(ref) if cache is not None else fit_reference(ref)
    else:
        dev = _deviation(embedder, ref)
    if dev <= REFIT_TOL:
        return {"coords": embedder.transform(new_features), "method": "transform",
                "approximate": False, "refit_deviation": dev,
                "note": f"placed with the map's own {ref.method} transform"}
    log.warning("refit %s map deviates by %.3g of its extent; using k-NN placement", ref.method, dev)
    out = knn_place(ref, new_features)
    out["refit_deviation"] = dev
    out["note"] = f"the refit {ref.method} map did not reproduce the stored one; " + out["note"]
    return out


def _check_new(ref: ReferenceEmbedding, new_features) -> np.ndarray:
    f = np.asarray(new_features, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] != ref.features.shape[1]:
        raise ValueError(f"new features must have shape (M, {ref.features.shape[1]}), got {f.shape}")
    return f


def knn_place(ref: ReferenceEmbedding, new_features, k: int = 10) -> dict:
    """APPROXIMATE placement: each new point goes to the inverse-distance-weighted mean of the map
    coordinates of its k nearest reference points (Euclidean on L2-normalised features). Fast and
    deterministic, but it can only put points inside the existing map (never in empty space), and
    is not what UMAP's transform would do. Returns {"coords": (M,2) float32, "method": "knn",
    "approximate": True, "k": k, "note": str}."""
    f = _check_new(ref, new_features)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = min(k, len(ref.features))
    r, q = standardise(ref.features.astype(np.float32)), standardise(f)
    d2 = np.maximum((q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2.0 * q @ r.T, 0.0)  # (M, N)
    nn_idx = np.argsort(d2, axis=1, kind="stable")[:, :k]                                # (M, k)
    # The expansion above loses precision near 0; recompute the k distances directly so that a
    # point lying on a reference point lands on it.
    d = np.linalg.norm(q[:, None, :] - r[nn_idx], axis=2)                                # (M, k)
    w = 1.0 / (d + 1e-6)
    coords = (w[..., None] * ref.coords[nn_idx]).sum(1) / w.sum(1, keepdims=True)
    return {"coords": coords.astype(np.float32), "method": "knn", "approximate": True, "k": k,
            "note": f"approximate: weighted mean of the {k} nearest reference points' coordinates"}
