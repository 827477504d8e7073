"""The Service's many-image analyses: embeddings, robustness curves, feature lens, class visualisation.

An object the Service holds and delegates to; what it needs is passed in: the Engine (model registry,
image store, device lock, caches, the cached primitives), the checkpoints folder (for the stored
reference maps) and the size limits. Long loops take the device lock one batch at a time, so an
interactive request waits for at most one batch of a background curve, and they poll `should_stop`
between batches (a cancelled call raises errors.Cancelled, the one cancellation signal).
"""
from __future__ import annotations

import numpy as np
import torch

from backend import attacks
from backend.core.data import balanced_indices
from backend.core.errors import Cancelled, short
from backend.core.validation import check_int
from backend.explain import embed as embed_mod
from backend.explain import lens
from backend.service import flight
from backend.service.engine import Engine
from backend.service.stores import DEFAULT_DATASET, cache_key, image_id_prefix, split_source

_BATCH = 128  # images per attack / feature batch in long work
DEFAULT_EPS = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255]
FLIP_EPS = 8 / 255  # the flip matrix and per-class robust accuracy use the eps nearest to this


def curve_methods() -> list[str]:
    """The attacks the registry offers for robustness curves (Attack.curve), in menu order."""
    return [n for n in attacks.registry.names() if attacks.registry.get(n).curve]


def fixed_steps(method: str) -> int | None:
    """The steps of `method` when the registry fixes them (FGSM: 1), else None (a curve's `steps`)."""
    attack = attacks.registry.get(method)
    p = attack.params_for(attack.norms[0])["steps"]
    return int(p.lo) if p.lo is not None and p.lo == p.hi else None


def _stop_fn(should_stop):
    """A should_stop() that is True once the caller's own callback is (a cancelled task) and raises
    the scope's Cancelled / DeadlineExceeded once the request's scope is (a disconnected client)."""
    def stop() -> bool:
        if should_stop is not None and should_stop():
            return True
        flight.check()
        return False
    return stop


