"""The machinery every analysis of the Service shares: the model registry and image store it reads,
the device lock it computes under, the bounded result caches with single-flight (identical concurrent
calls computed once), the batchers that let one-image calls of different users share a forward pass,
and the cached primitives built on them (clean probabilities, crafted adversarial images, heatmaps).

One Engine per Service; the analyses (backend.service.inspection for one image, backend.service.analyses
for many) hold it and call it, nothing else. Cached arrays are read-only and cached dicts are copied on
the way out, so no caller can corrupt a cache.
"""
from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from backend import attacks
from backend.core.datasets import image_size_of
from backend.core.validation import check_int
from backend.explain import embed as embed_mod
from backend.explain import saliency as saliency_lib
from backend.service import flight
from backend.service.batching import Batcher, batch_window_s
from backend.service.stores import DEFAULT_DATASET, LRU, CheckpointStore, ImageStore, cache_key, copy_result

T = TypeVar("T")


class Caches:
    """The Service's bounded result caches: probs (weights, image) -> probabilities; crafted (weights,
    image, spec, target) -> adversarial image; results: attack / explain / metrics / lens per model;
    heavy: embeddings, curves, class visualisations; embedders: refitted reference maps."""

    def __init__(self):
        self.probs = LRU(1024)
        self.crafted = LRU(256)
        self.results = LRU(256)
        self.heavy = LRU(16)
        self.embedders = embed_mod.EmbedderCache()

    def clear(self) -> None:
        """Forget every cached result (the refitted reference maps stay: they depend on weights only)."""
        for cache in (self.probs, self.crafted, self.results, self.heavy):
            cache.clear()


