"""The Service's one-image analyses: predict, attack (white-box or transfer), explain (saliency maps),
saliency metrics and the randomisation sanity check.

An object the Service holds and delegates to; everything it needs comes from its Engine (models,
images, device lock, caches, the cached primitives). Results are cached per (model weights, image,
normalised parameters); see backend.service.facade for the contract.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.core.errors import short
from backend.core.validation import check_int
from backend.explain import saliency as saliency_lib
from backend.explain import saliency_metrics as sm
from backend.service import flight
from backend.service.engine import Engine
from backend.service.stores import cache_key


class ImageAnalyses:
    """predict, attack, explain, saliency_metrics, sanity_check over one Engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.models, self.images, self.lock, self.device = engine.models, engine.images, engine.lock, engine.device
        self.results = engine.caches.results

    def predict(self, image_id: str, model_ids, topk: int) -> dict:
        """{"image_id", "results": {model_id: {"probs": float32 (C,), "pred": int, "top": [{"index",
        "class_name", "prob"}] (topk best)}}}; topk in 1..C."""
        ids = self.models.resolve(model_ids)
        check_int("topk", topk, 1, self.engine.num_classes(ids))
        self.images.get(image_id)
        return {"image_id": image_id,
                "results": {m: self.engine.prob_entry(self.engine.clean_probs(m, image_id), m, topk) for m in ids}}

    def attack(self, image_id: str, spec: dict, model_ids, mode: str, source_model: str | None,
               saliency: str | None, target: int | None) -> dict:
        """Attack one image on each model (whitebox) or craft on source_model and evaluate the same
        adversarial image on every model (transfer). See the contract for the result shape:
        results[mid] = {"crafted_on", "adv_pixels" (S,S,3) float32 in [0,1], "delta" (S,S,3),
        "clean"/"adv": {probs, pred, top}, "flipped", "success", "linf", "l2", "iterations",
        "saliency_clean"/"saliency_adv": (S',S') float32 in [0,1] or None}: S the input size of the
        model the attack was crafted on, S' that of mid (the same but in a transfer between sizes)."""
        ids = self.models.resolve(model_ids)
        s = self.engine.spec(spec)
        if mode not in ("whitebox", "transfer"):
            raise ValueError(f"mode must be 'whitebox' or 'transfer', got {short(mode)}")
        if mode == "transfer":
            if source_model is None:
                raise ValueError("transfer mode needs source_model (the model the attack is crafted on)")
            self.models.card(source_model)
        elif source_model is not None:
            raise ValueError("source_model is only used in transfer mode")
        if saliency is not None:
            saliency_lib.check_method(saliency)
        tgt = self.engine.target(target, ids + ([source_model] if source_model else []))
        self.images.get(image_id)

        def one(m: str) -> dict:
            return self._attack_one(m, image_id, s, mode, source_model, saliency, tgt)

        if mode == "whitebox":  # each model attacks itself: side by side on the CPU (Engine.per_model)
            results = self.engine.per_model(ids, one, pending=lambda m: self.results.get(
                self._attack_key(m, image_id, s, m, saliency, tgt)) is None)
        else:  # one crafted image for all: the models wait for the source's attack, so one after another
            results = {m: one(m) for m in ids}
        return {"image_id": image_id, "spec": s.to_dict(), "mode": mode, "source_model": source_model,
                "results": results}

    def _attack_one(self, mid, image_id, s, mode, source_model, sal_method, target) -> dict:
        crafted_on = source_model if mode == "transfer" else mid
        key = self._attack_key(mid, image_id, s, crafted_on, sal_method, target)
        flight.check()  # between models: an attack over many models stops when its client leaves
        return self.engine.cached(self.results, key, lambda: self._attack_compute(
            mid, image_id, s, crafted_on, sal_method, target))

    def _attack_key(self, mid, image_id, s, crafted_on, sal_method, target) -> tuple:
        return ("attack", self.models.weights_key(mid), image_id, cache_key(s.to_dict()),
                self.models.weights_key(crafted_on), sal_method, target)

    def _attack_compute(self, mid, image_id, s, crafted_on, sal_method, target) -> dict:
        adv = self.engine.adversarial(crafted_on, image_id, s, target)
        x, _ = self.engine.model_input(crafted_on, image_id)
        clean = self.engine.clean_probs(mid, image_id)
        # what mid sees of the adversarial image (transfer to a model of another input size: resized)
        x_adv_mid = self.engine.resize(torch.from_numpy(np.array(adv["x_adv"])), self.engine.input_size(mid))
        if crafted_on == mid:
            adv_probs = adv["probs_adv"]
        else:
            adv_probs = torch.softmax(self.engine.logits(mid, x_adv_mid), 1)[0].numpy()
        adv_probs = adv_probs.astype(np.float32)
        pc, pa = int(clean.argmax()), int(adv_probs.argmax())
        if crafted_on == mid:
            success = adv["success"]
        else:  # the source's criterion, applied to this model's prediction
            t = target if target is not None else (s.target_class if s.targeted else None)
            success = pa == t if t is not None else pa != adv["y"]
        x_adv = adv["x_adv"][0]  # (3,H,W)
        out = {"crafted_on": crafted_on,
               "adv_pixels": np.ascontiguousarray(x_adv.transpose(1, 2, 0), dtype=np.float32),
               "delta": np.ascontiguousarray((x_adv - x[0].numpy()).transpose(1, 2, 0), dtype=np.float32),
               "clean": self.engine.prob_entry(clean, mid, 5), "adv": self.engine.prob_entry(adv_probs, mid, 5),
               "flipped": pc != pa, "success": bool(success), "linf": adv["linf"], "l2": adv["l2"],
               "iterations": adv["iterations"], "saliency_clean": None, "saliency_adv": None}
        if sal_method is not None:
            x_mid = self.engine.model_input(mid, image_id)[0]
            both = np.concatenate([x_mid.numpy(), x_adv_mid.numpy()])  # (2,3,H,W): one attribution pass
            _, heat = self.engine.heatmaps(mid, both, [pc, pa], sal_method)
            out["saliency_clean"], out["saliency_adv"] = heat[0], heat[1]
        return out

    def explain(self, image_id: str, model_id: str, method: str, target: int | None, spec: dict | None,
                params: dict | None) -> dict:
        """{"method", "target": int, "heatmap": float32 (H,W) in [0,1], "attribution": float32
        (3,H,W), "adversarial": bool} at the model's input size. target defaults to the predicted class of the explained
        image; spec given -> explain the adversarial image crafted on model_id with that spec.
        params: backend.explain.saliency.SaliencyParams fields (ig_steps, smoothgrad_samples, ...)."""
        saliency_lib.check_method(method)
        self.models.card(model_id)
        sp = _saliency_params(params)
        s = None if spec is None else self.engine.spec(spec)
        tgt = self.engine.target(target, [model_id])
        clean_key = self._explain_key(image_id, model_id, method, tgt, None, sp)
        key = clean_key if s is None else self._explain_key(image_id, model_id, method, tgt, s, sp)
        return self.engine.cached(self.results, key,
                                  lambda: self._explain_compute(image_id, model_id, method, tgt, s, sp, clean_key))

    def _explain_key(self, image_id, model_id, method, tgt, s, sp) -> tuple:
        return ("explain", self.models.weights_key(model_id), image_id, method, tgt,
                None if s is None else cache_key(s.to_dict()), cache_key(sp.__dict__))

    def _explain_compute(self, image_id, model_id, method, tgt, s, sp, clean_key) -> dict:
        """The clean image's map, or the adversarial one's; an adversarial map whose clean twin is not
        cached yet computes both in one attribution pass of two images (a page shows them as a pair;
        at 224 px one pass of two is faster than two passes) and caches the clean one too."""
        xs = [self.engine.model_input(model_id, image_id)[0].numpy()]
        preds, advs = [int(self.engine.clean_probs(model_id, image_id).argmax())], [False]
        if s is not None:
            adv = self.engine.adversarial(model_id, image_id, s, None)
            if self.results.get(clean_key) is not None:  # the clean map is cached: the adversarial one alone
                xs, preds, advs = [], [], []
            xs.append(np.array(adv["x_adv"]))
            preds.append(int(adv["probs_adv"].argmax()))
            advs.append(True)
        targets = [p if tgt is None else tgt for p in preds]
        attr, heat = self.engine.heatmaps(model_id, np.concatenate(xs), targets, method, sp)
        out = [{"method": method, "target": t, "heatmap": heat[i], "attribution": attr[i], "adversarial": a}
               for i, (t, a) in enumerate(zip(targets, advs))]
        if len(out) == 2:
            self.results.put(clean_key, out[0])
        return out[-1]

    def saliency_maps(self, image_id: str, model_ids, method: str, spec: dict | None, scale: str) -> dict:
        """See backend.service.api.Api.saliency_maps. Each map is explain's (cached; an adversarial
        map computes its clean twin in the same pass), reduced here on the requested scale."""
        if scale not in ("map", "shared"):
            raise ValueError(f"scale must be 'map' or 'shared', got {short(scale)}")
        saliency_lib.check_method(method)
        ids = self.models.resolve(model_ids)
        if spec is not None:
            self.engine.spec(spec)
        self.images.get(image_id)

        def pair(m: str) -> tuple:
            adv = None if spec is None else self.explain(image_id, m, method, None, spec, None)  # first: both
            return self.explain(image_id, m, method, None, None, None), adv

        sp, specs = _saliency_params(None), [None] if spec is None else [None, self.engine.spec(spec)]

        def pending(m: str) -> bool:  # a map (or the attack under it) to compute: worth a thread
            return any(self.results.get(self._explain_key(image_id, m, method, None, k, sp)) is None for k in specs)

        pairs = self.engine.per_model(ids, pair, pending)
        tops = {m: saliency_lib.display_map(np.stack([e["attribution"] for e in pair if e is not None]), method)[1]
                for m, pair in pairs.items()}
        shared = max((float(t.max()) for t in tops.values()), default=0.0) if scale == "shared" else None
        results = {}
        for m, (clean, adv) in pairs.items():
            if shared is None:
                heat = [e["heatmap"] for e in (clean, adv) if e is not None]
            else:
                heat = list(saliency_lib.to_heatmap(
                    np.stack([e["attribution"] for e in (clean, adv) if e is not None]), method, top=shared))
            results[m] = {"clean": heat[0], "adv": heat[1] if adv is not None else None,
                          "target_clean": clean["target"], "target_adv": None if adv is None else adv["target"],
                          "peak": 1.0 if shared is None else (float(tops[m].max()) / shared if shared > 0 else 0.0)}
        return {"method": method, "scale": scale, "top": shared, "results": results}

    def saliency_metrics(self, image_id: str, model_id: str, method: str, spec: dict | None) -> dict:
        """Measures of the map for the predicted class: {"alignment", "centered_alignment",
        "deletion_auc", "insertion_auc" (floats), "deletion_curve", "insertion_curve" (S+1,)
        float32, "fractions" (S+1,)}, plus, with spec, "drift": {"spearman", "topk_overlap"}
        between the clean map and the adversarial image's map."""
        adv = None if spec is None else self.explain(image_id, model_id, method, None, spec, None)  # both, one pass
        ex = self.explain(image_id, model_id, method, None, None, None)
        key = ("metrics", self.models.weights_key(model_id), image_id, method,
               None if spec is None else cache_key(self.engine.spec(spec).to_dict()))
        return self.engine.cached(self.results, key,
                                  lambda: self._metrics_compute(image_id, model_id, ex, adv))

    def _metrics_compute(self, image_id, model_id, ex, adv) -> dict:
        flight.check()
        model = self.models.model(model_id)
        x = self.engine.model_input(model_id, image_id)[0].to(self.device)
        t = torch.tensor([ex["target"]], device=self.device)
        with self.lock:
            al = sm.alignment_measures(model, x, t)
            di = sm.deletion_insertion(model, x, t, np.array(ex["heatmap"])[None], steps=32)
        out = {"alignment": float(al["alignment"][0]), "centered_alignment": float(al["centered_alignment"][0]),
               "deletion_auc": float(di["deletion_auc"][0]), "insertion_auc": float(di["insertion_auc"][0]),
               "deletion_curve": di["deletion_curve"][0], "insertion_curve": di["insertion_curve"][0],
               "fractions": di["fractions"]}
        if adv is not None:
            d = sm.drift(np.array(ex["heatmap"])[None], np.array(adv["heatmap"])[None])
            out["drift"] = {"spearman": float(d["spearman"][0]), "topk_overlap": float(d["topk_overlap"][0])}
        return out

    def sanity_check(self, image_id: str, model_id: str, method: str) -> dict:
        """Cascading parameter randomisation (Adebayo et al. 2018), top layer first:
        {"stages": [str] (K,), "similarity": [float] (K,) Spearman rank correlation between the
        original and each randomised map (low = the method depends on what the model learned),
        "topk_overlap": [float] (K,), "heatmap": (H,W) original map, "heatmap_random": (H,W)
        the fully randomised model's map, "heatmaps_random": (K,H,W)}, H x W the model's input size."""
        saliency_lib.check_method(method)
        key = ("sanity", self.models.weights_key(model_id), image_id, method)
        return self.engine.cached(self.results, key, lambda: self._sanity_compute(image_id, model_id, method))

    def _sanity_compute(self, image_id, model_id, method) -> dict:
        model = self.models.model(model_id)
        x = self.engine.model_input(model_id, image_id)[0].to(self.device)
        t = torch.tensor([int(self.engine.clean_probs(model_id, image_id).argmax())], device=self.device)
        with self.lock:
            r = sm.randomisation_check(model, x, t, method, layers="cascade")
        maps = np.asarray(r["randomised_heatmaps"])[:, 0]  # (S,H,W)
        return {"stages": list(r["stages"]), "similarity": [float(v) for v in r["spearman"][:, 0]],
                "topk_overlap": [float(v) for v in r["topk_overlap"][:, 0]],
                "heatmap": np.asarray(r["original_heatmap"])[0], "heatmap_random": maps[-1],
                "heatmaps_random": maps}


def _saliency_params(params) -> saliency_lib.SaliencyParams:
    if params is None:
        return saliency_lib.SaliencyParams()
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of SaliencyParams fields, got {type(params).__name__}")
    fields = set(saliency_lib.SaliencyParams.__dataclass_fields__)
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown saliency params {unknown}; known: {sorted(fields)}")
    return saliency_lib.SaliencyParams(**params)