class BatchAnalyses:
    """embed, robustness_curve, feature_lens, class_visualisation over one Engine. root: the
    checkpoints folder; max_embed_n, max_curve_n (for this device), max_eps_values: the bounds
    Service.limits() reports."""

    def __init__(self, engine: Engine, root, *, max_embed_n: int, max_curve_n: int, max_eps_values: int):
        self.engine, self.root = engine, root
        self.models, self.images, self.lock, self.device = engine.models, engine.images, engine.lock, engine.device
        self.results, self.heavy, self.embedders = engine.caches.results, engine.caches.heavy, engine.caches.embedders
        self.max_embed_n, self.max_curve_n, self.max_eps_values = max_embed_n, max_curve_n, max_eps_values

    def _source(self, source: str, model_ids) -> str:
        """The qualified source "<dataset>/<source>" a many-image analysis reads: a source that names
        its data set ("imagenet/samples") as given, else that source of the models' data set (when
        they all have the same; else the default data set)."""
        if isinstance(source, str) and "/" in source:
            ds, src = split_source(source)
        else:
            sets = {self.models.card(m).get("dataset") or DEFAULT_DATASET for m in model_ids}
            ds, src = split_source(source, sets.pop() if len(sets) == 1 else None)
        return f"{ds}/{src}"

    def _dataset(self, source: str, n: int, seed: int, max_n: int):
        """(image ids, x (n,3,S,S) float32, labels (n,) int64) of a class-balanced seeded sample of a
        qualified source ("cifar10/test"); S the data set's image size."""
        check_int("n", n, 1, max_n)
        check_int("seed", seed, 0, 2**31 - 1)
        split = self.images.split(source)
        if n > len(split):
            raise ValueError(f"n={n} exceeds the {len(split)} images of source {short(source)}")
        idx = balanced_indices(split.labels, n, seed)
        ds, src = split_source(source)
        return ([f"{image_id_prefix(ds)}{src}:{i}" for i in idx], split.float_images(idx),
                split.labels[idx].numpy())

    def _attack_batches(self, model, x: torch.Tensor, y: torch.Tensor, spec, should_stop,
                        tick) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv (N,3,H,W), the model's predictions on it (N,)) for images x against labels y,
        batch by batch (the device lock is taken per batch; in background work, waiting requests go
        ahead of the batch's next attack step)."""
        xs, preds = [], []
        for i in range(0, len(x), _BATCH):
            if should_stop():
                raise Cancelled("cancelled")
            with self.lock, self.lock.yielding_at(model):  # background work lets others in at every step
                r = attacks.run_attack(model, x[i:i + _BATCH].to(self.device), y[i:i + _BATCH].to(self.device), spec)
            xs.append(r.x_adv.cpu())
            preds.append(r.pred_adv.cpu())
            tick()
        return torch.cat(xs), torch.cat(preds)

    def validate_task(self, kind: str, p: dict) -> None:
        """The cheap checks of a task's parameters (every one of `kind`'s arguments), so that a bad request
        fails at once (ValueError), not in the task's thread."""
        if kind == "robustness_curve":
            a = self._curve_args(p["model_ids"], p["method"], p["eps_list"], p["n"], p["steps"], p["source"],
                                 p["seed"])
            self._dataset_check(a["source"], a["n"])
        elif kind == "embed":
            if p["method"] not in embed_mod.EMBED_METHODS:
                raise ValueError(f"unknown embedding method {short(p['method'])}")
            self.models.card(p["model_id"])
            check_int("n", p["n"], 5, self.max_embed_n)
            if p["spec"] is not None:
                self.engine.spec(p["spec"])
            self._dataset_check(self._source(p["source"], [p["model_id"]]), p["n"])
        else:
            ids = self.models.resolve(p["model_ids"])
            check_int("target_class", p["target_class"], 0, self.engine.num_classes(ids) - 1)
            check_int("steps", p["steps"], *lens.LENS_LIMITS["vis_steps"])

    def _dataset_check(self, source: str, n: int) -> None:
        if n > len(self.images.split(source)):
            raise ValueError(f"n={n} exceeds the {len(self.images.split(source))} images of source {short(source)}")

    # ---- embeddings ------------------------------------------------------------------------
    def embed(self, model_id: str, n: int, spec: dict | None, method: str, seed: int, source: str,
              progress=None, should_stop=None) -> dict:
        """A 2-D map of the model's encoder features for n class-balanced images of `source`.

        Returns {"method", "coords_clean": float32 (n,2), "coords_adv": (n,2) | None (the
        adversarial images crafted on this model with `spec`, placed into the same map), "labels":
        int64 (n,), "pred_clean": (n,), "pred_adv": (n,) | None, "image_ids": [str],
        "from_reference": bool (the model's precomputed reference map was reused),
        "placement": "transform" | "knn" (how adversarial points were placed; knn is approximate)}.
        n in 5..2000 for umap (2.. for pca).
        """
        if method not in embed_mod.EMBED_METHODS:
            raise ValueError(f"unknown embedding method {short(method)}; known: {', '.join(embed_mod.EMBED_METHODS)}")
        check_int("n", n, 5 if method == "umap" else 2, self.max_embed_n)
        s = None if spec is None else self.engine.spec(spec)
        self.models.card(model_id)
        source = self._source(source, [model_id])
        key = ("embed", self.models.weights_key(model_id), n, None if s is None else cache_key(s.to_dict()),
               method, seed, source)
        return self.engine.cached(self.heavy, key, lambda: self._embed_compute(
            model_id, n, s, method, seed, source, progress, _stop_fn(should_stop)))

    def _embed_compute(self, model_id, n, s, method, seed, source, progress, should_stop) -> dict:
        ids, x, labels = self._dataset(source, n, seed, self.max_embed_n)
        x = self.engine.resize(x, self.engine.input_size(model_id))  # images of another size: the model's
        model = self.models.model(model_id)
        total = 1 + (0 if s is None else -(-n // _BATCH))
        done = [0]

        def tick():
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        with self.lock:
            feats, preds = embed_mod.extract_features(model, x.to(self.device), with_preds=True)
        ref = embed_mod.load_reference(self.root / model_id)
        pos = None
        if ref is not None and ref.method == method and ref.seed == seed:
            where = {iid: i for i, iid in enumerate(ref.image_ids)}
            pos = [where.get(i) for i in ids]
            pos = None if any(p is None for p in pos) else np.asarray(pos)
        if pos is not None:  # the stored map covers these images: reuse it, place only new points
            coords, placement = ref.coords[pos].astype(np.float32), "transform"
            embedder = None
        else:
            embedder = embed_mod.Embedder(method, seed=seed)
            coords, placement = embedder.fit(feats), "transform"
        out = {"method": method, "coords_clean": coords, "coords_adv": None, "labels": labels.astype(np.int64),
               "pred_clean": preds.astype(np.int64), "pred_adv": None, "image_ids": ids,
               "from_reference": pos is not None, "placement": placement}
        if s is not None:  # attacked against the true labels, or the predictions on another data set's images
            same = split_source(source)[0] == (self.models.card(model_id).get("dataset") or DEFAULT_DATASET)
            y = torch.from_numpy(labels if same else preds.astype(np.int64))
            x_adv = self._attack_batches(model, x, y, s, should_stop, tick)[0]
            with self.lock:
                f_adv, p_adv = embed_mod.extract_features(model, x_adv.to(self.device), with_preds=True)
            if embedder is not None:
                out["coords_adv"] = embedder.transform(f_adv)
            else:
                placed = embed_mod.place(ref, f_adv, cache=self.embedders)
                out["coords_adv"], out["placement"] = placed["coords"], placed["method"]
            out["pred_adv"] = p_adv.astype(np.int64)
        tick()
        return out

    # ---- robustness curves -----------------------------------------------------------------
    def _curve_args(self, model_ids, method, eps_list, n, steps, source, seed) -> dict:
        ids = self.models.resolve(model_ids)
        if method not in curve_methods():
            raise ValueError(f"robustness curve method must be one of {', '.join(curve_methods())}, "
                             f"got {short(method)}")
        eps_list = list(DEFAULT_EPS if eps_list is None else eps_list)
        if not 1 <= len(eps_list) <= self.max_eps_values:
            raise ValueError(f"eps_list must hold 1..{self.max_eps_values} values, got {len(eps_list)}")
        specs = [attacks.AttackSpec(method=method, eps=e, steps=None if fixed_steps(method) else steps,
                                    seed=seed)
                 if e else None for e in eps_list]  # eps 0 is the clean accuracy: no attack needed
        source = self._source(source, ids)
        other = [m for m in ids if (self.models.card(m).get("dataset") or DEFAULT_DATASET) != source.split("/")[0]]
        if other:
            raise ValueError(f"a robustness curve measures accuracy on the models' own data set: "
                             f"{', '.join(other)} not trained on {source.split('/')[0]} (source {short(source)})")
        max_n = self.max_curve_n
        check_int("n", n, 1, max_n)
        check_int("steps", steps, 1, attacks.MAX_STEPS)
        return {"ids": ids, "method": method, "eps": [float(e) for e in eps_list], "specs": specs, "n": n,
                "steps": steps, "source": source, "seed": seed, "max_n": max_n}

    def robustness_curve(self, model_ids, method: str, eps_list, n: int, steps: int, source: str, seed: int,
                         progress=None, should_stop=None) -> dict:
        """Accuracy against eps on n class-balanced images of `source`, per model:
        {mid: {"eps": [float], "accuracy": [float] (correct both clean and attacked; eps 0 = clean),
        "flip_matrix": int64 (C,C) [true class, prediction under attack] at "flip_eps" (the listed eps
        nearest 8/255), "per_class_clean": float32 (C,), "per_class_robust": float32 (C,) at flip_eps,
        "flip_eps": float, "n": int}}. progress(done, total) after each batch; should_stop() polled
        between batches (errors.Cancelled when it turns true). n <= 1000 on CPU."""
        a = self._curve_args(model_ids, method, eps_list, n, steps, source, seed)
        ids, x, labels = self._dataset(a["source"], n, seed, a["max_n"])
        y = torch.from_numpy(labels)
        should_stop = _stop_fn(should_stop)
        batches = -(-n // _BATCH)
        total = len(a["ids"]) * (1 + sum(s is not None for s in a["specs"])) * batches
        done = [0]

        def tick():
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        flip_i = int(np.argmin([abs(e - FLIP_EPS) for e in a["eps"]]))
        out = {}
        per_model = total // len(a["ids"])
        for k, mid in enumerate(a["ids"]):
            key = ("curve", self.models.weights_key(mid), a["method"], tuple(a["eps"]), n, steps, a["source"], seed)
            out[mid] = self.engine.cached(self.heavy, key, lambda: self._curve_one(
                mid, a, x, y, labels, should_stop, tick, flip_i))
            done[0] = (k + 1) * per_model - 1  # a cached or shared model's batches all count as done
            tick()
        return out

    def _curve_one(self, mid, a, x, y, labels, should_stop, tick, flip_i) -> dict:
        """One model's robustness curve (see robustness_curve)."""
        n = a["n"]
        model, c = self.models.model(mid), int(self.models.card(mid)["num_classes"])
        x = self.engine.resize(x, self.engine.input_size(mid))
        clean = []
        for i in range(0, n, _BATCH):
            if should_stop():
                raise Cancelled("cancelled")
            clean.append(self.engine.logits(mid, x[i:i + _BATCH]).argmax(1))
            tick()
        clean = torch.cat(clean)
        acc, flip_pred = [], clean
        for j, spec in enumerate(a["specs"]):
            pred = clean if spec is None else self._attack_batches(model, x, y, spec, should_stop, tick)[1]
            acc.append(int(((clean == y) & (pred == y)).sum()) / n)
            if j == flip_i:
                flip_pred = torch.where(clean == y, pred, clean)
        flips = np.zeros((c, c), dtype=np.int64)
        np.add.at(flips, (labels, flip_pred.numpy()), 1)
        counts = np.bincount(labels, minlength=c).clip(min=1)
        ok_clean = (clean == y).numpy()
        ok_rob = ok_clean & (flip_pred == y).numpy()
        return {"eps": a["eps"], "accuracy": acc, "flip_matrix": flips,
                "per_class_clean": (np.bincount(labels, ok_clean, c) / counts).astype(np.float32),
                "per_class_robust": (np.bincount(labels, ok_rob, c) / counts).astype(np.float32),
                "flip_eps": a["eps"][flip_i], "n": int(n)}

    # ---- what the model sees ---------------------------------------------------------------
    def feature_lens(self, image_id: str, target_class: int, model_ids, eps: float | None, steps: int,
                     norm: str) -> dict:
        """Large-budget targeted PGD toward target_class on each model (backend.explain.lens):
        {mid: {"pixels": float32 (S,S,3) in [0,1], "delta": float32 (S,S,3), "target_prob": float,
        "pred": int, "path": float32 (steps+1,) the target probability after 0..steps steps}}.
        norm "linf" (eps in [1/255, 32/255]) or "l2" (eps in [0.1, 20], the L2 size of the change);
        eps None: lens.LENS_DEFAULTS for the norm; steps 1..200."""
        ids = self.models.resolve(model_ids)
        check_int("target_class", target_class, 0, self.engine.num_classes(ids) - 1)
        if norm not in lens.LENS_NORMS:
            raise ValueError(f"norm must be one of {', '.join(lens.LENS_NORMS)}, got {short(norm)}")
        if eps is None:
            eps = lens.LENS_DEFAULTS["eps"][norm]
        lo, hi = lens.LENS_LIMITS["eps" if norm == "linf" else "eps_l2"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not lo - 1e-9 <= eps <= hi + 1e-9:
            scale = " (1/255..32/255)" if norm == "linf" else ""
            raise ValueError(f"eps must be in [{lo:.4f}, {hi:.4f}]{scale} for norm {norm}, got {short(eps)}")
        check_int("steps", steps, *lens.LENS_LIMITS["steps"])
        self.images.get(image_id)

        def key(mid: str) -> tuple:
            return "lens", self.models.weights_key(mid), image_id, target_class, norm, float(eps), steps

        def one(mid: str) -> dict:
            flight.check()  # between models: stop when the client has left
            return self.engine.cached(self.results, key(mid), lambda: self._lens_one(
                mid, self.engine.model_input(mid, image_id)[0], target_class, eps, steps, norm))

        # one image per model: side by side on the CPU (Engine.per_model)
        return self.engine.per_model(ids, one, pending=lambda m: self.results.get(key(m)) is None)

    def _lens_one(self, mid, x, target_class, eps, steps, norm) -> dict:
        model = self.models.model(mid)
        with self.lock, torch.inference_mode(False), torch.enable_grad():
            xa, path = lens.targeted_lens(model, x.to(self.device), target_class, float(eps), steps, norm)
            probs = torch.softmax(model(xa), 1)[0].detach().cpu()
        xa = xa.cpu()[0].numpy()  # (3,H,W)
        return {"pixels": np.ascontiguousarray(xa.transpose(1, 2, 0), dtype=np.float32),
                "delta": np.ascontiguousarray((xa - x[0].numpy()).transpose(1, 2, 0), dtype=np.float32),
                "target_prob": float(probs[target_class]), "pred": int(probs.argmax()),
                "path": np.asarray([p[0] for p in path], dtype=np.float32)}

    def class_visualisation(self, target_class: int, model_ids, steps: int, seed: int, progress=None,
                            should_stop=None) -> dict:
        """Class activation maximisation from seeded noise (backend.explain.lens): {mid: {"pixels": float32
        (S,S,3) in [0,1] at the model's input size, "target_prob": float}}. steps 1..500."""
        ids = self.models.resolve(model_ids)
        check_int("target_class", target_class, 0, self.engine.num_classes(ids) - 1)
        check_int("steps", steps, *lens.LENS_LIMITS["vis_steps"])
        check_int("seed", seed, 0, 2**31 - 1)
        out = {}
        should_stop = _stop_fn(should_stop)
        for k, mid in enumerate(ids):
            if should_stop():
                raise Cancelled("cancelled")
            key = ("classvis", self.models.weights_key(mid), target_class, steps, seed)
            out[mid] = self.engine.cached(self.heavy, key, lambda: self._classvis_one(
                mid, target_class, steps, seed, should_stop))
            if progress is not None:
                progress(k + 1, len(ids))
        return out

    def _classvis_one(self, mid, target_class, steps, seed, should_stop) -> dict:
        model = self.models.model(mid)
        # lens polls should_stop every 10 steps inside the lock: a cancelled visualisation frees the
        # device within 10 steps, and waiting requests get the device every 10 steps
        def poll() -> bool:  # every 10 steps: let other users' requests in, then see if we should stop
            self.lock.yield_to_waiters()
            return should_stop()

        with self.lock, torch.inference_mode(False), torch.enable_grad():
            img, prob = lens.class_visualisation(model, target_class, steps, seed, should_stop=poll)
        pixels = np.ascontiguousarray(img.cpu()[0].numpy().transpose(1, 2, 0), dtype=np.float32)
        return {"pixels": pixels, "target_prob": prob}