class Engine:
    """models: the CheckpointStore; images: the ImageStore; lock: the device's FairLock; device: "cpu" /
    "cuda[:i]"; caches: a Caches. Identical concurrent requests are computed once
    (ROBUSTLENS_COALESCE=0: every time), and on a GPU one-image forwards and attacks of different
    users within a short window share one batch."""

    def __init__(self, models: CheckpointStore, images: ImageStore, lock: flight.FairLock, device: str,
                 caches: Caches):
        self.models, self.images, self.lock, self.device, self.caches = models, images, lock, device, caches
        self.flight = flight.SingleFlight(enabled=flight.coalescing_enabled())
        window = batch_window_s(device)
        self.batcher = Batcher(self.forward_batch, window_s=window)
        self.attack_batcher = Batcher(self.attack_batch, window_s=window)

    def class_names(self, model_id: str) -> list[str]:
        return list(self.models.card(model_id)["classes"])

    def num_classes(self, model_ids) -> int:
        return min(int(self.models.card(m)["num_classes"]) for m in model_ids)

    def prob_entry(self, probs: np.ndarray, model_id: str, topk: int) -> dict:
        names = self.class_names(model_id)
        order = np.argsort(-probs, kind="stable")[:topk]
        return {"probs": probs, "pred": int(order[0]),
                "top": [{"index": int(i), "class_name": names[i], "prob": float(probs[i])} for i in order]}

    def logits(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        model = self.models.model(model_id)
        with self.lock, torch.inference_mode():
            return model(x.to(self.device)).float().cpu()

    def cached(self, cache: LRU, key, compute):
        """cache[key], else compute() once for every concurrent caller with this key (single-flight),
        stored in cache. Each caller gets its own copy of the structure (arrays are read-only)."""
        hit = cache.get(key)
        if hit is not None:
            return hit

        def lead():
            again = cache.get(key)  # finished by another caller between our miss and now
            return again if again is not None else cache.put(key, compute())

        return copy_result(self.flight.do((id(cache), key), lead))

    def side_by_side(self, n: int) -> int:
        """How many threads per_model runs n models' work on: 0 (one model after another) on a GPU, with
        ROBUSTLENS_MODEL_PARALLEL=0, with fewer than 2 intra-op threads configured (ROBUSTLENS_THREADS=1),
        for fewer than 2 models, or while another request holds or waits for the device (they would
        wait for all the models' work instead of one model's); else min(n, intra-op threads)."""
        if not self.device.startswith("cpu") or n < 2 or os.environ.get("ROBUSTLENS_MODEL_PARALLEL", "1") == "0":
            return 0
        threads = torch.get_num_threads()
        if threads < 2 or self.lock.busy():
            return 0
        return min(n, threads)

    def per_model(self, model_ids: Iterable[str], fn: Callable[[str], T],
                  pending: Callable[[str], bool] | None = None) -> dict[str, T]:
        """{m: fn(m)} for every model id. On the CPU (see side_by_side) the models still to compute
        (pending(m) true; all without pending) run side by side: one thread per model with one intra-op
        thread each, under one acquisition of the device lock that their own acquisitions pass through
        (FairLock.sharing), with this thread's scope. A batch-1 pass of a small network spreads poorly
        over intra-op threads; measured in bench/model_parallel.py. The numbers are the same either way
        (CPU kernels here give the same bits at any thread count; tests/test_model_parallel.py)."""
        ids = list(model_ids)
        todo = [m for m in ids if pending is None or pending(m)]
        workers = self.side_by_side(len(todo))
        if not workers:
            return {m: fn(m) for m in ids}

        def one(m: str) -> T:
            torch.set_num_threads(1)
            return fn(m)

        threads = torch.get_num_threads()
        done: dict[str, T] = {}
        with self.lock.sharing():
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="robustlens-model")
            try:
                futures = {m: pool.submit(contextvars.copy_context().run, one, m) for m in todo}
                for m, f in futures.items():
                    done[m] = f.result()  # the first error is raised; the models not started are dropped
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # the guests end before the lock is released
                torch.set_num_threads(threads)
        return {m: done[m] if m in done else fn(m) for m in ids}

    def forward_batch(self, model_id: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits for several (1,3,H,W) images of different callers in one forward (the Batcher's call)."""
        logits = self.logits(model_id, torch.cat(xs))
        return [logits[i:i + 1] for i in range(len(xs))]

    def input_size(self, model_id: str) -> int:
        """The image side the model takes (its card's input_size, else its data set's image size)."""
        card = self.models.card(model_id)
        return int(card.get("input_size") or image_size_of(card.get("dataset") or DEFAULT_DATASET))

    @staticmethod
    def resize(x: torch.Tensor, size: int) -> torch.Tensor:
        """Images x (N,3,H,W) in [0,1] at size x size (bilinear, antialiased); x itself when they are."""
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True).clamp_(0.0, 1.0)

    def model_input(self, model_id: str, image_id: str) -> tuple[torch.Tensor, int | None]:
        """(x (1,3,S,S) float32 in [0,1], label or None): the image as model_id sees it. The one place
        where any model meets any image: an image whose side is not the model's input size S is
        resized (bilinear, antialiased), and its true label is used only when the image is of the
        model's data set (else None: callers then take the model's clean prediction, as for uploads)."""
        x, label = self.images.tensor(image_id)
        card = self.models.card(model_id)
        x = self.resize(x, self.input_size(model_id))
        if self.images.dataset_of(image_id) != (card.get("dataset") or DEFAULT_DATASET):
            label = None
        return x, label

    def clean_probs(self, model_id: str, image_id: str) -> np.ndarray:
        key = (self.models.weights_key(model_id), image_id)

        def compute():
            x, _ = self.model_input(model_id, image_id)
            logits = self.batcher.submit(model_id, x) if self.batcher.enabled else self.logits(model_id, x)
            return torch.softmax(logits, 1)[0].numpy().astype(np.float32)

        return self.cached(self.caches.probs, key, compute)

    def spec(self, spec) -> attacks.AttackSpec:
        if isinstance(spec, attacks.AttackSpec):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"spec must be a dict of AttackSpec fields, got {type(spec).__name__}")
        return attacks.AttackSpec.from_dict(spec)  # validates; run_attack checks target_class < C

    def target(self, target, model_ids) -> int | None:
        if target is None:
            return None
        return check_int("target", target, 0, self.num_classes(model_ids) - 1)

    def adversarial(self, model_id: str, image_id: str, spec: attacks.AttackSpec,
                     target: int | None) -> dict:
        """The attack crafted on model_id (cached): {"x_adv": (1,3,H,W) float32, "probs_adv": (C,)
        float32 (model_id's prediction on it), "success", "linf", "l2", "iterations", "y": the label
        attacked}."""
        key = (self.models.weights_key(model_id), image_id, cache_key(spec.to_dict()), target)
        return self.cached(self.caches.crafted, key, lambda: self._craft(model_id, image_id, spec, target))

    def _craft(self, model_id: str, image_id: str, spec: attacks.AttackSpec, target: int | None) -> dict:
        x, label = self.model_input(model_id, image_id)
        y = label if label is not None else int(self.clean_probs(model_id, image_id).argmax())
        item = (x, y, target)
        if self.attack_batcher.enabled:  # GPU: other users' one-image attacks with this spec join in
            r = self.attack_batcher.submit((model_id, spec, target is None), item)
        else:
            r = self.attack_batch((model_id, spec, target is None), [item])[0]
        # Only the adversarial logits are reused: clean probabilities always come from clean_probs,
        # so a prediction never depends on whether an attack ran first (the attack's forward pass
        # uses another memory layout, which can differ in the last bits).
        return {**r, "y": int(y)}

    def attack_batch(self, group: tuple, items: list) -> list[dict]:
        """One run_attack over the (1,3,H,W) images of `items` [(x, y, target)] with group's
        (model id, spec); per item {"x_adv" (1,3,H,W), "probs_adv" (C,), "success", "linf", "l2",
        "iterations"}. Random starts are seeded per image, so each item gets its one-image result."""
        model_id, spec, untargeted = group  # a batch is all "the spec's own target" or all explicit targets
        model = self.models.model(model_id)
        x = torch.cat([it[0] for it in items]).to(self.device)
        y = torch.tensor([it[1] for it in items], device=self.device)
        t = None if untargeted else torch.tensor([it[2] for it in items], device=self.device)
        with self.lock:
            r = attacks.run_attack(model, x, y, spec, target=t)
        probs = torch.softmax(r.logits_adv.float(), 1).cpu().numpy()
        x_adv = r.x_adv.detach().float().cpu().numpy()
        return [{"x_adv": x_adv[i:i + 1].copy(), "probs_adv": probs[i].copy(),
                 "success": bool(r.success[i].item()), "linf": float(r.linf[i].item()), "l2": float(r.l2[i].item()),
                 "iterations": int(r.iterations[i].item())} for i in range(len(items))]

    def heatmaps(self, model_id: str, x: np.ndarray, targets: list[int], method: str,
                  params: saliency_lib.SaliencyParams = saliency_lib.SaliencyParams()) -> tuple[np.ndarray, np.ndarray]:
        """(attributions (N,3,H,W), heatmaps (N,H,W)) float32 for images x (N,3,H,W)."""
        model = self.models.model(model_id)
        with self.lock:
            attr = saliency_lib.attribute(model, torch.from_numpy(np.array(x)).to(self.device),
                                      torch.tensor(targets, device=self.device), method, params)
        attr = attr.cpu().numpy().astype(np.float32)
        return attr, saliency_lib.to_heatmap(attr, method)
