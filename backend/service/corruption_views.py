"""The Service's corruption analyses: one image under every corruption and severity (what each model
predicts and where it looks), and accuracy against severity on many images.

Corruptions come from backend.core.corruptions (the 15 of CIFAR-10-C at 5 severities, regenerated,
deterministic for a seed), applied to the image at its data set's size; a model of another input
size sees the corrupted image resized (Engine.resize), as it sees every image. Results are cached per
(model weights, image or sample, normalised parameters); see backend.service.facade for the contract.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.core import corruptions as C
from backend.core.errors import Cancelled, short
from backend.core.validation import check_int
from backend.explain import saliency as saliency_lib
from backend.service import flight
from backend.service.analyses import BatchAnalyses, _stop_fn
from backend.service.engine import Engine
from backend.service.stores import DEFAULT_DATASET

_BATCH = 128


def _names(corruptions) -> list[str]:
    names = list(C.CORRUPTIONS if corruptions is None else corruptions)
    if not names or len(names) > len(C.CORRUPTIONS) or len(set(names)) != len(names):
        raise ValueError(f"corruptions must be 1..15 distinct names of {', '.join(C.CORRUPTIONS)}, "
                         f"got {short(corruptions)}")
    for c in names:
        if c not in C.CORRUPTIONS:
            raise ValueError(f"unknown corruption {short(c)}; one of {', '.join(C.CORRUPTIONS)}")
    return names


def _severities(severities) -> list[int]:
    sev = list(C.SEVERITIES if severities is None else severities)
    if not sev or len(set(sev)) != len(sev) or any(
            isinstance(s, bool) or not isinstance(s, int) or s not in C.SEVERITIES for s in sev):
        raise ValueError(f"severities must be distinct ints in 1..5, got {short(severities)}")
    return sorted(sev)


def describe(max_n: int) -> dict:
    """The corruption registry as limits() serves it: names in order, labels, groups, severities,
    the largest N of a curve and what the regenerated variant is."""
    return {"names": list(C.CORRUPTIONS), "labels": dict(C.LABELS), "groups": {g: list(v) for g, v in C.GROUPS.items()},
            "severities": list(C.SEVERITIES), "max_n": max_n, "variant": C.REGENERATED}


class CorruptionAnalyses:
    """corruption_view (one image) and corruption_curve (many images) over one Engine."""

    def __init__(self, engine: Engine, batches: BatchAnalyses, *, max_curve_n: int):
        self.engine, self.batches, self.max_curve_n = engine, batches, max_curve_n
        self.models, self.images, self.lock = engine.models, engine.images, engine.lock
        self.results, self.heavy = engine.caches.results, engine.caches.heavy

    def view_args(self, image_id, model_ids, corruptions, severities, saliency, seed) -> dict:
        ids = self.models.resolve(model_ids)
        if saliency is not None:
            saliency_lib.check_method(saliency)
        check_int("seed", seed, 0, 2**31 - 1)
        self.images.get(image_id)
        return {"ids": ids, "names": _names(corruptions), "sev": _severities(severities)}

    def corruption_view(self, image_id: str, model_ids, corruptions, severities, saliency: str | None,
                        seed: int) -> dict:
        """The image under each corruption (default all 15) and severity (default 1..5), and what
        every model makes of it: {"image_id", "corruptions": [K names], "severities": [V], "seed",
        "pixels": float32 (K,V,S,S,3) in [0,1] (the corrupted images at the image's size S),
        "results": {mid: {"clean": {probs, pred, top}, "pred": int64 (K,V), "prob": float32 (K,V)
        (probability of that prediction), "flipped": bool (K,V) (prediction differs from the clean
        one), "correct": bool (K,V) or None (no true label for this model), "saliency": float32
        (K,V,S',S') in [0,1] of the predicted class at the model's size S', or None}}}."""
        a = self.view_args(image_id, model_ids, corruptions, severities, saliency, seed)
        names, sev = a["names"], a["sev"]
        pixels = self._corrupted(image_id, names, sev, seed)  # (K,V,3,S,S)
        out = {"image_id": image_id, "corruptions": names, "severities": sev, "seed": seed,
               "pixels": np.ascontiguousarray(pixels.permute(0, 1, 3, 4, 2).numpy(), dtype=np.float32), "results": {}}
        for mid in a["ids"]:
            flight.check()  # between models: stop when the client has left
            key = ("corrupt_view", self.models.weights_key(mid), image_id, tuple(names), tuple(sev), saliency, seed)
            out["results"][mid] = self.engine.cached(self.results, key, lambda: self._view_one(
                mid, image_id, pixels, saliency))
        return out

    def _corrupted(self, image_id: str, names: list[str], sev: list[int], seed: int) -> torch.Tensor:
        key = ("corrupted", image_id, tuple(names), tuple(sev), seed)

        def compute():
            x, _ = self.images.tensor(image_id)  # (1,3,S,S) at the data set's size
            rows = []
            for c in names:
                flight.check()
                rows.append(torch.cat([C.corrupt(x, c, s, seed) for s in sev]))  # (V,3,S,S)
            return {"x": torch.stack(rows).numpy()}  # (K,V,3,S,S)

        return torch.from_numpy(np.array(self.engine.cached(self.results, key, compute)["x"]))

    def _view_one(self, mid: str, image_id: str, pixels: torch.Tensor, saliency: str | None) -> dict:
        k, v = pixels.shape[:2]
        x = self.engine.resize(pixels.reshape(k * v, *pixels.shape[2:]), self.engine.input_size(mid))
        clean = self.engine.clean_probs(mid, image_id)
        probs = torch.softmax(self.engine.logits(mid, x), 1).numpy()  # (K*V,C)
        pred = probs.argmax(1)
        label = self.engine.model_input(mid, image_id)[1]
        out = {"clean": self.engine.prob_entry(clean, mid, 5),
               "pred": pred.reshape(k, v).astype(np.int64),
               "prob": probs[np.arange(len(pred)), pred].reshape(k, v).astype(np.float32),
               "flipped": (pred != int(clean.argmax())).reshape(k, v),
               "correct": None if label is None else (pred == label).reshape(k, v), "saliency": None}
        if saliency is not None:
            flight.check()
            _, heat = self.engine.heatmaps(mid, x.numpy(), [int(p) for p in pred], saliency)
            out["saliency"] = heat.reshape(k, v, *heat.shape[1:]).astype(np.float32)
        return out

    # ---- many images ---------------------------------------------------------------------------
    def curve_args(self, model_ids, corruptions, n, source, seed) -> dict:
        batches = self.batches
        ids = self.models.resolve(model_ids)
        names = _names(corruptions)
        check_int("n", n, 1, self.max_curve_n)
        check_int("seed", seed, 0, 2**31 - 1)
        source = batches._source(source, ids)
        other = [m for m in ids if (self.models.card(m).get("dataset") or DEFAULT_DATASET) != source.split("/")[0]]
        if other:
            raise ValueError(f"a corruption curve measures accuracy on the models' own data set: "
                             f"{', '.join(other)} not trained on {source.split('/')[0]} (source {short(source)})")
        batches._dataset_check(source, n)
        return {"ids": ids, "names": names, "n": n, "source": source, "seed": seed}

    def corruption_curve(self, model_ids, corruptions, n: int, source: str, seed: int, progress=None,
                         should_stop=None) -> dict:
        """Accuracy against severity on n class-balanced images of `source` (the models' data set),
        per model: {mid: {"corruptions": [K], "severities": [0, 1..5], "accuracy": {name: [clean,
        s1..s5]} (severity 0 is clean accuracy), "mca": mean over the K x 5 corrupted cells, "clean":
        float, "n": int, "variant": str}}. progress(done, total) after each (corruption, severity);
        should_stop() polled between them (errors.Cancelled). n <= limits()["corruptions"]["max_n"]."""
        a = self.curve_args(model_ids, corruptions, n, source, seed)
        _, x, labels = self.batches._dataset(a["source"], n, seed, self.max_curve_n)
        stop = _stop_fn(should_stop)
        per_model = len(a["names"]) * len(C.SEVERITIES) + 1
        total = per_model * len(a["ids"])
        out = {}
        for k, mid in enumerate(a["ids"]):
            def tick(done: int, base: int = k * per_model) -> None:
                if progress is not None:
                    progress(base + done, total)

            key = ("corrupt_curve", self.models.weights_key(mid), tuple(a["names"]), n, a["source"], seed)
            out[mid] = self.engine.cached(self.heavy, key, lambda: self._curve_one(mid, a, x, labels, stop, tick))
            tick(per_model)  # a cached model counts as done
        return out

    def _curve_one(self, mid, a, x, labels, stop, tick) -> dict:
        y = torch.from_numpy(labels)

        def acc(xs: torch.Tensor) -> float:
            xs = self.engine.resize(xs, self.engine.input_size(mid))
            pred = torch.cat([self.engine.logits(mid, xs[i:i + _BATCH]).argmax(1) for i in range(0, len(xs), _BATCH)])
            return float((pred == y).double().mean())

        clean = acc(x)
        done = 1
        curves = {}
        for c in a["names"]:
            curves[c] = [clean]
            for s in C.SEVERITIES:
                if stop():
                    raise Cancelled("cancelled")
                # chunks of 256 with their own random stream, as backend.eval.mca draws them
                xc = torch.cat([C.corrupt(x[i:i + 256], c, s, a["seed"], stream=i // 256)
                                for i in range(0, len(x), 256)])
                curves[c].append(acc(xc))
                done += 1
                tick(done)
        cells = [v for row in curves.values() for v in row[1:]]
        return {"corruptions": list(a["names"]), "severities": [0, *C.SEVERITIES], "accuracy": curves,
                "mca": float(np.mean(cells)), "clean": clean, "n": int(a["n"]), "variant": C.REGENERATED}
