"""The one facade the UI needs: plain data in, plain data (numpy arrays, dicts, ids) out.

Contract: docs/ARCHITECTURE.md and the method docstrings below; backend/transport/client.py mirrors it over
HTTP. Every bad input raises ValueError naming the value; unknown ids raise NotFoundError (a
ValueError). Image ids: "samples:<i>", "test:<i>", "train:<i>", "upload:<hex16>", optionally after the
name of a registered data set, "<dataset>/": "imagenet/samples:3", "cifar100/test:12"; an id that names
none means cifar10, so every id before data sets keeps its meaning.

Any model on any image: an image whose side differs from a model's input size (its card's input_size)
is resized for that model (bilinear, antialiased; backend.service.engine.Engine.model_input), and its
true label is used only when the image is of the model's data set (else the model's clean prediction,
as for uploads). So results come back at the model's input size: probabilities for its classes, the
adversarial image and perturbation at the size of the model the attack was crafted on, saliency maps,
feature-lens images and class visualisations at the explained model's size. Many-image analyses (embed,
robustness_curve) read `source` of the models' data set unless it names one ("imagenet/samples"); a
robustness curve needs images of the models' own data set.

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

Built by composition: an Engine (backend.service.engine: stores, device lock, caches, batching) shared
by ImageAnalyses (backend.service.inspection: one image) and BatchAnalyses (backend.service.analyses:
many images); the Service holds them and delegates. Training jobs: backend.service.jobs.

Additions to the contract (nothing was renamed or removed):
- Service(..., job_data=None, max_tasks=2, threads=None); Service.clear_caches(); Service.close();
- saliency_metrics adds "centered_alignment" and "fractions"; robustness_curve adds "flip_eps";
  sanity_check adds "topk_overlap", "heatmap", "heatmaps_random";
- job config also takes "seed"; keys left out (or None) take the preset's value; presets smoke, short,
  full; job dicts add "device", "pid", "attempts", "exit_code"; job_events items carry "seq";
- a cancelled in-process robustness_curve/embed/class_visualisation/corruption_curve raises errors.Cancelled;
- corruption_view (one image under the 15 corruptions x 5 severities: each model's prediction and
  saliency) and corruption_curve (accuracy against severity; also a task kind); limits()["corruptions"];
- HttpClient raises PermissionError for 401 (token) and RuntimeError for 5xx;
- sharing (backend.service.flight): work runs under the caller's scope; a cancelled scope (a disconnected HTTP
  client, a cancelled task) raises errors.Cancelled at the next batch; background tasks queue for the
  device behind interactive calls; errors.BusyError (not a ValueError) when the device queue is full
  or every task worker is busy (tasks.TasksBusy), which HttpClient also raises for a 429; identical
  concurrent calls are computed once.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import threading
from collections import defaultdict
from pathlib import Path

import torch

from backend import attacks
from backend.core.checkpoints import default_root
from backend.core.errors import short
from backend.core.runtime import torch_threads
from backend.core.uploads import UploadLimits
from backend.explain import embed as embed_mod
from backend.explain import lens
from backend.explain import saliency as saliency_lib
from backend.service import flight, model_imports
from backend.service import jobs as jobs_mod
from backend.service.analyses import BatchAnalyses
from backend.service.corruption_views import CorruptionAnalyses
from backend.service.corruption_views import describe as describe_corruptions
from backend.service.engine import Caches, Engine
from backend.service.inspection import ImageAnalyses
from backend.service.stores import DEFAULT_DATASET, THUMB_MAX_N, THUMB_SIDES, ImageStore, ModelRegistry
from backend.service.tasks import TaskRunner

log = logging.getLogger(__name__)


def warm_up_enabled() -> bool:
    """Whether the app and the server warm the service up at start (ROBUSTLENS_WARM_UP=0: no)."""
    return os.environ.get("ROBUSTLENS_WARM_UP", "1") != "0"

# One fair lock per device, shared by all Services (and so by the app's sessions and the server's
# requests): interactive work goes before background batches, sessions take turns (backend.service.flight).
_DEVICE_LOCKS: dict[str, flight.FairLock] = defaultdict(flight.FairLock)


class Service:
    """See the module docstring. checkpoint_root: folder of checkpoints (default
    $ROBUSTLENS_CHECKPOINTS or <repo>/checkpoints); data_root: the data root (default
    backend.core.data.resolve_root()): an ImageFolder tree or torchvision root whose test/train splits
    serve the data set it holds (the offline samples need none); device: "cpu"/"cuda" (default cuda when available);
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
            torch.set_num_threads(torch_threads(threads, env="ROBUSTLENS_THREADS"))
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
        self.caches = Caches()
        self.engine = Engine(self.models, self.images, self.lock, self.device, self.caches)
        self.image_analyses = ImageAnalyses(self.engine)
        self.batch_analyses = BatchAnalyses(
            self.engine, self.root, max_embed_n=self.MAX_EMBED_N, max_eps_values=self.MAX_EPS_VALUES,
            max_curve_n=self.MAX_CURVE_N.get(self.device.split(":")[0], 1000))
        self.corruption_analyses = CorruptionAnalyses(
            self.engine, self.batch_analyses, max_curve_n=self.MAX_CURVE_N.get(self.device.split(":")[0], 1000))

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
                        self.caches.embedders.get(ref)
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
        self.caches.clear()

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

    def image_sources(self, dataset: str | None = None) -> dict:
        """{"samples"|"test"|"train": {"available": bool, "count": int, "message": str}} of a data set
        (default cifar10; an unknown name is a ValueError naming the known ones)."""
        return self.images.sources(dataset)

    def classes(self, dataset: str | None = None) -> list[str]:
        """A data set's class names in label order (default cifar10)."""
        return self.images.classes_of(dataset)

    def list_images(self, source: str = "samples", class_name: str | None = None, offset: int = 0,
                    limit: int = 48, dataset: str | None = None) -> dict:
        """{"total": int, "items": [{"image_id", "label", "class_name"}]} (limit 1..500) of one source of
        a data set (default cifar10, whose ids name no data set: "samples:3"; others' do: "imagenet/samples:3")."""
        return self.images.list(source, class_name, offset, limit, dataset)

    def get_image(self, image_id: str) -> dict:
        """{"image_id", "dataset", "label": int|None, "class_name": str|None, "pixels": uint8 (S,S,3)},
        S the image size of the data set the id names (32 for CIFAR, 224 for ImageNet)."""
        return self.images.get(image_id)

    def thumbnails(self, image_ids: list[str], side: int = 32) -> dict:
        """{"pixels": uint8 (n, side, side, 3)}, the images of `image_ids` in that order at side x side
        (n <= 2000, side 8..96; downscaled by area averaging, upscaled by repeating pixels): many small
        pictures in one call. ValueError for a bad list or side, NotFoundError for an unknown id."""
        return self.images.thumbnails(image_ids, side)

    def random_image(self, source: str = "samples", class_name: str | None = None,
                     seed: int | None = None, dataset: str | None = None) -> dict:
        return self.images.random(source, class_name, seed, dataset)

    def upload_image(self, data: bytes, dataset: str | None = None) -> dict:
        """Decode an uploaded file to the data set's image size, S x S RGB (default cifar10: 32; UploadError,
        a ValueError, when unusable); the id names the data set unless it is the default one."""
        return self.images.upload(data, dataset)

    # ---- analyses: one image (backend.service.inspection) ---------------------------------
    # Their contracts are the docstrings of ImageAnalyses / BatchAnalyses; the signatures here are
    # the Service's (start_task reads them) and must stay the same as theirs.
    def predict(self, image_id: str, model_ids=None, topk: int = 5) -> dict:
        return self.image_analyses.predict(image_id, model_ids, topk)

    def attack(self, image_id: str, spec: dict, model_ids=None, mode: str = "whitebox",
               source_model: str | None = None, saliency: str | None = None, target: int | None = None) -> dict:
        return self.image_analyses.attack(image_id, spec, model_ids, mode, source_model, saliency, target)

    def explain(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                target: int | None = None, spec: dict | None = None, params: dict | None = None) -> dict:
        return self.image_analyses.explain(image_id, model_id, method, target, spec, params)

    def saliency_metrics(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                         spec: dict | None = None) -> dict:
        return self.image_analyses.saliency_metrics(image_id, model_id, method, spec)

    def sanity_check(self, image_id: str, model_id: str, method: str = "gradient") -> dict:
        return self.image_analyses.sanity_check(image_id, model_id, method)

    # ---- analyses: many images (backend.service.analyses) ---------------------------------
    def embed(self, model_id: str, n: int = 500, spec: dict | None = None, method: str = "umap", seed: int = 0,
              source: str = "test", progress=None, should_stop=None) -> dict:
        return self.batch_analyses.embed(model_id, n, spec, method, seed, source, progress, should_stop)

    def robustness_curve(self, model_ids=None, method: str = "pgd", eps_list=None, n: int = 100, steps: int = 10,
                         source: str = "test", seed: int = 0, progress=None, should_stop=None) -> dict:
        return self.batch_analyses.robustness_curve(model_ids, method, eps_list, n, steps, source, seed, progress,
                                                    should_stop)

    def feature_lens(self, image_id: str, target_class: int, model_ids=None, eps: float | None = None,
                     steps: int = 60, norm: str = "linf") -> dict:
        return self.batch_analyses.feature_lens(image_id, target_class, model_ids, eps, steps, norm)

    def class_visualisation(self, target_class: int, model_ids=None, steps: int = 100, seed: int = 0,
                            progress=None, should_stop=None) -> dict:
        return self.batch_analyses.class_visualisation(target_class, model_ids, steps, seed, progress, should_stop)

    # ---- corruptions (backend.service.corruption_views) -------------------------------------
    def corruption_view(self, image_id: str, model_ids=None, corruptions=None, severities=None,
                        saliency: str | None = None, seed: int = 0) -> dict:
        return self.corruption_analyses.corruption_view(image_id, model_ids, corruptions, severities, saliency, seed)

    def corruption_curve(self, model_ids=None, corruptions=None, n: int = 100, source: str = "test", seed: int = 0,
                         progress=None, should_stop=None) -> dict:
        return self.corruption_analyses.corruption_curve(model_ids, corruptions, n, source, seed, progress,
                                                         should_stop)

    # ---- background tasks ------------------------------------------------------------------
    TASK_KINDS = ("robustness_curve", "embed", "class_visualisation", "import_model", "corruption_curve")

    def start_task(self, kind: str, params: dict) -> str:
        """Run robustness_curve / embed / class_visualisation / corruption_curve / import_model in the
        background with `params` (that method's keyword arguments); returns a task id. Parameters are
        validated now (ValueError); at most `max_tasks` tasks run at once (beyond: tasks.TasksBusy, an
        errors.BusyError)."""
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
        if kind == "import_model":
            model_imports.validate(self.root, p)
        elif kind == "corruption_curve":
            self.corruption_analyses.curve_args(p.get("model_ids"), p.get("corruptions"), p.get("n", 100),
                                                p.get("source", "test"), p.get("seed", 0))
        elif kind == "corruption_view":  # not a task; the server's budget check validates it the same way
            self.corruption_analyses.view_args(p.get("image_id"), p.get("model_ids"), p.get("corruptions"),
                                               p.get("severities"), p.get("saliency"), p.get("seed", 0))
        else:
            self.batch_analyses.validate_task(kind, p)

    def import_model(self, source: str, name: str, dataset: str | None = None, threat_model: str = "Linf",
                     pretrained: bool = False, model_id: str | None = None, progress=None,
                     should_stop=None) -> dict:
        """Import a published model by name (robustbench, torchvision or timm; backend.service.model_imports)
        into this service's checkpoints folder; returns {"model_id", "card"}. Normally a task
        (start_task("import_model", ...)): a download takes minutes. The model is listed at once."""
        out = model_imports.run(self.root, progress=progress, should_stop=should_stop, source=source, name=name,
                                dataset=dataset, threat_model=threat_model, pretrained=pretrained,
                                model_id=model_id)
        self.models.cards(force=True)
        return out

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
        from backend.core import archs as arch_registry
        from backend.core import datasets as ds_registry
        from backend.train import config as train_config  # torch-free registry of presets

        up = UploadLimits() if self.images.upload_limits is None else self.images.upload_limits
        # attacks and saliency methods: their registries (labels, parameters with range/default/step, norms)
        return {"attack": attacks.describe(),
                "embed": {"max_n": self.MAX_EMBED_N, "min_n_umap": 5, "methods": list(embed_mod.EMBED_METHODS)},
                "curve": {"max_n": self.MAX_CURVE_N.get(self.device.split(":")[0], 1000),
                          "max_eps_values": self.MAX_EPS_VALUES,
                          "methods": [n for n in attacks.registry.names() if attacks.registry.get(n).curve],
                          "max_steps": attacks.MAX_STEPS},
                "lens": {**lens.LENS_LIMITS, "norms": list(lens.LENS_NORMS), "defaults": {
                    "norm": lens.LENS_DEFAULTS["norm"], "steps": lens.LENS_DEFAULTS["steps"],
                    "eps": dict(lens.LENS_DEFAULTS["eps"])}},
                "corruptions": describe_corruptions(self.MAX_CURVE_N.get(self.device.split(":")[0], 1000)),
                "saliency": saliency_lib.describe(),
                "topk": [1, min((int(c["num_classes"]) for c in self.models.cards()), default=10)],
                "images": {"list_limit": [1, 500], "sources": ["samples", "test", "train"],
                           "default_dataset": DEFAULT_DATASET,
                           "thumbnails": {"max_n": THUMB_MAX_N, "side": list(THUMB_SIDES)}},
                "upload": {"max_bytes": up.max_bytes, "max_pixels": up.max_pixels, "min_side": up.min_side},
                # the training registry as the Train page shows it (method titles, preset labels, uses and
                # values: backend.train.config.describe), and the data sets a job can train on here
                "jobs": {**jobs_mod.LIMITS, **train_config.describe(),
                         "datasets": jobs_mod.trainable_datasets(self._job_data),
                         "synthetic_data": self._job_data == "synthetic"},  # else jobs need the train split
                "tasks": {"max_running": self.tasks.max_running, "kinds": list(self.TASK_KINDS)},
                # the dataset and architecture registries: classes, image size, class colours; labels, defaults
                "datasets": {n: ds_registry.get_dataset(n).describe() for n in ds_registry.names()},
                "architectures": {n: arch_registry.describe(n) for n in arch_registry.names()},
                "imports": model_imports.describe(),
                "device": self.device}
