"""The one facade the UI needs: plain data in, plain data (numpy arrays, dicts, ids) out.

Contract: docs/ARCHITECTURE.md and the method docstrings below; backend/transport/client.py mirrors it over
HTTP. Every bad input raises ValueError naming the value; unknown ids raise NotFoundError (a
ValueError). Image ids: "samples:<i>", "test:<i>", "train:<i>", "upload:<hex16>".

Sharing: one Service serves every user (Streamlit sessions, FastAPI worker threads). Models are
loaded lazily once per (id, weights sha, device), frozen, kept in an LRU; the registry re-reads the
cards every few seconds so a model finished by a job appears without a restart. Heavy work takes a
per-device lock (two threads on a 2-core CPU only slow each other down) and its results are cached
in bounded LRUs keyed by (model id + weights sha, image id, normalised parameters); cached arrays
are read-only and cached dicts are copied on the way out, so no caller can corrupt the cache.

Choices the contract leaves open (documented for the app):
- attacks use the image's true label when it has one, else the model's clean prediction;
  "success" is the attack's own criterion, "flipped" means the predicted class changed;
  "clean"/"adv" entries of an attack list the top 5 classes;
- saliency maps explain each input's own predicted class unless a target is given;
- sanity_check: "similarity" is a list, one Spearman correlation per cascade stage (see its docstring);
- times in job dicts are Unix seconds (float).
Additions to the contract (nothing was renamed or removed):
- Service(..., job_data=None, max_tasks=2, threads=None); Service.clear_caches(); Service.close();
- saliency_metrics adds "centered_alignment" and "fractions"; robustness_curve adds "flip_eps";
  sanity_check adds "topk_overlap", "heatmap", "heatmaps_random";
- job config also takes "seed"; keys left out (or None) take the preset's value; presets smoke, short,
  full; job dicts add "device", "pid", "attempts", "exit_code"; job_events items carry "seq";
- a cancelled in-process robustness_curve/embed/class_visualisation raises tasks.TaskCancelled;
- HttpClient raises PermissionError for 401 (token) and RuntimeError for 5xx;
- sharing (backend.service.flight): work runs under the caller's scope; a cancelled scope (a disconnected HTTP
  client, a cancelled task) raises errors.Cancelled at the next batch; background tasks queue for the
  device behind interactive calls; errors.BusyError (not a ValueError) when the device queue is full,
  which HttpClient also raises for a 429 it retried; identical concurrent calls are computed once.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from backend import attacks
from backend.core.checkpoints import default_root
from backend.core.errors import short
from backend.core.uploads import UploadLimits
from backend.explain import embed as embed_mod
from backend.explain import lens
from backend.explain import saliency as saliency_lib
from backend.explain import saliency_metrics as sm
from backend.service import flight
from backend.service import jobs as jobs_mod
from backend.service.analyses import BatchAnalyses
from backend.service.batching import Batcher, batch_window_s
from backend.service.stores import LRU, ImageStore, ModelRegistry, _check_int, _key, copy_result
from backend.service.tasks import TaskRunner

log = logging.getLogger(__name__)


def warm_up_enabled() -> bool:
    """Whether the app and the server warm the service up at start (ROBUSTLENS_WARM_UP=0: no)."""
    return os.environ.get("ROBUSTLENS_WARM_UP", "1") != "0"

# One fair lock per device, shared by all Services (and so by the app's sessions and the server's
# requests): interactive work goes before background batches, sessions take turns (backend.service.flight).
_DEVICE_LOCKS: dict[str, flight.FairLock] = defaultdict(flight.FairLock)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Service(BatchAnalyses):
    """See the module docstring. checkpoint_root: folder of checkpoints (default
    $ROBUSTLENS_CHECKPOINTS or <repo>/checkpoints); data_root: CIFAR-10 root (default
    backend.core.data.resolve_root()); device: "cpu"/"cuda" (default cuda when available);
    jobs_root: where job records live (default <checkpoint_root>/.jobs); job_data: the trainer's
    --data (default $ROBUSTLENS_JOB_DATA, else data_root; "synthetic" for tests); threads: torch CPU
    threads (default $ROBUSTLENS_THREADS, else every core)."""

    MAX_EMBED_N = 2000
    MAX_CURVE_N = {"cpu": 1000, "cuda": 10000}
    MAX_EPS_VALUES = 12

    def __init__(self, checkpoint_root=None, data_root=None, device=None, jobs_root=None, *,
                 job_data: str | None = None, max_tasks: int = 2, threads: int | None = None):
        self.device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {short(device)}")
        if self.device.startswith("cpu"):
            # ROBUSTLENS_THREADS: fewer threads than cores keeps latency steady when the CPU is shared
            # (a training job, other services); oversubscribed OpenMP threads stall each other.
            torch.set_num_threads(int(threads or os.environ.get("ROBUSTLENS_THREADS") or _cores()))
        self.root = Path(checkpoint_root) if checkpoint_root else default_root()
        self.data_root = data_root
        self.models = ModelRegistry(self.root, self.device)
        self.images = ImageStore(data_root)
        self.lock = _DEVICE_LOCKS[self.device]
        self.tasks = TaskRunner(max_running=max_tasks)
        # ROBUSTLENS_JOB_DATA lets a deployment (or the app's tests: "synthetic") choose the trainer's data
        # without code: make_client() builds the Service with no arguments.
        if job_data is None:
            job_data = os.environ.get("ROBUSTLENS_JOB_DATA") or None
        self._jobs_root, self._job_data = jobs_root, job_data if job_data is not None else data_root
        self._jobs = None
        self._probs = LRU(1024)        # (weights, image) -> probs
        self._crafted = LRU(256)       # (weights, image, spec, target) -> adversarial image
        self._results = LRU(256)       # attack / explain / metrics per model
        self._heavy = LRU(16)          # embed / curves / class visualisations
        self._embedders = embed_mod.EmbedderCache()
        # Identical concurrent requests are computed once (ROBUSTLENS_COALESCE=0: every time), and on
        # a GPU one-image forwards of different users within a short window share one batch.
        self._flight = flight.SingleFlight(enabled=flight.coalescing_enabled())
        window = batch_window_s(self.device)
        self._batcher = Batcher(self._forward_batch, window_s=window)
        self._attack_batcher = Batcher(self._attack_batch, window_s=window)

    def warm_up(self, background: bool = True):
        """Pay first-use costs before a user waits for them: UMAP's numba JIT (10-25 s on a CPU) and
        the refit of every installed model's stored reference map, which the embedding explorer
        needs to place adversarial points in that map. background=True runs it in a daemon thread
        and returns the thread (it holds no device lock, so requests are served meanwhile); False
        runs it here and returns None. Failures are logged, never raised: it only saves time."""
        def work():
            try:
                embed_mod.warm_up()
                for card in self.models.cards():
                    ref = embed_mod.load_reference(self.root / card["id"])
                    if ref is not None:
                        self._embedders.get(ref)
            except Exception:
                log.warning("warm-up failed", exc_info=True)

        if not background:
            work()
            return None
        t = threading.Thread(target=work, name="robustlens-warm-up", daemon=True)
        t.start()
        return t

    def clear_caches(self) -> None:
        """Forget every cached result (benchmarks measure cold calls; models stay loaded)."""
        for cache in (self._probs, self._crafted, self._results, self._heavy):
            cache.clear()

    def close(self) -> None:
        self.tasks.shutdown()
        if self._jobs is not None:
            self._jobs.close()

    # ---- models and images -----------------------------------------------------------------
    def list_models(self) -> list[dict]:
        """Every model's card (rsupcon first), without loading weights."""
        return [copy.deepcopy(c) for c in self.models.cards()]  # callers may edit them; the registry's stay

    def model_card(self, model_id: str) -> dict:
        return copy.deepcopy(self.models.card(model_id))

    def image_sources(self) -> dict:
        """{"samples"|"test"|"train": {"available": bool, "count": int, "message": str}}."""
        return self.images.sources()

    def classes(self) -> list[str]:
        return self.images.classes

    def list_images(self, source: str = "samples", class_name: str | None = None, offset: int = 0,
                    limit: int = 48) -> dict:
        """{"total": int, "items": [{"image_id", "label", "class_name"}]} (limit 1..500)."""
        return self.images.list(source, class_name, offset, limit)

    def get_image(self, image_id: str) -> dict:
        """{"image_id", "label": int|None, "class_name": str|None, "pixels": uint8 (32,32,3)}."""
        return self.images.get(image_id)

    def random_image(self, source: str = "samples", class_name: str | None = None,
                     seed: int | None = None) -> dict:
        return self.images.random(source, class_name, seed)

    def upload_image(self, data: bytes) -> dict:
        """Decode an uploaded file to 32x32 RGB (UploadError, a ValueError, when unusable)."""
        return self.images.upload(data)

    # ---- helpers ---------------------------------------------------------------------------
    def _class_names(self, model_id: str) -> list[str]:
        return list(self.models.card(model_id)["classes"])

    def _num_classes(self, model_ids) -> int:
        return min(int(self.models.card(m)["num_classes"]) for m in model_ids)

    def _prob_entry(self, probs: np.ndarray, model_id: str, topk: int) -> dict:
        names = self._class_names(model_id)
        order = np.argsort(-probs, kind="stable")[:topk]
        return {"probs": probs, "pred": int(order[0]),
                "top": [{"index": int(i), "class_name": names[i], "prob": float(probs[i])} for i in order]}

    def _logits(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        model = self.models.model(model_id)
        with self.lock, torch.inference_mode():
            return model(x.to(self.device)).float().cpu()

    def _cached(self, cache: LRU, key, compute):
        """cache[key], else compute() once for every concurrent caller with this key (single-flight),
        stored in cache. Each caller gets its own copy of the structure (arrays are read-only)."""
        hit = cache.get(key)
        if hit is not None:
            return hit

        def lead():
            again = cache.get(key)  # finished by another caller between our miss and now
            return again if again is not None else cache.put(key, compute())

        return copy_result(self._flight.do((id(cache), key), lead))

    def _forward_batch(self, model_id: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits for several (1,3,H,W) images of different callers in one forward (the Batcher's call)."""
        logits = self._logits(model_id, torch.cat(xs))
        return [logits[i:i + 1] for i in range(len(xs))]

    def _clean_probs(self, model_id: str, image_id: str) -> np.ndarray:
        key = (self.models.weights_key(model_id), image_id)

        def compute():
            x, _ = self.images.tensor(image_id)
            logits = self._batcher.submit(model_id, x) if self._batcher.enabled else self._logits(model_id, x)
            return torch.softmax(logits, 1)[0].numpy().astype(np.float32)

        return self._cached(self._probs, key, compute)

    def _spec(self, spec) -> attacks.AttackSpec:
        if isinstance(spec, attacks.AttackSpec):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"spec must be a dict of AttackSpec fields, got {type(spec).__name__}")
        return attacks.AttackSpec.from_dict(spec)  # validates; run_attack checks target_class < C

    def _target(self, target, model_ids) -> int | None:
        if target is None:
            return None
        return _check_int("target", target, 0, self._num_classes(model_ids) - 1)

    def _adversarial(self, model_id: str, image_id: str, spec: attacks.AttackSpec,
                     target: int | None) -> dict:
        """The attack crafted on model_id (cached): {"x_adv": (1,3,H,W) float32, "probs_adv": (C,)
        float32 (model_id's prediction on it), "success", "linf", "l2", "iterations", "y": the label
        attacked}."""
        key = (self.models.weights_key(model_id), image_id, _key(spec.to_dict()), target)
        return self._cached(self._crafted, key, lambda: self._craft(model_id, image_id, spec, target))

    def _craft(self, model_id: str, image_id: str, spec: attacks.AttackSpec, target: int | None) -> dict:
        x, label = self.images.tensor(image_id)
        y = label if label is not None else int(self._clean_probs(model_id, image_id).argmax())
        item = (x, y, target)
        if self._attack_batcher.enabled:  # GPU: other users' one-image attacks with this spec join in
            r = self._attack_batcher.submit((model_id, spec, target is None), item)
        else:
            r = self._attack_batch((model_id, spec, target is None), [item])[0]
        # Only the adversarial logits are reused: clean probabilities always come from _clean_probs,
        # so a prediction never depends on whether an attack ran first (the attack's forward pass
        # uses another memory layout, which can differ in the last bits).
        return {**r, "y": int(y)}

    def _attack_batch(self, group: tuple, items: list) -> list[dict]:
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

    def _heatmaps(self, model_id: str, x: np.ndarray, targets: list[int], method: str,
                  params: saliency_lib.SaliencyParams = saliency_lib.SaliencyParams()) -> tuple[np.ndarray, np.ndarray]:
        """(attributions (N,3,H,W), heatmaps (N,H,W)) float32 for images x (N,3,H,W)."""
        model = self.models.model(model_id)
        with self.lock:
            attr = saliency_lib.attribute(model, torch.from_numpy(np.array(x)).to(self.device),
                                      torch.tensor(targets, device=self.device), method, params)
        attr = attr.cpu().numpy().astype(np.float32)
        return attr, saliency_lib.to_heatmap(attr, method)

    # ---- analysis --------------------------------------------------------------------------
    def predict(self, image_id: str, model_ids=None, topk: int = 5) -> dict:
        """{"image_id", "results": {model_id: {"probs": float32 (C,), "pred": int, "top": [{"index",
        "class_name", "prob"}] (topk best)}}}; topk in 1..C."""
        ids = self.models.resolve(model_ids)
        _check_int("topk", topk, 1, self._num_classes(ids))
        self.images.get(image_id)
        return {"image_id": image_id,
                "results": {m: self._prob_entry(self._clean_probs(m, image_id), m, topk) for m in ids}}

    def attack(self, image_id: str, spec: dict, model_ids=None, mode: str = "whitebox",
               source_model: str | None = None, saliency: str | None = None, target: int | None = None) -> dict:
        """Attack one image on each model (whitebox) or craft on source_model and evaluate the same
        adversarial image on every model (transfer). See the contract for the result shape:
        results[mid] = {"crafted_on", "adv_pixels" (32,32,3) float32 in [0,1], "delta" (32,32,3),
        "clean"/"adv": {probs, pred, top}, "flipped", "success", "linf", "l2", "iterations",
        "saliency_clean"/"saliency_adv": (32,32) float32 in [0,1] or None}."""
        ids = self.models.resolve(model_ids)
        s = self._spec(spec)
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
        tgt = self._target(target, ids + ([source_model] if source_model else []))
        self.images.get(image_id)
        results = {m: self._attack_one(m, image_id, s, mode, source_model, saliency, tgt) for m in ids}
        return {"image_id": image_id, "spec": s.to_dict(), "mode": mode, "source_model": source_model,
                "results": results}

    def _attack_one(self, mid, image_id, s, mode, source_model, sal_method, target) -> dict:
        crafted_on = source_model if mode == "transfer" else mid
        key = ("attack", self.models.weights_key(mid), image_id, _key(s.to_dict()),
               self.models.weights_key(crafted_on), sal_method, target)
        flight.check()  # between models: an attack over many models stops when its client leaves
        return self._cached(self._results, key, lambda: self._attack_compute(
            mid, image_id, s, crafted_on, sal_method, target))

    def _attack_compute(self, mid, image_id, s, crafted_on, sal_method, target) -> dict:
        adv = self._adversarial(crafted_on, image_id, s, target)
        x, _ = self.images.tensor(image_id)
        clean = self._clean_probs(mid, image_id)
        if crafted_on == mid:
            adv_probs = adv["probs_adv"]
        else:
            adv_probs = torch.softmax(self._logits(mid, torch.from_numpy(np.array(adv["x_adv"]))), 1)[0].numpy()
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
               "clean": self._prob_entry(clean, mid, 5), "adv": self._prob_entry(adv_probs, mid, 5),
               "flipped": pc != pa, "success": bool(success), "linf": adv["linf"], "l2": adv["l2"],
               "iterations": adv["iterations"], "saliency_clean": None, "saliency_adv": None}
        if sal_method is not None:
            both = np.concatenate([x.numpy(), adv["x_adv"]])  # (2,3,H,W): one attribution pass
            _, heat = self._heatmaps(mid, both, [pc, pa], sal_method)
            out["saliency_clean"], out["saliency_adv"] = heat[0], heat[1]
        return out

    def explain(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                target: int | None = None, spec: dict | None = None, params: dict | None = None) -> dict:
        """{"method", "target": int, "heatmap": float32 (32,32) in [0,1], "attribution": float32
        (3,32,32), "adversarial": bool}. target defaults to the predicted class of the explained
        image; spec given -> explain the adversarial image crafted on model_id with that spec.
        params: backend.explain.saliency.SaliencyParams fields (ig_steps, smoothgrad_samples, ...)."""
        saliency_lib.check_method(method)
        self.models.card(model_id)
        sp = _saliency_params(params)
        s = None if spec is None else self._spec(spec)
        tgt = self._target(target, [model_id])
        key = ("explain", self.models.weights_key(model_id), image_id, method, tgt,
               None if s is None else _key(s.to_dict()), _key(sp.__dict__))
        return self._cached(self._results, key, lambda: self._explain_compute(image_id, model_id, method, tgt, s, sp))

    def _explain_compute(self, image_id, model_id, method, tgt, s, sp) -> dict:
        if s is None:
            x = self.images.tensor(image_id)[0].numpy()
            pred = int(self._clean_probs(model_id, image_id).argmax())
        else:
            adv = self._adversarial(model_id, image_id, s, None)
            x, pred = np.array(adv["x_adv"]), int(adv["probs_adv"].argmax())
        tgt = pred if tgt is None else tgt
        attr, heat = self._heatmaps(model_id, x, [tgt], method, sp)
        return {"method": method, "target": tgt, "heatmap": heat[0], "attribution": attr[0],
                "adversarial": s is not None}

    def saliency_metrics(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                         spec: dict | None = None) -> dict:
        """Measures of the map for the predicted class: {"alignment", "centered_alignment",
        "deletion_auc", "insertion_auc" (floats), "deletion_curve", "insertion_curve" (S+1,)
        float32, "fractions" (S+1,)}, plus, with spec, "drift": {"spearman", "topk_overlap"}
        between the clean map and the adversarial image's map."""
        ex = self.explain(image_id, model_id, method)
        key = ("metrics", self.models.weights_key(model_id), image_id, method,
               None if spec is None else _key(self._spec(spec).to_dict()))
        return self._cached(self._results, key, lambda: self._metrics_compute(image_id, model_id, method, spec, ex))

    def _metrics_compute(self, image_id, model_id, method, spec, ex) -> dict:
        flight.check()
        model = self.models.model(model_id)
        x = self.images.tensor(image_id)[0].to(self.device)
        t = torch.tensor([ex["target"]], device=self.device)
        with self.lock:
            al = sm.alignment_measures(model, x, t)
            di = sm.deletion_insertion(model, x, t, np.array(ex["heatmap"])[None], steps=32)
        out = {"alignment": float(al["alignment"][0]), "centered_alignment": float(al["centered_alignment"][0]),
               "deletion_auc": float(di["deletion_auc"][0]), "insertion_auc": float(di["insertion_auc"][0]),
               "deletion_curve": di["deletion_curve"][0], "insertion_curve": di["insertion_curve"][0],
               "fractions": di["fractions"]}
        if spec is not None:
            flight.check()
            adv = self.explain(image_id, model_id, method, spec=spec)
            d = sm.drift(np.array(ex["heatmap"])[None], np.array(adv["heatmap"])[None])
            out["drift"] = {"spearman": float(d["spearman"][0]), "topk_overlap": float(d["topk_overlap"][0])}
        return out

    def sanity_check(self, image_id: str, model_id: str, method: str = "gradient") -> dict:
        """Cascading parameter randomisation (Adebayo et al. 2018), top layer first:
        {"stages": [str] (S,), "similarity": [float] (S,) Spearman rank correlation between the
        original and each randomised map (low = the method depends on what the model learned),
        "topk_overlap": [float] (S,), "heatmap": (32,32) original map, "heatmap_random": (32,32)
        the fully randomised model's map, "heatmaps_random": (S,32,32)}."""
        saliency_lib.check_method(method)
        key = ("sanity", self.models.weights_key(model_id), image_id, method)
        return self._cached(self._results, key, lambda: self._sanity_compute(image_id, model_id, method))

    def _sanity_compute(self, image_id, model_id, method) -> dict:
        model = self.models.model(model_id)
        x = self.images.tensor(image_id)[0].to(self.device)
        t = torch.tensor([int(self._clean_probs(model_id, image_id).argmax())], device=self.device)
        with self.lock:
            r = sm.randomisation_check(model, x, t, method, layers="cascade")
        maps = np.asarray(r["randomised_heatmaps"])[:, 0]  # (S,H,W)
        return {"stages": list(r["stages"]), "similarity": [float(v) for v in r["spearman"][:, 0]],
                "topk_overlap": [float(v) for v in r["topk_overlap"][:, 0]],
                "heatmap": np.asarray(r["original_heatmap"])[0], "heatmap_random": maps[-1],
                "heatmaps_random": maps}

    # ---- background tasks ------------------------------------------------------------------
    TASK_KINDS = ("robustness_curve", "embed", "class_visualisation")

    def start_task(self, kind: str, params: dict) -> str:
        """Run robustness_curve / embed / class_visualisation in the background with `params` (that
        method's keyword arguments); returns a task id. Parameters are validated now (ValueError);
        at most `max_tasks` tasks run at once (ValueError beyond)."""
        if kind not in self.TASK_KINDS:
            raise ValueError(f"unknown task kind {short(kind)}; known: {', '.join(self.TASK_KINDS)}")
        if not isinstance(params, dict):
            raise ValueError(f"task params must be a dict, got {type(params).__name__}")
        fn = getattr(self, kind)
        allowed = set(inspect.signature(fn).parameters) - {"progress", "should_stop"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"unknown {kind} params {unknown}; known: {sorted(allowed)}")
        kw = dict(params)  # the caller may reuse its dict; the task keeps its own
        self._validate_task(kind, kw)
        return self.tasks.start(kind, kw, lambda progress, should_stop: fn(
            **kw, progress=progress, should_stop=should_stop))

    def _validate_task(self, kind: str, p: dict) -> None:
        """The cheap checks of a task's parameters, so a bad request fails at once, not in the thread."""
        if kind == "robustness_curve":
            a = self._curve_args(p.get("model_ids"), p.get("method", "pgd"), p.get("eps_list"), p.get("n", 100),
                                 p.get("steps", 10), p.get("source", "test"), p.get("seed", 0))
            self._dataset_check(a["source"], a["n"])
        elif kind == "embed":
            if p.get("method", "umap") not in embed_mod.EMBED_METHODS:
                raise ValueError(f"unknown embedding method {short(p.get('method'))}")
            self.models.card(p.get("model_id"))
            _check_int("n", p.get("n", 500), 5, self.MAX_EMBED_N)
            if p.get("spec") is not None:
                self._spec(p["spec"])
            self._dataset_check(p.get("source", "test"), p.get("n", 500))
        else:
            ids = self.models.resolve(p.get("model_ids"))
            _check_int("target_class", p.get("target_class"), 0, self._num_classes(ids) - 1)
            _check_int("steps", p.get("steps", 100), *lens.LENS_LIMITS["vis_steps"])

    def _dataset_check(self, source: str, n: int) -> None:
        if n > len(self.images.split(source)):
            raise ValueError(f"n={n} exceeds the {len(self.images.split(source))} images of source {short(source)}")

    def task_status(self, task_id: str) -> dict:
        """{"task_id", "kind", "state": running|done|failed|cancelled, "done", "total", "result", "error"}."""
        return self.tasks.status(task_id)

    def cancel_task(self, task_id: str) -> dict:
        """Ask a task to stop (it notices between batches); waits up to 2 s and returns its status."""
        return self.tasks.cancel(task_id, wait_s=2.0)

    # ---- training jobs (backend/service/jobs.py) ---------------------------------------------------
    @property
    def jobs(self) -> jobs_mod.JobManager:
        if self._jobs is None:
            self._jobs = jobs_mod.JobManager(self.root, data=self._job_data, device=self.device,
                                             jobs_dir=self._jobs_root)
        return self._jobs

    def start_job(self, config: dict) -> dict:
        """Queue a training job (keys: method, preset, width, subset, epochs, attack_steps,
        batch_size, name, seed; see backend.service.jobs.LIMITS). Returns the job dict."""
        return self.jobs.start_job(config)

    def list_jobs(self) -> list[dict]:
        return self.jobs.list_jobs()

    def job_status(self, job_id: str) -> dict:
        return self.jobs.job_status(job_id)

    def job_events(self, job_id: str, since: int = 0) -> list[dict]:
        return self.jobs.job_events(job_id, since)

    def cancel_job(self, job_id: str) -> dict:
        return self.jobs.cancel_job(job_id)

    def resume_job(self, job_id: str) -> dict:
        return self.jobs.resume_job(job_id)

    def job_log(self, job_id: str, tail: int = 100) -> str:
        return self.jobs.job_log(job_id, tail)

    # ---- limits ----------------------------------------------------------------------------
    def limits(self) -> dict:
        """Every bound the service enforces, for the UI's widgets."""
        from backend.train import config as train_config  # torch-free registry of presets

        up = UploadLimits() if self.images.upload_limits is None else self.images.upload_limits
        # attacks and saliency methods: their registries (labels, parameters with range/default/step, norms)
        return {"attack": attacks.describe(),
                "embed": {"max_n": self.MAX_EMBED_N, "min_n_umap": 5, "methods": list(embed_mod.EMBED_METHODS)},
                "curve": {"max_n": self.MAX_CURVE_N.get(self.device.split(":")[0], 1000),
                          "max_eps_values": self.MAX_EPS_VALUES,
                          "methods": [n for n in attacks.registry.names() if attacks.registry.get(n).curve],
                          "max_steps": attacks.MAX_STEPS},
                "lens": dict(lens.LENS_LIMITS),
                "saliency": saliency_lib.describe(),
                "topk": [1, min((int(c["num_classes"]) for c in self.models.cards()), default=10)],
                "images": {"list_limit": [1, 500], "sources": ["samples", "test", "train"]},
                "upload": {"max_bytes": up.max_bytes, "max_pixels": up.max_pixels, "min_side": up.min_side},
                # the training registry as the Train page shows it (method titles, preset labels, uses and
                # values: backend.train.config.describe), and the data sets a job can train on here
                "jobs": {**jobs_mod.LIMITS, **train_config.describe(),
                         "datasets": jobs_mod.trainable_datasets(self._job_data),
                         "synthetic_data": self._job_data == "synthetic"},  # else jobs need the train split
                "tasks": {"max_running": self.tasks.max_running, "kinds": list(self.TASK_KINDS)},
                "device": self.device}



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


def _first(v):
    """The first element of a tensor/array/list result, or the value itself for a scalar."""
    if isinstance(v, torch.Tensor):
        return v.reshape(-1)[0].item()
    if isinstance(v, (np.ndarray, list, tuple)):
        return np.asarray(v).reshape(-1)[0]
    return v
